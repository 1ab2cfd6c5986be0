//! KL-divergence of a model's next-token distributions against a baseline's, over the scored
//! positions of the perplexity protocol (like llama-perplexity's `--kl-divergence`).
//!
//! The baseline file (`--kl-base FILE`) holds, after a 16-byte header (`b"VSPECKL1"`, vocab u32,
//! ctx u32), one record per scored position: the target token (u32 LE) and the baseline's
//! log-probabilities over the vocabulary as f16 LE. `--kl FILE` recomputes the same positions and
//! compares: mean KL(base ‖ model) with its standard error, the share of positions whose most
//! likely token agrees, and both perplexities.

use anyhow::{bail, Context, Result};
use half::f16;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VSPECKL1";

fn log_softmax(logits: &[f32], out: &mut Vec<f64>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    out.clear();
    out.extend(logits.iter().map(|&l| l as f64 - lse));
}

fn argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// Writes baseline records to a temporary file, renamed over the target only by `finish`.
pub struct KlBaseWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    scratch: Vec<f64>,
    vocab: usize,
}

impl KlBaseWriter {
    /// Starts a baseline file for `vocab`-sized distributions at chunk size `ctx`.
    pub fn create(path: &Path, vocab: usize, ctx: usize) -> Result<Self> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = BufWriter::new(f);
        out.write_all(MAGIC)?;
        out.write_all(&(vocab as u32).to_le_bytes())?;
        out.write_all(&(ctx as u32).to_le_bytes())?;
        Ok(KlBaseWriter {
            out,
            tmp,
            path: path.to_owned(),
            scratch: Vec::new(),
            vocab,
        })
    }

    /// Appends one scored position.
    pub fn push(&mut self, logits: &[f32], target: usize) -> Result<()> {
        if logits.len() != self.vocab {
            bail!(
                "logits of {} entries, baseline vocab {}",
                logits.len(),
                self.vocab
            );
        }
        log_softmax(logits, &mut self.scratch);
        self.out.write_all(&(target as u32).to_le_bytes())?;
        for &lp in &self.scratch {
            self.out
                .write_all(&f16::from_f64(lp.max(-65000.0)).to_le_bytes())?;
        }
        Ok(())
    }

    /// Flushes and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Drop for KlBaseWriter {
    fn drop(&mut self) {
        // After a successful finish the temp file is gone; otherwise no partial output remains.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Running comparison against a baseline file.
pub struct KlComparer {
    input: BufReader<File>,
    path: PathBuf,
    vocab: usize,
    base: Vec<f64>,
    ours: Vec<f64>,
    record: Vec<u8>,
    sum_kl: f64,
    sum_kl2: f64,
    same_top: usize,
    base_nll: f64,
    nll: f64,
    count: usize,
}

/// The summary of a comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KlStats {
    /// Positions compared.
    pub count: usize,
    /// Mean KL(base ‖ model) in nats.
    pub mean_kld: f64,
    /// Its standard error.
    pub kld_err: f64,
    /// Percentage of positions where both put the same token first.
    pub same_top_pct: f64,
    /// The baseline's perplexity over the same positions.
    pub base_ppl: f64,
    /// This model's perplexity over them.
    pub ppl: f64,
}

impl KlComparer {
    /// Opens a baseline written for chunk size `ctx`.
    pub fn open(path: &Path, ctx: usize) -> Result<Self> {
        let f = File::open(path)
            .with_context(|| format!("cannot open KL baseline {}", path.display()))?;
        let mut input = BufReader::new(f);
        let mut head = [0u8; 16];
        input
            .read_exact(&mut head)
            .with_context(|| format!("{}: truncated header", path.display()))?;
        if &head[..8] != MAGIC {
            bail!("{}: not a vspec KL baseline (bad magic)", path.display());
        }
        let vocab = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        let base_ctx = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default()) as usize;
        if base_ctx != ctx {
            bail!(
                "{}: baseline was made with --ctx {base_ctx}, not {ctx}",
                path.display()
            );
        }
        Ok(KlComparer {
            input,
            path: path.to_owned(),
            vocab,
            base: Vec::new(),
            ours: Vec::new(),
            record: vec![0u8; 4 + 2 * vocab],
            sum_kl: 0.0,
            sum_kl2: 0.0,
            same_top: 0,
            base_nll: 0.0,
            nll: 0.0,
            count: 0,
        })
    }

    /// Compares one scored position with the next baseline record.
    pub fn push(&mut self, logits: &[f32], target: usize) -> Result<()> {
        if logits.len() != self.vocab {
            bail!(
                "{}: baseline vocab {} but the model has {}",
                self.path.display(),
                self.vocab,
                logits.len()
            );
        }
        self.input.read_exact(&mut self.record).with_context(|| {
            format!(
                "{}: fewer positions than this run scores",
                self.path.display()
            )
        })?;
        let base_target =
            u32::from_le_bytes(self.record[..4].try_into().unwrap_or_default()) as usize;
        if base_target != target {
            bail!("{}: position {} predicts token {base_target} there but {target} here: different text or tokenizer", self.path.display(), self.count);
        }
        self.base.clear();
        self.base.extend(
            self.record[4..]
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64()),
        );
        log_softmax(logits, &mut self.ours);
        let kl: f64 = self
            .base
            .iter()
            .zip(&self.ours)
            .map(|(&b, &o)| b.exp() * (b - o))
            .sum::<f64>()
            .max(0.0);
        self.sum_kl += kl;
        self.sum_kl2 += kl * kl;
        if argmax(self.base.iter().copied()) == argmax(self.ours.iter().copied()) {
            self.same_top += 1;
        }
        self.base_nll -= self.base[target];
        self.nll -= self.ours[target];
        self.count += 1;
        Ok(())
    }

    /// The summary so far.
    pub fn stats(&self) -> KlStats {
        let n = self.count.max(1) as f64;
        let mean = self.sum_kl / n;
        let var = (self.sum_kl2 / n - mean * mean).max(0.0);
        KlStats {
            count: self.count,
            mean_kld: mean,
            kld_err: if self.count > 1 {
                (var / (n - 1.0)).sqrt()
            } else {
                0.0
            },
            same_top_pct: 100.0 * self.same_top as f64 / n,
            base_ppl: (self.base_nll / n).exp(),
            ppl: (self.nll / n).exp(),
        }
    }
}
