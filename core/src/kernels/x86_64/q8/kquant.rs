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
//! The per-output sequence is the same for any token blocking and row split, as in the driver
//! of [`super::matmul`], so results are bit-identical for any thread count and step size. The
//! scalar references are the formats' `dot_q8` (`crate::quant::gguf::dot_q8_superblock`): the
//! same integer sums, added in another order.

use super::{f16_at, hsum, load16, load32, nibbles_32, TOKEN_TILE};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::act_q8::{BlockQ8Act, QK8};
use crate::quant::gguf::iq4_nl::KVALUES;
use crate::quant::gguf::{q3_k, scale_min_k4, QK_K};
use core::arch::x86_64::*;
use core::ops::Range;

/// Groups of 32 weights (one activation block each) per super-block.
const GROUPS: usize = QK_K / QK8;

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

/// Pair lanes 0..8 (weights 0..16 of a group) set to `lo`, lanes 8..16 to `hi`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn halves16(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16))
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
        for g in 0..GROUPS {
            // Group g: bits 2(g % 4).. of the 32 bytes of half g / 4; sub-blocks 2g, 2g + 1.
            let qs = load32(block, 16 + 32 * (g / 4));
            sb.w[g] = field(qs, 2 * (g % 4) as i32, 3);
            let (s0, s1) = (block[2 * g], block[2 * g + 1]);
            sb.scales[g] = halves16((s0 & 0x0F) as i32, (s1 & 0x0F) as i32);
            sb.lane_mins[g] = halves16((s0 >> 4) as i32, (s1 >> 4) as i32);
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
        let mut sb = SuperBlock::new(f16_at(block, 108));
        let scales = q3_k::unpack_scales(&block[96..108]);
        let hmask = load32(block, 0);
        for g in 0..GROUPS {
            // Low bits as in Q2_K (at byte 32); the high bit is bit g of the hmask bytes, and
            // a clear high bit means quant − 4.
            let low = field(load32(block, 32 + 32 * (g / 4)), 2 * (g % 4) as i32, 3);
            let q = _mm256_or_si256(low, plane_bit(hmask, g, 4));
            sb.w[g] = _mm256_sub_epi8(q, _mm256_set1_epi8(4));
            sb.scales[g] = halves16(scales[2 * g], scales[2 * g + 1]);
        }
        sb
    }
}

impl KQuant for Q4K {
    const BYTES: usize = 144;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerGroup;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new(f16_at(block, 0));
        let dmin = f16_at(block, 2);
        let packed = &block[4..16];
        for g in 0..GROUPS {
            // Group g: the low (g even) or high nibbles of the 32 bytes of column g / 2.
            let qs = load32(block, 16 + 32 * (g / 2));
            sb.w[g] = field(qs, 4 * (g % 2) as i32, 0x0F);
            let (sc, m) = scale_min_k4(g, packed);
            sb.scales[g] = _mm256_set1_epi16(sc as i16);
            sb.group_mins[g] = -(dmin * m as f32);
        }
        sb
    }
}

impl KQuant for Q5K {
    const BYTES: usize = 176;
    const SIGNED: bool = false;
    const MINS: Mins = Mins::PerGroup;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new(f16_at(block, 0));
        let dmin = f16_at(block, 2);
        let packed = &block[4..16];
        let qh = load32(block, 16);
        for g in 0..GROUPS {
            // Q4_K's nibbles (at byte 48) plus bit g of the qh bytes as the fifth bit.
            let low = field(load32(block, 48 + 32 * (g / 2)), 4 * (g % 2) as i32, 0x0F);
            sb.w[g] = _mm256_or_si256(low, plane_bit(qh, g, 0x10));
            let (sc, m) = scale_min_k4(g, packed);
            sb.scales[g] = _mm256_set1_epi16(sc as i16);
            sb.group_mins[g] = -(dmin * m as f32);
        }
        sb
    }
}

impl KQuant for Q6K {
    const BYTES: usize = 210;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new(f16_at(block, 208));
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
            sb.w[g] = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
            let (s0, s1) = (block[192 + 2 * g] as i8, block[193 + 2 * g] as i8);
            sb.scales[g] = halves16(s0 as i32, s1 as i32);
        }
        sb
    }
}

impl KQuant for Iq4Xs {
    const BYTES: usize = 136;
    const SIGNED: bool = true;
    const MINS: Mins = Mins::None;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> SuperBlock {
        let mut sb = SuperBlock::new(f16_at(block, 0));
        let scales_h = u16::from_le_bytes([block[2], block[3]]);
        // SAFETY: KVALUES is 16 readable bytes; loadu needs no alignment.
        let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) };
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
    let n = w.rows;
    // The token tiling of `super::matmul`: activation blocks stay in L2 across the rows.
    let mut tile = 0;
    while tile < tokens {
        let tile_end = (tile + TOKEN_TILE).min(tokens);
        for r in rows.clone() {
            let row = w.row(r);
            let mut t0 = tile;
            while t0 + 4 <= tile_end {
                let s = row_tokens::<F, 4>(row, x, acts_per_token, t0);
                for (t, v) in s.into_iter().enumerate() {
                    // SAFETY: element (t0 + t, r) belongs to this call (caller's contract).
                    unsafe { out.write((t0 + t) * n + r, v) };
                }
                t0 += 4;
            }
            while t0 < tile_end {
                let [v] = row_tokens::<F, 1>(row, x, acts_per_token, t0);
                // SAFETY: as above.
                unsafe { out.write(t0 * n + r, v) };
                t0 += 1;
            }
        }
        tile = tile_end;
    }
}
