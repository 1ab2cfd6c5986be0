//! P·V for a tile's rows over eight widened positions: every output element adds its positions
//! in ascending order, one FMA each, at any vector width and whichever rows share a pass.

use super::scores::load_at;
use super::POS_STEP;
use core::arch::x86_64::*;

/// Output chunks of 8 kept in registers across the positions by [`accumulate_values`].
const HELD_CHUNKS: usize = 8;

/// `o += Σ_j p[j] · wide[j]` with each element of `o` accumulating `j` in ascending order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn accumulate_values(o: &mut [f32], p: &[f32], wide: &[f32], hd: usize) {
    assert!(o.len() == hd && p.len() <= POS_STEP && wide.len() >= p.len() * hd);
    let whole = hd / 8 * 8;
    let (op, wp) = (o.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * HELD_CHUNKS <= whole {
        // SAFETY: c0 + 64 <= whole <= hd = o.len(), and j·hd + c0 + 64 <= p.len()·hd <=
        // wide.len() for j < p.len() (asserted above).
        unsafe {
            let mut acc: [__m256; HELD_CHUNKS] = core::array::from_fn(|i| load_at(op, c0 + 8 * i));
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pv, load_at(wp, j * hd + c0 + 8 * i), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(op.add(c0 + 8 * i), *a);
            }
        }
        c0 += 8 * HELD_CHUNKS;
    }
    while c0 < whole {
        // SAFETY: as above, for one chunk: c0 + 8 <= whole.
        unsafe {
            let mut a = load_at(op, c0);
            for (j, &pj) in p.iter().enumerate() {
                a = _mm256_fmadd_ps(_mm256_set1_ps(pj), load_at(wp, j * hd + c0), a);
            }
            _mm256_storeu_ps(op.add(c0), a);
        }
        c0 += 8;
    }
    for i in whole..hd {
        for (j, &pj) in p.iter().enumerate() {
            o[i] += pj * wide[j * hd + i];
        }
    }
}

/// Output chunks of 8 per row kept in registers by [`accumulate_values_pair`].
const PAIR_CHUNKS: usize = 4;

/// [`accumulate_values`] for two rows over the same positions: each widened V vector is loaded
/// once for both rows. `o[r]` are the rows' first `len` elements, `wide`'s rows `stride` apart. Every element of `o[r]` adds `p[r][j] · wide[j]` in ascending `j`, as
/// [`accumulate_values`] does, so the bits are those of two separate calls.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn accumulate_values_pair(
    o: [&mut [f32]; 2],
    p: [&[f32]; 2],
    wide: &[f32],
    stride: usize,
) {
    let (n, len) = (p[0].len(), o[0].len());
    assert!(p[1].len() == n && n <= POS_STEP && o[1].len() == len && len <= stride);
    assert!(n == 0 || wide.len() >= (n - 1) * stride + len);
    let whole = len / 8 * 8;
    let [oa, ob] = o;
    let (pa, pb, wp) = (oa.as_mut_ptr(), ob.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * PAIR_CHUNKS <= whole {
        // SAFETY: c0 + 8·PAIR_CHUNKS <= whole <= len = o[r].len(), and j·stride + c0 +
        // 8·PAIR_CHUNKS <= (n − 1)·stride + len <= wide.len() for j < n (asserted above).
        unsafe {
            let mut acc_a: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pa, c0 + 8 * i));
            let mut acc_b: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pb, c0 + 8 * i));
            for (j, (&a, &b)) in p[0].iter().zip(p[1]).enumerate() {
                let (wa, wb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
                for i in 0..PAIR_CHUNKS {
                    let w = load_at(wp, j * stride + c0 + 8 * i);
                    acc_a[i] = _mm256_fmadd_ps(wa, w, acc_a[i]);
                    acc_b[i] = _mm256_fmadd_ps(wb, w, acc_b[i]);
                }
            }
            for i in 0..PAIR_CHUNKS {
                _mm256_storeu_ps(pa.add(c0 + 8 * i), acc_a[i]);
                _mm256_storeu_ps(pb.add(c0 + 8 * i), acc_b[i]);
            }
        }
        c0 += 8 * PAIR_CHUNKS;
    }
    while c0 < whole {
        // SAFETY: as above, for one chunk: c0 + 8 <= whole.
        unsafe {
            let (mut a, mut b) = (load_at(pa, c0), load_at(pb, c0));
            for (j, (&pa_j, &pb_j)) in p[0].iter().zip(p[1]).enumerate() {
                let w = load_at(wp, j * stride + c0);
                a = _mm256_fmadd_ps(_mm256_set1_ps(pa_j), w, a);
                b = _mm256_fmadd_ps(_mm256_set1_ps(pb_j), w, b);
            }
            _mm256_storeu_ps(pa.add(c0), a);
            _mm256_storeu_ps(pb.add(c0), b);
        }
        c0 += 8;
    }
    for (o, p) in [(oa, p[0]), (ob, p[1])] {
        for i in whole..len {
            for (j, &pj) in p.iter().enumerate() {
                o[i] += pj * wide[j * stride + i];
            }
        }
    }
}

/// [`accumulate_values_pair`] in 16-lane vectors: the same FMA per element and position, in
/// the same order, so the same bits with half the instructions.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn accumulate_values_pair_zmm(
    o: [&mut [f32]; 2],
    p: [&[f32]; 2],
    wide: &[f32],
    hd: usize,
) {
    let n = p[0].len();
    assert!(p[1].len() == n && n <= POS_STEP && wide.len() >= n * hd);
    assert!(o[0].len() == hd && o[1].len() == hd);
    let whole = hd / 16 * 16;
    let [oa, ob] = o;
    let (pa, pb, wp) = (oa.as_mut_ptr(), ob.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 16 * PAIR_CHUNKS <= whole {
        // SAFETY: c0 + 16·PAIR_CHUNKS <= whole <= hd = o[r].len(), and j·hd + c0 +
        // 16·PAIR_CHUNKS <= n·hd <= wide.len() for j < n (asserted above).
        unsafe {
            let mut acc_a: [__m512; PAIR_CHUNKS] =
                core::array::from_fn(|i| _mm512_loadu_ps(pa.add(c0 + 16 * i)));
            let mut acc_b: [__m512; PAIR_CHUNKS] =
                core::array::from_fn(|i| _mm512_loadu_ps(pb.add(c0 + 16 * i)));
            for (j, (&a, &b)) in p[0].iter().zip(p[1]).enumerate() {
                let (wa, wb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
                for i in 0..PAIR_CHUNKS {
                    let w = _mm512_loadu_ps(wp.add(j * hd + c0 + 16 * i));
                    acc_a[i] = _mm512_fmadd_ps(wa, w, acc_a[i]);
                    acc_b[i] = _mm512_fmadd_ps(wb, w, acc_b[i]);
                }
            }
            for i in 0..PAIR_CHUNKS {
                _mm512_storeu_ps(pa.add(c0 + 16 * i), acc_a[i]);
                _mm512_storeu_ps(pb.add(c0 + 16 * i), acc_b[i]);
            }
        }
        c0 += 16 * PAIR_CHUNKS;
    }
    while c0 < whole {
        // SAFETY: as above, for one 16-lane chunk: c0 + 16 <= whole.
        unsafe {
            let (mut a, mut b) = (_mm512_loadu_ps(pa.add(c0)), _mm512_loadu_ps(pb.add(c0)));
            for (j, (&pa_j, &pb_j)) in p[0].iter().zip(p[1]).enumerate() {
                let w = _mm512_loadu_ps(wp.add(j * hd + c0));
                a = _mm512_fmadd_ps(_mm512_set1_ps(pa_j), w, a);
                b = _mm512_fmadd_ps(_mm512_set1_ps(pb_j), w, b);
            }
            _mm512_storeu_ps(pa.add(c0), a);
            _mm512_storeu_ps(pb.add(c0), b);
        }
        c0 += 16;
    }
    if whole < hd {
        // The rest (fewer than 16 elements) as the 8-lane pair does it.
        let tail = [&mut oa[whole..], &mut ob[whole..]];
        accumulate_values_pair(tail, p, &wide[whole..], hd);
    }
}
