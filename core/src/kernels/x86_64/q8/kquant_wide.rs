//! The AVX-512 tier's 8-bit matmul for ggml's super-block formats Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
//! and IQ4_XS: sixteen rows per 512-bit vector on the segmented driver of the 32- and 64-weight
//! formats ([`super::segmented`]), for every token count.
//!
//! A super-block is eight chunks of 32 weights, each aligned with one activation block. Each row's
//! super-block is decoded by its AVX2 decoder in `vpdpbusd`'s biased form
//! ([`KQuant::decode_biased`]), and each chunk of the sixteen rows transposed into the segment as
//! any 32-weight block is; so one token costs eight broadcasts and eight `vpdpbusd` per chunk for sixteen rows, where
//! the AVX2 kernel multiplies one row at a time. The scales ([`ChunkScales`]) become lanes:
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
use super::kquant::{ChunkScaled, ChunkScales, Mins, GROUPS};
use super::rows8::{
    accumulate, accumulate_mins16, chunk_sums, join_acts, prefetch, prefetch_head, quarter_sums,
    rows_ahead, rows_of, sums_one_token_pair, transpose_quads, write_lanes, Acc, GROUP,
};
use super::segmented::{group_tile, join_ps, Scratch, Segment, Segmented, WIDE};
use super::{BlockQ8Act, QK8};
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
        for b in first_block..first_block + blocks {
            for line in b * lines_per_block..(b + 1) * lines_per_block {
                prefetch(next, line * 64);
            }
            fill_superblock::<F>(group, b, (b - first_block) * GROUPS, seg);
        }
    }
}

/// Super-block `b` of the sixteen rows into chunks `c0 .. c0 + 8` of the segment.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn fill_superblock<F: ChunkScaled>(group: &[&[u8]; WIDE], b: usize, c0: usize, seg: &mut Segment) {
    let mut lanes = [RowLanes::zero(); 2];
    for (half, lanes) in lanes.iter_mut().enumerate() {
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
            let quads = &mut seg.quads[c0 + g];
            for (q, t) in quads.iter_mut().zip(t) {
                *q = if half == 0 {
                    _mm512_castsi256_si512(t)
                } else {
                    _mm512_inserti64x4::<1>(*q, t)
                };
            }
        }
        *lanes = row_lanes::<F>(&scales_of_rows::<F>(&blocks), true);
    }
    // Each vector of a half holds two items' eight lanes: items 2p over the sixteen rows are the
    // halves' low 256 bits side by side, items 2p + 1 their high 256 bits.
    let [l0, l1] = &lanes;
    for p in 0..GROUPS / 2 {
        let (g0, g1) = (c0 + 2 * p, c0 + 2 * p + 1);
        [seg.d[g0], seg.d[g1]] = regroup_ps(l0.d[p], l1.d[p]);
        [seg.m[g0], seg.m[g1]] = regroup_ps(l0.m[p], l1.m[p]);
    }
    if F::SUB16 {
        // Sub-blocks 2g and 2g + 1 are chunk g's halves.
        for g in 0..GROUPS {
            seg.sub[c0 + g] = regroup(l0.sub[g], l1.sub[g]);
            if <Super<F> as Segmented>::MINS16 {
                seg.min16[c0 + g] = regroup(l0.min16[g], l1.min16[g]);
            }
        }
    }
}

/// Two [`RowLanes`] vectors of rows 0–7 (`a`) and 8–15 (`b`), each holding items `2p` and
/// `2p + 1`, as item `2p` then item `2p + 1` over the sixteen rows.
#[target_feature(enable = "avx512f")]
#[inline]
fn regroup(a: __m512i, b: __m512i) -> [__m512i; 2] {
    [
        _mm512_shuffle_i64x2::<0b01_00_01_00>(a, b),
        _mm512_shuffle_i64x2::<0b11_10_11_10>(a, b),
    ]
}

/// [`regroup`] for f32 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
fn regroup_ps(a: __m512, b: __m512) -> [__m512; 2] {
    let [lo, hi] = regroup(_mm512_castps_si512(a), _mm512_castps_si512(b));
    [_mm512_castsi512_ps(lo), _mm512_castsi512_ps(hi)]
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

/// Eight rows' [`ChunkScales`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scales_of_rows<F: ChunkScaled>(blocks: &[&[u8]; GROUP]) -> [ChunkScales; GROUP] {
    let mut scales = [ChunkScales::ZERO; GROUP];
    for (s, block) in scales.iter_mut().zip(blocks) {
        // SAFETY: AVX2, FMA and F16C are enabled here (target_feature).
        *s = unsafe { F::chunk_scales(block) };
    }
    scales
}

/// Eight rows' scales as f32 or i32 lanes, two items per vector: lanes 0–7 of vector `p` are
/// item `2p` of rows 0–7, lanes 8–15 item `2p + 1`.
#[derive(Clone, Copy)]
struct RowLanes {
    /// Chunk scales (`d · scale`, or `d` where [`ChunkScaled::SUB16`]).
    d: [__m512; GROUPS / 2],
    /// Chunk mins `−dmin · min`, or `−dmin` for mins per 16 weights.
    m: [__m512; GROUPS / 2],
    /// Sub-block scales ([`ChunkScaled::SUB16`] only).
    sub: [__m512i; GROUPS],
    /// Sub-block mins ([`Mins::PerLane`] only).
    min16: [__m512i; GROUPS],
}

impl RowLanes {
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn zero() -> RowLanes {
        RowLanes {
            d: [_mm512_setzero_ps(); GROUPS / 2],
            m: [_mm512_setzero_ps(); GROUPS / 2],
            sub: [_mm512_setzero_si512(); GROUPS],
            min16: [_mm512_setzero_si512(); GROUPS],
        }
    }
}

/// Byte `8g + i` of the result is byte `8i + g` of the source: an 8 × 8 byte transpose.
const TRANSPOSE_8X8: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut k = 0;
    while k < 64 {
        t[k] = ((k % 8) * 8 + k / 8) as u8;
        k += 1;
    }
    t
};

/// Eight rows' eight bytes (`bytes[i]`, byte `g` = row `i`'s item `g`) as sign-extended i32
/// lanes, two items per vector ([`RowLanes`]' layout): one byte permute transposes them.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn item_lanes(bytes: [u64; GROUP]) -> [__m512i; 4] {
    let v = _mm512_set_epi64(
        bytes[7] as i64,
        bytes[6] as i64,
        bytes[5] as i64,
        bytes[4] as i64,
        bytes[3] as i64,
        bytes[2] as i64,
        bytes[1] as i64,
        bytes[0] as i64,
    );
    // SAFETY: the table is 64 readable bytes; loadu needs no alignment.
    let idx = unsafe { _mm512_loadu_si512(TRANSPOSE_8X8.as_ptr().cast()) };
    let t = _mm512_permutexvar_epi8(idx, v);
    [
        _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32::<0>(t)),
        _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32::<1>(t)),
        _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32::<2>(t)),
        _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32::<3>(t)),
    ]
}

/// Eight rows' [`ChunkScales`] as [`RowLanes`] (the sub-block scales only `with_sub`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn row_lanes<F: ChunkScaled>(scales: &[ChunkScales; GROUP], with_sub: bool) -> RowLanes {
    let mut d = [0f32; GROUP];
    let mut neg_dmin = [0f32; GROUP];
    let mut sc = [[0u64; GROUP]; 2];
    let mut mins = [[0u64; GROUP]; 2];
    for (i, s) in scales.iter().enumerate() {
        d[i] = s.d;
        neg_dmin[i] = s.neg_dmin;
        [sc[0][i], sc[1][i]] = halves_u64(&s.scales);
        [mins[0][i], mins[1][i]] = halves_u64(&s.mins);
    }
    // SAFETY: each array is 8 readable f32; loadu needs no alignment.
    let (d, neg_dmin) = unsafe {
        (
            _mm256_loadu_ps(d.as_ptr()),
            _mm256_loadu_ps(neg_dmin.as_ptr()),
        )
    };
    let (d, neg_dmin) = (join_ps(d, d), join_ps(neg_dmin, neg_dmin));
    let mut lanes = RowLanes::zero();
    if F::SUB16 {
        lanes.d = [d; GROUPS / 2];
        if with_sub {
            lanes.sub = sixteen_items(&sc);
        }
    } else {
        for (l, v) in lanes.d.iter_mut().zip(item_lanes(sc[0])) {
            *l = _mm512_mul_ps(_mm512_cvtepi32_ps(v), d);
        }
    }
    match F::MINS {
        Mins::None => {}
        Mins::PerGroup => {
            for (l, v) in lanes.m.iter_mut().zip(item_lanes(mins[0])) {
                *l = _mm512_mul_ps(_mm512_cvtepi32_ps(v), neg_dmin);
            }
        }
        Mins::PerLane => {
            lanes.m = [neg_dmin; GROUPS / 2];
            if with_sub {
                lanes.min16 = sixteen_items(&mins);
            }
        }
    }
    lanes
}

/// Sixteen bytes as two little-endian u64.
#[inline(always)]
fn halves_u64(b: &[i8; 16]) -> [u64; 2] {
    let u = |k: usize| b[k] as u8;
    [
        u64::from_le_bytes([u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7)]),
        u64::from_le_bytes([u(8), u(9), u(10), u(11), u(12), u(13), u(14), u(15)]),
    ]
}

/// Eight rows' sixteen per-sub-block bytes (`bytes[h][i]`: row `i`'s bytes `8h .. 8h + 8`) as
/// [`RowLanes`] vectors, vector `g` holding sub-blocks `2g` and `2g + 1`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn sixteen_items(bytes: &[[u64; GROUP]; 2]) -> [__m512i; GROUPS] {
    let (first, second) = (item_lanes(bytes[0]), item_lanes(bytes[1]));
    [
        first[0], first[1], first[2], first[3], second[0], second[1], second[2], second[3],
    ]
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
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks.max(1));
    for b in 0..blocks {
        for line in b * lines_per_block..(b + 1) * lines_per_block {
            prefetch(next, line * 64);
        }
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
        let scales = scales_of_rows::<F>(&blocks);
        // The sub-block scales and mins go in `quarter_sums`' layout instead of as row lanes.
        let lanes = row_lanes::<F>(&scales, false);
        // Per chunk pair: the scales, then the mins.
        let mut quarters = [[[_mm512_setzero_si512(); 2]; 2]; GROUPS / 2];
        if F::SUB16 {
            let mut bytes = [[[0i8; 16]; GROUP]; 2];
            for (i, s) in scales.iter().enumerate() {
                bytes[0][i] = s.scales;
                bytes[1][i] = s.mins;
            }
            for (q, sc) in quarters.iter_mut().zip(quarter_layout(&bytes[0])) {
                q[0] = sc;
            }
            if mins16 {
                for (q, m) in quarters.iter_mut().zip(quarter_layout(&bytes[1])) {
                    q[1] = m;
                }
            }
        }
        for (p, [sub, min16]) in quarters.iter().enumerate() {
            let (g0, g1) = (2 * p, 2 * p + 1);
            let wide = &wide[p];
            let (a0, a1) = (&x[b * GROUPS + g0], &x[b * GROUPS + g1]);
            let [d0, d1] = halves(lanes.d[p]);
            let [m0, m1] = halves(lanes.m[p]);
            if !F::SUB16 {
                let [s0, s1] = sums_one_token_pair(wide, a0, a1, F::SIGNED);
                accumulate(&mut acc, 0, s0, d0, mins.then_some(m0), a0);
                accumulate(&mut acc, 1, s1, d1, mins.then_some(m1), a1);
                continue;
            }
            let a = join_acts(a0, a1);
            let [s0, s1] = sums_pair_sub16(wide, a, sub, F::SIGNED);
            if mins16 {
                let [n0, n1] = mins_pair16(a, min16);
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

/// The low and high eight lanes of `v`.
#[target_feature(enable = "avx512f")]
#[inline]
fn halves(v: __m512) -> [__m256; 2] {
    let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v));
    [_mm512_castps512_ps256(v), _mm256_castpd_ps(high)]
}

/// Byte `4L + r` (`L`, `r` < 4) of table `p` picks byte `16r + 4p + L` of four rows' sixteen
/// sub-block scales (row `r` in 128-bit lane `r`): sub-block `4p + L`, quarter `L` of chunk pair
/// `p`, in [`quarter_sums`]' layout.
const QUARTER_PICK: [[u8; 64]; GROUPS / 2] = {
    let mut t = [[0u8; 64]; GROUPS / 2];
    let mut p = 0;
    while p < GROUPS / 2 {
        let mut k = 0;
        while k < 16 {
            let (quarter, r) = (k / 4, k % 4);
            t[p][k] = (16 * r + 4 * p + quarter) as u8;
            k += 1;
        }
        p += 1;
    }
    t
};

/// Eight rows' sixteen per-sub-block bytes (scales or mins) in [`quarter_sums`]' layout as i32,
/// per chunk pair: rows 0–3, then rows 4–7.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn quarter_layout(bytes: &[[i8; 16]; GROUP]) -> [[__m512i; 2]; GROUPS / 2] {
    let mut four = [_mm512_setzero_si512(); 2];
    for (v, rows) in four.iter_mut().zip(bytes.chunks_exact(4)) {
        // SAFETY: each row's array is 16 readable bytes; loadu needs no alignment.
        unsafe {
            *v = _mm512_castsi128_si512(_mm_loadu_si128(rows[0].as_ptr().cast()));
            *v = _mm512_inserti32x4::<1>(*v, _mm_loadu_si128(rows[1].as_ptr().cast()));
            *v = _mm512_inserti32x4::<2>(*v, _mm_loadu_si128(rows[2].as_ptr().cast()));
            *v = _mm512_inserti32x4::<3>(*v, _mm_loadu_si128(rows[3].as_ptr().cast()));
        }
    }
    let mut out = [[_mm512_setzero_si512(); 2]; GROUPS / 2];
    for (pair, pick) in out.iter_mut().zip(&QUARTER_PICK) {
        // SAFETY: each table is 64 readable bytes; loadu needs no alignment.
        let idx = unsafe { _mm512_loadu_si512(pick.as_ptr().cast()) };
        for (o, v) in pair.iter_mut().zip(four) {
            let picked = _mm512_permutexvar_epi8(idx, v);
            *o = _mm512_cvtepi8_epi32(_mm512_castsi512_si128(picked));
        }
    }
    out
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
