//! P·V for a tile's rows over eight widened positions: every output element adds its positions
//! in ascending order, one FMA each, at any vector width and whichever rows share a pass.

use super::scores::load_at;
use super::{Row, POS_STEP};
use crate::kernels::attention::SCORE_BLOCK;
use core::arch::x86_64::*;

/// Output chunks of 8 kept in registers across the positions by [`accumulate_values`].
const HELD_CHUNKS: usize = 8;

/// `o += Σ_j p[j] · wide[j]` with each element of `o` accumulating `j` in ascending order:
/// `o` is a row's first `len` elements, `wide`'s rows are `stride` apart.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn accumulate_values(o: &mut [f32], p: &[f32], wide: &[f32], stride: usize) {
    let (n, len) = (p.len(), o.len());
    assert!(n <= POS_STEP && len <= stride && (n == 0 || wide.len() >= (n - 1) * stride + len));
    let whole = len / 8 * 8;
    let (op, wp) = (o.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * HELD_CHUNKS <= whole {
        // SAFETY: c0 + 64 <= whole <= len = o.len(), and j·stride + c0 + 64 <= (n − 1)·stride
        // + len <= wide.len() for j < n (asserted above).
        unsafe {
            let mut acc: [__m256; HELD_CHUNKS] = core::array::from_fn(|i| load_at(op, c0 + 8 * i));
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pv, load_at(wp, j * stride + c0 + 8 * i), *a);
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
                a = _mm256_fmadd_ps(_mm256_set1_ps(pj), load_at(wp, j * stride + c0), a);
            }
            _mm256_storeu_ps(op.add(c0), a);
        }
        c0 += 8;
    }
    for i in whole..len {
        for (j, &pj) in p.iter().enumerate() {
            o[i] += pj * wide[j * stride + i];
        }
    }
}

/// Output chunks of 8 per row kept in registers by [`accumulate_values_pair`].
const PAIR_CHUNKS: usize = 4;

/// [`accumulate_values`] for two rows over the same positions (`o[r]` of `hd`): each widened V
/// vector is loaded once for both rows. Every element of `o[r]` adds `p[r][j] · wide[j]` in
/// ascending `j`, as [`accumulate_values`] does, so the bits are those of two separate calls.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn accumulate_values_pair(o: [&mut [f32]; 2], p: [&[f32]; 2], wide: &[f32], hd: usize) {
    let n = p[0].len();
    assert!(p[1].len() == n && n <= POS_STEP && wide.len() >= n * hd);
    assert!(o[0].len() == hd && o[1].len() == hd);
    let whole = hd / 8 * 8;
    let [oa, ob] = o;
    let (pa, pb, wp) = (oa.as_mut_ptr(), ob.as_mut_ptr(), wide.as_ptr());
    let mut c0 = 0;
    while c0 + 8 * PAIR_CHUNKS <= whole {
        // SAFETY: c0 + 8·PAIR_CHUNKS <= whole <= hd = o[r].len(), and j·hd + c0 +
        // 8·PAIR_CHUNKS <= n·hd <= wide.len() for j < n (asserted above).
        unsafe {
            let mut acc_a: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pa, c0 + 8 * i));
            let mut acc_b: [__m256; PAIR_CHUNKS] =
                core::array::from_fn(|i| load_at(pb, c0 + 8 * i));
            for (j, (&a, &b)) in p[0].iter().zip(p[1]).enumerate() {
                let (wa, wb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
                for i in 0..PAIR_CHUNKS {
                    let w = load_at(wp, j * hd + c0 + 8 * i);
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
                let w = load_at(wp, j * hd + c0);
                a = _mm256_fmadd_ps(_mm256_set1_ps(pa_j), w, a);
                b = _mm256_fmadd_ps(_mm256_set1_ps(pb_j), w, b);
            }
            _mm256_storeu_ps(pa.add(c0), a);
            _mm256_storeu_ps(pb.add(c0), b);
        }
        c0 += 8;
    }
    for (o, p) in [(oa, p[0]), (ob, p[1])] {
        for i in whole..hd {
            for (j, &pj) in p.iter().enumerate() {
                o[i] += pj * wide[j * hd + i];
            }
        }
    }
}

/// P·V of a tile's rows for the `step` positions of `wide` (rows of `hd`) starting at block
/// offset `p0` (position `pos`): two rows at a time over the positions both reach, then each
/// row alone over the rest, so every output element still adds its positions in ascending
/// order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn values_tile_pairs(
    rows: &mut [Row<'_>],
    scores: &[[f32; SCORE_BLOCK]],
    wide: &[f32],
    hd: usize,
    p0: usize,
    step: usize,
    pos: usize,
) {
    let mut pairs = rows.chunks_exact_mut(2).zip(scores.chunks_exact(2));
    for (rp, sp) in pairs.by_ref() {
        let [ra, rb] = rp else { unreachable!() };
        let (ma, mb) = (ra.positions_from(pos, step), rb.positions_from(pos, step));
        let both = ma.min(mb);
        if both > 0 {
            let o = [&mut *ra.work, &mut *rb.work];
            let p = [&sp[0][p0..p0 + both], &sp[1][p0..p0 + both]];
            accumulate_values_pair(o, p, wide, hd);
        }
        for (r, sc, m) in [(ra, &sp[0], ma), (rb, &sp[1], mb)] {
            if m > both {
                accumulate_values(r.work, &sc[p0 + both..p0 + m], &wide[both * hd..], hd);
            }
        }
    }
    let done = rows.len() / 2 * 2;
    for (r, sc) in rows[done..].iter_mut().zip(scores[done..].iter()) {
        let m = r.positions_from(pos, step);
        if m > 0 {
            accumulate_values(r.work, &sc[p0..p0 + m], wide, hd);
        }
    }
}

/// Output chunks of 16 per row kept in registers by [`values_rows_zmm`].
const ZMM_CHUNKS: usize = 4;

/// P·V of a tile's rows for the `step` positions of `wide` starting at block offset `p0`
/// (position `pos`): four rows at a time in 16-lane vectors over the positions they all reach,
/// then each row alone over the rest. Every output element adds its positions in ascending
/// order, one FMA each, so the bits are those of [`accumulate_values`] row by row.
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn values_tile_zmm(
    rows: &mut [Row<'_>],
    scores: &[[f32; SCORE_BLOCK]],
    wide: &[f32],
    hd: usize,
    p0: usize,
    step: usize,
    pos: usize,
) {
    for (rs, sc) in rows.chunks_mut(4).zip(scores.chunks(4)) {
        let all = rs
            .iter()
            .map(|r| r.positions_from(pos, step))
            .min()
            .unwrap_or(0);
        if all > 0 {
            match rs.len() {
                4 => values_rows_zmm::<4>(rs, sc, p0, all, wide, hd),
                3 => values_rows_zmm::<3>(rs, sc, p0, all, wide, hd),
                2 => values_rows_zmm::<2>(rs, sc, p0, all, wide, hd),
                _ => values_rows_zmm::<1>(rs, sc, p0, all, wide, hd),
            }
        }
        for (r, sc) in rs.iter_mut().zip(sc) {
            let m = r.positions_from(pos, step);
            if m > all {
                accumulate_values(r.work, &sc[p0 + all..p0 + m], &wide[all * hd..], hd);
            }
        }
    }
}

/// `rows[r].work += Σ_{j < n} sc[r][p0 + j] · wide[j]` for `R` rows in 16-lane vectors, each
/// widened V vector loaded once for all of them; the tail past a multiple of 16 as
/// [`accumulate_values`] does it.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn values_rows_zmm<const R: usize>(
    rows: &mut [Row<'_>],
    sc: &[[f32; SCORE_BLOCK]],
    p0: usize,
    n: usize,
    wide: &[f32],
    hd: usize,
) {
    assert!(rows.len() == R && sc.len() >= R && n <= POS_STEP && p0 + n <= SCORE_BLOCK);
    assert!(wide.len() >= n * hd && rows.iter().all(|r| r.work.len() == hd));
    let mut op = [core::ptr::null_mut::<f32>(); R];
    for (p, r) in op.iter_mut().zip(rows.iter_mut()) {
        *p = r.work.as_mut_ptr();
    }
    let whole = hd / 16 * 16;
    let wp = wide.as_ptr();
    // A fixed-size view, so the rows' loops unroll and their accumulators stay in registers.
    let sc_rows: &[[f32; SCORE_BLOCK]; R] = sc[..R].try_into().expect("R score rows");
    let mut c0 = 0;
    while c0 < whole {
        if c0 + 16 * ZMM_CHUNKS <= whole {
            // SAFETY: c0 + 16·ZMM_CHUNKS <= whole <= hd = each row's `work` length, and
            // j·hd + c0 + 16·ZMM_CHUNKS <= n·hd <= wide.len() for j < n (asserted above).
            unsafe { values_chunks_zmm::<R, ZMM_CHUNKS>(&op, sc_rows, p0, n, wp, hd, c0) };
            c0 += 16 * ZMM_CHUNKS;
        } else {
            // SAFETY: as above, for one chunk of 16: c0 + 16 <= whole.
            unsafe { values_chunks_zmm::<R, 1>(&op, sc_rows, p0, n, wp, hd, c0) };
            c0 += 16;
        }
    }
    if whole < hd {
        for (r, sc) in rows.iter_mut().zip(sc) {
            let tail = &mut r.work[whole..];
            accumulate_values(tail, &sc[p0..p0 + n], &wide[whole..], hd);
        }
    }
}

/// Elements `c0 .. c0 + 16·C` of `R` rows' outputs (`op[r]`) plus their `n` positions' values.
///
/// # Safety
/// Each `op[r]` has `c0 + 16·C` writable floats, `wp` has `(n − 1)·hd + c0 + 16·C` readable
/// ones, and the CPU has AVX-512 F.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn values_chunks_zmm<const R: usize, const C: usize>(
    op: &[*mut f32; R],
    sc: &[[f32; SCORE_BLOCK]; R],
    p0: usize,
    n: usize,
    wp: *const f32,
    hd: usize,
    c0: usize,
) {
    // SAFETY: in bounds by this function's contract.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for (acc, &o) in acc.iter_mut().zip(op) {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(o.add(c0 + 16 * i));
            }
        }
        for j in 0..n {
            let mut w = [_mm512_setzero_ps(); C];
            for (i, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_ps(wp.add(j * hd + c0 + 16 * i));
            }
            for (acc, sc) in acc.iter_mut().zip(sc) {
                let p = _mm512_set1_ps(sc[p0 + j]);
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(p, *w, *a);
                }
            }
        }
        for (acc, &o) in acc.iter().zip(op) {
            for (i, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(o.add(c0 + 16 * i), *a);
            }
        }
    }
}
