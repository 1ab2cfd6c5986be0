//! AVX2 + FMA kernels.
//!
//! `matmul` keeps the scalar reference's structure (rows decoded tile by tile into a stack buffer
//! with the format's block decoder) and adds register blocking: 4 weight rows × 3 tokens of
//! 8-lane FMA accumulators (12 of the 16 ymm registers), so each decoded weight and each
//! activation load feeds several FMAs. Every output element is summed in one fixed order — an
//! 8-lane accumulator over the tile's 8-wide chunks, a fixed horizontal reduction, then the tile's
//! tail sequentially, then added to the output tile by tile — whichever blocking path computed
//! it, so the result does not depend on the thread split or the number of tokens in a step.

use crate::kernels::decode_tile;
use crate::kernels::matmul::TILE;
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::arch::x86_64::*;
use core::ops::Range;

const ROWS: usize = 4;
const TOKS: usize = 3;

/// Sums the 8 lanes of `v` in a fixed order.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Loads 8 f32 from `s[i..i + 8]`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn load8(s: &[f32], i: usize) -> __m256 {
    let chunk = &s[i..i + 8];
    // SAFETY: `chunk` is exactly 8 initialized f32 (bounds checked by the slice above);
    // loadu has no alignment requirement.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

/// The canonical per-element sum of one tile: 8-lane FMA over whole chunks, reduce, then tail.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_tile(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let whole = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut k = 0;
    while k < whole {
        acc = _mm256_fmadd_ps(load8(w, k), load8(x, k), acc);
        k += 8;
    }
    let mut s = hsum(acc);
    for i in whole..n {
        s = libm::fmaf(w[i], x[i], s);
    }
    s
}

/// AVX2 matmul over rows `rows`: same contract as [`crate::kernels::matmul::matmul_scalar`].
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matmul_unchecked(
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let k = w.cols;
    let n = w.rows;
    let mut tiles = [[0f32; TILE]; ROWS];
    let mut r0 = rows.start;
    while r0 < rows.end {
        let nr = ROWS.min(rows.end - r0);
        for t in 0..tokens {
            for r in r0..r0 + nr {
                // SAFETY: this call owns rows `rows` for every token.
                unsafe { out.write(t * n + r, 0.0) };
            }
        }
        let mut c0 = 0;
        while c0 < k {
            let len = TILE.min(k - c0);
            for (i, tile) in tiles.iter_mut().enumerate().take(nr) {
                decode_tile(w, r0 + i, c0, &mut tile[..len]);
            }
            let whole = len / 8 * 8;
            let mut t0 = 0;
            if nr == ROWS {
                while t0 + TOKS <= tokens {
                    let mut acc = [[_mm256_setzero_ps(); TOKS]; ROWS];
                    let mut kk = 0;
                    while kk < whole {
                        let xv: [__m256; TOKS] =
                            core::array::from_fn(|j| load8(x, (t0 + j) * k + c0 + kk));
                        for (i, acc_row) in acc.iter_mut().enumerate() {
                            let wv = load8(&tiles[i], kk);
                            for j in 0..TOKS {
                                acc_row[j] = _mm256_fmadd_ps(wv, xv[j], acc_row[j]);
                            }
                        }
                        kk += 8;
                    }
                    for (i, acc_row) in acc.iter().enumerate() {
                        for (j, a) in acc_row.iter().enumerate() {
                            let t = t0 + j;
                            let xs = &x[t * k + c0..t * k + c0 + len];
                            let mut s = hsum(*a);
                            for q in whole..len {
                                s = libm::fmaf(tiles[i][q], xs[q], s);
                            }
                            // SAFETY: element (t, r0 + i) belongs to this call alone.
                            unsafe { out.add(t * n + r0 + i, s) };
                        }
                    }
                    t0 += TOKS;
                }
            }
            for t in t0..tokens {
                let xs = &x[t * k + c0..t * k + c0 + len];
                for (i, tile) in tiles.iter().enumerate().take(nr) {
                    let s = dot_tile(&tile[..len], xs);
                    // SAFETY: element (t, r0 + i) belongs to this call alone.
                    unsafe { out.add(t * n + r0 + i, s) };
                }
            }
            c0 += len;
        }
        r0 += nr;
    }
}
