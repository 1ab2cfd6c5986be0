//! The quantizer: per-group searches for the scale (and min) that minimise a weighted squared
//! error, not round-to-nearest from the min and max.
//!
//! Every search minimises `Σ wᵢ (xᵢ − x̂ᵢ)²` over one group (a block of 32 or 64 weights) with
//! importance weights `wᵢ ≥ 0`, and every candidate is judged by its *true* error: its scale and
//! min are first rounded to f16 as the block will store them, each quant is then re-chosen as the
//! nearest level for those rounded values (which is optimal per element once the scale and min are
//! fixed), and the decoded value is computed with the decoder's own f32 arithmetic. So the search
//! never does worse than any candidate it tries, and the round-to-nearest candidate of the ggml
//! reference quantizers is always among them.
//!
//! - [`fit_affine`] (VQ2, VQ3, VQ4, Q4_1: `x̂ = d·q + m`, `q ∈ 0..=nmax`): the idea of ggml's
//!   `make_qkx2_quants`. Start from the min/max grid (and the weighted mean, for constants), then
//!   for 21 inverse scales spanning `nmax − 1 ..= nmax + 1` levels over the range, plus whole level
//!   counts `nmax/2 .. nmax − 1` (data already on a coarser grid), round every element, refit `d`
//!   and `m` by weighted least squares for those quants, and keep the best; finally polish the
//!   best by alternating refit and reassignment.
//! - [`fit_symmetric`] (Q8_0, Q4_0: `x̂ = d·q`, `q ∈ qmin..=qmax`): the signed element of largest
//!   magnitude mapped to either end of the range, the scale swept ±12.5% in 21 steps, each with a
//!   least-squares refit `d = Σwxq / Σwq²`; plus plain round-to-nearest and `d = max` (level ±1,
//!   exact for a constant group).
//! - [`fit_in_codebook`] (IQ4_NL, NQ3: `x̂ = d·K[q]`): the same sweep (±10% in 1% steps) with the largest
//!   magnitude mapped to either end of the codebook, nearest entry per element, least-squares
//!   refit; plus round-to-nearest from `max / K[0]` and `d = max` (entry `1`).
//!
//! Default weights (no importance matrix): [`default_weights`] gives `wᵢ = xᵢ² + mean(x²)` over the
//! group, which favours large weights (whose errors dominate a dot product with typical
//! activations) without ignoring small ones. `core/tests/quantizer.rs` prints the RMSE that this
//! choice costs against uniform weights.

use core::ops::Add;
use half::f16;

/// The largest group any search handles (VQ formats use 64).
pub const MAX_GROUP: usize = 64;

/// Steps of the scale sweeps (21 candidates each).
const NSTEP: i32 = 20;

/// `v` rounded to the nearest f16 (saturating at ±65504) and widened back to f32 exactly.
#[inline]
pub fn round_f16(v: f32) -> f32 {
    f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32()
}

/// The default importance of each element of a group: `wᵢ = xᵢ² + mean(x²)`, computed on `x`
/// scaled by its largest magnitude so that huge values cannot overflow (weights only matter up to
/// a common factor). An all-zero group gets uniform weights.
pub fn default_weights(x: &[f32], w: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        w.iter_mut().for_each(|v| *v = 1.0);
        return;
    }
    let inv = 1.0 / amax;
    let mut s = 0f32;
    for (wi, &xi) in w.iter_mut().zip(x) {
        let t = xi * inv;
        *wi = t * t;
        s += t * t;
    }
    let mean = s / x.len() as f32;
    w.iter_mut().for_each(|v| *v += mean);
}

/// `Σ wᵢ (xᵢ − yᵢ)²`, accumulated in f64.
pub fn weighted_sq_error(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .zip(w)
        .map(|((&a, &b), &wi)| wi as f64 * sq(a as f64 - b as f64))
        .sum()
}

#[inline(always)]
fn sq(v: f64) -> f64 {
    v * v
}

/// `(min, max)` of `x`, ignoring NaN; `(0, 0)` for an empty or all-NaN group.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// Weighted least squares `x ≈ d·q + m` for fixed quants; `None` when the weights are all zero.
/// When every quant is equal only the mean is fitted (`d = 0`).
fn ls_affine(x: &[f32], w: &[f32], q: &[u8]) -> Option<(f32, f32)> {
    let (mut sw, mut sq, mut sqq, mut sx, mut sqx) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let (wi, qi, xi) = (wi as f64, qi as f64, xi as f64);
        sw += wi;
        sq += wi * qi;
        sqq += wi * qi * qi;
        sx += wi * xi;
        sqx += wi * qi * xi;
    }
    if sw <= 0.0 {
        return None;
    }
    let det = sw * sqq - sq * sq;
    if det <= 1e-9 * sw * sqq || det <= 0.0 {
        return Some((0.0, (sx / sw) as f32));
    }
    let d = (sw * sqx - sq * sx) / det;
    let m = (sqq * sx - sq * sqx) / det;
    Some((d as f32, m as f32))
}

/// Quants of `x` for the (already f16-exact) `d ≥ 0` and `m`, and their true weighted error.
fn assign_affine(x: &[f32], w: &[f32], d: f32, m: f32, nmax: u8, q: &mut [u8]) -> f64 {
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut err = 0f64;
    for ((&xi, &wi), qi) in x.iter().zip(w).zip(q.iter_mut()) {
        // Clamp, then round half up by truncation (the value is >= 0); NaN gives 0.
        *qi = ((xi - m) * id).clamp(0.0, nmax as f32).add(0.5) as u8;
        let y = d * *qi as f32 + m;
        err += wi as f64 * sq(xi as f64 - y as f64);
    }
    err
}

struct AffineBest<'a> {
    x: &'a [f32],
    w: &'a [f32],
    nmax: u8,
    err: f64,
    d: f32,
    m: f32,
    q: [u8; MAX_GROUP],
    tmp: [u8; MAX_GROUP],
}

impl AffineBest<'_> {
    /// Round `(d, m)` to f16, reassign, keep if strictly better.
    fn consider(&mut self, d: f32, m: f32) {
        let n = self.x.len();
        let d = round_f16(d.max(0.0));
        let m = round_f16(m);
        let err = assign_affine(self.x, self.w, d, m, self.nmax, &mut self.tmp[..n]);
        if err < self.err {
            self.err = err;
            self.d = d;
            self.m = m;
            self.q[..n].copy_from_slice(&self.tmp[..n]);
        }
    }
}

/// Search `d ≥ 0` and `m` (both exactly representable in f16) and quants `q ∈ 0..=nmax` minimising
/// `Σ wᵢ (xᵢ − (d·qᵢ + m))²`, where the decoded value is computed as `d * q as f32 + m` in f32.
///
/// `x.len() == w.len() == q.len() <= MAX_GROUP`. Weights that are all zero count as uniform. Never
/// panics; non-finite input gives some valid block.
pub fn fit_affine(x: &[f32], w: &[f32], nmax: u8, q: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    debug_assert!(n <= MAX_GROUP && w.len() == n && q.len() == n);
    let ones = [1f32; MAX_GROUP];
    let w = if w.iter().any(|&v| v > 0.0) {
        w
    } else {
        &ones[..n]
    };
    let mut b = AffineBest {
        x,
        w,
        nmax,
        err: f64::INFINITY,
        d: 0.0,
        m: 0.0,
        q: [0; MAX_GROUP],
        tmp: [0; MAX_GROUP],
    };
    let (min, max) = min_max(x);
    // Constant group: the (weighted) mean.
    let zeros = [0u8; MAX_GROUP];
    if let Some((_, m)) = ls_affine(x, w, &zeros[..n]) {
        b.consider(0.0, m);
    }
    b.consider(0.0, min);
    let range = max as f64 - min as f64;
    if range > 0.0 {
        // Round-to-nearest from the min and max (ggml's reference quantizers).
        b.consider((range / nmax as f64) as f32, min);
        let mut tmp = [0u8; MAX_GROUP];
        // Inverse scales: the sweep around `nmax` levels over the range, then whole level counts
        // below it (values already on a coarser grid, or one that does not reach both ends).
        let sweep = (0..=NSTEP).map(|is| nmax as f64 - 1.0 + 0.1 * is as f64);
        let counts = (nmax as u32 / 2..nmax as u32 - 1).map(f64::from);
        for levels in sweep.chain(counts) {
            let iscale = (levels / range) as f32;
            for (t, &xi) in tmp.iter_mut().zip(x) {
                *t = ((xi - min) * iscale).clamp(0.0, nmax as f32).add(0.5) as u8;
            }
            if let Some((d, m)) = ls_affine(x, w, &tmp[..n]) {
                b.consider(d, m);
            }
        }
        // Polish: refit on the best quants until it stops improving.
        for _ in 0..4 {
            let before = b.err;
            let q_best = b.q;
            if let Some((d, m)) = ls_affine(x, w, &q_best[..n]) {
                b.consider(d, m);
            }
            if b.err >= before {
                break;
            }
        }
    }
    q.copy_from_slice(&b.q[..n]);
    (b.d, b.m)
}

/// Quants of `x` for the f16-exact `d`, clamped to `qmin..=qmax`, and their true weighted error
/// with the decoded value `q as f32 * d`.
fn assign_symmetric(x: &[f32], w: &[f32], d: f32, qmin: i32, qmax: i32, q: &mut [i8]) -> f64 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut err = 0f64;
    for ((&xi, &wi), qi) in x.iter().zip(w).zip(q.iter_mut()) {
        *qi = level(xi * id, qmin, qmax);
        let y = *qi as f32 * d;
        err += wi as f64 * sq(xi as f64 - y as f64);
    }
    err
}

/// `v` rounded half up to an integer and clamped to `qmin..=qmax` (NaN gives `qmin`).
#[inline(always)]
fn level(v: f32, qmin: i32, qmax: i32) -> i8 {
    let shifted = (v - qmin as f32).clamp(0.0, (qmax - qmin) as f32);
    ((shifted + 0.5) as i32 + qmin) as i8
}

/// Weighted least-squares scale `Σwxq / Σwq²` for fixed quants (`None` if all quants are 0).
fn ls_scale<T: Copy + Into<f32>>(x: &[f32], w: &[f32], q: &[T]) -> Option<f32> {
    let (mut sqx, mut sqq) = (0f64, 0f64);
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let qi = qi.into() as f64;
        sqx += wi as f64 * qi * xi as f64;
        sqq += wi as f64 * qi * qi;
    }
    (sqq > 0.0).then(|| (sqx / sqq) as f32)
}

/// `(largest |x|, the signed element that has it)`.
fn abs_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// Search an f16-exact scale `d` (any sign) and quants `q ∈ qmin..=qmax` minimising
/// `Σ wᵢ (xᵢ − qᵢ·d)²` with the decoded value `q as f32 * d`. Same contract as [`fit_affine`].
pub fn fit_symmetric(x: &[f32], w: &[f32], qmin: i32, qmax: i32, q: &mut [i8]) -> f32 {
    let n = x.len();
    debug_assert!(n <= MAX_GROUP && w.len() == n && q.len() == n);
    debug_assert!(qmin < 0 && qmax > 0 && qmin >= -128 && qmax <= 127);
    let ones = [1f32; MAX_GROUP];
    let w = if w.iter().any(|&v| v > 0.0) {
        w
    } else {
        &ones[..n]
    };
    let mut best = Keep::new(0i8);
    let mut tmp = [0i8; MAX_GROUP];
    let mut consider = |best: &mut Keep<i8>, d: f32| {
        let d = round_f16(d);
        let err = assign_symmetric(x, w, d, qmin, qmax, &mut tmp[..n]);
        best.offer(err, d, &tmp[..n]);
    };
    consider(&mut best, 0.0);
    let (amax, max) = abs_max(x);
    if amax > 0.0 {
        // Level ±1 holds the largest value exactly: a constant group comes back exact.
        consider(&mut best, max);
        let mut probe = [0i8; MAX_GROUP];
        for target in [qmin, qmax] {
            let base = max / target as f32;
            for k in -NSTEP / 2..=NSTEP / 2 {
                let d = base * (1.0 + 0.0125 * k as f32);
                if k == 0 {
                    // Round-to-nearest from the largest magnitude (ggml's reference).
                    consider(&mut best, d);
                }
                // Refit on the quants of the unrounded scale.
                if d != 0.0 && d.is_finite() {
                    let id = 1.0 / d;
                    for (p, &xi) in probe.iter_mut().zip(x) {
                        *p = level(xi * id, qmin, qmax);
                    }
                    if let Some(d) = ls_scale(x, w, &probe[..n]) {
                        consider(&mut best, d);
                    }
                }
            }
        }
        for _ in 0..4 {
            let before = best.err;
            if let Some(d) = ls_scale(x, w, &best.q[..n]) {
                consider(&mut best, d);
            }
            if best.err >= before {
                break;
            }
        }
    }
    q.copy_from_slice(&best.q[..n]);
    best.d
}

/// The best candidate so far: its true error, scale and quants.
struct Keep<T> {
    err: f64,
    d: f32,
    q: [T; MAX_GROUP],
}

impl<T: Copy> Keep<T> {
    fn new(zero: T) -> Self {
        Keep {
            err: f64::INFINITY,
            d: 0.0,
            q: [zero; MAX_GROUP],
        }
    }

    /// Keep `(d, q)` if `err` is strictly lower.
    fn offer(&mut self, err: f64, d: f32, q: &[T]) {
        if err < self.err {
            self.err = err;
            self.d = d;
            self.q[..q.len()].copy_from_slice(q);
        }
    }
}

/// A non-uniform codebook: ascending `i8` levels, decoded as `d · level`, and the index of the
/// level nearest to a value (exact ties and NaN as each codebook's `nearest` defines them).
#[derive(Clone, Copy)]
pub struct Codebook {
    /// The levels, ascending.
    pub levels: &'static [i8],
    /// Index of the level nearest to `t`.
    pub nearest: fn(f32) -> usize,
}

/// Nearest codebook indices of `x` for the f16-exact `d`, and their true weighted error with
/// the decoded value `d * level as f32`.
fn assign_codebook(cb: &Codebook, x: &[f32], w: &[f32], d: f32, q: &mut [u8]) -> f64 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut err = 0f64;
    for ((&xi, &wi), qi) in x.iter().zip(w).zip(q.iter_mut()) {
        // With d = 0 every index decodes to 0; pick the entry nearest 0 for a stable result.
        *qi = (cb.nearest)(xi * id) as u8;
        let y = d * cb.levels[*qi as usize] as f32;
        err += wi as f64 * sq(xi as f64 - y as f64);
    }
    err
}

/// Search an f16-exact scale `d` and indices into `cb` minimising `Σ wᵢ (xᵢ − d·levels[qᵢ])²`.
/// Same contract as [`fit_affine`].
pub fn fit_in_codebook(cb: &Codebook, x: &[f32], w: &[f32], q: &mut [u8]) -> f32 {
    let n = x.len();
    debug_assert!(n <= MAX_GROUP && w.len() == n && q.len() == n);
    let ones = [1f32; MAX_GROUP];
    let w = if w.iter().any(|&v| v > 0.0) {
        w
    } else {
        &ones[..n]
    };
    let mut best = Keep::new(0u8);
    let mut tmp = [0u8; MAX_GROUP];
    let mut consider = |best: &mut Keep<u8>, d: f32| {
        let d = round_f16(d);
        let err = assign_codebook(cb, x, w, d, &mut tmp[..n]);
        best.offer(err, d, &tmp[..n]);
    };
    consider(&mut best, 0.0);
    let (amax, max) = abs_max(x);
    if amax > 0.0 {
        // For IQ4_NL entry 8 (`1`) holds the largest value exactly: a constant group comes back
        // exact.
        consider(&mut best, max);
        let levels = |qs: &[u8]| -> [i8; MAX_GROUP] {
            core::array::from_fn(|i| {
                if i < qs.len() {
                    cb.levels[qs[i] as usize]
                } else {
                    0
                }
            })
        };
        let mut probe = [0u8; MAX_GROUP];
        for target in [cb.levels[0], cb.levels[cb.levels.len() - 1]] {
            let base = max / target as f32;
            for k in -NSTEP / 2..=NSTEP / 2 {
                let d = base * (1.0 + 0.01 * k as f32);
                if k == 0 {
                    consider(&mut best, d);
                }
                if d != 0.0 && d.is_finite() {
                    let id = 1.0 / d;
                    for (p, &xi) in probe.iter_mut().zip(x) {
                        *p = (cb.nearest)(xi * id) as u8;
                    }
                    if let Some(d) = ls_scale(x, w, &levels(&probe[..n])[..n]) {
                        consider(&mut best, d);
                    }
                }
            }
        }
        for _ in 0..4 {
            let before = best.err;
            let lv = levels(&best.q[..n]);
            if let Some(d) = ls_scale(x, w, &lv[..n]) {
                consider(&mut best, d);
            }
            if best.err >= before {
                break;
            }
        }
    }
    q.copy_from_slice(&best.q[..n]);
    best.d
}

#[cfg(test)]
mod tests {
    use super::super::gguf::testutil::Rng;
    use super::*;

    #[test]
    fn affine_recovers_exact_grid() {
        let mut rng = Rng::new(11);
        for _ in 0..200 {
            let d = round_f16(rng.uniform().abs() * 0.1 + 1e-3);
            let m = round_f16(rng.normal());
            let qs: [u8; 64] = core::array::from_fn(|i| match i {
                0 => 0,
                1 => 7,
                _ => (rng.next_u64() % 8) as u8,
            });
            let x: [f32; 64] = core::array::from_fn(|i| d * qs[i] as f32 + m);
            let mut w = [0f32; 64];
            default_weights(&x, &mut w);
            let mut q = [0u8; 64];
            let (d2, m2) = fit_affine(&x, &w, 7, &mut q);
            assert_eq!((d2, m2), (d, m));
            assert_eq!(q, qs);
        }
    }

    #[test]
    fn degenerate_groups() {
        let w = [1f32; 64];
        let mut q = [0u8; 64];
        assert_eq!(fit_affine(&[0.0; 64], &w, 3, &mut q), (0.0, 0.0));
        let (d, m) = fit_affine(&[1.25; 64], &w, 3, &mut q);
        assert_eq!(d * q[0] as f32 + m, 1.25);
        // Zero weights count as uniform.
        let (d, m) = fit_affine(&[2.5; 64], &[0.0; 64], 3, &mut q);
        assert_eq!(d * q[0] as f32 + m, 2.5);
        let mut qi = [0i8; 32];
        assert_eq!(fit_symmetric(&[0.0; 32], &w[..32], -8, 7, &mut qi), 0.0);
        // Huge and tiny values do not panic and give finite scales.
        let big: [f32; 64] = core::array::from_fn(|i| if i % 2 == 0 { 3e38 } else { -3e38 });
        let mut wb = [0f32; 64];
        default_weights(&big, &mut wb);
        assert!(wb.iter().all(|v| v.is_finite()));
        let (d, m) = fit_affine(&big, &wb, 15, &mut q);
        assert!(d.is_finite() && m.is_finite());
        assert!(fit_symmetric(&big[..32], &wb[..32], -127, 127, &mut qi).is_finite());
        let tiny = [1e-30f32; 64];
        let _ = fit_affine(&tiny, &w, 15, &mut q);
    }
}
