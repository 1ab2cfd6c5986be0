//! One matmul kernel of the AVX2 table run a fixed number of times, for `perf stat -e task-clock`
//! on a machine shared with other work, where criterion's wall-clock times swing by 2×: CPU time
//! per weight moves much less with the load. Same matrices as the `matmul` benchmark.
//!
//! `cargo build --release -p vspec-bench --example matmul_cpu_time`, then
//! `perf stat -e task-clock target/release/examples/matmul_cpu_time Q4_K q8 64 50`
//! (format, `f32` or `q8` activations, tokens, iterations); weights per CPU-second are
//! `iterations × tokens × rows × cols / task-clock`, with rows × cols = 884 736.

use vspec_bench::{random_weights, Rng};
use vspec_core::format::Format;
use vspec_core::kernels::{ActKind, CpuFeatures, KernelTable, MatMulKernel, SharedOut};
use vspec_core::model::WeightView;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [format, act, tokens, iters] = args.as_slice() else {
        return Err("usage: matmul_cpu_time FORMAT f32|q8 TOKENS ITERATIONS".into());
    };
    let format = Format::from_name(format).ok_or(format!("unknown format {format}"))?;
    let act = match act.as_str() {
        "f32" => ActKind::F32,
        "q8" => ActKind::Q8,
        other => return Err(format!("activations must be f32 or q8, not {other}")),
    };
    let tokens: usize = tokens.parse().map_err(|e| format!("tokens: {e}"))?;
    let iters: usize = iters.parse().map_err(|e| format!("iterations: {e}"))?;
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return Err("this CPU lacks AVX2/FMA/F16C".into());
    }
    // SAFETY: AVX2, FMA and F16C were just detected on this CPU.
    let table = KernelTable::select(&unsafe { CpuFeatures::assume_detected(true) }).0;
    let kernel = *table
        .matmul_for(format, act)
        .ok_or(format!("no {act:?} kernel for {}", format.name()))?;
    // The benchmark's shapes: super-block formats need rows of whole 256-weight blocks.
    let (rows, cols) = if format.block_elems() == 256 {
        (576, 1536)
    } else {
        (1536, 576)
    };
    let mut rng = Rng::new(7);
    let data = random_weights(format, rows, cols, &mut rng);
    let w = WeightView {
        format,
        rows,
        cols,
        row_bytes: format.row_bytes(cols, "w").map_err(|e| e.to_string())?,
        data: &data,
    };
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
    let mut xq = vec![BlockQ8Act::ZERO; tokens * cols / QK8];
    (table.quantize_q8.f)(&x, &mut xq);
    let mut out = vec![0f32; tokens * rows];
    let mut checksum = 0f32;
    for _ in 0..iters {
        let shared = SharedOut::new(&mut out);
        // SAFETY: one call on this thread owns every row.
        unsafe {
            match kernel.kernel {
                MatMulKernel::F32(f) => f(&w, &x, tokens, 0..rows, &shared),
                MatMulKernel::Q8(f) => f(&w, &xq, tokens, 0..rows, &shared),
            }
        }
        checksum += out[0];
    }
    println!("{} ({checksum})", kernel.name);
    Ok(())
}
