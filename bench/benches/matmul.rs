//! Matmul kernels from the kernel table, per weight format: one decode step (1 token) and one
//! prefill step (64 tokens) through a 576 × 1536 matrix (SmolLM2's FFN shape).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vspec_bench::{random_weights, Rng};
use vspec_core::format::Format;
use vspec_core::kernels::{KernelTable, MatMulKernel, SharedOut};
use vspec_core::model::WeightView;

fn matmul(c: &mut Criterion) {
    let (rows, cols) = (1536, 576);
    let table = KernelTable::scalar();
    let mut rng = Rng::new(7);
    for format in [
        Format::F32,
        Format::F16,
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::IQ4_NL,
        Format::VQ3,
        Format::NQ3,
        Format::TQ3,
    ] {
        let data = random_weights(format, rows, cols, &mut rng);
        let w = WeightView {
            format,
            rows,
            cols,
            row_bytes: format.row_bytes(cols, "w").unwrap(),
            data: &data,
        };
        let kernel = table.matmul(format).unwrap();
        let MatMulKernel::F32(f) = kernel.kernel else {
            unreachable!("the scalar table prefers f32 activations")
        };
        let mut group = c.benchmark_group(format!("matmul_{}", kernel.name));
        for tokens in [1usize, 64] {
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
            let mut out = vec![0f32; tokens * rows];
            group.throughput(Throughput::Elements((rows * cols * tokens) as u64));
            group.bench_with_input(BenchmarkId::new("tokens", tokens), &tokens, |b, &t| {
                b.iter(|| {
                    let shared = SharedOut::new(&mut out);
                    // SAFETY: one call on this thread owns every row.
                    unsafe { f(&w, black_box(&x), t, 0..rows, &shared) };
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, matmul);
criterion_main!(benches);
