//! Causal multi-head attention over the KV cache, with grouped-query heads.
//!
//! The cache may hold f32, f16 or Q8_0 rows ([`crate::kv`]); kernels read it in place, a head row
//! at a time, and never convert the whole cache.
//!
//! Optimized kernels walk the cached positions in blocks of [`SCORE_BLOCK`] with an online softmax
//! (running maximum and sum, the partial output rescaled when the maximum rises), in chunks of
//! [`ATTN_CHUNK`] positions fixed by absolute position: each chunk's state starts afresh and is
//! folded into the row's running state by [`fold_chunk`], in chunk order. That fixed structure is
//! what lets one token's attention be split across threads by positions as well as heads
//! ([`AttnSpan::Chunks`]: each call leaves its chunks' states in planned scratch, the session folds
//! them with [`fold_partials`]) and still give the same bits as one call walking every chunk. The
//! scalar reference needs no scratch at all: it makes three passes over the positions (maximum,
//! sum of exponentials, weighted values), recomputing each score, so its result is exactly the
//! textbook two-pass softmax with stored scores, bit for bit; it is never split by positions.

use super::{dot_f32, SharedOut};
use crate::kv::KvRows;

/// Positions per block of the online softmax.
pub const SCORE_BLOCK: usize = 128;

/// Positions per chunk: the unit of the fold, and of a one-token step's split across threads (a
/// multiple of [`SCORE_BLOCK`], so blocks never straddle chunks). Fixed, so the bits do not
/// depend on the context size, the threads or the step.
pub const ATTN_CHUNK: usize = 2 * SCORE_BLOCK;

/// Chunk states per head the planned scratch holds for a `max_ctx`-position cache.
pub const fn chunk_slots(max_ctx: usize) -> usize {
    max_ctx.div_ceil(ATTN_CHUNK)
}

/// f32 per chunk state in the scratch: maximum, sum, then the `head_dim` unnormalized outputs.
pub const fn partial_len(head_dim: usize) -> usize {
    head_dim + 2
}

/// f32 of the planned partials scratch: every head's chunk states for a `max_ctx`-position cache
/// (`None` when that overflows).
pub fn partials_len(n_heads: usize, head_dim: usize, max_ctx: usize) -> Option<usize> {
    n_heads
        .checked_mul(chunk_slots(max_ctx))?
        .checked_mul(partial_len(head_dim))
}

/// Which cached positions one attention call covers, and where its result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnSpan {
    /// Every position each row attends to; the call writes normalized outputs to `out`.
    Whole,
    /// A one-token step's chunks `first..end`: the call writes each (head, chunk) state to the
    /// partials scratch at [`partial_range`] and leaves `out` alone; [`fold_partials`] then
    /// folds every chunk in order. Only for kernels whose table entry says they fold by chunks
    /// ([`crate::kernels::table::KernelTable::attention_folds_chunks`]).
    Chunks {
        /// First chunk.
        first: usize,
        /// One past the last chunk.
        end: usize,
    },
}

/// Largest `head_dim` the kernels decode on the stack (checked at `Session::new`).
pub const MAX_HEAD_DIM: usize = 512;

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Elements per head (at most [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
    /// Score scale.
    pub scale: f32,
    /// Tokens in this step.
    pub tokens: usize,
    /// Absolute position of the step's first token.
    pub pos0: usize,
    /// The positions this call covers.
    pub span: AttnSpan,
    /// Chunk states per head in the partials scratch ([`chunk_slots`] of the cache's size).
    pub partial_slots: usize,
}

impl AttnShape {
    /// This step's token `t` alone (what decoding it by itself would be).
    pub fn token(&self, t: usize) -> AttnShape {
        AttnShape {
            tokens: 1,
            pos0: self.pos0 + t,
            ..*self
        }
    }

    /// This one-token shape restricted to chunk `c` of its positions ([`AttnSpan::Chunks`]).
    pub fn chunk(&self, c: usize) -> AttnShape {
        AttnShape {
            span: AttnSpan::Chunks {
                first: c,
                end: c + 1,
            },
            ..*self
        }
    }
}

/// Where head `head`'s state for chunk `chunk` lives in the partials scratch.
pub fn partial_range(s: &AttnShape, head: usize, chunk: usize) -> core::ops::Range<usize> {
    let len = partial_len(s.head_dim);
    let at = (head * s.partial_slots + chunk) * len;
    at..at + len
}

/// Softmax state of one query row over some positions: the largest score and the sum of
/// `e^(score − max)`; the matching output (`Σ e^(score − max) · v`) is kept beside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowState {
    /// Largest score (−∞ before any position).
    pub max: f32,
    /// Sum of the exponentials relative to `max`.
    pub sum: f32,
}

impl RowState {
    /// The state before any position.
    pub const EMPTY: RowState = RowState {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };
}

/// Folds a chunk's state and output into a running one. Every kernel and the session's
/// [`fold_partials`] fold through this one function, in chunk order, so a split by positions
/// gives the same bits as one walk (plain multiplies and adds: Rust never fuses them).
pub fn fold_chunk(acc: &mut RowState, acc_out: &mut [f32], chunk: RowState, out: &[f32]) {
    if acc.max == f32::NEG_INFINITY {
        *acc = chunk;
        acc_out.copy_from_slice(out);
        return;
    }
    let max = acc.max.max(chunk.max);
    let (a, b) = (libm::expf(acc.max - max), libm::expf(chunk.max - max));
    acc.sum = acc.sum * a + chunk.sum * b;
    for (x, &y) in acc_out.iter_mut().zip(out) {
        *x = *x * a + y * b;
    }
    acc.max = max;
}

/// Divides a folded output by its state's sum (as one multiply by the reciprocal).
pub fn finish_row(out: &mut [f32], state: RowState) {
    let inv = 1.0 / state.sum;
    for x in out.iter_mut() {
        *x *= inv;
    }
}

/// Folds chunks `0..n_chunks` of every head of a one-token step from the partials scratch (as
/// [`AttnSpan::Chunks`] calls left them) into `out` (`n_heads × head_dim`), normalized.
pub fn fold_partials(s: &AttnShape, n_chunks: usize, partials: &[f32], out: &mut [f32]) {
    let hd = s.head_dim;
    for (h, o) in out.chunks_exact_mut(hd).take(s.n_heads).enumerate() {
        let mut acc = RowState::EMPTY;
        for c in 0..n_chunks {
            let p = &partials[partial_range(s, h, c)];
            let state = RowState {
                max: p[0],
                sum: p[1],
            };
            fold_chunk(&mut acc, o, state, &p[2..]);
        }
        finish_row(o, acc);
    }
}

/// Head `kvh` of cached position `j` as f32: borrowed from an f32 cache, else decoded into `buf`.
#[inline]
fn head_row<'r>(
    rows: &KvRows<'r>,
    j: usize,
    kvh: usize,
    hd: usize,
    kv_width: usize,
    buf: &'r mut [f32],
) -> &'r [f32] {
    let start = j * kv_width + kvh * hd;
    match rows {
        KvRows::F32(v) => &v[start..start + hd],
        _ => {
            rows.decode(start, &mut buf[..hd]);
            &buf[..hd]
        }
    }
}

/// Attention for query heads `heads`: `q` is `[tokens, n_heads·head_dim]`, `k`/`v` are one
/// layer's cached rows (`[positions, n_kv_heads·head_dim]`) holding at least `pos0 + tokens`
/// positions. Writes `out[t, h·head_dim..]`; the scalar reference leaves `scores` untouched.
///
/// # Safety
/// No other thread touches the scratch rows or output columns of heads `heads` during the call.
pub unsafe fn attention_heads(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: core::ops::Range<usize>,
    _scores: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    let hd = s.head_dim;
    let q_width = s.n_heads * hd;
    let kv_width = s.n_kv_heads * hd;
    assert!(
        s.span == AttnSpan::Whole,
        "the reference attention covers whole rows only"
    );
    let group = s.n_heads / s.n_kv_heads;
    let mut kbuf = [0f32; MAX_HEAD_DIM];
    let mut vbuf = [0f32; MAX_HEAD_DIM];
    for h in heads {
        let kvh = h / group;
        for t in 0..s.tokens {
            let n_pos = s.pos0 + t + 1;
            let qh = &q[t * q_width + h * hd..t * q_width + (h + 1) * hd];
            let mut score =
                |j: usize| dot_f32(qh, head_row(&k, j, kvh, hd, kv_width, &mut kbuf)) * s.scale;
            let mut max = f32::NEG_INFINITY;
            for j in 0..n_pos {
                max = max.max(score(j));
            }
            let mut sum = 0f32;
            for j in 0..n_pos {
                sum += libm::expf(score(j) - max);
            }
            let inv = 1.0 / sum;
            // SAFETY: output columns of head h in row t belong to this call alone.
            let o = unsafe { out.slice_mut(t * q_width + h * hd..t * q_width + (h + 1) * hd) };
            o.fill(0.0);
            for j in 0..n_pos {
                let p = libm::expf(score(j) - max) * inv;
                let vj = head_row(&v, j, kvh, hd, kv_width, &mut vbuf);
                for (o, &v) in o.iter_mut().zip(vj) {
                    *o += p * v;
                }
            }
        }
    }
}
