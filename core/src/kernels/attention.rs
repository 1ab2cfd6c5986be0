//! Causal multi-head attention over the KV cache, with grouped-query heads.

use super::{dot_f32, SharedOut};

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Score scale.
    pub scale: f32,
    /// Tokens in this step.
    pub tokens: usize,
    /// Absolute position of the step's first token.
    pub pos0: usize,
    /// Stride of the scratch rows (the planned max context).
    pub max_ctx: usize,
}

/// Attention for query heads `heads`: `q` is `[tokens, n_heads·head_dim]`, `k_cache`/`v_cache` are
/// `[positions, n_kv_heads·head_dim]` holding at least `pos0 + tokens` positions. Writes
/// `out[t, h·head_dim..]` and uses `scores[h·max_ctx..]` for those heads only.
///
/// # Safety
/// No other thread touches the scratch rows or output columns of heads `heads` during the call.
pub unsafe fn attention_heads(
    s: &AttnShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    heads: core::ops::Range<usize>,
    scores: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    let hd = s.head_dim;
    let q_width = s.n_heads * hd;
    let kv_width = s.n_kv_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    for h in heads {
        let kvh = h / group;
        // SAFETY: head h's scratch row and output columns belong to this call alone.
        let sc = unsafe { scores.slice_mut(h * s.max_ctx..(h + 1) * s.max_ctx) };
        for t in 0..s.tokens {
            let n_pos = s.pos0 + t + 1;
            let qh = &q[t * q_width + h * hd..t * q_width + (h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (j, sj) in sc[..n_pos].iter_mut().enumerate() {
                let kj = &k_cache[j * kv_width + kvh * hd..j * kv_width + (kvh + 1) * hd];
                *sj = dot_f32(qh, kj) * s.scale;
                max = max.max(*sj);
            }
            let mut sum = 0f32;
            for sj in sc[..n_pos].iter_mut() {
                *sj = libm::expf(*sj - max);
                sum += *sj;
            }
            let inv = 1.0 / sum;
            // SAFETY: output columns of head h in row t belong to this call alone.
            let o = unsafe { out.slice_mut(t * q_width + h * hd..t * q_width + (h + 1) * hd) };
            o.fill(0.0);
            for (j, &sj) in sc[..n_pos].iter().enumerate() {
                let p = sj * inv;
                let vj = &v_cache[j * kv_width + kvh * hd..j * kv_width + (kvh + 1) * hd];
                for (o, &v) in o.iter_mut().zip(vj) {
                    *o += p * v;
                }
            }
        }
    }
}
