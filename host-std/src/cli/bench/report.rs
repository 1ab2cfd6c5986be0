//! The markdown tables and the JSON `vspec bench` prints.

use super::*;

pub(super) fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
}

pub(super) fn params_text(params: u64) -> String {
    if params >= 1_000_000_000 {
        format!("{:.2} B", params as f64 / 1e9)
    } else if params >= 1_000_000 {
        format!("{:.2} M", params as f64 / 1e6)
    } else {
        format!("{:.2} K", params as f64 / 1e3)
    }
}

/// Appends a markdown table with padded columns to `out`; `right[i]` right-aligns column i.
pub(super) fn push_table(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .zip(right)
            .map(|((c, &w), &r)| {
                if r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(
        width
            .iter()
            .zip(right)
            .map(|(&w, &r)| {
                if r {
                    format!("{}:", "-".repeat(w.saturating_sub(1).max(1)))
                } else {
                    "-".repeat(w.max(1))
                }
            })
            .collect(),
    );
    for r in rows {
        line(r.clone());
    }
}

/// The results table in llama-bench's shape, then the decode roofline table.
pub(super) fn tables(
    infos: &[ModelInfo],
    results: &[Measurement],
    bandwidth: &[(usize, f64)],
    backend: &str,
    bw_mib: usize,
) -> String {
    let mut out = String::new();
    if !bandwidth.is_empty() {
        let parts: Vec<String> = bandwidth
            .iter()
            .map(|&(t, b)| format!("{}: {:.2} GB/s", threads_text(t), b / 1e9))
            .collect();
        let _ = writeln!(
            out,
            "memory read bandwidth ({bw_mib} MiB buffer, best of {BANDWIDTH_PASSES}): {}\n",
            parts.join(", ")
        );
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let info = &infos[m.model];
            let (mean, sd) = mean_sd(&m.samples_tok_s());
            vec![
                info.label.clone(),
                mib(info.weight_bytes as f64),
                params_text(info.params),
                backend.to_string(),
                m.threads.to_string(),
                m.test.name(),
                format!("{mean:.2} ± {sd:.2}"),
            ]
        })
        .collect();
    push_table(
        &mut out,
        &[
            "model", "size", "params", "backend", "threads", "test", "t/s",
        ],
        &[false, true, true, false, true, true, true],
        &rows,
    );
    let roof_rows: Vec<Vec<String>> = results
        .iter()
        .filter_map(|m| {
            let bytes = m.decode_bytes_per_token?;
            let bw = bandwidth_for(bandwidth, m.threads)?;
            let roof = roofline_tok_s(bytes, bw);
            let (mean, _) = mean_sd(&m.samples_tok_s());
            Some(vec![
                infos[m.model].label.clone(),
                m.threads.to_string(),
                m.test.name(),
                mib(bytes),
                format!("{:.2} GB/s", bw / 1e9),
                format!("{roof:.2}"),
                format!("{mean:.2}"),
                format!("{:.1} %", 100.0 * mean / roof.max(1e-12)),
            ])
        })
        .collect();
    if !roof_rows.is_empty() {
        let _ = writeln!(
            out,
            "\ndecode roofline: bytes read per token (weights + KV cache at the mean context) / \
             read bandwidth\n"
        );
        push_table(
            &mut out,
            &[
                "model",
                "threads",
                "test",
                "bytes/token",
                "bandwidth",
                "max t/s",
                "t/s",
                "% of max",
            ],
            &[false, true, true, true, true, true, true, true],
            &roof_rows,
        );
    }
    out
}

pub(super) fn to_json(
    infos: &[ModelInfo],
    results: &[Measurement],
    bandwidth: &[(usize, f64)],
    backend: &str,
    batch_size: usize,
    kv: vspec_core::kv::KvType,
) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = results
        .iter()
        .map(|m| {
            let info = &infos[m.model];
            let samples_ts = m.samples_tok_s();
            let (mean, sd) = mean_sd(&samples_ts);
            let (n_prompt, n_gen) = match m.test.kind {
                TestKind::Prompt => (m.test.n, 0),
                TestKind::Gen => (0, m.test.n),
            };
            let bw = bandwidth_for(bandwidth, m.threads);
            let roof = match (m.decode_bytes_per_token, bw) {
                (Some(bytes), Some(bw)) => Some(roofline_tok_s(bytes, bw)),
                _ => None,
            };
            serde_json::json!({
                "model_filename": path_text(&info.path),
                "model_type": info.arch,
                "model_size": info.weight_bytes,
                "model_n_params": info.params,
                "backends": backend,
                "n_threads": m.threads,
                "n_batch": batch_size,
                "type_k": kv.to_string(),
                "type_v": kv.to_string(),
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "n_depth": m.test.depth,
                "test": m.test.name(),
                "avg_ts": mean,
                "stddev_ts": sd,
                "samples_ns": m.samples_ns,
                "samples_ts": samples_ts,
                "read_bandwidth_bytes_per_s": bw,
                "decode_bytes_per_token": m.decode_bytes_per_token,
                "roofline_ts": roof,
                "roofline_pct": roof.map(|r| 100.0 * mean / r.max(1e-12)),
            })
        })
        .collect();
    serde_json::Value::Array(entries)
}

pub(super) fn path_text(p: &Path) -> String {
    p.display().to_string()
}
