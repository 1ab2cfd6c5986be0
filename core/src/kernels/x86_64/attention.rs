//! AVX2+FMA+F16C attention over an f32, f16 or Q8_0 KV cache, blocked with an online softmax.
//!
//! For each query head and token, the cached positions are walked in blocks of
//! [`SCORE_BLOCK`]: the block's scores go to the head's planned scratch row, the running maximum
//! `m` and sum `l` are updated (the partial output and `l` are multiplied by `e^(m_old − m_new)`
//! when the maximum rises), then the block's values are added with weights `e^(s − m)`. The
//! output is divided by `l` at the end. The scratch stays `SCORE_BLOCK` f32 per head whatever the
//! context. f16 rows are widened with `vcvtph2ps`, Q8_0 rows with `vpmovsxbd` and their block
//! scale applied per 32 values, both as they are read. The query heads of one GQA group are
//! attended together so each K and V row is read once for all of them; each head's arithmetic is
//! the same however heads are grouped or split across threads. Checked against the scalar
//! reference (a three-pass exact softmax) in `core/tests/kernels_simd.rs`.

use super::ops::{exp, load, store};
use super::q8::hsum;
use crate::kernels::attention::{AttnShape, SCORE_BLOCK};
use crate::kernels::SharedOut;
use crate::kv::KvRows;
use crate::quant::gguf::q8_0::{BLOCK_BYTES as Q8_BYTES, BLOCK_ELEMS as Q8_ELEMS};
use core::arch::x86_64::*;
use core::ops::Range;
use half::f16;

/// Query heads of one GQA group attended together.
const MAX_GROUP: usize = 8;

/// # Safety
/// Same contract as [`crate::kernels::table::AttentionFn`]; installed only from a table that
/// `select` built for a CPU with AVX2, FMA and F16C.
pub(super) unsafe fn attention(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
    heads: Range<usize>,
    scores: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    // SAFETY: features present (see above); head exclusivity is the caller's contract.
    unsafe { attention_avx2(s, q, k, v, heads, scores, out) }
}

/// `q · (head row at value offset `off`)`, the row in any cache type.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_row(q: &[f32], rows: &KvRows<'_>, off: usize) -> f32 {
    let n = q.len();
    match rows {
        KvRows::F32(c) => super::ops::dot(q, &c[off..off + n]),
        KvRows::F16(c) => {
            let h = &c[off..off + n];
            let whole = n / 8 * 8;
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < whole {
                acc = _mm256_fmadd_ps(load(q, i), load_f16(h, i), acc);
                i += 8;
            }
            let mut sum = hsum(acc);
            for j in whole..n {
                sum += q[j] * f16::from_bits(h[j]).to_f32();
            }
            sum
        }
        KvRows::Q8_0(b) => {
            let mut acc = _mm256_setzero_ps();
            for (blk, i) in q8_blocks(b, off, n).zip((0..n).step_by(Q8_ELEMS)) {
                let mut part = _mm256_setzero_ps();
                for c in 0..Q8_ELEMS / 8 {
                    part = _mm256_fmadd_ps(load(q, i + 8 * c), load_i8(blk, c), part);
                }
                acc = _mm256_fmadd_ps(part, _mm256_set1_ps(q8_scale(blk)), acc);
            }
            hsum(acc)
        }
    }
}

/// `o += p · (head row at value offset `off`)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn axpy_row(o: &mut [f32], p: f32, rows: &KvRows<'_>, off: usize) {
    let n = o.len();
    let pv = _mm256_set1_ps(p);
    match rows {
        KvRows::F32(c) => {
            let v = &c[off..off + n];
            let whole = n / 8 * 8;
            let mut i = 0;
            while i < whole {
                store(o, i, _mm256_fmadd_ps(pv, load(v, i), load(o, i)));
                i += 8;
            }
            for j in whole..n {
                o[j] += p * v[j];
            }
        }
        KvRows::F16(c) => {
            let h = &c[off..off + n];
            let whole = n / 8 * 8;
            let mut i = 0;
            while i < whole {
                store(o, i, _mm256_fmadd_ps(pv, load_f16(h, i), load(o, i)));
                i += 8;
            }
            for j in whole..n {
                o[j] += p * f16::from_bits(h[j]).to_f32();
            }
        }
        KvRows::Q8_0(b) => {
            for (blk, i) in q8_blocks(b, off, n).zip((0..n).step_by(Q8_ELEMS)) {
                let pd = _mm256_set1_ps(p * q8_scale(blk));
                for c in 0..Q8_ELEMS / 8 {
                    let at = i + 8 * c;
                    store(o, at, _mm256_fmadd_ps(pd, load_i8(blk, c), load(o, at)));
                }
            }
        }
    }
}

/// The Q8_0 blocks holding values `off..off + n` (both whole blocks, as a head is).
fn q8_blocks<'b>(b: &'b [u8], off: usize, n: usize) -> core::slice::ChunksExact<'b, u8> {
    let first = off / Q8_ELEMS;
    b[first * Q8_BYTES..(first + n / Q8_ELEMS) * Q8_BYTES].chunks_exact(Q8_BYTES)
}

/// A Q8_0 block's f16 scale.
#[inline]
fn q8_scale(blk: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32()
}

/// 8 f16 from `h[i..i + 8]` widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_f16(h: &[u16], i: usize) -> __m256 {
    let c = &h[i..i + 8];
    // SAFETY: `c` is 8 readable u16 (16 bytes); loadu needs no alignment.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(c.as_ptr().cast()) })
}

/// Quants `8c..8c + 8` of a Q8_0 block widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_i8(blk: &[u8], c: usize) -> __m256 {
    let b = &blk[2 + 8 * c..2 + 8 * c + 8];
    // SAFETY: `b` is 8 readable bytes; loadl_epi64 reads exactly 8 bytes, unaligned.
    let x = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x))
}

/// `o *= f`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scale_in_place(o: &mut [f32], f: f32) {
    let n = o.len();
    let whole = n / 8 * 8;
    let fv = _mm256_set1_ps(f);
    let mut i = 0;
    while i < whole {
        store(o, i, _mm256_mul_ps(load(o, i), fv));
        i += 8;
    }
    for x in o[whole..].iter_mut() {
        *x *= f;
    }
}

/// # Safety
/// AVX2, FMA and F16C are present; no other thread touches the scratch rows or output columns of
/// heads `heads`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attention_avx2(
    s: &AttnShape,
    q: &[f32],
    k: KvRows<'_>,
    v: KvRows<'_>,
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
            *row = unsafe { scores.slice_mut(h * SCORE_BLOCK..(h + 1) * SCORE_BLOCK) };
        }
        for t in 0..s.tokens {
            let n_pos = s.pos0 + t + 1;
            let qh = |i: usize| {
                let h = h0 + i;
                &q[t * q_width + h * hd..t * q_width + (h + 1) * hd]
            };
            let mut o: [&mut [f32]; MAX_GROUP] = Default::default();
            for (i, oi) in o.iter_mut().enumerate().take(g) {
                let h = h0 + i;
                // SAFETY: the output columns of head h in row t belong to this call alone, and
                // distinct heads' columns are disjoint.
                *oi = unsafe { out.slice_mut(t * q_width + h * hd..t * q_width + (h + 1) * hd) };
                oi.fill(0.0);
            }
            let mut max = [f32::NEG_INFINITY; MAX_GROUP];
            let mut sum = [0f32; MAX_GROUP];
            let mut b0 = 0;
            while b0 < n_pos {
                let len = SCORE_BLOCK.min(n_pos - b0);
                let mut block_max = [f32::NEG_INFINITY; MAX_GROUP];
                #[allow(clippy::needless_range_loop)] // jj indexes every head's row of `sc`
                for jj in 0..len {
                    let off = (b0 + jj) * kv_width + kvh * hd;
                    for i in 0..g {
                        let x = dot_row(qh(i), &k, off) * s.scale;
                        sc[i][jj] = x;
                        block_max[i] = block_max[i].max(x);
                    }
                }
                for i in 0..g {
                    let new_max = max[i].max(block_max[i]);
                    if max[i] != new_max && max[i] != f32::NEG_INFINITY {
                        let shrink = libm::expf(max[i] - new_max);
                        scale_in_place(o[i], shrink);
                        sum[i] *= shrink;
                    }
                    max[i] = new_max;
                    sum[i] += softmax_numerators(&mut sc[i][..len], new_max);
                }
                #[allow(clippy::needless_range_loop)] // jj indexes every head's row of `sc`
                for jj in 0..len {
                    let off = (b0 + jj) * kv_width + kvh * hd;
                    for i in 0..g {
                        axpy_row(o[i], sc[i][jj], &v, off);
                    }
                }
                b0 += len;
            }
            for i in 0..g {
                scale_in_place(o[i], 1.0 / sum[i]);
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
