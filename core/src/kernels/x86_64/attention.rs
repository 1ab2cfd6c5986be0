//! AVX2+FMA+F16C attention over an f32, f16 or Q8_0 KV cache, blocked with an online softmax and
//! tiled over query rows.
//!
//! The query heads of one GQA group and as many tokens of the step as fit in [`MAX_ROWS`] form a tile of
//! query rows that share every K and V row read: the cached positions are walked in blocks of
//! [`SCORE_BLOCK`], and inside a block eight positions at a time are widened to f32 once (f16
//! with `vcvtph2ps`, Q8_0 as `scale · q`, both exact) into a small stack buffer that every row of
//! the tile then reads from L1. Scores for eight positions come out of eight accumulators and one
//! transpose-and-add tree, not eight horizontal sums; rows go in pairs, so each widened vector
//! loaded feeds two rows' FMAs ([`scores`], [`values`]). On the AVX-512 tier
//! (`attention::<true>`) a tile of 8 rows or more scores four rows at a time in 16-lane vectors
//! from K widened as pairs of positions, and the value sums use 16 lanes: per row the same FMA
//! chains and trees, so the same bits as the AVX2 path. Each row keeps its running maximum `m` and
//! sum `l`; when a block raises `m`, the row's partial output and `l` are multiplied by
//! `e^(m_old − m_new)`; the block's values are then added with weights `e^(s − m)`, each output
//! element accumulating positions in ascending order. Every [`ATTN_CHUNK`] positions the row's
//! state starts afresh and the finished chunk is folded into the running one
//! ([`crate::kernels::attention::fold_chunk`]), or, when the session splits a decoded token by
//! positions ([`AttnSpan::Chunks`]), left in the partials scratch for it to fold in the same
//! order. The output is divided by the folded `l` at the end. A one-token call (a decode step)
//! builds every GQA group's tile first and runs each chunk through all of them in turn, so a
//! chunk's K and V rows (every KV head's values of a position side by side) are read whole,
//! not one head's slice of every position and then the next head's.
//!
//! Every row's arithmetic depends only on its own query and positions, never on which other rows
//! share its tile, so a token gives the same bits in a prefill tile as when decoded alone, and
//! for any split of heads, tokens or chunks across threads. Scratch is fixed-size stack (scores
//! for a tile's rows, one block wide, their chunk outputs, and eight widened K or V rows),
//! whatever the context. Checked
//! against the scalar reference (a three-pass exact softmax) in `core/tests/kernels_simd.rs`.

mod scores;
mod values;
mod widen;

use super::ops::{exp, load, store};
use super::q8::hsum;
use crate::kernels::attention::{
    finish_row, fold_chunk, partial_range, AttnShape, AttnSpan, RowState, ATTN_CHUNK, MAX_HEAD_DIM,
    SCORE_BLOCK,
};
use crate::kernels::SharedOut;
use crate::kv::KvRows;
use core::arch::x86_64::*;
use core::mem::MaybeUninit;
use core::ops::Range;
use scores::{scores_tile_pairs, scores_tile_zmm};
use values::{values_tile_pairs, values_tile_zmm};
use widen::widen_rows;

/// Query heads of one GQA group attended together.
const MAX_GROUP: usize = 8;

/// Query rows of one tile: a GQA group's heads times as many tokens of the step as fit (10 for
/// SmolLM2's groups of 3, 4 for groups of 8). Every row of a tile reads each widened K/V row, so
/// the widening is shared by more rows than with a fixed four tokens per tile (a quarter of a
/// prefill's attention time was widening at 12 rows).
const MAX_ROWS: usize = 32;

/// Fewest rows in a tile for which the AVX-512 tier's 16-lane paths ([`scores_tile_zmm`],
/// [`values_tile_zmm`]) pay: a decode step's few rows ran 10–30 % slower on them than on the
/// 8-lane pairs.
const ZMM_ROWS: usize = 8;

/// Cached positions widened and scored together.
const POS_STEP: usize = 8;

/// The tier's attention: `ZMM` for the AVX-512 tier (16-lane leaves for tiles of
/// [`ZMM_ROWS`] rows or more, the same bits).
///
/// # Safety
/// Same contract as [`crate::kernels::table::AttentionFn`]; installed only from a table that
/// `select` built for a CPU with AVX2, FMA and F16C, and with `ZMM` for one that also has
/// AVX-512 F and VL.
pub(super) unsafe fn attention<const ZMM: bool>(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    let lanes = if ZMM { Lanes::Zmm } else { Lanes::Ymm };
    // SAFETY: features present (see above); head (and chunk) exclusivity is the caller's
    // contract.
    unsafe { attention_avx2(s, q, k, v, heads, partials, out, lanes) }
}

/// The widest vectors the installing tier allows the scores and value sums (either width gives
/// the same bits).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    Ymm,
    /// The CPU has AVX-512 F and VL.
    Zmm,
}

/// A tile's working memory: each row's scores for one block, and eight widened K or V rows;
/// and the vectors the leaves may use.
struct Scratch<'s> {
    scores: &'s mut [[f32; SCORE_BLOCK]],
    wide: &'s mut [f32],
    lanes: Lanes,
}

/// f32 of stack for the tile rows' chunk outputs: caps a tile at `WORK_FLOATS / head_dim` rows
/// (all [`MAX_ROWS`] up to head_dim 128, 8 at 512). A one-token call whose heads' rows all fit
/// holds every head's row at once (its tiles walk the chunks together).
const WORK_FLOATS: usize = 4096;

/// The first `n` elements of `mem`, zeroed; the rest stays uninitialized and out of reach.
/// (Zeroing all 32 KiB of the largest tile per call cost more than a decode step's tiles use.)
fn zeroed_prefix<T: bytemuck::Zeroable, const N: usize>(
    mem: &mut MaybeUninit<[T; N]>,
    n: usize,
) -> &mut [T] {
    assert!(n <= N, "scratch of {n} above its capacity {N}");
    let p = mem.as_mut_ptr().cast::<T>();
    // SAFETY: `p` is the start of storage for N values of T owned by `mem` (an array has its
    // elements' alignment); the first n <= N are written with zero bytes, a valid T by
    // `Zeroable`, before the slice over exactly them is made, and the slice borrows `mem`.
    unsafe {
        core::ptr::write_bytes(p, 0, n);
        core::slice::from_raw_parts_mut(p, n)
    }
}

/// One query row of a tile: where its query and output live and its softmax states.
struct Row<'o> {
    q: Range<usize>,
    head: usize,
    /// The folded output (empty when the call writes chunk states instead).
    out: &'o mut [f32],
    /// The current chunk's unnormalized output.
    work: &'o mut [f32],
    /// Cached positions this row attends to (`pos0 + t + 1`).
    n_pos: usize,
    /// The current chunk's state.
    chunk: RowState,
    /// The state folded over the chunks before.
    acc: RowState,
}

impl Row<'_> {
    /// Whether the row attends to cached position `pos`.
    #[inline]
    fn reaches(&self, pos: usize) -> bool {
        self.n_pos > pos
    }

    /// How many of the `step` positions from `pos` the row attends to.
    #[inline]
    fn positions_from(&self, pos: usize, step: usize) -> usize {
        step.min(self.n_pos.saturating_sub(pos))
    }
}

/// Where a tile's chunk states go: folded into each row's output, or into the partials scratch.
#[derive(Clone, Copy)]
enum Sink<'p, 'a> {
    Fold,
    Partials(&'p SharedOut<'a>),
}

/// # Safety
/// AVX2, FMA and F16C are present; no other thread touches the output columns of heads `heads`
/// in the step's tokens, nor (with [`AttnSpan::Chunks`]) those heads' states of those chunks.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_avx2(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
    lanes: Lanes,
) {
    let hd = s.head_dim;
    assert!(hd <= MAX_HEAD_DIM, "head_dim {hd} above {MAX_HEAD_DIM}");
    let group = s.n_heads / s.n_kv_heads;
    let (chunks, sink) = match s.span {
        AttnSpan::Whole => {
            let last = s.pos0 + s.tokens;
            (0..last.div_ceil(ATTN_CHUNK), Sink::Fold)
        }
        AttnSpan::Chunks { first, end } => {
            assert!(s.tokens == 1, "a split by positions is for one token");
            assert!(
                end <= s.partial_slots,
                "chunk {end} past the partials scratch"
            );
            (first..end, Sink::Partials(partials))
        }
    };
    let max_rows = MAX_ROWS.min(WORK_FLOATS / hd);
    // Zeroed once per call, not per tile, and only as much as this call's tiles use.
    let (mut scores_mem, mut wide_mem, mut work_mem) = (
        MaybeUninit::uninit(),
        MaybeUninit::uninit(),
        MaybeUninit::uninit(),
    );
    let tile_rows = (group.min(MAX_GROUP) * s.tokens).min(max_rows);
    let mut scratch = Scratch {
        scores: zeroed_prefix::<[f32; SCORE_BLOCK], MAX_ROWS>(&mut scores_mem, tile_rows),
        wide: zeroed_prefix::<f32, { POS_STEP * MAX_HEAD_DIM }>(&mut wide_mem, POS_STEP * hd),
        lanes,
    };
    // One token: every head's tile walks the cached positions chunk by chunk together, so each
    // chunk's K and V rows are read whole (all KV heads' values of a position lie side by side)
    // instead of one head's slice of every position, then the next head's.
    let interleave = s.tokens == 1 && heads.len() <= MAX_ROWS && heads.len() * hd <= WORK_FLOATS;
    let work_rows = if interleave { heads.len() } else { tile_rows };
    let work = zeroed_prefix::<f32, WORK_FLOATS>(&mut work_mem, work_rows * hd);
    if interleave {
        let mut works = work.chunks_exact_mut(hd);
        let mut rows: heapless::Vec<Row<'_>, MAX_ROWS> = heapless::Vec::new();
        // Each tile's KV head and rows.
        let mut tiles: heapless::Vec<(usize, Range<usize>), MAX_ROWS> = heapless::Vec::new();
        let mut h0 = heads.start;
        while h0 < heads.end {
            let kvh = h0 / group;
            let h1 = tile_heads_end(h0, group, heads.end);
            let first = rows.len();
            for h in h0..h1 {
                // At most MAX_ROWS heads (checked above), and `work` holds a row per head.
                let work = works.next().expect("a work row per head");
                // SAFETY: head h's columns of the token belong to this call alone (caller's
                // contract), and distinct heads' columns are disjoint.
                let _ = rows.push(unsafe { new_row(s, out, sink, 0, h, work) });
            }
            let _ = tiles.push((kvh, first..rows.len()));
            h0 = h1;
        }
        for c in chunks {
            for (kvh, tile) in tiles.iter() {
                // SAFETY: with `Partials`, these heads' states of these chunks belong to this
                // call alone (caller's contract).
                unsafe {
                    attend_chunk(
                        s,
                        q,
                        &k,
                        &v,
                        *kvh,
                        c,
                        &mut rows[tile.clone()],
                        &mut scratch,
                        sink,
                    )
                };
            }
        }
        finish_rows(&mut rows, sink);
        return;
    }
    let mut h0 = heads.start;
    while h0 < heads.end {
        let kvh = h0 / group;
        let h1 = tile_heads_end(h0, group, heads.end);
        let mut t0 = 0;
        while t0 < s.tokens {
            let t1 = (t0 + (max_rows / (h1 - h0)).max(1)).min(s.tokens);
            let mut rows: heapless::Vec<Row<'_>, MAX_ROWS> = heapless::Vec::new();
            let mut works = work.chunks_exact_mut(hd);
            for t in t0..t1 {
                for h in h0..h1 {
                    // At most max_rows tokens × heads per tile, and `work` holds tile_rows of hd.
                    let work = works.next().expect("a work row per tile row");
                    // SAFETY: head h's columns in token t belong to this call alone (caller's
                    // contract), and distinct (token, head) pairs' columns are disjoint.
                    let _ = rows.push(unsafe { new_row(s, out, sink, t, h, work) });
                }
            }
            for c in chunks.clone() {
                // SAFETY: with `Partials`, these heads' states of these chunks belong to this
                // call alone (caller's contract).
                unsafe { attend_chunk(s, q, &k, &v, kvh, c, &mut rows, &mut scratch, sink) };
            }
            finish_rows(&mut rows, sink);
            t0 = t1;
        }
        h0 = h1;
    }
}

/// The end of the tile of heads starting at `h0`: the rest of its GQA group (groups of `group`
/// heads), at most [`MAX_GROUP`] heads and none past `heads_end`.
fn tile_heads_end(h0: usize, group: usize, heads_end: usize) -> usize {
    ((h0 / group + 1) * group)
        .min(heads_end)
        .min(h0 + MAX_GROUP)
}

/// Writes each row's folded output (nothing when the chunk states went to the partials).
fn finish_rows(rows: &mut [Row<'_>], sink: Sink<'_, '_>) {
    if let Sink::Fold = sink {
        for r in rows.iter_mut() {
            finish_row(r.out, r.acc);
        }
    }
}

/// The tile row of head `h` in token `t`, its chunk output in `work`.
///
/// # Safety
/// With [`Sink::Fold`], head `h`'s columns in token `t` of `out` belong to the caller alone.
unsafe fn new_row<'o>(
    s: &AttnShape,
    out: &'o SharedOut<'_>,
    sink: Sink<'_, '_>,
    t: usize,
    h: usize,
    work: &'o mut [f32],
) -> Row<'o> {
    let hd = s.head_dim;
    let q_width = s.n_heads * hd;
    let cols = t * q_width + h * hd..t * q_width + (h + 1) * hd;
    let o: &mut [f32] = match sink {
        // SAFETY: this function's contract.
        Sink::Fold => unsafe { out.slice_mut(cols.clone()) },
        Sink::Partials(_) => &mut [],
    };
    Row {
        q: cols,
        head: h,
        out: o,
        work,
        n_pos: s.pos0 + t + 1,
        chunk: RowState::EMPTY,
        acc: RowState::EMPTY,
    }
}

/// Runs the blocked online softmax of chunk `c` for every row of one tile (all rows read kv
/// head `kvh`) from a fresh state, then hands each row's chunk state to `sink`.
///
/// # Safety
/// With [`Sink::Partials`], no other thread touches these rows' heads' states of chunk `c`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_chunk(
    s: &AttnShape,
    q: &[f32],
    k: &KvRows<'_>,
    v: &KvRows<'_>,
    kvh: usize,
    c: usize,
    rows: &mut [Row<'_>],
    scratch: &mut Scratch<'_>,
    sink: Sink<'_, '_>,
) {
    let (first, end) = (c * ATTN_CHUNK, (c + 1) * ATTN_CHUNK);
    let mut live = false;
    for r in rows.iter_mut().filter(|r| r.n_pos > first) {
        r.work.fill(0.0);
        r.chunk = RowState::EMPTY;
        live = true;
    }
    if !live {
        return;
    }
    attend_positions(s, q, k, v, kvh, first..end, rows, scratch);
    for r in rows.iter_mut().filter(|r| r.n_pos > first) {
        match sink {
            Sink::Fold => fold_chunk(&mut r.acc, r.out, r.chunk, r.work),
            Sink::Partials(p) => {
                // SAFETY: this head's state of chunk c belongs to this call (the contract).
                let dst = unsafe { p.slice_mut(partial_range(s, r.head, c)) };
                dst[0] = r.chunk.max;
                dst[1] = r.chunk.sum;
                dst[2..].copy_from_slice(r.work);
            }
        }
    }
}

/// The blocked online softmax over `positions` (block-aligned) for every row of one tile,
/// continuing each row's chunk state and output (`work`).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn attend_positions(
    s: &AttnShape,
    q: &[f32],
    k: &KvRows<'_>,
    v: &KvRows<'_>,
    kvh: usize,
    positions: Range<usize>,
    rows: &mut [Row<'_>],
    scratch: &mut Scratch<'_>,
) {
    let hd = s.head_dim;
    let kv_width = s.n_kv_heads * hd;
    let n_pos = rows.iter().map(|r| r.n_pos).max().unwrap_or(0);
    let end = positions.end.min(n_pos);
    let wide = &mut scratch.wide[..POS_STEP * hd];
    let scores = &mut *scratch.scores;
    let lanes = scratch.lanes;
    let zmm_tile = lanes == Lanes::Zmm && rows.len() >= ZMM_ROWS;
    let zmm_scores = zmm_tile && hd.is_multiple_of(8);
    assert!(rows.len() <= scores.len(), "tile rows above the scratch");
    let mut b0 = positions.start;
    while b0 < end {
        let block = SCORE_BLOCK.min(end - b0);
        // Q·Kᵀ, eight positions at a time.
        let mut p0 = 0;
        while p0 < block {
            let step = POS_STEP.min(block - p0);
            if zmm_scores {
                widen_rows::<true>(k, b0 + p0, step, kv_width, kvh * hd, hd, wide);
                // SAFETY: `Zmm` only from `attention::<true>`, whose table was built for a CPU
                // with AVX-512 F and VL.
                unsafe { scores_tile_zmm(rows, q, wide, hd, s.scale, scores, p0, b0 + p0) };
            } else {
                widen_rows::<false>(k, b0 + p0, step, kv_width, kvh * hd, hd, wide);
                scores_tile_pairs(rows, q, wide, hd, s.scale, scores, p0, b0 + p0);
            }
            p0 += step;
        }
        // Softmax bookkeeping per row over its own positions of the block.
        for (r, sc) in rows.iter_mut().zip(scores.iter_mut()) {
            if r.n_pos <= b0 {
                continue;
            }
            let len = block.min(r.n_pos - b0);
            let block_max = max_of(&sc[..len]);
            let st = &mut r.chunk;
            let new_max = st.max.max(block_max);
            if st.max != new_max && st.max != f32::NEG_INFINITY {
                let shrink = libm::expf(st.max - new_max);
                scale_in_place(r.work, shrink);
                st.sum *= shrink;
            }
            st.max = new_max;
            st.sum += softmax_numerators(&mut sc[..len], new_max);
        }
        // P·V, eight positions at a time.
        let mut p0 = 0;
        while p0 < block {
            let step = POS_STEP.min(block - p0);
            widen_rows::<false>(v, b0 + p0, step, kv_width, kvh * hd, hd, wide);
            if zmm_tile {
                // SAFETY: `Zmm` only from `attention::<true>`, whose table was built for a CPU
                // with AVX-512 F.
                unsafe { values_tile_zmm(rows, scores, wide, hd, p0, step, b0 + p0) };
            } else {
                values_tile_pairs(rows, scores, wide, hd, p0, step, b0 + p0);
            }
            p0 += step;
        }
        b0 += block;
    }
}

/// `o *= f`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scale_in_place(o: &mut [f32], f: f32) {
    let n = o.len();
    let whole = n / 8 * 8;
    let fv = _mm256_set1_ps(f);
    let mut i = 0;
    while i < whole {
        store(o, i, _mm256_mul_ps(load(o, i), fv));
        i += 8;
    }
    for x in o[whole..].iter_mut() {
        *x *= f;
    }
}

/// The largest of `x` (−∞ when empty), eight lanes at a time. A maximum is exact whatever the
/// order, so this equals a sequential scan (scores are finite).
#[target_feature(enable = "avx2,fma,f16c")]
fn max_of(x: &[f32]) -> f32 {
    let whole = x.len() / 8 * 8;
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < whole {
        m = _mm256_max_ps(m, load(x, i));
        i += 8;
    }
    let mut lanes = [0f32; 8];
    store(&mut lanes, 0, m);
    lanes
        .iter()
        .chain(&x[whole..])
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Replaces `sc[j]` by `e^(sc[j] − max)` and returns their sum.
#[target_feature(enable = "avx2,fma,f16c")]
fn softmax_numerators(sc: &mut [f32], max: f32) -> f32 {
    let n = sc.len();
    let whole = n / 8 * 8;
    let maxv = _mm256_set1_ps(max);
    let mut sumv = _mm256_setzero_ps();
    let mut j = 0;
    while j < whole {
        let e = exp(_mm256_sub_ps(load(sc, j), maxv));
        store(sc, j, e);
        sumv = _mm256_add_ps(sumv, e);
        j += 8;
    }
    let mut sum = hsum(sumv);
    for sj in sc[whole..n].iter_mut() {
        *sj = libm::expf(*sj - max);
        sum += *sj;
    }
    sum
}
