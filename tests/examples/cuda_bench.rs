//! Decode and prefill speed of the CUDA backend on a model (default: SmolLM2 from the cache),
//! with the weight bytes streamed per decode token and the device's measured copy bandwidth.
//! Run by `cuda-shell/check.sh`: `cargo run --release -p vspec-tests --example cuda_bench [MODEL]`,
//! or with `--kernels` for every format's GEMV speed alone.
//!
//! Method: one prefill of `PREFILL` tokens to warm up (kernels loaded, graph captured on the
//! first decode), then the median of `REPS` timed prefills (fresh context each) and of `REPS`
//! runs of `DECODE` greedy-free decode steps (fixed token ids) after a `PREFILL`-token prompt.

use std::time::Instant;
use vspec_core::exec::Executor;
use vspec_core::graph::Limits;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
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
/// times the L2), against the copy bandwidth.
fn kernels() -> anyhow::Result<()> {
    let err = |e: vspec_core::Error| anyhow::anyhow!("{e}");
    let probe = Probe::new(Device::open(0).map_err(err)?).map_err(err)?;
    let bw = probe.copy_bandwidth(1 << 30, 20).map_err(err)?;
    println!("device copy bandwidth (read + write, 1 GiB dtod): {bw:.0} GB/s");
    println!("| format | GEMV GB/s | of copy bw | µs per 256 MiB call |");
    println!("|---|--:|--:|--:|");
    let cols = 4096;
    for format in vspec_cuda::kernels::device_formats() {
        let row = vspec_tests::encode::encode(format, &vspec_tests::encode::values(cols, 3));
        let rows = (256usize << 20) / row.len();
        let (gbs, us) = probe
            .gemv_speed(format, &row, cols, rows, 20)
            .map_err(err)?;
        println!(
            "| {} | {gbs:.0} | {:.0} % | {us:.0} |",
            format.name(),
            100.0 * gbs / bw
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--kernels") {
        return kernels();
    }
    let path = std::env::args_os()
        .nth(1)
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
    sess.forward(&[1]).map_err(err)?;
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
    let wbytes = plan.weight_bytes as f64;
    println!("device: {name}");
    println!(
        "model: {} ({:.1} MiB of weights)",
        path.display(),
        wbytes / (1u64 << 20) as f64
    );
    println!("prefill {PREFILL} tokens: {pre:.0} tok/s (median of {REPS})");
    println!(
        "decode {DECODE} tokens after {PREFILL}: {dec:.1} tok/s, weights streamed {:.1} GB/s",
        dec * wbytes / 1e9
    );
    println!("device copy bandwidth (read + write, 1 GiB dtod): {bw:.0} GB/s");
    Ok(())
}
