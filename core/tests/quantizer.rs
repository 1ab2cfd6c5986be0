//! The quantizer (`quant::quantize_row` and the searches of `quant::search`): round-trip budgets,
//! better than round-to-nearest, importance weighting, lossless re-quantization, determinism,
//! edge values and errors, the Q4_0 → Q4_1 transcode, and an RMSE table (run with `--nocapture`).

use vspec_core::gguf::GgufWriter;
use vspec_core::quant::gguf::iq4_nl::KVALUES;
use vspec_core::quant::gguf::{q4_0, q4_1, q8_0};
use vspec_core::quant::{
    can_quantize, dequantize_row, q4_0_to_q4_1_is_exact, quantize_row, search,
    transcode_q4_0_to_q4_1,
};
use vspec_core::{Error, Format};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
    /// Laplace with unit variance (heavy-tailed compared to the normal).
    fn laplace(&mut self) -> f32 {
        let u = self.unit() - 0.5;
        (-u.signum() * (1.0 - 2.0 * u.abs()).ln() / std::f64::consts::SQRT_2) as f32
    }
}

const PACKED: [Format; 7] = [
    Format::VQ2,
    Format::VQ3,
    Format::VQ4,
    Format::Q4_0,
    Format::IQ4_NL,
    Format::Q4_1,
    Format::Q8_0,
];

/// Quantize every row of `x` (`rows × cols`) and decode it back.
fn round_trip(f: Format, x: &[f32], cols: usize, imp: Imp) -> Vec<f32> {
    let rb = f.row_bytes(cols, "t").unwrap();
    let mut out = vec![0f32; x.len()];
    let mut row = vec![0u8; rb];
    for (xs, ys) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let sq: Vec<f32>;
        let imp = match imp {
            Imp::Default => None,
            Imp::Given(v) => Some(v),
            Imp::Square => {
                sq = xs.iter().map(|v| v * v).collect();
                Some(&sq[..])
            }
        };
        quantize_row(f, xs, imp, &mut row).unwrap();
        dequantize_row(f, &row, ys).unwrap();
    }
    out
}

#[derive(Clone, Copy)]
enum Imp<'a> {
    /// `None`: the default `x² + mean(x²)` per block.
    Default,
    /// The same per-column importance for every row.
    Given(&'a [f32]),
    /// `x²` of each row itself.
    Square,
}

fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let e: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let s: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
    (e / s).sqrt()
}

/// `Σ wᵢ (xᵢ − yᵢ)²` with `w` repeated over rows.
fn weighted_err(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
    x.chunks(w.len())
        .zip(y.chunks(w.len()))
        .map(|(a, b)| search::weighted_sq_error(a, b, w))
        .sum()
}

fn f16r(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Plain round-to-nearest from the min and max (or the largest magnitude) of each block, the
/// scale computed in f32 and stored as f16: the baseline that the search must beat.
fn rtn_row(f: Format, x: &[f32]) -> Vec<f32> {
    let be = f.block_elems();
    let mut y = vec![0f32; x.len()];
    for (xs, ys) in x.chunks_exact(be).zip(y.chunks_exact_mut(be)) {
        match f {
            Format::Q8_0 | Format::Q4_0 | Format::Q4_1 => {
                // ggml's reference quantizers are exactly this.
                let mut b = vec![0u8; f.block_bytes()];
                match f {
                    Format::Q8_0 => q8_0::quantize_block(xs, &mut b),
                    Format::Q4_0 => q4_0::quantize_block(xs, &mut b),
                    _ => q4_1::quantize_block(xs, &mut b),
                }
                dequantize_row(f, &b, ys).unwrap();
            }
            Format::IQ4_NL => {
                let max = xs
                    .iter()
                    .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / KVALUES[0] as f32;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let dh = f16r(d);
                for (&v, o) in xs.iter().zip(ys.iter_mut()) {
                    let k = KVALUES
                        .iter()
                        .min_by(|a, b| {
                            let (da, db) =
                                ((**a as f32 - v * id).abs(), (**b as f32 - v * id).abs());
                            da.partial_cmp(&db).unwrap()
                        })
                        .unwrap();
                    *o = dh * *k as f32;
                }
            }
            _ => {
                let nmax = match f {
                    Format::VQ2 => 3.0,
                    Format::VQ3 => 7.0,
                    _ => 15.0,
                };
                let min = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let d = (max - min) / nmax;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let (dh, mh) = (f16r(d), f16r(min));
                for (&v, o) in xs.iter().zip(ys.iter_mut()) {
                    let q = ((v - min) * id).round().clamp(0.0, nmax);
                    *o = dh * q + mh;
                }
            }
        }
    }
    y
}

/// `rows × cols` values, each row with its own scale, drawn by `draw`.
fn matrix(rng: &mut Rng, rows: usize, cols: usize, draw: fn(&mut Rng) -> f32) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let s = (rng.normal() * 0.5).exp() * 0.02;
        for _ in 0..cols {
            x.push(draw(rng) * s);
        }
    }
    x
}

#[test]
fn round_trip_budgets() {
    // rel RMSE on 256 × 576 N(0, σ_row²) weights with the default weights; measured values in the
    // comments, budgets ~10% above.
    let x = matrix(&mut Rng(1), 256, 576, Rng::normal);
    let budgets = [
        (Format::VQ2, 0.39),     // measured 0.3586
        (Format::VQ3, 0.19),     // 0.1744
        (Format::VQ4, 0.091),    // 0.0836
        (Format::Q4_0, 0.091),   // 0.0824
        (Format::IQ4_NL, 0.083), // 0.0748
        (Format::Q4_1, 0.078),   // 0.0709
        (Format::Q5_0, 0.045),   // 0.0404
        (Format::Q5_1, 0.039),   // 0.0338
        (Format::Q8_0, 0.0054),  // 0.00488
        (Format::F16, 2.4e-4),   // 0.00021
        (Format::BF16, 1.9e-3),  // 0.00166
    ];
    for (f, budget) in budgets {
        let y = round_trip(f, &x, 576, Imp::Default);
        let e = rel_rmse(&x, &y);
        println!("{:6} rel rmse {e:.5} (budget {budget})", f.name());
        assert!(e < budget, "{}: {e}", f.name());
    }
    let y = round_trip(Format::F32, &x, 576, Imp::Default);
    assert_eq!(x, y);
}

#[test]
fn search_beats_round_to_nearest() {
    let mut rng = Rng(2);
    let cols = 576;
    let x = matrix(&mut rng, 100, cols, Rng::laplace);
    let random_imp: Vec<f32> = (0..cols).map(|_| (rng.normal() * 1.5).exp()).collect();
    let ones = vec![1f32; cols];
    for f in PACKED {
        for (label, imp) in [("uniform", &ones), ("random", &random_imp)] {
            let y = round_trip(f, &x, cols, Imp::Given(imp));
            let (mut tot_s, mut tot_r) = (0f64, 0f64);
            for (r, (xs, ys)) in x.chunks(cols).zip(y.chunks(cols)).enumerate() {
                let rtn = rtn_row(f, xs);
                let es = search::weighted_sq_error(xs, ys, imp);
                let er = search::weighted_sq_error(xs, &rtn, imp);
                assert!(
                    es <= er * (1.0 + 1e-9),
                    "{} {label} row {r}: {es} > {er}",
                    f.name()
                );
                tot_s += es;
                tot_r += er;
            }
            println!(
                "{:6} {label:7}: weighted error {:.3} of round-to-nearest's",
                f.name(),
                tot_s / tot_r
            );
            assert!(tot_s < tot_r * 0.99, "{} {label}", f.name());
        }
    }
}

#[test]
fn importance_lowers_weighted_error() {
    let mut rng = Rng(3);
    let cols = 576;
    let x = matrix(&mut rng, 100, cols, Rng::normal);
    let imp: Vec<f32> = (0..cols).map(|_| (rng.normal() * 1.5).exp()).collect();
    let ones = vec![1f32; cols];
    for f in PACKED {
        let with = weighted_err(&x, &round_trip(f, &x, cols, Imp::Given(&imp)), &imp);
        let without = weighted_err(&x, &round_trip(f, &x, cols, Imp::Given(&ones)), &imp);
        println!(
            "{:6}: importance-weighted error {:.3} of uniform's",
            f.name(),
            with / without
        );
        assert!(with < without * 0.97, "{}: {with} vs {without}", f.name());
    }
}

/// Random blocks on an affine grid (`d ≥ 0`, quants 0 and `nmax` both present), decoded.
fn affine_grid(f: Format, rng: &mut Rng, blocks: usize) -> Vec<u8> {
    let (bb, be) = (f.block_bytes(), f.block_elems());
    let nmax = match f {
        Format::VQ2 => 3,
        Format::VQ3 => 7,
        _ => 15,
    };
    let mut row = vec![0u8; blocks * bb];
    let mut x = vec![0f32; be];
    for blk in row.chunks_exact_mut(bb) {
        let d = f16r((rng.normal() * 0.05).abs() + 1e-4);
        let m = f16r(rng.normal() * 0.1);
        for (i, v) in x.iter_mut().enumerate() {
            let q = match i {
                3 => 0,
                11 => nmax,
                _ => rng.next_u64() % (nmax + 1),
            };
            *v = d * q as f32 + m;
        }
        // Encode through the plain reference so the bytes are a valid block, then check.
        quantize_row(f, &x, Some(&vec![1.0; be]), blk).unwrap();
        let mut y = vec![0f32; be];
        dequantize_row(f, blk, &mut y).unwrap();
        assert_eq!(x, y, "{}: grid values must encode exactly", f.name());
    }
    row
}

#[test]
fn requantizing_grid_values_is_lossless() {
    let mut rng = Rng(4);
    for f in [Format::Q4_1, Format::VQ2, Format::VQ3, Format::VQ4] {
        let row = affine_grid(f, &mut rng, 200);
        let n = 200 * f.block_elems();
        let mut x = vec![0f32; n];
        dequantize_row(f, &row, &mut x).unwrap();
        let imp: Vec<f32> = (0..n).map(|_| rng.unit() as f32 + 0.01).collect();
        for imp in [None, Some(&imp[..])] {
            let mut again = vec![0u8; row.len()];
            quantize_row(f, &x, imp, &mut again).unwrap();
            let mut y = vec![0f32; n];
            dequantize_row(f, &again, &mut y).unwrap();
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{} element {i}", f.name());
            }
        }
    }
    // Decoded random Q4_1 blocks (any quants, d ≥ 0): the values come back exactly when the
    // block uses quants 0 and 15, and within a rounding of d otherwise.
    let mut raw = vec![0u8; 300 * 20];
    for blk in raw.chunks_exact_mut(20) {
        for b in blk.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        blk[0..2].copy_from_slice(&half::f16::from_f32((rng.normal() * 0.05).abs()).to_le_bytes());
        blk[2..4].copy_from_slice(&half::f16::from_f32(rng.normal() * 0.1).to_le_bytes());
    }
    let mut x = vec![0f32; 300 * 32];
    dequantize_row(Format::Q4_1, &raw, &mut x).unwrap();
    let mut again = vec![0u8; raw.len()];
    quantize_row(Format::Q4_1, &x, None, &mut again).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(Format::Q4_1, &again, &mut y).unwrap();
    let (mut exact, mut total) = (0, 0);
    for (b, blk) in raw.chunks_exact(20).enumerate() {
        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let qs: Vec<u8> = blk[4..].iter().flat_map(|&v| [v & 15, v >> 4]).collect();
        let full = qs.contains(&0) && qs.contains(&15);
        let same = (b * 32..(b + 1) * 32).all(|i| x[i].to_bits() == y[i].to_bits());
        for i in b * 32..(b + 1) * 32 {
            assert!(
                (x[i] - y[i]).abs() <= d * 1e-2 + 1e-6,
                "block {b}: {} vs {}",
                x[i],
                y[i]
            );
        }
        if full {
            assert!(same, "block {b} uses 0 and 15 but changed");
        }
        exact += same as usize;
        total += 1;
    }
    println!("random Q4_1 blocks re-quantized bit-exactly: {exact}/{total}");
}

#[test]
fn deterministic() {
    let x = matrix(&mut Rng(5), 8, 576, Rng::laplace);
    for f in Format::ALL.into_iter().filter(|&f| can_quantize(f)) {
        let rb = f.row_bytes(x.len(), "t").unwrap();
        let (mut a, mut b) = (vec![0u8; rb], vec![0u8; rb]);
        quantize_row(f, &x, None, &mut a).unwrap();
        quantize_row(f, &x, None, &mut b).unwrap();
        assert_eq!(a, b, "{}", f.name());
    }
}

#[test]
fn edge_values_never_panic() {
    let n = 192;
    let mut rows: Vec<Vec<f32>> = vec![
        vec![0.0; n],
        vec![-0.0; n],
        vec![1.0; n],
        vec![-7.25; n],
        vec![65504.0; n],
        vec![3e38; n],
        vec![-3e38; n],
        vec![1e-38; n],
        vec![1e-45; n],
        (0..n)
            .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
            .collect(),
        (0..n)
            .map(|i| if i % 5 == 0 { 1e30 } else { 1e-30 })
            .collect(),
        (0..n).map(|i| if i == 7 { 1e6 } else { 1e-3 }).collect(),
    ];
    rows.push((0..n).map(|i| (i as f32 - 96.0) * 1e-7).collect());
    for f in Format::ALL.into_iter().filter(|&f| can_quantize(f)) {
        for x in &rows {
            let rb = f.row_bytes(n, "t").unwrap();
            let mut out = vec![0u8; rb];
            quantize_row(f, x, None, &mut out).unwrap();
            quantize_row(f, x, Some(&vec![0.0; n]), &mut out).unwrap();
            let mut y = vec![0f32; n];
            dequantize_row(f, &out, &mut y).unwrap();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{} {:?}",
                f.name(),
                &x[..2]
            );
            // Constants that f16 holds come back exactly (the codebook formats: to f16
            // precision); zeros stay zero.
            let c = x[0];
            if x.iter().all(|&v| v == c) && f16r(c) == c {
                let want = if f == Format::BF16 {
                    half::bf16::from_f32(c).to_f32()
                } else {
                    c
                };
                let codebook = matches!(f, Format::NQ3 | Format::TQ2 | Format::TQ3 | Format::TQ4);
                if codebook && c != 0.0 {
                    // No level is 1: d = c / level rounds to f16.
                    let close = y.iter().all(|&v| ((v - c) / c).abs() < 1e-3);
                    assert!(close, "{} constant {c}", f.name());
                } else {
                    assert!(y.iter().all(|&v| v == want), "{} constant {c}", f.name());
                }
            }
        }
    }
}

fn reason(e: Error) -> String {
    match e {
        Error::Invalid { reason, .. } => reason,
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn bad_input_is_an_error() {
    let x = vec![0.5f32; 128];
    let mut out = vec![0u8; Format::VQ4.row_bytes(128, "t").unwrap()];
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut y = x.clone();
        y[77] = bad;
        for f in Format::ALL.into_iter().filter(|&f| can_quantize(f)) {
            let mut o = vec![0u8; f.row_bytes(128, "t").unwrap()];
            let r = reason(quantize_row(f, &y, None, &mut o).unwrap_err());
            assert!(r.contains("weight 77") && r.contains("non-finite"), "{r}");
        }
    }
    let r = reason(quantize_row(Format::VQ4, &x, Some(&[1.0; 127]), &mut out).unwrap_err());
    assert!(r.contains("importance has 127 entries"), "{r}");
    let mut imp = vec![1f32; 128];
    imp[5] = -1.0;
    let r = reason(quantize_row(Format::VQ4, &x, Some(&imp), &mut out).unwrap_err());
    assert!(r.contains("importance[5]"), "{r}");
    imp[5] = f32::NAN;
    assert!(quantize_row(Format::VQ4, &x, Some(&imp), &mut out).is_err());
    let r = reason(quantize_row(Format::VQ4, &x[..96], None, &mut out[..27]).unwrap_err());
    assert!(r.contains("not a multiple of the VQ4 block size 64"), "{r}");
    assert!(quantize_row(Format::VQ4, &x, None, &mut out[..71]).is_err());
    for f in [Format::Q4_K, Format::Q2_K, Format::Q6_K, Format::IQ4_XS] {
        assert!(!can_quantize(f));
        let mut o = vec![0u8; f.row_bytes(256, "t").unwrap()];
        let r = reason(quantize_row(f, &[0.0; 256], None, &mut o).unwrap_err());
        assert_eq!(r, format!("cannot quantize to {}", f.name()));
    }
}

#[test]
fn transcode_q4_0_to_q4_1_is_exact() {
    let mut rng = Rng(6);
    let mut b0 = [0u8; 18];
    let mut b1 = [0u8; 20];
    let (mut y0, mut y1) = ([0f32; 32], [0f32; 32]);
    for i in 0..5000 {
        for b in b0.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        let d = match i {
            0 => 0.0,
            1 => 8188.0,
            2 => -8188.0,
            3 => 6e-8, // f16 subnormal
            _ => rng.normal() * 0.1,
        };
        b0[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        assert!(q4_0_to_q4_1_is_exact(&b0));
        transcode_q4_0_to_q4_1(&b0, &mut b1);
        dequantize_row(Format::Q4_0, &b0, &mut y0).unwrap();
        dequantize_row(Format::Q4_1, &b1, &mut y1).unwrap();
        for (a, b) in y0.iter().zip(&y1) {
            // Same number; bit-exact except that Q4_0 gives -0.0 where Q4_1 gives +0.0.
            assert_eq!(a, b);
            assert!(a.to_bits() == b.to_bits() || *a == 0.0);
        }
    }
    // Scales too large for m = -8d: re-quantized instead, never a panic, finite where Q4_0 is.
    for d in [9000.0f32, -65504.0, f32::NAN, f32::INFINITY] {
        b0[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        assert!(!q4_0_to_q4_1_is_exact(&b0), "{d}");
        transcode_q4_0_to_q4_1(&b0, &mut b1);
        dequantize_row(Format::Q4_1, &b1, &mut y1).unwrap();
        assert!(y1.iter().all(|v| v.is_finite()), "{d}");
    }
}

#[test]
fn format_names_and_ggml_ids() {
    for f in Format::ALL {
        assert_eq!(Format::from_name(f.name()), Some(f));
        assert_eq!(Format::from_name(&f.name().to_lowercase()), Some(f));
        if let Some(id) = f.ggml_type() {
            assert_eq!(Format::from_ggml_type(id), Some(f));
        }
    }
    assert_eq!(Format::from_name("vq3"), Some(Format::VQ3));
    assert_eq!(Format::from_name("Q4_k"), Some(Format::Q4_K));
    assert_eq!(Format::from_name("VQ5"), None);
    for f in [Format::VQ2, Format::VQ3, Format::VQ4] {
        assert_eq!(f.ggml_type(), None);
        assert_eq!(f.block_elems(), 64);
        // A GGUF file cannot hold our formats.
        let data = vec![0u8; f.block_bytes()];
        let mut w = GgufWriter::new();
        assert!(w.add_tensor("t", &[64], f, &data).is_err());
    }
    assert_eq!(Format::VQ2.bits_per_weight(), 2.5);
    assert_eq!(Format::VQ3.bits_per_weight(), 3.5);
    assert_eq!(Format::VQ4.bits_per_weight(), 4.5);
}

/// The RMSE table of the report: every packed format on normal and Laplace weights, plain
/// round-to-nearest against the search with uniform, default (`x² + mean x²`) and `x²` weights.
#[test]
#[ignore = "prints the report's RMSE table and checks nothing; run with --ignored --nocapture"]
fn rmse_table() {
    let (rows, cols) = (256, 576);
    let data = [
        ("normal", matrix(&mut Rng(7), rows, cols, Rng::normal)),
        ("laplace", matrix(&mut Rng(8), rows, cols, Rng::laplace)),
    ];
    let ones = vec![1f32; cols];
    println!("relative RMSE (‖x − x̂‖ / ‖x‖), {rows} rows × {cols}; in brackets the x²-weighted");
    println!(
        "relative error sqrt(Σx²(x−x̂)² / Σx⁴), which weights big values as x² importance does"
    );
    println!(
        "{:7} {:6} {:>4} | {:>15} | {:>15} | {:>15} | {:>15} | {:>9}",
        "data",
        "format",
        "bpw",
        "min/max RTN",
        "search uniform",
        "search default",
        "search x²",
        "Melem/s"
    );
    let wrel = |x: &[f32], y: &[f32]| {
        let e: f64 = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| (a as f64).powi(2) * (a as f64 - b as f64).powi(2))
            .sum();
        let s: f64 = x.iter().map(|&a| (a as f64).powi(4)).sum();
        (e / s).sqrt()
    };
    for (name, x) in &data {
        for f in PACKED {
            let rtn: Vec<f32> = x.chunks(cols).flat_map(|r| rtn_row(f, r)).collect();
            let t0 = std::time::Instant::now();
            let def = round_trip(f, x, cols, Imp::Default);
            let rate = x.len() as f64 / t0.elapsed().as_secs_f64() / 1e6;
            let uni = round_trip(f, x, cols, Imp::Given(&ones));
            let sq = round_trip(f, x, cols, Imp::Square);
            let cell = |y: &[f32]| format!("{:.4} [{:.4}]", rel_rmse(x, y), wrel(x, y));
            println!(
                "{:7} {:6} {:>4} | {:>15} | {:>15} | {:>15} | {:>15} | {:>9.1}",
                name,
                f.name(),
                f.bits_per_weight(),
                cell(&rtn),
                cell(&uni),
                cell(&def),
                cell(&sq),
                rate
            );
        }
    }
}
