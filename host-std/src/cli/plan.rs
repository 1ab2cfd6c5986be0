//! `vspec plan`: the memory a model needs, from its headers alone, and whether it fits a budget.

use super::{emit, KvArgs};
use crate::memory::{fit_budget, mib, parse_bytes, plan_model, BudgetFit, MemoryPlan, PlanRequest};
use crate::model::ModelFile;
use anyhow::{bail, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

/// `vspec plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Model: a .gguf or .vspec file or a Hugging Face directory. Default: SmolLM2-135M-Instruct.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Context in tokens (0 = the model's training context, at most 4096).
    #[arg(
        short = 'c',
        long = "ctx",
        visible_alias = "ctx-size",
        default_value_t = 0
    )]
    pub ctx: usize,
    /// Tokens per forward step.
    #[arg(
        short = 'b',
        long = "batch",
        visible_alias = "batch-size",
        default_value_t = 512
    )]
    pub batch: usize,
    #[command(flatten)]
    /// KV cache type.
    pub kv: KvArgs,
    /// Plan for logits of every token of a step (as perplexity does).
    #[arg(long = "all-logits")]
    pub all_logits: bool,
    /// Fail unless the total fits this many bytes (units B, KB, MB, GB, KiB, MiB, GiB), saying by
    /// how much it misses and what would fit.
    #[arg(long = "budget", value_name = "BYTES")]
    pub budget: Option<String>,
    /// Print JSON (with `total_bytes`, and `budget` when one is given) instead of a table.
    #[arg(long = "json")]
    pub json: bool,
    /// With cuda or cuda:N, also the bytes the CUDA backend allocates on the device.
    #[arg(long = "device", default_value = "cpu", value_parser = super::device::parse_device)]
    pub device: super::DeviceArg,
}

pub(super) fn plan(a: &PlanArgs) -> Result<()> {
    let budget = a.budget.as_deref().map(parse_bytes).transpose()?;
    let path = match &a.model {
        Some(p) => p.clone(),
        None => crate::fetch::default_model(true)?,
    };
    let model = ModelFile::open_headers(&path)?;
    let req = PlanRequest {
        ctx: a.ctx,
        batch: a.batch,
        kv_type: a.kv.kv,
        all_logits: a.all_logits,
        expansion: None,
    };
    let plan = plan_model(&model, &req)?;
    let fit = budget.map(|b| fit_budget(&model, &req, b)).transpose()?;
    let device = match a.device {
        super::DeviceArg::Cuda(n) => Some((n, super::device::device_layout(&model, &req)?)),
        super::DeviceArg::Cpu => None,
    };
    if a.json {
        let mut v = serde_json::to_value(&plan)?;
        v["model"] = path.display().to_string().into();
        if let Some(f) = &fit {
            v["budget"] = serde_json::to_value(f)?;
        }
        if let Some((n, l)) = &device {
            v["device"] = super::device::json(l, *n);
        }
        emit(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        emit(&render(&path.display().to_string(), &plan))?;
        if let Some((n, l)) = &device {
            emit(&super::device::render(l, *n))?;
        }
    }
    match fit {
        Some(f) if !f.fits => bail!("{}", explain_miss(&plan, &f, a.kv.kv.name())),
        Some(f) => {
            if !a.json {
                emit(&format!(
                    "fits the budget of {}: {} to spare\n",
                    mib(f.budget_bytes as usize),
                    mib(f.budget_bytes as usize - plan.total_bytes)
                ))?;
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// The human-readable plan.
pub(super) fn render(path: &str, p: &MemoryPlan) -> String {
    let r = &p.plan;
    let mut out = String::new();
    let _ = writeln!(out, "model: {path}");
    let _ = writeln!(
        out,
        "ctx {} | batch {} | KV cache {}",
        r.ctx, r.batch, r.kv_type
    );
    let row = |out: &mut String, what: &str, b: usize, note: &str| {
        let _ = writeln!(out, "  {what:<10} {:>12} {:>14} B  {note}", mib(b), b);
    };
    let rewritten = (p.file_weight_bytes != r.weight_bytes).then(|| {
        format!(
            "trellis matrices as Q8_0 for this CPU (VSPEC_EXPAND=0: {} in all)",
            mib(p.file_weight_bytes)
        )
    });
    row(
        &mut out,
        "weights",
        r.weight_bytes,
        rewritten.as_deref().unwrap_or(""),
    );
    row(&mut out, "arena", r.arena_bytes, "activations and scratch");
    row(&mut out, "KV cache", r.kv_bytes, r.kv_type);
    row(&mut out, "planned", r.planned_bytes, "");
    row(
        &mut out,
        "overhead",
        p.overhead_bytes,
        "runtime: code, tokenizer, headers, threads (measured, fixed)",
    );
    row(&mut out, "total", p.total_bytes, "");
    let _ = writeln!(out, "per layer:  {:>12} {:>12}", "weights", "KV");
    for l in &r.layers {
        let _ = writeln!(
            out,
            "  {:<10} {:>12} {:>12}",
            l.name,
            mib(l.weight_bytes),
            mib(l.kv_bytes)
        );
    }
    out
}

/// Why a plan misses its budget, and what would fit.
fn explain_miss(p: &MemoryPlan, f: &BudgetFit, kv: &str) -> String {
    let mut msg = format!(
        "needs {} but the budget is {}: over by {} ({} bytes)",
        mib(p.total_bytes),
        mib(f.budget_bytes as usize),
        mib(f.over_by_bytes as usize),
        f.over_by_bytes
    );
    match f.largest_ctx {
        Some(c) => {
            let _ = write!(msg, "; fits with ctx up to {c} ({kv} KV)");
        }
        None => {
            let _ = write!(msg, "; no context fits with {kv} KV");
        }
    }
    if f.kv_types_that_fit.is_empty() {
        let _ = write!(msg, "; no KV type fits at ctx {}", p.plan.ctx);
    } else {
        let list: Vec<String> = f
            .kv_types_that_fit
            .iter()
            .map(|(k, t)| format!("--kv {k} ({})", mib(*t)))
            .collect();
        let _ = write!(msg, "; at ctx {}: {}", p.plan.ctx, list.join(", "));
    }
    msg
}
