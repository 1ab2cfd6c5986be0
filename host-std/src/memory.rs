//! What a model needs in memory, from its headers alone: the core's plan (weights, arena, KV
//! cache, per layer) plus the shell's fixed overhead, and whether that fits a byte budget.
//! `vspec plan` prints it; the C API can call [`plan_file`].

use crate::expand::Expansion;
use crate::model::ModelFile;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::path::Path;
use vspec_core::graph::Limits;
use vspec_core::kv::KvType;
use vspec_core::model::ModelConfig;
use vspec_core::plan::{Plan, PlanReport};

/// What the process needs besides the plan's buffers: the code, the tokenizer and its tables, the
/// parsed headers, the chat template engine, thread stacks and the allocator's own pages.
/// Measured as peak RSS (VmHWM) minus the planned bytes for `vspec generate` on SmolLM2-135M at
/// ctx 2048, 2 threads (`bench/plan_vs_rss.sh`: 29.9–30.2 MiB for f32, f16 and q8_0 KV with the
/// GGUF file; 28.8–29.0 with a `.vspec` file of it, 40 before the heap its tokenizer.json parse
/// frees was returned), rounded up; a larger vocabulary or chat template adds to it.
pub const FIXED_OVERHEAD_BYTES: usize = 31 << 20;

/// The context used when none is asked for: the training context, at most this.
pub const DEFAULT_CTX_CAP: usize = 4096;

/// What to plan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    /// Positions the KV cache holds; 0 = the model's training context, at most
    /// [`DEFAULT_CTX_CAP`].
    pub ctx: usize,
    /// Tokens per forward step (capped at the context).
    pub batch: usize,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Logits for every token of a step (perplexity) instead of the last one only.
    pub all_logits: bool,
    /// Whether weights count as this CPU's sessions would hold them rewritten
    /// (`crate::expand`); `None` reads `VSPEC_EXPAND`, as sessions do.
    pub expansion: Option<Expansion>,
}

impl Default for PlanRequest {
    fn default() -> Self {
        PlanRequest {
            ctx: 0,
            batch: 512,
            kv_type: KvType::default(),
            all_logits: false,
            expansion: None,
        }
    }
}

impl PlanRequest {
    /// The limits this request plans for, on a model with `config`.
    pub fn limits(&self, config: &ModelConfig) -> Result<Limits> {
        let ctx = if self.ctx == 0 {
            config.train_ctx.clamp(1, DEFAULT_CTX_CAP)
        } else {
            self.ctx
        };
        if self.batch == 0 {
            bail!("the batch (tokens per step) must be positive");
        }
        Ok(Limits {
            max_ctx: ctx,
            max_tokens: self.batch.min(ctx),
            all_logits: self.all_logits,
        })
    }
}

/// The memory a model needs, by category and by layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// The core's plan: weights, arena, KV cache, per layer.
    #[serde(flatten)]
    pub plan: PlanReport,
    /// The weights' bytes as the file stores them: less than `weight_bytes` when this CPU's
    /// sessions hold some rewritten in a faster format (`crate::expand`, `VSPEC_EXPAND`).
    pub file_weight_bytes: usize,
    /// [`FIXED_OVERHEAD_BYTES`].
    pub overhead_bytes: usize,
    /// `planned_bytes + overhead_bytes`: what the process needs.
    pub total_bytes: usize,
}

/// Plans `model` for `req` (no tensor data is read).
pub fn plan_model(model: &ModelFile, req: &PlanRequest) -> Result<MemoryPlan> {
    let limits = req.limits(&model.config)?;
    let (mut graph, views) = model.bind_kv(limits, req.kv_type)?;
    let file_weight_bytes = vspec_core::model::weight_bytes(&views);
    // As the engine will hold them on this CPU (`crate::expand`).
    let policy = match req.expansion {
        Some(policy) => policy,
        None => Expansion::from_env()?,
    };
    model.record_cpu_formats(&mut graph, &crate::detect::kernel_table(), policy);
    let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
    let report = PlanReport::new(&graph, &plan).map_err(|e| anyhow!("planning: {e}"))?;
    Ok(MemoryPlan {
        file_weight_bytes,
        total_bytes: report.planned_bytes + FIXED_OVERHEAD_BYTES,
        overhead_bytes: FIXED_OVERHEAD_BYTES,
        plan: report,
    })
}

/// Opens the model at `path` (headers only) and plans it for `req`.
pub fn plan_file(path: &Path, req: &PlanRequest) -> Result<MemoryPlan> {
    plan_model(&ModelFile::open_headers(path)?, req)
}

/// How a plan compares with a budget, and what would fit when it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetFit {
    /// The budget in bytes.
    pub budget_bytes: u64,
    /// Whether the requested plan's total fits.
    pub fits: bool,
    /// Bytes over the budget (0 when it fits).
    pub over_by_bytes: u64,
    /// The largest context that fits with the requested KV type (None: not even 1 position).
    pub largest_ctx: Option<usize>,
    /// The KV types that fit at the requested context, with their totals.
    pub kv_types_that_fit: Vec<(String, usize)>,
}

/// Compares `req`'s plan with `budget` bytes; when it does not fit, finds the largest context for
/// the same KV type and the KV types that fit at the requested context.
pub fn fit_budget(model: &ModelFile, req: &PlanRequest, budget: u64) -> Result<BudgetFit> {
    let total = plan_model(model, req)?.total_bytes as u64;
    let fits_with = |r: &PlanRequest| -> Result<Option<usize>> {
        let t = plan_model(model, r)?.total_bytes;
        Ok((t as u64 <= budget).then_some(t))
    };
    let asked_ctx = req.limits(&model.config)?.max_ctx;
    let mut kv_types_that_fit = Vec::new();
    for kv_type in KvType::ALL {
        if !model.config.head_dim.is_multiple_of(32) && kv_type == KvType::Q8_0 {
            continue;
        }
        let r = PlanRequest {
            kv_type,
            ctx: asked_ctx,
            ..*req
        };
        if let Some(t) = fits_with(&r)? {
            kv_types_that_fit.push((kv_type.name().to_string(), t));
        }
    }
    // The total grows with the context, so the largest fitting context is a binary search.
    let at = |ctx: usize| PlanRequest { ctx, ..*req };
    let largest_ctx = if fits_with(&at(asked_ctx))?.is_some() {
        Some(asked_ctx)
    } else if fits_with(&at(1))?.is_none() {
        None
    } else {
        let (mut lo, mut hi) = (1usize, asked_ctx);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits_with(&at(mid))?.is_some() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    };
    Ok(BudgetFit {
        budget_bytes: budget,
        fits: total <= budget,
        over_by_bytes: total.saturating_sub(budget),
        largest_ctx,
        kv_types_that_fit,
    })
}

/// Parses a byte count: a number with an optional unit, `B`, `KB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive, spaces allowed: `200MiB`, `1.5 GB`.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let value: f64 = num
        .parse()
        .map_err(|_| anyhow!("'{text}' is not a byte count (e.g. 200MiB, 1.5GB, 64000000)"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => bail!("'{text}': unknown unit '{unit}' (B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        bail!("'{text}' is not a usable byte count");
    }
    Ok(bytes.round() as u64)
}

/// `12.34 MiB`.
pub fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_with_units() {
        assert_eq!(parse_bytes("200MiB").unwrap(), 200 << 20);
        assert_eq!(parse_bytes("64MB").unwrap(), 64_000_000);
        assert_eq!(parse_bytes("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2kb").unwrap(), 2000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("7 KiB").unwrap(), 7168);
        for bad in ["", "MiB", "12 parsecs", "-3MB", "0", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
