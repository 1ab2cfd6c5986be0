//! The AVX2 tier's 8-bit matmul for ggml's super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and
//! IQ4_XS: eight rows at a time, one row per f32 lane, as [`super::lanes8`] runs the 32- and
//! 64-weight formats (and `super::kquant_wide` these on the AVX-512 tier).
//!
//! Each row's super-block is decoded by its AVX2 decoder ([`KQuant::decode_offset`]) into eight chunks
//! of 32 weights, each aligned with one activation block, and the eight rows' scales are cut out
//! of their packed bytes with a row per lane ([`ScaleLanes`]):
//!
//! - Q4_K, Q5_K, IQ4_XS (a scale per 32 weights): chunk `g`'s float scale `d · sc_g` and min
//!   `−dmin · m_g`, exactly where a 32-weight block has its `d` and `m` (both products exact);
//! - Q3_K, Q6_K (a scale per 16 weights): the two halves' integer sums are kept apart and
//!   multiplied by their integer scales before adding (`vpmulld`, exact in i32), then the chunk
//!   is scaled by `d`;
//! - Q2_K (unsigned, a scale and a min per 16 weights): as Q3_K/Q6_K for the scales, and the
//!   mins' integer sum `Σ min · (half's Σa)` per chunk, scaled by `−dmin · d_a`.
//!
//! Signed weights (Q3_K, Q6_K, IQ4_XS) are multiplied as magnitudes by activations carrying their
//! signs, as in [`super::lanes8`]. One token (decode) multiplies each row's chunk with
//! `vpmaddubsw`/`vpmaddwd` and reduces with [`super::sum_lanes8_halves`]'s tree; more tokens
//! decode each super-block of the eight rows once per tile of up to [`TOKEN_TILE`] tokens,
//! transposed (vector `k` lane `i` = row `i`'s weights `4k .. 4k + 4`) so that every token needs
//! only broadcasts of its activation quads. The integer sums are the same either way and the
//! float arithmetic after them is [`super::rows8`]'s per lane and in chunk order, so an output
//! has the same bits whatever the step size or row split, and the same as on the AVX-512 tier.
//! The one-row driver this replaces converted and scaled every 32 weights of every row and token
//! in floats and reduced each output horizontally: 37 G weights/s on Q4_K at 64 tokens
//! (`TIER=avx2 matmul_min 64`) where the 32-weight formats reached 90.

#[cfg(doc)]
use super::kquant::KQuant;
use super::kquant::{Mins, GROUPS};
use super::kquant_scales::{ChunkScaled, ScaleLanes};
use super::kquant_wide::blocks_of;
use super::lanes8::{dot4, finish, magnitudes, sums_pair_halves};
use super::rows8::{
    accumulate, accumulate_mins16, act_quad, prefetch, prefetch_head, prefetch_share, rows_ahead,
    rows_of, transpose_quads, write_lanes, Acc, GROUP,
};
use super::segmented::half_sum;
use super::{sum_lanes8_halves, BlockQ8Act, QK8};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::arch::x86_64::*;
use core::ops::Range;

/// Tokens whose activation blocks one pass over the rows reuses (kept in L2), and whose
/// accumulators the scratch holds.
const TOKEN_TILE: usize = 32;
/// Tokens per register block of the tile way.
const TOKENS: usize = 4;

/// Eight rows' float scale and min lanes of one super-block's chunks
/// ([`ScaleLanes::chunk_d_m`]), made once per super-block for every token of a tile.
#[derive(Clone, Copy)]
struct ChunkLanes {
    d: [__m256; GROUPS],
    m: [__m256; GROUPS],
}

/// [`ChunkLanes`] of the eight rows' super-blocks `blocks`, through `scales` (working memory:
/// the format's [`ScaleLanes`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn chunk_lanes<F: ChunkScaled>(
    blocks: &[&[u8]; GROUP],
    scales: &mut ScaleLanes,
    lanes: &mut ChunkLanes,
) {
    // SAFETY: AVX2, FMA and F16C are enabled here (target_feature).
    unsafe { F::scale_lanes(blocks, scales) };
    for g in 0..GROUPS {
        (lanes.d[g], lanes.m[g]) = scales.chunk_d_m(g, F::SUB16);
    }
}

impl ChunkLanes {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn zero() -> ChunkLanes {
        ChunkLanes {
            d: [_mm256_setzero_ps(); GROUPS],
            m: [_mm256_setzero_ps(); GROUPS],
        }
    }
}

/// Whether the driver moves the weights' signs onto the activations: signed formats without a
/// [`KQuant::OFFSET`] (those with one multiply their stored unsigned quants).
const fn sign_moved<F: ChunkScaled>() -> bool {
    F::SIGNED && F::OFFSET == 0
}

/// A chunk's integer sum from its halves' sums (weights 0–15, 16–31 with activations `a`):
/// `F`'s offset taken back per half (`Σ(q − o)·a = Σq·a − o·Σa`), then the halves multiplied
/// by their sub-block scales `sub` where [`ChunkScaled::SUB16`], or added.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn chunk_sum<F: ChunkScaled>(
    [mut lo, mut hi]: [__m256i; 2],
    a: &BlockQ8Act,
    sub: &[__m256i; 2],
) -> __m256i {
    if F::OFFSET != 0 {
        let lo_sum = half_sum(a);
        lo = _mm256_sub_epi32(lo, _mm256_set1_epi32(F::OFFSET * lo_sum));
        hi = _mm256_sub_epi32(hi, _mm256_set1_epi32(F::OFFSET * (a.sum - lo_sum)));
    }
    if F::SUB16 {
        scale_halves([lo, hi], sub)
    } else {
        _mm256_add_epi32(lo, hi)
    }
}

/// `sub_lo · lo + sub_hi · hi` (exact: `|half sum| ≤ 16 · 128 · 127` and `|scale| ≤ 128`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scale_halves([lo, hi]: [__m256i; 2], sub: &[__m256i; 2]) -> __m256i {
    _mm256_add_epi32(
        _mm256_mullo_epi32(lo, sub[0]),
        _mm256_mullo_epi32(hi, sub[1]),
    )
}

/// The eight rows' integer sums of chunk `g` with one token's quants `a`: lane `i` is row `i`'s
/// (its halves scaled by their sub-block scales where [`ChunkScaled::SUB16`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_one_token<F: ChunkScaled>(
    w: &[__m256i; GROUP],
    a: &BlockQ8Act,
    sub: &[__m256i; 2],
) -> __m256i {
    // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
    let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
    let mag = magnitudes(w, sign_moved::<F>());
    let mut p = [_mm256_setzero_si256(); GROUP];
    for (i, p) in p.iter_mut().enumerate() {
        *p = dot4(mag[i], w[i], av, sign_moved::<F>());
    }
    chunk_sum::<F>(sum_lanes8_halves(&p), a, sub)
}

/// [`sums_one_token`] from transposed weights `v` and their magnitudes `mag`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_transposed<F: ChunkScaled>(
    v: &[__m256i; GROUP],
    mag: &[__m256i; GROUP],
    a: &BlockQ8Act,
    sub: &[__m256i; 2],
) -> __m256i {
    let quad = |k: usize| _mm256_set1_epi32(act_quad(a, k));
    // Vectors 0–3 hold weights 0–15, vectors 4–7 weights 16–31: one chain per half.
    let mut lo = _mm256_setzero_si256();
    let mut hi = _mm256_setzero_si256();
    for k in 0..GROUP / 2 {
        lo = _mm256_add_epi32(lo, dot4(mag[k], v[k], quad(k), sign_moved::<F>()));
        let k2 = k + GROUP / 2;
        hi = _mm256_add_epi32(hi, dot4(mag[k2], v[k2], quad(k2), sign_moved::<F>()));
    }
    chunk_sum::<F>([lo, hi], a, sub)
}

/// Adds chunk `g`'s integer sums `s` for one token `a` to `acc` (chain `g & 1`: a super-block's
/// eight chunks keep the chains of the blocks before it).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn add_chunk<F: ChunkScaled>(
    acc: &mut Acc,
    g: usize,
    s: __m256i,
    lanes: &ChunkLanes,
    scales: &ScaleLanes,
    a: &BlockQ8Act,
) {
    let chain = g & 1;
    match F::MINS {
        Mins::None => accumulate(acc, chain, s, lanes.d[g], None, a),
        Mins::PerGroup => accumulate(acc, chain, s, lanes.d[g], Some(lanes.m[g]), a),
        Mins::PerLane => {
            let lo_sum = half_sum(a);
            let halves = [_mm256_set1_epi32(lo_sum), _mm256_set1_epi32(a.sum - lo_sum)];
            let mins = scale_halves(halves, ScaleLanes::halves(&scales.mins, g));
            accumulate_mins16(acc, chain, [s, mins], lanes.d[g], lanes.m[g], a);
        }
    }
}

/// One super-block of the eight rows decoded: `w[i][g]` is row `i`'s chunk `g`. Asks for
/// the block's share of `next` (`lines` cache lines) meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_superblocks<F: ChunkScaled>(
    blocks: &[&[u8]; GROUP],
    next: &[u8],
    lines: Range<usize>,
    w: &mut [[__m256i; GROUPS]; GROUP],
) {
    for line in lines {
        prefetch(next, line * 64);
    }
    for (wi, block) in w.iter_mut().zip(blocks) {
        // SAFETY: AVX2, FMA and F16C are enabled here (target_feature).
        *wi = unsafe { F::decode_offset(block) }.w;
    }
}

/// Chunk `g` of every row of `w`.
#[inline(always)]
fn chunk_of(w: &[[__m256i; GROUPS]; GROUP], g: usize) -> [__m256i; GROUP] {
    let mut c = [w[0][g]; GROUP];
    for (c, wi) in c.iter_mut().zip(w) {
        *c = wi[g];
    }
    c
}

/// The output of eight rows (lane `i`: `rows[i]`) for one token (`x`: its activation blocks).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn group_one_token<F: ChunkScaled>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
    seg: &mut Segment,
) -> __m256 {
    let zero = _mm256_setzero_ps();
    let mut acc = Acc {
        sum: [zero; 2],
        min: [zero; 2],
    };
    let blocks = rows[0].len() / F::BYTES;
    for b in 0..blocks {
        prefetch_share::<false>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
        if F::PAIR_HALVES && F::OFFSET == 0 && !F::SUB16 {
            // Groups 2j, 2j + 1 through one reduction, the same integer sums and float chains.
            let supers = blocks_of(rows, b, F::BYTES);
            chunk_lanes::<F>(&supers, &mut seg.scales, &mut seg.lanes);
            for j in 0..GROUPS / 2 {
                let mut w = [[_mm256_setzero_si256(); GROUP]; 2];
                for (i, block) in supers.iter().enumerate() {
                    // SAFETY: AVX2, FMA and F16C are enabled here (target_feature).
                    [w[0][i], w[1][i]] = unsafe { F::decode_pair_halves(block, j) };
                }
                let (a0, a1) = (&x[b * GROUPS + 2 * j], &x[b * GROUPS + 2 * j + 1]);
                let [s0, s1] = sums_pair_halves(&w, a0, a1, F::PAIR_QUANT_BITS);
                add_chunk::<F>(&mut acc, 2 * j, s0, &seg.lanes, &seg.scales, a0);
                add_chunk::<F>(&mut acc, 2 * j + 1, s1, &seg.lanes, &seg.scales, a1);
            }
            continue;
        }
        seg.load::<F>(rows, b, next, 0..0);
        for g in 0..GROUPS {
            let a = &x[b * GROUPS + g];
            let sub = ScaleLanes::halves(&seg.scales.scales, g);
            let s = sums_one_token::<F>(&chunk_of(&seg.decoded, g), a, sub);
            add_chunk::<F>(&mut acc, g, s, &seg.lanes, &seg.scales, a);
        }
    }
    finish(&acc)
}

/// One super-block of a row group as decoded, transposed for every token of a tile, and its
/// scales: working memory of the whole matmul call (filled in place per super-block: returned
/// by value, these were copied by `memmove`, and zeroed per row group by `memset`).
struct Segment {
    /// The rows' chunks as decoded (`decoded[i][g]`: row `i`'s chunk `g`).
    decoded: [[__m256i; GROUPS]; GROUP],
    v: [[__m256i; GROUP]; GROUPS],
    mag: [[__m256i; GROUP]; GROUPS],
    lanes: ChunkLanes,
    scales: ScaleLanes,
}

impl Segment {
    /// Super-block `b` of the eight rows decoded into `decoded`, with its scales, asking for
    /// `lines` of `next` meanwhile.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn load<F: ChunkScaled>(
        &mut self,
        rows: &[&[u8]; GROUP],
        b: usize,
        next: &[u8],
        lines: Range<usize>,
    ) {
        let blocks = blocks_of(rows, b, F::BYTES);
        decode_superblocks::<F>(&blocks, next, lines, &mut self.decoded);
        chunk_lanes::<F>(&blocks, &mut self.scales, &mut self.lanes);
    }
}

/// Adds the segment's chunks to the accumulators of tokens `t0 .. t0 + N` (`acc[..N]`), which
/// stay in registers meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn segment_tokens<F: ChunkScaled, const N: usize>(
    seg: &Segment,
    x: &[BlockQ8Act],
    first_act: usize,
    t0: usize,
    acts_per_token: usize,
    acc: &mut [Acc],
) {
    let mut regs = [acc[0]; N];
    regs.copy_from_slice(&acc[..N]);
    for g in 0..GROUPS {
        for (t, r) in regs.iter_mut().enumerate() {
            let a = &x[(t0 + t) * acts_per_token + first_act + g];
            let sub = ScaleLanes::halves(&seg.scales.scales, g);
            let s = sums_transposed::<F>(&seg.v[g], &seg.mag[g], a, sub);
            add_chunk::<F>(r, g, s, &seg.lanes, &seg.scales, a);
        }
    }
    acc[..N].copy_from_slice(&regs);
}

/// Outputs of one row group for every token of `tokens` (at most [`TOKEN_TILE`]), written to
/// rows `first .. first + count` of the `n`-row output.
///
/// # Safety
/// Those rows of `out` belong to the caller (no other thread touches them).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_tile<F: ChunkScaled>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    tokens: Range<usize>,
    out: &SharedOut<'_>,
    n: usize,
    first: usize,
    count: usize,
    seg: &mut Segment,
    acc: &mut [Acc; TOKEN_TILE],
) {
    let zero = _mm256_setzero_ps();
    let acc = &mut acc[..tokens.len()];
    acc.fill(Acc {
        sum: [zero; 2],
        min: [zero; 2],
    });
    let blocks = rows[0].len() / F::BYTES;
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks.max(1));
    for b in 0..blocks {
        seg.load::<F>(
            rows,
            b,
            next,
            b * lines_per_block..(b + 1) * lines_per_block,
        );
        for g in 0..GROUPS {
            seg.v[g] = transpose_quads(&chunk_of(&seg.decoded, g));
            seg.mag[g] = magnitudes(&seg.v[g], sign_moved::<F>());
        }
        let mut t = tokens.start;
        while t < tokens.end {
            let i = t - tokens.start;
            if t + TOKENS <= tokens.end {
                segment_tokens::<F, TOKENS>(seg, x, b * GROUPS, t, acts_per_token, &mut acc[i..]);
                t += TOKENS;
            } else {
                segment_tokens::<F, 1>(seg, x, b * GROUPS, t, acts_per_token, &mut acc[i..]);
                t += 1;
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: rows `first .. first + count` belong to the caller (this function's contract).
        unsafe { write_lanes(out, finish(a), tokens.start + i, n, first, count) };
    }
}

/// The 8-bit matmul for super-block format `F` over rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; no other thread touches rows `rows` of `out`; `x` holds
/// `tokens × w.cols / 32` blocks and `w.cols` is a multiple of 256.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul<F: ChunkScaled>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    if rows.is_empty() {
        return;
    }
    let acts_per_token = w.cols / QK8;
    let last = rows.end - 1;
    prefetch_head(w, &rows, GROUP);
    let zero = _mm256_setzero_si256();
    let zero_ps = _mm256_setzero_ps();
    let mut seg = Segment {
        decoded: [[zero; GROUPS]; GROUP],
        v: [[zero; GROUP]; GROUPS],
        mag: [[zero; GROUP]; GROUPS],
        lanes: ChunkLanes::zero(),
        scales: ScaleLanes::zero(),
    };
    if tokens == 1 {
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            // Rows past the range repeat its last row; their lanes are computed, not written.
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            let v = group_one_token::<F>(&group, rows_ahead(w, first, GROUP), x, &mut seg);
            // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
            unsafe { write_lanes(out, v, 0, w.rows, first, count) };
        }
        return;
    }
    let mut acc = [Acc {
        sum: [zero_ps; 2],
        min: [zero_ps; 2],
    }; TOKEN_TILE];
    for tile in (0..tokens).step_by(TOKEN_TILE) {
        let tile_end = (tile + TOKEN_TILE).min(tokens);
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
            unsafe {
                group_tile::<F>(
                    &group,
                    rows_ahead(w, first, GROUP),
                    x,
                    acts_per_token,
                    tile..tile_end,
                    out,
                    w.rows,
                    first,
                    count,
                    &mut seg,
                    &mut acc,
                )
            };
        }
    }
}
