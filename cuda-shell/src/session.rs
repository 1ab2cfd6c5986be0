//! [`CudaSession`]: the graph run on a device, op by op in graph order, with the same `Graph`,
//! `Plan` and weight views as the CPU [`vspec_core::exec::Session`].
//!
//! Memory is one device allocation laid out by [`crate::layout`]: weights uploaded once,
//! activations at the plan's arena offsets, the KV cache, constants, attention partials and the
//! step block (position and token ids). Per step the host copies the step block in and the
//! logits out, nothing else. Every kernel reads the position from the step block, so the
//! one-token step is captured once as a CUDA graph and replayed at every position.
//!
//! The launches themselves are data built by [`crate::launch::Launcher`] (checked without a
//! GPU); this file owns the device memory, the uploads, the stream and the decode graph.
//!
//! Status: compiled and checked on machines without a GPU only; `tests/tests/cuda_gpu.rs` and
//! `cuda-shell/check.sh` are what would show it correct on a device.

use crate::device::Device;
use crate::launch::{Arg, GemvActivations, Launch, Launcher};
use crate::layout::{self, DeviceLayout};
use cudarc::driver::{
    CudaFunction, CudaGraph, CudaModule, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::Arc;
use vspec_core::exec::Executor;
use vspec_core::graph::{Graph, Limits, OpKind};
use vspec_core::kv::KvType;
use vspec_core::model::WeightView;
use vspec_core::plan::Plan;
use vspec_core::{Error, Result};

/// A running model on a CUDA device.
pub struct CudaSession<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    /// The step's launches, and the layout they address.
    launcher: Launcher<'a>,
    device: Device,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
    /// The one allocation (`layout.total` bytes).
    mem: CudaSlice<u8>,
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
        for (at, bytes, what) in layout::contents(graph, &layout, weights)? {
            let mut dst = mem.slice_mut(at..at + bytes.len());
            stream
                .memcpy_htod(&bytes[..], &mut dst)
                .map_err(|e| crate::backend(format!("uploading {what}: {e}")))?;
        }
        let lim = graph.limits;
        let logits_len = graph.tensors[graph.output].activation_len(lim.max_tokens);
        let step = vec![0u8; layout.step.len()];
        stream
            .synchronize()
            .map_err(|e| crate::backend(format!("upload: {e}")))?;
        let launcher = Launcher::new(graph, plan, layout, base)?;
        Ok(CudaSession {
            graph,
            plan,
            launcher,
            device,
            _module: module,
            funcs,
            mem,
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
    /// What one-token matmuls multiply with ([`GemvActivations::Auto`] unless set): 8-bit
    /// activations, the CPU fast path's arithmetic, or f32, the scalar reference's.
    pub fn set_gemv_activations(&mut self, activations: GemvActivations) {
        self.launcher.set_gemv_activations(activations);
        self.decode_graph = None;
    }

    pub fn layout(&self) -> &DeviceLayout {
        &self.launcher.layout
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn launch(&self, l: &Launch) -> Result<()> {
        let (name, args) = (l.kernel.as_str(), &l.args);
        let f = self
            .funcs
            .get(name)
            .ok_or_else(|| crate::backend(format!("kernel {name} not loaded")))?;
        let cfg = LaunchConfig {
            grid_dim: l.grid,
            block_dim: (l.block, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = &self.device.stream;
        let mut b = stream.launch_builder(f);
        for a in args.iter() {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: every kernel's parameter list is the sequence pushed here (each launch's
        // argument kinds are checked against the sources by `tests/launches.rs`); pointers are
        // addresses inside `self.mem` (same test), which lives as long as the session, at
        // ranges the layout sized for `max_tokens`/`max_ctx` (forward checks the step against
        // both).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| crate::backend(format!("launching {name}: {e}")))
    }

    /// Enqueues every op of a step of `n` tokens (position and ids already in the step block).
    fn enqueue(&self, n: usize) -> Result<()> {
        for l in self.launcher.step(n, self.pos)? {
            self.launch(&l)?;
        }
        Ok(())
    }

    /// Runs `tokens` at the next positions; see [`Executor::forward`].
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let lim = self.graph.limits;
        let n = tokens.len();
        lim.check_step(self.pos, n)?;
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
        let step_range = self.launcher.layout.step.clone();
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
        let at = self.launcher.layout.arena.start + self.plan.arena.offsets[out];
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
