//! AVX2+FMA+F16C attention over an f32, f16 or Q8_0 KV cache, blocked with an online softmax and
//! tiled over query rows.
//!
//! The query heads of one GQA group and as many tokens of the step as fit in [`MAX_ROWS`] form a tile of
//! query rows that share every K and V row read: the cached positions are walked in blocks of
//! [`SCORE_BLOCK`], and inside a block eight positions at a time are widened to f32 once (f16
//! with `vcvtph2ps`, Q8_0 as `scale · q`, both exact) into a small stack buffer that every row of
//! the tile then reads from L1. Scores for eight positions come out of eight accumulators and one
//! transpose-and-add tree, not eight horizontal sums. Each row keeps its running maximum `m` and
//! sum `l`; when a block raises `m`, the row's partial output and `l` are multiplied by
//! `e^(m_old − m_new)`; the block's values are then added with weights `e^(s − m)`, each output
//! element accumulating positions in ascending order. Every [`ATTN_CHUNK`] positions the row's
//! state starts afresh and the finished chunk is folded into the running one
//! ([`crate::kernels::attention::fold_chunk`]), or, when the session splits a decoded token by
//! positions ([`AttnSpan::Chunks`]), left in the partials scratch for it to fold in the same
//! order. The output is divided by the folded `l` at the end.
//!
//! Every row's arithmetic depends only on its own query and positions, never on which other rows
//! share its tile, so a token gives the same bits in a prefill tile as when decoded alone, and
//! for any split of heads, tokens or chunks across threads. Scratch is fixed-size stack (scores
//! for a tile's rows, one block wide, their chunk outputs, and eight widened K or V rows),
//! whatever the context. Checked
//! against the scalar reference (a three-pass exact softmax) in `core/tests/kernels_simd.rs`.

use super::ops::{exp, load, store};
use super::q8::hsum;
use crate::kernels::attention::{
    finish_row, fold_chunk, partial_range, AttnShape, AttnSpan, RowState, ATTN_CHUNK, MAX_HEAD_DIM,
    SCORE_BLOCK,
};
use crate::kernels::SharedOut;
use crate::kv::KvRows;
use crate::quant::gguf::q8_0::{BLOCK_BYTES as Q8_BYTES, BLOCK_ELEMS as Q8_ELEMS};
use core::arch::x86_64::*;
use core::mem::MaybeUninit;
use core::ops::Range;
use half::f16;

/// Query heads of one GQA group attended together.
const MAX_GROUP: usize = 8;

/// Query rows of one tile: a GQA group's heads times as many tokens of the step as fit (10 for
/// SmolLM2's groups of 3, 4 for groups of 8). Every row of a tile reads each widened K/V row, so
/// the widening is shared by more rows than with a fixed four tokens per tile (a quarter of a
/// prefill's attention time was widening at 12 rows).
const MAX_ROWS: usize = 32;

/// Cached positions widened and scored together.
const POS_STEP: usize = 8;

/// # Safety
/// Same contract as [`crate::kernels::table::AttentionFn`]; installed only from a table that
/// `select` built for a CPU with AVX2, FMA and F16C.
pub(super) unsafe fn attention(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    // SAFETY: features present (see above); head (and chunk) exclusivity is the caller's
    // contract.
    unsafe { attention_avx2(s, q, k, v, heads, partials, out) }
}

/// A tile's working memory: each row's scores for one block, and eight widened K or V rows.
struct Scratch<'s> {
    scores: &'s mut [[f32; SCORE_BLOCK]],
    wide: &'s mut [f32],
}

/// f32 of stack for the tile rows' chunk outputs: caps a tile at `WORK_FLOATS / head_dim` rows
/// (all [`MAX_ROWS`] up to head_dim 128, 8 at 512).
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
unsafe fn attention_avx2(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    let hd = s.head_dim;
    assert!(hd <= MAX_HEAD_DIM, "head_dim {hd} above {MAX_HEAD_DIM}");
    let q_width = s.n_heads * hd;
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
    };
    let work = zeroed_prefix::<f32, WORK_FLOATS>(&mut work_mem, tile_rows * hd);
    let mut h0 = heads.start;
    while h0 < heads.end {
        let kvh = h0 / group;
        let h1 = ((kvh + 1) * group).min(heads.end).min(h0 + MAX_GROUP);
        let mut t0 = 0;
        while t0 < s.tokens {
            let t1 = (t0 + (max_rows / (h1 - h0)).max(1)).min(s.tokens);
            let mut rows: heapless::Vec<Row<'_>, MAX_ROWS> = heapless::Vec::new();
            let mut works = work.chunks_exact_mut(hd);
            for t in t0..t1 {
                for h in h0..h1 {
                    let cols = t * q_width + h * hd..t * q_width + (h + 1) * hd;
                    let o: &mut [f32] = match sink {
                        // SAFETY: head h's columns in token t belong to this call alone
                        // (caller's contract), and distinct (token, head) pairs' columns are
                        // disjoint.
                        Sink::Fold => unsafe { out.slice_mut(cols.clone()) },
                        Sink::Partials(_) => &mut [],
                    };
                    let row = Row {
                        q: cols,
                        head: h,
                        out: o,
                        // At most max_rows rows per tile, and `work` holds tile_rows of hd.
                        work: works.next().expect("a work row per tile row"),
                        n_pos: s.pos0 + t + 1,
                        chunk: RowState::EMPTY,
                        acc: RowState::EMPTY,
                    };
                    // At most max_rows / (h1 − h0) tokens × (h1 − h0) heads.
                    let _ = rows.push(row);
                }
            }
            for c in chunks.clone() {
                // SAFETY: with `Partials`, these heads' states of these chunks belong to this
                // call alone (caller's contract).
                unsafe { attend_chunk(s, q, &k, &v, kvh, c, &mut rows, &mut scratch, sink) };
            }
            if let Sink::Fold = sink {
                for r in rows.iter_mut() {
                    finish_row(r.out, r.acc);
                }
            }
            t0 = t1;
        }
        h0 = h1;
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
    assert!(rows.len() <= scores.len(), "tile rows above the scratch");
    let mut b0 = positions.start;
    while b0 < end {
        let block = SCORE_BLOCK.min(end - b0);
        // Q·Kᵀ, eight positions at a time.
        let mut p0 = 0;
        while p0 < block {
            let step = POS_STEP.min(block - p0);
            widen_rows(k, b0 + p0, step, kv_width, kvh * hd, hd, wide);
            // Rows in pairs: each widened K row then feeds two rows' accumulators. A row whose
            // positions end before this step gets scores it never reads.
            let live = |r: &Row<'_>| r.n_pos > b0 + p0;
            let mut pairs = rows.chunks_exact(2).zip(scores.chunks_exact_mut(2));
            for (rp, sp) in pairs.by_ref() {
                let [sa, sb] = sp else { unreachable!() };
                match (live(&rp[0]), live(&rp[1])) {
                    (true, true) => scores8_pair(
                        [&q[rp[0].q.clone()], &q[rp[1].q.clone()]],
                        wide,
                        hd,
                        s.scale,
                        [&mut sa[p0..p0 + POS_STEP], &mut sb[p0..p0 + POS_STEP]],
                    ),
                    (la, lb) => {
                        for (r, sc, l) in [(&rp[0], sa, la), (&rp[1], sb, lb)] {
                            if l {
                                let qr = &q[r.q.clone()];
                                scores8(qr, wide, hd, s.scale, &mut sc[p0..p0 + POS_STEP]);
                            }
                        }
                    }
                }
            }
            let done = rows.len() / 2 * 2;
            for (r, sc) in rows[done..].iter().zip(scores[done..].iter_mut()) {
                if live(r) {
                    let qr = &q[r.q.clone()];
                    scores8(qr, wide, hd, s.scale, &mut sc[p0..p0 + POS_STEP]);
                }
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
            widen_rows(v, b0 + p0, step, kv_width, kvh * hd, hd, wide);
            // Positions this step adds to a row's output.
            let count = |r: &Row<'_>| step.min(r.n_pos.saturating_sub(b0 + p0));
            let mut pairs = rows.chunks_exact_mut(2).zip(scores.chunks_exact(2));
            for (rp, sp) in pairs.by_ref() {
                let [ra, rb] = rp else { unreachable!() };
                let (ma, mb) = (count(ra), count(rb));
                // Both rows together over the positions they share, then each alone over the
                // rest: every output element still adds its positions in ascending order.
                let both = ma.min(mb);
                if both > 0 {
                    accumulate_values_pair(
                        [&mut *ra.work, &mut *rb.work],
                        [&sp[0][p0..p0 + both], &sp[1][p0..p0 + both]],
                        wide,
                        hd,
                    );
                }
                for (r, sc, m) in [(ra, &sp[0], ma), (rb, &sp[1], mb)] {
                    if m > both {
                        let rest = &wide[both * hd..];
                        accumulate_values(r.work, &sc[p0 + both..p0 + m], rest, hd);
                    }
                }
            }
            let done = rows.len() / 2 * 2;
            for (r, sc) in rows[done..].iter_mut().zip(scores[done..].iter()) {
                let m = count(r);
                if m > 0 {
                    accumulate_values(r.work, &sc[p0..p0 + m], wide, hd);
                }
            }
            p0 += step;
        }
        b0 += block;
    }
}

/// Writes positions `first..first + count` (at most [`POS_STEP`]) of the head at value offset
/// `head_off` into `wide` as f32 rows of `hd`; rows past `count` are zeroed.
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_rows(
    rows: &KvRows<'_>,
    first: usize,
    count: usize,
    kv_width: usize,
    head_off: usize,
    hd: usize,
    wide: &mut [f32],
) {
    for (j, dst) in wide.chunks_exact_mut(hd).enumerate() {
        if j >= count {
            dst.fill(0.0);
            continue;
        }
        let off = (first + j) * kv_width + head_off;
        match rows {
            KvRows::F32(c) => {
                let src = &c[off..off + hd];
                let whole = hd / 8 * 8;
                let mut i = 0;
                while i < whole {
                    store(dst, i, load(src, i));
                    i += 8;
                }
                dst[whole..].copy_from_slice(&src[whole..]);
            }
            KvRows::F16(c) => {
                let h = &c[off..off + hd];
                let whole = hd / 8 * 8;
                let mut i = 0;
                while i < whole {
                    store(dst, i, load_f16(h, i));
                    i += 8;
                }
                for (d, &x) in dst[whole..].iter_mut().zip(&h[whole..]) {
                    *d = f16::from_bits(x).to_f32();
                }
            }
            KvRows::Q8_0(b) => {
                let first_blk = off / Q8_ELEMS;
                let src = &b[first_blk * Q8_BYTES..(first_blk + hd / Q8_ELEMS) * Q8_BYTES];
                for (blk, d) in src
                    .chunks_exact(Q8_BYTES)
                    .zip(dst.chunks_exact_mut(Q8_ELEMS))
                {
                    // scale · q is exact in f32 (an 11-bit mantissa times an 8-bit integer).
                    let scale = _mm256_set1_ps(q8_scale(blk));
                    for c in 0..Q8_ELEMS / 8 {
                        store(d, 8 * c, _mm256_mul_ps(load_i8(blk, c), scale));
                    }
                }
            }
        }
    }
}

/// `scale · (q · wide[j])` for the eight rows of `wide` into `out[..8]`. Each score is an
/// 8-lane FMA chain over the head in order, its lanes added by the same tree for every `j`,
/// then the tail past a multiple of 8 in order: independent of the other seven rows.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scores8(q: &[f32], wide: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    assert!(q.len() >= hd && wide.len() >= POS_STEP * hd && out.len() >= POS_STEP);
    let whole = hd / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); POS_STEP];
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 8 <= whole <= hd <= q.len() (asserted above).
        let qc = unsafe { load_at(q.as_ptr(), c) };
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: j·hd + c + 8 <= 8·hd <= wide.len() (asserted above).
            *a = _mm256_fmadd_ps(qc, unsafe { load_at(wide.as_ptr(), j * hd + c) }, *a);
        }
        c += 8;
    }
    let mut sums = [0f32; POS_STEP];
    store(&mut sums, 0, sum_lanes8(&acc));
    for (j, sj) in sums.iter_mut().enumerate() {
        for i in whole..hd {
            *sj += q[i] * wide[j * hd + i];
        }
    }
    store(out, 0, _mm256_mul_ps(load(&sums, 0), _mm256_set1_ps(scale)));
}

/// [`scores8`] for two query rows: each widened K vector is loaded once for both. Per row and
/// position the same FMA chain and the same tree as [`scores8`], so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scores8_pair(q: [&[f32]; 2], wide: &[f32], hd: usize, scale: f32, out: [&mut [f32]; 2]) {
    assert!(q[0].len() >= hd && q[1].len() >= hd && wide.len() >= POS_STEP * hd);
    assert!(out[0].len() >= POS_STEP && out[1].len() >= POS_STEP);
    let whole = hd / 8 * 8;
    let mut sums = [[0f32; POS_STEP]; 2];
    // Four positions per pass: eight accumulators, two rows by four positions.
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); POS_STEP];
        let mut c = 0;
        while c < whole {
            // SAFETY: c + 8 <= whole <= hd <= q[r].len(), and (4·half + j)·hd + c + 8 <=
            // 8·hd <= wide.len() (asserted above).
            unsafe {
                let (qa, qb) = (load_at(q[0].as_ptr(), c), load_at(q[1].as_ptr(), c));
                for j in 0..4 {
                    let w = load_at(wide.as_ptr(), (4 * half + j) * hd + c);
                    acc[j] = _mm256_fmadd_ps(qa, w, acc[j]);
                    acc[4 + j] = _mm256_fmadd_ps(qb, w, acc[4 + j]);
                }
            }
            c += 8;
        }
        let mut lanes = [0f32; POS_STEP];
        store(&mut lanes, 0, sum_lanes8(&acc));
        sums[0][4 * half..4 * half + 4].copy_from_slice(&lanes[..4]);
        sums[1][4 * half..4 * half + 4].copy_from_slice(&lanes[4..]);
    }
    for (r, out) in out.into_iter().enumerate() {
        for (j, sj) in sums[r].iter_mut().enumerate() {
            for i in whole..hd {
                *sj += q[r][i] * wide[j * hd + i];
            }
        }
        store(
            out,
            0,
            _mm256_mul_ps(load(&sums[r], 0), _mm256_set1_ps(scale)),
        );
    }
}

/// 8 f32 at `p + i`, unaligned.
///
/// # Safety
/// `p + i .. p + i + 8` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_at(p: *const f32, i: usize) -> __m256 {
    // SAFETY: readable (this function's contract); loadu needs no alignment.
    unsafe { _mm256_loadu_ps(p.add(i)) }
}

/// Lane `j` of the result is the sum of the eight lanes of `acc[j]`, added as
/// `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum_lanes8(acc: &[__m256; POS_STEP]) -> __m256 {
    let a01 = _mm256_hadd_ps(acc[0], acc[1]);
    let a23 = _mm256_hadd_ps(acc[2], acc[3]);
    let a45 = _mm256_hadd_ps(acc[4], acc[5]);
    let a67 = _mm256_hadd_ps(acc[6], acc[7]);
    // Per 128-bit half: [a0 (0..4), a1, a2, a3] and [a4, a5, a6, a7], low half then high half.
    let a0123 = _mm256_hadd_ps(a01, a23);
    let a4567 = _mm256_hadd_ps(a45, a67);
    let lo = _mm256_permute2f128_ps::<0x20>(a0123, a4567);
    let hi = _mm256_permute2f128_ps::<0x31>(a0123, a4567);
    _mm256_add_ps(lo, hi)
}

/// Output chunks of 8 kept in registers across the positions by [`accumulate_values`].
const HELD_CHUNKS: usize = 8;

/// `o += Σ_j p[j] · wide[j]` with each element of `o` accumulating `j` in ascending order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn accumulate_values(o: &mut [f32], p: &[f32], wide: &[f32], hd: usize) {
    assert!(o.len() == hd && p.len() <= POS_STEP && wide.len() >= p.len() * hd);
    let whole = hd / 8 * 8;
    let (op, wp) = (o.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * HELD_CHUNKS <= whole {
        // SAFETY: c0 + 64 <= whole <= hd = o.len(), and j·hd + c0 + 64 <= p.len()·hd <=
        // wide.len() for j < p.len() (asserted above).
        unsafe {
            let mut acc: [__m256; HELD_CHUNKS] = core::array::from_fn(|i| load_at(op, c0 + 8 * i));
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pv, load_at(wp, j * hd + c0 + 8 * i), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(op.add(c0 + 8 * i), *a);
            }
        }
        c0 += 8 * HELD_CHUNKS;
    }
    while c0 < whole {
        // SAFETY: as above, for one chunk: c0 + 8 <= whole.
        unsafe {
            let mut a = load_at(op, c0);
            for (j, &pj) in p.iter().enumerate() {
                a = _mm256_fmadd_ps(_mm256_set1_ps(pj), load_at(wp, j * hd + c0), a);
            }
            _mm256_storeu_ps(op.add(c0), a);
        }
        c0 += 8;
    }
    for i in whole..hd {
        for (j, &pj) in p.iter().enumerate() {
            o[i] += pj * wide[j * hd + i];
        }
    }
}

/// Output chunks of 8 per row kept in registers by [`accumulate_values_pair`].
const PAIR_CHUNKS: usize = 4;

/// [`accumulate_values`] for two rows over the same positions: each widened V vector is loaded
/// once for both rows. Every element of `o[r]` adds `p[r][j] · wide[j]` in ascending `j`, as
/// [`accumulate_values`] does, so the bits are those of two separate calls.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn accumulate_values_pair(o: [&mut [f32]; 2], p: [&[f32]; 2], wide: &[f32], hd: usize) {
    let n = p[0].len();
    assert!(p[1].len() == n && n <= POS_STEP && wide.len() >= n * hd);
    assert!(o[0].len() == hd && o[1].len() == hd);
    let whole = hd / 8 * 8;
    let [oa, ob] = o;
    let (pa, pb, wp) = (oa.as_mut_ptr(), ob.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * PAIR_CHUNKS <= whole {
        // SAFETY: c0 + 8·PAIR_CHUNKS <= whole <= hd = o[r].len(), and j·hd + c0 + 8·PAIR_CHUNKS
        // <= n·hd <= wide.len() for j < n (asserted above).
        unsafe {
            let mut acc_a: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pa, c0 + 8 * i));
            let mut acc_b: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pb, c0 + 8 * i));
            for (j, (&a, &b)) in p[0].iter().zip(p[1]).enumerate() {
                let (wa, wb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
                for i in 0..PAIR_CHUNKS {
                    let w = load_at(wp, j * hd + c0 + 8 * i);
                    acc_a[i] = _mm256_fmadd_ps(wa, w, acc_a[i]);
                    acc_b[i] = _mm256_fmadd_ps(wb, w, acc_b[i]);
                }
            }
            for i in 0..PAIR_CHUNKS {
                _mm256_storeu_ps(pa.add(c0 + 8 * i), acc_a[i]);
                _mm256_storeu_ps(pb.add(c0 + 8 * i), acc_b[i]);
            }
        }
        c0 += 8 * PAIR_CHUNKS;
    }
    while c0 < whole {
        // SAFETY: as above, for one chunk: c0 + 8 <= whole.
        unsafe {
            let (mut a, mut b) = (load_at(pa, c0), load_at(pb, c0));
            for (j, (&pa_j, &pb_j)) in p[0].iter().zip(p[1]).enumerate() {
                let w = load_at(wp, j * hd + c0);
                a = _mm256_fmadd_ps(_mm256_set1_ps(pa_j), w, a);
                b = _mm256_fmadd_ps(_mm256_set1_ps(pb_j), w, b);
            }
            _mm256_storeu_ps(pa.add(c0), a);
            _mm256_storeu_ps(pb.add(c0), b);
        }
        c0 += 8;
    }
    for (o, p) in [(oa, p[0]), (ob, p[1])] {
        for i in whole..hd {
            for (j, &pj) in p.iter().enumerate() {
                o[i] += pj * wide[j * hd + i];
            }
        }
    }
}

/// A Q8_0 block's f16 scale.
#[inline]
fn q8_scale(blk: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32()
}

/// 8 f16 from `h[i..i + 8]` widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_f16(h: &[u16], i: usize) -> __m256 {
    let c = &h[i..i + 8];
    // SAFETY: `c` is 8 readable u16 (16 bytes); loadu needs no alignment.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(c.as_ptr().cast()) })
}

/// Quants `8c..8c + 8` of a Q8_0 block widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_i8(blk: &[u8], c: usize) -> __m256 {
    let b = &blk[2 + 8 * c..2 + 8 * c + 8];
    // SAFETY: `b` is 8 readable bytes; loadl_epi64 reads exactly 8 bytes, unaligned.
    let x = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x))
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
