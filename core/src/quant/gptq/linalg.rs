//! The linear algebra under GPTQ: the damped inverse Cholesky factor of the input second-moment
//! matrix, and a small symmetric positive definite solver for the scale refit. Sums run in a fixed
//! order, so every result is deterministic.

use crate::error::{Error, Result};
use alloc::{format, vec, vec::Vec};

/// The upper Cholesky factor `U` of a damped `H⁻¹`, row-major `n × n` (the lower triangle is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct InverseFactor {
    n: usize,
    u: Vec<f32>,
}

impl InverseFactor {
    /// Columns (the matmul's input width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row `i` of `U`, all `n` entries.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.u[i * self.n..(i + 1) * self.n]
    }
}

/// `Σ aᵢbᵢ` with four independent partial sums (so the compiler can vectorize it; the order is
/// fixed, so the result is deterministic).
pub(super) fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ aᵢbᵢ` in f32 with eight independent partial sums (vectorizable, fixed order).
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// In-place lower Cholesky `A = L Lᵀ` of a row-major `n × n` symmetric matrix (only the lower
/// triangle is read; the upper is zeroed). `false` when `A` is not positive definite.
fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let dot = dot_f64(&a[ri..ri + j], &a[rj..rj + j]);
            let s = a[ri + j] - dot;
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return false;
                }
                a[ri + i] = libm::sqrt(s);
            } else {
                a[ri + j] = s / a[rj + j];
            }
        }
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    true
}

/// The inverse of a lower-triangular `L` (row-major `n × n`), row by row: row `i` of `L⁻¹` is
/// `(eᵢ − Σₖ₍ₖ<ᵢ₎ Lᵢₖ · row k of L⁻¹) / Lᵢᵢ`, contiguous updates only.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                for (r, &xk) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *r -= lik * xk;
                }
            }
        }
        let inv = 1.0 / l[i * n + i];
        row[..=i].iter_mut().for_each(|v| *v *= inv);
    }
    x
}

/// `U` with `UᵀU = (H + λ·μ·I)⁻¹` for a symmetric `n × n` second-moment matrix `h` (row-major,
/// full), `μ` the mean of the positive diagonal entries. Columns that never saw a nonzero input
/// (`Hᵢᵢ = 0`) get `Hᵢᵢ = μ` first, so they stay independent and on the same scale. When `H` is not positive definite even after damping (rounding in a
/// rank-deficient matrix), the damping is raised tenfold, twice at most, before giving up.
///
/// Uses the reversal identity: with `P` the reversal permutation and `PHP = L'L'ᵀ`,
/// `U = P L'⁻¹ P` is upper triangular and `UᵀU = H⁻¹`, so one Cholesky and one triangular
/// inverse suffice.
pub fn inverse_factor(h: &[f64], n: usize, damp: f64) -> Result<InverseFactor> {
    const WHAT: &str = "hessian";
    if n == 0 || h.len() != n * n {
        return Err(Error::invalid(
            WHAT,
            format!("{} entries is not a {n} × {n} matrix", h.len()),
        ));
    }
    if let Some(v) = h.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(WHAT, format!("entry {v} is not finite")));
    }
    let live: Vec<f64> = (0..n).map(|i| h[i * n + i]).filter(|&d| d > 0.0).collect();
    let mean_diag = if live.is_empty() {
        1.0
    } else {
        live.iter().sum::<f64>() / live.len() as f64
    };
    let mut lambda = damp.max(1e-6) * mean_diag;
    for _ in 0..3 {
        // A = P H P, damped.
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
            let d = &mut a[i * n + i];
            if *d <= 0.0 {
                *d = mean_diag;
            }
            *d += lambda;
        }
        if cholesky_lower(&mut a, n) {
            let linv = invert_lower(&a, n);
            let mut u = vec![0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = linv[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Ok(InverseFactor { n, u });
        }
        lambda *= 10.0;
    }
    Err(Error::invalid(
        WHAT,
        "the matrix is not positive definite even with damping",
    ))
}

/// Solves the symmetric positive definite `a x = b` (`p × p`, row-major) in place into `b` by
/// Cholesky; `false` when `a` is not positive definite.
pub(super) fn solve_spd(a: &mut [f64], b: &mut [f64], p: usize) -> bool {
    if !cholesky_lower(a, p) {
        return false;
    }
    for i in 0..p {
        let s = b[i] - dot_f64(&a[i * p..i * p + i], &b[..i]);
        b[i] = s / a[i * p + i];
    }
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| a[k * p + i] * b[k]).sum();
        b[i] = (b[i] - s) / a[i * p + i];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn factor_inverts_the_damped_matrix() {
        let mut seed = 7;
        for n in [1, 2, 5, 64, 130] {
            let (h, _) = second_moment(n, 3 * n + 4, &mut seed);
            let damp = 0.01;
            let f = inverse_factor(&h, n, damp).unwrap();
            let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
            // (UᵀU)(H + λI) = I.
            for i in 0..n {
                for j in 0..n {
                    let mut v = 0f64;
                    for k in 0..n {
                        let hinv_ik: f64 = (0..n)
                            .map(|m| f.u[m * n + i] as f64 * f.u[m * n + k] as f64)
                            .sum();
                        let hkj = h[k * n + j] + if k == j { damp * mean } else { 0.0 };
                        v += hinv_ik * hkj;
                    }
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 2e-3, "n={n} ({i},{j}): {v}");
                }
                for j in 0..i {
                    assert_eq!(f.u[i * n + j], 0.0);
                }
            }
            if n > 10 {
                break; // the O(n⁴) check above is slow beyond small sizes
            }
        }
    }

    #[test]
    fn dead_channels_and_bad_input() {
        // A zero matrix (every channel dead) still factors: it becomes the identity.
        let f = inverse_factor(&[0.0; 9], 3, 0.01).unwrap();
        assert!((f.u[0] - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert!(inverse_factor(&[1.0; 8], 3, 0.01).is_err());
        assert!(inverse_factor(&[f64::NAN; 4], 2, 0.01).is_err());
        // Indefinite beyond what damping fixes.
        assert!(inverse_factor(&[1.0, 100.0, 100.0, 1.0], 2, 0.01).is_err());
    }
}
