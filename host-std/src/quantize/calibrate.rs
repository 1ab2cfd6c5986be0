//! `vspec calibrate`: run the model over a text and record, for every matrix, the mean squared
//! activation of each input channel — the importance weights the quantizer uses (an error on a
//! column that sees large activations costs more output error) — and, with `--hessian`, the whole
//! second-moment matrix `E[x xᵀ]` of each distinct matmul input, which lets the converter feed
//! each weight's error forward to the columns after it (see `vspec_core::quant::gptq`).
//!
//! Stats file, diagonal only (JSON): `{"version": 1, "source": .., "text": .., "tokens": N,
//! "tensors": {name: {"rows": R, "mean_sq": [cols floats]}}}`.
//!
//! With matrices (binary, version 2): the 8 bytes `VSPECCAL`, a u32 LE version (2), a u32 LE 0,
//! a u64 LE header length, the JSON header (as above plus `"hessian": i` per tensor and
//! `"hessian_dims": [n₀, n₁, ..]`), zero padding to a multiple of 64 bytes, then for each matrix
//! in order its upper triangle, row by row, as f32 LE (`n(n+1)/2` values). Q, K and V read the
//! same activation, so they share one matrix.
//!
//! Accumulation is in token order (the matrices in f32 within a chunk and f64 across chunks, the
//! diagonal statistics in f64), so the result does not depend on the thread count.

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
    /// Index of this matrix's input second-moment matrix in [`Calibration::hessians`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian: Option<usize>,
}

/// `E[x xᵀ]` of one matmul input of width `n`: the upper triangle, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct SecondMoment {
    /// Width.
    pub n: usize,
    /// `n(n+1)/2` values: row `i` holds columns `i..n`.
    pub upper: Vec<f32>,
}

impl SecondMoment {
    /// The full symmetric matrix, row-major.
    pub fn full(&self) -> Vec<f64> {
        let n = self.n;
        let mut h = vec![0f64; n * n];
        let mut k = 0;
        for i in 0..n {
            for j in i..n {
                let v = self.upper[k] as f64;
                h[i * n + j] = v;
                h[j * n + i] = v;
                k += 1;
            }
        }
        h
    }
}

/// Magic number of the binary (version 2) stats file.
const MAGIC: &[u8; 8] = b"VSPECCAL";

/// A calibration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Format version: 1 (JSON, diagonal only) or 2 (binary, with matrices).
    pub version: u32,
    /// Model it was measured on.
    pub source: String,
    /// Text file it was measured on.
    pub text: String,
    /// Tokens evaluated.
    pub tokens: u64,
    /// Whether the model's output head is its embedding (then `token_embd.weight`'s matrix is
    /// the head's input, not the embedding's); absent in files from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied_head: Option<bool>,
    /// The rotation the model was measured under (`convert --rotate`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
    /// Statistics by GGUF tensor name.
    pub tensors: BTreeMap<String, ChannelStats>,
    /// Widths of the matrices in [`Calibration::hessians`] (version 2 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hessian_dims: Vec<usize>,
    /// Input second-moment matrices (not in the JSON header; stored after it).
    #[serde(skip)]
    pub hessians: Vec<SecondMoment>,
    /// The file it was loaded from (not stored), for messages.
    #[serde(skip)]
    pub file: String,
}

impl Calibration {
    /// Reads a stats file (either version), validating it.
    pub fn load(path: &Path) -> Result<Calibration> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut c = if bytes.starts_with(MAGIC) {
            Self::parse_binary(&bytes).with_context(|| format!("{}", path.display()))?
        } else {
            let c: Calibration = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a vspec calibration file", path.display()))?;
            if c.version != 1 {
                bail!(
                    "{}: calibration version {} is not supported",
                    path.display(),
                    c.version
                );
            }
            if !c.hessian_dims.is_empty() {
                bail!("{}: a JSON stats file cannot hold matrices", path.display());
            }
            c
        };
        c.file = path.display().to_string();
        for (name, s) in &c.tensors {
            if s.mean_sq.iter().any(|v| !v.is_finite() || *v < 0.0) {
                bail!(
                    "{}: tensor '{name}' has a negative or non-finite statistic",
                    path.display()
                );
            }
            if let Some(h) = s.hessian {
                match c.hessians.get(h) {
                    Some(m) if m.n == s.mean_sq.len() => {}
                    _ => bail!(
                        "{}: tensor '{name}' names matrix {h}, which is missing or of another width",
                        path.display()
                    ),
                }
            }
        }
        Ok(c)
    }

    fn parse_binary(bytes: &[u8]) -> Result<Calibration> {
        let field = |at: usize, len: usize| -> Result<&[u8]> {
            bytes
                .get(at..at + len)
                .ok_or_else(|| anyhow!("truncated stats file ({} bytes)", bytes.len()))
        };
        let version = u32::from_le_bytes(field(8, 4)?.try_into()?);
        if version != 2 {
            bail!("calibration version {version} is not supported");
        }
        let json_len = u64::from_le_bytes(field(16, 8)?.try_into()?);
        let json_len = usize::try_from(json_len).map_err(|_| anyhow!("header too large"))?;
        if json_len > bytes.len() {
            bail!(
                "header length {json_len} exceeds the file ({} bytes)",
                bytes.len()
            );
        }
        let mut c: Calibration =
            serde_json::from_slice(field(24, json_len)?).context("bad stats header")?;
        if c.version != 2 {
            bail!("header version {} does not match the file (2)", c.version);
        }
        let mut at = (24 + json_len).div_ceil(64) * 64;
        for &n in &c.hessian_dims {
            let count = n
                .checked_add(1)
                .and_then(|m| n.checked_mul(m))
                .map(|v| v / 2)
                .filter(|&v| v <= bytes.len() / 4)
                .ok_or_else(|| anyhow!("matrix width {n} is too large for the file"))?;
            let raw = field(at, count * 4)?;
            let upper: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if upper.iter().any(|v| !v.is_finite()) {
                bail!("a matrix of width {n} holds a non-finite value");
            }
            c.hessians.push(SecondMoment { n, upper });
            at += count * 4;
        }
        if at != bytes.len() {
            bail!(
                "the file has {} bytes but its header describes {at}",
                bytes.len()
            );
        }
        Ok(c)
    }

    /// Writes atomically (temporary file, then rename): JSON when there are no matrices, else the
    /// binary version 2 form.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let res = self
            .write_to(&tmp)
            .and_then(|_| std::fs::rename(&tmp, path).map_err(Into::into))
            .with_context(|| format!("cannot write {}", path.display()));
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    fn write_to(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        if self.hessians.is_empty() {
            std::fs::write(path, serde_json::to_string(self)?)?;
            return Ok(());
        }
        let json = serde_json::to_vec(self)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        f.write_all(MAGIC)?;
        f.write_all(&2u32.to_le_bytes())?;
        f.write_all(&0u32.to_le_bytes())?;
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        let pad = (24 + json.len()).div_ceil(64) * 64 - (24 + json.len());
        f.write_all(&vec![0u8; pad])?;
        for m in &self.hessians {
            for v in &m.upper {
                f.write_all(&v.to_le_bytes())?;
            }
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }
}

/// The text [`builtin`] calibrates on: the first nine chapters and the start of the tenth of Jane
/// Austen's *Persuasion* (1818, public domain; about 33k tokens of English prose).
pub const BUILTIN_TEXT: &str = include_str!("../../data/calibration-en.txt");

/// Name of [`BUILTIN_TEXT`] in stats and file metadata.
pub const BUILTIN_NAME: &str = "built-in text (Persuasion, ch. 1-9)";

/// Chunks of 512 tokens [`builtin`] runs: on SmolLM2 `--bits 3`, 60 chunks measured KLD 0.136
/// against 0.148 for 20 (both at damping 0.03), and allowed less damping.
pub const BUILTIN_CHUNKS: usize = 60;

/// Largest total size of the second-moment matrices [`builtin`] collects (their f64 sums); a
/// model needing more is calibrated on the diagonal only (`d_model`² and `d_ff`² grow fast:
/// a 1B model with d = 2048, ff = 8192 and 16 layers needs 5 GB).
pub const BUILTIN_HESSIAN_BUDGET: u64 = 4 << 30;

/// Bytes of f64 sums for every distinct matmul input of a Llama-family model: per layer the
/// attention input, the attention output, the FFN input (`d_model` wide) and the FFN hidden
/// (`d_ff` wide), plus the output head's input.
pub fn hessian_bytes(cfg: &vspec_core::model::ModelConfig) -> u64 {
    let tri = |n: usize| (n as u64) * (n as u64 + 1) / 2;
    let attn_out = (cfg.n_heads * cfg.head_dim) as u64;
    let per_layer = 2 * tri(cfg.d_model) + tri(attn_out as usize) + tri(cfg.d_ff);
    (per_layer * cfg.n_layers as u64 + tri(cfg.d_model)) * 8
}

/// Calibration on [`BUILTIN_TEXT`] ([`BUILTIN_CHUNKS`] chunks of 512 tokens) with second-moment matrices
/// when they fit [`BUILTIN_HESSIAN_BUDGET`]: what `vspec convert` does when no `--imatrix` is
/// given.
pub fn builtin(model: &ModelFile, threads: usize, progress: bool) -> Result<Calibration> {
    let need = hessian_bytes(&model.config);
    let hessians = need <= BUILTIN_HESSIAN_BUDGET;
    if !hessians {
        log::warn!(
            "calibrating without input matrices: they would need {:.1} GB (budget {:.1} GB)",
            need as f64 / 1e9,
            BUILTIN_HESSIAN_BUDGET as f64 / 1e9
        );
    }
    if progress {
        eprintln!("[vspec] calibrating on the {BUILTIN_NAME} (give --imatrix to use your own)");
    }
    calibrate(
        model,
        BUILTIN_TEXT,
        BUILTIN_NAME,
        512,
        Some(BUILTIN_CHUNKS),
        threads,
        hessians,
        progress,
    )
}

/// Sums of `x xᵀ` (upper triangle) for one matmul input.
struct MomentSum {
    n: usize,
    /// Row `i` of the upper triangle, columns `i..n`.
    rows: Vec<Vec<f64>>,
}

/// Rows of the triangle one parallel task accumulates (their `x[t, i0..]` loads are shared).
const MOMENT_ROWS: usize = 16;

impl MomentSum {
    fn new(n: usize) -> MomentSum {
        MomentSum {
            n,
            rows: (0..n).map(|i| vec![0f64; n - i]).collect(),
        }
    }

    /// Adds `Σₜ xₜ xₜᵀ` for the `x.len() / n` rows of `x`: the chunk's sums in f32, in token
    /// order, then added to the f64 totals, so the result is the same for any thread count.
    fn add(&mut self, x: &[f32], pool: &rayon::ThreadPool) {
        use rayon::prelude::*;
        let n = self.n;
        pool.install(|| {
            self.rows
                .par_chunks_mut(MOMENT_ROWS)
                .enumerate()
                .for_each(|(b, rows)| {
                    let i0 = b * MOMENT_ROWS;
                    let width = n - i0;
                    let mut tmp = vec![0f32; rows.len() * width];
                    for xt in x.chunks_exact(n) {
                        let tail = &xt[i0..];
                        for (r, acc) in tmp.chunks_exact_mut(width).enumerate() {
                            let xi = tail[r];
                            if xi != 0.0 {
                                // Columns before i0 + r are below the diagonal; skip them.
                                for (a, &xj) in acc[r..].iter_mut().zip(&tail[r..]) {
                                    *a += xi * xj;
                                }
                            }
                        }
                    }
                    for (r, (row, acc)) in rows.iter_mut().zip(tmp.chunks_exact(width)).enumerate()
                    {
                        for (s, &a) in row.iter_mut().zip(&acc[r..]) {
                            *s += a as f64;
                        }
                    }
                })
        });
    }

    fn mean(&self, count: u64) -> SecondMoment {
        let c = count.max(1) as f64;
        SecondMoment {
            n: self.n,
            upper: self.rows.iter().flatten().map(|v| (v / c) as f32).collect(),
        }
    }
}

/// Runs `model` over `text` in chunks of `ctx` tokens (at most `max_chunks`) and collects stats;
/// with `hessians`, also the second-moment matrix of every distinct matmul input.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model: &ModelFile,
    text: &str,
    text_name: &str,
    ctx: usize,
    max_chunks: Option<usize>,
    threads: usize,
    hessians: bool,
    progress: bool,
) -> Result<Calibration> {
    if hessians && progress {
        // f64 sums while running, then an f32 copy to save: the user should know before a long run.
        let sums = hessian_bytes(&model.config);
        eprintln!(
            "[vspec] input matrices: about {:.2} GB of memory, a {:.2} GB stats file",
            sums as f64 * 1.5 / 1e9,
            sums as f64 / 2.0 / 1e9
        );
    }
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut sums: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    // Matrices by input activation name, and which input each weight reads.
    let mut moments: BTreeMap<String, (u64, MomentSum)> = BTreeMap::new();
    let mut input_of: BTreeMap<String, String> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    for c in 0..n_chunk {
        let chunk = &tokens[c * ctx..((c + 1) * ctx).min(tokens.len())];
        sess.reset();
        let mut seen_inputs = std::collections::HashSet::new();
        let mut observe = |name: &str, input: &str, x: &[f32], cols: usize| {
            let entry = sums
                .entry(name.to_string())
                .or_insert_with(|| (0, vec![0f64; cols]));
            for row in x.chunks_exact(cols) {
                for (s, &v) in entry.1.iter_mut().zip(row) {
                    *s += (v as f64) * (v as f64);
                }
                entry.0 += 1;
            }
            if hessians {
                input_of.insert(name.to_string(), input.to_string());
                if seen_inputs.insert(input.to_string()) {
                    let m = moments
                        .entry(input.to_string())
                        .or_insert_with(|| (0, MomentSum::new(cols)));
                    m.1.add(x, &pool);
                    m.0 += (x.len() / cols) as u64;
                }
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
    let index: BTreeMap<&str, usize> = moments
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let tensors = sums
        .iter()
        .map(|(k, (rows, s))| {
            let mean_sq = s
                .iter()
                .map(|v| (v / (*rows).max(1) as f64) as f32)
                .collect();
            let hessian = input_of.get(k).map(|i| index[i.as_str()]);
            (
                k.clone(),
                ChannelStats {
                    rows: *rows,
                    mean_sq,
                    hessian,
                },
            )
        })
        .collect();
    let hessians: Vec<SecondMoment> = moments.values().map(|(c, m)| m.mean(*c)).collect();
    Ok(Calibration {
        version: if hessians.is_empty() { 1 } else { 2 },
        source: model.path.display().to_string(),
        text: text_name.to_string(),
        tokens: (n_chunk * ctx).min(tokens.len()) as u64,
        tied_head: Some(model.config.tied_embeddings),
        rotation: crate::quantize::rotate::rotation_of(model),
        tensors,
        hessian_dims: hessians.iter().map(|m| m.n).collect(),
        hessians,
        file: String::new(),
    })
}
