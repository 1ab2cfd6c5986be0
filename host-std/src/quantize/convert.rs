//! `vspec convert`: a GGUF file or Hugging Face directory in, a `.vspec` file out, every matrix in
//! the format its recipe names, quantized with importance-weighted error search.
//!
//! Tensors are produced one at a time (rows in parallel, each row independent, so the bytes do not
//! depend on the thread count) and streamed to the writer, which renames the file into place only
//! when everything succeeded. Lossless paths: a tensor already in its target format is copied
//! byte for byte, and Q4_0 becomes Q4_1 exactly (d·(q−8) = d·q + (−8d)).

use super::calibrate::{self, Calibration};
use super::recipe::Recipe;
use crate::model::ModelFile;
use crate::vspecfile::VspecWriter;
use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use vspec_core::format::Format;
use vspec_core::graph::Role;
use vspec_core::model::WeightView;
use vspec_core::quant;
use vspec_core::quant::gptq::{self, BlockMoments, GptqScratch, InverseFactor};

/// Damping of the input second-moment matrices, relative to their mean diagonal, for
/// [`DAMPING_REFERENCE_TOKENS`] calibration tokens or more. On SmolLM2 `--bits 3` (Emma 20 × 512,
/// calibration on Persuasion) KLD measured 0.1336 at 0.01 and 0.1363 at 0.03 with 60 × 512
/// tokens, but 0.148 / 0.151 / 0.164 at 0.03 / 0.1 / 0.3 with 20 × 512: less text estimates `H`
/// worse and wants more damping, so [`damping_for`] scales it up as the token count drops.
const GPTQ_DAMPING: f64 = 0.01;

/// Calibration tokens at which [`GPTQ_DAMPING`] applies as is (the built-in calibration's).
const DAMPING_REFERENCE_TOKENS: f64 = 30_720.0;

/// The damping for a calibration of `tokens` tokens: `0.01 · 30720 / tokens`, within 0.01..=0.1.
fn damping_for(tokens: u64) -> f64 {
    (GPTQ_DAMPING * DAMPING_REFERENCE_TOKENS / tokens.max(1) as f64).clamp(GPTQ_DAMPING, 0.1)
}

/// What the converter did.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    /// Weights written.
    pub params: u64,
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
    /// Tensors per output format.
    pub formats: BTreeMap<String, usize>,
    /// Tensors copied or transcoded without loss.
    pub lossless: usize,
}

impl ConvertReport {
    /// Bits per weight of the tensor data.
    pub fn bpw(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.params.max(1) as f64
    }
}

/// Converts one weight to `target`, rows in parallel; with `factor`, each row's errors are fed
/// forward to its later columns ([`gptq::quantize_row_gptq`]) and, given the block moments, the
/// row's scales are refitted jointly ([`gptq::refit_row_scales`]); else every block is fitted on
/// its own with `importance` as weights.
fn convert_tensor(
    w: &WeightView<'_>,
    target: Format,
    importance: Option<&[f32]>,
    factor: Option<(&InverseFactor, Option<&BlockMoments>)>,
    pool: &rayon::ThreadPool,
) -> Result<(Vec<u8>, bool)> {
    if w.format == target {
        return Ok((w.data.to_vec(), true));
    }
    let out_row = target.row_bytes(w.cols, "output")?;
    let mut out = vec![0u8; out_row * w.rows];
    if w.format == Format::Q4_0 && target == Format::Q4_1 {
        let (ib, ob) = (Format::Q4_0.block_bytes(), Format::Q4_1.block_bytes());
        for (src, dst) in w.data.chunks_exact(ib).zip(out.chunks_exact_mut(ob)) {
            quant::transcode_q4_0_to_q4_1(src, dst);
        }
        return Ok((out, true));
    }
    let packed = quant::can_quantize(target) && target.block_elems() > 1;
    pool.install(|| {
        out.par_chunks_mut(out_row).enumerate().try_for_each_init(
            GptqScratch::default,
            |scratch, (r, dst)| -> Result<()> {
                let mut row = vec![0f32; w.cols];
                quant::dequantize_row(w.format, w.row(r), &mut row)
                    .map_err(|e| anyhow!("row {r}: {e}"))?;
                match factor {
                    Some((f, moments)) if packed => {
                        let original = moments.map(|_| row.clone());
                        gptq::quantize_row_gptq(target, &mut row, f, dst, scratch).and_then(|_| {
                            match (moments, &original) {
                                (Some(m), Some(w)) => {
                                    gptq::refit_row_scales(target, w, m, dst).map(|_| ())
                                }
                                _ => Ok(()),
                            }
                        })
                    }
                    _ => quant::quantize_row(target, &row, importance, dst),
                }
                .map_err(|e| anyhow!("row {r}: {e}"))
            },
        )
    })?;
    Ok((out, false))
}

/// Where the statistics that weigh quantization errors come from.
#[derive(Debug, Clone, Copy)]
pub enum Calibrate<'c> {
    /// None: every block is fitted on its own with uniform weights (data-free; fast, but at 3
    /// and 2 bits much worse, see the README's quality table).
    Off,
    /// A stats file from `vspec calibrate` (with `--hessian`, errors are also compensated).
    File(&'c Calibration),
    /// Run the model over the built-in text ([`calibrate::builtin`]) first, when some matrix is
    /// requantized at all.
    Builtin,
}

/// Converts `model` to a `.vspec` file at `out` following `recipe`.
pub fn convert(
    model: &ModelFile,
    out: &Path,
    recipe: &Recipe,
    calibration: Calibrate<'_>,
    threads: usize,
    progress: bool,
) -> Result<ConvertReport> {
    let src = model.path.display().to_string();
    let (graph, views) = model.bind_weights()?;
    let weights: Vec<(usize, WeightView<'_>)> = graph
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.role == Role::Weight)
        .map(|(id, _)| {
            views[id]
                .map(|v| (id, v))
                .ok_or_else(|| anyhow!("{src}: tensor '{}' is not bound", graph.tensors[id].name))
        })
        .collect::<Result<_>>()?;
    let matrices: Vec<&str> = weights
        .iter()
        .filter(|(_, w)| w.rows > 1)
        .map(|(id, _)| graph.tensors[*id].name.as_str())
        .collect();
    recipe.check_patterns(matrices.iter().copied())?;
    // Decide every format first, so a recipe error surfaces before any work or output.
    let mut plan = Vec::with_capacity(weights.len());
    for (id, w) in &weights {
        let name = graph.tensors[*id].name.as_str();
        let target = if w.rows == 1 {
            Format::F32
        } else {
            recipe.format_for(name, w.cols)?
        };
        if !quant::can_quantize(target) && target != w.format {
            bail!(
                "{name}: cannot convert {} to {}",
                w.format.name(),
                target.name()
            );
        }
        plan.push((name, *w, target));
    }
    // Calibrating is only worth its time when some matrix is fitted anew in a packed format.
    let requantizes = plan
        .iter()
        .any(|(_, w, t)| w.rows > 1 && w.format != *t && t.block_elems() > 1 && *t != Format::Q8_0);
    let builtin = match calibration {
        Calibrate::Builtin if requantizes => Some(calibrate::builtin(model, threads, progress)?),
        _ => None,
    };
    let imatrix = match calibration {
        Calibrate::File(c) => Some(c),
        _ => builtin.as_ref(),
    };
    if let Some(cal) = imatrix {
        if cal
            .tied_head
            .is_some_and(|t| t != model.config.tied_embeddings)
        {
            bail!(
                "{}: calibrated on a model with {} output head ({}), this one has {}",
                cal.file,
                if model.config.tied_embeddings {
                    "a separate"
                } else {
                    "a tied"
                },
                cal.source,
                if model.config.tied_embeddings {
                    "a tied one"
                } else {
                    "a separate one"
                }
            );
        }
        let rotation = super::rotate::rotation_of(model);
        if cal.rotation != rotation {
            let says = |r: &Option<String>| match r {
                Some(r) => format!("rotated ({r})"),
                None => "unrotated".to_string(),
            };
            bail!(
                "{}: measured on the {} model, this conversion quantizes it {}: calibrate and convert both with --rotate, or both without",
                cal.file,
                says(&cal.rotation),
                says(&rotation)
            );
        }
        for (name, w, _) in &plan {
            if let Some(s) = cal.tensors.get(*name) {
                if s.mean_sq.len() != w.cols {
                    bail!(
                        "{}: tensor '{name}' has {} channels, the model {} (calibrated on {})",
                        cal.file,
                        s.mean_sq.len(),
                        w.cols,
                        cal.source
                    );
                }
            }
        }
    }
    let tokenizer = model.tokenizer()?.to_parts()?;
    let mut meta = BTreeMap::new();
    meta.insert("source".to_string(), src.clone());
    meta.insert(
        "converter".to_string(),
        format!("vspec {}", env!("CARGO_PKG_VERSION")),
    );
    meta.insert("recipe".to_string(), recipe.to_text());
    if let Some(r) = super::rotate::rotation_of(model) {
        meta.insert("rotation".to_string(), r);
    }
    if let Some(c) = imatrix {
        meta.insert(
            "imatrix".to_string(),
            format!("{} tokens of {}", c.tokens, c.text),
        );
    }
    let mut writer = VspecWriter::create(out, &model.config, &tokenizer, &meta)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut report = ConvertReport::default();
    let mut seen = HashSet::new();
    // Each matrix's factor is computed when first needed and dropped after its last user.
    let hessian_of = |name: &str| -> Option<usize> {
        imatrix
            .and_then(|c| c.tensors.get(name))
            .and_then(|s| s.hessian)
    };
    let last_use: BTreeMap<usize, usize> = plan
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _, _))| hessian_of(name).map(|h| (h, i)))
        .collect();
    let mut factors: BTreeMap<usize, InverseFactor> = BTreeMap::new();
    let mut moments: BTreeMap<(usize, usize), BlockMoments> = BTreeMap::new();
    let t0 = std::time::Instant::now();
    for (i, (name, w, target)) in plan.iter().enumerate() {
        if !seen.insert(*name) {
            continue;
        }
        let importance = imatrix
            .and_then(|c| c.tensors.get(*name))
            .map(|s| s.mean_sq.as_slice());
        // Compensation only where a packed format is fitted anew (not for copies, the lossless
        // Q4_0 -> Q4_1 transcode, or floats), and only for rows of whole blocks.
        let refitted = w.rows > 1
            && w.format != *target
            && !(w.format == Format::Q4_0 && *target == Format::Q4_1)
            && target.block_elems() > 1
            && w.cols.is_multiple_of(target.block_elems());
        let stats_matrix = hessian_of(name)
            .filter(|_| refitted)
            .and_then(|h| imatrix.map(|cal| (cal, h)));
        let moments_key = stats_matrix.map(|(_, h)| (h, target.block_elems()));
        if let Some((cal, h)) = stats_matrix {
            let need_factor = !factors.contains_key(&h);
            let need_moments = moments_key.is_some_and(|k| !moments.contains_key(&k));
            if need_factor || need_moments {
                let full = cal
                    .hessians
                    .get(h)
                    .ok_or_else(|| anyhow!("{}: '{name}' names a missing matrix {h}", cal.file))?
                    .full();
                let context = |e| anyhow!("{}: input matrix of '{name}': {e}", cal.file);
                if need_factor {
                    let damping = damping_for(cal.tokens);
                    let f = gptq::inverse_factor(&full, w.cols, damping).map_err(context)?;
                    factors.insert(h, f);
                }
                if let Some(k) = moments_key.filter(|_| need_moments) {
                    let m = BlockMoments::new(&full, w.cols, k.1).map_err(context)?;
                    moments.insert(k, m);
                }
            }
        }
        let factor = stats_matrix
            .and_then(|(_, h)| factors.get(&h))
            .map(|f| (f, moments_key.and_then(|k| moments.get(&k))));
        let (bytes, lossless) = convert_tensor(w, *target, importance, factor, &pool)
            .map_err(|e| anyhow!("tensor '{name}': {e:#}"))?;
        factors.retain(|h, _| last_use.get(h).is_some_and(|&l| l > i));
        moments.retain(|(h, _), _| last_use.get(h).is_some_and(|&l| l > i));
        let dims: Vec<u64> = if w.rows == 1 {
            vec![w.cols as u64]
        } else {
            vec![w.cols as u64, w.rows as u64]
        };
        writer.add_tensor(name, *target, &dims, &bytes)?;
        report.params += (w.rows * w.cols) as u64;
        report.tensor_bytes += bytes.len() as u64;
        *report.formats.entry(target.name().to_string()).or_default() += 1;
        report.lossless += lossless as usize;
        if progress {
            eprint!(
                "\rconverting: {}/{} tensors ({:.0} s)   ",
                i + 1,
                plan.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!();
    }
    writer.finish()?;
    Ok(report)
}
