//! A session runs a planned graph over caller-provided memory: the arena and the KV cache come
//! from the caller (sized by the [`Plan`]); `forward` allocates nothing.

use crate::error::{Error, Result};
use crate::graph::{Graph, OpKind, Role, Rows, TensorId};
use crate::kernels::attention::{chunk_slots, AttnShape, AttnSpan};
use crate::kernels::{for_each_tile, KernelTable, MatMulKernel, Parallel, SharedOut};
use crate::model::WeightView;
use crate::plan::Plan;
use crate::quant::act_q8::{BlockQ8Act, QK8};
use core::ops::Range;

/// Sees the input of every matmul: `(weight name, input activation name, x as rows × cols, cols)`.
/// Matmuls that read the same activation (Q, K and V) report the same input name.
pub type MatMulObserver<'o> = dyn FnMut(&str, &str, &[f32], usize) + 'o;

use crate::kernels::attention::MAX_HEAD_DIM;
use crate::kv;

mod attend;
mod group;

use attend::AttnStep;

/// A running model: graph, plan, bound weights, arena, KV cache and the position reached.
pub struct Session<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    weights: &'a [Option<WeightView<'a>>],
    /// Activations at planned offsets, `plan.f32_arena_bytes() / 4` f32.
    arena: &'a mut [f32],
    /// The arena's 8-bit activation scratch ([`Plan::act_q8`]).
    act_q8: &'a mut [BlockQ8Act],
    /// The activation whose 8-bit blocks `act_q8` holds in this step (Q, K and V share one).
    act_q8_of: Option<TensorId>,
    /// `(layers, 2 [k|v], max_ctx)` rows of `kv_width` values in the graph's KV type
    /// ([`crate::kv`] has the layout).
    kv: &'a mut [u8],
    kernels: &'a KernelTable,
    par: &'a dyn Parallel,
    pos: usize,
}

impl<'a> Session<'a> {
    /// Checks that the buffers hold the plan and every weight is bound.
    pub fn new(
        graph: &'a Graph,
        plan: &'a Plan,
        weights: &'a [Option<WeightView<'a>>],
        arena: &'a mut [u8],
        kv: &'a mut [u8],
        kernels: &'a KernelTable,
        par: &'a dyn Parallel,
    ) -> Result<Self> {
        if arena.len() < plan.arena_bytes {
            return Err(Error::ArenaTooSmall {
                what: "arena",
                need: plan.arena_bytes,
                have: arena.len(),
            });
        }
        if kv.len() < plan.kv_bytes {
            return Err(Error::ArenaTooSmall {
                what: "kv",
                need: plan.kv_bytes,
                have: kv.len(),
            });
        }
        if plan.act_q8.start < plan.f32_arena_bytes() || plan.act_q8.end != plan.arena_bytes {
            return Err(Error::invalid(
                "plan",
                "activation scratch outside the arena",
            ));
        }
        let (f32_part, q8_part) = arena[..plan.arena_bytes].split_at_mut(plan.act_q8.start);
        let arena: &mut [f32] = bytemuck::try_cast_slice_mut(f32_part)
            .map_err(|_| Error::invalid("arena", "buffer is not 4-byte aligned"))?;
        let act_q8 = q8_blocks(q8_part)?;
        if plan.kv_type != graph.kv_type {
            return Err(Error::invalid("plan", "planned for another KV type"));
        }
        let kv = &mut kv[..plan.kv_bytes];
        if kv.as_ptr().align_offset(4) != 0 {
            return Err(Error::invalid("kv", "buffer is not 4-byte aligned"));
        }
        if weights.len() != graph.tensors.len() {
            return Err(Error::invalid("weights", "not bound to this graph"));
        }
        for (id, t) in graph.tensors.iter().enumerate() {
            if t.role == Role::Weight && weights[id].is_none() {
                return Err(Error::missing(alloc::format!("tensor '{}'", t.name)));
            }
        }
        graph.validate()?;
        kernels.check_formats(graph.ops.iter().filter_map(|op| match op.kind {
            OpKind::MatMul => graph.tensors[op.inputs[1]].format,
            _ => None,
        }))?;
        for op in &graph.ops {
            if let OpKind::HeadRmsNorm { head_dim, .. } | OpKind::Attention { head_dim, .. } =
                op.kind
            {
                if head_dim > MAX_HEAD_DIM {
                    return Err(Error::invalid(
                        "head_dim",
                        alloc::format!("{head_dim} > {MAX_HEAD_DIM}"),
                    ));
                }
            }
        }
        Ok(Session {
            graph,
            plan,
            weights,
            arena,
            act_q8,
            act_q8_of: None,
            kv,
            kernels,
            par,
            pos: 0,
        })
    }

    /// Positions held in the KV cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Forgets the cached positions past `pos` (keeps a shared prefix, e.g. across chat turns).
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Context shift: forgets the `discard` positions after the first `keep` and moves the later
    /// ones down, turning each cached key back by `discard` positions (RoPE is a rotation by the
    /// position, so a key re-encoded this way is the key of its new position, up to rounding and,
    /// for Q8_0, one re-quantization). Allocates nothing.
    pub fn shift_context(&mut self, keep: usize, discard: usize) -> Result<()> {
        let end = self.pos;
        if keep.checked_add(discard).is_none_or(|e| e > end) {
            return Err(Error::invalid(
                "context shift",
                alloc::format!(
                    "keep {keep} + discard {discard} exceeds the {end} cached positions"
                ),
            ));
        }
        if discard == 0 {
            return Ok(());
        }
        let graph = self.graph;
        let kv_type = graph.kv_type;
        let row_bytes = kv_type.row_bytes(graph.kv_width);
        let layer_len = graph.limits.max_ctx * row_bytes;
        let key_rope = graph.ops.iter().find_map(|op| match &op.kind {
            OpKind::Attention { head_dim, .. } => {
                let k = op.inputs[1];
                graph.ops.iter().find_map(|p| match &p.kind {
                    OpKind::Rope {
                        layout, inv_freq, ..
                    } if p.outputs[0] == k => Some((*head_dim, *layout, inv_freq)),
                    _ => None,
                })
            }
            _ => None,
        });
        let kept = end - keep - discard;
        for layer in 0..graph.kv_layers {
            let base = layer * 2 * layer_len;
            for half in 0..2 {
                let cache = &mut self.kv[base + half * layer_len..base + (half + 1) * layer_len];
                cache.copy_within(
                    (keep + discard) * row_bytes..end * row_bytes,
                    keep * row_bytes,
                );
                let Some((head_dim, layout, inv_freq)) = key_rope.filter(|_| half == 0) else {
                    continue;
                };
                let head_bytes = kv_type.row_bytes(head_dim);
                let mut head = [0f32; MAX_HEAD_DIM];
                let head = &mut head[..head_dim];
                for row in keep..keep + kept {
                    let row = &mut cache[row * row_bytes..(row + 1) * row_bytes];
                    for bytes in row.chunks_exact_mut(head_bytes) {
                        kv::load_row(kv_type, bytes, head);
                        crate::kernels::rope::rotate_head(
                            head,
                            -(discard as f32),
                            layout,
                            inv_freq,
                        );
                        kv::store_row(kv_type, head, bytes);
                    }
                }
            }
        }
        self.pos = end - discard;
        Ok(())
    }

    /// The memory plan this session runs.
    pub fn plan(&self) -> &Plan {
        self.plan
    }

    /// The limits this session was planned for.
    pub fn limits(&self) -> crate::graph::Limits {
        self.graph.limits
    }

    /// Runs `tokens` at the next positions and returns their logits: `tokens.len() × vocab` when
    /// the graph was built with `all_logits`, else the last token's `vocab` values.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.forward_observed(tokens, None)
    }

    /// [`Session::forward`], also showing `observer` the input of every matmul before it runs:
    /// `(weight name, input name, x as rows × cols, cols)`. Calibration uses it to measure
    /// activations.
    pub fn forward_observed(
        &mut self,
        tokens: &[u32],
        mut observer: Option<&mut MatMulObserver<'_>>,
    ) -> Result<&[f32]> {
        let lim = self.graph.limits;
        let n = tokens.len();
        lim.check_step(self.pos, n)?;
        self.act_q8_of = None;
        let mut op_index = 0;
        while op_index < self.graph.ops.len() {
            match observer {
                Some(ref mut obs) => self.run_op(op_index, tokens, Some(&mut **obs))?,
                None => {
                    let group = self.matmul_group_len(op_index);
                    if group > 1 {
                        self.run_matmul_group(op_index..op_index + group, n)?;
                        op_index += group;
                        continue;
                    }
                    self.run_op(op_index, tokens, None)?
                }
            }
            op_index += 1;
        }
        self.pos += n;
        let out = self.graph.output;
        let range = self.range(out, n);
        Ok(&self.arena[range])
    }

    /// Element range of activation `id` in the arena at `n` tokens.
    fn range(&self, id: TensorId, n: usize) -> Range<usize> {
        let start = self.plan.arena.offsets[id] / 4;
        start..start + self.graph.tensors[id].activation_len(n)
    }

    fn weight(&self, id: TensorId) -> WeightView<'a> {
        // Session::new checked that every weight is bound.
        self.weights[id].expect("weights are bound at Session::new")
    }

    fn run_op(
        &mut self,
        op_index: usize,
        tokens: &[u32],
        observer: Option<&mut MatMulObserver<'_>>,
    ) -> Result<()> {
        let graph = self.graph;
        let op = &graph.ops[op_index];
        let n = tokens.len();
        let rows = |id: TensorId| match graph.tensors[id].rows {
            Rows::Tokens => n,
            Rows::One => 1,
        };
        let act_ins: heapless::Vec<Range<usize>, 3> = op
            .inputs
            .iter()
            .filter(|&&i| graph.tensors[i].role != Role::Weight)
            .map(|&i| self.range(i, n))
            .collect();
        let out_ranges: heapless::Vec<Range<usize>, 2> =
            op.outputs.iter().map(|&o| self.range(o, n)).collect();
        let out_rows = rows(op.outputs[0]);
        let pos0 = self.pos;
        let (kernels, par) = (self.kernels, self.par);
        let weights: heapless::Vec<WeightView<'a>, 2> = op
            .inputs
            .iter()
            .filter(|&&i| graph.tensors[i].role == Role::Weight)
            .map(|&i| self.weight(i))
            .collect();
        let max_ctx = graph.limits.max_ctx;
        let kv_width = graph.kv_width;
        let (outs, ins) = split_views::<2, 3>(self.arena, &out_ranges, &act_ins)?;
        let [y, extra] = outs;
        match &op.kind {
            OpKind::Embed => {
                let table = weights[0];
                for (t, &tok) in tokens.iter().enumerate() {
                    if tok as usize >= table.rows {
                        return Err(Error::invalid(
                            "token id",
                            alloc::format!("{tok} is outside the vocabulary of {}", table.rows),
                        ));
                    }
                    let row = &mut y[t * table.cols..(t + 1) * table.cols];
                    (kernels.embed.f)(&table, tok as usize, row);
                }
            }
            OpKind::RmsNorm { eps } => {
                let w = weights[0];
                let d = w.cols;
                for_token_rows(par, out_rows, d, y, &|t, ys| {
                    (kernels.rms_norm.f)(&ins[0][t.start * d..t.end * d], &w, *eps, ys)
                });
            }
            OpKind::MatMul => {
                let w = weights[0];
                let x = ins[0];
                if let Some(obs) = observer {
                    obs(
                        &graph.tensors[op.inputs[1]].name,
                        &graph.tensors[op.inputs[0]].name,
                        &x[..out_rows * w.cols],
                        w.cols,
                    );
                }
                let entry = kernels
                    .matmul(w.format)
                    .ok_or_else(|| Error::invalid("kernels", "matmul kernel missing"))?;
                let rm = entry.row_multiple.max(1);
                let units = w.rows.div_ceil(rm);
                let rows_of = |u: Range<usize>| u.start * rm..(u.end * rm).min(w.rows);
                {
                    let shared = SharedOut::new(&mut *y);
                    match entry.kernel {
                        MatMulKernel::F32(f) => par.for_each_range(units, &|u| {
                            // SAFETY: `Parallel` hands out disjoint unit ranges, so each call
                            // owns its rows of `shared` alone.
                            unsafe { f(&w, x, out_rows, rows_of(u), &shared) }
                        }),
                        MatMulKernel::Q8(f) => {
                            let blocks = out_rows * w.cols / QK8;
                            let input = op.inputs[0];
                            if self.act_q8_of != Some(input) {
                                quantize_rows(kernels, par, x, self.act_q8, out_rows, w.cols);
                                self.act_q8_of = Some(input);
                            }
                            let xq = &self.act_q8[..blocks];
                            par.for_each_range(units, &|u| {
                                // SAFETY: as above, disjoint rows per call.
                                unsafe { f(&w, xq, out_rows, rows_of(u), &shared) }
                            });
                        }
                    }
                }
                if let Some(bias) = weights.get(1) {
                    add_bias(y, bias, out_rows, w.rows);
                }
            }
            OpKind::HeadRmsNorm { eps, head_dim } => {
                let mut wbuf = [0f32; MAX_HEAD_DIM];
                for_each_tile(&weights[0], 0, |c0, tile| {
                    wbuf[c0..c0 + tile.len()].copy_from_slice(tile)
                });
                (kernels.head_rms_norm.f)(ins[0], &wbuf[..*head_dim], *eps, *head_dim, y);
            }
            OpKind::Rope {
                head_dim,
                layout,
                inv_freq,
            } => {
                let width = graph.tensors[op.outputs[0]].cols;
                for_token_rows(par, out_rows, width, y, &|tokens, ys| {
                    for (t, yt) in tokens.zip(ys.chunks_exact_mut(width)) {
                        (kernels.rope.f)(
                            &ins[0][t * width..(t + 1) * width],
                            yt,
                            pos0 + t,
                            *head_dim,
                            *layout,
                            inv_freq,
                        );
                    }
                });
            }
            OpKind::Attention {
                layer,
                n_heads,
                n_kv_heads,
                head_dim,
                scale,
            } => {
                let shape = AttnShape {
                    n_heads: *n_heads,
                    n_kv_heads: *n_kv_heads,
                    head_dim: *head_dim,
                    scale: *scale,
                    tokens: n,
                    pos0,
                    span: AttnSpan::Whole,
                    partial_slots: chunk_slots(max_ctx),
                };
                let step = AttnStep {
                    layer: *layer,
                    shape,
                    kv_type: graph.kv_type,
                    kv_width,
                    max_ctx,
                };
                attend::run_attention(
                    kernels,
                    par,
                    self.kv,
                    &step,
                    [ins[0], ins[1], ins[2]],
                    y,
                    extra,
                )?;
            }
            OpKind::SwiGlu | OpKind::Add => {
                let f = match op.kind {
                    OpKind::SwiGlu => kernels.swiglu.f,
                    _ => kernels.add.f,
                };
                let width = graph.tensors[op.outputs[0]].cols;
                let (a, b) = (ins[0], ins[1]);
                for_token_rows(par, out_rows, width, y, &|t, ys| {
                    let r = t.start * width..t.end * width;
                    f(&a[r.clone()], &b[r], ys)
                });
            }
            OpKind::LastRow => {
                let d = y.len();
                let x = ins[0];
                y.copy_from_slice(&x[x.len() - d..]);
            }
        }
        Ok(())
    }
}

/// Quantizes `rows` rows of `cols` activations of `x` into `q`'s 8-bit blocks, the rows split
/// across threads (each block is computed alone, so the split changes no bit).
fn quantize_rows(
    kernels: &KernelTable,
    par: &dyn Parallel,
    x: &[f32],
    q: &mut [BlockQ8Act],
    rows: usize,
    cols: usize,
) {
    let per_row = cols / QK8;
    let q = SharedOut::new(&mut q[..rows * per_row]);
    par.for_each_range(rows, &|t| {
        // SAFETY: `Parallel` hands out disjoint row ranges, so these blocks belong to this call
        // alone.
        let qt = unsafe { q.slice_mut(t.start * per_row..t.end * per_row) };
        (kernels.quantize_q8.f)(&x[t.start * cols..t.end * cols], qt);
    });
}

/// Adds `bias` (one row of `width`) to each of the `rows` rows of `y`.
fn add_bias(y: &mut [f32], bias: &WeightView<'_>, rows: usize, width: usize) {
    for yrow in y[..rows * width].chunks_exact_mut(width) {
        for_each_tile(bias, 0, |c0, tile| {
            for (i, &b) in tile.iter().enumerate() {
                yrow[c0 + i] += b;
            }
        });
    }
}

/// Runs a row-wise op over the step's `n` token rows of `width` values, split across threads:
/// `f(tokens, y_rows)` gets a token range and those rows of `y`. Every row is computed alone, so
/// the split never changes a bit; a single token (decoding) runs on the calling thread.
fn for_token_rows(
    par: &dyn Parallel,
    n: usize,
    width: usize,
    y: &mut [f32],
    f: &(dyn Fn(Range<usize>, &mut [f32]) + Sync),
) {
    let out = SharedOut::new(&mut y[..n * width]);
    par.for_each_range(n, &|t| {
        // SAFETY: `Parallel` hands out disjoint token ranges, so these rows of `y` belong to
        // this call alone.
        let rows = unsafe { out.slice_mut(t.start * width..t.end * width) };
        f(t, rows)
    });
}

/// Views the arena's scratch bytes as 8-bit activation blocks (4-byte aligned, whole blocks).
fn q8_blocks(bytes: &mut [u8]) -> Result<&mut [BlockQ8Act]> {
    let size = core::mem::size_of::<BlockQ8Act>();
    if bytes
        .as_ptr()
        .align_offset(core::mem::align_of::<BlockQ8Act>())
        != 0
    {
        return Err(Error::invalid(
            "arena",
            "activation scratch is not 4-byte aligned",
        ));
    }
    let n = bytes.len() / size;
    // SAFETY: the pointer is aligned for BlockQ8Act (checked), `n` blocks fit in the borrowed
    // bytes, and BlockQ8Act is plain data (f32, i32, [i8; 32], repr(C), no padding) for which
    // every bit pattern is a valid value; the exclusive borrow moves into the result.
    Ok(unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<BlockQ8Act>(), n) })
}

/// Borrows up to `O` output ranges mutably and up to `I` input ranges shared from one arena,
/// after checking that no output overlaps another output or any input (the planner's promise for
/// buffers live at the same step, re-checked here so a bad plan is an error, not UB).
#[allow(clippy::type_complexity)]
fn split_views<'b, const O: usize, const I: usize>(
    arena: &'b mut [f32],
    outs: &[Range<usize>],
    ins: &[Range<usize>],
) -> Result<([&'b mut [f32]; O], [&'b [f32]; I])> {
    let overlap = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    for (i, o) in outs.iter().enumerate() {
        if o.start > o.end || o.end > arena.len() {
            return Err(Error::invalid("plan", "output buffer outside the arena"));
        }
        if outs[..i].iter().any(|p| overlap(o, p)) || ins.iter().any(|p| overlap(o, p)) {
            return Err(Error::invalid(
                "plan",
                "an op's output overlaps a live buffer",
            ));
        }
    }
    if ins.iter().any(|r| r.start > r.end || r.end > arena.len()) || ins.len() > I || outs.len() > O
    {
        return Err(Error::invalid("plan", "input buffer outside the arena"));
    }
    let base = arena.as_mut_ptr();
    let mut o: [&'b mut [f32]; O] = core::array::from_fn(|_| -> &'b mut [f32] { &mut [] });
    let mut i: [&'b [f32]; I] = [&[]; I];
    for (slot, r) in o.iter_mut().zip(outs) {
        // SAFETY: r is inside the arena (checked), and overlaps no other range handed out here
        // (checked), so this mutable slice aliases nothing else derived from `arena` for 'b.
        *slot = unsafe { core::slice::from_raw_parts_mut(base.add(r.start), r.len()) };
    }
    for (slot, r) in i.iter_mut().zip(ins) {
        // SAFETY: inside the arena (checked) and disjoint from every mutable slice (checked);
        // shared slices may overlap each other.
        *slot = unsafe { core::slice::from_raw_parts(base.add(r.start), r.len()) };
    }
    Ok((o, i))
}
