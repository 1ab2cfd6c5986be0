//! The AVX-512 tier's 8-bit matmul for one token (a decode step) over the formats of 32 or 64
//! weights per block: eight rows at a time, each row's 64 weights (one 64-weight block, or two
//! 32-weight ones) in one 512-bit `vpdpbusd`, [`super::rows8`]'s reduction tree to the rows'
//! exact integer sums per 32-weight chunk, and the float arithmetic of both chunks in one
//! 512-bit vector: lanes 0–7 are the even chunks' chain and lanes 8–15 the odd chunks' of
//! [`super::rows8::accumulate`], with the same operations per lane in the same order, so an
//! output has the bits every other driver gives it.
//!
//! On a Zen 5 this loop is bound by its vector instructions (about four per cycle), so it is
//! written to spend few of them per eight rows and 64 weights: the activation pair's scales and
//! sums come as lanes from one 64-byte load and two lane permutes ([`pair_acts`]), where
//! broadcasts of each and a 256-bit multiply-add per chunk spent about three times as many; the
//! rows' block scales are gathered by the same interleave tree on 256 bits, each row's first
//! bytes read to both 128-bit lanes (a load, not an instruction); and the rows ahead are asked
//! for at a fixed count of lines per block ([`prefetch_share`]) instead of by a loop with a
//! bounds check per line.

use super::rows8::{
    accumulate, chunk_sums, decode_block_of_group, join_acts, prefetch_head, prefetch_lines,
    prefetch_share, quarter_sums, rows_ahead_by, rows_of, sums_one_token, write_lanes, Acc, GROUP,
};
use super::{load16, BlockQ8Act, Q8Format, QK8};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::arch::x86_64::*;
use core::ops::Range;

/// The 8-bit matmul of format `F` for one token over rows `rows`, each row group's successors
/// asked for `ahead` groups on ([`prefetch_share`], with the non-temporal hint).
///
/// # Safety
/// The CPU supports AVX2, FMA, F16C and AVX-512 F, BW, VL, VNNI and VBMI; no other thread
/// touches rows `rows` of `out`; `x` holds `w.cols / 32` blocks and `w.cols` is a multiple of
/// `F::ELEMS`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn matmul<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    rows: Range<usize>,
    out: &SharedOut<'_>,
    ahead: usize,
) {
    if rows.is_empty() {
        return;
    }
    let last = rows.end - 1;
    prefetch_head(w, &rows, GROUP);
    for first in rows.clone().step_by(GROUP) {
        let count = (rows.end - first).min(GROUP);
        // Rows past the range repeat its last row; their lanes are computed, not written.
        let group: [&[u8]; GROUP] = rows_of(w, first, last);
        let next = rows_ahead_by(w, first, GROUP, ahead);
        let v = group_outputs::<F, true>(&group, next, x);
        // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
        unsafe { write_lanes(out, v, 0, w.rows, first, count) };
    }
}

/// The outputs of eight rows (`rows[i]`, lane `i`) for one token whose activation blocks are
/// `acts` (`w.cols / 32` of them), asking for `next` (the rows to be computed later) meanwhile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
pub(super) fn group_outputs<F: Q8Format, const NTA: bool>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    acts: &[BlockQ8Act],
) -> __m256 {
    let halves = F::ELEMS / QK8;
    let blocks = rows[0].len() / F::BYTES;
    // Lanes 0–7: the chain of even chunks, 8–15: of odd chunks (`Acc::sum[0]`, `[1]`).
    let (mut sums, mut mins) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks.max(1));
    let mut b = 0;
    if halves == 1 {
        // 32-weight blocks two at a time (chunks b and b + 1, b even).
        while b + 2 <= blocks {
            // Formats of 8 bits or more per weight (Q8_0) stream at the memory's bandwidth: for
            // them the next group's lines are all asked for before this group's last blocks
            // (the count per block rounded up), which kept a 1-thread Q8_0 GGUF decode at
            // 224-227 tok/s where one share per block in step with the reads gave 199 (`vspec
            // bench -p 0 -n 128 -r 3 -t 1`, five alternating rounds, 2026-12-05 07:20 UTC);
            // the narrower formats ran as fast or faster in step.
            if F::BYTES >= F::ELEMS {
                prefetch_lines::<NTA>(next, b * lines_per_block, 2 * lines_per_block);
            } else {
                prefetch_share::<NTA>(next, b * GROUP * F::BYTES, 2 * GROUP * F::BYTES);
            }
            let mut w = [_mm512_setzero_si512(); GROUP];
            let mut heads = [_mm256_setzero_si256(); GROUP];
            for i in 0..GROUP {
                let (b0, b1) = rows[i][b * F::BYTES..(b + 2) * F::BYTES].split_at(F::BYTES);
                // SAFETY: this tier's table installs `F` only where the CPU has the features its
                // decoder needs, all enabled here (target_feature).
                w[i] = unsafe { F::decode_pair_biased_512(b0, b1) };
                heads[i] = _mm256_set_m128i(load16(b1, 0), load16(b0, 0));
            }
            let (d, m) = scales_and_mins_16(&heads);
            add_pair::<F>(&mut sums, &mut mins, &w, d, m, &acts[b..b + 2]);
            b += 2;
        }
    }
    if halves == 2 {
        // A 64-weight block's two chunks at once (2b is even, 2b + 1 odd).
        while b < blocks {
            prefetch_share::<NTA>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
            let mut w = [_mm512_setzero_si512(); GROUP];
            let mut heads = [_mm256_setzero_si256(); GROUP];
            for i in 0..GROUP {
                let block = &rows[i][b * F::BYTES..(b + 1) * F::BYTES];
                // SAFETY: as above.
                w[i] = unsafe { F::decode_biased_512(block) };
                heads[i] = _mm256_broadcastsi128_si256(load16(block, 0));
            }
            let (d, m) = scales_and_mins_16(&heads);
            add_pair::<F>(&mut sums, &mut mins, &w, d, m, &acts[2 * b..2 * b + 2]);
            b += 1;
        }
    }
    let mut acc = Acc {
        sum: [low_half(sums), high_half(sums)],
        min: [low_half(mins), high_half(mins)],
    };
    // What is left (an odd last 32-weight block, or blocks of other widths): a chunk at a time.
    for b in b..blocks {
        prefetch_share::<NTA>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
        let (w, d, m) = decode_block_of_group::<F>(rows, b, next, 0);
        let m = (!F::SIGNED).then_some(m);
        for (h, w) in w.iter().enumerate().take(halves) {
            let chunk = b * halves + h;
            let a = &acts[chunk];
            accumulate(
                &mut acc,
                chunk & 1,
                sums_one_token(w, a, F::SIGNED),
                d,
                m,
                a,
            );
        }
    }
    _mm256_add_ps(
        _mm256_add_ps(acc.sum[0], acc.sum[1]),
        _mm256_add_ps(acc.min[0], acc.min[1]),
    )
}

/// Adds two consecutive chunks of eight rows (`w[i]`: row `i`'s 64 weights, biased for
/// `vpdpbusd` when signed; `d`, `m`: the rows' scales and mins for the first chunk in lanes 0–7
/// and the second in 8–15) with activation blocks `acts[0]`, `acts[1]` to the chains `sums`,
/// `mins`: per lane what [`accumulate`] does, `sum += (d·d_a)·isum`, `min += m·(d_a·Σa)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn add_pair<F: Q8Format>(
    sums: &mut __m512,
    mins: &mut __m512,
    w: &[__m512i; GROUP],
    d: __m512,
    m: __m512,
    acts: &[BlockQ8Act],
) {
    let pair = pair_acts(acts);
    let [s0123, s4567] = quarter_sums(w, pair.qs);
    let mut s = chunk_sums(s0123, s4567);
    if F::SIGNED {
        // The +128 bias of the weights, taken back as 128 · Σa.
        s = _mm512_sub_epi32(s, _mm512_slli_epi32::<7>(pair.sum));
    }
    *sums = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, pair.d), *sums);
    if !F::SIGNED {
        let a_sum = _mm512_mul_ps(pair.d, _mm512_cvtepi32_ps(pair.sum));
        *mins = _mm512_fmadd_ps(m, a_sum, *mins);
    }
}

/// Two activation blocks as lanes: their quants (the first block's in the low half), and each
/// block's scale and integer sum in lanes 0–7 (first) and 8–15 (second).
struct PairActs {
    qs: __m512i,
    d: __m512,
    sum: __m512i,
}

// `pair_acts` reads the blocks' fields as dwords of one 64-byte load.
const _: () = assert!(
    core::mem::offset_of!(BlockQ8Act, d) == 0 && core::mem::offset_of!(BlockQ8Act, sum) == 4
);
const _: () = assert!(core::mem::size_of::<BlockQ8Act>() == 40);

/// [`PairActs`] of `acts[0]`, `acts[1]`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
fn pair_acts(acts: &[BlockQ8Act]) -> PairActs {
    let pair = &acts[..2];
    // SAFETY: `pair` is two contiguous `repr(C)` blocks of 40 bytes, 80 readable bytes, of which
    // the load reads the first 64; no alignment is needed.
    let head = unsafe { _mm512_loadu_si512(pair.as_ptr().cast()) };
    // Dword 0 is the first block's `d`, 1 its `sum`; the second block's are dwords 10, 11.
    let lanes = |field: i32| {
        let (a, b) = (field, field + 10);
        _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a)
    };
    PairActs {
        qs: join_acts(&pair[0], &pair[1]),
        d: _mm512_castsi512_ps(_mm512_permutexvar_epi32(lanes(0), head)),
        sum: _mm512_permutexvar_epi32(lanes(1), head),
    }
}

/// `rows8::scales_and_mins` on two 128-bit lanes at once: each row's first 16 bytes for the
/// first chunk in the low lane of `heads[i]` and for the second in the high lane (the same
/// bytes twice for a 64-weight block); the rows' scales and mins as f32, the first chunk's in
/// lanes 0–7.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
#[inline]
fn scales_and_mins_16(heads: &[__m256i; GROUP]) -> (__m512, __m512) {
    let p: [__m256i; 4] =
        core::array::from_fn(|j| _mm256_unpacklo_epi16(heads[2 * j], heads[2 * j + 1]));
    let lo = _mm256_unpacklo_epi32(p[0], p[1]);
    let hi = _mm256_unpacklo_epi32(p[2], p[3]);
    (
        _mm512_cvtph_ps(_mm256_unpacklo_epi64(lo, hi)),
        _mm512_cvtph_ps(_mm256_unpackhi_epi64(lo, hi)),
    )
}

#[target_feature(enable = "avx512f")]
#[inline]
fn low_half(v: __m512) -> __m256 {
    _mm512_castps512_ps256(v)
}

#[target_feature(enable = "avx512f")]
#[inline]
fn high_half(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
}
