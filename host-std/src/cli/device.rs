//! `--device cpu|cuda|cuda:N`: where a command runs, and the device bytes `vspec plan --device
//! cuda` reports (the CUDA backend's own layout, computed without a device).

use crate::memory::{mib, PlanRequest};
use crate::model::ModelFile;
use anyhow::{anyhow, bail, Result};
use std::fmt::Write as _;
use vspec_core::plan::Plan;
use vspec_cuda::DeviceLayout;

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The host CPU (the default).
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// Parses `--device`.
pub fn parse_device(s: &str) -> std::result::Result<DeviceArg, String> {
    Ok(match vspec_cuda::parse_device(s)? {
        None => DeviceArg::Cpu,
        Some(n) => DeviceArg::Cuda(n),
    })
}

impl DeviceArg {
    /// For commands that run on the CPU only so far: `Ok` on the CPU; on CUDA, the device's own
    /// error when it cannot be opened (no driver), else an error saying the command is not
    /// ported, never a silent fall-back to the CPU.
    pub fn require_cpu(self, command: &str) -> Result<()> {
        if let DeviceArg::Cuda(n) = self {
            vspec_cuda::Device::open(n).map_err(|e| anyhow!("{e}"))?;
            bail!(
                "vspec {command} does not run on CUDA yet (generate does, and plan --device cuda \
                 reports device bytes); use --device cpu"
            );
        }
        Ok(())
    }
}

/// The CUDA session's device allocation for `req` (headers only, no device needed).
pub fn device_layout(model: &ModelFile, req: &PlanRequest) -> Result<DeviceLayout> {
    let limits = req.limits(&model.config)?;
    let (graph, _) = model.bind_kv(limits, req.kv_type)?;
    let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
    vspec_cuda::layout::layout(&graph, &plan).map_err(|e| anyhow!("{e}"))
}

/// The device block of `vspec plan --device cuda`.
pub fn render(l: &DeviceLayout, ordinal: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "device cuda:{ordinal} (one allocation):");
    let row = |out: &mut String, what: &str, b: usize, note: &str| {
        let _ = writeln!(out, "  {what:<10} {:>12} {:>14} B  {note}", mib(b), b);
    };
    row(
        &mut out,
        "weights",
        l.weight_bytes,
        "as stored, uploaded once",
    );
    row(&mut out, "arena", l.arena.len(), "the plan's offsets");
    row(&mut out, "KV cache", l.kv.len(), "");
    let other = l.total - l.weight_bytes - l.arena.len() - l.kv.len();
    row(
        &mut out,
        "other",
        other,
        "attention partials, RoPE tables, codebooks, step, alignment",
    );
    row(
        &mut out,
        "total",
        l.total,
        "plus the CUDA context (driver, kernels)",
    );
    out
}

/// The JSON form of [`render`].
pub fn json(l: &DeviceLayout, ordinal: usize) -> serde_json::Value {
    serde_json::json!({
        "device": format!("cuda:{ordinal}"),
        "weight_bytes": l.weight_bytes,
        "arena_bytes": l.arena.len(),
        "kv_bytes": l.kv.len(),
        "attention_scratch_bytes": l.attn.len(),
        "total_bytes": l.total,
    })
}
