//! `vspec convert --budget BYTES [--ctx N --kv T]`: a format per matrix chosen so that the model
//! fits the budget with the least summed sensitivity (`sensitivity.rs`, `knapsack.rs`).
//!
//! What the budget covers is what `vspec plan --budget` counts: with `--ctx`, the plan's total at
//! that context (weights + arena + KV cache + the runtime's fixed overhead,
//! [`crate::memory::FIXED_OVERHEAD_BYTES`]); without it, the weights alone (the plan's weight
//! bytes: every tensor the graph reads, norms included, not the file's header). The arena, KV
//! cache and overhead do not depend on the weight formats, so they are subtracted once.

use super::calibrate::Calibration;
use super::knapsack::{self, Allocation, Candidate};
use super::recipe::{Recipe, Rule};
use super::sensitivity::{self, CANDIDATES};
use crate::memory::{plan_model, PlanRequest};
use crate::model::ModelFile;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use vspec_core::format::Format;
use vspec_core::graph::Role;
use vspec_core::model::WeightView;

/// The budget and what it must hold besides the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes.
    pub bytes: u64,
    /// The context, batch and KV type whose arena, KV cache and fixed overhead the budget also
    /// holds; `None`: the budget is for the weights alone.
    pub runtime: Option<PlanRequest>,
}

/// The model's weights split into what the budget chooses and what it cannot.
pub struct Layout<'m> {
    /// Matrices with a choice: name, view, candidate formats (rows of whole blocks only).
    pub matrices: Vec<(String, WeightView<'m>, Vec<Format>)>,
    /// Bytes of the weights without a choice: vectors stay F32, a rotated model's
    /// `output_mix.weight` Q8_0 (as in every recipe).
    pub fixed_bytes: u64,
    /// Arena + KV cache + fixed overhead the budget must also hold (0 without `--ctx`).
    pub runtime_bytes: u64,
    /// Weights (elements) in all.
    pub params: u64,
}

/// Which matrices have a choice, and the bytes besides them.
pub fn layout<'m>(model: &'m ModelFile, budget: &Budget) -> Result<Layout<'m>> {
    let src = model.path.display().to_string();
    let (graph, views) = model.bind_weights()?;
    let mut out = Layout {
        matrices: Vec::new(),
        fixed_bytes: 0,
        runtime_bytes: 0,
        params: 0,
    };
    for (id, t) in graph.tensors.iter().enumerate() {
        if t.role != Role::Weight {
            continue;
        }
        let w = views[id].ok_or_else(|| anyhow!("{src}: tensor '{}' is not bound", t.name))?;
        out.params += (w.rows * w.cols) as u64;
        let fixed = match (w.rows, t.name.as_str()) {
            (1, _) => Some(Format::F32),
            (_, "output_mix.weight") => Some(Format::Q8_0),
            _ => None,
        };
        if let Some(f) = fixed {
            out.fixed_bytes += f.tensor_bytes(w.cols, w.rows, &t.name)? as u64;
            continue;
        }
        let formats: Vec<Format> = CANDIDATES
            .into_iter()
            .filter(|f| w.cols.is_multiple_of(f.block_elems()))
            .collect();
        if formats.is_empty() {
            bail!(
                "{src}: tensor '{}': rows of {} weights fit none of the budget's formats",
                t.name,
                w.cols
            );
        }
        out.matrices.push((t.name.clone(), w, formats));
    }
    if let Some(req) = &budget.runtime {
        let p = plan_model(model, req)?;
        out.runtime_bytes = (p.total_bytes - p.plan.weight_bytes) as u64;
    }
    Ok(out)
}

/// `12.34 MB (12340000 bytes)`.
fn mb(bytes: u64) -> String {
    format!("{:.2} MB ({bytes} bytes)", bytes as f64 / 1e6)
}

impl Layout<'_> {
    /// The bytes of every matrix's candidates (losses not yet measured).
    fn sizes(&self) -> Result<Vec<Vec<Candidate>>> {
        self.matrices
            .iter()
            .map(|(name, w, fs)| {
                fs.iter()
                    .map(|&f| {
                        Ok(Candidate {
                            format: f,
                            bytes: f.tensor_bytes(w.cols, w.rows, name)? as u64,
                            loss: 0.0,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The smallest budget any choice fits: every matrix in its cheapest format.
    pub fn smallest_budget(&self) -> Result<u64> {
        Ok(knapsack::smallest(&self.sizes()?) + self.fixed_bytes + self.runtime_bytes)
    }

    /// Errors, saying the smallest budget that works, when `budget` cannot be met (cheap: sizes
    /// only, so it runs before any calibration).
    pub fn check(&self, budget: &Budget) -> Result<()> {
        let least = self.smallest_budget()?;
        if budget.bytes < least {
            let besides = match &budget.runtime {
                Some(r) => format!(
                    " + arena, {} KV cache at ctx {} and the runtime's fixed overhead {}",
                    r.kv_type.name(),
                    r.ctx,
                    mb(self.runtime_bytes)
                ),
                None => " (the weights alone; --ctx counts the runtime memory too)".to_string(),
            };
            bail!(
                "a budget of {} cannot be met: the smallest that works is {}: every matrix in its cheapest format, {} of weights{besides}",
                mb(budget.bytes),
                mb(least),
                mb(least - self.runtime_bytes),
            );
        }
        Ok(())
    }
}

/// What the budget chose.
pub struct Choice {
    /// Per matrix: name and format.
    pub formats: Vec<(String, Format)>,
    /// The allocation (bytes and summed loss of the matrices with a choice).
    pub alloc: Allocation,
    /// The budget.
    pub budget: Budget,
    /// Bytes of the weights without a choice.
    pub fixed_bytes: u64,
    /// Arena + KV + overhead counted against the budget.
    pub runtime_bytes: u64,
    /// Weights in all.
    pub params: u64,
}

/// Measures every matrix's sensitivity in each candidate format (matrices one after another,
/// rows in parallel on `pool`) and allocates the budget.
pub fn choose(
    layout: &Layout<'_>,
    budget: Budget,
    cal: Option<&Calibration>,
    pool: &rayon::ThreadPool,
    progress: bool,
) -> Result<Choice> {
    layout.check(&budget)?;
    let t0 = std::time::Instant::now();
    let mut options = Vec::with_capacity(layout.matrices.len());
    for (i, (name, w, fs)) in layout.matrices.iter().enumerate() {
        options.push(pool.install(|| sensitivity::measure(name, w, fs, cal))?);
        if progress {
            eprint!(
                "\rmeasuring sensitivity: {}/{} matrices ({:.0} s)   ",
                i + 1,
                layout.matrices.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if progress {
        eprintln!();
    }
    let room = budget.bytes - layout.fixed_bytes - layout.runtime_bytes;
    let alloc = knapsack::allocate(&options, room)?;
    let formats = layout
        .matrices
        .iter()
        .zip(&alloc.picks)
        .zip(&options)
        .map(|(((name, _, _), &p), o)| (name.clone(), o[p].format))
        .collect();
    Ok(Choice {
        formats,
        alloc,
        budget,
        fixed_bytes: layout.fixed_bytes,
        runtime_bytes: layout.runtime_bytes,
        params: layout.params,
    })
}

impl Choice {
    /// The choice as a recipe: one rule per matrix (exact names), Q8_0 as the unused default.
    pub fn recipe(&self) -> Recipe {
        let source = format!("--budget {}", self.budget.bytes);
        Recipe {
            default: Format::Q8_0,
            rules: self
                .formats
                .iter()
                .enumerate()
                .map(|(i, (name, f))| Rule {
                    pattern: name.clone(),
                    format: *f,
                    line: i + 1,
                })
                .collect(),
            source,
            fallback: None,
        }
    }

    /// Weight bytes of the chosen mix (the plan's "weights").
    pub fn weight_bytes(&self) -> u64 {
        self.alloc.bytes + self.fixed_bytes
    }

    /// The mix: per format, matrices, weights, MB and bits per weight; then the totals and the
    /// summed sensitivity.
    pub fn render(&self, layout: &Layout<'_>) -> String {
        let mut per: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
        for ((_, w, _), (_, f)) in layout.matrices.iter().zip(&self.formats) {
            let e = per.entry(f.name()).or_default();
            e.0 += 1;
            e.1 += (w.rows * w.cols) as u64;
            e.2 += f.tensor_bytes(w.cols, w.rows, "").unwrap_or(0) as u64;
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  {:<8} {:>8} {:>12} {:>10} {:>6}",
            "format", "matrices", "weights", "MB", "bpw"
        );
        let row = |s: &mut String, what: &str, n: String, params: u64, bytes: u64| {
            let _ = writeln!(
                s,
                "  {what:<8} {n:>8} {params:>12} {:>10.2} {:>6.3}",
                bytes as f64 / 1e6,
                bytes as f64 * 8.0 / params.max(1) as f64
            );
        };
        let mut order: Vec<_> = per.into_iter().collect();
        order.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.0.cmp(b.0)));
        for (f, (n, params, bytes)) in order {
            row(&mut s, f, n.to_string(), params, bytes);
        }
        let fixed_params = self.params
            - layout
                .matrices
                .iter()
                .map(|(_, w, _)| (w.rows * w.cols) as u64)
                .sum::<u64>();
        row(&mut s, "fixed", "-".into(), fixed_params, self.fixed_bytes);
        row(
            &mut s,
            "weights",
            self.formats.len().to_string(),
            self.params,
            self.weight_bytes(),
        );
        let _ = writeln!(
            s,
            "  summed sensitivity {:.4} (an estimate of the KLD, from the search quantizer's error)",
            self.alloc.loss
        );
        let used = self.weight_bytes() + self.runtime_bytes;
        let _ = writeln!(
            s,
            "  budget {}: weights {}{}, {} to spare",
            mb(self.budget.bytes),
            mb(self.weight_bytes()),
            if self.runtime_bytes > 0 {
                format!(" + runtime {}", mb(self.runtime_bytes))
            } else {
                String::new()
            },
            mb(self.budget.bytes - used)
        );
        s
    }
}
