//! ggml's 256-weight super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS (layouts in
//! `crate::quant::gguf`): their AVX2 decoders for the 8-bit matmul drivers (`super::kquant_lanes8`
//! on the AVX2 tier, `super::kquant_wide` on AVX-512); their scales are in `super::kquant_scales`.
//!
//! A super-block is decoded into eight groups of 32 weights ([`SuperBlock`]), each aligned with
//! one activation block: signed weights, unsigned quants, or signed weights in a form a driver
//! multiplies faster ([`KQuant::decode_offset`]: the stored unsigned quants; `decode_biased`:
//! `vpdpbusd`'s `w + 128`). Its scales and mins come apart from the weights, eight rows' at a
//! time with a row per lane (`kquant_scales::ScaleLanes`: a scale (and min) per group or per 16 weights and
//! the super-blocks' `d`, `−dmin`), cut out of the packed bytes of all eight rows at once. The
//! scalar references are the formats' `dot_q8` (`crate::quant::gguf::dot_q8_superblock`): the
//! same integer sums, added in another order.

use super::{join_i, load16, load32, nibbles_32, nibbles_pair_512, or_rotated_bits};
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

/// One super-block's weights decoded for the 8-bit matmul (its scales are [`ScaleLanes`]).
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

    /// Whether the AVX2 one-token path takes groups `2j` and `2j + 1` together, halves
    /// together ([`KQuant::decode_pair_halves`]): unsigned quants without an offset and a scale
    /// per group (Q4_K, Q5_K), so the pair's sums can share one reduction as the 32-weight
    /// formats' do (`super::lanes8::sums_pair_halves`).
    const PAIR_HALVES: bool = false;

    /// Bits of those quants (4 or 5).
    const PAIR_QUANT_BITS: u32 = 4;

    /// Groups `2j` and `2j + 1` of a super-block in the halves layout: the first vector holds
    /// weights 0..16 of group `2j` then of `2j + 1`, the second weights 16..32 of each. Only
    /// called where [`KQuant::PAIR_HALVES`].
    ///
    /// # Safety
    /// As [`KQuant::decode`].
    #[inline(always)]
    unsafe fn decode_pair_halves(block: &[u8], j: usize) -> [__m256i; 2] {
        // SAFETY: this function's contract is decode's; AVX2 is part of it.
        unsafe {
            let sb = Self::decode_offset(block);
            let (g0, g1) = (sb.w[2 * j], sb.w[2 * j + 1]);
            [
                _mm256_permute2x128_si256::<0x20>(g0, g1),
                _mm256_permute2x128_si256::<0x31>(g0, g1),
            ]
        }
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

/// `low` (whose `value` bit is clear) with bit `2p` of each byte of `plane` (a 32-byte plane
/// broadcast to both 256-bit halves) added as `value` in the lower half, bit `2p + 1` in the
/// upper ([`or_rotated_bits`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn with_plane_bits_512(low: __m512i, plane: __m512i, p: usize, value: i8) -> __m512i {
    let to = i64::from((value as u8).trailing_zeros());
    let g = 2 * p as i64;
    let (r0, r1) = ((64 + to - g) % 64, (63 + to - g) % 64);
    or_rotated_bits(
        low,
        plane,
        _mm512_set_epi64(r1, r1, r1, r1, r0, r0, r0, r0),
        value,
    )
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
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        // Groups 2p (lower half) and 2p + 1 (upper half): 2-bit fields 2(2p % 4) and
        // 2(2p % 4) + 2 of the same 32 bytes, one shift per qword; their high bits, bits 2p and
        // 2p + 1 of the hmask bytes, rotated onto bit 2.
        let hmask = _mm512_broadcast_i64x4(load32(block, 0));
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            let g = 2 * p as i64;
            let (s0, s1) = (2 * (g % 4), 2 * (g % 4) + 2);
            let fields = _mm512_broadcast_i64x4(load32(block, 32 + 32 * (p / 2)));
            let shifts = _mm512_set_epi64(s1, s1, s1, s1, s0, s0, s0, s0);
            let low = _mm512_and_si512(_mm512_srlv_epi64(fields, shifts), _mm512_set1_epi8(3));
            let q = with_plane_bits_512(low, hmask, p, 4);
            *o = _mm512_add_epi8(q, _mm512_set1_epi8((BIAS - 4) as i8));
        }
        out
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

/// The nibbles of the 32 bytes at `off` in [`KQuant::decode_pair_halves`]' layout, the low
/// nibbles being one group and the high nibbles the next (Q4_K, Q5_K): each 16 bytes broadcast
/// to both 128-bit lanes, the upper lane shifted by 4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn nibble_pair_halves(block: &[u8], off: usize) -> [__m256i; 2] {
    let shifts = _mm256_setr_epi64x(0, 0, 4, 4);
    let nib = _mm256_set1_epi8(0x0F);
    let half = |o: usize| {
        let v = _mm256_broadcastsi128_si256(load16(block, o));
        _mm256_and_si256(_mm256_srlv_epi64(v, shifts), nib)
    };
    [half(off), half(off + 16)]
}

impl KQuant for Q4K {
    const BYTES: usize = 144;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerGroup;
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(block: &[u8], j: usize) -> [__m256i; 2] {
        nibble_pair_halves(block, 16 + 32 * j)
    }
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
    const PAIR_HALVES: bool = true;
    const PAIR_QUANT_BITS: u32 = 5;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(block: &[u8], j: usize) -> [__m256i; 2] {
        // Group g's fifth bits are bit g of the 32 qh bytes (byte i: weight i). Lane 0 wants
        // bit 2j of each byte at bit 4, lane 1 bit 2j + 1: one variable shift per qword moves
        // them there (left for bits below 4, right above), the mask keeps bit 4 alone.
        let [lo, hi] = nibble_pair_halves(block, 48 + 32 * j);
        let (b0, b1) = (2 * j as i64, 2 * j as i64 + 1);
        let move_up = |qh: __m256i| {
            let bit = if j < 2 {
                _mm256_sllv_epi64(qh, _mm256_setr_epi64x(4 - b0, 4 - b0, 4 - b1, 4 - b1))
            } else {
                _mm256_srlv_epi64(qh, _mm256_setr_epi64x(b0 - 4, b0 - 4, b1 - 4, b1 - 4))
            };
            _mm256_and_si256(bit, _mm256_set1_epi8(0x10))
        };
        let qh = |o: usize| _mm256_broadcastsi128_si256(load16(block, o));
        [
            _mm256_or_si256(lo, move_up(qh(16))),
            _mm256_or_si256(hi, move_up(qh(32))),
        ]
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> [__m512i; GROUPS / 2] {
        // Group g's fifth bit is bit g of the 32 qh bytes, rotated into the nibbles' bit 4 (a
        // bit test into a mask register and a masked add ran Q5_K at 40 G weights/s where Q4_K
        // reads 71).
        let qh = _mm512_broadcast_i64x4(load32(block, 16));
        let mut out = [_mm512_setzero_si512(); GROUPS / 2];
        for (p, o) in out.iter_mut().enumerate() {
            let low = nibble_pair_512(block, 48 + 32 * p);
            *o = with_plane_bits_512(low, qh, p, 0x10);
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
