//! The joint refit of a quantized row: with its quants fixed, every block's scale (and min, or
//! one gain per block for the codebook and trellis formats) refitted at once against the true
//! output error `(w − x̂)ᵀ H (w − x̂)`, kept only when it lowers that error.

use super::linalg::{dot_f32, dot_f64, solve_spd};
use super::GptqCode;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::quant::dequantize_row;
use crate::quant::gguf::{f16_at, put_f16};
use crate::quant::search;
use alloc::{format, vec, vec::Vec};

/// The input second-moment matrix of one matmul, full and row-major, with the per-block column
/// sums the scale refit needs (computed once per tensor).
#[derive(Debug, Clone)]
pub struct BlockMoments {
    n: usize,
    block: usize,
    h: Vec<f32>,
    /// `E[i][c] = Σ_{j ∈ block c} H_ij`, `n × blocks`.
    col_sums: Vec<f64>,
}

impl BlockMoments {
    /// From a full symmetric `n × n` matrix and the format's block width.
    pub fn new(h: &[f64], n: usize, block: usize) -> Result<BlockMoments> {
        if n == 0 || block == 0 || !n.is_multiple_of(block) || h.len() != n * n {
            return Err(Error::invalid(
                "hessian",
                format!("{} entries for width {n} in blocks of {block}", h.len()),
            ));
        }
        let nb = n / block;
        let mut col_sums = vec![0f64; n * nb];
        for i in 0..n {
            for c in 0..nb {
                col_sums[i * nb + c] = h[i * n + c * block..i * n + (c + 1) * block].iter().sum();
            }
        }
        Ok(BlockMoments {
            n,
            block,
            h: h.iter().map(|&v| v as f32).collect(),
            col_sums,
        })
    }

    /// `(a − b)ᵀ H (a − b)`: each row's dot in f32 (vectorizable), the total in f64.
    fn error(&self, a: &[f32], b: &[f32], diff: &mut [f32]) -> f64 {
        for ((d, &x), &y) in diff.iter_mut().zip(a).zip(b) {
            *d = x - y;
        }
        let n = self.n;
        (0..n)
            .map(|i| diff[i] as f64 * dot_f32(&self.h[i * n..(i + 1) * n], diff) as f64)
            .sum()
    }
}

/// Checks that a quantized row `out` of `w` matches `moments`, and decodes it.
fn decode_refit_row(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &[u8],
) -> Result<Vec<f32>> {
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    if moments.n != n || moments.block != be || out.len() != n / be * bb {
        return Err(Error::invalid(
            "refit_row_scales",
            format!("a row of {n} does not match the moments ({})", moments.n),
        ));
    }
    let mut xq = vec![0f32; n];
    dequantize_row(format, out, &mut xq)?;
    Ok(xq)
}

/// Replaces `out` (which decodes to `xq`) by `refit` when `refit` decodes finite and has the
/// lower output error against `w`; returns whether it did.
fn keep_if_better(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    xq: &[f32],
    refit: &[u8],
    out: &mut [u8],
) -> Result<bool> {
    let mut xr = vec![0f32; w.len()];
    dequantize_row(format, refit, &mut xr)?;
    if xr.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut diff = vec![0f32; w.len()];
    let before = moments.error(w, xq, &mut diff);
    let after = moments.error(w, &xr, &mut diff);
    if after < before {
        out.copy_from_slice(refit);
        return Ok(true);
    }
    Ok(false)
}

/// Refits every block's scale and min of a quantized VQ row jointly, quants fixed, to minimise
/// the true output error `(w − x̂)ᵀ H (w − x̂)` of the original row `w` (the walk chose quants and
/// scales block by block; this sees the whole row at once). Keeps the new scales only when, after
/// rounding them to f16, the error is lower. Returns whether the row changed. NQ3 and the TQ
/// formats get one gain per block instead ([`refit_row_gains`]); other formats are left as
/// they are.
pub fn refit_row_scales(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &mut [u8],
) -> Result<bool> {
    let (qmax, pack) = match format.spec().gptq {
        Some(GptqCode::Affine { qmax, pack }) => (qmax, pack),
        Some(GptqCode::Codebook { .. } | GptqCode::Trellis(_)) => {
            return refit_row_gains(format, w, moments, out)
        }
        None => return Ok(false),
    };
    let xq = decode_refit_row(format, w, moments, out)?;
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    let nb = n / be;
    // Recover the quants (x̂ = d·q + m exactly, so rounding finds q).
    let mut q = vec![0f32; n];
    for (b, blk) in out.chunks_exact(bb).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        for i in b * be..(b + 1) * be {
            q[i] = if d != 0.0 {
                libm::roundf((xq[i] - m) / d).clamp(0.0, qmax as f32)
            } else {
                0.0
            };
        }
    }
    // G[i][c] = Σ_{j ∈ c} H_ij q_j, and H w.
    let mut g = vec![0f64; n * nb];
    let mut hw = vec![0f64; n];
    for i in 0..n {
        let row = &moments.h[i * n..(i + 1) * n];
        let mut total = 0f64;
        for c in 0..nb {
            let r = c * be..(c + 1) * be;
            g[i * nb + c] = dot_f32(&row[r.clone()], &q[r.clone()]) as f64;
            total += dot_f32(&row[r.clone()], &w[r]) as f64;
        }
        hw[i] = total;
    }
    // Unknowns (d_b, m_b) at 2b, 2b + 1.
    let p = 2 * nb;
    let mut a = vec![0f64; p * p];
    let mut rhs = vec![0f64; p];
    for b in 0..nb {
        for i in b * be..(b + 1) * be {
            let qi = q[i] as f64;
            for c in 0..nb {
                let (gic, eic) = (g[i * nb + c], moments.col_sums[i * nb + c]);
                a[(2 * b) * p + 2 * c] += qi * gic;
                a[(2 * b) * p + 2 * c + 1] += qi * eic;
                a[(2 * b + 1) * p + 2 * c] += gic;
                a[(2 * b + 1) * p + 2 * c + 1] += eic;
            }
            rhs[2 * b] += qi * hw[i];
            rhs[2 * b + 1] += hw[i];
        }
    }
    // Solve for the change from the walked (d, m), so that the small ridge (which keeps
    // directions the calibration never excited solvable) pulls toward them, not toward 0: a
    // block whose inputs never fired keeps its scales.
    let theta0: Vec<f64> = out
        .chunks_exact(bb)
        .flat_map(|blk| [f16_at(blk, 0) as f64, f16_at(blk, 2) as f64])
        .collect();
    for (k, r) in rhs.iter_mut().enumerate() {
        *r -= dot_f64(&a[k * p..(k + 1) * p], &theta0);
    }
    let trace: f64 = (0..p).map(|k| a[k * p + k]).sum();
    let ridge = 1e-7 * trace / p as f64 + f64::MIN_POSITIVE;
    (0..p).for_each(|k| a[k * p + k] += ridge);
    if !solve_spd(&mut a, &mut rhs, p) || rhs.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut refit = vec![0u8; out.len()];
    let mut qb = [0u8; search::MAX_GROUP];
    for (b, blk) in refit.chunks_exact_mut(bb).enumerate() {
        let d = (theta0[2 * b] + rhs[2 * b]) as f32;
        let m = (theta0[2 * b + 1] + rhs[2 * b + 1]) as f32;
        for (k, qk) in qb[..be].iter_mut().enumerate() {
            *qk = q[b * be + k] as u8;
        }
        pack(d, m, &qb[..be], blk);
    }
    keep_if_better(format, w, moments, &xq, &refit, out)
}

/// Ridge of the per-block gain refit, relative to each block's own diagonal term.
const GAIN_RIDGE: f64 = 1e-2;

/// [`refit_row_scales`] for the formats whose block decodes to `d · level` (NQ3, TQ2–TQ4):
/// one gain per block, `x̂_b → α_b · x̂_b`, fitted jointly over the row with the levels fixed,
/// then `d_b · α_b` is stored in place of `d_b`.
fn refit_row_gains(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &mut [u8],
) -> Result<bool> {
    let xq = decode_refit_row(format, w, moments, out)?;
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    let nb = n / be;
    // G[i][c] = Σ_{j ∈ c} H_ij x̂_j, and H w.
    let mut g = vec![0f64; n * nb];
    let mut hw = vec![0f64; n];
    for i in 0..n {
        let row = &moments.h[i * n..(i + 1) * n];
        for c in 0..nb {
            let r = c * be..(c + 1) * be;
            g[i * nb + c] = dot_f32(&row[r.clone()], &xq[r]) as f64;
        }
        hw[i] = dot_f32(row, w) as f64;
    }
    let mut a = vec![0f64; nb * nb];
    let mut rhs = vec![0f64; nb];
    for b in 0..nb {
        for i in b * be..(b + 1) * be {
            let xi = xq[i] as f64;
            for c in 0..nb {
                a[b * nb + c] += xi * g[i * nb + c];
            }
            rhs[b] += xi * hw[i];
        }
    }
    // Solve for the change from α = 1 with a ridge pulling toward it, relative to each block's
    // own term: a block whose inputs barely fired in calibration has a tiny `A[b][b]`, and
    // without it its gain would fit the sampling noise of the cross terms (sign flips and 20×
    // gains were seen on synthetic data).
    for k in 0..nb {
        let s: f64 = a[k * nb..(k + 1) * nb].iter().sum();
        rhs[k] -= s;
    }
    let trace: f64 = (0..nb).map(|k| a[k * nb + k]).sum();
    let floor = 1e-7 * trace / nb as f64 + f64::MIN_POSITIVE;
    (0..nb).for_each(|k| a[k * nb + k] += GAIN_RIDGE * a[k * nb + k] + floor);
    if !solve_spd(&mut a, &mut rhs, nb) || rhs.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut refit = out.to_vec();
    for (blk, delta) in refit.chunks_exact_mut(bb).zip(&rhs) {
        // A gain outside [1/2, 2] is more likely noise than a better fit: keep that block.
        let gain = 1.0 + *delta as f32;
        if (0.5..=2.0).contains(&gain) {
            let d = f16_at(blk, 0);
            put_f16(blk, 0, search::round_f16(d * gain));
        }
    }
    keep_if_better(format, w, moments, &xq, &refit, out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{inverse_factor, quantize_row_gptq, GptqScratch};
    use super::*;

    #[test]
    fn scale_refit_never_raises_the_output_error() {
        let n = 192;
        let mut seed = 5;
        let (h, xs) = second_moment(n, 500, &mut seed);
        let f = inverse_factor(&h, n, 0.03).unwrap();
        let mut s = GptqScratch::default();
        for format in [
            Format::VQ2,
            Format::VQ3,
            Format::VQ4,
            Format::NQ3,
            Format::TQ3,
            Format::Q4_1,
        ] {
            let m = BlockMoments::new(&h, n, format.block_elems()).unwrap();
            let (mut before, mut after, mut changed) = (0f64, 0f64, 0);
            for _row in 0..6 {
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
                let mut bytes = vec![0u8; format.row_bytes(n, "t").unwrap()];
                quantize_row_gptq(format, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
                let mut x = vec![0f32; n];
                dequantize_row(format, &bytes, &mut x).unwrap();
                before += output_error(&xs, n, &w, &x);
                changed += refit_row_scales(format, &w, &m, &mut bytes).unwrap() as usize;
                dequantize_row(format, &bytes, &mut x).unwrap();
                after += output_error(&xs, n, &w, &x);
            }
            assert!(
                after <= before * (1.0 + 1e-6),
                "{}: {after} > {before}",
                format.name()
            );
            if format == Format::Q4_1 {
                assert_eq!(changed, 0, "only VQ, NQ3 and TQ rows are refitted");
            } else {
                assert!(changed > 0, "{}: no row improved", format.name());
            }
        }
        assert!(BlockMoments::new(&[0.0; 4], 2, 64).is_err());
    }

    #[test]
    fn scale_refit_keeps_blocks_whose_inputs_never_fired() {
        let n = 128;
        let mut seed = 9;
        let (mut h, _) = second_moment(n, 300, &mut seed);
        for i in 0..n {
            for j in 0..n {
                if i >= 64 || j >= 64 {
                    h[i * n + j] = 0.0;
                }
            }
        }
        let f = inverse_factor(&h, n, 0.01).unwrap();
        let m = BlockMoments::new(&h, n, 64).unwrap();
        let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
        let mut bytes = vec![0u8; Format::VQ4.row_bytes(n, "t").unwrap()];
        let mut s = GptqScratch::default();
        quantize_row_gptq(Format::VQ4, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
        let mut before = vec![0f32; n];
        dequantize_row(Format::VQ4, &bytes, &mut before).unwrap();
        refit_row_scales(Format::VQ4, &w, &m, &mut bytes).unwrap();
        let mut after = vec![0f32; n];
        dequantize_row(Format::VQ4, &bytes, &mut after).unwrap();
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let (b, a) = (rms(&before[64..]), rms(&after[64..]));
        assert!((a - b).abs() <= 0.01 * b, "dead block rms {b} -> {a}");
    }

    #[test]
    fn gain_refit_stays_bounded_where_inputs_barely_fired() {
        // Block 1's inputs are a thousand times weaker: its gain must not chase sampling noise.
        let n = 192;
        let mut seed = 21;
        let (mut h, _) = second_moment(n, 600, &mut seed);
        for i in 0..n {
            for j in 0..n {
                let weak = |c: usize| if (64..128).contains(&c) { 1e-3 } else { 1.0 };
                h[i * n + j] *= weak(i) * weak(j);
            }
        }
        let f = inverse_factor(&h, n, 0.01).unwrap();
        let m = BlockMoments::new(&h, n, 64).unwrap();
        let mut s = GptqScratch::default();
        for format in [Format::TQ3, Format::NQ3] {
            for _row in 0..8 {
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
                let mut bytes = vec![0u8; format.row_bytes(n, "t").unwrap()];
                quantize_row_gptq(format, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
                let bb = format.block_bytes();
                let before: Vec<f32> = (0..3).map(|b| f16_at(&bytes, b * bb)).collect();
                refit_row_scales(format, &w, &m, &mut bytes).unwrap();
                for (b, &d0) in before.iter().enumerate() {
                    let ratio = f16_at(&bytes, b * bb) / d0;
                    assert!((0.49..=2.01).contains(&ratio), "block {b}: gain {ratio}");
                }
            }
        }
    }
}
