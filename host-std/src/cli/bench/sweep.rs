//! The report's context sweep: prefill and decode speed at each context length of `--ctx`, and
//! the memory plan of a session of each length.
//!
//! Protocol, per model file and thread count, each repetition in a fresh session per length:
//! * `ppC`: a C-token prompt (the synthetic ids) from an empty cache, in steps of the batch
//!   size, logits of the last token only;
//! * `tgN @ dC`: then N tokens decoded one at a time after that prompt, so every step attends
//!   to C…C+N-1 cached positions (llama-bench's "depth").
//!
//! Repetitions are the outer loop, so a burst of load from elsewhere spreads over all lengths
//! instead of bending one of them. One untimed prefill and a few decode steps warm up first.

use super::*;

/// The timings at one context length.
pub(super) struct SweepPoint {
    pub(super) model: usize,
    pub(super) threads: usize,
    /// Prompt tokens before the decode (the context length).
    pub(super) ctx: usize,
    /// Tokens decoded after the prompt (0: no decode test).
    pub(super) n_gen: usize,
    /// One sample per repetition: the C-token prefill.
    pub(super) prefill_ns: Vec<u64>,
    /// One sample per repetition: the `n_gen` decode steps after it.
    pub(super) decode_ns: Vec<u64>,
}

impl SweepPoint {
    pub(super) fn prefill_tok_s(&self) -> Vec<f64> {
        tok_s(self.ctx, &self.prefill_ns)
    }

    pub(super) fn decode_tok_s(&self) -> Vec<f64> {
        tok_s(self.n_gen, &self.decode_ns)
    }
}

fn tok_s(tokens: usize, samples_ns: &[u64]) -> Vec<f64> {
    samples_ns
        .iter()
        .map(|&ns| tokens as f64 / (ns.max(1) as f64 * 1e-9))
        .collect()
}

/// The memory plan of a session of one context length.
pub(super) struct PlannedMemory {
    pub(super) model: usize,
    pub(super) ctx: usize,
    pub(super) weight_bytes: usize,
    /// Activations and scratch.
    pub(super) arena_bytes: usize,
    pub(super) kv_bytes: usize,
}

impl PlannedMemory {
    pub(super) fn total_bytes(&self) -> usize {
        self.weight_bytes + self.arena_bytes + self.kv_bytes
    }
}

/// The context lengths of `--ctx`, checked, sorted and without repeats.
pub(super) fn context_lengths(a: &BenchArgs) -> Result<Vec<usize>> {
    if a.ctx.is_empty() {
        bail!("--ctx needs at least one context length");
    }
    if let Some(&bad) = a.ctx.iter().find(|&&c| c == 0) {
        bail!("--ctx: context length {bad} is not positive");
    }
    let mut v = a.ctx.clone();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn session_limits(a: &BenchArgs, ctx: usize, decode: usize) -> Result<Limits> {
    let max_ctx = ctx
        .checked_add(decode)
        .ok_or_else(|| anyhow!("--ctx {ctx} with -n {decode} overflows"))?;
    Ok(Limits {
        max_ctx,
        max_tokens: a.batch_size.min(ctx).max(1),
        all_logits: false,
    })
}

/// Runs the sweep on every file and thread count.
pub(super) fn measure(
    files: &[ModelFile],
    infos: &[ModelInfo],
    a: &BenchArgs,
    threads: &[usize],
) -> Result<Vec<SweepPoint>> {
    let lengths = context_lengths(a)?;
    let longest = *lengths.last().unwrap_or(&1);
    let n_gen = a.report_gen();
    let mut out = Vec::new();
    for (mi, model) in files.iter().enumerate() {
        for &t in threads {
            let limits = session_limits(a, longest, n_gen)?;
            let mut engine = Engine::with_kv(model, limits, a.kv.kv, t)?;
            let prompt = synthetic_tokens(longest, model.config.vocab, TOKEN_SEED);
            let gen = synthetic_tokens(n_gen, model.config.vocab, TOKEN_SEED ^ 0x9e37_79b9);
            {
                let mut sess = engine.session()?;
                crate::generate::prefill(&mut sess, &prompt[..lengths[0].min(limits.max_tokens)])?;
                for &tok in gen.iter().take(GEN_WARMUP_TOKENS) {
                    sess.forward(&[tok]).map_err(|e| anyhow!("{e}"))?;
                }
            }
            let first = out.len();
            for &ctx in &lengths {
                out.push(SweepPoint {
                    model: mi,
                    threads: engine.threads(),
                    ctx,
                    n_gen,
                    prefill_ns: Vec::with_capacity(a.repetitions),
                    decode_ns: Vec::with_capacity(a.repetitions),
                });
            }
            for _ in 0..a.repetitions {
                for (i, &ctx) in lengths.iter().enumerate() {
                    let mut sess = engine.session()?;
                    let t0 = Instant::now();
                    crate::generate::prefill(&mut sess, &prompt[..ctx])?;
                    let prefill_ns = t0.elapsed().as_nanos() as u64;
                    let t1 = Instant::now();
                    for &tok in &gen {
                        sess.forward(&[tok]).map_err(|e| anyhow!("{e}"))?;
                    }
                    let decode_ns = t1.elapsed().as_nanos() as u64;
                    let p = &mut out[first + i];
                    p.prefill_ns.push(prefill_ns);
                    if n_gen > 0 {
                        p.decode_ns.push(decode_ns);
                    }
                }
            }
            for p in &out[first..] {
                let (pp, _) = mean_sd(&p.prefill_tok_s());
                let tg = if p.n_gen > 0 {
                    let (tg, _) = mean_sd(&p.decode_tok_s());
                    format!(", tg{} @ d{}: {tg:.2} tok/s", p.n_gen, p.ctx)
                } else {
                    String::new()
                };
                eprintln!(
                    "[vspec] {} | {} | pp{}: {pp:.2} tok/s{tg}",
                    infos[mi].label,
                    threads_text(p.threads),
                    p.ctx
                );
            }
        }
    }
    Ok(out)
}

/// The plan of a session of each context length (the limits `vspec run -c C -b B` would use),
/// per file.
pub(super) fn planned_memory(files: &[ModelFile], a: &BenchArgs) -> Result<Vec<PlannedMemory>> {
    let lengths = context_lengths(a)?;
    let kernels = crate::detect::kernel_table();
    let mut out = Vec::new();
    for (mi, model) in files.iter().enumerate() {
        for &ctx in &lengths {
            let graph = model.plan_graph_cpu(
                session_limits(a, ctx, 0)?,
                a.kv.kv,
                &kernels,
                crate::expand::Expansion::from_env()?,
            )?;
            let plan = vspec_core::plan::Plan::new(&graph)
                .map_err(|e| anyhow!("{}: planning ctx {ctx}: {e}", model.path.display()))?;
            out.push(PlannedMemory {
                model: mi,
                ctx,
                weight_bytes: plan.weight_bytes,
                arena_bytes: plan.arena_bytes,
                kv_bytes: plan.kv_bytes,
            });
        }
    }
    Ok(out)
}
