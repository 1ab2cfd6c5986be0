//! One matmul call timed many times, reporting the fastest and the 10th-percentile run in
//! G weights/s: on a shared, loaded machine the fastest of many ~100 µs runs is one that no
//! other process interrupted, so the figure repeats within about 1 % where criterion's means
//! move by 20 %. Not a replacement for the end-to-end `vspec bench`.
//!
//!   cargo run --release -p vspec-bench --example matmul_min -- [TOKENS] [FORMAT,...]
//!
//! Environment: `TIER` = `scalar`, `avx2`, `avx512` or `avx512-split` (the AVX-512 tier as on a
//! Zen 4; default: the best this CPU has, without the split), `ROWS` and `COLS`
//! (default 1536 × 576, SmolLM2's FFN shape; the 256-weight super-block formats, whose rows
//! must hold whole super-blocks, take the transposed 576 × 1536 instead),
//! `ACT=f32` to time the format's f32-activation kernel rather than the preferred one,
//! `LAYOUT=rows16` to hold the trellis formats interleaved per sixteen rows where the tier reads
//! that layout (as sessions do).

use std::time::Instant;
use vspec_bench::{random_weights, tier_table, Rng};
use vspec_core::format::Format;
use vspec_core::kernels::{ActKind, MatMulKernel, SharedOut};
use vspec_core::model::WeightView;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokens: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let only: Vec<String> = args
        .get(2)
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1536);
    let cols_for_blocks_of_64: usize = std::env::var("COLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(576);
    let f32_act = std::env::var("ACT").as_deref() == Ok("f32");
    let rows16 = std::env::var("LAYOUT").as_deref() == Ok("rows16");
    let tier = std::env::var("TIER").unwrap_or_default();
    let Some(table) = tier_table(&tier) else {
        eprintln!("this CPU lacks the tier '{tier}'");
        std::process::exit(2);
    };
    let mut rng = Rng::new(7);
    for format in Format::ALL {
        let (rows, cols) = if format.block_elems() == 256 {
            (576, 1536)
        } else {
            (rows, cols_for_blocks_of_64)
        };
        if (!only.is_empty() && !only.iter().any(|o| o == format.name()))
            || format.row_bytes(cols, "w").is_err()
        {
            continue;
        }
        let mut data = random_weights(format, rows, cols, &mut rng);
        let mut layout = vspec_core::model::Layout::RowMajor;
        use vspec_core::quant::vspec::trellis;
        let trellis_bits = trellis::stream_bits(format);
        if let (Some(k), true) = (trellis_bits, rows16 && table.rows16(format)) {
            if let Some(interleaved) =
                trellis::interleave_rows16(k, rows, cols / trellis::BLOCK_ELEMS, &data)
            {
                data = interleaved;
                layout = vspec_core::model::Layout::Rows16;
            }
        }
        let w = WeightView {
            format,
            rows,
            cols,
            row_bytes: format.row_bytes(cols, "w").unwrap(),
            data: &data,
            layout,
        };
        let entry = if f32_act {
            table.matmul_for(format, ActKind::F32)
        } else {
            table.matmul(format)
        };
        let Some(kernel) = entry.copied() else {
            continue;
        };
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let mut xq = vec![BlockQ8Act::ZERO; tokens * cols / QK8];
        (table.quantize_q8.f)(&x, &mut xq);
        let mut out = vec![0f32; tokens * rows];
        let runs = (3000 / tokens).max(50);
        let mut seconds = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let shared = SharedOut::new(&mut out);
            // SAFETY: one call on this thread owns every row.
            unsafe {
                match kernel.kernel {
                    MatMulKernel::F32(f) => {
                        f(&w, std::hint::black_box(&x), tokens, 0..rows, &shared)
                    }
                    MatMulKernel::Q8(f) => {
                        f(&w, std::hint::black_box(&xq), tokens, 0..rows, &shared)
                    }
                }
            }
            seconds.push(start.elapsed().as_secs_f64());
        }
        seconds.sort_by(f64::total_cmp);
        let rate = |s: f64| (rows * cols * tokens) as f64 / s / 1e9;
        println!(
            "{:8} {:>3} tokens  {:26} fastest {:6.2} G weights/s  p10 {:6.2}",
            format.name(),
            tokens,
            kernel.name,
            rate(seconds[0]),
            rate(seconds[runs / 10]),
        );
    }
}
