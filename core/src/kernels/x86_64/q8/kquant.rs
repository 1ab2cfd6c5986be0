//! ggml's 256-weight super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS (layouts in
//! `crate::quant::gguf`) on 8-bit activations.
//!
//! A super-block is decoded once into eight groups of 32 weights, each aligned with one
//! activation block: the weights as bytes, and the integer scale (and min) of each weight as
//! 16-bit lanes. Sub-blocks of 16 or 32 weights both fall on the 16-bit lanes `vpmaddubsw`
//! leaves (lane `j` holds weights `2j`, `2j + 1`), so `vpmaddwd` with the scales instead of ones
//! multiplies each pair sum by its sub-block's scale while adding neighbours: per group and token
//! one `vpmaddubsw`, one `vpmaddwd`, one convert and one FMA with `d · d_a`, as for the 32-weight
//! formats. The mins of Q4_K/Q5_K cover whole groups and use the activation block's sum; Q2_K's
//! cover 16 weights and take a second `vpmaddubsw`/`vpmaddwd` on the activations (their pair sums
//! times the mins) and an FMA with `−dmin · d_a`.
//!
//! The per-output sequence is the same for any token blocking and row split
//! ([`super::for_row_tiles`]), so results are bit-identical for any thread count and step size.
//! The scalar references are the formats' `dot_q8` (`crate::quant::gguf::dot_q8_superblock`):
//! the same integer sums, added in another order.

use super::{
    f16_at, for_row_tiles, hsum, join_i, load16, load32, load8, nibbles_32, nibbles_pair_512,
};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::act_q8::{BlockQ8Act, QK8};
use crate::quant::gguf::iq4_nl::KVALUES;
use crate::quant::gguf::QK_K;
use core::arch::x86_64::*;
use core::ops::Range;

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
    /// One min per group of 32: `group_mins[g] · d_a · Σ q_a`.
    PerGroup,
    /// One min per 16 weights: `−dmin · d_a · Σ m · q_a`, from `lane_mins`.
    PerLane,
}

/// One super-block decoded for the 8-bit matmul.
pub(crate) struct SuperBlock {
    /// Group `g` (weights `32g .. 32g + 32`) as bytes: signed weights, or unsigned quants.
    pub w: [__m256i; GROUPS],
    /// The integer scale of each 16-bit pair lane of group `g`.
    pub scales: [__m256i; GROUPS],
    /// The integer min of each pair lane ([`Mins::PerLane`] only).
    pub lane_mins: [__m256i; GROUPS],
    /// `−dmin · m` of group `g` ([`Mins::PerGroup`] only).
    pub group_mins: [f32; GROUPS],
    /// Super-scale of the scales.
    pub d: f32,
    /// `−dmin` ([`Mins::PerLane`] only).
    pub neg_dmin: f32,
}

impl SuperBlock {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn new(d: f32) -> SuperBlock {
        SuperBlock {
            w: [_mm256_setzero_si256(); GROUPS],
            scales: [_mm256_setzero_si256(); GROUPS],
            lane_mins: [_mm256_setzero_si256(); GROUPS],
            group_mins: [0.0; GROUPS],
            d,
            neg_dmin: 0.0,
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

    /// Decodes one super-block (`block.len() == BYTES`).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    unsafe fn decode(block: &[u8]) -> SuperBlock;

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

impl ChunkScaled for Q3K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        let sub = crate::quant::gguf::q3_k::unpack_scales(&block[96..108]);
        ChunkScales {
            d: f16_at(block, 108),
            neg_dmin: 0.0,
            scales: sub.map(|s| s as i8),
            mins: [0; 16],
        }
    }
}

impl ChunkScaled for Q6K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn chunk_scales(block: &[u8]) -> ChunkScales {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&block[192..208]);
        ChunkScales {
            d: f16_at(block, 208),
            neg_dmin: 0.0,
            scales: bytes.map(|b| b as i8),
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

/// Byte `lo` of `v` widened into pair lanes 0..8 (weights 0..16 of a group), byte `hi` into
/// lanes 8..16; sign-extended if `signed`. `v` holds the same 16 bytes in both halves.
///
/// One shuffle moves each byte into the high half of its 16-bit lane (the low half's index has
/// its top bit set, which zeroes it) and one shift brings it down; with the group loop unrolled
/// the index is a constant.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn byte_lanes(v: __m256i, lo: usize, hi: usize, signed: bool) -> __m256i {
    let word = |i: usize| ((i << 8) | 0x80) as i16;
    let idx = _mm256_set_m128i(_mm_set1_epi16(word(hi)), _mm_set1_epi16(word(lo)));
    let high = _mm256_shuffle_epi8(v, idx);
    if signed {
        _mm256_srai_epi16::<8>(high)
    } else {
        _mm256_srli_epi16::<8>(high)
    }
}

/// 16 bytes in both halves of a 256-bit register.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn both_halves(v: __m128i) -> __m256i {
    _mm256_broadcastsi128_si256(v)
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
        let mut sb = SuperBlock::new(f16_at(block, 80));
        sb.neg_dmin = -f16_at(block, 82);
        let packed = both_halves(load16(block, 0));
        let scales = _mm256_and_si256(packed, _mm256_set1_epi8(0x0F));
        let mins = field(packed, 4, 0x0F);
        for g in 0..GROUPS {
            // Group g: bits 2(g % 4).. of the 32 bytes of half g / 4; sub-blocks 2g, 2g + 1.
            let qs = load32(block, 16 + 32 * (g / 4));
            sb.w[g] = field(qs, 2 * (g % 4) as i32, 3);
            sb.scales[g] = byte_lanes(scales, 2 * g, 2 * g + 1, false);
            sb.lane_mins[g] = byte_lanes(mins, 2 * g, 2 * g + 1, false);
        }
        sb
    }
}

impl KQuant for Q3K {
    const BYTES: usize = 110;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
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
    let mut sb = SuperBlock::new(f16_at(block, 108));
    // The sixteen 6-bit scales: low 4 bits from the nibbles of bytes 96..104 (low nibbles
    // for sub-blocks 0..8), high 2 bits of sub-block s from bits 2(s / 4).. of byte
    // 104 + s % 4, which is byte s % 4 of 32-bit lane s / 4 after broadcasting bytes
    // 104..108 and shifting lane j right by 2j. Stored biased by 32.
    let low = load8(block, 96);
    let nib = _mm_set1_epi8(0x0F);
    let low = _mm_unpacklo_epi64(
        _mm_and_si128(low, nib),
        _mm_and_si128(_mm_srli_epi16::<4>(low), nib),
    );
    let top = u32::from_le_bytes([block[104], block[105], block[106], block[107]]);
    let top = _mm_srlv_epi32(_mm_set1_epi32(top as i32), _mm_setr_epi32(0, 2, 4, 6));
    let top = _mm_slli_epi16::<4>(_mm_and_si128(top, _mm_set1_epi8(3)));
    let scales = _mm_sub_epi8(_mm_or_si128(low, top), _mm_set1_epi8(32));
    let scales = both_halves(scales);
    let hmask = load32(block, 0);
    for g in 0..GROUPS {
        // Low bits as in Q2_K (at byte 32); the high bit is bit g of the hmask bytes, and
        // a clear high bit means quant − 4.
        let low = field(load32(block, 32 + 32 * (g / 4)), 2 * (g % 4) as i32, 3);
        let q = _mm256_or_si256(low, plane_bit(hmask, g, 4));
        sb.w[g] = _mm256_add_epi8(q, _mm256_set1_epi8((B - 4) as i8));
        sb.scales[g] = byte_lanes(scales, 2 * g, 2 * g + 1, true);
    }
    sb
}

/// Q4_K/Q5_K's scales as bytes 0..8 (both halves), and `−dmin · m` of each group into `mins`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_scales(block: &[u8], dmin: f32, mins: &mut [f32; GROUPS]) -> __m256i {
    let (scales, m) = scales_mins_k4(&block[4..16]);
    let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m as i64)));
    let m = _mm256_mul_ps(m, _mm256_set1_ps(-dmin));
    // SAFETY: `mins` is 8 writable f32; storeu needs no alignment.
    unsafe { _mm256_storeu_ps(mins.as_mut_ptr(), m) };
    both_halves(_mm_cvtsi64_si128(scales as i64))
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
        let mut sb = SuperBlock::new(f16_at(block, 0));
        let dmin = f16_at(block, 2);
        let scales = k4_scales(block, dmin, &mut sb.group_mins);
        for g in 0..GROUPS {
            // Group g: the low (g even) or high nibbles of the 32 bytes of column g / 2.
            let qs = load32(block, 16 + 32 * (g / 2));
            sb.w[g] = field(qs, 4 * (g % 2) as i32, 0x0F);
            sb.scales[g] = byte_lanes(scales, g, g, false);
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
        let mut sb = SuperBlock::new(f16_at(block, 0));
        let dmin = f16_at(block, 2);
        let scales = k4_scales(block, dmin, &mut sb.group_mins);
        let qh = load32(block, 16);
        for g in 0..GROUPS {
            // Q4_K's nibbles (at byte 48) plus bit g of the qh bytes as the fifth bit.
            let low = field(load32(block, 48 + 32 * (g / 2)), 4 * (g % 2) as i32, 0x0F);
            sb.w[g] = _mm256_or_si256(low, plane_bit(qh, g, 0x10));
            sb.scales[g] = byte_lanes(scales, g, g, false);
        }
        sb
    }
}

impl KQuant for Q6K {
    const BYTES: usize = 210;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
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
    let mut sb = SuperBlock::new(f16_at(block, 208));
    let scales = both_halves(load16(block, 192));
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
        sb.scales[g] = byte_lanes(scales, 2 * g, 2 * g + 1, true);
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
    let mut sb = SuperBlock::new(f16_at(block, 0));
    let scales_h = u16::from_le_bytes([block[2], block[3]]);
    // SAFETY: KVALUES is 16 readable bytes; loadu needs no alignment.
    let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) };
    // `+ B` on every entry (a xor for 128).
    let table = _mm_add_epi8(table, _mm_set1_epi8(B as i8));
    let table = _mm256_broadcastsi128_si256(table);
    for g in 0..GROUPS {
        // Group g = sub-block g: IQ4_NL's nibble order in bytes 8 + 16g .., then the codebook.
        let idx = nibbles_32(load16(block, 8 + 16 * g));
        sb.w[g] = _mm256_shuffle_epi8(table, idx);
        let low = (block[4 + g / 2] >> (4 * (g % 2))) & 0x0F;
        let high = ((scales_h >> (2 * g)) & 3) as u8;
        sb.scales[g] = _mm256_set1_epi16((low | (high << 4)) as i16 - 32);
    }
    sb
}

/// Eight i32 partial sums of `scale · w · a` over 32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scaled_dot32(w: __m256i, a: __m256i, scales: __m256i, signed: bool) -> __m256i {
    let p = if signed {
        // As in the 32-weight formats: |w| ≤ 128 and |a| ≤ 127, so no pair saturates.
        _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
    } else {
        _mm256_maddubs_epi16(w, a)
    };
    // |pair| ≤ 32512 and |scale| ≤ 128: each i32 sum stays below 2^23.
    _mm256_madd_epi16(p, scales)
}

/// Outputs of row `r` for tokens `t0 .. t0 + N`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn row_tokens<F: KQuant, const N: usize>(
    row: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    t0: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0f32; N];
    for (b, block) in row.chunks_exact(F::BYTES).enumerate() {
        // SAFETY: this function only runs with AVX2, FMA and F16C enabled (target_feature).
        let sb = unsafe { F::decode(block) };
        for g in 0..GROUPS {
            for t in 0..N {
                let a = &x[(t0 + t) * acts_per_token + b * GROUPS + g];
                // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
                let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
                let s = scaled_dot32(sb.w[g], av, sb.scales[g], F::SIGNED);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(sb.d * a.d), _mm256_cvtepi32_ps(s), acc[t]);
                match F::MINS {
                    Mins::None => {}
                    Mins::PerGroup => mins[t] += sb.group_mins[g] * a.d * a.sum as f32,
                    Mins::PerLane => {
                        let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), av);
                        let m = _mm256_madd_epi16(pairs, sb.lane_mins[g]);
                        let dm = _mm256_set1_ps(sb.neg_dmin * a.d);
                        acc[t] = _mm256_fmadd_ps(dm, _mm256_cvtepi32_ps(m), acc[t]);
                    }
                }
            }
        }
    }
    core::array::from_fn(|t| hsum(acc[t]) + mins[t])
}

/// The 8-bit matmul for super-block format `F` over rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; no other thread touches rows `rows` of `out`; `x` holds
/// `tokens × w.cols / 32` blocks and `w.cols` is a multiple of 256.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul<F: KQuant>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let acts_per_token = w.cols / QK8;
    // SAFETY: rows `rows` of `out` belong to this call (its own contract, passed on).
    unsafe {
        for_row_tiles(
            w,
            tokens,
            rows,
            out,
            |row, t0| row_tokens::<F, 4>(row, x, acts_per_token, t0),
            |row, t0| row_tokens::<F, 1>(row, x, acts_per_token, t0)[0],
        )
    }
}
