//! inspect and ir.

use super::{model_path, InspectArgs, IrArgs, ModelArgs};
use crate::model::ModelFile;
use anyhow::{anyhow, Result};
use vspec_core::gguf::MetaValue;
use vspec_core::graph::{Limits, Role};
use vspec_core::plan::Plan;

/// `writeln!` into a `String` (which cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Writes a command's report to stdout; a reader that went away (`| head`) is not an error.
pub(super) fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn plan_limits(m: &ModelArgs, model: &ModelFile, all_logits: bool) -> Limits {
    let ctx = if m.ctx_size == 0 {
        model.config.train_ctx.clamp(1, 4096)
    } else {
        m.ctx_size
    };
    Limits {
        max_ctx: ctx,
        max_tokens: m.batch_size.clamp(1, ctx),
        all_logits,
    }
}

fn show_value(v: &MetaValue, full: bool) -> String {
    match v {
        MetaValue::Str(s) => format!("{s:?}"),
        MetaValue::Array(a) if !full && a.len() > 8 => {
            let head: Vec<String> = a.iter().take(4).map(|x| show_value(x, full)).collect();
            format!("[{}, ... ({} items)]", head.join(", "), a.len())
        }
        MetaValue::Array(a) => {
            format!(
                "[{}]",
                a.iter()
                    .map(|x| show_value(x, full))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        MetaValue::Bool(b) => b.to_string(),
        other => match (other.as_int(), other.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => f.to_string(),
            _ => format!("{other:?}"),
        },
    }
}

pub(super) fn inspect(a: &InspectArgs) -> Result<()> {
    let mut out = String::new();
    let path = model_path(&a.model)?;
    let model = ModelFile::open(&path)?;
    outln!(out, "file: {}", path.display());
    if let Some(g) = model.gguf() {
        outln!(
            out,
            "GGUF v{}, alignment {}, {} metadata keys, {} tensors",
            g.version,
            g.alignment,
            g.metadata.len(),
            g.tensors.len()
        );
        outln!(out, "\nmetadata:");
        for (k, v) in &g.metadata {
            outln!(out, "  {k} = {}", show_value(v, a.full));
        }
    }
    if let Some(v) = model.vspec() {
        outln!(out,
            "vspec v{}, {} tensors, header {} bytes, data {} bytes at offset {}, checksum {:#018x} (verified)",
            v.version,
            v.tensors.len(),
            v.header_len,
            v.data_len,
            v.data_offset,
            v.checksum
        );
        outln!(out, "\nmetadata:");
        for (k, val) in &v.metadata {
            let shown = val.trim_end().replace('\n', "; ");
            outln!(out, "  {k} = {shown}");
        }
    }
    outln!(out, "\nconfig: {}", model.config.summary());
    let lim = plan_limits(&a.model, &model, false);
    let (graph, weights) = model.bind(lim)?;
    outln!(out, "\ntensors used by the graph:");
    outln!(
        out,
        "  {:<32} {:>8} {:>14} {:>12} {:>6}",
        "name",
        "format",
        "shape",
        "bytes",
        "bpw"
    );
    let (mut bytes, mut params) = (0usize, 0usize);
    for (id, t) in graph.tensors.iter().enumerate() {
        if t.role != Role::Weight {
            continue;
        }
        let w = weights[id].ok_or_else(|| anyhow!("tensor '{}' is not bound", t.name))?;
        let n = w.rows * w.cols;
        bytes += w.data.len();
        params += n;
        outln!(
            out,
            "  {:<32} {:>8} {:>14} {:>12} {:>6.3}",
            t.name,
            w.format.name(),
            format!("{}x{}", w.rows, w.cols),
            w.data.len(),
            w.data.len() as f64 * 8.0 / n as f64
        );
    }
    outln!(
        out,
        "\n{params} weights in {bytes} bytes: {:.3} bits per weight",
        bytes as f64 * 8.0 / params.max(1) as f64
    );
    let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
    outln!(
        out,
        "memory plan (ctx {}, {} tokens per step): {}",
        lim.max_ctx,
        lim.max_tokens,
        plan.summary()
    );
    emit(&out)
}

pub(super) fn ir(a: &IrArgs) -> Result<()> {
    let mut out = String::new();
    let path = model_path(&a.model)?;
    let model = ModelFile::open(&path)?;
    let lim = plan_limits(&a.model, &model, a.all_logits);
    let (graph, _) = model.bind(lim)?;
    if a.plan {
        let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
        let v = serde_json::json!({ "graph": graph, "plan": plan });
        outln!(out, "{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(out, "{}", serde_json::to_string_pretty(&graph)?);
    }
    emit(&out)
}
