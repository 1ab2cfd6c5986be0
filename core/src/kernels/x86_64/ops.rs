//! AVX2+FMA kernels for everything but the matmuls: activation quantizer, RMSNorm, SwiGLU,
//! residual add and attention. Each is checked against its scalar reference in
//! `core/tests/kernels_simd.rs`; sums run in a different order, so results agree within a stated
//! tolerance, not bit for bit, and each kernel still computes every output element the same way
//! whatever the thread split.

use super::q8::{self, hsum};
use crate::kernels::attention::AttnShape;
use crate::kernels::table::{KernelTable, OpEntry};
use crate::kernels::{for_each_tile, SharedOut};
use crate::model::WeightView;
use crate::quant::act_q8::BlockQ8Act;
use core::arch::x86_64::*;
use core::ops::Range;

/// Installs the tier's op kernels.
pub(super) fn install(table: &mut KernelTable) {
    table.quantize_q8 = OpEntry::optimized("avx2_quantize_q8", quantize_q8);
    table.rms_norm = OpEntry::optimized("avx2_rms_norm", rms_norm);
    table.swiglu = OpEntry::optimized("avx2_swiglu", swiglu);
    table.add = OpEntry::optimized("avx2_add", add);
    table.attention = OpEntry::optimized("avx2_attention", attention);
}

// The safe wrappers below are private and reachable only through a table filled by `install`,
// which `KernelTable::select` calls only for a CpuFeatures that promises AVX2, FMA and F16C.

fn quantize_q8(x: &[f32], out: &mut [BlockQ8Act]) {
    // SAFETY: features present (see above).
    unsafe { q8::quantize(x, out) }
}

fn rms_norm(x: &[f32], w: &WeightView<'_>, eps: f32, y: &mut [f32]) {
    // SAFETY: features present (see above).
    unsafe { rms_norm_avx2(x, w, eps, y) }
}

fn swiglu(gate: &[f32], up: &[f32], y: &mut [f32]) {
    // SAFETY: features present (see above).
    unsafe { swiglu_avx2(gate, up, y) }
}

fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    // SAFETY: features present (see above).
    unsafe { add_avx2(a, b, y) }
}

/// # Safety
/// Same contract as [`crate::kernels::table::AttentionFn`].
unsafe fn attention(
    s: &AttnShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    heads: Range<usize>,
    scores: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    // SAFETY: features present (see above); head exclusivity is the caller's contract.
    unsafe { attention_avx2(s, q, k_cache, v_cache, heads, scores, out) }
}

/// 8 f32 from `s[i..i + 8]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load(s: &[f32], i: usize) -> __m256 {
    let c = &s[i..i + 8];
    // SAFETY: `c` is 8 readable f32; loadu needs no alignment.
    unsafe { _mm256_loadu_ps(c.as_ptr()) }
}

/// Stores 8 f32 at `s[i..i + 8]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn store(s: &mut [f32], i: usize, v: __m256) {
    let c = &mut s[i..i + 8];
    // SAFETY: `c` is 8 writable f32; storeu needs no alignment.
    unsafe { _mm256_storeu_ps(c.as_mut_ptr(), v) }
}

/// `e^x` per lane: `x = n·ln2 + r`, `|r| <= ln2/2`, a degree-6 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Relative error below 2e-7 over the range; inputs are clamped to
/// `[-87.3, 88.7]`, so large negative inputs give about 1e-38 rather than 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn exp(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
        _mm256_set1_ps(88.7),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    // ln 2 split in two so n·ln2 is subtracted without rounding error.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn swiglu_avx2(gate: &[f32], up: &[f32], y: &mut [f32]) {
    let n = y.len().min(gate.len()).min(up.len());
    let whole = n / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_set1_ps(-0.0);
    let mut i = 0;
    while i < whole {
        let g = load(gate, i);
        let e = exp(_mm256_xor_ps(g, sign));
        let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
        store(y, i, _mm256_mul_ps(silu, load(up, i)));
        i += 8;
    }
    crate::kernels::activation::swiglu(&gate[whole..n], &up[whole..n], &mut y[whole..n]);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn add_avx2(a: &[f32], b: &[f32], y: &mut [f32]) {
    let n = y.len().min(a.len()).min(b.len());
    let whole = n / 8 * 8;
    let mut i = 0;
    while i < whole {
        store(y, i, _mm256_add_ps(load(a, i), load(b, i)));
        i += 8;
    }
    crate::kernels::activation::add(&a[whole..n], &b[whole..n], &mut y[whole..n]);
}

/// `Σ a·b` with 8-lane FMA, then the tail.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let whole = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < whole {
        acc = _mm256_fmadd_ps(load(a, i), load(b, i), acc);
        i += 8;
    }
    let mut s = hsum(acc);
    for j in whole..n {
        s += a[j] * b[j];
    }
    s
}

/// `y[i] = x[i] · inv · w[i]` over one tile.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scale_tile(x: &[f32], w: &[f32], inv: f32, y: &mut [f32]) {
    let n = x.len();
    let whole = n / 8 * 8;
    let iv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i < whole {
        store(
            y,
            i,
            _mm256_mul_ps(_mm256_mul_ps(load(x, i), iv), load(w, i)),
        );
        i += 8;
    }
    for j in whole..n {
        y[j] = x[j] * inv * w[j];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rms_norm_avx2(x: &[f32], w: &WeightView<'_>, eps: f32, y: &mut [f32]) {
    let d = w.cols;
    for (xs, ys) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let inv = 1.0 / libm::sqrtf(dot(xs, xs) / d as f32 + eps);
        for_each_tile(w, 0, |c0, tile| {
            let len = tile.len();
            scale_tile(&xs[c0..c0 + len], tile, inv, &mut ys[c0..c0 + len]);
        });
    }
}

/// `o += p · v` over one head.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn axpy(o: &mut [f32], p: f32, v: &[f32]) {
    let n = o.len();
    let whole = n / 8 * 8;
    let pv = _mm256_set1_ps(p);
    let mut i = 0;
    while i < whole {
        store(o, i, _mm256_fmadd_ps(pv, load(v, i), load(o, i)));
        i += 8;
    }
    for j in whole..n {
        o[j] += p * v[j];
    }
}

/// Query heads of one GQA group attended together: each K and V row is loaded once for all of
/// them. Each head's arithmetic is exactly the per-head sequence (same dots, same order), so
/// grouping changes memory traffic, not results.
const MAX_GROUP: usize = 8;

/// # Safety
/// AVX2, FMA and F16C are present; no other thread touches the scratch rows or output columns of
/// heads `heads`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attention_avx2(
    s: &AttnShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    heads: Range<usize>,
    scores: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    let hd = s.head_dim;
    let q_width = s.n_heads * hd;
    let kv_width = s.n_kv_heads * hd;
    let group = s.n_heads / s.n_kv_heads;
    let mut h0 = heads.start;
    while h0 < heads.end {
        let kvh = h0 / group;
        let h1 = ((kvh + 1) * group).min(heads.end).min(h0 + MAX_GROUP);
        let g = h1 - h0;
        let mut sc: [&mut [f32]; MAX_GROUP] = Default::default();
        for (i, row) in sc.iter_mut().enumerate().take(g) {
            let h = h0 + i;
            // SAFETY: head h's scratch row belongs to this call alone (caller's contract), and
            // the rows of distinct heads are disjoint.
            *row = unsafe { scores.slice_mut(h * s.max_ctx..(h + 1) * s.max_ctx) };
        }
        for t in 0..s.tokens {
            let n_pos = s.pos0 + t + 1;
            let qh = |i: usize| {
                let h = h0 + i;
                &q[t * q_width + h * hd..t * q_width + (h + 1) * hd]
            };
            let mut max = [f32::NEG_INFINITY; MAX_GROUP];
            for j in 0..n_pos {
                let kj = &k_cache[j * kv_width + kvh * hd..j * kv_width + (kvh + 1) * hd];
                for i in 0..g {
                    let v = dot(qh(i), kj) * s.scale;
                    sc[i][j] = v;
                    max[i] = max[i].max(v);
                }
            }
            let mut inv = [0f32; MAX_GROUP];
            for i in 0..g {
                inv[i] = 1.0 / softmax_numerators(&mut sc[i][..n_pos], max[i]);
            }
            let mut o: [&mut [f32]; MAX_GROUP] = Default::default();
            for (i, oi) in o.iter_mut().enumerate().take(g) {
                let h = h0 + i;
                // SAFETY: the output columns of head h in row t belong to this call alone, and
                // distinct heads' columns are disjoint.
                *oi = unsafe { out.slice_mut(t * q_width + h * hd..t * q_width + (h + 1) * hd) };
                oi.fill(0.0);
            }
            for j in 0..n_pos {
                let vj = &v_cache[j * kv_width + kvh * hd..j * kv_width + (kvh + 1) * hd];
                for i in 0..g {
                    axpy(o[i], sc[i][j] * inv[i], vj);
                }
            }
        }
        h0 = h1;
    }
}

/// Replaces `sc[j]` by `e^(sc[j] − max)` and returns their sum.
#[target_feature(enable = "avx2,fma,f16c")]
fn softmax_numerators(sc: &mut [f32], max: f32) -> f32 {
    let n = sc.len();
    let whole = n / 8 * 8;
    let maxv = _mm256_set1_ps(max);
    let mut sumv = _mm256_setzero_ps();
    let mut j = 0;
    while j < whole {
        let e = exp(_mm256_sub_ps(load(sc, j), maxv));
        store(sc, j, e);
        sumv = _mm256_add_ps(sumv, e);
        j += 8;
    }
    let mut sum = hsum(sumv);
    for sj in sc[whole..n].iter_mut() {
        *sj = libm::expf(*sj - max);
        sum += *sj;
    }
    sum
}
