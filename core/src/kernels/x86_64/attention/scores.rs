//! Q·Kᵀ for a tile's rows over eight widened positions: 8-lane FMA chains over the head and one
//! transpose-and-add tree per eight scores, whichever rows share a pass (so the same bits).

use super::{Row, POS_STEP};
use crate::kernels::attention::SCORE_BLOCK;
use crate::kernels::x86_64::ops::{load, store};
use core::arch::x86_64::*;

/// `scale · (q · wide[j])` for the eight rows of `wide` into `out[..8]`. Each score is an
/// 8-lane FMA chain over the head in order, its lanes added by the same tree for every `j`,
/// then the tail past a multiple of 8 in order: independent of the other seven rows.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scores8(q: &[f32], wide: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    assert!(q.len() >= hd && wide.len() >= POS_STEP * hd && out.len() >= POS_STEP);
    let whole = hd / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); POS_STEP];
    let mut c = 0;
    while c < whole {
        // SAFETY: c + 8 <= whole <= hd <= q.len() (asserted above).
        let qc = unsafe { load_at(q.as_ptr(), c) };
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: j·hd + c + 8 <= 8·hd <= wide.len() (asserted above).
            *a = _mm256_fmadd_ps(qc, unsafe { load_at(wide.as_ptr(), j * hd + c) }, *a);
        }
        c += 8;
    }
    finish_scores(sum_lanes8(&acc), q, wide, hd, scale, out);
}

/// `out[j] = scale · (sums[j] + Σ_{i ≥ whole} q[i] · wide[j][i])`, the elements past the last
/// whole 8-lane chunk (if any) added one at a time in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn finish_scores(sums: __m256, q: &[f32], wide: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    let scale = _mm256_set1_ps(scale);
    if hd.is_multiple_of(8) {
        store(out, 0, _mm256_mul_ps(sums, scale));
        return;
    }
    let mut lanes = [0f32; POS_STEP];
    store(&mut lanes, 0, sums);
    for (j, sj) in lanes.iter_mut().enumerate() {
        for i in hd / 8 * 8..hd {
            *sj += q[i] * wide[j * hd + i];
        }
    }
    store(out, 0, _mm256_mul_ps(load(&lanes, 0), scale));
}

/// [`scores8`] for two query rows: each widened K vector is loaded once for both. Per row and
/// position the same FMA chain and the same tree as [`scores8`], so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scores8_pair(q: [&[f32]; 2], wide: &[f32], hd: usize, scale: f32, out: [&mut [f32]; 2]) {
    assert!(q[0].len() >= hd && q[1].len() >= hd && wide.len() >= POS_STEP * hd);
    assert!(out[0].len() >= POS_STEP && out[1].len() >= POS_STEP);
    let whole = hd / 8 * 8;
    let mut sums = [[0f32; POS_STEP]; 2];
    // Four positions per pass: eight accumulators, two rows by four positions.
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); POS_STEP];
        let mut c = 0;
        while c < whole {
            // SAFETY: c + 8 <= whole <= hd <= q[r].len(), and (4·half + j)·hd + c + 8 <=
            // 8·hd <= wide.len() (asserted above).
            unsafe {
                let (qa, qb) = (load_at(q[0].as_ptr(), c), load_at(q[1].as_ptr(), c));
                for j in 0..4 {
                    let w = load_at(wide.as_ptr(), (4 * half + j) * hd + c);
                    acc[j] = _mm256_fmadd_ps(qa, w, acc[j]);
                    acc[4 + j] = _mm256_fmadd_ps(qb, w, acc[4 + j]);
                }
            }
            c += 8;
        }
        let mut lanes = [0f32; POS_STEP];
        store(&mut lanes, 0, sum_lanes8(&acc));
        sums[0][4 * half..4 * half + 4].copy_from_slice(&lanes[..4]);
        sums[1][4 * half..4 * half + 4].copy_from_slice(&lanes[4..]);
    }
    for ((sums, q), out) in sums.iter().zip(q).zip(out) {
        finish_scores(load(sums, 0), q, wide, hd, scale, out);
    }
}

/// The scores of a tile's live rows (those reaching position `pos`) for the eight positions of
/// `wide` (rows of `hd`) into `scores[r][p0..p0 + 8]`, two rows at a time.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn scores_tile_pairs(
    rows: &[Row<'_>],
    q: &[f32],
    wide: &[f32],
    hd: usize,
    scale: f32,
    scores: &mut [[f32; SCORE_BLOCK]],
    p0: usize,
    pos: usize,
) {
    let at = p0..p0 + POS_STEP;
    let mut pairs = rows.chunks_exact(2).zip(scores.chunks_exact_mut(2));
    for (rp, sp) in pairs.by_ref() {
        let [sa, sb] = sp else { unreachable!() };
        if rp[0].reaches(pos) && rp[1].reaches(pos) {
            let q2 = [&q[rp[0].q.clone()], &q[rp[1].q.clone()]];
            scores8_pair(
                q2,
                wide,
                hd,
                scale,
                [&mut sa[at.clone()], &mut sb[at.clone()]],
            );
        } else {
            for (r, sc) in rp.iter().zip([sa, sb]) {
                if r.reaches(pos) {
                    scores8(&q[r.q.clone()], wide, hd, scale, &mut sc[at.clone()]);
                }
            }
        }
    }
    let done = rows.len() / 2 * 2;
    for (r, sc) in rows[done..].iter().zip(scores[done..].iter_mut()) {
        if r.reaches(pos) {
            scores8(&q[r.q.clone()], wide, hd, scale, &mut sc[at.clone()]);
        }
    }
}

/// The scores of a tile's rows for the eight positions of `wide` (in the paired layout of
/// `widen_rows`) into `scores[r][p0..p0 + 8]`, four rows at a time, skipping groups of rows
/// none of which reaches position `pos`.
///
/// # Safety
/// The CPU has AVX-512 F and VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn scores_tile_zmm(
    rows: &[Row<'_>],
    q: &[f32],
    wide: &[f32],
    hd: usize,
    scale: f32,
    scores: &mut [[f32; SCORE_BLOCK]],
    p0: usize,
    pos: usize,
) {
    let mut groups = rows.chunks(4).zip(scores.chunks_mut(4));
    for (rs, sc) in groups.by_ref() {
        if !rs.iter().any(|r| r.reaches(pos)) {
            continue;
        }
        let sc = &mut sc[..rs.len()];
        match rs.len() {
            4 => scores_rows_zmm::<4>(rs, q, wide, hd, scale, sc, p0),
            3 => scores_rows_zmm::<3>(rs, q, wide, hd, scale, sc, p0),
            2 => scores_rows_zmm::<2>(rs, q, wide, hd, scale, sc, p0),
            _ => scores_rows_zmm::<1>(rs, q, wide, hd, scale, sc, p0),
        }
    }
}

/// [`scores8`] for the `R` rows `rows` at once, into `sc[r][p0..p0 + 8]`, in 16-lane vectors:
/// a vector holds one chunk of a pair of positions (the paired layout), so `4R` accumulators
/// cover the rows' eight positions. Each score's lanes are the same FMA chain over the head as
/// [`scores8`]'s and are added by the same tree, so the bits are the same. Needs `hd` a multiple
/// of 8.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[inline]
fn scores_rows_zmm<const R: usize>(
    rows: &[Row<'_>],
    q: &[f32],
    wide: &[f32],
    hd: usize,
    scale: f32,
    sc: &mut [[f32; SCORE_BLOCK]],
    p0: usize,
) {
    assert!(hd.is_multiple_of(8) && wide.len() >= POS_STEP * hd && p0 + POS_STEP <= SCORE_BLOCK);
    assert!(rows.len() == R && sc.len() == R);
    let mut qp = [core::ptr::null::<f32>(); R];
    for (p, r) in qp.iter_mut().zip(rows) {
        *p = q[r.q.start..r.q.start + hd].as_ptr();
    }
    // acc[r][k]: row r's partial sums for positions 2k (low eight lanes) and 2k + 1 (high).
    let mut acc = [[_mm512_setzero_ps(); POS_STEP / 2]; R];
    let wp = wide.as_ptr();
    let mut c = 0;
    while c < hd {
        // SAFETY: pair k's chunk c ends at 2·hd·k + 2c + 16 <= 8·hd <= wide.len(), and each
        // `qp[r]` points at `hd` readable floats with c + 8 <= hd (asserted and sliced above).
        unsafe {
            let w = [
                _mm512_loadu_ps(wp.add(2 * c)),
                _mm512_loadu_ps(wp.add(2 * hd + 2 * c)),
                _mm512_loadu_ps(wp.add(4 * hd + 2 * c)),
                _mm512_loadu_ps(wp.add(6 * hd + 2 * c)),
            ];
            for (p, acc) in qp.iter().zip(acc.iter_mut()) {
                let qc = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(load_at(*p, c))));
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = _mm512_fmadd_ps(qc, *w, *a);
                }
            }
        }
        c += 8;
    }
    for (acc, out) in acc.iter().zip(sc.iter_mut()) {
        let mut by_position = [_mm256_setzero_ps(); POS_STEP];
        for (k, pair) in acc.iter().enumerate() {
            by_position[2 * k] = _mm512_castps512_ps256(*pair);
            by_position[2 * k + 1] =
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*pair)));
        }
        let sums = _mm256_mul_ps(sum_lanes8(&by_position), _mm256_set1_ps(scale));
        store(&mut out[p0..p0 + POS_STEP], 0, sums);
    }
}

/// 8 f32 at `p + i`, unaligned.
///
/// # Safety
/// `p + i .. p + i + 8` is readable.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn load_at(p: *const f32, i: usize) -> __m256 {
    // SAFETY: readable (this function's contract); loadu needs no alignment.
    unsafe { _mm256_loadu_ps(p.add(i)) }
}

/// Lane `j` of the result is the sum of the eight lanes of `acc[j]`, added as
/// `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum_lanes8(acc: &[__m256; POS_STEP]) -> __m256 {
    let a01 = _mm256_hadd_ps(acc[0], acc[1]);
    let a23 = _mm256_hadd_ps(acc[2], acc[3]);
    let a45 = _mm256_hadd_ps(acc[4], acc[5]);
    let a67 = _mm256_hadd_ps(acc[6], acc[7]);
    // Per 128-bit half: [a0 (0..4), a1, a2, a3] and [a4, a5, a6, a7], low half then high half.
    let a0123 = _mm256_hadd_ps(a01, a23);
    let a4567 = _mm256_hadd_ps(a45, a67);
    let lo = _mm256_permute2f128_ps::<0x20>(a0123, a4567);
    let hi = _mm256_permute2f128_ps::<0x31>(a0123, a4567);
    _mm256_add_ps(lo, hi)
}
