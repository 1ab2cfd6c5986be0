//! Matmuls that read the same activation (Q, K and V; gate and up) run as one parallel region.
//!
//! A decoded token enters the thread pool about two hundred times, and every region ends with
//! the threads waiting for the slowest one; with two threads that waiting was ~15 % of a decode
//! step. Consecutive matmuls with 8-bit kernels and a common input are planned side by side
//! (their outputs are all live while the input is), so their row units can be handed out as one
//! list: the input is quantized once, and each unit runs its own matmul's kernel on its own rows.
//! Every output row is computed by the same kernel call as alone (rows never depend on the range
//! they were computed in), so results are bit-identical to running the matmuls one by one.

use super::{add_bias, quantize_rows, split_views, Session};
use crate::error::{Error, Result};
use crate::graph::{OpKind, Rows};
use crate::kernels::{MatMulKernel, MatMulQ8Fn, SharedOut};
use crate::model::WeightView;
use crate::quant::act_q8::QK8;
use core::ops::Range;

/// Most matmuls run as one region (Q, K and V).
const MAX_GROUP: usize = 3;

/// One matmul of a group: its weights, kernel, row unit and bias.
struct Part<'w> {
    w: WeightView<'w>,
    f: MatMulQ8Fn,
    row_multiple: usize,
    bias: Option<WeightView<'w>>,
}

impl<'a> Session<'a> {
    /// How many ops from `first` run as one group: consecutive matmuls with 8-bit kernels that
    /// read the same activation (1 when `first` starts no group).
    pub(super) fn matmul_group_len(&self, first: usize) -> usize {
        let ops = &self.graph.ops;
        let q8 = |i: usize| {
            let op = &ops[i];
            matches!(op.kind, OpKind::MatMul)
                && self.weights[op.inputs[1]]
                    .and_then(|w| self.kernels.matmul(w.format))
                    .is_some_and(|e| matches!(e.kernel, MatMulKernel::Q8(_)))
        };
        if !q8(first) {
            return 1;
        }
        let input = ops[first].inputs[0];
        let mut len = 1;
        while len < MAX_GROUP
            && first + len < ops.len()
            && q8(first + len)
            && ops[first + len].inputs[0] == input
        {
            len += 1;
        }
        len
    }

    /// Runs the matmuls `ops` (a group found by [`Session::matmul_group_len`]) at `n` tokens.
    pub(super) fn run_matmul_group(&mut self, ops: Range<usize>, n: usize) -> Result<()> {
        let graph = self.graph;
        let input = graph.ops[ops.start].inputs[0];
        let rows = match graph.tensors[input].rows {
            Rows::Tokens => n,
            Rows::One => 1,
        };
        let mut parts: heapless::Vec<Part<'a>, MAX_GROUP> = heapless::Vec::new();
        let mut out_ranges: heapless::Vec<Range<usize>, MAX_GROUP> = heapless::Vec::new();
        for op in &graph.ops[ops] {
            let w = self.weight(op.inputs[1]);
            let entry = self
                .kernels
                .matmul(w.format)
                .ok_or_else(|| Error::invalid("kernels", "matmul kernel missing"))?;
            let MatMulKernel::Q8(f) = entry.kernel else {
                return Err(Error::invalid(
                    "kernels",
                    "a grouped matmul needs an 8-bit kernel",
                ));
            };
            let part = Part {
                w,
                f,
                row_multiple: entry.row_multiple.max(1),
                bias: op.inputs.get(2).map(|&b| self.weight(b)),
            };
            // Both pushes fit: a group has at most MAX_GROUP ops.
            let _ = parts.push(part);
            let _ = out_ranges.push(self.range(op.outputs[0], n));
        }
        let cols = parts[0].w.cols;
        if parts.iter().any(|p| p.w.cols != cols) {
            return Err(Error::invalid(
                "graph",
                "grouped matmuls read rows of different widths",
            ));
        }
        let in_range = self.range(input, n);
        let (mut outs, [x]) = split_views::<MAX_GROUP, 1>(self.arena, &out_ranges, &[in_range])?;
        let x = &x[..rows * cols];
        if self.act_q8_of != Some(input) {
            quantize_rows(self.kernels, self.par, x, self.act_q8, rows, cols);
            self.act_q8_of = Some(input);
        }
        let xq = &self.act_q8[..rows * cols / QK8];
        {
            let shared: heapless::Vec<SharedOut<'_>, MAX_GROUP> = outs
                .iter_mut()
                .take(parts.len())
                .map(|y| SharedOut::new(y))
                .collect();
            // Unit offsets of each part in the one list handed out.
            let mut starts = [0usize; MAX_GROUP + 1];
            for (i, p) in parts.iter().enumerate() {
                starts[i + 1] = starts[i] + p.w.rows.div_ceil(p.row_multiple);
            }
            self.par.for_each_range(starts[parts.len()], &|u| {
                for (i, p) in parts.iter().enumerate() {
                    let lo = u.start.max(starts[i]) - starts[i];
                    let hi = u.end.min(starts[i + 1]).saturating_sub(starts[i]);
                    if lo >= hi {
                        continue;
                    }
                    let rm = p.row_multiple;
                    let rows_here = lo * rm..(hi * rm).min(p.w.rows);
                    // SAFETY: `Parallel` hands out disjoint unit ranges of the list, and each
                    // unit is one row unit of one part, so each call owns these rows of that
                    // part's output alone; `xq` holds `rows` tokens of `cols / 32` blocks.
                    unsafe { (p.f)(&p.w, xq, rows, rows_here, &shared[i]) }
                }
            });
        }
        for (p, y) in parts.iter().zip(outs.iter_mut()) {
            if let Some(bias) = &p.bias {
                add_bias(y, bias, rows, p.w.rows);
            }
        }
        Ok(())
    }
}
