//! Matrix times activations: `y[t, r] = Σ_c x[t, c] · w[r, c]` for a range of weight rows.
//!
//! The scalar reference decodes each row in tiles of up to [`TILE`] weights into a stack buffer
//! (blocks are 1, 32 or 256 weights, so a tile always holds whole blocks) and reuses each decoded
//! tile for every token of the step: prefill pays the decode once per row, not once per token.

use super::{decode_tile, dot_f32, SharedOut};
use crate::format::Format;
use crate::model::WeightView;
use core::ops::Range;

/// Weights decoded at a time: a multiple of every block size.
pub const TILE: usize = 256;

/// Computes rows `rows` of `out` (`[tokens, w.rows]`) from `x` (`[tokens, w.cols]`).
pub type MatMulFn =
    fn(w: &WeightView<'_>, x: &[f32], tokens: usize, rows: Range<usize>, out: &SharedOut<'_>);

/// Kernel name of the scalar reference for `format`.
pub fn scalar_name(format: Format) -> &'static str {
    match format {
        Format::F32 => "scalar_matmul_f32",
        Format::F16 => "scalar_matmul_f16",
        Format::BF16 => "scalar_matmul_bf16",
        Format::Q8_0 => "scalar_matmul_q8_0",
        Format::Q4_0 => "scalar_matmul_q4_0",
        Format::Q4_1 => "scalar_matmul_q4_1",
        Format::Q5_0 => "scalar_matmul_q5_0",
        Format::Q5_1 => "scalar_matmul_q5_1",
        Format::Q2_K => "scalar_matmul_q2_k",
        Format::Q3_K => "scalar_matmul_q3_k",
        Format::Q4_K => "scalar_matmul_q4_k",
        Format::Q5_K => "scalar_matmul_q5_k",
        Format::Q6_K => "scalar_matmul_q6_k",
        Format::IQ4_NL => "scalar_matmul_iq4_nl",
        Format::IQ4_XS => "scalar_matmul_iq4_xs",
        Format::VQ2 => "scalar_matmul_vq2",
        Format::VQ3 => "scalar_matmul_vq3",
        Format::VQ4 => "scalar_matmul_vq4",
        Format::NQ3 => "scalar_matmul_nq3",
        Format::TQ2 => "scalar_matmul_tq2",
        Format::TQ3 => "scalar_matmul_tq3",
        Format::TQ4 => "scalar_matmul_tq4",
    }
}

/// The scalar reference matmul for any format.
pub fn matmul_scalar(
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let k = w.cols;
    let n = w.rows;
    debug_assert!(x.len() >= tokens * k && out.len() >= tokens * n);
    let mut tile = [0f32; TILE];
    for r in rows {
        for t in 0..tokens {
            // SAFETY: this call owns rows `rows` of every token; index t*n + r is in its range.
            unsafe { out.write(t * n + r, 0.0) };
        }
        let mut c0 = 0;
        while c0 < k {
            let len = TILE.min(k - c0);
            decode_tile(w, r, c0, &mut tile[..len]);
            for t in 0..tokens {
                let xs = &x[t * k + c0..t * k + c0 + len];
                let part = dot_f32(&tile[..len], xs);
                // SAFETY: as above, element (t, r) belongs to this call alone.
                unsafe { add(out, t * n + r, part) };
            }
            c0 += len;
        }
    }
}

/// Adds `v` to element `i` of `out`.
///
/// # Safety
/// The caller is the only thread accessing element `i`.
#[inline]
pub(crate) unsafe fn add(out: &SharedOut<'_>, i: usize, v: f32) {
    // SAFETY: exclusivity of element i is the caller's contract; slice_mut checks bounds.
    let cell = unsafe { out.slice_mut(i..i + 1) };
    cell[0] += v;
}
