//! The whole run over the core alone: GGUF bytes → header → config → graph → weights → plan →
//! session over arena and KV buffers taken from the heap → greedy tokens. Shared word for word
//! with the test that bounds its heap use (`tests/tests/load_heap.rs` includes this file), so the
//! sequence measured there is the one the no_std binary runs.

use alloc::vec;
use alloc::vec::Vec;
use vspec_core::exec::Session;
use vspec_core::gguf::Gguf;
use vspec_core::graph::{Graph, Limits};
use vspec_core::kernels::{KernelTable, Serial};
use vspec_core::kv::KvType;
use vspec_core::model::{bind_weights, build_graph_kv, ModelConfig, RawTensor, WeightView};
use vspec_core::plan::Plan;
use vspec_core::sample::{Sampler, SamplerConfig};
use vspec_core::{Error, Result};

/// A model bound and planned: what a session needs besides its buffers.
pub struct Loaded<'f> {
    /// The parsed header (kept for the heap bound, which counts what parsing it took).
    pub header: Gguf,
    /// The model's config.
    pub config: ModelConfig,
    /// The graph for the limits asked.
    pub graph: Graph,
    /// One view per graph tensor (`None` for activations), borrowing `file`.
    pub weights: Vec<Option<WeightView<'f>>>,
    /// The graph's memory plan.
    pub plan: Plan,
}

/// Parses, binds and plans the GGUF model in `file` for `limits`, with an f32 KV cache (the
/// exact reference the host's scalar engine also uses).
pub fn load(file: &[u8], limits: Limits) -> Result<Loaded<'_>> {
    let header = vspec_core::gguf::parse(file)?;
    let config = ModelConfig::from_gguf(&header)?;
    let mut graph = build_graph_kv(&config, limits, KvType::F32)?;
    let lookup = |name: &str| -> Result<Option<RawTensor<'_>>> {
        let Some(t) = header.tensor(name) else {
            return Ok(None);
        };
        let format = t.format.ok_or_else(|| Error::UnsupportedFormat {
            tensor: t.name.clone(),
            format: alloc::format!("ggml type {}", t.ggml_type),
        })?;
        Ok(Some(RawTensor {
            format,
            dims: t.dims.clone(),
            data: header.tensor_data(file, t)?,
        }))
    };
    let weights = bind_weights(&mut graph, &lookup)?;
    let plan = Plan::new(&graph)?;
    Ok(Loaded {
        header,
        config,
        graph,
        weights,
        plan,
    })
}

/// Runs `prompt` then `steps` greedy tokens with the scalar kernels on one thread, handing each
/// new token to `emit`. The arena and KV cache are taken from the heap here (`u32` words: the
/// session needs them 4-byte aligned), exactly the planned sizes.
pub fn generate(
    m: &Loaded<'_>,
    prompt: &[u32],
    steps: usize,
    emit: &mut dyn FnMut(u32),
) -> Result<()> {
    let mut arena = vec![0u32; m.plan.arena_bytes.div_ceil(4)];
    let mut kv = vec![0u32; m.plan.kv_bytes.div_ceil(4)];
    let kernels = KernelTable::scalar();
    let mut session = Session::new(
        &m.graph,
        &m.plan,
        &m.weights,
        bytemuck::cast_slice_mut(&mut arena),
        bytemuck::cast_slice_mut(&mut kv),
        &kernels,
        &Serial,
    )?;
    let mut sampler = Sampler::new(SamplerConfig::greedy(), m.config.vocab)?;
    let max_step = m.graph.limits.max_tokens;
    let mut logits: &[f32] = &[];
    for chunk in prompt.chunks(max_step) {
        logits = session.forward(chunk)?;
    }
    for step in 0..steps {
        // Greedy: no repetition penalty, so the history does not matter.
        let next = sampler.sample(logits, &[]);
        emit(next);
        if step + 1 < steps {
            logits = session.forward(&[next])?;
        }
    }
    Ok(())
}

/// Heap bytes the whole run takes from a bump allocator: the core's load-time bound, plus the
/// arena and KV cache [`generate`] allocates as `u32` words (each with up to 3 bytes of padding).
pub fn heap_bytes(m: &Loaded<'_>) -> usize {
    let words = |bytes: usize| bytes.div_ceil(4) * 4 + 3;
    vspec_core::plan::LoadHeap::new(&m.header, &m.graph).total()
        + words(m.plan.arena_bytes)
        + words(m.plan.kv_bytes)
}
