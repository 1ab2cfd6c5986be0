//! The kernel launches of a step, as data: which kernel, grid, block and arguments, op by op in
//! graph order. A pure function of the graph, plan, device layout and the allocation's base
//! address, so the host side can be checked without a GPU (`tests/tests/cuda_launches.rs` compares every
//! launch's arguments with the kernel's parameter list in the sources and keeps every address
//! inside the allocation); the session only replays the list on its stream.

mod fuse;
mod matmul;

pub use matmul::{gemv_split, GemvActivations, GEMV_WARPS, INT8_MIN_COLS};

use crate::kernels::{self, FormatId};
use crate::layout::{DeviceLayout, DECODE_SPLIT, PREFILL_SPLITS};
use vspec_core::format::Format;
use vspec_core::graph::{Graph, OpKind, Role, RopeLayout, Rows, TensorId};
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_core::{Error, Result};

/// A kernel argument: a device address or a scalar (`int` or `float` in the source).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A pointer parameter (0 for an absent optional operand).
    Ptr(u64),
    /// An `int` parameter.
    I32(i32),
    /// A `float` parameter.
    F32(f32),
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The `extern "C"` kernel name.
    pub kernel: String,
    /// Grid dimensions.
    pub grid: (u32, u32, u32),
    /// Threads per block (one dimension).
    pub block: u32,
    /// Arguments in the kernel's parameter order.
    pub args: Vec<Arg>,
}

/// A weight as the kernels see it.
#[derive(Debug, Clone, Copy)]
pub struct DevWeight {
    /// Its format.
    pub format: Format,
    /// Its format's device id.
    pub id: FormatId,
    /// Rows (output features).
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Device address of its first byte.
    pub at: u64,
    /// Device address of its format's codebook (0 for formats without one).
    pub lut: u64,
}

/// The kernels' `layout` argument of a RoPE layout.
fn rope_layout_id(layout: RopeLayout) -> i32 {
    match layout {
        RopeLayout::Interleaved => 0,
        RopeLayout::Neox => 1,
    }
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(what.to_string(), "exceeds the device's 32-bit indices"))
}

/// Builds the launches of a graph whose allocation starts at `base`.
pub struct Launcher<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    /// The layout the addresses come from.
    pub layout: DeviceLayout,
    weights: Vec<Option<DevWeight>>,
    base: u64,
    activations: GemvActivations,
}

impl<'a> Launcher<'a> {
    /// The launcher of `graph` under `plan`, laid out by [`crate::layout::layout`], its
    /// allocation starting at device address `base`.
    pub fn new(graph: &'a Graph, plan: &'a Plan, layout: DeviceLayout, base: u64) -> Result<Self> {
        let mut weights = vec![None; graph.tensors.len()];
        for (id, t) in graph.tensors.iter().enumerate() {
            if t.role != Role::Weight {
                continue;
            }
            let format = t
                .format
                .ok_or_else(|| Error::missing(format!("format of tensor '{}'", t.name)))?;
            let fid = kernels::format_id(format).ok_or_else(|| {
                crate::backend(format!("tensor '{}': no kernels for {format:?}", t.name))
            })?;
            let r = layout.weights[id]
                .clone()
                .ok_or_else(|| Error::missing(format!("device range of '{}'", t.name)))?;
            let lut = layout
                .codebooks
                .iter()
                .find(|(f, _)| *f == format)
                .map_or(0, |(_, r)| base + r.start as u64);
            weights[id] = Some(DevWeight {
                format,
                id: fid,
                rows: t.weight_rows,
                cols: t.cols,
                row_bytes: format.tensor_bytes(t.cols, 1, &t.name)?,
                at: base + r.start as u64,
                lut,
            });
        }
        Ok(Launcher {
            graph,
            plan,
            layout,
            weights,
            base,
            activations: GemvActivations::Auto,
        })
    }

    /// What one-token matmuls multiply with ([`GemvActivations::Auto`] unless set).
    pub fn set_gemv_activations(&mut self, activations: GemvActivations) {
        self.activations = activations;
    }

    /// Every launch of a step of `n` tokens starting at position `pos`, in order.
    pub fn step(&self, n: usize, pos: usize) -> Result<Vec<Launch>> {
        let mut out = Vec::new();
        // The activation whose 8-bit blocks the scratch holds (Q, K and V share one; the graph
        // writes every tensor once per step, so it stays valid until the next quantize_act).
        let mut quantized = None;
        // Ops already launched with an earlier one (fuse.rs).
        let mut done = vec![false; self.graph.ops.len()];
        for op_index in 0..self.graph.ops.len() {
            if !done[op_index] {
                self.op(op_index, n, pos, &mut quantized, &mut done, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Op `op_index`'s inputs: its activations, then its weights, each in input order.
    pub(super) fn inputs(&self, op_index: usize) -> (Vec<TensorId>, Vec<TensorId>) {
        let g = self.graph;
        g.ops[op_index]
            .inputs
            .iter()
            .partition(|&&i| g.tensors[i].role != Role::Weight)
    }

    /// Rows of tensor `id` in a step of `n` tokens.
    pub(super) fn rows(&self, id: TensorId, n: usize) -> usize {
        match self.graph.tensors[id].rows {
            Rows::Tokens => n,
            Rows::One => 1,
        }
    }

    /// Device address of activation `id`.
    pub(super) fn act(&self, id: TensorId) -> u64 {
        self.base + (self.layout.arena.start + self.plan.arena.offsets[id]) as u64
    }

    pub(super) fn weight(&self, id: TensorId) -> Result<DevWeight> {
        self.weights[id]
            .ok_or_else(|| Error::missing(format!("tensor '{}'", self.graph.tensors[id].name)))
    }

    /// Device address of the step block (`pos0`, then the token ids at +8).
    pub fn step_ptr(&self) -> u64 {
        self.base + self.layout.step.start as u64
    }

    fn push(
        &self,
        out: &mut Vec<Launch>,
        kernel: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<()> {
        out.push(Launch {
            kernel: kernel.to_string(),
            grid,
            block,
            args: args.to_vec(),
        });
        Ok(())
    }

    /// Appends the launches of op `op_index` for a step of `n` tokens at position `pos`;
    /// `quantized` is the activation the 8-bit scratch holds, `done` marks later ops launched
    /// with this one.
    fn op(
        &self,
        op_index: usize,
        n: usize,
        pos: usize,
        quantized: &mut Option<TensorId>,
        done: &mut [bool],
        out: &mut Vec<Launch>,
    ) -> Result<()> {
        if let Some((launch, with)) = self.fused(op_index, n, quantized)? {
            out.push(launch);
            done[with] = true;
            return Ok(());
        }
        self.one_op(op_index, n, pos, quantized, out)
    }

    /// The rms_norm launch's block size for rows of `cols`: a decode step's one row is one
    /// block, so its threads are all the parallelism there is.
    pub(super) fn norm_block(cols: usize) -> u32 {
        if cols >= 2048 {
            1024
        } else {
            256
        }
    }

    /// Appends the launches of op `op_index` alone.
    fn one_op(
        &self,
        op_index: usize,
        n: usize,
        pos: usize,
        quantized: &mut Option<TensorId>,
        out: &mut Vec<Launch>,
    ) -> Result<()> {
        let g = self.graph;
        let op = &g.ops[op_index];
        let (acts, ws) = self.inputs(op_index);
        let y = op.outputs[0];
        let out_rows = self.rows(y, n);
        let len_of = |id: TensorId| g.tensors[id].activation_len(n);
        let grid1 = |elems: usize| (elems.div_ceil(256).clamp(1, 65535) as u32, 1, 1);
        match &op.kind {
            OpKind::Embed => {
                let t = self.weight(ws[0])?;
                self.push(
                    out,
                    "embed",
                    (n as u32, 1, 1),
                    256,
                    &[
                        Arg::Ptr(self.step_ptr() + 8),
                        Arg::Ptr(t.at),
                        Arg::I32(t.id.id),
                        Arg::Ptr(t.lut),
                        Arg::I32(i32_of(t.row_bytes, "row bytes")?),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(i32_of(t.cols, "cols")?),
                    ],
                )
            }
            OpKind::RmsNorm { eps } => {
                let w = self.weight(ws[0])?;
                self.push(
                    out,
                    "rms_norm",
                    (out_rows as u32, 1, 1),
                    Self::norm_block(w.cols),
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(w.at),
                        Arg::I32(w.id.id),
                        Arg::F32(*eps),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(i32_of(w.cols, "cols")?),
                        Arg::Ptr(self.fused_quantize(op_index, n, y, w.cols, quantized)),
                    ],
                )
            }
            OpKind::MatMul => self.matmul(&ws, &acts, y, out_rows, quantized, out),
            OpKind::HeadRmsNorm { eps, head_dim } => {
                let w = self.weight(ws[0])?;
                let heads = len_of(acts[0]) / head_dim;
                self.push(
                    out,
                    "head_rms_norm",
                    (heads as u32, 1, 1),
                    128,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(w.at),
                        Arg::I32(w.id.id),
                        Arg::F32(*eps),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(*head_dim as i32),
                    ],
                )
            }
            OpKind::Rope {
                head_dim,
                layout,
                inv_freq,
            } => {
                let r = self.layout.rope[op_index]
                    .clone()
                    .ok_or_else(|| Error::missing("rope constants"))?;
                let width = g.tensors[y].cols;
                self.push(
                    out,
                    "rope",
                    (out_rows as u32, width.div_ceil(256).min(65535) as u32, 1),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(self.act(y)),
                        Arg::Ptr(self.step_ptr()),
                        Arg::I32(i32_of(width, "width")?),
                        Arg::I32(*head_dim as i32),
                        Arg::I32(rope_layout_id(*layout)),
                        Arg::Ptr(self.base + r.start as u64),
                        Arg::I32(inv_freq.len() as i32),
                    ],
                )
            }
            OpKind::Attention {
                layer,
                n_heads,
                n_kv_heads,
                head_dim,
                scale,
            } => {
                let kv_type = g.kv_type;
                let row_bytes = kv_type.row_bytes(g.kv_width);
                let layer_len = g.limits.max_ctx * row_bytes;
                let kc = self.base + (self.layout.kv.start + layer * 2 * layer_len) as u64;
                let vc = kc + layer_len as u64;
                let kv_id = if kv_type == KvType::F16 { 1 } else { 0 };
                self.push(
                    out,
                    "kv_store",
                    (n as u32, 1, 1),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[1])),
                        Arg::Ptr(self.act(acts[2])),
                        Arg::Ptr(kc),
                        Arg::Ptr(vc),
                        Arg::Ptr(self.step_ptr()),
                        Arg::I32(i32_of(g.kv_width, "kv width")?),
                        Arg::I32(kv_id),
                    ],
                )?;
                // One token: the fixed split count of the layout (graph-capturable). Prefill:
                // at most PREFILL_SPLITS splits of at least DECODE_SPLIT positions.
                let (split_len, splits) = if n == 1 {
                    (DECODE_SPLIT, self.layout.decode_splits)
                } else {
                    let last = pos + n;
                    let len = last.div_ceil(PREFILL_SPLITS).max(DECODE_SPLIT);
                    (len, last.div_ceil(len))
                };
                let part = self.base + self.layout.attn.start as u64;
                self.push(
                    out,
                    "attn_partial",
                    (*n_heads as u32, n as u32, splits as u32),
                    128,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(kc),
                        Arg::Ptr(vc),
                        Arg::I32(kv_id),
                        Arg::Ptr(self.step_ptr()),
                        Arg::I32(*n_heads as i32),
                        Arg::I32(*n_kv_heads as i32),
                        Arg::I32(*head_dim as i32),
                        Arg::F32(*scale),
                        Arg::I32(split_len as i32),
                        Arg::Ptr(part),
                    ],
                )?;
                self.push(
                    out,
                    "attn_combine",
                    (*n_heads as u32, n as u32, 1),
                    128,
                    &[
                        Arg::Ptr(part),
                        Arg::Ptr(self.act(y)),
                        Arg::Ptr(self.step_ptr()),
                        Arg::I32(*n_heads as i32),
                        Arg::I32(*head_dim as i32),
                        Arg::I32(splits as i32),
                        Arg::I32(split_len as i32),
                        Arg::Ptr(if head_dim % 32 == 0 {
                            self.fused_quantize(op_index, n, y, g.tensors[y].cols, quantized)
                        } else {
                            0
                        }),
                    ],
                )
            }
            OpKind::SwiGlu | OpKind::Add => {
                let len = len_of(y);
                let mut args = vec![
                    Arg::Ptr(self.act(acts[0])),
                    Arg::Ptr(self.act(acts[1])),
                    Arg::Ptr(self.act(y)),
                    Arg::I32(i32_of(len, "elements")?),
                ];
                let kernel = if matches!(op.kind, OpKind::SwiGlu) {
                    args.push(Arg::Ptr(
                        self.fused_quantize(op_index, n, y, len, quantized),
                    ));
                    "swiglu"
                } else {
                    "add"
                };
                self.push(out, kernel, grid1(len), 256, &args)
            }
            OpKind::LastRow => {
                let d = g.tensors[y].cols;
                self.push(
                    out,
                    "last_row",
                    grid1(d),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(i32_of(d, "cols")?),
                        Arg::I32(n as i32),
                    ],
                )
            }
        }
    }
}
