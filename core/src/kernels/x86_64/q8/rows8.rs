//! The AVX-512 tier's 8-bit matmul: eight rows at a time, so that one vector lane is one row's
//! output and nothing needs a horizontal sum per output.
//!
//! Per 32-weight chunk, each of the eight rows' exact integer dot product with a token's
//! activation quants lands in its own i32 lane, and one multiply-add per chunk scales the eight
//! of them at once (`lane i += isum_i · d_i · d_a`). The integer sums are computed in one of two
//! ways, which give the same integers:
//!
//! - **one token** (decode): `vpdpbusd` per row on the chunk, then a reduction tree (`vphaddd`)
//!   that leaves row `i`'s sum in lane `i`;
//! - **four tokens** (prefill): the eight rows' chunks are transposed once into eight vectors
//!   whose lane `i` holds row `i`'s weights `4k .. 4k + 4`, so each token needs only a broadcast
//!   of its activation quads and eight `vpdpbusd`, reusing the transposed weights across tokens.
//!   `vpdpbusd` multiplies unsigned by signed bytes, so signed weights are biased by +128 and the
//!   bias is taken back exactly as `128 · Σa` (the activation block's integer sum);
//! - **a tile of 8 to 32 tokens** (prefill): [`super::segmented`], sixteen rows per 512-bit
//!   vector, the transposed weights decoded once per tile.
//!
//! Everything after the integer sum is the same per lane for both ways and any row grouping
//! (rows past the end of a range repeat its last row and are not written), so results are
//! bit-identical for any row split and any number of tokens per step.

use super::one_token::group_outputs;
use super::segmented::{group_tile, Blocks, Scratch, WIDE};
use super::{join_i, BlockQ8Act, Q8Format, QK8};
use crate::kernels::SharedOut;
use crate::model::{Layout, WeightView};
use core::arch::x86_64::*;
use core::ops::Range;

/// Rows per group: one per f32 lane.
pub(crate) const GROUP: usize = 8;
/// Rows the widest path computes at once: callers that split rows on multiples of this leave
/// no lane of a group idle.
pub(crate) const ROWS_PER_GROUP: usize = WIDE;
/// How many row groups ahead of the one being computed its weights are asked for: one group is
/// ~100 ns of decode work, about one memory latency, so one group ahead arrives too late when
/// the weights come from memory (`matmul_min 1` on a 40–70 MB matrix: +10–15 % with 4).
pub(super) const PREFETCH_AHEAD: usize = 4;
/// Tokens per transposed block.
const TOKENS: usize = 4;
/// Tokens whose activation blocks one pass over the rows reuses (kept in L2).
const TOKEN_TILE: usize = 32;
/// Fewest tokens in a tile for which the sixteen-row segmented path ([`super::segmented`]) pays
/// (below it, each block is decoded per four tokens as it is read).
const SEGMENT_MIN_TOKENS: usize = 8;

/// The exact i32 dot products of one chunk of eight rows (`w[i]`, 32 weights each) with one
/// token's quants `a`: lane `i` is row `i`'s.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) fn sums_one_token(w: &[__m256i; GROUP], a: &BlockQ8Act, signed: bool) -> __m256i {
    let zero = _mm256_setzero_si256();
    // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
    let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
    // Signed weights come biased by +128 (`decode_biased`): taken back below as 128 · Σa.
    let p: [__m256i; GROUP] = core::array::from_fn(|i| _mm256_dpbusd_epi32(zero, w[i], av));
    let s = super::sum_lanes8_i32(&p);
    if signed {
        _mm256_sub_epi32(s, _mm256_set1_epi32(128 * a.sum))
    } else {
        s
    }
}

/// [`sums_one_token`] for two consecutive chunks (row `i`'s 64 weights in `w[i]`, the first
/// chunk's in the low half; activations `a0` then `a1`), each row in one 512-bit `vpdpbusd`:
/// the integer sums of chunk `a0` then `a1`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) fn sums_one_token_pair(
    w: &[__m512i; GROUP],
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
    signed: bool,
) -> [__m256i; 2] {
    let [s0123, s4567] = quarter_sums(w, join_acts(a0, a1));
    let s = chunk_sums(s0123, s4567);
    let s = if signed {
        let bias = join_i(
            _mm256_set1_epi32(128 * a0.sum),
            _mm256_set1_epi32(128 * a1.sum),
        );
        _mm512_sub_epi32(s, bias)
    } else {
        s
    };
    [_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)]
}

/// The quants of `a0` then `a1` as one vector.
#[target_feature(enable = "avx2,avx512f")]
#[inline]
pub(super) fn join_acts(a0: &BlockQ8Act, a1: &BlockQ8Act) -> __m512i {
    // SAFETY: each `qs` is 32 readable bytes; loadu needs no alignment.
    unsafe {
        join_i(
            _mm256_loadu_si256(a0.qs.as_ptr().cast()),
            _mm256_loadu_si256(a1.qs.as_ptr().cast()),
        )
    }
}

/// The eight rows' integer sums over each 16-weight quarter of 64 weights (`w[i]` · `a`): lane
/// `4L + i` of the first vector is row `i`'s sum over quarter `L` (rows 0–3), of the second row
/// `4 + i`'s.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) fn quarter_sums(w: &[__m512i; GROUP], a: __m512i) -> [__m512i; 2] {
    let zero = _mm512_setzero_si512();
    let p: [__m512i; GROUP] = core::array::from_fn(|i| _mm512_dpbusd_epi32(zero, w[i], a));
    // Per 128-bit lane, like `vphaddd`: after two rounds lane L of `s0123` holds rows 0–3's
    // sums over that lane's four elements.
    [
        hadd_epi32(hadd_epi32(p[0], p[1]), hadd_epi32(p[2], p[3])),
        hadd_epi32(hadd_epi32(p[4], p[5]), hadd_epi32(p[6], p[7])),
    ]
}

/// [`quarter_sums`]' two vectors summed per 32-weight chunk: `[rows 0–7 of the first chunk |
/// rows 0–7 of the second]`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn chunk_sums(s0123: __m512i, s4567: __m512i) -> __m512i {
    let pick = |l: [i64; 4]| {
        _mm512_set_epi64(
            l[3] + 1,
            l[3],
            l[2] + 1,
            l[2],
            l[1] + 1,
            l[1],
            l[0] + 1,
            l[0],
        )
    };
    let first = _mm512_permutex2var_epi64(s0123, pick([0, 8, 4, 12]), s4567);
    let second = _mm512_permutex2var_epi64(s0123, pick([2, 10, 6, 14]), s4567);
    _mm512_add_epi32(first, second)
}

/// `vphaddd` on 512 bits: per 128-bit lane `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn hadd_epi32(a: __m512i, b: __m512i) -> __m512i {
    let (af, bf) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
    let even = _mm512_shuffle_ps::<0b10_00_10_00>(af, bf);
    let odd = _mm512_shuffle_ps::<0b11_01_11_01>(af, bf);
    _mm512_add_epi32(_mm512_castps_si512(even), _mm512_castps_si512(odd))
}

/// The eight rows' chunk as eight vectors, vector `k` lane `i` = row `i`'s weights
/// `4k .. 4k + 4` (an 8 × 8 transpose of 32-bit quads).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn transpose_quads(r: &[__m256i; GROUP]) -> [__m256i; GROUP] {
    let t: [__m256i; GROUP] = core::array::from_fn(|j| {
        let (a, b) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
        if j % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[k] (k < 4): quads k and k + 4 of rows 0–3; u[4 + k]: the same of rows 4–7.
    let u: [__m256i; GROUP] = core::array::from_fn(|j| {
        let base = j / 4 * 4;
        let (a, b) = (t[base + (j % 4) / 2], t[base + 2 + (j % 4) / 2]);
        if j % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    core::array::from_fn(|k| {
        if k < 4 {
            _mm256_permute2x128_si256::<0x20>(u[k], u[4 + k])
        } else {
            _mm256_permute2x128_si256::<0x31>(u[k - 4], u[k])
        }
    })
}

/// [`sums_one_token`] from transposed weights: lane `i` = row `i`'s exact sum.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums_transposed(v: &[__m256i; GROUP], a: &BlockQ8Act, signed: bool) -> __m256i {
    let quad = |k: usize| _mm256_set1_epi32(act_quad(a, k));
    let mut even = _mm256_setzero_si256();
    let mut odd = _mm256_setzero_si256();
    for k in (0..GROUP).step_by(2) {
        even = _mm256_dpbusd_epi32(even, v[k], quad(k));
        odd = _mm256_dpbusd_epi32(odd, v[k + 1], quad(k + 1));
    }
    let s = _mm256_add_epi32(even, odd);
    if signed {
        _mm256_sub_epi32(s, _mm256_set1_epi32(128 * a.sum))
    } else {
        s
    }
}

/// Activation quants `4k .. 4k + 4` of `a` as one little-endian i32 (a transposed weight
/// vector's lanes each hold four weights of the same positions).
#[inline(always)]
pub(super) fn act_quad(a: &BlockQ8Act, k: usize) -> i32 {
    let q = &a.qs[4 * k..4 * k + 4];
    i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
}

/// Per-token accumulators of one row group: two chains (even and odd chunks) of scaled sums
/// and of min terms.
#[derive(Clone, Copy)]
pub(super) struct Acc {
    pub(super) sum: [__m256; 2],
    pub(super) min: [__m256; 2],
}

/// Adds one chunk's integer sums `s` for one token to `acc` (the only float arithmetic: the
/// same for both ways of getting `s`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn accumulate(
    acc: &mut Acc,
    chain: usize,
    s: __m256i,
    d: __m256,
    m: Option<__m256>,
    a: &BlockQ8Act,
) {
    let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
    acc.sum[chain] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc.sum[chain]);
    if let Some(m) = m {
        acc.min[chain] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.d * a.sum as f32), acc.min[chain]);
    }
}

/// [`accumulate`] for mins per 16 weights (ggml Q2_K): the min term from the chunk's integer
/// min sum `mins` (`Σ min · (half's Σa)`) times `neg_dmin · d_a` (`segmented`'s
/// `accumulate_mins16` on eight lanes).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn accumulate_mins16(
    acc: &mut Acc,
    chain: usize,
    [sums, mins]: [__m256i; 2],
    d: __m256,
    neg_dmin: __m256,
    a: &BlockQ8Act,
) {
    let da = _mm256_set1_ps(a.d);
    acc.sum[chain] = _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(sums),
        _mm256_mul_ps(d, da),
        acc.sum[chain],
    );
    acc.min[chain] = _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(mins),
        _mm256_mul_ps(neg_dmin, da),
        acc.min[chain],
    );
}

/// Outputs of eight rows (`rows[i]`, lane `i`) for tokens `t0 .. t0 + N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn group_tokens<F: Q8Format, const N: usize>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    t0: usize,
) -> [__m256; N] {
    let halves = F::ELEMS / QK8;
    let zero = _mm256_setzero_ps();
    let mut acc = [Acc {
        sum: [zero; 2],
        min: [zero; 2],
    }; N];
    let blocks = rows[0].len() / F::BYTES;
    // Cache lines of the next group to ask for while this block is worked on.
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks.max(1));
    for b in 0..blocks {
        let (w, d, m) = decode_block_of_group::<F>(rows, b, next, lines_per_block);
        let m = (!F::SIGNED).then_some(m);
        for (h, w) in w.iter().enumerate().take(halves) {
            let chunk = b * halves + h;
            let chain = chunk & 1;
            let v = transpose_quads(w);
            for (t, acc) in acc.iter_mut().enumerate() {
                let a = &x[(t0 + t) * acts_per_token + chunk];
                let s = sums_transposed(&v, a, F::SIGNED);
                accumulate(acc, chain, s, d, m, a);
            }
        }
    }
    core::array::from_fn(|t| {
        let a = &acc[t];
        _mm256_add_ps(
            _mm256_add_ps(a.sum[0], a.sum[1]),
            _mm256_add_ps(a.min[0], a.min[1]),
        )
    })
}

/// Block `b` of the eight rows, decoded: per half (32 weights), each row's bytes, then the
/// rows' scales and mins as lanes. Asks for the block's share of `next` (the following group's
/// rows, `lines_per_block` cache lines per block; the one-token loops pass 0 and ask for their
/// lines themselves) meanwhile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
pub(super) fn decode_block_of_group<F: Q8Format>(
    rows: &[&[u8]; GROUP],
    b: usize,
    next: &[u8],
    lines_per_block: usize,
) -> ([[__m256i; GROUP]; 2], __m256, __m256) {
    for line in b * lines_per_block..(b + 1) * lines_per_block {
        prefetch(next, line * 64);
    }
    let mut w = [[_mm256_setzero_si256(); GROUP]; 2];
    let mut heads = [_mm_setzero_si128(); GROUP];
    for i in 0..GROUP {
        let block = &rows[i][b * F::BYTES..(b + 1) * F::BYTES];
        // SAFETY: this tier's table installs `F` only where the CPU has the features its
        // decoder needs, all enabled here (target_feature).
        let dec = unsafe { F::decode_biased(block) };
        w[0][i] = dec.w[0];
        w[1][i] = dec.w[1];
        heads[i] = super::load16(block, 0);
    }
    let (d, m) = scales_and_mins(&heads);
    (w, d, m)
}

/// The eight rows' block scales and mins as f32 lanes, from each block's first 16 bytes: every
/// format of this driver starts a block with its f16 scale, then (unsigned formats) its f16 min,
/// the values `Decoded::d` and `m` hold one row at a time. Seven word interleaves gather both,
/// where one `vpinsrw` per row and value cost twice the shuffles.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn scales_and_mins(heads: &[__m128i; GROUP]) -> (__m256, __m256) {
    // Words 0, 1 of rows i, i + 1 interleaved: [d_i, d_i+1, m_i, m_i+1, …].
    let p: [__m128i; 4] =
        core::array::from_fn(|j| _mm_unpacklo_epi16(heads[2 * j], heads[2 * j + 1]));
    // [d_0..d_3, m_0..m_3] and [d_4..d_7, m_4..m_7].
    let lo = _mm_unpacklo_epi32(p[0], p[1]);
    let hi = _mm_unpacklo_epi32(p[2], p[3]);
    (
        _mm256_cvtph_ps(_mm_unpacklo_epi64(lo, hi)),
        _mm256_cvtph_ps(_mm_unpackhi_epi64(lo, hi)),
    )
}

/// Rows `first .. first + N` of `w`, those past `last` repeating row `last`.
#[inline(always)]
pub(super) fn rows_of<'w, const N: usize>(
    w: &WeightView<'w>,
    first: usize,
    last: usize,
) -> [&'w [u8]; N] {
    let mut rows: [&[u8]; N] = [&[]; N];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = w.row((first + i).min(last));
    }
    rows
}

/// Asks for the cache line holding `bytes[offset]` (nothing when `offset` is past the end).
///
/// Eight rows read block by block are eight interleaved streams with a stride, which the
/// hardware prefetchers follow poorly: measured on a 49152 × 576 Q8_0 matrix (beyond the caches),
/// 5.8 G weights/s without this against 27 with the matrix in cache.
#[inline(always)]
pub(super) fn prefetch(bytes: &[u8], offset: usize) {
    if let Some(b) = bytes.get(offset) {
        prefetch_address::<false>(b);
    }
}

/// Asks for the cache line holding `p`, with the non-temporal hint (`prefetchnta`) if `NTA`: the
/// line comes to L1 without displacing what the outer caches hold. Every one-token step of this
/// tier uses it (`one_token::matmul`, and `split512`'s paths): weights are read once per token,
/// and on a Zen 4 the non-temporal hint streamed Q8_0 rows at 27.6–28.2 G weights/s against
/// 22–24 with `T0` (`TIER=avx512-split ROWS=120000 matmul_min 1`, 2026-12-05 00:10–00:20 UTC),
/// the other formats the same within noise.
#[inline(always)]
fn prefetch_address<const NTA: bool>(p: *const u8) {
    let p: *const i8 = p.cast();
    // SAFETY: a prefetch is a hint that reads nothing architecturally and cannot fault, for
    // any address. SSE is part of x86-64.
    unsafe {
        if NTA {
            _mm_prefetch::<_MM_HINT_NTA>(p)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p)
        }
    }
}

/// Asks for `next[start .. start + len]`, one line per 64 bytes from `start` (the line holding
/// the range's last bytes is the next call's first, when it is not this call's).
///
/// `len` is a constant of the caller's format, so the loop unrolls and no line is checked
/// against `next`'s end: a prefetch reads nothing architecturally and cannot fault, whatever
/// the address. The one-token loops had spread `next`'s lines over the blocks with a count
/// known only at run time, a loop with a bounds check per line, about 25 instructions per block
/// of eight rows: on a Zen 5 (`TIER=avx2 matmul_min 1`, three alternating rounds, 2026-12-05
/// 06:50 UTC, G weights/s) Q8_0 30.6–30.9 → 41.2, Q4_0 48.8–49.1 → 56.4–57.6, Q4_1 49.5–49.8
/// → 54.6–55.5, IQ4_NL 34.4–35.0 → 38.5–38.7, VQ4 51.6–52.0 → 55.4–57.1; streamed from memory
/// (`ROWS=120000`) Q8_0 31.1–31.4 → 41.8–41.9, Q4_0 48.9–49.1 → 54.9–55.1.
#[inline(always)]
pub(super) fn prefetch_share<const NTA: bool>(next: &[u8], start: usize, len: usize) {
    if next.is_empty() {
        return;
    }
    for line in 0..len.div_ceil(64) {
        prefetch_address::<NTA>(next.as_ptr().wrapping_add(start + 64 * line));
    }
}

/// Asks for lines `first .. first + count` of `next` (64 bytes each from its start), those
/// past its end left out: callers spreading `next`'s lines over a group's blocks with a count
/// per block rounded up, so that all of them are asked for before the group's last blocks.
/// One bound per call, not per line, and no line checked: a prefetch cannot fault.
#[inline(always)]
pub(super) fn prefetch_lines<const NTA: bool>(next: &[u8], first: usize, count: usize) {
    let end = (first + count).min(next.len().div_ceil(64));
    for line in first..end {
        prefetch_address::<NTA>(next.as_ptr().wrapping_add(64 * line));
    }
}

/// The rows [`PREFETCH_AHEAD`] groups of `width` after the group starting at row `first`, to be
/// asked for while that group is worked on, past the end of the caller's range too: a thread
/// pool hands a thread contiguous pieces, so those rows are usually its next call's.
pub(super) fn rows_ahead<'w>(w: &WeightView<'w>, first: usize, width: usize) -> &'w [u8] {
    rows_ahead_by(w, first, width, PREFETCH_AHEAD)
}

/// [`rows_ahead`] `ahead` groups on instead of [`PREFETCH_AHEAD`].
pub(super) fn rows_ahead_by<'w>(
    w: &WeightView<'w>,
    first: usize,
    width: usize,
    ahead: usize,
) -> &'w [u8] {
    let start = first + ahead * width;
    let end = (start + width).min(w.rows).max(start);
    w.data
        .get(start * w.row_bytes..end * w.row_bytes)
        .unwrap_or(&[])
}

/// Asks for the first [`PREFETCH_AHEAD`] groups of `width` rows of `rows` all at once (the
/// groups after them are asked for one at a time, [`rows_ahead`]).
pub(super) fn prefetch_head(w: &WeightView<'_>, rows: &Range<usize>, width: usize) {
    let head_end = (rows.start + PREFETCH_AHEAD * width).min(rows.end);
    let head = w
        .data
        .get(rows.start * w.row_bytes..head_end * w.row_bytes)
        .unwrap_or(&[]);
    for line in 0..head.len().div_ceil(64) {
        prefetch(head, line * 64);
    }
}

/// Writes lanes `0..count` of `v` as outputs `(token, first_row + i)`.
///
/// # Safety
/// Those outputs belong to the caller (no other thread touches them).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn write_lanes(
    out: &SharedOut<'_>,
    v: __m256,
    token: usize,
    n: usize,
    first_row: usize,
    count: usize,
) {
    let mut lanes = [0f32; GROUP];
    // SAFETY: `lanes` is 8 writable f32; storeu needs no alignment.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
    for (i, &l) in lanes[..count].iter().enumerate() {
        // SAFETY: the caller owns these outputs (this function's contract).
        unsafe { out.write(token * n + first_row + i, l) };
    }
}

/// The 8-bit matmul for format `F` over rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA, F16C and AVX-512 F, BW, VL, VNNI and VBMI; no other thread
/// touches rows `rows` of `out`; `x` holds `tokens × w.cols / 32` blocks and `w.cols` is a
/// multiple of `F::ELEMS`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    if rows.is_empty() {
        return;
    }
    if let (Some((k, codebook)), Layout::Rows16) = (F::ROWS16, w.layout) {
        // SAFETY: this function's contract, passed on; the session interleaves only tensors of
        // whole sixteen-row groups, and this tier's ranges are whole groups (`ROWS_PER_GROUP`).
        return unsafe { super::trellis_rows16::matmul_k(k, codebook, w, x, tokens, rows, out) };
    }
    if tokens == 1 {
        // SAFETY: this function's contract, passed on.
        return unsafe { super::one_token::matmul::<F>(w, x, rows, out, PREFETCH_AHEAD) };
    }
    if tokens >= SEGMENT_MIN_TOKENS {
        let mut scratch = Scratch::<TOKEN_TILE>::new();
        // SAFETY: this function's contract, passed on.
        unsafe { tiles::<F>(w, x, tokens, rows, out, Some(&mut scratch)) }
    } else {
        // SAFETY: as above.
        unsafe { tiles::<F>(w, x, tokens, rows, out, None) }
    }
}

/// [`matmul`] tile by tile: tiles of at least [`SEGMENT_MIN_TOKENS`] tokens (when `scratch` is
/// given) through the sixteen-row segmented path, the others eight rows at a time.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn tiles<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
    mut scratch: Option<&mut Scratch<TOKEN_TILE>>,
) {
    let acts_per_token = w.cols / QK8;
    let n = w.rows;
    let last = rows.end - 1;
    prefetch_head(w, &rows, WIDE);
    let next_rows = |first: usize, width: usize| rows_ahead(w, first, width);
    let mut tile = 0;
    while tile < tokens {
        let tile_end = (tile + TOKEN_TILE).min(tokens);
        if let Some(scratch) = scratch
            .as_deref_mut()
            .filter(|_| tile_end - tile >= SEGMENT_MIN_TOKENS)
        {
            for first in rows.clone().step_by(WIDE) {
                let count = (rows.end - first).min(WIDE);
                // Rows past the range repeat its last row; their lanes are computed, not written.
                let group: [&[u8]; WIDE] = rows_of(w, first, last);
                // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call; the
                // features are this function's contract.
                unsafe {
                    group_tile::<Blocks<F>, TOKEN_TILE>(
                        &group,
                        next_rows(first, WIDE),
                        x,
                        acts_per_token,
                        tile..tile_end,
                        out,
                        n,
                        first,
                        count,
                        scratch,
                    )
                };
            }
            tile = tile_end;
            continue;
        }
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            // Rows past the range repeat its last row; their lanes are computed, not written.
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            let next = next_rows(first, GROUP);
            let mut t0 = tile;
            while t0 + TOKENS <= tile_end {
                let v = group_tokens::<F, TOKENS>(&group, next, x, acts_per_token, t0);
                for (t, v) in v.into_iter().enumerate() {
                    // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
                    unsafe { write_lanes(out, v, t0 + t, n, first, count) };
                }
                t0 += TOKENS;
            }
            while t0 < tile_end {
                let acts = &x[t0 * acts_per_token..(t0 + 1) * acts_per_token];
                let v = group_outputs::<F, false>(&group, next, acts);
                // SAFETY: as above.
                unsafe { write_lanes(out, v, t0, n, first, count) };
                t0 += 1;
            }
        }
        tile = tile_end;
    }
}
