//! ggml's 256-weight super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS (layouts in
//! `crate::quant::gguf`): their AVX2 decoders and scales for the 8-bit matmul drivers
//! (`super::kquant_lanes8` on the AVX2 tier, `super::kquant_wide` on AVX-512).
//!
//! A super-block is decoded into eight groups of 32 weights ([`SuperBlock`]), each aligned with
//! one activation block: signed weights, unsigned quants, or signed weights in a form a driver
//! multiplies faster ([`KQuant::decode_offset`]: the stored unsigned quants; `decode_biased`:
//! `vpdpbusd`'s `w + 128`). Its scales and mins come apart from the weights ([`ChunkScales`]:
//! a scale (and min) per group or per 16 weights and the super-block's `d`, `dmin`), which the
//! drivers turn into one lane per row. The scalar references are the formats' `dot_q8`
//! (`crate::quant::gguf::dot_q8_superblock`): the same integer sums, added in another order.

use super::{f16_at, join_i, load16, load32, nibbles_32, nibbles_pair_512};
use crate::quant::act_q8::QK8;
use crate::quant::gguf::iq4_nl::KVALUES;
use crate::quant::gguf::QK_K;
use core::arch::x86_64::*;

/// Groups of 32 weights (one activation block each) per super-block.
pub(crate) const GROUPS: usize = QK_K / QK8;

/// ggml Q2_K (84 bytes): 2-bit quants, 4-bit scale and min per 16 weights.
pub(crate) struct Q2K;
/// ggml Q3_K (110 bytes): 3-bit signed quants, 6-bit signed scale per 16 weights.
pub(crate) struct Q3K;
/// ggml Q4_K (144 bytes): 4-bit quants, 6-bit scale and min per 32 weights.
pub(crate) struct Q4K;
/// ggml Q5_K (176 bytes): 5-bit quants, 6-bit scale and min per 32 weights.
pub(crate) struct Q5K;
/// ggml Q6_K (210 bytes): 6-bit signed quants, 8-bit signed scale per 16 weights.
pub(crate) struct Q6K;
/// ggml IQ4_XS (136 bytes): IQ4_NL codebook indices, 6-bit signed scale per 32 weights.
pub(crate) struct Iq4Xs;

/// Where a format's min term comes from.
#[derive(PartialEq, Eq)]
pub(crate) enum Mins {
    /// No mins (signed quants).
    None,
    /// One min per group of 32 (`−dmin · m_g · d_a · Σa`).
    PerGroup,
    /// One min per 16 weights (`−dmin · d_a · Σ m · a`).
    PerLane,
}

/// One super-block's weights decoded for the 8-bit matmul (its scales are [`ChunkScales`]).
pub(crate) struct SuperBlock {
    /// Group `g` (weights `32g .. 32g + 32`) as bytes: signed weights, or unsigned quants.
    pub w: [__m256i; GROUPS],
}

impl SuperBlock {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn new() -> SuperBlock {
        SuperBlock {
            w: [_mm256_setzero_si256(); GROUPS],
        }
    }
}

/// A super-block format's AVX2 decoder for the 8-bit matmul.
pub(crate) trait KQuant {
    /// Bytes per super-block.
    const BYTES: usize;
    /// `true`: [`SuperBlock::w`] holds signed weights in `-128..=127`; `false`: unsigned quants
    /// in `0..=127`.
    const SIGNED: bool;
    /// Where the min term comes from.
    const MINS: Mins;
    /// For signed formats whose quants are stored unsigned: the offset they are stored with
    /// (`w = q − OFFSET`), which [`KQuant::decode_offset`] leaves in, so that they multiply as
    /// unsigned bytes and `OFFSET · Σa` is taken back per sub-block (0: none).
    const OFFSET: i32 = 0;

    /// Decodes one super-block (`block.len() == BYTES`).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    unsafe fn decode(block: &[u8]) -> SuperBlock;

    /// [`KQuant::decode`] with [`KQuant::OFFSET`] added to every weight (the stored quants).
    ///
    /// # Safety
    /// As [`KQuant::decode`].
    #[inline(always)]
    unsafe fn decode_offset(block: &[u8]) -> SuperBlock {
        // SAFETY: this function's contract is decode's.
        unsafe { Self::decode(block) }
    }

    /// [`KQuant::decode`] with signed weights in `vpdpbusd`'s unsigned form (`w + 128` as a
    /// byte; unsigned quants unchanged). This default adds the bias after decoding; decoders
    /// that subtract an offset or read a table fold it in.
    ///
    /// # Safety
    /// As [`KQuant::decode`].
    #[inline(always)]
    unsafe fn decode_biased(block: &[u8]) -> SuperBlock {
        // SAFETY: this function's contract is decode's.
        let mut sb = unsafe { Self::decode(block) };
        if Self::SIGNED {
            // SAFETY: AVX2 is part of decode's contract; the intrinsics touch registers only.
            unsafe {
                let bias = _mm256_set1_epi8(i8::MIN);
                sb.w = sb.w.map(|w| _mm256_xor_si256(w, bias));
            }
        }
        sb
    }

    /// [`KQuant::decode_biased`] as four 512-bit vectors, groups `2p` and `2p + 1` in vector
    /// `p`, for the AVX-512 tier's one-token path. This default joins the 256-bit groups;
    /// formats whose group pairs come from one load or one table override it.
    ///
    /// # Safety
    /// As [`KQuant::decode`], and the CPU has the AVX-512 tier's features.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        // SAFETY: this function's contract includes decode's.
        let sb = unsafe { Self::decode_biased(block) };
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            *o = join_i(sb.w[2 * p], sb.w[2 * p + 1]);
        }
        out
    }
}

/// Groups `2p` and `2p + 1` of Q4_K/Q5_K: the low and the high nibbles of the 32 bytes at `off`,
/// from one broadcast.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn nibble_pair_512(block: &[u8], off: usize) -> __m512i {
    let both = _mm512_broadcast_i64x4(load32(block, off));
    let shifted = _mm512_srlv_epi64(both, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0));
    _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F))
}

/// [`KQuant::decode_biased`]'s bias for signed formats (0: plain [`KQuant::decode`]).
const BIAS: i32 = 128;

/// A super-block's scales as the AVX-512 tier's row-lane driver (`super::kquant_wide`) applies
/// them: chunk `g`'s integer sum is scaled by `d · scales[g]` and its min is
/// `−dmin · mins[g]`; or, for formats with 16-weight sub-blocks, each half's integer sum is
/// first multiplied by its integer scale `scales[s]` (exact) and the chunk scaled by `d`.
#[derive(Clone, Copy)]
pub(crate) struct ChunkScales {
    /// The super-block's scale.
    pub d: f32,
    /// `−dmin` ([`Mins::PerGroup`]; 0 otherwise).
    pub neg_dmin: f32,
    /// Chunk `g`'s integer scale in byte `g` (bytes 8..16 zero), or with
    /// [`ChunkScaled::SUB16`] sub-block `s`'s (weights `16s .. 16s + 16`) in byte `s`.
    pub scales: [i8; 16],
    /// Chunk `g`'s integer min in byte `g` ([`Mins::PerGroup`]), or sub-block `s`'s in byte `s`
    /// ([`Mins::PerLane`]); 0 otherwise.
    pub mins: [i8; 16],
}

impl ChunkScales {
    /// No scales.
    pub const ZERO: ChunkScales = ChunkScales {
        d: 0.0,
        neg_dmin: 0.0,
        scales: [0; 16],
        mins: [0; 16],
    };
}

/// A super-block format whose scales [`ChunkScales`] carry.
pub(crate) trait ChunkScaled: KQuant {
    /// Scales per 16 weights rather than per 32.
    const SUB16: bool;

    /// The scales of one super-block (`block.len() == BYTES`).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales;
}

/// Q4_K/Q5_K's [`ChunkScales`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_chunk_scales(block: &[u8]) -> ChunkScales {
    let (scales, mins) = scales_mins_k4(&block[4..16]);
    let mut bytes = [0i8; 16];
    let mut min_bytes = [0i8; 16];
    for g in 0..GROUPS {
        bytes[g] = (scales >> (8 * g)) as i8;
        min_bytes[g] = (mins >> (8 * g)) as i8;
    }
    ChunkScales {
        d: f16_at(block, 0),
        neg_dmin: -f16_at(block, 2),
        scales: bytes,
        mins: min_bytes,
    }
}

impl ChunkScaled for Q4K {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        k4_chunk_scales(block)
    }
}

impl ChunkScaled for Q5K {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        k4_chunk_scales(block)
    }
}

impl ChunkScaled for Iq4Xs {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        // Low 4 bits from the nibbles of bytes 4..8, high 2 bits from bits 2g.. of bytes 2..4,
        // spread to one byte per chunk by shifts and masks (as u64 lanes of bytes), then −32.
        let mut low = u32::from_le_bytes([block[4], block[5], block[6], block[7]]) as u64;
        low = (low | (low << 16)) & 0x0000_FFFF_0000_FFFF;
        low = (low | (low << 8)) & 0x00FF_00FF_00FF_00FF;
        low = (low | (low << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        let mut high = u16::from_le_bytes([block[2], block[3]]) as u64;
        high = (high | (high << 24)) & 0x0000_00FF_0000_00FF;
        high = (high | (high << 12)) & 0x000F_000F_000F_000F;
        high = (high | (high << 6)) & 0x0303_0303_0303_0303;
        let unsigned = low | (high << 4);
        // Bytewise `v − 32` for v < 64: with bit 7 set first no byte borrows from the next.
        let top = 0x8080_8080_8080_8080u64;
        let signed = ((unsigned | top) - 0x2020_2020_2020_2020) ^ top;
        let mut bytes = [0i8; 16];
        for (b, v) in bytes.iter_mut().zip(signed.to_le_bytes()) {
            *b = v as i8;
        }
        ChunkScales {
            d: f16_at(block, 0),
            neg_dmin: 0.0,
            scales: bytes,
            mins: [0; 16],
        }
    }
}

impl ChunkScaled for Q2K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        // Byte s of the first 16: sub-block s's scale (low nibble) and min (high nibble).
        let mut scales = [0i8; 16];
        let mut mins = [0i8; 16];
        for s in 0..16 {
            scales[s] = (block[s] & 0x0F) as i8;
            mins[s] = (block[s] >> 4) as i8;
        }
        ChunkScales {
            d: f16_at(block, 80),
            neg_dmin: -f16_at(block, 82),
            scales,
            mins,
        }
    }
}

/// Q3_K's sixteen 6-bit scales, unbiased (−32..=31), from their 12 packed bytes: four at a time
/// in u32 words (low nibbles from bytes 0..8, high 2 bits from bytes 8..12), as
/// `crate::quant::gguf::q3_k::unpack_scales` reads them one at a time (called per row and
/// super-block, that loop cost a third of a one-token matmul).
#[inline(always)]
fn q3k_scales(p: &[u8]) -> [i8; 16] {
    const LOW: u32 = 0x0F0F_0F0F;
    const HIGH: u32 = 0x0303_0303;
    let word = |k: usize| u32::from_le_bytes([p[4 * k], p[4 * k + 1], p[4 * k + 2], p[4 * k + 3]]);
    let (a0, a1, high) = (word(0), word(1), word(2));
    let unsigned = [
        (a0 & LOW) | ((high & HIGH) << 4),
        (a1 & LOW) | (((high >> 2) & HIGH) << 4),
        ((a0 >> 4) & LOW) | (((high >> 4) & HIGH) << 4),
        ((a1 >> 4) & LOW) | (((high >> 6) & HIGH) << 4),
    ];
    let mut out = [0i8; 16];
    for (k, u) in unsigned.into_iter().enumerate() {
        // Bytewise `v − 32` for v < 64: with bit 7 set first no byte borrows from the next.
        let signed = ((u | 0x8080_8080) - 0x2020_2020) ^ 0x8080_8080;
        for (o, b) in out[4 * k..4 * k + 4].iter_mut().zip(signed.to_le_bytes()) {
            *o = b as i8;
        }
    }
    out
}

impl ChunkScaled for Q3K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        ChunkScales {
            d: f16_at(block, 108),
            neg_dmin: 0.0,
            scales: q3k_scales(&block[96..108]),
            mins: [0; 16],
        }
    }
}

impl ChunkScaled for Q6K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        let mut scales = [0i8; 16];
        for (s, &b) in scales.iter_mut().zip(&block[192..208]) {
            *s = b as i8;
        }
        ChunkScales {
            d: f16_at(block, 208),
            neg_dmin: 0.0,
            scales,
            mins: [0; 16],
        }
    }
}

/// The bytes of `v` shifted right by `bits` and masked to `mask`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn field(v: __m256i, bits: i32, mask: i8) -> __m256i {
    let shifted = _mm256_srl_epi16(v, _mm_cvtsi32_si128(bits));
    _mm256_and_si256(shifted, _mm256_set1_epi8(mask))
}

/// `value` where bit `bit` of each byte of `plane` is set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn plane_bit(plane: __m256i, bit: usize, value: i8) -> __m256i {
    let m = _mm256_set1_epi8((1u8 << bit) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(plane, m), m);
    _mm256_and_si256(set, _mm256_set1_epi8(value))
}

/// Q4_K/Q5_K's eight 6-bit scales and eight 6-bit mins (`scale_min_k4`) as the bytes of two
/// u64, from the 12 packed bytes: sub-blocks 0..4 keep theirs in the low 6 bits of bytes 0..4
/// (scales) and 4..8 (mins); 4..8 have their low 4 bits in the nibbles of bytes 8..12 and their
/// high 2 bits in the top bits of bytes 0..4 (scales) and 4..8 (mins).
#[inline]
fn scales_mins_k4(packed: &[u8]) -> (u64, u64) {
    let word = |off: usize| {
        let b: [u8; 8] = packed[off..off + 8].try_into().unwrap_or([0; 8]);
        u64::from_le_bytes(b)
    };
    // Byte j of `a` is packed[j], of `b` packed[j + 4].
    let (a, b) = (word(0), word(4));
    // Six low bits of bytes 0..4; four low and two low bits of bytes 4..8.
    let six = 0x0000_0000_3F3F_3F3F;
    let nib = 0x0F0F_0F0F_0000_0000;
    let top = 0x0303_0303_0000_0000;
    let scales = (a & six) | (b & nib) | ((((a << 32) >> 6) & top) << 4);
    let mins = (b & six) | ((b >> 4) & nib) | (((a >> 6) & top) << 4);
    (scales, mins)
}

impl KQuant for Q2K {
    const BYTES: usize = 84;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerLane;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new();
        for g in 0..GROUPS {
            // Group g: bits 2(g % 4).. of the 32 bytes of half g / 4; sub-blocks 2g, 2g + 1.
            let qs = load32(block, 16 + 32 * (g / 4));
            sb.w[g] = field(qs, 2 * (g % 4) as i32, 3);
        }
        sb
    }
}

impl KQuant for Q3K {
    const BYTES: usize = 110;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
    const OFFSET: i32 = 4;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_offset(block: &[u8]) -> SuperBlock {
        q3k_decode::<4>(block)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        q3k_decode::<0>(block)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_biased(block: &[u8]) -> SuperBlock {
        q3k_decode::<BIAS>(block)
    }
}

/// Q3_K's decode with `B` added to every weight.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q3k_decode<const B: i32>(block: &[u8]) -> SuperBlock {
    let mut sb = SuperBlock::new();
    let hmask = load32(block, 0);
    for g in 0..GROUPS {
        // Low bits as in Q2_K (at byte 32); the high bit is bit g of the hmask bytes, and
        // a clear high bit means quant − 4.
        let low = field(load32(block, 32 + 32 * (g / 4)), 2 * (g % 4) as i32, 3);
        let q = _mm256_or_si256(low, plane_bit(hmask, g, 4));
        sb.w[g] = _mm256_add_epi8(q, _mm256_set1_epi8((B - 4) as i8));
    }
    sb
}

impl KQuant for Q4K {
    const BYTES: usize = 144;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerGroup;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            *o = nibble_pair_512(block, 16 + 32 * p);
        }
        out
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new();
        for g in 0..GROUPS {
            // Group g: the low (g even) or high nibbles of the 32 bytes of column g / 2.
            let qs = load32(block, 16 + 32 * (g / 2));
            sb.w[g] = field(qs, 4 * (g % 2) as i32, 0x0F);
        }
        sb
    }
}

impl KQuant for Q5K {
    const BYTES: usize = 176;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerGroup;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        // Group g's fifth bit is bit g of the 32 qh bytes: bits 2p and 2p + 1 of their
        // broadcast, tested into one byte mask.
        let qh = _mm512_broadcast_i64x4(load32(block, 16));
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            let low = nibble_pair_512(block, 48 + 32 * p);
            let bits = join_i(
                _mm256_set1_epi8((1u8 << (2 * p)) as i8),
                _mm256_set1_epi8((1u8 << (2 * p + 1)) as i8),
            );
            let fifth = _mm512_test_epi8_mask(qh, bits);
            *o = _mm512_mask_add_epi8(low, fifth, low, _mm512_set1_epi8(0x10));
        }
        out
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new();
        let qh = load32(block, 16);
        for g in 0..GROUPS {
            // Q4_K's nibbles (at byte 48) plus bit g of the qh bytes as the fifth bit.
            let low = field(load32(block, 48 + 32 * (g / 2)), 4 * (g % 2) as i32, 0x0F);
            sb.w[g] = _mm256_or_si256(low, plane_bit(qh, g, 0x10));
        }
        sb
    }
}

impl KQuant for Q6K {
    const BYTES: usize = 210;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
    const OFFSET: i32 = 32;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_offset(block: &[u8]) -> SuperBlock {
        q6k_decode::<32>(block)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            // Groups 2p, 2p + 1 = 4n + k0, 4n + k0 + 1 (k0 even): the same nibble (k0 / 2) of
            // ql bytes 64n .. and 64n + 32 .., bits 2k0 and 2k0 + 2 of the qh bytes 128 + 32n ...
            let (n, k0) = (p / 2, 2 * (p % 2));
            let ql = join_i(load32(block, 64 * n), load32(block, 64 * n + 32));
            let low = _mm512_srl_epi16(ql, _mm_cvtsi32_si128(2 * k0 as i32));
            let low = _mm512_and_si512(low, _mm512_set1_epi8(0x0F));
            let qh = _mm512_broadcast_i64x4(load32(block, 128 + 32 * n));
            let shifts = _mm512_set_epi64(
                2 * k0 as i64 + 2,
                2 * k0 as i64 + 2,
                2 * k0 as i64 + 2,
                2 * k0 as i64 + 2,
                2 * k0 as i64,
                2 * k0 as i64,
                2 * k0 as i64,
                2 * k0 as i64,
            );
            let high = _mm512_and_si512(_mm512_srlv_epi64(qh, shifts), _mm512_set1_epi8(3));
            let q = _mm512_or_si512(low, _mm512_slli_epi16::<4>(high));
            // q − 32 + 128.
            *o = _mm512_add_epi8(q, _mm512_set1_epi8(96));
        }
        out
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        q6k_decode::<0>(block)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_biased(block: &[u8]) -> SuperBlock {
        q6k_decode::<BIAS>(block)
    }
}

/// Q6_K's decode with `B` added to every weight.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q6k_decode<const B: i32>(block: &[u8]) -> SuperBlock {
    let mut sb = SuperBlock::new();
    for g in 0..GROUPS {
        // Group g = 4n + k: nibble k / 2 of ql bytes 64n + 32(k % 2) .., bits 2k.. of qh
        // bytes 128 + 32n .. as bits 4..6; quant − 32.
        let (n, k) = (g / 4, g % 4);
        let low = field(
            load32(block, 64 * n + 32 * (k % 2)),
            4 * (k / 2) as i32,
            0x0F,
        );
        let high = field(load32(block, 128 + 32 * n), 2 * k as i32, 3);
        let q = _mm256_or_si256(low, _mm256_slli_epi16::<4>(high));
        sb.w[g] = _mm256_add_epi8(q, _mm256_set1_epi8((B - 32) as i8));
    }
    sb
}

impl KQuant for Iq4Xs {
    const BYTES: usize = 136;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        // SAFETY: KVALUES is 16 readable bytes; loadu needs no alignment.
        let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) };
        // Biased entries (+128), in every 128-bit lane for `vpshufb`.
        let table = _mm512_broadcast_i32x4(_mm_xor_si128(table, _mm_set1_epi8(i8::MIN)));
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            // Groups 2p and 2p + 1: the 16 index bytes of each, IQ4_NL's nibble order.
            let (g0, g1) = (&block[8 + 32 * p..], &block[24 + 32 * p..]);
            *o = _mm512_shuffle_epi8(table, nibbles_pair_512(g0, g1, 0));
        }
        out
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        iq4xs_decode::<0>(block)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_biased(block: &[u8]) -> SuperBlock {
        iq4xs_decode::<BIAS>(block)
    }
}

/// IQ4_XS's decode with `B` added to every weight.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn iq4xs_decode<const B: i32>(block: &[u8]) -> SuperBlock {
    let mut sb = SuperBlock::new();
    // SAFETY: KVALUES is 16 readable bytes; loadu needs no alignment.
    let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) };
    // `+ B` on every entry (a xor for 128).
    let table = _mm_add_epi8(table, _mm_set1_epi8(B as i8));
    let table = _mm256_broadcastsi128_si256(table);
    for g in 0..GROUPS {
        // Group g = sub-block g: IQ4_NL's nibble order in bytes 8 + 16g .., then the codebook.
        let idx = nibbles_32(load16(block, 8 + 16 * g));
        sb.w[g] = _mm256_shuffle_epi8(table, idx);
    }
    sb
}
