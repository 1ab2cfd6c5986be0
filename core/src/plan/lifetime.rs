//! Lifetimes of activation buffers from the graph's topological order (planning stage 1).
//!
//! A tensor produced by op `i` and last read by op `j` is live over steps `i..j+1` (half-open).
//! The graph output is live to the end of the step, so the caller can read the logits.

use super::Buf;
use crate::graph::{Graph, Role};
use alloc::vec::Vec;

/// Alignment of every arena buffer: one cache line, so SIMD loads never straddle two buffers.
pub const ARENA_ALIGN: usize = 64;

/// One planner buffer per graph tensor (weights get size 0 and an empty lifetime: they are not in
/// the arena), sized for `max_tokens` rows of f32.
pub fn buffers(graph: &Graph) -> Vec<Buf> {
    let steps = graph.ops.len() as u32;
    let mut first = alloc::vec![u32::MAX; graph.tensors.len()];
    let mut last = alloc::vec![0u32; graph.tensors.len()];
    for (i, op) in graph.ops.iter().enumerate() {
        let i = i as u32;
        for &t in op.outputs.iter() {
            first[t] = first[t].min(i);
            last[t] = last[t].max(i);
        }
        for &t in op.inputs.iter() {
            last[t] = last[t].max(i);
        }
    }
    graph
        .tensors
        .iter()
        .enumerate()
        .map(|(id, t)| match t.role {
            Role::Weight => Buf {
                size: 0,
                align: ARENA_ALIGN,
                live: 0..0,
            },
            Role::Activation | Role::Output => {
                let start = first[id].min(steps);
                let end = if t.role == Role::Output {
                    steps
                } else {
                    last[id] + 1
                };
                Buf {
                    size: t.activation_len(graph.limits.max_tokens) * 4,
                    align: ARENA_ALIGN,
                    live: start..end.max(start),
                }
            }
        })
        .collect()
}
