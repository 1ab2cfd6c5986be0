//! The plan as a report: bytes by category and by layer, for `vspec plan`, budgets and the C API.

use super::Plan;
use crate::error::{Error, Result};
use crate::graph::{Graph, Role};
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

/// Bytes one transformer block (or the parts outside the blocks) needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerBytes {
    /// `blk.N`, or `other` for the embedding, output norm and head.
    pub name: String,
    /// Weight bytes as stored.
    pub weight_bytes: usize,
    /// KV cache bytes (K and V; 0 outside the blocks).
    pub kv_bytes: usize,
}

/// Bytes by category and by layer, all from the graph and its plan (no tensor data read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanReport {
    /// Positions the KV cache holds.
    pub ctx: usize,
    /// Tokens per forward step.
    pub batch: usize,
    /// KV cache element type (`f32`, `f16`, `q8_0`).
    pub kv_type: &'static str,
    /// Weight bytes.
    pub weight_bytes: usize,
    /// Arena bytes (activations and scratch).
    pub arena_bytes: usize,
    /// KV cache bytes.
    pub kv_bytes: usize,
    /// Weights + arena + KV cache: what the plan places.
    pub planned_bytes: usize,
    /// Blocks in order, then `other`.
    pub layers: Vec<LayerBytes>,
}

impl PlanReport {
    /// The report of `plan`, which was made from `graph`.
    pub fn new(graph: &Graph, plan: &Plan) -> Result<PlanReport> {
        if graph.kv_layers == 0 || !plan.kv_bytes.is_multiple_of(graph.kv_layers) {
            return Err(Error::invalid("plan", "KV bytes do not split into layers"));
        }
        let kv_per_layer = plan.kv_bytes / graph.kv_layers;
        let mut layers: Vec<LayerBytes> = (0..graph.kv_layers)
            .map(|l| LayerBytes {
                name: alloc::format!("blk.{l}"),
                weight_bytes: 0,
                kv_bytes: kv_per_layer,
            })
            .collect();
        let mut other = LayerBytes {
            name: "other".into(),
            weight_bytes: 0,
            kv_bytes: 0,
        };
        for t in graph.tensors.iter().filter(|t| t.role == Role::Weight) {
            let Some(format) = t.format else { continue };
            let bytes = format.tensor_bytes(t.cols, t.weight_rows, &t.name)?;
            let slot = block_index(&t.name)
                .and_then(|l| layers.get_mut(l))
                .unwrap_or(&mut other);
            slot.weight_bytes += bytes;
        }
        layers.push(other);
        Ok(PlanReport {
            ctx: graph.limits.max_ctx,
            batch: graph.limits.max_tokens,
            kv_type: graph.kv_type.name(),
            weight_bytes: plan.weight_bytes,
            arena_bytes: plan.arena_bytes,
            kv_bytes: plan.kv_bytes,
            planned_bytes: plan.total_bytes(),
            layers,
        })
    }
}

/// `N` of a tensor named `blk.N.…`.
fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::block_index;

    #[test]
    fn block_names() {
        assert_eq!(block_index("blk.12.attn_q.weight"), Some(12));
        assert_eq!(block_index("token_embd.weight"), None);
        assert_eq!(block_index("blk.x.attn_q.weight"), None);
    }
}
