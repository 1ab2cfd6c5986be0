//! The AVX-512 tier's prefill path: sixteen rows per 512-bit lane group, their weights decoded
//! and transposed once per tile of tokens into an L1-resident segment that every token of the
//! tile reads.
//!
//! Lane `i` of every vector is row `i`'s: per 32-weight chunk, vector `k` of the segment holds
//! each row's weights `4k .. 4k + 4` (biased to unsigned for signed formats), so one token costs
//! eight broadcasts of its activation quads and eight `vpdpbusd` for sixteen rows' exact integer
//! sums. After the integer sums the arithmetic per lane is exactly that of [`super::rows8`]'s
//! eight-row paths (the same multiply, multiply-adds and chains, in the same order), so an output
//! has the same bits whichever path, group width or token tile computed it.

use super::rows8::{act_quad, decode_block_of_group, transpose_quads, GROUP};
use super::{join_i, BlockQ8Act, Q8Format, QK8};
use crate::kernels::SharedOut;
use core::arch::x86_64::*;
use core::marker::PhantomData;
use core::ops::Range;

/// Rows per group: one per f32 lane of a 512-bit vector.
pub(super) const WIDE: usize = 2 * GROUP;
/// Tokens per register block (their accumulators stay in registers across a segment).
const TOKENS: usize = 4;
/// 32-weight chunks of a row group decoded and transposed at once for a whole token tile:
/// 16 KiB of transposed quads plus 4 KiB of scales and mins (and 4 KiB each of sub-block scales
/// and mins), so the segment stays in L1 while every token of the tile reads it.
const SEGMENT_CHUNKS: usize = 32;

/// Per-token accumulators of one row group: two chains (even and odd chunks) of scaled sums and
/// of min terms, as in [`super::rows8`].
#[derive(Clone, Copy)]
pub(super) struct Acc {
    sum: [__m512; 2],
    min: [__m512; 2],
}

/// Working memory of the prefill path, on the caller's stack: one decoded segment and one
/// accumulator set per token of a tile. Both are overwritten before they are read, so they are
/// zeroed once per matmul call, not per row group.
pub(super) struct Scratch<const TILE: usize> {
    seg: Segment,
    acc: [Acc; TILE],
}

/// Up to [`SEGMENT_CHUNKS`] chunks of one row group, decoded, biased and transposed, with each
/// chunk's sixteen scales and mins, and for formats with 16-weight sub-blocks the sixteen rows'
/// integer scales (and mins) of the chunk's two halves.
pub(super) struct Segment {
    pub(super) quads: [[__m512i; GROUP]; SEGMENT_CHUNKS],
    pub(super) d: [__m512; SEGMENT_CHUNKS],
    pub(super) m: [__m512; SEGMENT_CHUNKS],
    pub(super) sub: [[__m512i; 2]; SEGMENT_CHUNKS],
    pub(super) min16: [[__m512i; 2]; SEGMENT_CHUNKS],
}

/// A weight format as this driver reads it: blocks of one or more 32-weight chunks, decoded into
/// a [`Segment`] sixteen rows at a time.
pub(super) trait Segmented {
    /// Weights per block (a whole number of chunks).
    const ELEMS: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// The segment holds signed weights biased by +128 (taken back as `128 · Σa`).
    const SIGNED: bool;
    /// Chunks have a min term (`m · d_a · Σa`).
    const MINS: bool;
    /// Each chunk's halves have their own integer scales (`Segment::sub`): 16-weight sub-blocks.
    const SUB16: bool;
    /// Each chunk's halves have integer mins (`Segment::min16`, unsigned weights): the min term
    /// is `Segment::m` (`−dmin`) · `d_a` · Σ over the halves of min · (the half's Σa).
    const MINS16: bool;

    /// Decodes blocks `first_block .. first_block + blocks` of the sixteen rows into `seg`
    /// (chunk `c` of the segment = chunk `c` counted from `first_block`'s first), asking for the
    /// block's share of `next` meanwhile.
    ///
    /// # Safety
    /// The CPU has the AVX-512 tier's features.
    unsafe fn fill(
        group: &[&[u8]; WIDE],
        next: &[u8],
        first_block: usize,
        blocks: usize,
        seg: &mut Segment,
    );
}

/// A [`Q8Format`] (blocks of 32 or 64 weights with an f16 scale and min up front) as read by
/// this driver.
pub(super) struct Blocks<F>(PhantomData<F>);

impl<F: Q8Format> Segmented for Blocks<F> {
    const ELEMS: usize = F::ELEMS;
    const BYTES: usize = F::BYTES;
    const SIGNED: bool = F::SIGNED;
    const MINS: bool = !F::SIGNED;
    const SUB16: bool = false;
    const MINS16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn fill(
        group: &[&[u8]; WIDE],
        next: &[u8],
        first_block: usize,
        blocks: usize,
        seg: &mut Segment,
    ) {
        fill_segment::<F>(group, next, first_block, blocks, seg)
    }
}

impl<const TILE: usize> Scratch<TILE> {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new() -> Self {
        let zero = _mm512_setzero_ps();
        Scratch {
            seg: Segment {
                quads: [[_mm512_setzero_si512(); GROUP]; SEGMENT_CHUNKS],
                d: [zero; SEGMENT_CHUNKS],
                m: [zero; SEGMENT_CHUNKS],
                sub: [[_mm512_setzero_si512(); 2]; SEGMENT_CHUNKS],
                min16: [[_mm512_setzero_si512(); 2]; SEGMENT_CHUNKS],
            },
            acc: [Acc {
                sum: [zero; 2],
                min: [zero; 2],
            }; TILE],
        }
    }
}

/// [`join_i`] for f32 lanes.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castsi512_ps(join_i(_mm256_castps_si256(lo), _mm256_castps_si256(hi)))
}

/// Decodes blocks `first_block .. first_block + blocks` of the sixteen rows into the segment:
/// each eight-row half decoded and transposed as in [`super::rows8`], then joined lane-wise.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
fn fill_segment<F: Q8Format>(
    group: &[&[u8]; WIDE],
    next: &[u8],
    first_block: usize,
    blocks: usize,
    seg: &mut Segment,
) {
    let halves = F::ELEMS / QK8;
    let blocks_total = group[0].len() / F::BYTES;
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks_total.max(1));
    let lo: &[&[u8]; GROUP] = group[..GROUP].try_into().unwrap_or(&[&[]; GROUP]);
    let hi: &[&[u8]; GROUP] = group[GROUP..].try_into().unwrap_or(&[&[]; GROUP]);
    for b in first_block..first_block + blocks {
        let (wl, dl, ml) = decode_block_of_group::<F>(lo, b, next, lines_per_block);
        let (wh, dh, mh) = decode_block_of_group::<F>(hi, b, &[], 0);
        let (d, m) = (join_ps(dl, dh), join_ps(ml, mh));
        for h in 0..halves {
            let c = (b - first_block) * halves + h;
            let tl = transpose_quads(&wl[h]);
            let th = transpose_quads(&wh[h]);
            seg.quads[c] = core::array::from_fn(|k| join_i(tl[k], th[k]));
            seg.d[c] = d;
            seg.m[c] = m;
        }
    }
}

/// Sixteen rows' exact i32 sums of one chunk with one token (lane `i` = row `i`), from the
/// transposed weights `v`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums(v: &[__m512i; GROUP], a: &BlockQ8Act, signed: bool) -> __m512i {
    let quad = |k: usize| _mm512_set1_epi32(act_quad(a, k));
    let mut even = _mm512_setzero_si512();
    let mut odd = _mm512_setzero_si512();
    for k in (0..GROUP).step_by(2) {
        even = _mm512_dpbusd_epi32(even, v[k], quad(k));
        odd = _mm512_dpbusd_epi32(odd, v[k + 1], quad(k + 1));
    }
    let s = _mm512_add_epi32(even, odd);
    if signed {
        // The weights were biased by +128: take back 128 · Σa exactly.
        _mm512_sub_epi32(s, _mm512_set1_epi32(128 * a.sum))
    } else {
        s
    }
}

/// A chunk's two 16-weight halves summed apart (quads 0–3 and 4–7, lanes: rows), each chain
/// starting from its `init`, then multiplied by the halves' integer scales `sub` and added:
/// `sub_lo · lo + sub_hi · hi`, exact in i32 (each half below 2^19 in magnitude, each scale at
/// most 2^7).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn scaled_halves(
    v: &[__m512i; GROUP],
    a: &BlockQ8Act,
    [mut lo, mut hi]: [__m512i; 2],
    sub: &[__m512i; 2],
) -> __m512i {
    let quad = |k: usize| _mm512_set1_epi32(act_quad(a, k));
    for k in 0..GROUP / 2 {
        lo = _mm512_dpbusd_epi32(lo, v[k], quad(k));
        hi = _mm512_dpbusd_epi32(hi, v[k + GROUP / 2], quad(k + GROUP / 2));
    }
    _mm512_add_epi32(
        _mm512_mullo_epi32(lo, sub[0]),
        _mm512_mullo_epi32(hi, sub[1]),
    )
}

/// [`sums`] for a chunk of two 16-weight sub-blocks with integer scales `sub` (lanes: rows) of
/// signed, biased weights: `sub_lo · (Σ_lo w·a) + sub_hi · (Σ_hi w·a)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums_sub16(v: &[__m512i; GROUP], a: &BlockQ8Act, sub: &[__m512i; 2]) -> __m512i {
    // The bias of +128 comes back per half: each chain starts at −128 · (its Σa).
    let lo_sum = half_sum(a);
    let init = [
        _mm512_set1_epi32(-128 * lo_sum),
        _mm512_set1_epi32(-128 * (a.sum - lo_sum)),
    ];
    scaled_halves(v, a, init, sub)
}

/// [`sums`] for a chunk of two 16-weight sub-blocks with integer scales `sub` and mins `min16`
/// (lanes: rows) of unsigned weights (Q2_K): `sub_lo · (Σ_lo q·a) + sub_hi · (Σ_hi q·a)` and
/// `min_lo · Σ_lo a + min_hi · Σ_hi a`, both exact in i32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn sums_mins16(
    v: &[__m512i; GROUP],
    a: &BlockQ8Act,
    sub: &[__m512i; 2],
    min16: &[__m512i; 2],
) -> [__m512i; 2] {
    let zero = _mm512_setzero_si512();
    let sums = scaled_halves(v, a, [zero, zero], sub);
    let lo_sum = half_sum(a);
    let mins = _mm512_add_epi32(
        _mm512_mullo_epi32(min16[0], _mm512_set1_epi32(lo_sum)),
        _mm512_mullo_epi32(min16[1], _mm512_set1_epi32(a.sum - lo_sum)),
    );
    [sums, mins]
}

/// `Σ a.qs[0..16]` (the first sub-block's activations).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn half_sum(a: &BlockQ8Act) -> i32 {
    // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
    let v = unsafe { _mm_loadu_si128(a.qs.as_ptr().cast()) };
    // Biased to unsigned, the bytes' sums of absolute differences from 0 are their sums.
    let s = _mm_sad_epu8(
        _mm_xor_si128(v, _mm_set1_epi8(i8::MIN)),
        _mm_setzero_si128(),
    );
    _mm_cvtsi128_si32(s) + _mm_extract_epi16::<4>(s) - 16 * 128
}

/// Adds one chunk's sums `s` for one token to `acc`: per lane the same operations as
/// `rows8::accumulate`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn accumulate(
    acc: &mut Acc,
    chain: usize,
    s: __m512i,
    d: __m512,
    m: Option<__m512>,
    a: &BlockQ8Act,
) {
    let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
    acc.sum[chain] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc.sum[chain]);
    if let Some(m) = m {
        acc.min[chain] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.d * a.sum as f32), acc.min[chain]);
    }
}

/// [`accumulate`] for [`Segmented::MINS16`]: the min term from the chunk's integer min sum `mins`
/// and the lanes' `neg_dmin` (the same per lane in `kquant_wide`'s one-token path).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn accumulate_mins16(
    acc: &mut Acc,
    chain: usize,
    [sums, mins]: [__m512i; 2],
    d: __m512,
    neg_dmin: __m512,
    a: &BlockQ8Act,
) {
    let da = _mm512_set1_ps(a.d);
    acc.sum[chain] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(sums),
        _mm512_mul_ps(d, da),
        acc.sum[chain],
    );
    acc.min[chain] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(mins),
        _mm512_mul_ps(neg_dmin, da),
        acc.min[chain],
    );
}

/// Adds the segment's `len` chunks (counted from `first_chunk` for the chains) for tokens
/// `t0 .. t0 + N` to `acc[..N]`, keeping the accumulators in registers meanwhile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn segment_tokens<F: Segmented, const N: usize>(
    seg: &Segment,
    len: usize,
    first_chunk: usize,
    x: &[BlockQ8Act],
    acts_per_token: usize,
    t0: usize,
    acc: &mut [Acc],
) {
    debug_assert!(
        first_chunk.is_multiple_of(2),
        "segments start on even chunks"
    );
    // The first segment starts the sums (the scratch holds the previous group's otherwise).
    let zero = _mm512_setzero_ps();
    let mut a_reg: [Acc; N] = core::array::from_fn(|t| {
        if first_chunk == 0 {
            Acc {
                sum: [zero; 2],
                min: [zero; 2],
            }
        } else {
            acc[t]
        }
    });
    let mut add_chunk = |c: usize, chain: usize| {
        let m = F::MINS.then_some(seg.m[c]);
        for (t, acc) in a_reg.iter_mut().enumerate() {
            let a = &x[(t0 + t) * acts_per_token + first_chunk + c];
            if F::MINS16 {
                let s = sums_mins16(&seg.quads[c], a, &seg.sub[c], &seg.min16[c]);
                accumulate_mins16(acc, chain, s, seg.d[c], seg.m[c], a);
                continue;
            }
            let s = if F::SUB16 {
                sums_sub16(&seg.quads[c], a, &seg.sub[c])
            } else {
                sums(&seg.quads[c], a, F::SIGNED)
            };
            accumulate(acc, chain, s, seg.d[c], m, a);
        }
    };
    // `first_chunk` is even, so chunk `c` of the segment belongs to chain `c & 1`: walking the
    // chunks in pairs makes each chain a constant, which keeps the accumulators in registers
    // (indexed by a run-time chain they lived on the stack, copied in and out per call).
    let mut c = 0;
    while c + 2 <= len {
        add_chunk(c, 0);
        add_chunk(c + 1, 1);
        c += 2;
    }
    if c < len {
        add_chunk(c, 0);
    }
    acc[..N].copy_from_slice(&a_reg);
}

/// Outputs of sixteen rows (`group[i]`, written for `i < count` as rows `first + i`) for the
/// tokens `tokens` (at most `TILE`), decoding the weights once per segment.
///
/// # Safety
/// The CPU has this tier's features; rows `first .. first + count` of `out` belong to the
/// caller (no other thread touches them).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn group_tile<F: Segmented, const TILE: usize>(
    group: &[&[u8]; WIDE],
    next: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    tokens: Range<usize>,
    out: &SharedOut<'_>,
    n: usize,
    first: usize,
    count: usize,
    scratch: &mut Scratch<TILE>,
) {
    let halves = F::ELEMS / QK8;
    let blocks = group[0].len() / F::BYTES;
    let Scratch { seg, acc } = scratch;
    let acc = &mut acc[..tokens.len()];
    let blocks_per_segment = SEGMENT_CHUNKS / halves;
    let mut b0 = 0;
    while b0 < blocks {
        let seg_blocks = blocks_per_segment.min(blocks - b0);
        // SAFETY: the features are this function's contract.
        unsafe { F::fill(group, next, b0, seg_blocks, seg) };
        let (len, first_chunk) = (seg_blocks * halves, b0 * halves);
        let mut t = tokens.start;
        while t < tokens.end {
            let i = t - tokens.start;
            if t + TOKENS <= tokens.end {
                segment_tokens::<F, TOKENS>(
                    seg,
                    len,
                    first_chunk,
                    x,
                    acts_per_token,
                    t,
                    &mut acc[i..],
                );
                t += TOKENS;
            } else {
                segment_tokens::<F, 1>(seg, len, first_chunk, x, acts_per_token, t, &mut acc[i..]);
                t += 1;
            }
        }
        b0 += seg_blocks;
    }
    for (i, a) in acc.iter().enumerate() {
        let v = _mm512_add_ps(
            _mm512_add_ps(a.sum[0], a.sum[1]),
            _mm512_add_ps(a.min[0], a.min[1]),
        );
        let mut lanes = [0f32; WIDE];
        // SAFETY: `lanes` is 16 writable f32; storeu needs no alignment.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        for (r, &l) in lanes[..count].iter().enumerate() {
            // SAFETY: rows `first .. first + count` belong to the caller (this function's
            // contract).
            unsafe { out.write((tokens.start + i) * n + first + r, l) };
        }
    }
}
