//! Where every byte of a CUDA session lives in its one device allocation: a pure function of
//! the graph and the plan, so `vspec plan --device cuda` reports the bytes a session would take
//! without a device, and the session places everything at these offsets.
//!
//! Regions, each starting at a multiple of [`ALIGN`]:
//! 1. every weight, as stored (its format's bytes, uploaded once);
//! 2. the arena, `plan.arena_bytes`, activations at the plan's own offsets (the 8-bit
//!    activation scratch at its end is unused by the device kernels but kept so offsets match);
//! 3. the KV cache, `plan.kv_bytes` (f16 or f32 rows, [`vspec_core::kv`]'s layout);
//! 4. constants: each RoPE op's `inv_freq` (f32) and each trellis codebook used (256 × i8);
//! 5. attention partials: per query head, `max(max_tokens · PREFILL_SPLITS, decode splits)`
//!    records of `head_dim + 2` f32 (see attention.cu);
//! 6. the step block: `pos0` (i32, then padding to 8 bytes) and `max_tokens` token ids (u32).

use crate::kernels;
use std::borrow::Cow;
use std::ops::Range;
use vspec_core::format::Format;
use vspec_core::graph::{Graph, OpKind, Role};
use vspec_core::model::WeightView;
use vspec_core::plan::Plan;
use vspec_core::{Error, Result};

/// Alignment of every region (the driver's allocation granularity for coalesced loads).
pub const ALIGN: usize = 256;
/// Cached positions per split of decode attention: one token's attention is `n_heads` blocks
/// per split, so short splits are what fills the GPU (32 heads × 16 splits at 512 positions).
pub const DECODE_SPLIT: usize = 32;
/// At most this many splits per token in prefill attention.
pub const PREFILL_SPLITS: usize = 4;

/// Byte ranges of one session's device allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLayout {
    /// Per graph tensor: the weight's bytes (None for activations).
    pub weights: Vec<Option<Range<usize>>>,
    /// Bytes of all weights with their padding.
    pub weight_bytes: usize,
    /// The plan's arena.
    pub arena: Range<usize>,
    /// The KV cache.
    pub kv: Range<usize>,
    /// Per op: its RoPE `inv_freq` (None for other ops).
    pub rope: Vec<Option<Range<usize>>>,
    /// The trellis codebooks the weights use.
    pub codebooks: Vec<(Format, Range<usize>)>,
    /// Attention partial records.
    pub attn: Range<usize>,
    /// Decode splits (`ceil(max_ctx / DECODE_SPLIT)`).
    pub decode_splits: usize,
    /// Position and token ids of the current step.
    pub step: Range<usize>,
    /// Total bytes to allocate.
    pub total: usize,
}

/// Appends `len` bytes at the next [`ALIGN`] boundary after `*end`.
fn region(end: &mut usize, len: usize, what: &str) -> Result<Range<usize>> {
    let start = end.next_multiple_of(ALIGN);
    let stop = start
        .checked_add(len)
        .ok_or_else(|| Error::invalid(what.to_string(), "device size overflows"))?;
    *end = stop;
    Ok(start..stop)
}

/// The layout of `graph` run with `plan` on a device. Needs every weight's format (bound).
pub fn layout(graph: &Graph, plan: &Plan) -> Result<DeviceLayout> {
    let mut end = 0usize;
    let mut weights = vec![None; graph.tensors.len()];
    let mut used_formats: Vec<Format> = Vec::new();
    for (id, t) in graph.tensors.iter().enumerate() {
        if t.role != Role::Weight {
            continue;
        }
        let f = t
            .format
            .ok_or_else(|| Error::missing(format!("format of tensor '{}'", t.name)))?;
        if kernels::format_id(f).is_none() {
            return Err(crate::backend(format!(
                "tensor '{}': format {f:?} has no CUDA kernels yet",
                t.name
            )));
        }
        if !used_formats.contains(&f) {
            used_formats.push(f);
        }
        let len = f.tensor_bytes(t.cols, t.weight_rows, &t.name)?;
        weights[id] = Some(region(&mut end, len, &t.name)?);
    }
    let weight_bytes = end.next_multiple_of(ALIGN);
    let arena = region(&mut end, plan.arena_bytes, "arena")?;
    let kv = region(&mut end, plan.kv_bytes, "kv cache")?;
    let mut rope = vec![None; graph.ops.len()];
    let mut attn_records = 0usize;
    let lim = graph.limits;
    let decode_splits = lim.max_ctx.div_ceil(DECODE_SPLIT).max(1);
    for (i, op) in graph.ops.iter().enumerate() {
        match &op.kind {
            OpKind::Rope { inv_freq, .. } => {
                rope[i] = Some(region(&mut end, inv_freq.len() * 4, "rope inv_freq")?);
            }
            OpKind::Attention {
                n_heads, head_dim, ..
            } => {
                let splits = (lim.max_tokens * PREFILL_SPLITS).max(decode_splits);
                let r = n_heads
                    .checked_mul(splits)
                    .and_then(|v| v.checked_mul(head_dim + 2))
                    .ok_or_else(|| Error::invalid("attention", "scratch size overflows"))?;
                attn_records = attn_records.max(r);
            }
            _ => {}
        }
    }
    let mut codebooks = Vec::new();
    for f in used_formats {
        if kernels::codebook(f).is_some() {
            codebooks.push((f, region(&mut end, 256, "codebook")?));
        }
    }
    let attn = region(&mut end, attn_records * 4, "attention scratch")?;
    let step = region(&mut end, 8 + lim.max_tokens * 4, "step")?;
    let total = end.next_multiple_of(ALIGN);
    Ok(DeviceLayout {
        weights,
        weight_bytes,
        arena,
        kv,
        rope,
        codebooks,
        attn,
        decode_splits,
        step,
        total,
    })
}

/// What the device allocation holds before the first step: `(offset, bytes, what)` for every
/// weight (checked against the graph's format and shape, borrowed), codebook and RoPE table. The
/// session uploads exactly this; the host emulator test builds its memory image from it.
#[allow(clippy::type_complexity)]
pub fn contents<'w>(
    graph: &Graph,
    layout: &DeviceLayout,
    weights: &[Option<WeightView<'w>>],
) -> Result<Vec<(usize, Cow<'w, [u8]>, String)>> {
    if weights.len() != graph.tensors.len() {
        return Err(Error::invalid("weights", "not bound to this graph"));
    }
    let mut out = Vec::new();
    for (f, r) in &layout.codebooks {
        if let Some(cb) = kernels::codebook(*f) {
            let bytes: Vec<u8> = cb.iter().map(|&v| v as u8).collect();
            out.push((r.start, Cow::Owned(bytes), format!("{f:?} codebook")));
        }
    }
    for (id, t) in graph.tensors.iter().enumerate() {
        if t.role != Role::Weight {
            continue;
        }
        let w = weights[id].ok_or_else(|| Error::missing(format!("tensor '{}'", t.name)))?;
        let r = layout.weights[id]
            .clone()
            .ok_or_else(|| Error::missing(format!("device range of '{}'", t.name)))?;
        if w.data.len() != r.len()
            || Some(w.format) != t.format
            || w.rows != t.weight_rows
            || w.cols != t.cols
        {
            return Err(Error::invalid(
                format!("tensor '{}'", t.name),
                "bound bytes do not match the graph's format and shape",
            ));
        }
        out.push((r.start, Cow::Borrowed(w.data), t.name.clone()));
    }
    for (i, op) in graph.ops.iter().enumerate() {
        if let (OpKind::Rope { inv_freq, .. }, Some(r)) = (&op.kind, &layout.rope[i]) {
            let bytes: Vec<u8> = inv_freq.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.push((r.start, Cow::Owned(bytes), format!("op {i} RoPE table")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vspec_core::graph::{GraphBuilder, Limits, Rows};
    use vspec_core::kv::KvType;

    /// A two-op graph: embed then a Q4_0 matmul, f16 KV of one layer.
    fn tiny() -> Graph {
        let mut b = GraphBuilder::new();
        let emb = b.weight("token_embd.weight", 10, 64);
        let w = b.weight("output.weight", 10, 64);
        let x = b.op(OpKind::Embed, &[emb], "x", Rows::Tokens, 64);
        let y = b.op(OpKind::MatMul, &[x, w], "logits", Rows::Tokens, 10);
        let limits = Limits {
            max_ctx: 300,
            max_tokens: 4,
            all_logits: true,
        };
        let mut g = b.finish(y, 1, 64, limits);
        g.kv_type = KvType::F16;
        g.tensors[emb].format = Some(Format::F32);
        g.tensors[w].format = Some(Format::Q4_0);
        g
    }

    #[test]
    fn regions_are_aligned_disjoint_and_sized_by_the_plan() {
        let g = tiny();
        let plan = Plan::new(&g).unwrap();
        let l = layout(&g, &plan).unwrap();
        let emb = l.weights[0].clone().unwrap();
        let w = l.weights[1].clone().unwrap();
        assert_eq!(emb, 0..10 * 64 * 4);
        assert_eq!(w.start, 2560);
        assert_eq!(w.len(), 10 * 2 * 18);
        assert_eq!(l.weight_bytes, (2560 + 360usize).next_multiple_of(ALIGN));
        assert_eq!(l.arena.len(), plan.arena_bytes);
        assert_eq!(l.kv.len(), plan.kv_bytes);
        assert_eq!(plan.kv_bytes, 2 * 300 * 64 * 2, "f16 KV: 2 bytes per value");
        assert_eq!(l.decode_splits, 300usize.div_ceil(DECODE_SPLIT));
        assert_eq!(l.step.len(), 8 + 4 * 4);
        let mut all = vec![
            emb,
            w,
            l.arena.clone(),
            l.kv.clone(),
            l.attn.clone(),
            l.step.clone(),
        ];
        all.sort_by_key(|r| r.start);
        for pair in all.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{pair:?} overlap");
        }
        for r in &all {
            assert_eq!(r.start % ALIGN, 0);
        }
        assert!(l.total >= l.step.end && l.total.is_multiple_of(ALIGN));
    }

    #[test]
    fn unsupported_format_is_an_error_naming_the_tensor() {
        let mut g = tiny();
        g.tensors[1].format = Some(Format::IQ4_NL);
        let plan = Plan::new(&g).unwrap();
        let e = layout(&g, &plan).unwrap_err().to_string();
        assert!(e.contains("output.weight") && e.contains("IQ4_NL"), "{e}");
    }
}
