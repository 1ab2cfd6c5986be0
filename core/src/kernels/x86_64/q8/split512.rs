//! The AVX-512 tier's one-token matmul for CPUs that issue a 512-bit operation as two 256-bit
//! halves (AMD Zen 4): 256-bit `vpdpbusd` pairs for the formats whose blocks decode two
//! 32-weight chunks as halves ([`Q8Format::PAIR_HALVES`]: Q4_0, Q4_1, Q5_0, Q5_1, VQ2, VQ3,
//! VQ4) and for the trellis formats held row-major after their 512-bit VBMI decode
//! ([`Q8Format::HALVES_512`]: TQ2, TQ3, TQ4; 24.4 → 26.4 G weights/s for TQ3, the 512-bit
//! codebook lookup being most of what is left; weights interleaved per sixteen rows, the
//! default, go to [`super::trellis_rows16`] through [`super::rows8`]), [`super::rows8`]'s kernel
//! for Q8_0, IQ4_NL and NQ3, all asking for fewer rows ahead ([`groups_ahead`]) and with the non-temporal hint
//! (`rows8::prefetch_share`); steps of more tokens stay on [`super::rows8`].
//!
//! On such a CPU a 512-bit instruction costs what two 256-bit ones do, so a driver wins by
//! spending fewer 256-bit slots per weight, not fewer instructions. This one is the AVX2 tier's
//! one-token pair path ([`super::lanes8`]: per row, weights 0..16 of two chunks in one vector and
//! 16..32 in another, each 128-bit half one chunk) with its `vpmaddubsw` reduction replaced by
//! two 256-bit `vpdpbusd` per row and one `vphaddd` tree per eight rows: 24 instructions per
//! eight rows and 64 weights where `vpmaddubsw` spent 34 and `rows8`'s 512-bit pairs about
//! twice their count in slots. `ROWS=120000 matmul_min 1` on a Zen 4 (2026-12-04 21:05 UTC, two
//! alternating rounds, G weights/s streamed from memory, `TIER=avx512` → `avx512-split`): Q4_0
//! 25.3–26.3 → 32.0–32.3, Q4_1 20.7–22.8 → 27.7–29.0, Q5_0 19.2–20.1 → 24.3, Q5_1 18.7–19.2 →
//! 24.3–24.7, VQ2 35.5 → 41.4, VQ3 29.3–29.5 → 31.2–31.4, VQ4 30.0–30.6 → 32.8–34.0 (the AVX2
//! tier: 29.0–29.6, 28.0–28.2, 18.1–18.6, 18.3, 37.0–37.2, 23.5–24.1, 29.5–30.4). Prefill is
//! twice as fast on `rows8`'s 512-bit path on the same CPU.
//!
//! Every chunk ends with the same exact integer sum as on the other drivers and goes through the
//! same float arithmetic ([`super::rows8::accumulate`], chunk by chunk on two chains), so an
//! output has the same bits whichever driver computed it: decoding token by token still gives a
//! prefill's bits (the SIMD suite is stamped on this table too, and its one-token check compares
//! the two drivers).

use super::lanes8::{decode_pair_halves_of_group, finish, unoffset, GROUP};
use super::rows8::{
    accumulate, prefetch_head, prefetch_share, rows_ahead_by, rows_of, scales_and_mins,
    write_lanes, Acc,
};
use super::{rows8, sum_lanes8_halves, BlockQ8Act, Q8Format, QK8};
use crate::kernels::SharedOut;
use crate::model::{Layout, WeightView};
use core::arch::x86_64::*;
use core::ops::Range;

/// The exact i32 sums of two consecutive chunks of eight rows (`w` as
/// [`decode_pair_halves_of_group`] gives them: per row, weights 0..16 of both chunks, then
/// 16..32 of both, as unsigned quants) with one token's quants `a0`, `a1`: per chunk, lane `i`
/// is row `i`'s. Two 256-bit `vpdpbusd` per row leave its first chunk's partial sums in the low
/// 128-bit half and its second's in the high one, and one `vphaddd` tree sums both chunks of
/// eight rows: 24 instructions per eight rows and 64 weights where the AVX2 tier's `vpmaddubsw`
/// path (`lanes8::sums_pair_halves`) spends 34.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums_pair_halves_vnni(
    w: &[[__m256i; GROUP]; 2],
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
) -> [__m256i; 2] {
    // SAFETY: each `qs` is 32 readable bytes: unaligned 16-byte reads at 0 and 16.
    let (low, high) = unsafe {
        let (q0, q1) = (a0.qs.as_ptr(), a1.qs.as_ptr());
        (
            _mm256_loadu2_m128i(q1.cast(), q0.cast()),
            _mm256_loadu2_m128i(q1.add(16).cast(), q0.add(16).cast()),
        )
    };
    let zero = _mm256_setzero_si256();
    let p: [__m256i; GROUP] = core::array::from_fn(|i| {
        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, w[0][i], low), w[1][i], high)
    });
    sum_lanes8_halves(&p)
}

/// One token's outputs of eight rows (lane `i`: `rows[i]`), two chunks at a time by
/// [`sums_pair_halves_vnni`]; a block left over (an odd count of 32-weight blocks) goes
/// through `rows8`'s one-chunk sums. The float arithmetic is `lanes8`'s and `rows8`'s.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn group_one_token<F: Q8Format>(rows: &[&[u8]; GROUP], next: &[u8], x: &[BlockQ8Act]) -> __m256 {
    let zero = _mm256_setzero_ps();
    let mut acc = Acc {
        sum: [zero; 2],
        min: [zero; 2],
    };
    let halves = F::ELEMS / QK8;
    let blocks = rows[0].len() / F::BYTES;
    // Blocks per two chunks: two of 32 weights, or one of 64.
    let step = 64 / F::ELEMS;
    let mut b = 0;
    while b + step <= blocks {
        prefetch_share::<true>(next, b * GROUP * F::BYTES, step * GROUP * F::BYTES);
        let (w, [(d0, m0), (d1, m1)]) = decode_pair_halves_of_group::<F, true>(rows, b);
        let (a0, a1) = (&x[b * halves], &x[b * halves + 1]);
        let [s0, s1] = sums_pair_halves_vnni(&w, a0, a1);
        // Exact: every product of the second chunk is a multiple of 2^HALVES_VNNI_SHIFT.
        let s1 = if F::HALVES_VNNI_SHIFT != 0 {
            _mm256_sra_epi32(s1, _mm_set_epi64x(0, F::HALVES_VNNI_SHIFT.into()))
        } else {
            s1
        };
        let (m0, m1) = ((!F::SIGNED).then_some(m0), (!F::SIGNED).then_some(m1));
        accumulate(&mut acc, 0, unoffset::<F>(s0, a0), d0, m0, a0);
        accumulate(&mut acc, 1, unoffset::<F>(s1, a1), d1, m1, a1);
        b += step;
    }
    if b < blocks {
        // One 32-weight block: chunk `b`, even, so chain 0.
        prefetch_share::<true>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
        let (w, d, m) = rows8::decode_block_of_group::<F>(rows, b, next, 0);
        let a = &x[b];
        let s = rows8::sums_one_token(&w[0], a, F::SIGNED);
        accumulate(&mut acc, 0, s, d, (!F::SIGNED).then_some(m), a);
    }
    finish(&acc)
}

/// Block `b` (64 weights) of the eight rows as [`Q8Format::decode_biased_halves_512`] gives
/// them, split into the 256-bit halves [`sums_pair_halves_vnni`] reads, and the block's scales,
/// asking for its share of `next` meanwhile. (The twin of `rows8`'s wide-block decode; sharing
/// that one through a const parameter gave the same bits but cost VQ4's one-token path here 8 %
/// in cache, 42.1 → 38.6 G weights/s, through code placement alone: kept apart.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn decode_halves_512_of_group<F: Q8Format>(
    rows: &[&[u8]; GROUP],
    b: usize,
    next: &[u8],
) -> ([[__m256i; GROUP]; 2], __m256) {
    prefetch_share::<true>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
    let mut w = [[_mm256_setzero_si256(); GROUP]; 2];
    let mut heads = [_mm_setzero_si128(); GROUP];
    for i in 0..GROUP {
        let block = &rows[i][b * F::BYTES..(b + 1) * F::BYTES];
        // SAFETY: this tier's table installs `F` only where the CPU has the features its
        // decoder needs, all enabled here (target_feature).
        let v = unsafe { F::decode_biased_halves_512(block) };
        w[0][i] = _mm512_castsi512_si256(v);
        w[1][i] = _mm512_extracti64x4_epi64::<1>(v);
        heads[i] = super::load16(block, 0);
    }
    (w, scales_and_mins(&heads).0)
}

/// One token's outputs of eight rows of a signed 64-weight format with a free
/// [`Q8Format::decode_biased_halves_512`] (the VBMI trellis decoders): the 512-bit lookup
/// stays, the sums are [`sums_pair_halves_vnni`]'s 256-bit pairs and `vphaddd` tree instead of
/// `rows8`'s 512-bit `vpdpbusd` and shuffle tree, with the `+128` bias taken back as there.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn group_one_token_halves_512<F: Q8Format>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
) -> __m256 {
    let zero = _mm256_setzero_ps();
    let mut acc = Acc {
        sum: [zero; 2],
        min: [zero; 2],
    };
    let blocks = rows[0].len() / F::BYTES;
    for b in 0..blocks {
        let (w, d) = decode_halves_512_of_group::<F>(rows, b, next);
        let (a0, a1) = (&x[2 * b], &x[2 * b + 1]);
        let [s0, s1] = sums_pair_halves_vnni(&w, a0, a1);
        let s0 = _mm256_sub_epi32(s0, _mm256_set1_epi32(128 * a0.sum));
        let s1 = _mm256_sub_epi32(s1, _mm256_set1_epi32(128 * a1.sum));
        accumulate(&mut acc, 0, s0, d, None, a0);
        accumulate(&mut acc, 1, s1, d, None, a1);
    }
    finish(&acc)
}

/// Bytes of weights asked for ahead of the row group being decoded, one token at a time.
const BYTES_AHEAD: usize = 8 << 10;

/// How many eight-row groups of `row_bytes` rows ahead one token's decode asks for: as many as
/// fit in [`BYTES_AHEAD`], one to [`rows8::PREFETCH_AHEAD`]. Zen 4's L1 data cache is 32 KiB
/// (Zen 5's 48): four groups of Q8_0 rows (20 KiB at 576 columns) asked for at once streamed
/// Q8_0 at 14.0–15.5 G weights/s, one group at 22.3–24.6, two at 19.7–21.5; Q4_0 (2.6 KiB per
/// group) read the same with two to four and lost with one (`TIER=avx512-split ROWS=120000
/// matmul_min 1`, two rounds, 2026-12-04 21:50 UTC).
fn groups_ahead(row_bytes: usize) -> usize {
    (BYTES_AHEAD / (GROUP * row_bytes).max(1)).clamp(1, rows8::PREFETCH_AHEAD)
}

/// The 8-bit matmul for format `F` over rows `rows`: one token eight rows at a time by
/// [`group_one_token`] where `F` decodes two chunks as halves ([`Q8Format::PAIR_HALVES`]), by
/// [`group_one_token_halves_512`] where its 512-bit decode comes in that order
/// ([`Q8Format::HALVES_512`]), else by `rows8`'s kernel, all [`groups_ahead`] groups ahead;
/// more tokens, and trellis weights interleaved per sixteen rows, by [`rows8::matmul`].
///
/// # Safety
/// As [`rows8::matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    if tokens != 1 || (F::ROWS16.is_some() && w.layout == Layout::Rows16) {
        // SAFETY: this function's contract.
        return unsafe { rows8::matmul::<F>(w, x, tokens, rows, out) };
    }
    let ahead = groups_ahead(w.row_bytes);
    let halves_512 = F::HALVES_512 && F::SIGNED && F::ELEMS == 64;
    if !F::PAIR_HALVES && !halves_512 {
        // SAFETY: this function's contract.
        return unsafe { super::one_token::matmul::<F>(w, x, rows, out, ahead) };
    }
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
        let v = if halves_512 {
            group_one_token_halves_512::<F>(&group, next, x)
        } else {
            group_one_token::<F>(&group, next, x)
        };
        // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
        unsafe { write_lanes(out, v, 0, w.rows, first, count) };
    }
}
