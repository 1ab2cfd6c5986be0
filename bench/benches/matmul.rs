//! Matmul kernels from the kernel tables, per tier and weight format: one decode step (1 token)
//! and one prefill step (64 tokens) through a 1536 × 576 matrix (SmolLM2's FFN shape; 576 × 1536
//! for the 256-weight super-block formats). Each tier
//! is the table `KernelTable::select` returns for it, so the benchmark measures what a session
//! runs; 8-bit-activation entries are timed on activations quantized beforehand (a session
//! quantizes each activation once per step for all the matmuls that read it).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vspec_bench::{random_weights, tier_table, Rng};
use vspec_core::format::Format;
use vspec_core::kernels::{ActKind, KernelTable, MatMulEntry, MatMulKernel, SharedOut};
use vspec_core::model::WeightView;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};

/// Every tier this CPU runs, by name.
fn tiers() -> Vec<(&'static str, KernelTable)> {
    ["scalar", "avx2", "avx512"]
        .into_iter()
        .filter_map(|tier| Some((tier, tier_table(tier)?)))
        .collect()
}

fn matmul(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    for (tier, table) in tiers() {
        for format in [
            Format::F32,
            Format::F16,
            Format::Q8_0,
            Format::Q4_0,
            Format::Q4_1,
            Format::IQ4_NL,
            Format::VQ4,
            Format::VQ3,
            Format::NQ3,
            Format::TQ3,
        ] {
            let kernel = *table.matmul(format).unwrap();
            bench_kernel(c, tier, &table, kernel, format, 1536, 576, &mut rng);
        }
        // The 256-weight super-block formats need rows of whole super-blocks: SmolLM2's
        // `ffn_down` shape, 576 × 1536 (the same number of weights). Every kernel the table has
        // for them is timed, so the f32 path shows next to the 8-bit one.
        for format in [
            Format::Q2_K,
            Format::Q3_K,
            Format::Q4_K,
            Format::Q5_K,
            Format::Q6_K,
            Format::IQ4_XS,
        ] {
            for act in ActKind::ALL {
                if let Some(&kernel) = table.matmul_for(format, act) {
                    bench_kernel(c, tier, &table, kernel, format, 576, 1536, &mut rng);
                }
            }
        }
    }
}

/// Times `kernel` on a random `rows × cols` matrix in `format`, for 1 and 64 tokens.
#[allow(clippy::too_many_arguments)]
fn bench_kernel(
    c: &mut Criterion,
    tier: &str,
    table: &KernelTable,
    kernel: MatMulEntry,
    format: Format,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) {
    let data = random_weights(format, rows, cols, rng);
    let w = WeightView {
        format,
        rows,
        cols,
        row_bytes: format.row_bytes(cols, "w").unwrap(),
        data: &data,
        layout: vspec_core::model::Layout::RowMajor,
    };
    let mut group = c.benchmark_group(format!("{tier}_{}_{}", format.name(), kernel.name));
    for tokens in [1usize, 64] {
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let mut xq = vec![BlockQ8Act::ZERO; tokens * cols / QK8];
        (table.quantize_q8.f)(&x, &mut xq);
        let mut out = vec![0f32; tokens * rows];
        group.throughput(Throughput::Elements((rows * cols * tokens) as u64));
        group.bench_with_input(BenchmarkId::new("tokens", tokens), &tokens, |b, &t| {
            b.iter(|| {
                let shared = SharedOut::new(&mut out);
                // SAFETY: one call on this thread owns every row.
                unsafe {
                    match kernel.kernel {
                        MatMulKernel::F32(f) => f(&w, black_box(&x), t, 0..rows, &shared),
                        MatMulKernel::Q8(f) => f(&w, black_box(&xq), t, 0..rows, &shared),
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
