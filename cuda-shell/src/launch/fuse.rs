//! Ops launched together, where two kernels would pass a tensor through memory for nothing but
//! each other, or where the second is too small to be worth a launch of its own: a residual add
//! and the RMSNorm after it (`add_rms_norm`), a Qwen3 q/k head RMSNorm and the RoPE of its output
//! (`head_rms_norm_rope`). Each fused kernel computes what the two would, in the same order: the
//! same bits.

use super::{i32_of, rope_layout_id, Arg, Launch, Launcher};
use vspec_core::graph::{OpKind, TensorId};
use vspec_core::{Error, Result};

impl Launcher<'_> {
    /// Op `op_index` launched with a later op, and that op's index; None to launch it alone.
    pub(super) fn fused(
        &self,
        op_index: usize,
        n: usize,
        quantized: &mut Option<TensorId>,
    ) -> Result<Option<(Launch, usize)>> {
        if let Some(f) = self.add_then_norm(op_index, n, quantized)? {
            return Ok(Some(f));
        }
        self.head_norm_then_rope(op_index, n)
    }

    /// Op `op_index` as one add_rms_norm launch with the op after it, when that is an RMSNorm
    /// of the add's output (the residual stream, which add_rms_norm still writes).
    fn add_then_norm(
        &self,
        op_index: usize,
        n: usize,
        quantized: &mut Option<TensorId>,
    ) -> Result<Option<(Launch, usize)>> {
        let g = self.graph;
        let (op, Some(next)) = (&g.ops[op_index], g.ops.get(op_index + 1)) else {
            return Ok(None);
        };
        let (OpKind::Add, OpKind::RmsNorm { eps }) = (&op.kind, &next.kind) else {
            return Ok(None);
        };
        let sum = op.outputs[0];
        let (norm_in, norm_w) = self.inputs(op_index + 1);
        let y = next.outputs[0];
        // The norm's output is written one op early, where the plan may have reused the bytes
        // of the add's inputs (their lives end at the add).
        let early_ok = self.writable_early(y, op_index, &op.inputs);
        if norm_in != [sum] || op.inputs.len() != 2 || norm_w.len() != 1 || !early_ok {
            return Ok(None);
        }
        let w = self.weight(norm_w[0])?;
        let rows = self.rows(y, n);
        let launch = Launch {
            kernel: "add_rms_norm".to_string(),
            grid: (rows as u32, 1, 1),
            block: Self::norm_block(w.cols),
            args: vec![
                Arg::Ptr(self.act(op.inputs[0])),
                Arg::Ptr(self.act(op.inputs[1])),
                Arg::Ptr(self.act(sum)),
                Arg::Ptr(w.at),
                Arg::I32(w.id.id),
                Arg::F32(*eps),
                Arg::Ptr(self.act(y)),
                Arg::I32(i32_of(w.cols, "cols")?),
                Arg::Ptr(self.fused_quantize(op_index + 1, n, y, w.cols, quantized)),
            ],
        };
        Ok(Some((launch, op_index + 1)))
    }

    /// Op `op_index` as one head_rms_norm_rope launch with the RoPE that reads its output, when
    /// nothing else reads that output and the RoPE's output can be written this early.
    fn head_norm_then_rope(&self, op_index: usize, n: usize) -> Result<Option<(Launch, usize)>> {
        let g = self.graph;
        let op = &g.ops[op_index];
        let OpKind::HeadRmsNorm { eps, head_dim } = op.kind else {
            return Ok(None);
        };
        let normed = op.outputs[0];
        let readers: Vec<usize> = (op_index + 1..g.ops.len())
            .filter(|&j| g.ops[j].inputs.contains(&normed))
            .collect();
        let &[j] = readers.as_slice() else {
            return Ok(None);
        };
        let rope = &g.ops[j];
        let OpKind::Rope {
            head_dim: rope_hd,
            layout,
            ref inv_freq,
        } = rope.kind
        else {
            return Ok(None);
        };
        let y = rope.outputs[0];
        let (x, w) = match self.inputs(op_index) {
            (x, w) if x.len() == 1 && w.len() == 1 => (x[0], self.weight(w[0])?),
            _ => return Ok(None),
        };
        if rope_hd != head_dim
            || rope.inputs != [normed]
            || normed == g.output
            || g.tensors[x].cols != g.tensors[y].cols
            || !self.writable_early(y, op_index, &[x])
        {
            return Ok(None);
        }
        let rows = self.rows(y, n);
        let width = g.tensors[y].cols;
        let table = self.layout.rope[j]
            .clone()
            .ok_or_else(|| Error::missing("rope constants"))?;
        let launch = Launch {
            kernel: "head_rms_norm_rope".to_string(),
            grid: ((rows * width / head_dim) as u32, 1, 1),
            block: 128,
            args: vec![
                Arg::Ptr(self.act(x)),
                Arg::Ptr(w.at),
                Arg::I32(w.id.id),
                Arg::F32(eps),
                Arg::Ptr(self.act(y)),
                Arg::I32(i32_of(head_dim, "head_dim")?),
                Arg::Ptr(self.step_ptr()),
                Arg::I32(i32_of(width, "width")?),
                Arg::I32(rope_layout_id(layout)),
                Arg::Ptr(self.base + table.start as u64),
                Arg::I32(i32_of(inv_freq.len(), "rope pairs")?),
            ],
        };
        Ok(Some((launch, j)))
    }

    /// Whether tensor `t` may be written at op `from`, before its own op, by a kernel that reads
    /// `reads` row by row: the plan keeps `t`'s arena bytes apart only from tensors live with
    /// it, so every tensor live from `from` until `t` is written must keep apart from it, except
    /// one of `reads` at the very same offset (the plan reusing its bytes), as each block reads
    /// its row of it before its barrier and writes the same row of `t` after.
    fn writable_early(&self, t: TensorId, from: usize, reads: &[TensorId]) -> bool {
        let bufs = &self.plan.buffers;
        let offsets = &self.plan.arena.offsets;
        let born = bufs[t].live.start as usize;
        let (start, end) = (offsets[t], offsets[t] + bufs[t].size);
        bufs.iter().enumerate().all(|(i, b)| {
            i == t
                || b.size == 0
                || b.live.end as usize <= from
                || b.live.start as usize >= born
                || offsets[i] + b.size <= start
                || offsets[i] >= end
                || (reads.contains(&i) && offsets[i] == start)
        })
    }
}
