//! Decode and prefill speed of the CUDA backend on a model (default: SmolLM2 from the cache),
//! with the weight bytes streamed per decode token and the device's measured copy bandwidth.
//! Run by `cuda-shell/check.sh`: `cargo run --release -p vspec-tests --example cuda_bench [MODEL]`,
//! or with `--kernels` for every format's GEMV speed alone, or `--profile MODEL` for a profiler.
//!
//! Method: one prefill of `PREFILL` tokens to warm up (kernels loaded, graph captured on the
//! first decode), then the median of `REPS` timed prefills (fresh context each) and of `REPS`
//! runs of `DECODE` greedy-free decode steps (fixed token ids) after a `PREFILL`-token prompt.

use std::time::Instant;
use vspec_core::exec::Executor;
use vspec_core::format::Format;
use vspec_core::graph::Limits;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_cuda::launch::GemvActivations;
use vspec_cuda::probe::GemvVariant;
use vspec_cuda::{CudaSession, Device, Probe};
use vspec_host::ModelFile;

const PREFILL: usize = 512;
const DECODE: usize = 128;
const REPS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--kernels`: every format's GEMV alone, on a 4096-wide matrix of about 256 MiB (several
/// times the L2), against the copy bandwidth, with one, two and four warps per row, on f32 and
/// (where the format has one) on 8-bit activations; then the GEMVs of one Qwen3-8B layer (µs
/// per call, what a decode step pays) in four formats.
fn kernels() -> anyhow::Result<()> {
    let err = |e: vspec_core::Error| anyhow::anyhow!("{e}");
    let probe = Probe::new(Device::open(0).map_err(err)?).map_err(err)?;
    let bw = probe.copy_bandwidth(1 << 30, 20).map_err(err)?;
    println!("device copy bandwidth (read + write, 1 GiB dtod): {bw:.0} GB/s");
    println!("| format | f32 activations: GB/s, 1 / 2 / 4 warps per row | 8-bit activations | best, of copy bw |");
    println!("|---|--:|--:|--:|");
    let cols = 4096;
    for format in vspec_cuda::kernels::device_formats() {
        let row = vspec_tests::encode::encode(format, &vspec_tests::encode::values(cols, 3));
        let rows = (256usize << 20) / row.len();
        let mut best = 0f64;
        let mut cells = Vec::new();
        for int8 in [false, true] {
            if int8 && !vspec_cuda::kernels::has_int8_gemv(format) {
                cells.push("-".to_string());
                continue;
            }
            let mut v = Vec::new();
            for split in [1, 2, 4] {
                let (gbs, _) = probe
                    .gemv_speed(format, &row, cols, rows, GemvVariant { split, int8 }, 20)
                    .map_err(err)?;
                best = best.max(gbs);
                v.push(format!("{gbs:.0}"));
            }
            cells.push(v.join(" / "));
        }
        println!(
            "| {} | {} | {} | {:.0} % |",
            format.name(),
            cells[0],
            cells[1],
            100.0 * best / bw
        );
    }
    println!(
        "Qwen3-8B layer GEMVs, µs per call with 1 / 2 / 4 warps per row (f32 | 8-bit activations):"
    );
    for format in [Format::VQ4, Format::Q4_0, Format::Q4_K, Format::Q5_1] {
        for (name, rows, cols) in [
            ("q/o 4096x4096", 4096, 4096),
            ("k/v 1024x4096", 1024, 4096),
            ("gate/up 12288x4096", 12288, 4096),
            ("down 4096x12288", 4096, 12288),
        ] {
            let row = vspec_tests::encode::encode(format, &vspec_tests::encode::values(cols, 5));
            let mut line = format!("{} {name}:", format.name());
            for int8 in [false, true] {
                if int8 && !vspec_cuda::kernels::has_int8_gemv(format) {
                    continue;
                }
                line += if int8 { " |" } else { "" };
                for split in [1, 2, 4] {
                    let (_, us) = probe
                        .gemv_speed(format, &row, cols, rows, GemvVariant { split, int8 }, 200)
                        .map_err(err)?;
                    line += &format!(" {us:.1}");
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--kernels") {
        return kernels();
    }
    // `--profile MODEL`: one prefill, then two decode steps launched op by op (no graph), for a
    // profiler to attribute every kernel of a decode step (check.sh's ncu step).
    let profile = std::env::args().nth(1).as_deref() == Some("--profile");
    let path = std::env::args_os()
        .nth(if profile { 2 } else { 1 })
        .map(std::path::PathBuf::from)
        .unwrap_or_else(vspec_host::fetch::default_model_path);
    let model = ModelFile::open(&path)?;
    let err = |e: vspec_core::Error| anyhow::anyhow!("{e}");
    let probe = Probe::new(Device::open(0).map_err(err)?).map_err(err)?;
    let name = probe.device().name().map_err(err)?;
    let bw = probe.copy_bandwidth(1 << 30, 20).map_err(err)?;
    drop(probe);
    let lim = Limits {
        max_ctx: PREFILL + DECODE,
        max_tokens: PREFILL,
        all_logits: false,
    };
    let (graph, weights) = model.bind_kv(lim, KvType::F16)?;
    let plan = Plan::new(&graph).map_err(err)?;
    let mut sess =
        CudaSession::new(Device::open(0).map_err(err)?, &graph, &plan, &weights).map_err(err)?;
    let vocab = model.config.vocab as u32;
    let prompt: Vec<u32> = (0..PREFILL as u32)
        .map(|i| (i * 7919 + 1) % vocab)
        .collect();
    sess.forward(&prompt).map_err(err)?;
    if profile {
        sess.set_cuda_graph(false);
        sess.forward(&[1]).map_err(err)?;
        sess.forward(&[2]).map_err(err)?;
        return Ok(());
    }
    sess.forward(&[1]).map_err(err)?;
    let wbytes = plan.weight_bytes as f64;
    println!("device: {name}");
    println!(
        "model: {} ({:.1} MiB of weights)",
        path.display(),
        wbytes / (1u64 << 20) as f64
    );
    // Decode with the one-token matmuls on f32 activations, then on 8-bit ones, then as the
    // session chooses by default, in one sitting.
    for (acts, label) in [
        (GemvActivations::F32, "f32 activations"),
        (GemvActivations::Int8, "8-bit activations"),
        (GemvActivations::Auto, "default activations"),
    ] {
        sess.set_gemv_activations(acts);
        let mut pre = Vec::new();
        let mut dec = Vec::new();
        for _ in 0..REPS {
            Executor::reset(&mut sess);
            let t = Instant::now();
            sess.forward(&prompt).map_err(err)?;
            pre.push(PREFILL as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            for i in 0..DECODE {
                sess.forward(&[(i as u32 * 31 + 5) % vocab]).map_err(err)?;
            }
            dec.push(DECODE as f64 / t.elapsed().as_secs_f64());
        }
        let (pre, dec) = (median(pre), median(dec));
        if acts == GemvActivations::F32 {
            println!("prefill {PREFILL} tokens: {pre:.0} tok/s (median of {REPS})");
        }
        println!(
            "decode {DECODE} tokens after {PREFILL}, {label}: {dec:.1} tok/s, \
             weights streamed {:.1} GB/s",
            dec * wbytes / 1e9
        );
    }
    println!("device copy bandwidth (read + write, 1 GiB dtod): {bw:.0} GB/s");
    Ok(())
}
