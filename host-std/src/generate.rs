//! Prompt processing and token generation over any backend: the CPU [`Session`] or a device
//! session (see [`Generator`]).

use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Result};
use std::time::Instant;
use vspec_core::exec::{Executor, Session};
use vspec_core::sample::{Sampler, SamplerConfig};

/// What generation needs of a backend: the [`Executor`] seam plus the context shift (which
/// rewrites cached keys, so each backend does it in its own memory).
pub trait Generator: Executor {
    /// Forgets `discard` positions after the first `keep` (see [`Session::shift_context`]).
    fn shift_context(&mut self, keep: usize, discard: usize) -> vspec_core::Result<()>;
}

impl Generator for Session<'_> {
    fn shift_context(&mut self, keep: usize, discard: usize) -> vspec_core::Result<()> {
        Session::shift_context(self, keep, discard)
    }
}

/// The CUDA session has no context shift yet: `--ctx-shift` on a full context is an error there.
impl Generator for vspec_cuda::CudaSession<'_> {
    fn shift_context(&mut self, _keep: usize, _discard: usize) -> vspec_core::Result<()> {
        Err(vspec_core::Error::Backend {
            backend: "cuda",
            message: "context shift is not implemented on the device yet".into(),
        })
    }
}

/// Timings of one generation, for the llama.cpp-style report on stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct GenStats {
    /// Tokens evaluated as prompt.
    pub prompt_tokens: usize,
    /// Seconds spent on them.
    pub prompt_secs: f64,
    /// Tokens generated (sampled and evaluated).
    pub gen_tokens: usize,
    /// Seconds spent generating.
    pub gen_secs: f64,
    /// Context shifts made while generating (see [`ContextFull::Shift`]).
    pub ctx_shifts: usize,
}

/// What generation does when the context is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextFull {
    /// Stop with an error saying so (the default).
    #[default]
    Error,
    /// Keep the first `keep` positions (BOS, system prompt), drop the oldest half of the rest and
    /// re-encode the positions of what remains (llama.cpp's context shift), then go on.
    Shift {
        /// Positions never dropped.
        keep: usize,
    },
}

impl GenStats {
    /// `prompt eval: N tokens, X tok/s | generation: M tokens, Y tok/s`.
    pub fn report(&self) -> String {
        let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        format!(
            "prompt eval: {} tokens in {:.2} s ({:.2} tok/s) | generation: {} tokens in {:.2} s ({:.2} tok/s)",
            self.prompt_tokens,
            self.prompt_secs,
            rate(self.prompt_tokens, self.prompt_secs),
            self.gen_tokens,
            self.gen_secs,
            rate(self.gen_tokens, self.gen_secs)
        )
    }
}

/// The ids of a prompt as `vspec generate` feeds them: BOS first when the model wants one,
/// unless the text (a rendered chat template) already starts with the BOS token's text.
pub fn encode_prompt(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let starts_with_bos = tok
        .bos_token()
        .is_some_and(|b| !b.is_empty() && text.starts_with(&b));
    tok.encode(text, !starts_with_bos)
}

/// Feeds `tokens` to the session in steps of at most the session's `max_tokens`; returns the
/// logits of the last token.
pub fn prefill<'s, S: Executor + ?Sized>(sess: &'s mut S, tokens: &[u32]) -> Result<&'s [f32]> {
    if tokens.is_empty() {
        bail!("nothing to evaluate: the prompt is empty");
    }
    let lim = sess.limits();
    if sess.pos() + tokens.len() > lim.max_ctx {
        bail!(
            "the prompt needs {} positions but the context holds {} (raise -c/--ctx-size)",
            sess.pos() + tokens.len(),
            lim.max_ctx
        );
    }
    let step = lim.max_tokens;
    let chunks = tokens.len().div_ceil(step);
    for (i, chunk) in tokens.chunks(step).enumerate() {
        if i + 1 < chunks {
            sess.forward(chunk).map_err(|e| anyhow!("{e}"))?;
        } else {
            let logits = sess.forward(chunk).map_err(|e| anyhow!("{e}"))?;
            let vocab = logits.len() / if lim.all_logits { chunk.len() } else { 1 };
            return Ok(&logits[logits.len() - vocab..]);
        }
    }
    unreachable!("at least one chunk")
}

/// Generates up to `n_predict` tokens after `prompt`, calling `on_token` for each; stops at an
/// end-of-sequence token (not passed to `on_token`) or at `n_predict`; a full context is an
/// error. `history` is the token history the repetition penalty sees (prompt included) and grows.
pub fn generate<S: Generator + ?Sized>(
    sess: &mut S,
    tok: &Tokenizer,
    prompt: &[u32],
    n_predict: usize,
    sampler_cfg: &SamplerConfig,
    history: &mut Vec<u32>,
    on_token: impl FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenStats)> {
    generate_with(
        sess,
        tok,
        prompt,
        n_predict,
        sampler_cfg,
        history,
        ContextFull::Error,
        on_token,
    )
}

/// [`generate`], with `on_full` deciding what happens when the context is full.
#[allow(clippy::too_many_arguments)]
pub fn generate_with<S: Generator + ?Sized>(
    sess: &mut S,
    tok: &Tokenizer,
    prompt: &[u32],
    n_predict: usize,
    sampler_cfg: &SamplerConfig,
    history: &mut Vec<u32>,
    on_full: ContextFull,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenStats)> {
    let mut sampler =
        Sampler::new(sampler_cfg.clone(), tok.vocab_size().max(1)).map_err(|e| anyhow!("{e}"))?;
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut next = {
        let logits = prefill(sess, prompt)?;
        history.extend_from_slice(prompt);
        sampler.sample(logits, history)
    };
    stats.prompt_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut out = Vec::new();
    let max_ctx = sess.limits().max_ctx;
    while out.len() < n_predict {
        if tok.eos_ids().contains(&next) {
            break;
        }
        out.push(next);
        history.push(next);
        on_token(next)?;
        if out.len() == n_predict {
            break;
        }
        if sess.pos() >= max_ctx {
            match on_full {
                ContextFull::Error => bail!(
                    "the context of {max_ctx} positions is full after {} generated tokens \
                     (raise -c/--ctx-size, or pass --ctx-shift to drop the oldest half)",
                    out.len()
                ),
                ContextFull::Shift { keep } => {
                    let pos = sess.pos();
                    let keep = keep.min(pos - 1);
                    let discard = ((pos - keep) / 2).max(1);
                    sess.shift_context(keep, discard)
                        .map_err(|e| anyhow!("{e}"))?;
                    stats.ctx_shifts += 1;
                    log::info!("context full: dropped {discard} positions after the first {keep}");
                }
            }
        }
        let logits = sess.forward(&[next]).map_err(|e| anyhow!("{e}"))?;
        next = sampler.sample(logits, history);
        stats.gen_tokens += 1;
    }
    stats.gen_secs = t1.elapsed().as_secs_f64();
    Ok((out, stats))
}
