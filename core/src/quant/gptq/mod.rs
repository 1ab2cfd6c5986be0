//! Error-compensated quantization (the GPTQ idea: Frantar et al., 2022) over any block format.
//!
//! Plain quantization rounds every weight on its own, so the errors of a row add up in its dot
//! product with the activations. With the input second-moment matrix `H = E[x xᵀ]` of a matmul,
//! the output error of a row `w` quantized to `q` is `(w − q)ᵀ H (w − q)`, and once column `i` is
//! fixed, the best change of the columns after it is `−(wᵢ − qᵢ)/Uᵢᵢ · U[i, i+1..]`, where `U` is
//! the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`). Walking the columns in order and feeding each
//! error forward this way lets the later weights absorb what the earlier ones lost.
//!
//! Our formats choose a scale and min per block, so the walk goes block by block: the block's
//! parameters come from the weighted search of [`super::search`] on the block's current values,
//! with `1/Uᵢᵢ²` (the cost of an error on column `i` after compensation) as importance; then the
//! columns of the block are walked in order, the errors fed forward inside the block and, at its
//! end, to every later column. In the VQ formats and NQ3 each element is rounded when its turn
//! comes (for the block's scale and min), as GPTQ does; a trellis block (TQ) is planned by Viterbi
//! runs over its remaining columns, a few symbols committed per run (`walk::TrellisWalk`); in the
//! ggml formats the search's quants stay fixed. A second pass refits the block on the values the
//! walk actually reached, and the pass with the lower compensated error `Σ ((wᵢ − x̂ᵢ)/Uᵢᵢ)²` is
//! kept, so it never makes a block worse.
//!
//! Rows are independent given `U`, so callers can quantize them in parallel and get the same
//! bytes for any thread count.

mod linalg;
mod refit;
mod walk;

pub use linalg::{inverse_factor, InverseFactor};
pub use refit::{refit_row_scales, BlockMoments};
pub use walk::{quantize_row_gptq, GptqScratch};

use super::search::Codebook;
use super::vspec::trellis;

/// Stores `d`, `m` and the quants as one block (`vqN::pack`).
pub type AffinePack = fn(d: f32, m: f32, quants: &[u8], out: &mut [u8]);

/// Stores `d` and the indices (or trellis symbols) as one block (`nq3::pack`, `tqN::pack`).
pub type CodebookPack = fn(d: f32, indices: &[u8], out: &mut [u8]);

/// [`trellis::viterbi_from`] for one `K`.
pub type TrellisViterbi = fn(&[i8; trellis::STATES], usize, &[f32], &[f32], f32, &mut [u8]) -> f32;

/// How the GPTQ walk re-rounds a block of a format once the block search has chosen its scale:
/// a format's [`crate::format::FormatSpec::gptq`]. The variant also picks the row refit
/// ([`refit_row_scales`]): scale and min per block for `Affine`, one gain per block for the others.
#[derive(Clone, Copy)]
pub enum GptqCode {
    /// `x̂ = d·q + m` with `d`, `m` as f16 at bytes 0 and 2 and `q ∈ 0..=qmax`: each element is
    /// rounded in turn, after the errors before it were fed forward (GPTQ proper).
    Affine {
        /// The largest quant.
        qmax: u8,
        /// Stores `d`, `m` and the quants.
        pack: AffinePack,
    },
    /// `x̂ = d·levels[q]` with `d` as f16 at byte 0: each element rounded to its nearest level
    /// in turn.
    Codebook {
        /// The levels and their nearest-level search.
        codebook: Codebook,
        /// Stores `d` and the indices.
        pack: CodebookPack,
    },
    /// A trellis code (`tqN`), whose symbols cannot be chosen one at a time: planned by Viterbi
    /// runs over the block's remaining columns, a few symbols committed per run.
    Trellis(TrellisCode),
}

impl GptqCode {
    /// `"affine"`, `"codebook"` or `"trellis"`, for messages and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            GptqCode::Affine { .. } => "affine",
            GptqCode::Codebook { .. } => "codebook",
            GptqCode::Trellis(_) => "trellis",
        }
    }
}

/// A trellis format (`tqN`): its codebook, and [`trellis`]'s pack, encoder and state step for
/// its bits per weight.
#[derive(Clone, Copy)]
pub struct TrellisCode {
    /// The value of each state, in units of `d`.
    pub codebook: &'static [i8; trellis::STATES],
    /// [`trellis::pack`] at the format's `K`.
    pub pack: CodebookPack,
    /// [`trellis::viterbi_from`] at the format's `K`.
    pub viterbi_from: TrellisViterbi,
    /// [`trellis::next_state`] at the format's `K`.
    pub next_state: fn(usize, u8) -> usize,
}

impl TrellisCode {
    /// The code of the trellis format with `K` bits per weight and this codebook.
    pub const fn of<const K: usize>(codebook: &'static [i8; trellis::STATES]) -> TrellisCode {
        TrellisCode {
            codebook,
            pack: trellis::pack::<K>,
            viterbi_from: trellis::viterbi_from::<K>,
            next_state: trellis::next_state::<K>,
        }
    }
}

/// Calibration data for the tests of the walk and the refit.
#[cfg(test)]
mod testutil {
    use alloc::{vec, vec::Vec};

    /// Deterministic pseudo-random numbers in [-1, 1).
    pub fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `H = XᵀX / t` for `t` correlated random rows of width `n`.
    pub fn second_moment(n: usize, t: usize, seed: &mut u64) -> (Vec<f64>, Vec<f32>) {
        let mut xs = vec![0f32; t * n];
        for r in 0..t {
            let common = lcg(seed);
            for c in 0..n {
                // Channels share a component and have very different scales.
                let scale = 0.2 + (c % 7) as f32;
                xs[r * n + c] = scale * (0.7 * common + lcg(seed));
            }
        }
        let mut h = vec![0f64; n * n];
        for r in 0..t {
            let x = &xs[r * n..(r + 1) * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += (x[i] * x[j]) as f64 / t as f64;
                }
            }
        }
        (h, xs)
    }

    /// `Σₜ (x·(w − ŵ))²` over the calibration rows.
    pub fn output_error(xs: &[f32], n: usize, w: &[f32], q: &[f32]) -> f64 {
        xs.chunks_exact(n)
            .map(|x| {
                let d: f64 = x
                    .iter()
                    .zip(w.iter().zip(q))
                    .map(|(&a, (&b, &c))| a as f64 * (b as f64 - c as f64))
                    .sum();
                d * d
            })
            .sum()
    }
}
