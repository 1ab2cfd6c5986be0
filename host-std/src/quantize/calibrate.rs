//! `vspec calibrate`: run the model over a text and record, for every matrix, the mean squared
//! activation of each input channel — the importance weights the quantizer uses (an error on a
//! column that sees large activations costs more output error).
//!
//! Stats file (JSON): `{"version": 1, "source": .., "text": .., "tokens": N, "tensors": {name:
//! {"rows": R, "mean_sq": [cols floats]}}}`. Accumulation is in f64 in token order, so the result
//! does not depend on the thread count.

use crate::model::{Engine, ModelFile};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use vspec_core::graph::Limits;

/// Per-matrix input statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelStats {
    /// Activation rows (tokens) seen.
    pub rows: u64,
    /// Mean of x² per input column.
    pub mean_sq: Vec<f32>,
}

/// A calibration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Format version (1).
    pub version: u32,
    /// Model it was measured on.
    pub source: String,
    /// Text file it was measured on.
    pub text: String,
    /// Tokens evaluated.
    pub tokens: u64,
    /// Statistics by GGUF tensor name.
    pub tensors: BTreeMap<String, ChannelStats>,
    /// The file it was loaded from (not stored), for messages.
    #[serde(skip)]
    pub file: String,
}

impl Calibration {
    /// Reads a stats file, validating it.
    pub fn load(path: &Path) -> Result<Calibration> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut c: Calibration = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a vspec calibration file", path.display()))?;
        c.file = path.display().to_string();
        if c.version != 1 {
            bail!(
                "{}: calibration version {} is not supported",
                path.display(),
                c.version
            );
        }
        for (name, s) in &c.tensors {
            if s.mean_sq.iter().any(|v| !v.is_finite() || *v < 0.0) {
                bail!(
                    "{}: tensor '{name}' has a negative or non-finite statistic",
                    path.display()
                );
            }
        }
        Ok(c)
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let res = std::fs::write(&tmp, serde_json::to_string(self)?)
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()));
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }
}

/// Runs `model` over `text` in chunks of `ctx` tokens (at most `max_chunks`) and collects stats.
pub fn calibrate(
    model: &ModelFile,
    text: &str,
    text_name: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    threads: usize,
    progress: bool,
) -> Result<Calibration> {
    let tok = model.tokenizer()?;
    let tokens = tok.encode(text, true)?;
    if tokens.len() < 2 {
        bail!("{text_name}: the text has too few tokens to calibrate on");
    }
    let ctx = ctx.min(tokens.len()).max(1);
    let available = tokens.len() / ctx;
    let n_chunk = max_chunks.map_or(available, |m| m.min(available)).max(1);
    // All logits, so the output head sees every token, not just each chunk's last.
    let lim = Limits {
        max_ctx: ctx,
        max_tokens: ctx,
        all_logits: true,
    };
    let mut engine = Engine::new(model, lim, threads)?;
    let mut sess = engine.session()?;
    let mut sums: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    for c in 0..n_chunk {
        let chunk = &tokens[c * ctx..((c + 1) * ctx).min(tokens.len())];
        sess.reset();
        let mut observe = |name: &str, x: &[f32], cols: usize| {
            let entry = sums
                .entry(name.to_string())
                .or_insert_with(|| (0, vec![0f64; cols]));
            for row in x.chunks_exact(cols) {
                for (s, &v) in entry.1.iter_mut().zip(row) {
                    *s += (v as f64) * (v as f64);
                }
                entry.0 += 1;
            }
        };
        sess.forward_observed(chunk, Some(&mut observe))
            .map_err(|e| anyhow!("{e}"))?;
        if progress {
            eprint!(
                "\rcalibrating: chunk {}/{} ({:.0} s)",
                c + 1,
                n_chunk,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!();
    }
    let tensors = sums
        .into_iter()
        .map(|(k, (rows, s))| {
            let mean_sq = s.iter().map(|v| (v / rows.max(1) as f64) as f32).collect();
            (k, ChannelStats { rows, mean_sq })
        })
        .collect();
    Ok(Calibration {
        version: 1,
        source: model.path.display().to_string(),
        text: text_name.to_string(),
        tokens: (n_chunk * ctx).min(tokens.len()) as u64,
        tensors,
        file: String::new(),
    })
}
