//! Causal multi-head attention over the KV cache, with grouped-query heads.
//!
//! The cache may hold f32, f16 or Q8_0 rows ([`crate::kv`]); kernels read it in place, a head row
//! at a time, and never convert the whole cache.
//!
//! Scratch does not grow with the context: optimized kernels walk the cached positions in blocks
//! of [`SCORE_BLOCK`] with an online softmax (running maximum and sum, the partial output rescaled
//! when the maximum rises), using `SCORE_BLOCK` planned scores per head. The scalar reference
//! needs no scratch at all: it makes three passes over the positions (maximum, sum of
//! exponentials, weighted values), recomputing each score, so its result is exactly the textbook
//! two-pass softmax with stored scores, bit for bit.

use super::{dot_f32, SharedOut};
use crate::kv::KvRows;

/// Positions per block of the online softmax; the planned scratch is `n_heads × SCORE_BLOCK` f32.
pub const SCORE_BLOCK: usize = 128;

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
