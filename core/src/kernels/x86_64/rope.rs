//! AVX2+FMA rotary position embedding: the angles' sines and cosines four at a time in f64,
//! then every head of the row turned eight elements at a time.
//!
//! The reference ([`crate::kernels::rope::rope_row`]) calls `libm::sinf` and `libm::cosf` once
//! per frequency and row: in a prefill that was about 2.6 % of the time, more than the rotation
//! itself. Here each angle `θ = pos · inv_freq[i]` (the same f32 product) is reduced in f64 by
//! the nearest multiple of π/2 (two FMAs with π/2 split in two f64 parts: exact enough for any
//! angle a context reaches), and the sine and cosine of the rest (|r| ≤ π/4) come from short
//! f64 polynomials accurate well past f32, then are rounded to f32: within an ulp of libm's.
//! The rotation uses the reference's products and sums (`a·c − b·s`, `a·s + b·c`, no FMA), so
//! a row's outputs differ from the reference only where a sine or cosine does. A row's result
//! depends on its position alone, whatever the thread split or step.

use crate::graph::RopeLayout;
use crate::kernels::attention::MAX_HEAD_DIM;
use core::arch::x86_64::*;

/// Taylor-like minimax coefficients of `sin r = r + r³·(S1 + r²·(S2 + r²·(S3 + r²·S4)))` and
/// `cos r = 1 + r²·(C0 + r²·(C1 + r²·(C2 + r²·C3)))` on |r| ≤ π/4 (the published f64 kernels
/// behind musl's `sinf`/`cosf`; errors near 2^-32 relative, far below an f32 ulp).
const S1: f64 = -0.166_666_666_416_265_24;
const S2: f64 = 0.008_333_329_385_889_463;
const S3: f64 = -0.000_198_393_348_360_966_32;
const S4: f64 = 2.718_311_493_989_822e-6;
const C0: f64 = -0.499_999_997_251_031;
const C1: f64 = 0.041_666_623_323_739_06;
const C2: f64 = -0.001_388_676_377_460_992_6;
const C3: f64 = 2.439_044_879_627_741e-5;
/// π/2 as the sum of two f64: `PIO2_HI` is π/2 rounded, `PIO2_LO` the rest.
const PIO2_HI: f64 = core::f64::consts::FRAC_PI_2;
const PIO2_LO: f64 = 6.123_233_995_736_766e-17;

/// Rotates every head of `x` for position `pos` into `y`, as [`crate::kernels::rope::rope_row`].
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rope_avx2(
    x: &[f32],
    y: &mut [f32],
    pos: usize,
    head_dim: usize,
    layout: RopeLayout,
    inv_freq: &[f32],
) {
    let half = inv_freq.len();
    if half > MAX_HEAD_DIM / 2 {
        // Heads past the attention kernels' limit: the reference turns them.
        return crate::kernels::rope::rope_row(x, y, pos, head_dim, layout, inv_freq);
    }
    assert!(2 * half <= head_dim && x.len() == y.len());
    y.copy_from_slice(x);
    let mut sin = [0f32; MAX_HEAD_DIM / 2];
    let mut cos = [0f32; MAX_HEAD_DIM / 2];
    sines_and_cosines(pos as f32, inv_freq, &mut sin[..half], &mut cos[..half]);
    let (sin, cos) = (&sin[..half], &cos[..half]);
    for head in y.chunks_exact_mut(head_dim) {
        match layout {
            RopeLayout::Neox => {
                let (a, rest) = head.split_at_mut(half);
                turn_halves(a, &mut rest[..half], sin, cos);
            }
            RopeLayout::Interleaved => turn_pairs(&mut head[..2 * half], sin, cos),
        }
    }
}

/// `sin[i]`, `cos[i]` of `pos · inv_freq[i]` (the product in f32, as the reference forms it).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sines_and_cosines(pos: f32, inv_freq: &[f32], sin: &mut [f32], cos: &mut [f32]) {
    let p = _mm_set1_ps(pos);
    let chunks = inv_freq
        .chunks(4)
        .zip(sin.chunks_mut(4).zip(cos.chunks_mut(4)));
    for (f, (so, co)) in chunks {
        // Four frequencies at a time, the last chunk padded with zeros (results unused).
        let (mut f4, mut s4, mut c4) = ([0f32; 4], [0f32; 4], [0f32; 4]);
        f4[..f.len()].copy_from_slice(f);
        // SAFETY: `f4`, `s4` and `c4` are 4 f32 each; loadu and storeu need no alignment.
        unsafe {
            let theta = _mm_mul_ps(p, _mm_loadu_ps(f4.as_ptr()));
            let (s, c) = sincos(_mm256_cvtps_pd(theta));
            _mm_storeu_ps(s4.as_mut_ptr(), _mm256_cvtpd_ps(s));
            _mm_storeu_ps(c4.as_mut_ptr(), _mm256_cvtpd_ps(c));
        }
        so.copy_from_slice(&s4[..f.len()]);
        co.copy_from_slice(&c4[..f.len()]);
    }
}

/// Sine and cosine of four angles: `t = k·π/2 + r` with `k` the nearest integer to `t·2/π`, the
/// polynomials on `r`, and the quadrant `k mod 4` choosing and signing them. `k` must fit an
/// i32 (angles under 3·10^9: a position times a frequency of at most 1).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sincos(t: __m256d) -> (__m256d, __m256d) {
    let k = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_pd(
        t,
        _mm256_set1_pd(core::f64::consts::FRAC_2_PI),
    ));
    let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(PIO2_HI), t);
    let r = _mm256_fnmadd_pd(k, _mm256_set1_pd(PIO2_LO), r);
    let z = _mm256_mul_pd(r, r);
    let sin_r = _mm256_fmadd_pd(_mm256_mul_pd(r, z), poly(z, [S1, S2, S3, S4]), r);
    let cos_r = _mm256_fmadd_pd(z, poly(z, [C0, C1, C2, C3]), _mm256_set1_pd(1.0));
    // Quadrant q = k mod 4 (two's complement keeps it right for negative k):
    // sin t = (sin r, cos r, −sin r, −cos r)[q], cos t = (cos r, −sin r, −cos r, sin r)[q].
    let q = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
    let one = _mm256_set1_epi64x(1);
    let swap = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_and_si256(q, one), one));
    let (s, c) = (
        _mm256_blendv_pd(sin_r, cos_r, swap),
        _mm256_blendv_pd(cos_r, sin_r, swap),
    );
    let two = _mm256_set1_epi64x(2);
    let sin_sign = _mm256_slli_epi64::<62>(_mm256_and_si256(q, two));
    let cos_sign = _mm256_slli_epi64::<62>(_mm256_and_si256(_mm256_add_epi64(q, one), two));
    (
        _mm256_xor_pd(s, _mm256_castsi256_pd(sin_sign)),
        _mm256_xor_pd(c, _mm256_castsi256_pd(cos_sign)),
    )
}

/// `c[0] + z·(c[1] + z·(c[2] + z·c[3]))`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn poly(z: __m256d, c: [f64; 4]) -> __m256d {
    let p = _mm256_fmadd_pd(z, _mm256_set1_pd(c[3]), _mm256_set1_pd(c[2]));
    let p = _mm256_fmadd_pd(z, p, _mm256_set1_pd(c[1]));
    _mm256_fmadd_pd(z, p, _mm256_set1_pd(c[0]))
}

/// `(h0, h0, h1, h1, h2, h2, h3, h3)` from `(h0, h1, h2, h3)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn repeat_pairs(h: __m128) -> __m256 {
    let lo = _mm_unpacklo_ps(h, h);
    let hi = _mm_unpackhi_ps(h, h);
    _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi)
}

/// NeoX layout: `(a[i], b[i]) ← (a·c − b·s, a·s + b·c)` for every frequency `i`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn turn_halves(a: &mut [f32], b: &mut [f32], sin: &[f32], cos: &[f32]) {
    let n = a.len();
    assert!(b.len() == n && sin.len() == n && cos.len() == n);
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= whole <= n, the length of all four slices (asserted above).
        unsafe {
            let (av, bv) = (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            );
            let s = _mm256_loadu_ps(sin.as_ptr().add(i));
            let c = _mm256_loadu_ps(cos.as_ptr().add(i));
            let a2 = _mm256_sub_ps(_mm256_mul_ps(av, c), _mm256_mul_ps(bv, s));
            let b2 = _mm256_add_ps(_mm256_mul_ps(av, s), _mm256_mul_ps(bv, c));
            _mm256_storeu_ps(a.as_mut_ptr().add(i), a2);
            _mm256_storeu_ps(b.as_mut_ptr().add(i), b2);
        }
        i += 8;
    }
    for i in whole..n {
        let (av, bv, s, c) = (a[i], b[i], sin[i], cos[i]);
        a[i] = av * c - bv * s;
        b[i] = av * s + bv * c;
    }
}

/// Interleaved layout: pairs `(x[2i], x[2i+1])` turned as in [`turn_halves`], four pairs per
/// vector (each pair's cosine and sine repeated into both its lanes, the sine negated in the
/// first: `x·c + swap(x)·(−s, s)`, the same products and sums as the reference).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn turn_pairs(x: &mut [f32], sin: &[f32], cos: &[f32]) {
    let n = sin.len();
    assert!(x.len() == 2 * n && cos.len() == n);
    let whole = n / 4 * 4;
    let neg_even = _mm256_setr_ps(-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 0.0);
    let mut i = 0;
    while i < whole {
        // SAFETY: pairs i..i + 4 are elements 2i..2i + 8 <= 2·whole <= x.len(), and
        // i + 4 <= n = sin.len() = cos.len() (asserted above).
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(2 * i));
            let s4 = _mm_loadu_ps(sin.as_ptr().add(i));
            let c4 = _mm_loadu_ps(cos.as_ptr().add(i));
            let (c, s) = (repeat_pairs(c4), _mm256_xor_ps(repeat_pairs(s4), neg_even));
            let swapped = _mm256_permute_ps::<0b10_11_00_01>(v);
            let turned = _mm256_add_ps(_mm256_mul_ps(v, c), _mm256_mul_ps(swapped, s));
            _mm256_storeu_ps(x.as_mut_ptr().add(2 * i), turned);
        }
        i += 4;
    }
    for i in whole..n {
        let (a, b, s, c) = (x[2 * i], x[2 * i + 1], sin[i], cos[i]);
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}
