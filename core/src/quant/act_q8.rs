//! 8-bit activations: an f32 vector quantized in blocks of 32 so that weight-times-activation dot
//! products can run on integers (the `dot_q8` of every format file).
//!
//! One [`BlockQ8Act`] holds 32 activations `a[i] ≈ d * qs[i]` with `d = max|a| / 127` (f32, not
//! rounded to f16: the scale costs nothing here and keeps 8-bit precision) and `qs[i] =
//! round(a[i] / d)` in `-127..=127`, plus `sum = Σ qs[i]`, which asymmetric weight formats need for
//! their min term: `Σ (dw·q + m)·(da·qa) = dw·da·Σ q·qa + m·da·sum`.
//!
//! The relative error of one activation is at most `0.5 / 127` of its block's largest magnitude,
//! so a dot product against it is off by about 0.2–0.5% of `Σ |w·a|` on random data.

use crate::error::{Error, Result};
use alloc::format;

/// Activations per block.
pub const QK8: usize = 32;

/// 32 activations quantized to `i8` with one f32 scale and the integer sum of the quants.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8Act {
    /// Scale: activation `i` is `d * qs[i]`.
    pub d: f32,
    /// `Σ qs[i]`, for the min term of asymmetric weight formats.
    pub sum: i32,
    /// Quants in `-127..=127`.
    pub qs: [i8; QK8],
}
const _: () = assert!(core::mem::size_of::<BlockQ8Act>() == 40);

impl BlockQ8Act {
    /// A block of 32 zeros.
    pub const ZERO: BlockQ8Act = BlockQ8Act {
        d: 0.0,
        sum: 0,
        qs: [0; QK8],
    };

    /// Quantize 32 activations (`x.len() == 32`). Never panics: NaN quantizes to 0, infinities
    /// make `d` infinite.
    pub fn quantize(x: &[f32]) -> BlockQ8Act {
        debug_assert_eq!(x.len(), QK8);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8Act::ZERO;
        b.d = d;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            // `as i8` saturates and maps NaN to 0; the clamp keeps -128 out.
            *q = (libm::roundf(v * id) as i8).max(-127);
        }
        b.sum = b.qs.iter().map(|&q| q as i32).sum();
        b
    }

    /// Decode: `out[i] = d * qs[i]` (`out.len() == 32`).
    pub fn dequantize(&self, out: &mut [f32]) {
        debug_assert_eq!(out.len(), QK8);
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}

/// Quantize `x` (a whole number of 32-blocks) into `out` (exactly `x.len() / 32` blocks).
pub fn quantize_activations(x: &[f32], out: &mut [BlockQ8Act]) -> Result<()> {
    if !x.len().is_multiple_of(QK8) || out.len() != x.len() / QK8 {
        return Err(Error::invalid(
            "quantize_activations",
            format!(
                "{} activations need to be whole 32-blocks filling {} output blocks",
                x.len(),
                out.len()
            ),
        ));
    }
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK8)) {
        *b = BlockQ8Act::quantize(xs);
    }
    Ok(())
}

/// `Σ a[i] * b[i]` over 32 quants, in i32 (cannot overflow: |term| ≤ 127 · 128).
#[inline(always)]
pub(crate) fn isum32(a: &[i8; QK8], b: impl Iterator<Item = i32>) -> i32 {
    a.iter().zip(b).map(|(&x, y)| x as i32 * y).sum()
}

#[cfg(test)]
mod tests {
    use super::super::gguf::testutil::Rng;
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip_and_sum() {
        let mut rng = Rng::new(5);
        let x = rng.normals(32 * 7);
        let mut blocks = vec![BlockQ8Act::ZERO; 7];
        quantize_activations(&x, &mut blocks).unwrap();
        let mut y = [0f32; 32];
        for (b, xs) in blocks.iter().zip(x.chunks_exact(32)) {
            assert_eq!(b.sum, b.qs.iter().map(|&q| q as i32).sum::<i32>());
            b.dequantize(&mut y);
            for (&a, &v) in xs.iter().zip(&y) {
                assert!((a - v).abs() <= b.d * 0.5001, "{a} {v}");
            }
        }
        assert!(quantize_activations(&x[..31], &mut blocks[..1]).is_err());
        assert!(quantize_activations(&x, &mut blocks[..6]).is_err());
    }

    #[test]
    fn edge_values() {
        let z = BlockQ8Act::quantize(&[0.0; 32]);
        assert_eq!(z, BlockQ8Act::ZERO);
        let c = BlockQ8Act::quantize(&[-3.0; 32]);
        assert!(c.qs.iter().all(|&q| q == -127));
        assert_eq!(c.sum, -127 * 32);
        let mut x = [1.0f32; 32];
        x[0] = f32::NAN;
        x[1] = f32::INFINITY;
        let _ = BlockQ8Act::quantize(&x);
        let big: [f32; 32] = core::array::from_fn(|i| if i % 2 == 0 { 3e38 } else { -3e38 });
        let b = BlockQ8Act::quantize(&big);
        assert!(b.qs.iter().all(|&q| q.abs() == 127));
    }
}

/// Checks shared by the format files: layout, round trip, edge blocks and the two reference dots.
#[cfg(test)]
pub(crate) mod testutil {
    use super::{quantize_activations, BlockQ8Act, QK8};
    use crate::quant::gguf::testutil::{rel_rmse, round_trip, Rng};
    use crate::quant::gguf::{f16_at, put_f16};
    use alloc::vec;
    use alloc::vec::Vec;

    type Deq = fn(&[u8], &mut [f32]);
    type Quant = fn(&[f32], &mut [u8]);
    type DotF32 = fn(&[u8], &[f32]) -> f32;
    type DotQ8 = fn(&[u8], &[BlockQ8Act]) -> f32;

    /// An affine (`d * q + m`, f16 `d` at byte 0 and `m` at byte 2) format decodes as its doc
    /// says (`quant_of(block, i)` is the doc's bit recipe) and `pack` inverts it.
    pub fn check_affine_layout(
        deq: Deq,
        pack: fn(f32, f32, &[u8], &mut [u8]),
        bytes: usize,
        qmax: u8,
        quant_of: fn(&[u8], usize) -> u8,
    ) {
        let elems = 64;
        let mut rng = Rng::new(3);
        let mut b = vec![0u8; bytes];
        let mut y = vec![0f32; elems];
        for _ in 0..200 {
            rng.fill_bytes(&mut b);
            put_f16(&mut b, 0, rng.normal());
            put_f16(&mut b, 2, rng.normal());
            deq(&b, &mut y);
            let (d, m) = (f16_at(&b, 0), f16_at(&b, 2));
            for (i, &v) in y.iter().enumerate() {
                let q = quant_of(&b, i);
                assert!(q <= qmax);
                assert_eq!(v.to_bits(), (d * q as f32 + m).to_bits());
            }
            let q: Vec<u8> = (0..elems)
                .map(|_| (rng.next_u64() % (qmax as u64 + 1)) as u8)
                .collect();
            pack(d, m, &q, &mut b);
            assert_eq!((f16_at(&b, 0), f16_at(&b, 2)), (d, m));
            for (i, &qi) in q.iter().enumerate() {
                assert_eq!(quant_of(&b, i), qi, "element {i}");
            }
        }
    }

    /// Round-trip relative RMSE on 16384 N(0,1) values is below `budget`.
    pub fn check_round_trip(quant: Quant, deq: Deq, bytes: usize, elems: usize, budget: f32) {
        let x = Rng::new(1).normals(16384);
        let y = round_trip(quant, deq, bytes, elems, &x);
        let e = rel_rmse(&x, &y);
        std::println!("round-trip rel rmse {e:.5} (budget {budget})");
        assert!(e < budget, "rel rmse {e}");
    }

    /// Zeros, constants, huge, tiny and non-finite blocks: no panic, and exact where possible.
    pub fn check_special_blocks(quant: Quant, deq: Deq, bytes: usize, elems: usize) {
        special_blocks(quant, deq, bytes, elems, false);
    }

    /// [`check_special_blocks`] for the formats that decode to `d · level` with no level 1 (NQ3,
    /// the trellis codes): constants come back exact only up to the f16 rounding of `d`, and ±3e4
    /// only finite.
    pub fn check_codebook_special_blocks(quant: Quant, deq: Deq, bytes: usize, elems: usize) {
        special_blocks(quant, deq, bytes, elems, true);
    }

    fn special_blocks(quant: Quant, deq: Deq, bytes: usize, elems: usize, codebook: bool) {
        let mut b = vec![0u8; bytes];
        let mut y = vec![1f32; elems];
        quant(&vec![0.0; elems], &mut b);
        deq(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        for c in [-2.5f32, 0.375, 1000.0] {
            quant(&vec![c; elems], &mut b);
            deq(&b, &mut y);
            let tol = if codebook { 1e-3 * c.abs() } else { 0.0 };
            assert!(
                y.iter().all(|&v| (v - c).abs() <= tol),
                "constant {c}: {y:?}"
            );
        }
        if !codebook {
            let x: Vec<f32> = (0..elems)
                .map(|i| if i % 2 == 0 { 3.0e4 } else { -3.0e4 })
                .collect();
            quant(&x, &mut b);
            deq(&b, &mut y);
            assert!(rel_rmse(&x, &y) < 1e-3, "±3e4: {y:?}");
        }
        for v in [3e4f32, 3e38, 1e-30, 1e-8] {
            let x: Vec<f32> = (0..elems)
                .map(|i| if i % 3 == 0 { v } else { -v * 0.5 })
                .collect();
            quant(&x, &mut b);
            deq(&b, &mut y);
            assert!(y.iter().all(|v| v.is_finite()), "{v}");
        }
        let mut x = vec![1.0f32; elems];
        x[3] = f32::NAN;
        x[5] = f32::NEG_INFINITY;
        quant(&x, &mut b);
        deq(&b, &mut y);
        assert!(y.iter().all(|v| v.is_finite()), "NaN and -inf: {y:?}");
    }

    /// `Σ |a·b|` and `Σ a·b` in f64.
    fn dot64(a: &[f32], b: &[f32]) -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
            (s + x as f64 * y as f64, m + (x as f64 * y as f64).abs())
        })
    }

    /// The two reference dots of a format on rows of odd block counts and on edge blocks:
    /// - `dot_f32` equals dequantize-then-dot within 1e-6 of `Σ |w·x|`;
    /// - `dot_q8` equals the dot of the dequantized weights with the dequantized activations
    ///   within 1e-5 of its `Σ |w·a|`, and the f32 dot within 1% of `Σ |w·x|`.
    pub fn check_dots(
        deq: Deq,
        dot_f32: DotF32,
        dot_q8: DotQ8,
        bytes: usize,
        elems: usize,
        f16_offsets: &[usize],
    ) {
        dots(deq, Some(dot_f32), dot_q8, bytes, elems, f16_offsets);
    }

    /// [`check_dots`] for a format with an 8-bit reference dot only (the k-quants, IQ4_XS).
    pub fn check_dot_q8(
        deq: Deq,
        dot_q8: DotQ8,
        bytes: usize,
        elems: usize,
        f16_offsets: &[usize],
    ) {
        dots(deq, None, dot_q8, bytes, elems, f16_offsets);
    }

    fn dots(
        deq: Deq,
        dot_f32: Option<DotF32>,
        dot_q8: DotQ8,
        bytes: usize,
        elems: usize,
        f16_offsets: &[usize],
    ) {
        let mut rng = Rng::new(0xD07);
        let nact = elems / QK8;
        let (mut worst_f32, mut worst_exact, mut worst_q8) = (0f64, 0f64, 0f64);
        for case in 0..40 {
            for nb in [1usize, 2, 3, 5, 7, 17, 33] {
                let mut row = vec![0u8; nb * bytes];
                rng.fill_bytes(&mut row);
                let x: Vec<f32> = (0..nb * elems).map(|_| rng.normal()).collect();
                for blk in row.chunks_exact_mut(bytes) {
                    // All-zero and all-equal quant bytes; the f16 fields are set after.
                    if case == 3 {
                        blk.fill(0);
                    }
                    if case == 4 {
                        let fill = blk[bytes - 1];
                        blk.fill(fill);
                    }
                    for &o in f16_offsets {
                        let v = match case {
                            0 => 0.0,
                            1 => 65504.0,
                            2 => -65504.0,
                            _ => rng.normal() * 0.05,
                        };
                        put_f16(blk, o, v);
                    }
                }
                let mut w = vec![0f32; nb * elems];
                for (blk, o) in row.chunks_exact(bytes).zip(w.chunks_exact_mut(elems)) {
                    deq(blk, o);
                }
                let mut act = vec![BlockQ8Act::ZERO; nb * nact];
                quantize_activations(&x, &mut act).unwrap();
                let mut xa = vec![0f32; nb * elems];
                for (a, o) in act.iter().zip(xa.chunks_exact_mut(QK8)) {
                    a.dequantize(o);
                }
                let (mut got_f32, mut got_q8) = (0f32, 0f32);
                for b in 0..nb {
                    let blk = &row[b * bytes..(b + 1) * bytes];
                    if let Some(dot_f32) = dot_f32 {
                        got_f32 += dot_f32(blk, &x[b * elems..(b + 1) * elems]);
                    }
                    got_q8 += dot_q8(blk, &act[b * nact..(b + 1) * nact]);
                }
                let (want, scale) = dot64(&w, &x);
                let (want_a, scale_a) = dot64(&w, &xa);
                let rel = |got: f32, want: f64, scale: f64| {
                    if scale == 0.0 {
                        (got as f64).abs()
                    } else {
                        (got as f64 - want).abs() / scale
                    }
                };
                let (e1, e2, e3) = (
                    rel(got_f32, want, scale),
                    rel(got_q8, want_a, scale_a),
                    rel(got_q8, want, scale),
                );
                worst_f32 = worst_f32.max(e1);
                worst_exact = worst_exact.max(e2);
                worst_q8 = worst_q8.max(e3);
                assert!(
                    dot_f32.is_none() || e1 <= 1e-6,
                    "case {case} nb {nb}: dot_f32 {got_f32} vs {want}"
                );
                assert!(
                    e2 <= 1e-5,
                    "case {case} nb {nb}: dot_q8 {got_q8} vs {want_a}"
                );
                assert!(
                    e3 <= 1e-2,
                    "case {case} nb {nb}: dot_q8 {got_q8} vs f32 {want}"
                );
            }
        }
        std::println!(
            "worst: dot_f32 {worst_f32:.2e}, dot_q8 vs dequantized {worst_exact:.2e}, \
             dot_q8 vs f32 {worst_q8:.2e} (of Σ|w·x|)"
        );
    }
}
