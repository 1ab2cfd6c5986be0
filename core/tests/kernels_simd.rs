//! Every optimized kernel against its scalar reference (H15): random weights in every format,
//! odd row counts, row lengths that are and are not multiples of the tile, 1..7 tokens, edge
//! values; plus bit-identical results for any row split and any number of tokens per step.

use vspec_core::format::Format;
use vspec_core::kernels::{ActKind, CpuFeatures, KernelTable, MatMulKernel, Quality, SharedOut};
use vspec_core::model::WeightView;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random bytes with a finite, moderate f16 scale at the start of every block (every block
/// format here keeps its f16 scale there); floats get random finite values.
fn weights(format: Format, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    match format {
        Format::F32 => (0..rows * cols)
            .flat_map(|_| rng.f32().to_le_bytes())
            .collect(),
        Format::F16 | Format::BF16 => (0..rows * cols)
            .flat_map(|_| ((rng.next() as u16) & 0x3bff).to_le_bytes())
            .collect(),
        _ => {
            let n = format.tensor_bytes(cols, rows, "w").unwrap();
            let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            // f16 scales/mins sit in the first or last four bytes of a block depending on the
            // format; giving those high bytes a moderate exponent keeps every decode finite.
            for b in v.chunks_exact_mut(format.block_bytes()) {
                let n = b.len();
                for i in [1, 3, n - 1, n - 3] {
                    b[i] = 0x2c + (rng.next() % 4) as u8;
                }
            }
            v
        }
    }
}

fn run(
    table: &KernelTable,
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    splits: &[usize],
) -> Vec<f32> {
    let mut out = vec![f32::NAN; tokens * w.rows];
    let shared = SharedOut::new(&mut out);
    let MatMulKernel::F32(f) = table.matmul_for(w.format, ActKind::F32).unwrap().kernel else {
        unreachable!()
    };
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&w.rows)) {
        // SAFETY: the calls run one after another on this thread.
        unsafe { f(w, x, tokens, start..end.min(w.rows), &shared) };
        start = end.min(w.rows);
    }
    out
}

fn detected() -> Option<CpuFeatures> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: both features were just detected on this CPU.
        return Some(unsafe { CpuFeatures::assume_detected(true) });
    }
    None
}

#[test]
fn avx2_matmul_matches_scalar_reference() {
    let Some(features) = detected() else {
        if std::env::var("VSPEC_REQUIRE_ISA").as_deref() == Ok("avx2") {
            panic!("VSPEC_REQUIRE_ISA=avx2 but this CPU lacks AVX2/FMA");
        }
        println!("SKIPPED(avx2)");
        return;
    };
    let (fast, log) = KernelTable::select(&features);
    assert!(log.contains("avx2"));
    let scalar = KernelTable::scalar();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for format in Format::ALL {
        assert_eq!(
            fast.matmul_for(format, ActKind::F32).unwrap().quality,
            Quality::Optimized
        );
        let be = format.block_elems();
        for &cols_blocks in &[1usize, 2, 3, 5, 9, 17] {
            let cols = (be.max(32) * cols_blocks).max(be);
            for &rows in &[1usize, 3, 4, 5, 9] {
                let data = weights(format, rows, cols, &mut rng);
                let w = WeightView {
                    format,
                    rows,
                    cols,
                    row_bytes: format.row_bytes(cols, "w").unwrap(),
                    data: &data,
                };
                for &tokens in &[1usize, 2, 3, 4, 7] {
                    let mut x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
                    if tokens == 7 {
                        x[0] = 0.0;
                        x[1] = 1e30;
                        x[2] = -1e-30;
                    }
                    let want = run(&scalar, &w, &x, tokens, &[]);
                    let got = run(&fast, &w, &x, tokens, &[]);
                    // Summation order differs from the reference: bound the error by the
                    // condition of each sum, sum |w·x| (computed in f64 from decoded weights).
                    let mut dense = vec![0f32; rows * cols];
                    vspec_core::quant::dequantize_row(format, &data, &mut dense).unwrap();
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        let (t, r) = (i / rows, i % rows);
                        let abs_sum: f64 = (0..cols)
                            .map(|c| (dense[r * cols + c] as f64 * x[t * cols + c] as f64).abs())
                            .sum();
                        assert!(
                            ((a - b).abs() as f64) <= 1e-6 * abs_sum + 1e-30,
                            "{format:?} rows {rows} cols {cols} tokens {tokens} elem {i}: {a} vs {b}"
                        );
                    }
                    // Any row split, and one token at a time, give the same bits.
                    let split = run(&fast, &w, &x, tokens, &[1, 2, 6]);
                    assert!(
                        split
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{format:?}: split changed bits"
                    );
                    for t in 0..tokens {
                        let one = run(&fast, &w, &x[t * cols..(t + 1) * cols], 1, &[]);
                        let row = &got[t * rows..(t + 1) * rows];
                        assert!(
                            one.iter().zip(row).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{format:?}: token count changed bits"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} shape/format combinations checked");
}
