//! An upper bound on the heap a core-only loader takes, so that a program with no allocator but
//! a fixed buffer (the `#![no_std]` example, `examples/nostd`) can size that buffer from the plan.
//!
//! The bound is for the sequence the example runs: [`crate::gguf::parse`] →
//! [`ModelConfig::from_gguf`](crate::model::ModelConfig::from_gguf) →
//! [`build_graph_kv`](crate::model::build_graph_kv) → [`bind_weights`](crate::model::bind_weights)
//! (one `dims` clone per weight looked up) → [`Plan::new`](super::Plan::new) →
//! [`KernelTable::scalar`](crate::kernels::KernelTable::scalar) →
//! [`Session::new`](crate::exec::Session::new) → a greedy [`Sampler`](crate::sample::Sampler) →
//! `forward` and `sample` (which allocate nothing; `tests/tests/no_alloc.rs`). The arena and the KV
//! cache are not in it: they are the plan's `arena_bytes` and `kv_bytes`, wherever the caller puts
//! them.
//!
//! It counts what a bump allocator (nothing freed is reused) needs: every allocation and every
//! `realloc`'s new size, each plus `align - 1` bytes of padding. That is at least the peak live
//! heap of any allocator, so it bounds an ordinary heap too.
//!
//! How each part is bounded, and what it depends on:
//! - the GGUF header: exact sizes from the parsed header (metadata entries, key and string
//!   lengths, array lengths, tensor names and dims; the parser reserves each vector to its final
//!   length), plus the two B-tree sets that check keys and names for duplicates, at most
//!   `1 + n / 5` nodes each (every node but the root holds at least 5 keys while only inserting);
//! - the config: the name → dims map it checks the tensors with (a B-tree of owned names, same
//!   node argument), a fixed allowance for its field names, and an allowance per block for the
//!   tensor names it formats to look up;
//! - the graph: vectors grown by pushing (every doubling counted: `grown_vec_bytes`), names
//!   formatted with up to 4× their length (`format!`'s first guess plus doublings) and the
//!   pieces they are formatted from, each op's inputs and outputs, RoPE's frequencies per op;
//! - binding, planning and the session: one entry per tensor in each per-tensor vector the
//!   planner, the binder and the graph check make, the stable sort's scratch (taken only past
//!   4 KiB of keys, counted always), and the sampler's four vocabulary-sized vectors (4 + 4 + 8 +
//!   4 bytes per token).
//!
//! These follow how the core builds each piece today and how `alloc` grows vectors (doubling,
//! from 4 elements, 8 for bytes); they are checked, not proven: `tests/tests/load_heap.rs`
//! measures each part and the real total with a counting allocator on many shapes and fails if
//! a part's bound is exceeded or the whole is more than 2× the measurement. A change to the loader that allocates more shows
//! up there first, and in the example as "out of heap" (exit code 3), never as a silent overrun.

use crate::gguf::{Gguf, MetaValue};
use crate::graph::{Graph, Op, OpKind, Role, Tensor};
use crate::model::WeightView;
use core::mem::{align_of, size_of};

/// The load-time heap bound by part, in bytes (see the module doc for what each covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoadHeap {
    /// [`crate::gguf::parse`] of the header.
    pub header: usize,
    /// [`ModelConfig::from_gguf`](crate::model::ModelConfig::from_gguf).
    pub config: usize,
    /// The graph builder.
    pub graph: usize,
    /// Binding the weights and planning.
    pub plan: usize,
    /// Kernel table, session and greedy sampler.
    pub session: usize,
}

/// Bytes of one B-tree node at most (an internal node of 11 keys of 24-byte owned names and
/// 24-byte values, 12 edges, parent link and lengths: 8 + 264 + 264 + 96 + 4 = 636), plus padding.
const BTREE_NODE_BYTES: usize = 640 + 7;
/// Nodes of a B-tree set or map built by inserting `n` keys: every node but the root holds at
/// least 5 of them (`alloc`'s B = 6) as long as nothing is removed.
fn btree_nodes(n: usize) -> usize {
    1 + n / 5
}
/// Field names, messages and keys the config check formats once (`FieldNames`: 15 strings of
/// up to ~60 bytes each, up to 4× that while formatted, and the metadata keys it looks up). An
/// allowance, not a count: the whole config part measures 34–41 % of its bound in the test.
const CONFIG_FIXED_BYTES: usize = 4096;
/// Tensor names the config check formats per block to look them up (`blk.N.attn_q.weight`, …,
/// up to 16 names of up to 32 bytes, each up to 4× its length while formatted).
const CONFIG_PER_BLOCK_BYTES: usize = 16 * (4 * 32 + 7);
/// A `Vec` of `align`-aligned `size`-byte elements grown by pushing to `n` elements: every
/// capacity it passes through, `alloc`'s doubling from its first capacity (8 for bytes, 4 up to
/// 1 KiB, else 1).
pub fn grown_vec_bytes(n: usize, size: usize, align: usize) -> usize {
    if n == 0 || size == 0 {
        return 0;
    }
    let mut cap = match size {
        1 => 8,
        s if s <= 1024 => 4,
        _ => 1,
    };
    let mut total = cap * size + align - 1;
    while cap < n {
        cap *= 2;
        total += cap * size + align - 1;
    }
    total
}

/// An exact-size vector of `n` elements of `T`.
fn exact<T>(n: usize) -> usize {
    if n == 0 || size_of::<T>() == 0 {
        0
    } else {
        n * size_of::<T>() + align_of::<T>() - 1
    }
}

/// A string built by formatting, `len` bytes long at the end: `format!`'s first guess (twice the
/// literal pieces) and the doublings after it stay within 4× the length, plus padding.
fn formatted(len: usize) -> usize {
    4 * len.max(8)
}

impl LoadHeap {
    /// The bound for loading `graph` from the GGUF file whose parsed header is `header`.
    pub fn new(header: &Gguf, graph: &Graph) -> LoadHeap {
        LoadHeap {
            header: header_bytes(header),
            config: config_bytes(header, graph),
            graph: graph_bytes(graph),
            plan: plan_bytes(graph),
            session: session_bytes(graph),
        }
    }

    /// All parts together.
    pub fn total(&self) -> usize {
        self.header + self.config + self.graph + self.plan + self.session
    }
}

/// Heap of one parsed metadata value beyond its own slot.
fn value_bytes(v: &MetaValue) -> usize {
    match v {
        MetaValue::Str(s) => exact::<u8>(s.len()),
        MetaValue::Array(items) => {
            exact::<MetaValue>(items.len()) + items.iter().map(value_bytes).sum::<usize>()
        }
        _ => 0,
    }
}

fn header_bytes(h: &Gguf) -> usize {
    let metadata = exact::<(alloc::string::String, MetaValue)>(h.metadata.len())
        + h.metadata
            .iter()
            .map(|(k, v)| exact::<u8>(k.len()) + value_bytes(v))
            .sum::<usize>();
    let tensors = exact::<crate::gguf::TensorInfo>(h.tensors.len())
        + h.tensors
            .iter()
            .map(|t| exact::<u8>(t.name.len()) + exact::<u64>(t.dims.len()))
            .sum::<usize>();
    // The sorted data ranges (start, end, index) and the two duplicate checks.
    let checks = exact::<(u64, u64, usize)>(h.tensors.len())
        + BTREE_NODE_BYTES * (btree_nodes(h.metadata.len()) + btree_nodes(h.tensors.len()));
    metadata + tensors + checks
}

fn config_bytes(h: &Gguf, graph: &Graph) -> usize {
    // The name → dims map of every tensor in the file: an owned name and a dims copy each.
    let shapes = h
        .tensors
        .iter()
        .map(|t| exact::<u8>(t.name.len()) + exact::<u64>(t.dims.len()))
        .sum::<usize>()
        + BTREE_NODE_BYTES * btree_nodes(h.tensors.len());
    // RoPE frequencies (`rope_inv_freq`, built once, then cloned per op: counted in the graph).
    let rope = graph
        .ops
        .iter()
        .find_map(|op| match &op.kind {
            OpKind::Rope { inv_freq, .. } => Some(2 * exact::<f32>(inv_freq.len())),
            _ => None,
        })
        .unwrap_or(0);
    shapes + rope + CONFIG_FIXED_BYTES + CONFIG_PER_BLOCK_BYTES * graph.kv_layers
}

fn graph_bytes(g: &Graph) -> usize {
    let tensors = grown_vec_bytes(g.tensors.len(), size_of::<Tensor>(), align_of::<Tensor>());
    let ops = grown_vec_bytes(g.ops.len(), size_of::<Op>(), align_of::<Op>());
    // Each name is formatted (`blk.N.` + a piece that may itself be formatted first).
    let names = g
        .tensors
        .iter()
        .map(|t| 2 * formatted(t.name.len()))
        .sum::<usize>();
    let per_op = g
        .ops
        .iter()
        .map(|op| {
            let rope = match &op.kind {
                OpKind::Rope { inv_freq, .. } => exact::<f32>(inv_freq.len()),
                _ => 0,
            };
            // Inputs copied from a slice or a vector built first (then pushed to: a bias);
            // outputs start at one and may grow by a scratch buffer.
            2 * grown_vec_bytes(op.inputs.len(), 8, 8)
                + grown_vec_bytes(op.outputs.len(), 8, 8)
                + rope
        })
        .sum::<usize>();
    tensors + ops + names + per_op
}

fn plan_bytes(g: &Graph) -> usize {
    let n = g.tensors.len();
    let weights = g.tensors.iter().filter(|t| t.role == Role::Weight).count();
    // Binding: the views, and one `dims` copy (at most 4 dims) per weight looked up.
    let bind = exact::<Option<WeightView<'_>>>(n) + weights * exact::<u64>(4);
    // Planning: lifetimes (first/last step per tensor), the buffers, the greedy order (and the
    // stable sort's scratch), placed ids and neighbour ranges, offsets, then the events of the
    // overlap check and of the live-bytes bound (two per buffer each).
    let lifetimes = 2 * exact::<u32>(n);
    let buffers = exact::<super::Buf>(n);
    let greedy = 3 * exact::<usize>(n) + exact::<(usize, usize)>(n) + exact::<usize>(n);
    let events = 2 * exact::<(u32, u8, usize)>(2 * n);
    // `Graph::validate` marks each tensor produced (one bool each), here and in the session.
    let validate = exact::<bool>(n);
    bind + lifetimes + buffers + greedy + events + validate
}

fn session_bytes(g: &Graph) -> usize {
    // The head's rows: the vocabulary.
    let vocab = match g.tensors.get(g.output) {
        Some(t) => t.cols,
        None => 0,
    };
    let sampler =
        exact::<f32>(vocab) + exact::<u32>(vocab) + exact::<f64>(vocab) + exact::<u32>(vocab);
    // `Session::new` validates the graph again.
    sampler + exact::<bool>(g.tensors.len())
}

#[cfg(test)]
mod tests {
    use super::grown_vec_bytes;

    #[test]
    fn a_pushed_vec_is_charged_every_capacity_it_passes_through() {
        // 4 then 8 slots of 8 bytes, each with 7 bytes of padding allowance.
        assert_eq!(grown_vec_bytes(5, 8, 8), 4 * 8 + 7 + 8 * 8 + 7);
        assert_eq!(grown_vec_bytes(4, 8, 8), 4 * 8 + 7);
        assert_eq!(grown_vec_bytes(9, 1, 1), 8 + 16);
        assert_eq!(grown_vec_bytes(0, 8, 8), 0);
        assert_eq!(grown_vec_bytes(2, 2048, 8), 2048 + 7 + 4096 + 7);
    }
}
