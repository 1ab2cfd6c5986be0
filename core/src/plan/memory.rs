//! The memory plan of a graph: arena offsets for every activation, KV cache size, weight bytes.
//! A pure function of the graph (and so of the model header and the limits).

use super::{self as plan, lifetime, ArenaLayout, Buf};
use crate::error::{Error, Result};
use crate::graph::{Graph, Role};
use crate::kv::KvType;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Where every byte of a session lives, known before any weight is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Planner buffers, one per graph tensor (weights: size 0).
    pub buffers: Vec<Buf>,
    /// Offsets of those buffers in the arena.
    pub arena: ArenaLayout,
    /// Arena bytes: every activation and scratch buffer.
    pub arena_bytes: usize,
    /// Byte range of the arena holding 8-bit activation blocks
    /// ([`crate::quant::act_q8::BlockQ8Act`], 40 bytes each): the largest matmul input of a step,
    /// quantized once for the kernels that read 8-bit activations. Starts 64-byte aligned after
    /// the f32 activations.
    pub act_q8: core::ops::Range<usize>,
    /// Largest sum of simultaneously live activation bytes (the arena's lower bound).
    pub peak_live_bytes: usize,
    /// KV cache bytes: `2 × layers × max_ctx ×` the bytes of one `kv_width` row in
    /// [`Plan::kv_type`] (see [`crate::kv`] for the layout).
    pub kv_bytes: usize,
    /// Element type of the KV cache.
    #[serde(default = "exact_kv")]
    pub kv_type: KvType,
    /// Weight bytes as stored (0 for weights whose format is not yet known).
    pub weight_bytes: usize,
}

impl Plan {
    /// Plans `graph` with the greedy best-fit planner and checks the result for overlaps.
    pub fn new(graph: &Graph) -> Result<Plan> {
        graph.validate()?;
        let buffers = lifetime::buffers(graph);
        let arena = plan::greedy::plan(&buffers);
        plan::validate(&buffers, &arena)?;
        let act_q8 = act_q8_scratch(graph, arena.arena_bytes)?;
        let kv_bytes = kv_layer_bytes(graph)?
            .checked_mul(graph.kv_layers)
            .ok_or_else(|| Error::invalid("limits.max_ctx", "KV cache size overflows"))?;
        let mut weight_bytes = 0usize;
        for t in graph.tensors.iter().filter(|t| t.role == Role::Weight) {
            if let Some(f) = t.format {
                weight_bytes += f.tensor_bytes(t.cols, t.weight_rows, &t.name)?;
            }
        }
        Ok(Plan {
            peak_live_bytes: plan::peak_live_bytes(&buffers),
            arena_bytes: act_q8.end,
            act_q8,
            buffers,
            arena,
            kv_bytes,
            kv_type: graph.kv_type,
            weight_bytes,
        })
    }

    /// KV cache bytes of one layer (K and V), `kv_bytes / layers`.
    pub fn kv_layer_bytes(graph: &Graph) -> Result<usize> {
        kv_layer_bytes(graph)
    }

    /// Bytes of the f32 activations (the start of the arena, before [`Plan::act_q8`]).
    pub fn f32_arena_bytes(&self) -> usize {
        self.arena.arena_bytes
    }

    /// Weights + arena + KV cache.
    pub fn total_bytes(&self) -> usize {
        self.weight_bytes + self.arena_bytes + self.kv_bytes
    }

    /// A few lines for humans: the byte totals by category.
    pub fn summary(&self) -> String {
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        format!(
            "weights {:.2} MiB + arena {:.2} MiB (peak live {:.2} MiB) + KV cache ({}) {:.2} MiB = {:.2} MiB",
            mib(self.weight_bytes),
            mib(self.arena_bytes),
            mib(self.peak_live_bytes),
            self.kv_type,
            mib(self.kv_bytes),
            mib(self.total_bytes())
        )
    }
}

/// The KV type of a serialized plan that names none: f32, what every plan had before.
fn exact_kv() -> KvType {
    KvType::F32
}

/// K and V bytes of one layer: `2 × max_ctx` rows of `kv_width` values in the graph's KV type.
fn kv_layer_bytes(graph: &Graph) -> Result<usize> {
    if graph.kv_type == KvType::Q8_0 && !graph.kv_width.is_multiple_of(crate::quant::act_q8::QK8) {
        return Err(Error::invalid(
            "kv type",
            "q8_0 needs rows that are whole blocks of 32",
        ));
    }
    graph
        .kv_type
        .row_bytes(graph.kv_width)
        .checked_mul(graph.limits.max_ctx)
        .and_then(|v| v.checked_mul(2))
        .ok_or_else(|| Error::invalid("limits.max_ctx", "KV cache size overflows"))
}

/// The 8-bit activation scratch: room for the widest matmul input at `max_tokens` rows, in
/// 32-element blocks, placed after the f32 activations that end at `f32_end`.
fn act_q8_scratch(graph: &Graph, f32_end: usize) -> Result<core::ops::Range<usize>> {
    use crate::graph::OpKind;
    use crate::quant::act_q8::{BlockQ8Act, QK8};
    let mut blocks = 0usize;
    for op in graph
        .ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::MatMul))
    {
        let input = &graph.tensors[op.inputs[0]];
        blocks = blocks.max(input.activation_len(graph.limits.max_tokens).div_ceil(QK8));
    }
    let start = f32_end.next_multiple_of(64);
    blocks
        .checked_mul(core::mem::size_of::<BlockQ8Act>())
        .and_then(|b| start.checked_add(b))
        .map(|end| start..end)
        .ok_or_else(|| Error::invalid("limits.max_tokens", "activation scratch size overflows"))
}
