//! One matmul's launches: the GEMM of a prefill step, or a decode step's one-token GEMV, with
//! its choices: how many warps share a row, and whether it runs on f32 or 8-bit activations
//! (quantized by the op before it where that op can, else by a quantize_act launch).

use super::{i32_of, Arg, DevWeight, Launch, Launcher};
use crate::kernels;
use vspec_core::graph::{OpKind, TensorId};
use vspec_core::Result;

/// Warps per block of a one-token GEMV (`GEMV_WARPS` in matmul.cu).
pub const GEMV_WARPS: usize = 4;

/// Warps that share one output row of a one-token GEMV (summed in shared memory). Measured on
/// an H200 (`cuda_bench --kernels`, Qwen3-8B's layer shapes): a matrix of few rows has too few
/// warps to fill the GPU (1024 × 4096: 6.1 µs with a warp per row, 4.8 with four), many rows
/// fill it anyway and the sharing costs (12288 × 4096: 22.0 µs, 25.6 with four), in between two
/// gain a little; rows shorter than 1024 columns are too short to share.
pub fn gemv_split(rows: usize, cols: usize) -> usize {
    if cols < 1024 || rows >= 8192 {
        1
    } else if rows <= 2048 {
        4
    } else {
        2
    }
}

/// What a one-token matmul multiplies its weights with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvActivations {
    /// f32 activations (the scalar reference's arithmetic) everywhere.
    F32,
    /// 8-bit activations (gemv_q8.cu: the CPU fast path's arithmetic) for every weight whose
    /// format has such a GEMV ([`kernels::has_int8_gemv`]), f32 for the others.
    Int8,
    /// [`GemvActivations::Int8`] for rows of at least [`INT8_MIN_COLS`] columns, f32 below: the
    /// default. Measured on an H200 (`cuda_bench`, decode after 512 tokens): Qwen3-8B's shapes
    /// (4096 and 12288 columns) 184 tok/s with f32 activations, 267 with 8-bit ones; SmolLM2's
    /// (576 and 1536) 604–643 and 605–656, the same within the runs' spread, so short rows keep
    /// f32, whose results are the reference's to 1e-4 rather than 1e-2.
    Auto,
}

/// The shortest rows [`GemvActivations::Auto`] runs on 8-bit activations.
pub const INT8_MIN_COLS: usize = 2048;

impl Launcher<'_> {
    /// Appends the launches of a matmul of weights `ws` (the matrix, then an optional bias) by
    /// activation `acts[0]` into `y`, `out_rows` rows of it.
    pub(super) fn matmul(
        &self,
        ws: &[TensorId],
        acts: &[TensorId],
        y: TensorId,
        out_rows: usize,
        quantized: &mut Option<TensorId>,
        out: &mut Vec<Launch>,
    ) -> Result<()> {
        let w = self.weight(ws[0])?;
        let (bias, bias_fmt) = match ws.get(1) {
            Some(&b) => {
                let b = self.weight(b)?;
                (b.at, b.id.id)
            }
            None => (0, 0),
        };
        let common = [
            Arg::Ptr(self.act(acts[0])),
            Arg::Ptr(w.at),
            Arg::Ptr(w.lut),
            Arg::Ptr(bias),
            Arg::I32(bias_fmt),
            Arg::Ptr(self.act(y)),
            Arg::I32(i32_of(w.rows, "rows")?),
            Arg::I32(i32_of(w.cols, "cols")?),
            Arg::I32(i32_of(w.row_bytes, "row bytes")?),
        ];
        if out_rows == 1 {
            let split = gemv_split(w.rows, w.cols);
            let mut args = common.to_vec();
            args.push(Arg::I32(split as i32));
            let mut kernel = format!("gemv_{}", w.id.name);
            if self.int8_gemv(&w) {
                let act = self.act_q8();
                if *quantized != Some(acts[0]) {
                    self.push(
                        out,
                        "quantize_act",
                        (w.cols.div_ceil(256) as u32, 1, 1),
                        256,
                        &[
                            Arg::Ptr(self.act(acts[0])),
                            Arg::Ptr(act),
                            Arg::I32(i32_of(w.cols, "cols")?),
                        ],
                    )?;
                    *quantized = Some(acts[0]);
                }
                args[0] = Arg::Ptr(act);
                kernel = format!("gemvq_{}", w.id.name);
            }
            self.push(
                out,
                &kernel,
                (w.rows.div_ceil(GEMV_WARPS / split) as u32, 1, 1),
                32 * GEMV_WARPS as u32,
                &args,
            )
        } else {
            let mut args = common.to_vec();
            args.push(Arg::I32(i32_of(out_rows, "tokens")?));
            self.push(
                out,
                &format!("gemm_{}", w.id.name),
                (w.rows.div_ceil(64) as u32, out_rows.div_ceil(64) as u32, 1),
                256,
                &args,
            )
        }
    }

    /// The 8-bit scratch's address when op `op_index`'s output `y` (one token of `cols`) is the
    /// input of the next op, a matmul on 8-bit activations: the op then writes its output there
    /// too (RMSNorm, SwiGLU, attention's combine), which saves the matmul's quantize_act
    /// launch, and `quantized` records it. Else 0, the kernels' "none".
    pub(super) fn fused_quantize(
        &self,
        op_index: usize,
        n: usize,
        y: TensorId,
        cols: usize,
        quantized: &mut Option<TensorId>,
    ) -> u64 {
        let g = self.graph;
        let Some(next) = g.ops.get(op_index + 1) else {
            return 0;
        };
        let (inputs, weights) = self.inputs(op_index + 1);
        let weight = weights.first().and_then(|&w| self.weights[w]);
        let feeds = matches!(next.kind, OpKind::MatMul)
            && inputs.first() == Some(&y)
            && weight.is_some_and(|w| self.int8_gemv(&w));
        if n != 1 || !feeds || !cols.is_multiple_of(32) {
            return 0;
        }
        *quantized = Some(y);
        self.act_q8()
    }

    /// Device address of the 8-bit activation scratch (the plan's, inside the arena; the layout
    /// of gemv_q8.cu fits in its `BlockQ8Act` bytes).
    fn act_q8(&self) -> u64 {
        self.base + (self.layout.arena.start + self.plan.act_q8.start) as u64
    }

    /// Whether a one-token matmul by `w` runs on 8-bit activations.
    fn int8_gemv(&self, w: &DevWeight) -> bool {
        kernels::has_int8_gemv(w.format)
            && match self.activations {
                GemvActivations::F32 => false,
                GemvActivations::Int8 => true,
                GemvActivations::Auto => w.cols >= INT8_MIN_COLS,
            }
    }
}
