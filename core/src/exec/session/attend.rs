//! The attention op of a step: the step's keys and values into the layer's cache, then the
//! attention of every query row over the cached positions, split across threads.

use super::{Error, Result};
use crate::kernels::attention::{fold_partials, AttnShape, ATTN_CHUNK};
use crate::kernels::{KernelTable, Parallel, SharedOut};
use crate::kv::{KvRows, KvType};
use core::ops::Range;

/// What one attention op needs beyond its inputs: the layer whose cache it uses, the step's
/// shape, and the cache's element type and geometry.
#[derive(Clone, Copy)]
pub(super) struct AttnStep {
    pub layer: usize,
    pub shape: AttnShape,
    pub kv_type: KvType,
    pub kv_width: usize,
    pub max_ctx: usize,
}

/// Writes the step's keys and values (`qkv[1]`, `qkv[2]`) into layer `step.layer`'s cache in
/// `kv`, then attends every query row of `qkv[0]` into `y` (`partials_scratch`: the op's second
/// output, where a decoded token's chunk states wait to be folded).
pub(super) fn run_attention(
    kernels: &KernelTable,
    par: &dyn Parallel,
    kv: &mut [u8],
    step: &AttnStep,
    qkv: [&[f32]; 3],
    y: &mut [f32],
    partials_scratch: &mut [f32],
) -> Result<()> {
    let [q, k, v] = qkv;
    let AttnStep {
        layer,
        shape,
        kv_type,
        kv_width,
        max_ctx,
    } = *step;
    let (n, pos0, n_heads, head_dim) = (shape.tokens, shape.pos0, shape.n_heads, shape.head_dim);
    let row_bytes = kv_type.row_bytes(kv_width);
    let layer_len = max_ctx * row_bytes;
    let base = layer * 2 * layer_len;
    let (kc, vc) = kv[base..base + 2 * layer_len].split_at_mut(layer_len);
    // The step's new rows, split across threads by tokens (each token's rows are
    // its own bytes): run on the calling thread alone, converting a prefill's keys
    // and values kept the other threads waiting for ~3 % of the step.
    let new_rows = pos0 * row_bytes..(pos0 + n) * row_bytes;
    let (k_out, v_out) = (
        SharedOut::new(&mut kc[new_rows.clone()]),
        SharedOut::new(&mut vc[new_rows]),
    );
    let kv_store = kernels.kv_store.f;
    let store = |tokens: Range<usize>| {
        let bytes = tokens.start * row_bytes..tokens.end * row_bytes;
        // SAFETY: `Parallel` hands out disjoint token ranges (and a single call owns
        // them all), so these bytes belong to this call alone.
        let (kb, vb) = unsafe { (k_out.slice_mut(bytes.clone()), v_out.slice_mut(bytes)) };
        for (i, t) in tokens.enumerate() {
            let (src, at) = (
                t * kv_width..(t + 1) * kv_width,
                i * row_bytes..(i + 1) * row_bytes,
            );
            (kv_store)(kv_type, &k[src.clone()], &mut kb[at.clone()]);
            (kv_store)(kv_type, &v[src], &mut vb[at]);
        }
    };
    if n > 1 {
        par.for_each_range(n, &store);
    } else {
        store(0..n);
    }
    let (kc, vc) = (kv_rows(kv_type, kc)?, kv_rows(kv_type, vc)?);
    let attend = kernels.attention.f;
    let n_chunks = (pos0 + n).div_ceil(ATTN_CHUNK);
    if n == 1 && kernels.attention_folds_chunks && par.threads() > 1 && n_chunks > 1 {
        attend_by_chunks(
            kernels,
            par,
            &shape,
            n_chunks,
            q,
            kc,
            vc,
            partials_scratch,
            y,
        );
    } else {
        let partials = SharedOut::new(partials_scratch);
        let out = SharedOut::new(y);
        // Work units are (heads, tokens) pairs; every head's and token's result is the
        // same whichever way they are split. A step of several tokens is split into
        // whole GQA groups (so a kernel reads each K/V row once for the group) times
        // chunks of tokens, which are many and balance by themselves. A single token
        // within one chunk of positions (or under the reference kernel) is split into
        // one even run of heads per thread: with 3 groups over 2 threads, whole
        // groups would leave one thread twice the other's work.
        let head_units = if n > 1 {
            shape.n_kv_heads
        } else {
            par.threads().clamp(1, n_heads)
        };
        let token_chunk = ATTN_TOKEN_CHUNK.min(n);
        let token_units = n.div_ceil(token_chunk);
        par.for_each_range(head_units * token_units, &|u| {
            for unit in u {
                // Latest tokens first: they attend to the most positions, and the pool
                // hands out units in order, so the costly ones start early.
                let tu = token_units - 1 - unit / head_units;
                let hu = unit % head_units;
                let heads = hu * n_heads / head_units..(hu + 1) * n_heads / head_units;
                let tokens = tu * token_chunk..((tu + 1) * token_chunk).min(n);
                let part = AttnShape {
                    tokens: tokens.len(),
                    pos0: pos0 + tokens.start,
                    ..shape
                };
                let q_width = n_heads * head_dim;
                let rows = tokens.start * q_width..tokens.end * q_width;
                let out_part = out.sub(rows.clone());
                // SAFETY: `Parallel` hands out disjoint unit ranges and each unit is a
                // distinct (heads, tokens) pair, so calls own disjoint output columns
                // (the contract of `AttentionFn`, which with `Whole` leaves
                // `partials` untouched).
                unsafe { attend(&part, &q[rows], kc, vc, heads, &partials, &out_part) }
            }
        });
    }
    Ok(())
}

/// Tokens per unit of parallel attention work in a multi-token step: small enough that a
/// 512-token prefill yields dozens of units per GQA group to balance across threads, a multiple
/// of the AVX2 kernel's token tile so its tiles stay full.
const ATTN_TOKEN_CHUNK: usize = 16;

/// One token's attention over `n_chunks` chunks of positions, split across threads into
/// (chunk, GQA group) units, chunk-major, so each thread walks consecutive positions of every
/// group and all threads share the walk however few the groups (split by heads, 3 groups over 2
/// threads left each thread two groups' caches). The chunk states land in `partials` and are
/// folded in order afterwards: the same bits as one call walking every chunk.
#[allow(clippy::too_many_arguments)]
fn attend_by_chunks(
    kernels: &KernelTable,
    par: &dyn Parallel,
    shape: &AttnShape,
    n_chunks: usize,
    q: &[f32],
    kc: KvRows<'_>,
    vc: KvRows<'_>,
    partials: &mut [f32],
    y: &mut [f32],
) {
    let (n_kv_heads, attend) = (shape.n_kv_heads, kernels.attention.f);
    let group = shape.n_heads / n_kv_heads;
    let states = SharedOut::new(&mut *partials);
    par.for_each_range(n_chunks * n_kv_heads, &|units| {
        for unit in units {
            let (c, g) = (unit / n_kv_heads, unit % n_kv_heads);
            let mut none: [f32; 0] = [];
            // SAFETY: `Parallel` hands out disjoint unit ranges and each unit is a distinct
            // (chunk, group) pair, so calls own disjoint states of the partials scratch (the
            // contract of `AttentionFn` with `Chunks`, which leaves `out` untouched).
            unsafe {
                attend(
                    &shape.chunk(c),
                    q,
                    kc,
                    vc,
                    g * group..(g + 1) * group,
                    &states,
                    &SharedOut::new(&mut none),
                )
            }
        }
    });
    fold_partials(shape, n_chunks, partials, y);
}

/// Views one layer's cached K or V bytes as rows of `kv_type`.
fn kv_rows(kv_type: KvType, bytes: &[u8]) -> Result<KvRows<'_>> {
    let misaligned = |_| Error::invalid("kv", "cache rows are not aligned for their type");
    Ok(match kv_type {
        KvType::F32 => KvRows::F32(bytemuck::try_cast_slice(bytes).map_err(misaligned)?),
        KvType::F16 => KvRows::F16(bytemuck::try_cast_slice(bytes).map_err(misaligned)?),
        KvType::Q8_0 => KvRows::Q8_0(bytes),
    })
}
