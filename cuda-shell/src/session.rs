//! [`CudaSession`]: the graph run on a device, op by op in graph order, with the same `Graph`,
//! `Plan` and weight views as the CPU [`vspec_core::exec::Session`].
//!
//! Memory is one device allocation laid out by [`crate::layout`]: weights uploaded once,
//! activations at the plan's arena offsets, the KV cache, constants, attention partials and the
//! step block (position and token ids). Per step the host copies the step block in and the
//! logits out, nothing else. Every kernel reads the position from the step block, so the
//! one-token step is captured once as a CUDA graph and replayed at every position.
//!
//! Status: compiled and checked on machines without a GPU only; `tests/gpu.rs` and
//! `cuda-shell/check.sh` are what would show it correct on a device.

use crate::device::Device;
use crate::kernels::{self, FormatId};
use crate::layout::{self, DeviceLayout, DECODE_SPLIT, PREFILL_SPLITS};
use cudarc::driver::{
    CudaFunction, CudaGraph, CudaModule, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::Arc;
use vspec_core::exec::Executor;
use vspec_core::graph::{Graph, Limits, OpKind, Role, RopeLayout, Rows, TensorId};
use vspec_core::kv::KvType;
use vspec_core::model::WeightView;
use vspec_core::plan::Plan;
use vspec_core::{Error, Result};

/// A kernel argument: a device address or a scalar.
#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// What the session keeps of a weight once its bytes are on the device.
#[derive(Clone, Copy)]
struct DevWeight {
    id: FormatId,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    /// Device address of its first byte.
    at: u64,
    /// Device address of its format's codebook (0 for formats without one).
    lut: u64,
}

/// A running model on a CUDA device.
pub struct CudaSession<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    layout: DeviceLayout,
    device: Device,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
    /// The one allocation (`layout.total` bytes).
    mem: CudaSlice<u8>,
    /// Its device address.
    base: u64,
    weights: Vec<Option<DevWeight>>,
    /// Host copy of the logits of the last step.
    logits: Vec<f32>,
    /// Host staging of the step block: pos0 (i32), padding, token ids (u32).
    step: Vec<u8>,
    /// The captured one-token step, once it has run.
    decode_graph: Option<CudaGraph>,
    /// Capture the one-token step (off: launch op by op every time, for comparison).
    use_graph: bool,
    pos: usize,
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(what.to_string(), "exceeds the device's 32-bit indices"))
}

impl<'a> CudaSession<'a> {
    /// Compiles the kernels for the device, allocates the layout and uploads the weights.
    pub fn new(
        device: Device,
        graph: &'a Graph,
        plan: &'a Plan,
        weights: &'a [Option<WeightView<'a>>],
    ) -> Result<Self> {
        graph.validate()?;
        if plan.kv_type != graph.kv_type {
            return Err(Error::invalid("plan", "planned for another KV type"));
        }
        if graph.kv_type == KvType::Q8_0 {
            return Err(crate::backend(
                "the q8_0 KV cache has no CUDA kernels; use --kv-type f16 (the default) or f32",
            ));
        }
        if weights.len() != graph.tensors.len() {
            return Err(Error::invalid("weights", "not bound to this graph"));
        }
        let layout = layout::layout(graph, plan)?;
        for op in &graph.ops {
            if let OpKind::HeadRmsNorm { head_dim, .. } | OpKind::Attention { head_dim, .. } =
                op.kind
            {
                if head_dim > 512 {
                    return Err(Error::invalid("head_dim", format!("{head_dim} > 512")));
                }
            }
        }
        let (module, funcs) = crate::probe::load(&device)?;
        let stream = device.stream.clone();
        let mut mem = stream.alloc_zeros::<u8>(layout.total).map_err(|e| {
            crate::backend(format!(
                "allocating {} MiB on cuda:{}: {e}",
                layout.total >> 20,
                device.ordinal()
            ))
        })?;
        let base = {
            let (p, _sync) = mem.device_ptr(&stream);
            p
        };
        let upload =
            |mem: &mut CudaSlice<u8>, at: &std::ops::Range<usize>, bytes: &[u8], what: &str| {
                let mut dst = mem.slice_mut(at.start..at.start + bytes.len());
                stream
                    .memcpy_htod(bytes, &mut dst)
                    .map_err(|e| crate::backend(format!("uploading {what}: {e}")))
            };
        let mut luts: HashMap<vspec_core::format::Format, u64> = HashMap::new();
        for (f, r) in &layout.codebooks {
            if let Some(cb) = kernels::codebook(*f) {
                let bytes: Vec<u8> = cb.iter().map(|&v| v as u8).collect();
                upload(&mut mem, r, &bytes, "codebook")?;
                luts.insert(*f, base + r.start as u64);
            }
        }
        let mut dev_weights = vec![None; graph.tensors.len()];
        for (id, t) in graph.tensors.iter().enumerate() {
            if t.role != Role::Weight {
                continue;
            }
            let w = weights[id].ok_or_else(|| Error::missing(format!("tensor '{}'", t.name)))?;
            let r = layout.weights[id]
                .clone()
                .ok_or_else(|| Error::missing(format!("device range of '{}'", t.name)))?;
            if w.data.len() != r.len() || Some(w.format) != t.format {
                return Err(Error::invalid(
                    format!("tensor '{}'", t.name),
                    "bound bytes do not match the graph's format and shape",
                ));
            }
            upload(&mut mem, &r, w.data, &t.name)?;
            let id_f = kernels::format_id(w.format).ok_or_else(|| {
                crate::backend(format!(
                    "tensor '{}': no kernels for {:?}",
                    t.name, w.format
                ))
            })?;
            dev_weights[id] = Some(DevWeight {
                id: id_f,
                rows: w.rows,
                cols: w.cols,
                row_bytes: w.row_bytes,
                at: base + r.start as u64,
                lut: luts.get(&w.format).copied().unwrap_or(0),
            });
        }
        for (i, op) in graph.ops.iter().enumerate() {
            if let (OpKind::Rope { inv_freq, .. }, Some(r)) = (&op.kind, &layout.rope[i]) {
                let bytes: Vec<u8> = inv_freq.iter().flat_map(|v| v.to_le_bytes()).collect();
                upload(&mut mem, r, &bytes, "rope inv_freq")?;
            }
        }
        let lim = graph.limits;
        let logits_len = graph.tensors[graph.output].activation_len(lim.max_tokens);
        let step = vec![0u8; layout.step.len()];
        stream
            .synchronize()
            .map_err(|e| crate::backend(format!("upload: {e}")))?;
        Ok(CudaSession {
            graph,
            plan,
            layout,
            device,
            _module: module,
            funcs,
            mem,
            base,
            weights: dev_weights,
            logits: vec![0.0; logits_len],
            step,
            decode_graph: None,
            use_graph: true,
            pos: 0,
        })
    }

    /// Turns the captured decode graph off (every step launched op by op) or back on.
    pub fn set_cuda_graph(&mut self, on: bool) {
        self.use_graph = on;
        if !on {
            self.decode_graph = None;
        }
    }

    /// The device layout this session allocated.
    pub fn layout(&self) -> &DeviceLayout {
        &self.layout
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Device address of activation `id`.
    fn act(&self, id: TensorId) -> u64 {
        self.base + (self.layout.arena.start + self.plan.arena.offsets[id]) as u64
    }

    fn weight(&self, id: TensorId) -> Result<DevWeight> {
        self.weights[id]
            .ok_or_else(|| Error::missing(format!("tensor '{}'", self.graph.tensors[id].name)))
    }

    fn step_ptr(&self) -> u64 {
        self.base + self.layout.step.start as u64
    }

    fn launch(&self, name: &str, grid: (u32, u32, u32), block: u32, args: &[Arg]) -> Result<()> {
        let f = self
            .funcs
            .get(name)
            .ok_or_else(|| crate::backend(format!("kernel {name} not loaded")))?;
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = &self.device.stream;
        let mut b = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: every kernel's parameter list is the sequence pushed here (checked against
        // the sources by the GPU tests); pointers are addresses inside `self.mem`, which lives
        // as long as the session, at ranges the layout sized for `max_tokens`/`max_ctx`
        // (forward checks the step against both).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| crate::backend(format!("launching {name}: {e}")))
    }

    /// Enqueues every op of a step of `n` tokens (position and ids already in the step block).
    fn enqueue(&self, n: usize) -> Result<()> {
        for op_index in 0..self.graph.ops.len() {
            self.enqueue_op(op_index, n)?;
        }
        Ok(())
    }

    fn enqueue_op(&self, op_index: usize, n: usize) -> Result<()> {
        let g = self.graph;
        let op = &g.ops[op_index];
        let rows = |id: TensorId| match g.tensors[id].rows {
            Rows::Tokens => n,
            Rows::One => 1,
        };
        let acts: Vec<TensorId> = op
            .inputs
            .iter()
            .copied()
            .filter(|&i| g.tensors[i].role != Role::Weight)
            .collect();
        let ws: Vec<TensorId> = op
            .inputs
            .iter()
            .copied()
            .filter(|&i| g.tensors[i].role == Role::Weight)
            .collect();
        let y = op.outputs[0];
        let out_rows = rows(y);
        let len_of = |id: TensorId| g.tensors[id].activation_len(n);
        let grid1 = |elems: usize| (elems.div_ceil(256).clamp(1, 65535) as u32, 1, 1);
        match &op.kind {
            OpKind::Embed => {
                let t = self.weight(ws[0])?;
                self.launch(
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
                self.launch(
                    "rms_norm",
                    (out_rows as u32, 1, 1),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(w.at),
                        Arg::I32(w.id.id),
                        Arg::F32(*eps),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(i32_of(w.cols, "cols")?),
                    ],
                )
            }
            OpKind::MatMul => {
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
                    self.launch(
                        &format!("gemv_{}", w.id.name),
                        (w.rows.div_ceil(4) as u32, 1, 1),
                        128,
                        &common,
                    )
                } else {
                    let mut args = common.to_vec();
                    args.push(Arg::I32(i32_of(out_rows, "tokens")?));
                    self.launch(
                        &format!("gemm_{}", w.id.name),
                        (w.rows.div_ceil(64) as u32, out_rows.div_ceil(64) as u32, 1),
                        256,
                        &args,
                    )
                }
            }
            OpKind::HeadRmsNorm { eps, head_dim } => {
                let w = self.weight(ws[0])?;
                let heads = len_of(acts[0]) / head_dim;
                self.launch(
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
                self.launch(
                    "rope",
                    (out_rows as u32, 1, 1),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(self.act(y)),
                        Arg::Ptr(self.step_ptr()),
                        Arg::I32(i32_of(g.tensors[y].cols, "width")?),
                        Arg::I32(*head_dim as i32),
                        Arg::I32(match layout {
                            RopeLayout::Interleaved => 0,
                            RopeLayout::Neox => 1,
                        }),
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
                self.launch(
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
                    let last = self.pos + n;
                    let len = last.div_ceil(PREFILL_SPLITS).max(DECODE_SPLIT);
                    (len, last.div_ceil(len))
                };
                let part = self.base + self.layout.attn.start as u64;
                self.launch(
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
                self.launch(
                    "attn_combine",
                    (*n_heads as u32, n as u32, 1),
                    128,
                    &[
                        Arg::Ptr(part),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(*n_heads as i32),
                        Arg::I32(*head_dim as i32),
                        Arg::I32(splits as i32),
                    ],
                )
            }
            OpKind::SwiGlu | OpKind::Add => {
                let len = len_of(y);
                self.launch(
                    if matches!(op.kind, OpKind::SwiGlu) {
                        "swiglu"
                    } else {
                        "add"
                    },
                    grid1(len),
                    256,
                    &[
                        Arg::Ptr(self.act(acts[0])),
                        Arg::Ptr(self.act(acts[1])),
                        Arg::Ptr(self.act(y)),
                        Arg::I32(i32_of(len, "elements")?),
                    ],
                )
            }
            OpKind::LastRow => {
                let d = g.tensors[y].cols;
                self.launch(
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

    /// Runs `tokens` at the next positions; see [`Executor::forward`].
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let lim = self.graph.limits;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::invalid("tokens", "empty step"));
        }
        if n > lim.max_tokens {
            return Err(Error::LimitExceeded {
                what: "tokens per step",
                limit: lim.max_tokens,
                requested: n,
            });
        }
        if self.pos + n > lim.max_ctx {
            return Err(Error::LimitExceeded {
                what: "context length",
                limit: lim.max_ctx,
                requested: self.pos + n,
            });
        }
        let vocab = self
            .graph
            .ops
            .iter()
            .find(|op| matches!(op.kind, OpKind::Embed))
            .and_then(|op| op.inputs.first())
            .map(|&t| self.graph.tensors[t].weight_rows)
            .unwrap_or(usize::MAX);
        if let Some(&tok) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid(
                "token id",
                format!("{tok} is outside the vocabulary of {vocab}"),
            ));
        }
        self.step[..4].copy_from_slice(&(self.pos as i32).to_le_bytes());
        for (i, t) in tokens.iter().enumerate() {
            self.step[8 + 4 * i..12 + 4 * i].copy_from_slice(&t.to_le_bytes());
        }
        let stream = self.device.stream.clone();
        let step_range = self.layout.step.clone();
        let used = 8 + 4 * n;
        {
            let mut dst = self
                .mem
                .slice_mut(step_range.start..step_range.start + used);
            stream
                .memcpy_htod(&self.step[..used], &mut dst)
                .map_err(|e| crate::backend(format!("step upload: {e}")))?;
        }
        if n == 1 && self.use_graph {
            if self.decode_graph.is_none() {
                self.decode_graph = Some(self.capture()?);
            }
            if let Some(graph) = &self.decode_graph {
                graph
                    .launch()
                    .map_err(|e| crate::backend(format!("decode graph: {e}")))?;
            }
        } else {
            self.enqueue(n)?;
        }
        let out = self.graph.output;
        let out_len = self.graph.tensors[out].activation_len(n);
        let at = self.layout.arena.start + self.plan.arena.offsets[out];
        {
            let src = self.mem.slice(at..at + out_len * 4);
            let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut self.logits[..out_len]);
            stream
                .memcpy_dtoh(&src, dst)
                .map_err(|e| crate::backend(format!("logits download: {e}")))?;
        }
        stream
            .synchronize()
            .map_err(|e| crate::backend(format!("step at position {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(&self.logits[..out_len])
    }

    /// Captures the one-token step as a CUDA graph (kernels only; the step block is copied in
    /// before each replay).
    fn capture(&self) -> Result<CudaGraph> {
        use cudarc::driver::sys;
        let stream = &self.device.stream;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| crate::backend(format!("begin capture: {e}")))?;
        let enq = self.enqueue(1);
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        enq?;
        graph
            .map_err(|e| crate::backend(format!("end capture: {e}")))?
            .ok_or_else(|| crate::backend("capture produced an empty graph"))
    }
}

impl Executor for CudaSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        CudaSession::forward(self, tokens)
    }
    fn pos(&self) -> usize {
        self.pos
    }
    fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
    fn reset(&mut self) {
        self.pos = 0;
    }
    fn limits(&self) -> Limits {
        self.graph.limits
    }
    fn plan(&self) -> &Plan {
        self.plan
    }
}
