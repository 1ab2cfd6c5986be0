//! Perplexity with llama.cpp's `llama-perplexity` protocol, so numbers compare directly:
//! the text is tokenized once (BOS added if the model wants one); it is cut into `n_chunk` chunks
//! of `ctx` tokens; each chunk's first token is replaced by BOS (when the model adds BOS); the
//! chunk is evaluated from an empty cache; only the second half is scored: the logits at positions
//! `ctx/2 .. ctx-1` predicting the next token. PPL = exp(mean NLL), and the error is
//! `ppl · sqrt((mean(NLL²) − mean(NLL)²) / (count − 1))`.

use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Result};
use vspec_core::exec::Session;

/// Result of a perplexity run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PplResult {
    /// Chunks scored.
    pub chunks: usize,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Tokens of the whole text.
    pub n_tokens: usize,
    /// Final perplexity.
    pub ppl: f64,
    /// Its standard error.
    pub ppl_err: f64,
    /// Running PPL after each chunk (as llama-perplexity prints it).
    pub running: Vec<f64>,
}

/// Log-probability of `tok` under softmax(`logits`): max-shifted, exp in f32, sum in f64 (as
/// llama.cpp does it).
pub fn log_softmax_at(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max).exp()) as f64).sum();
    (logits[tok] - max) as f64 - sum.ln()
}

/// Runs the protocol over `text` with a session built with `all_logits` and `max_ctx >= ctx`.
pub fn perplexity(
    sess: &mut Session<'_>,
    tok: &Tokenizer,
    text: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    on_chunk: impl FnMut(usize, f64),
) -> Result<PplResult> {
    perplexity_with(sess, tok, text, ctx, max_chunks, on_chunk, |_, _| Ok(()))
}

/// [`perplexity`], also handing every scored position's logits and target token to `on_scored`
/// (the KL-divergence mode reads them).
pub fn perplexity_with(
    sess: &mut Session<'_>,
    tok: &Tokenizer,
    text: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, f64),
    mut on_scored: impl FnMut(&[f32], usize) -> Result<()>,
) -> Result<PplResult> {
    let lim = sess.limits();
    if !lim.all_logits || lim.max_ctx < ctx {
        bail!("perplexity needs a session with all logits and a context of at least {ctx}");
    }
    if ctx < 4 {
        bail!("--ctx {ctx} is too small");
    }
    let add_bos = tok.add_bos() && tok.bos_id().is_some();
    let tokens = tok.encode(text, true)?;
    let available = tokens.len() / ctx;
    if available == 0 {
        bail!(
            "the text has {} tokens, fewer than one chunk of {ctx}",
            tokens.len()
        );
    }
    let n_chunk = max_chunks.map_or(available, |m| m.min(available));
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunk);
    let mut chunk_tokens = vec![0u32; ctx];
    for c in 0..n_chunk {
        chunk_tokens.copy_from_slice(&tokens[c * ctx..(c + 1) * ctx]);
        if add_bos {
            chunk_tokens[0] = tok.bos_id().unwrap_or(chunk_tokens[0]);
        }
        sess.reset();
        let step = lim.max_tokens;
        for (b, batch) in chunk_tokens.chunks(step).enumerate() {
            let start = b * step;
            let logits = sess.forward(batch).map_err(|e| anyhow!("{e}"))?;
            let vocab = logits.len() / batch.len();
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                let p = start + i;
                if p >= first && p + 1 < ctx {
                    let target = chunk_tokens[p + 1] as usize;
                    if target >= vocab {
                        bail!("token id {target} is outside the model's vocabulary of {vocab}");
                    }
                    on_scored(row, target)?;
                    let v = -log_softmax_at(row, target);
                    nll += v;
                    nll2 += v * v;
                    count += 1;
                }
            }
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_chunk(c, ppl);
    }
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let ppl_err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PplResult {
        chunks: n_chunk,
        ctx,
        n_tokens: tokens.len(),
        ppl,
        ppl_err,
        running,
    })
}
