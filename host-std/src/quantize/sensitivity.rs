//! The loss `convert --budget` minimises: an estimate of each matrix's KLD contribution in each
//! candidate format, cheap enough to compute during a conversion.
//!
//! `loss(t, f) = c_kind(t) · MB(t) · ρ(t, f) / Δρ_ref`, where
//!
//! - `ρ(t, f) = E‖ΔW x‖² / E‖W x‖²` is the relative output error of matrix `t` quantized to `f`
//!   with the per-block weighted search, measured on [`SAMPLE_ROWS`] evenly spaced rows against
//!   the calibration's input second moments `E[x xᵀ]` (the diagonal alone when the stats have no
//!   matrices, uniform without calibration);
//! - `c_kind` is the KLD cost per MB measured by the KL probes the `--bits 2` recipe came from
//!   (SmolLM2, rotated, one tensor class at a time from VQ3 to VQ2: README "Recipes"), `MB(t)` the
//!   MB one bit per weight of `t` is, and `Δρ_ref` ≈ 0.076 the relative error VQ3 → VQ2 adds on
//!   Gaussian-like weights (0.1029 − 0.027, README's format tables). So a class's probe is
//!   reproduced when its matrices move VQ3 → VQ2 by the typical amount, and the loss is in
//!   (rough) KLD units.
//!
//! Why this can carry over from the rotated probes to an unrotated model: the outputs of q, k,
//! v, gate and up are not rotated at all, and those of `attn_output` and `ffn_down` are rotated
//! by an orthogonal matrix, which keeps their error energy; so the relative output error means
//! the same in both, and what differs between models and bases (outlier channels, layers whose
//! weights quantize badly) is in `ρ`, measured on the model at hand.
//!
//! The search quantizer stands in for the converter's error-compensated walk (which lowers every
//! format's error, the trellis formats' most) because it is a hundred times cheaper; the final
//! KLDs (README, budget table) are the check that the proxy ranks well enough.

use super::calibrate::Calibration;
use super::knapsack::Candidate;
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use vspec_core::format::Format;
use vspec_core::model::WeightView;
use vspec_core::quant;

/// The formats a budget chooses among, cheapest first: the packed formats of the `--bits`
/// recipes (VQ, NQ3, TQ), Q4_1 (a lossless copy of a Q4_1 source) and Q5_1 (`--bits 4`'s
/// embedding), and Q8_0 at the top.
pub const CANDIDATES: [Format; 10] = [
    Format::TQ2,
    Format::VQ2,
    Format::NQ3,
    Format::TQ3,
    Format::VQ3,
    Format::TQ4,
    Format::VQ4,
    Format::Q4_1,
    Format::Q5_1,
    Format::Q8_0,
];

/// Rows of each matrix the error is measured on: 32 rows of 576 are 18k weights, enough that
/// the estimate's sampling noise (a few % between disjoint samples) is small next to the factors
/// of 2–4 between formats, and the measurement of all ten formats takes seconds.
pub const SAMPLE_ROWS: usize = 32;

/// The VQ3 → VQ2 change of relative error the probes' costs are per (module doc).
const DELTA_RHO_REF: f64 = 0.076;

/// KLD per MB saved going VQ3 → VQ2, per tensor class, from the probes (README "Recipes").
const PROBE_KLD_PER_MB: [(&str, f64); 8] = [
    ("attn_q", 0.027),
    ("attn_output", 0.033),
    ("ffn_gate", 0.043),
    ("ffn_down", 0.054),
    ("head", 0.060),
    ("ffn_up", 0.062),
    ("attn_k", 0.073),
    ("attn_v", 0.34),
];

/// The cost for a class the probes did not cover: the median of theirs.
const UNPROBED_KLD_PER_MB: f64 = 0.054;

/// The probe cost per MB for the matrix `name` (`blk.N.attn_q.weight`, `token_embd.weight`...).
pub fn kld_per_mb(name: &str) -> f64 {
    let class = match name {
        "token_embd.weight" | "output.weight" => "head",
        _ => name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map(|(_, r)| r.trim_end_matches(".weight"))
            .unwrap_or(""),
    };
    PROBE_KLD_PER_MB
        .iter()
        .find(|(c, _)| *c == class)
        .map_or(UNPROBED_KLD_PER_MB, |(_, v)| *v)
}

/// `vᵀ H v` for `H` given as its upper triangle, row by row (`n(n+1)/2` values).
fn quad_upper(upper: &[f32], v: &[f32]) -> f64 {
    let n = v.len();
    let mut acc = 0f64;
    let mut k = 0;
    for i in 0..n {
        let row = &upper[k..k + n - i];
        // f32 inside a row (vectorises), f64 across rows.
        let off: f32 = row[1..].iter().zip(&v[i + 1..]).map(|(h, x)| h * x).sum();
        acc += v[i] as f64 * (row[0] as f64 * v[i] as f64 + 2.0 * off as f64);
        k += n - i;
    }
    acc
}

/// How the output error of one matrix is weighed.
enum Weigh<'c> {
    /// `E[x xᵀ]` (upper triangle).
    Full(&'c [f32]),
    /// `E[xᵢ²]` only.
    Diagonal(&'c [f32]),
    /// No statistics.
    Uniform,
}

impl Weigh<'_> {
    fn energy(&self, v: &[f32]) -> f64 {
        match self {
            Weigh::Full(u) => quad_upper(u, v),
            Weigh::Diagonal(d) => v.iter().zip(*d).map(|(x, h)| (x * x * h) as f64).sum(),
            Weigh::Uniform => v.iter().map(|x| (x * x) as f64).sum(),
        }
    }
}

/// The loss of matrix `name` (view `w`) in each of `formats`, in that order, measured on
/// [`SAMPLE_ROWS`] rows in parallel (the sums are formed in row order, so the result does not
/// depend on the thread count). A format equal to the stored one is a copy and loses nothing.
pub fn measure(
    name: &str,
    w: &WeightView<'_>,
    formats: &[Format],
    cal: Option<&Calibration>,
) -> Result<Vec<Candidate>> {
    let stats = cal.and_then(|c| c.tensors.get(name).map(|s| (c, s)));
    if let Some((c, s)) = stats {
        if s.mean_sq.len() != w.cols {
            return Err(anyhow!(
                "{}: tensor '{name}' has {} channels, the model {} (calibrated on {})",
                c.file,
                s.mean_sq.len(),
                w.cols,
                c.source
            ));
        }
    }
    let importance = stats.map(|(_, s)| s.mean_sq.as_slice());
    let weigh = match stats {
        Some((c, s)) => match s.hessian.and_then(|h| c.hessians.get(h)) {
            Some(m) if m.n == w.cols => Weigh::Full(&m.upper),
            _ => Weigh::Diagonal(&s.mean_sq),
        },
        None => Weigh::Uniform,
    };
    let n = SAMPLE_ROWS.min(w.rows);
    // Per sampled row: the signal energy, then each format's error energy.
    let per_row: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| -> Result<Vec<f64>> {
            let r = i * w.rows / n;
            let mut row = vec![0f32; w.cols];
            quant::dequantize_row(w.format, w.row(r), &mut row)
                .map_err(|e| anyhow!("tensor '{name}' row {r}: {e}"))?;
            let mut out = vec![weigh.energy(&row)];
            let mut back = vec![0f32; w.cols];
            for &f in formats {
                let lossless = f == w.format || (w.format == Format::Q4_0 && f == Format::Q4_1);
                if lossless {
                    out.push(0.0);
                    continue;
                }
                let mut bytes = vec![0u8; f.row_bytes(w.cols, name)?];
                quant::quantize_row(f, &row, importance, &mut bytes)
                    .and_then(|_| quant::dequantize_row(f, &bytes, &mut back))
                    .map_err(|e| anyhow!("tensor '{name}' row {r} in {}: {e}", f.name()))?;
                let diff: Vec<f32> = row.iter().zip(&back).map(|(a, b)| a - b).collect();
                out.push(weigh.energy(&diff));
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    let mut sums = vec![0f64; formats.len() + 1];
    for r in &per_row {
        for (s, v) in sums.iter_mut().zip(r) {
            *s += v;
        }
    }
    let mb_per_bit = (w.rows * w.cols) as f64 / 8e6;
    let scale = kld_per_mb(name) * mb_per_bit / DELTA_RHO_REF;
    formats
        .iter()
        .enumerate()
        .map(|(k, &f)| {
            let rho = if sums[0] > 0.0 {
                sums[k + 1] / sums[0]
            } else {
                0.0
            };
            Ok(Candidate {
                format: f,
                bytes: f.tensor_bytes(w.cols, w.rows, name)? as u64,
                loss: scale * rho,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_names() {
        assert_eq!(kld_per_mb("blk.3.attn_v.weight"), 0.34);
        assert_eq!(kld_per_mb("blk.12.ffn_up.weight"), 0.062);
        assert_eq!(kld_per_mb("token_embd.weight"), 0.060);
        assert_eq!(kld_per_mb("output.weight"), 0.060);
        assert_eq!(kld_per_mb("output_mix.weight"), UNPROBED_KLD_PER_MB);
    }

    #[test]
    fn quadratic_form_of_the_upper_triangle() {
        // H = [[2, 1, 0], [1, 3, -1], [0, -1, 4]], v = (1, 2, -1): vᵀHv = 2 + 12 + 4 + 2·(2 + 2).
        let upper = [2.0, 1.0, 0.0, 3.0, -1.0, 4.0];
        assert_eq!(quad_upper(&upper, &[1.0, 2.0, -1.0]), 26.0);
    }

    #[test]
    fn fewer_bits_lose_more_and_a_copy_nothing() {
        let (rows, cols) = (40, 128);
        let mut seed = 7u32;
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5).to_le_bytes()
            })
            .collect();
        let w = WeightView {
            format: Format::F32,
            rows,
            cols,
            row_bytes: cols * 4,
            data: &data,
            layout: vspec_core::model::Layout::RowMajor,
        };
        let fs = [
            Format::VQ2,
            Format::VQ3,
            Format::VQ4,
            Format::Q8_0,
            Format::F32,
        ];
        let c = measure("blk.0.ffn_up.weight", &w, &fs, None).unwrap();
        assert!(c.windows(2).all(|p| p[0].loss > p[1].loss), "{c:?}");
        assert_eq!(c[4].loss, 0.0);
        assert_eq!(c[0].bytes, (rows * cols / 64 * 20) as u64);
        // Four levels over uniform noise leave (1/4)² of its energy: ρ ≈ 0.0625 (measured 0.059).
        let rho = c[0].loss / (0.062 * (rows * cols) as f64 / 8e6 / DELTA_RHO_REF);
        assert!((0.04..0.08).contains(&rho), "{rho}");
    }
}
