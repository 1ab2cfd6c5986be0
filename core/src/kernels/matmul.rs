//! Matrix times activations: `y[t, r] = Σ_c x[t, c] · w[r, c]` for a range of weight rows.
//!
//! The scalar reference decodes each row in tiles of up to [`TILE`] weights into a stack buffer
//! (blocks are 1, 32 or 256 weights, so a tile always holds whole blocks) and reuses each decoded
//! tile for every token of the step: prefill pays the decode once per row, not once per token.

use super::{decode_tile, dot_f32, SharedOut};
use crate::format::Format;
use crate::model::WeightView;
use crate::quant::act_q8::{BlockQ8Act, QK8};
use core::ops::Range;

/// Weights decoded at a time: a multiple of every block size.
pub const TILE: usize = 256;

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

/// The scalar reference matmul for any format ([`super::MatMulF32Fn`]).
///
/// # Safety
/// No other thread reads or writes rows `rows` of `out` during the call.
pub unsafe fn matmul_scalar(
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
                unsafe { out.add(t * n + r, part) };
            }
            c0 += len;
        }
    }
}

/// The scalar reference matmul on 8-bit activations ([`super::MatMulQ8Fn`]) for formats with a
/// reference 8-bit block dot: per output, the blocks' dots summed in order.
///
/// # Safety
/// No other thread reads or writes rows `rows` of `out` during the call.
pub unsafe fn matmul_q8_scalar(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let Some(dot) = crate::quant::block_dot_q8(w.format) else {
        // The table installs this kernel only for formats that have the dot; reaching here is
        // a table bug, reported as NaN outputs rather than a panic in a worker thread.
        for r in rows {
            for t in 0..tokens {
                // SAFETY: this call owns rows `rows` of every token.
                unsafe { out.write(t * w.rows + r, f32::NAN) };
            }
        }
        return;
    };
    let (be, bb) = (w.format.block_elems(), w.format.block_bytes());
    let per_block = be / QK8;
    let blocks_per_row = w.cols / QK8;
    for r in rows {
        let bytes = w.row(r);
        for t in 0..tokens {
            let xs = &x[t * blocks_per_row..(t + 1) * blocks_per_row];
            let mut s = 0f32;
            for (b, block) in bytes.chunks_exact(bb).enumerate() {
                s += dot(block, &xs[b * per_block..(b + 1) * per_block]);
            }
            // SAFETY: element (t, r) belongs to this call alone.
            unsafe { out.write(t * w.rows + r, s) };
        }
    }
}

/// The scalar reference activation quantizer: whole 32-blocks of `x` into `out`.
pub fn quantize_q8_scalar(x: &[f32], out: &mut [BlockQ8Act]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK8)) {
        *b = BlockQ8Act::quantize(xs);
    }
}
