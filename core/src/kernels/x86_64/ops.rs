//! AVX2+FMA kernels for everything but the matmuls, attention (`attention.rs`) and RoPE
//! (`rope.rs`): activation quantizer, RMSNorm, SwiGLU, residual add and the f16 KV cache
//! writes. Each is checked against its scalar reference in `core/tests/kernels_simd.rs`: the
//! quantizer, the add and the KV writes bit for bit; where sums run in a different order
//! (RMSNorm, SwiGLU's exponential) within a stated tolerance, each kernel still computing every
//! output element the same way whatever the thread split.

use super::q8::{self, hsum};
use crate::format::Format;
use crate::graph::RopeLayout;
use crate::kernels::for_each_tile;
use crate::kernels::table::{KernelTable, OpEntry};
use crate::kv::KvType;
use crate::model::WeightView;
use crate::quant::act_q8::BlockQ8Act;
use core::arch::x86_64::*;

/// Installs the tier's op kernels.
pub(super) fn install(table: &mut KernelTable) {
    table.quantize_q8 = OpEntry::optimized("avx2_quantize_q8", quantize_q8);
    table.rms_norm = OpEntry::optimized("avx2_rms_norm", rms_norm);
    table.swiglu = OpEntry::optimized("avx2_swiglu", swiglu);
    table.add = OpEntry::optimized("avx2_add", add);
    table.rope = OpEntry::optimized("avx2_rope", rope);
    table.kv_store = OpEntry::optimized("avx2_kv_store", kv_store);
    table.attention = OpEntry::optimized("avx2_attention", super::attention::attention::<false>);
    table.attention_folds_chunks = true;
}

// The safe wrappers below are private and reachable only through a table filled by `install`,
// which `KernelTable::select` calls only for a CpuFeatures that promises AVX2, FMA and F16C.

fn rope(x: &[f32], y: &mut [f32], pos: usize, head_dim: usize, layout: RopeLayout, f: &[f32]) {
    // SAFETY: features present (see above).
    unsafe { super::rope::rope_avx2(x, y, pos, head_dim, layout, f) }
}

fn kv_store(kv_type: KvType, src: &[f32], dst: &mut [u8]) {
    match kv_type {
        // SAFETY: features present (see above).
        KvType::F16 => unsafe { store_f16(src, dst) },
        _ => crate::kv::store_row(kv_type, src, dst),
    }
}

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

/// 8 f32 from `s[i..i + 8]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn load(s: &[f32], i: usize) -> __m256 {
    let c = &s[i..i + 8];
    // SAFETY: `c` is 8 readable f32; loadu needs no alignment.
    unsafe { _mm256_loadu_ps(c.as_ptr()) }
}

/// Stores 8 f32 at `s[i..i + 8]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn store(s: &mut [f32], i: usize, v: __m256) {
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
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
    // An f32 weight row is read in place; others are decoded tile by tile (per token: a
    // prefill would otherwise copy the row once per token).
    let in_place: Option<&[f32]> = (w.format == Format::F32)
        .then(|| w.data.get(..d * 4))
        .flatten()
        .and_then(|bytes| bytemuck::try_cast_slice(bytes).ok());
    for (xs, ys) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let inv = 1.0 / libm::sqrtf(dot(xs, xs) / d as f32 + eps);
        if let Some(wf) = in_place {
            scale_tile(xs, wf, inv, ys);
            continue;
        }
        for_each_tile(w, 0, |c0, tile| {
            let len = tile.len();
            scale_tile(&xs[c0..c0 + len], tile, inv, &mut ys[c0..c0 + len]);
        });
    }
}

/// `dst` = `src` as f16 bytes (`dst.len() == 2 · src.len()`), eight at a time by `vcvtps2ph`
/// with round-to-nearest-even: the bits of [`crate::kv::store_row`]'s `f16::from_f32` for every
/// input (infinities, subnormals and overflow to infinity alike; NaN stays NaN with the top of
/// its payload, both ways), checked by the kernel suite. ~1.7 % of a 512-token prefill went to
/// the one-value-at-a-time conversion.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_f16(src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), 2 * src.len(), "f16 row of {} values", src.len());
    let whole = src.len() / 8 * 8;
    let mut i = 0;
    while i < whole {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(load(src, i));
        let out = &mut dst[2 * i..2 * i + 16];
        // SAFETY: `out` is 16 writable bytes; storeu needs no alignment.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), h) };
        i += 8;
    }
    crate::kv::store_row(KvType::F16, &src[whole..], &mut dst[2 * whole..]);
}
