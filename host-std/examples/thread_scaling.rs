//! How two threads scale on the matmuls of one decode step, without the rest of the step: the
//! one-token matmuls of SmolLM2's 30 layers and its output head (random weights of one format,
//! beyond the caches), run three ways, alternately, fastest of several passes each:
//!
//! - `pool`: [`ThreadPool::for_each_range`] per matmul, as a session runs them;
//! - `static+barrier`: each thread its fixed half of every matrix, a spin barrier after each
//!   (the least synchronization a split per matmul needs);
//! - `static`: each thread its halves of all matrices, no barrier (what the machine allows two
//!   threads streaming weights at all).
//!
//!   cargo run --release -p vspec-host --example thread_scaling -- [FORMAT] [THREADS] [ROUNDS]
//!
//! (default VQ3, 2 threads, 3 rounds; `TIER=avx2` runs that tier's kernels on an AVX-512 CPU).
//! The ratio of `pool` to `static` is what the pool costs; of `static` with 1 and N threads what
//! the hardware gives. A decode step also runs attention and the per-token serial ops, which
//! this leaves out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use vspec_bench::{random_weights, tier_table, Rng};
use vspec_core::format::Format;
use vspec_core::kernels::{MatMulEntry, MatMulKernel, Parallel, SharedOut};
use vspec_core::model::WeightView;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};
use vspec_host::parallel::ThreadPool;

/// SmolLM2-135M's matmuls in the order one token runs them: per layer q, k, v, o, gate, up, down;
/// then the output head.
fn decode_shapes() -> Vec<(usize, usize)> {
    let layer = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let mut shapes: Vec<(usize, usize)> = (0..30).flat_map(|_| layer).collect();
    shapes.push((49152, 576));
    shapes
}

/// Seconds per pass over `views`, the fastest of `passes`.
fn fastest(passes: usize, mut pass: impl FnMut()) -> f64 {
    (0..passes)
        .map(|_| {
            let t0 = Instant::now();
            pass();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("VQ3");
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let Some(format) = Format::ALL.into_iter().find(|f| f.name() == name) else {
        eprintln!("unknown format {name}");
        std::process::exit(2);
    };
    let tier = std::env::var("TIER").unwrap_or_default();
    let table = tier_table(&tier).expect("the tier asked for by TIER, or this CPU's best");
    let entry: MatMulEntry = *table.matmul(format).expect("a matmul kernel");
    let MatMulKernel::Q8(kernel) = entry.kernel else {
        eprintln!("{name} has no 8-bit matmul here");
        std::process::exit(2);
    };
    let mut rng = Rng::new(11);
    let shapes = decode_shapes();
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(r, c)| random_weights(format, r, c, &mut rng))
        .collect();
    let views: Vec<WeightView<'_>> = data
        .iter()
        .zip(&shapes)
        .map(|(d, &(rows, cols))| WeightView {
            format,
            rows,
            cols,
            row_bytes: format.row_bytes(cols, "w").expect("whole blocks"),
            data: d,
            layout: vspec_core::model::Layout::RowMajor,
        })
        .collect();
    let x: Vec<f32> = (0..1536).map(|_| rng.f32()).collect();
    let mut xq = vec![BlockQ8Act::ZERO; 1536 / QK8];
    (table.quantize_q8.f)(&x, &mut xq);
    let mut out = vec![0f32; 49152];
    let out = SharedOut::new(&mut out);
    let rm = entry.row_multiple.max(1);
    let bytes: usize = data.iter().map(Vec::len).sum();
    println!(
        "{name}: {} matmuls, {:.1} MB of weights, row multiple {rm}",
        views.len(),
        bytes as f64 / 1e6
    );
    // Thread `me` of `n`'s fixed share of a matrix (whole row multiples).
    let share = |w: &WeightView<'_>, me: usize, n: usize| {
        let units = w.rows.div_ceil(rm);
        (units * me / n * rm).min(w.rows)..(units * (me + 1) / n * rm).min(w.rows)
    };
    let run = |w: &WeightView<'_>, rows: std::ops::Range<usize>| {
        // SAFETY: every caller hands each thread rows no other thread computes at the same time
        // (a pool's disjoint ranges, or each thread its fixed share), and `xq` holds the blocks
        // of one token of `w.cols` columns.
        unsafe { kernel(w, &xq[..w.cols / QK8], 1, rows, &out) }
    };
    let static_pass = |n: usize, barrier: bool| {
        let arrived = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for me in 0..n {
                let (views, arrived, run, share) = (&views, &arrived, &run, &share);
                s.spawn(move || {
                    for (k, w) in views.iter().enumerate() {
                        run(w, share(w, me, n));
                        if barrier && n > 1 {
                            arrived.fetch_add(1, Ordering::AcqRel);
                            while arrived.load(Ordering::Acquire) < (k + 1) * n {
                                std::hint::spin_loop();
                            }
                        }
                    }
                });
            }
        });
    };
    let pools = [
        ThreadPool::new(1).expect("a pool"),
        ThreadPool::new(threads).expect("a pool"),
    ];
    let mut best = [[f64::INFINITY; 2]; 3];
    for _ in 0..rounds {
        for (i, n) in [1, threads].into_iter().enumerate() {
            let pool = &pools[i];
            let t = fastest(5, || {
                for w in &views {
                    pool.for_each_range(w.rows.div_ceil(rm), &|u| {
                        run(w, u.start * rm..(u.end * rm).min(w.rows))
                    });
                }
            });
            best[0][i] = best[0][i].min(t);
            let t = fastest(5, || static_pass(n, true));
            best[1][i] = best[1][i].min(t);
            let t = fastest(5, || static_pass(n, false));
            best[2][i] = best[2][i].min(t);
        }
    }
    for (way, [one, many]) in ["pool", "static+barrier", "static"].iter().zip(best) {
        println!(
            "{way:>15}: 1 thread {:.3} ms, {threads} threads {:.3} ms, {:.2}x",
            one * 1e3,
            many * 1e3,
            one / many
        );
    }
}
