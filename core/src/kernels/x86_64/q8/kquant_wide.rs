//! The AVX-512 tier's 8-bit matmul for ggml's super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
//! and IQ4_XS: sixteen rows per 512-bit vector on the segmented driver of the 32- and 64-weight
//! formats ([`super::segmented`]), for every token count.
//!
//! A super-block is eight chunks of 32 weights, each aligned with one activation block. Each row's
//! super-block is decoded by its AVX2 decoder in `vpdpbusd`'s biased form
//! ([`KQuant::decode_biased`]), and each chunk of the sixteen rows transposed into the segment as
//! any 32-weight block is; so one token costs eight broadcasts and eight `vpdpbusd` per chunk for
//! sixteen rows (`super::kquant_lanes8` does the same for eight rows on AVX2). The scales
//! ([`ScaleLanes`], eight rows at a time) become lanes:
//!
//! - Q4_K, Q5_K, IQ4_XS (a scale per 32 weights): chunk `g`'s float scale `d · sc_g` and min
//!   `−dmin · m_g`, exactly where a 32-weight block has its `d` and `m`;
//! - Q3_K, Q6_K (a scale per 16 weights): the two halves' integer sums are kept apart and
//!   multiplied by their integer scales before adding (exact in i32), then scaled by `d` as one
//!   chunk. The +128 bias of the signed weights comes back per half, from the half's activation
//!   sum;
//! - Q2_K (unsigned, a scale and a min per 16 weights): as Q3_K/Q6_K for the scales, and the
//!   mins' integer sum `Σ min · (half's Σa)` per chunk, scaled by `−dmin · d_a`.
//!
//! One token (decode) takes eight rows at a time instead, as `super::rows8` does for the 64-weight
//! blocks: each row's chunk pairs decoded as 512-bit vectors ([`KQuant::decode_biased_512`]), one
//! 512-bit `vpdpbusd` per row and chunk pair, a reduction tree to one lane per row,
//! and for 16-weight sub-blocks the integer scales multiplied in at the tree level where each
//! lane holds one row's sum over 16 weights. The integer sum of every chunk is the same either
//! way and the float arithmetic after it the same per lane, so outputs are bit-identical for any
//! step size and row split.

#[cfg(doc)]
use super::kquant::KQuant;
use super::kquant::{Mins, GROUPS};
use super::kquant_scales::{ChunkScaled, ScaleLanes};
use super::rows8::{
    accumulate, accumulate_mins16, chunk_sums, join_acts, prefetch, prefetch_head, prefetch_share,
    quarter_sums, rows_ahead, rows_of, sums_one_token_pair, transpose_quads, write_lanes, Acc,
    GROUP,
};
use super::segmented::{group_tile, Scratch, Segment, Segmented, WIDE};
use super::{join_i, BlockQ8Act, QK8};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::gguf::QK_K;
use core::arch::x86_64::*;
use core::marker::PhantomData;
use core::ops::Range;

/// Tokens whose activation blocks one pass over the rows reuses (kept in L2).
const TOKEN_TILE: usize = 32;

/// A super-block format `F` as the segmented driver reads it.
pub(crate) struct Super<F>(PhantomData<F>);

impl<F: ChunkScaled> Segmented for Super<F> {
    const ELEMS: usize = QK_K;
    const BYTES: usize = F::BYTES;
    const SIGNED: bool = F::SIGNED;
    const MINS: bool = matches!(F::MINS, Mins::PerGroup);
    const SUB16: bool = F::SUB16;
    const MINS16: bool = matches!(F::MINS, Mins::PerLane);
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn fill(
        group: &[&[u8]; WIDE],
        next: &[u8],
        first_block: usize,
        blocks: usize,
        seg: &mut Segment,
    ) {
        const {
            assert!(
                !F::SUB16
                    || (F::SIGNED && matches!(F::MINS, Mins::None))
                    || (!F::SIGNED && matches!(F::MINS, Mins::PerLane)),
                "sub-block scales: biased signed weights without mins, or unsigned with mins per 16"
            )
        };
        let blocks_total = group[0].len() / F::BYTES;
        let lines_per_block = next.len().div_ceil(64).div_ceil(blocks_total.max(1));
        let mut scales = ScaleLanes::zero();
        for b in first_block..first_block + blocks {
            for line in b * lines_per_block..(b + 1) * lines_per_block {
                prefetch(next, line * 64);
            }
            fill_superblock::<F>(group, b, (b - first_block) * GROUPS, seg, &mut scales);
        }
    }
}

/// Super-block `b` of the sixteen rows into chunks `c0 .. c0 + 8` of the segment (`sl`:
/// working memory for each eight rows' [`ScaleLanes`]). Rows 0–7 go into the low 256 bits of
/// every vector, rows 8–15 into the high ones.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn fill_superblock<F: ChunkScaled>(
    group: &[&[u8]; WIDE],
    b: usize,
    c0: usize,
    seg: &mut Segment,
    sl: &mut ScaleLanes,
) {
    for half in 0..2 {
        let rows: &[&[u8]; GROUP] = group[GROUP * half..GROUP * (half + 1)]
            .try_into()
            .unwrap_or(&[&[]; GROUP]);
        let blocks = blocks_of(rows, b, F::BYTES);
        let w = decode_rows::<F>(&blocks);
        for g in 0..GROUPS {
            let mut chunk = [_mm256_setzero_si256(); GROUP];
            for (c, wi) in chunk.iter_mut().zip(&w) {
                *c = wi[g];
            }
            let t = transpose_quads(&chunk);
            for (q, t) in seg.quads[c0 + g].iter_mut().zip(t) {
                *q = into_half(*q, t, half);
            }
        }
        // SAFETY: this tier's features include the AVX2 ones the scales need.
        unsafe { F::scale_lanes(&blocks, sl) };
        for g in 0..GROUPS {
            let c = c0 + g;
            let (d, m) = sl.chunk_d_m(g, F::SUB16);
            seg.d[c] = into_half_ps(seg.d[c], d, half);
            seg.m[c] = into_half_ps(seg.m[c], m, half);
            if F::SUB16 {
                let (sub, min16) = (
                    ScaleLanes::halves(&sl.scales, g),
                    ScaleLanes::halves(&sl.mins, g),
                );
                for k in 0..2 {
                    seg.sub[c][k] = into_half(seg.sub[c][k], sub[k], half);
                    if <Super<F> as Segmented>::MINS16 {
                        seg.min16[c][k] = into_half(seg.min16[c][k], min16[k], half);
                    }
                }
            }
        }
    }
}

/// `v` as the low 256 bits of a vector (`half` 0), or `into` with `v` as its high 256 bits.
#[target_feature(enable = "avx512f")]
#[inline]
fn into_half(into: __m512i, v: __m256i, half: usize) -> __m512i {
    if half == 0 {
        _mm512_castsi256_si512(v)
    } else {
        _mm512_inserti64x4::<1>(into, v)
    }
}

/// [`into_half`] for f32 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn into_half_ps(into: __m512, v: __m256, half: usize) -> __m512 {
    let v = _mm256_castps_si256(v);
    _mm512_castsi512_ps(into_half(_mm512_castps_si512(into), v, half))
}

/// Eight rows' super-blocks decoded: `w[i][g]` is row `i`'s chunk `g`, biased where signed.
/// (Loops, not `array::from_fn`: closures inside target-feature functions are not always
/// inlined.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn decode_rows<F: ChunkScaled>(blocks: &[&[u8]; GROUP]) -> [[__m256i; GROUPS]; GROUP] {
    let mut w = [[_mm256_setzero_si256(); GROUPS]; GROUP];
    for (wi, block) in w.iter_mut().zip(blocks) {
        // SAFETY: AVX2, FMA and F16C are enabled here (target_feature).
        *wi = unsafe { F::decode_biased(block) }.w;
    }
    w
}

/// The output of eight rows (lane `i`: `rows[i]`) for one token (`x`: its activation blocks),
/// asking for `next` (the rows after them) meanwhile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn group_one_token<F: ChunkScaled>(rows: &[&[u8]; GROUP], next: &[u8], x: &[BlockQ8Act]) -> __m256 {
    let zero = _mm256_setzero_ps();
    let mut acc = Acc {
        sum: [zero; 2],
        min: [zero; 2],
    };
    let (mins, mins16) = (
        <Super<F> as Segmented>::MINS,
        <Super<F> as Segmented>::MINS16,
    );
    let blocks = rows[0].len() / F::BYTES;
    let mut sl = ScaleLanes::zero();
    for b in 0..blocks {
        prefetch_share::<false>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
        let blocks = blocks_of(rows, b, F::BYTES);
        // wide[p][i]: row i's chunks 2p and 2p + 1, biased where signed.
        let mut wide = [[_mm512_setzero_si512(); GROUP]; GROUPS / 2];
        for (i, block) in blocks.iter().enumerate() {
            // SAFETY: this tier's features are enabled here (target_feature).
            let pairs = unsafe { F::decode_biased_512(block) };
            for (w, v) in wide.iter_mut().zip(pairs) {
                w[i] = v;
            }
        }
        // SAFETY: this tier's features include the AVX2 ones the scales need.
        unsafe { F::scale_lanes(&blocks, &mut sl) };
        for p in 0..GROUPS / 2 {
            let (g0, g1) = (2 * p, 2 * p + 1);
            let wide = &wide[p];
            let (a0, a1) = (&x[b * GROUPS + g0], &x[b * GROUPS + g1]);
            // The 16-weight sub-blocks' scales and mins go in `quarter_sums`' layout instead.
            let ((d0, m0), (d1, m1)) = (sl.chunk_d_m(g0, F::SUB16), sl.chunk_d_m(g1, F::SUB16));
            if !F::SUB16 {
                let [s0, s1] = sums_one_token_pair(wide, a0, a1, F::SIGNED);
                accumulate(&mut acc, 0, s0, d0, mins.then_some(m0), a0);
                accumulate(&mut acc, 1, s1, d1, mins.then_some(m1), a1);
                continue;
            }
            let a = join_acts(a0, a1);
            let sub = quarter_layout(&sl.scales, p);
            let [s0, s1] = sums_pair_sub16(wide, a, &sub, F::SIGNED);
            if mins16 {
                let [n0, n1] = mins_pair16(a, &quarter_layout(&sl.mins, p));
                accumulate_mins16(&mut acc, 0, [s0, n0], d0, m0, a0);
                accumulate_mins16(&mut acc, 1, [s1, n1], d1, m1, a1);
            } else {
                accumulate(&mut acc, 0, s0, d0, None, a0);
                accumulate(&mut acc, 1, s1, d1, None, a1);
            }
        }
    }
    _mm256_add_ps(
        _mm256_add_ps(acc.sum[0], acc.sum[1]),
        _mm256_add_ps(acc.min[0], acc.min[1]),
    )
}

/// Block `b` of each of the rows.
#[inline(always)]
pub(super) fn blocks_of<'a>(rows: &[&'a [u8]; GROUP], b: usize, bytes: usize) -> [&'a [u8]; GROUP] {
    let mut blocks: [&[u8]; GROUP] = [&[]; GROUP];
    for (block, row) in blocks.iter_mut().zip(rows) {
        *block = &row[b * bytes..(b + 1) * bytes];
    }
    blocks
}

/// Eight rows' per-sub-block integers (`items[s]` lane `i`: row `i`'s sub-block `s`, as
/// [`ScaleLanes`] holds them) for chunk pair `p` in [`quarter_sums`]' layout: lane `4L + r` of
/// the first vector is row `r`'s sub-block `4p + L`, of the second row `4 + r`'s.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn quarter_layout(items: &[__m256i; 16], p: usize) -> [__m512i; 2] {
    let q = &items[4 * p..4 * p + 4];
    // Rows 0–3 are each item's low 128 bits, rows 4–7 its high ones: the low and the high
    // halves of two items joined give the quarters two at a time.
    let low01 = _mm256_permute2x128_si256::<0x20>(q[0], q[1]);
    let high01 = _mm256_permute2x128_si256::<0x31>(q[0], q[1]);
    let low23 = _mm256_permute2x128_si256::<0x20>(q[2], q[3]);
    let high23 = _mm256_permute2x128_si256::<0x31>(q[2], q[3]);
    [join_i(low01, low23), join_i(high01, high23)]
}

/// `unit · (Σa over quarter L)` in every element of 128-bit lane `L` of the activations `a`
/// (`unit` read as an unsigned byte).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn quarter_act_sums(a: __m512i, unit: i8) -> __m512i {
    let x = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(unit), a);
    let x = _mm512_add_epi32(x, _mm512_shuffle_epi32::<0b10_11_00_01>(x));
    _mm512_add_epi32(x, _mm512_shuffle_epi32::<0b01_00_11_10>(x))
}

/// The integer min sums of a chunk pair (activations `a`) for eight rows with mins per 16
/// weights (`mins`, in [`quarter_sums`]' layout): per row and chunk, `Σ min · (quarter's Σa)`,
/// as `segmented`'s sums do per half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn mins_pair16(a: __m512i, mins: &[__m512i; 2]) -> [__m256i; 2] {
    let sums = quarter_act_sums(a, 1);
    let s = chunk_sums(
        _mm512_mullo_epi32(mins[0], sums),
        _mm512_mullo_epi32(mins[1], sums),
    );
    [_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)]
}

/// The integer sums of a chunk pair (activations `a`) for eight rows with 16-weight sub-blocks
/// (`w[i]`: row `i`'s 64 weights, biased where `signed`): each quarter's sum (less its bias
/// `128 · Σa`) is multiplied by its sub-block scale (`sub`, in [`quarter_sums`]' layout) before
/// the quarters are added, as `segmented`'s sums do per half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums_pair_sub16(
    w: &[__m512i; GROUP],
    a: __m512i,
    sub: &[__m512i; 2],
    signed: bool,
) -> [__m256i; 2] {
    let [mut s0123, mut s4567] = quarter_sums(w, a);
    if signed {
        let bias = quarter_act_sums(a, i8::MIN);
        s0123 = _mm512_sub_epi32(s0123, bias);
        s4567 = _mm512_sub_epi32(s4567, bias);
    }
    let s = chunk_sums(
        _mm512_mullo_epi32(s0123, sub[0]),
        _mm512_mullo_epi32(s4567, sub[1]),
    );
    [_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)]
}

/// The 8-bit matmul for super-block format `F` over rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA, F16C and AVX-512 F, BW, VL, VNNI and VBMI; no other thread
/// touches rows `rows` of `out`; `x` holds `tokens × w.cols / 32` blocks and `w.cols` is a
/// multiple of 256.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul<F: ChunkScaled>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    if rows.is_empty() {
        return;
    }
    let acts_per_token = w.cols / QK8;
    let last = rows.end - 1;
    prefetch_head(w, &rows, WIDE);
    if tokens == 1 {
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            let v = group_one_token::<F>(&group, rows_ahead(w, first, GROUP), x);
            // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
            unsafe { write_lanes(out, v, 0, w.rows, first, count) };
        }
        return;
    }
    let mut scratch = Scratch::<TOKEN_TILE>::new();
    for tile in (0..tokens).step_by(TOKEN_TILE) {
        let tile_end = (tile + TOKEN_TILE).min(tokens);
        for first in rows.clone().step_by(WIDE) {
            let count = (rows.end - first).min(WIDE);
            // Rows past the range repeat its last row; their lanes are computed, not written.
            let group: [&[u8]; WIDE] = rows_of(w, first, last);
            // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call; the
            // features are this function's contract.
            unsafe {
                group_tile::<Super<F>, TOKEN_TILE>(
                    &group,
                    rows_ahead(w, first, WIDE),
                    x,
                    acts_per_token,
                    tile..tile_end,
                    out,
                    w.rows,
                    first,
                    count,
                    &mut scratch,
                )
            };
        }
    }
}
