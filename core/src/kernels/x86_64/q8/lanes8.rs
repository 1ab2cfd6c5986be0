//! The AVX2 tier's 8-bit matmul for the formats of 32 or 64 weights per block: eight rows at a
//! time, one row per f32 lane, as the AVX-512 tier's [`super::rows8`] does, with AVX2's
//! `vpmaddubsw` + `vpmaddwd` where that tier has `vpdpbusd`.
//!
//! `vpmaddubsw` multiplies unsigned by signed bytes and saturates pairs at 16 bits, so signed
//! weights cannot be biased to unsigned as they are for `vpdpbusd` (`255 · 127 · 2` overflows):
//! their magnitudes are multiplied by the activations carrying the weights' signs
//! (`vpsignb`), and a pair sums to at most `2 · 128 · 127`. Per 32-weight chunk, each of the
//! eight rows' exact integer dot product with a token's quants lands in its own i32 lane, one of
//! three ways that give the same integers:
//!
//! - **one token** (decode): the products per row, then a `vphaddd` tree that leaves row `i`'s
//!   sum in lane `i`;
//! - **up to 7 tokens**: each block's eight rows transposed once (vector `k` lane `i` = row
//!   `i`'s weights `4k .. 4k + 4`), then per token eight broadcasts of its activation quads;
//! - **tiles of 8 to 32 tokens** (prefill): the same transposed weights, decoded once per tile
//!   into an L1-resident segment that every token of the tile reads.
//!
//! The float arithmetic after the integer sums is [`super::rows8`]'s `accumulate`, per lane and
//! in chunk order, so an output has the same bits whichever way, token blocking or row split
//! computed it. The one-row driver this replaces added eight partial sums per chunk in floats
//! and reduced each output horizontally; per 32 weights and token it spent four multiplier
//! instructions where this spends two.

pub(crate) use super::rows8::GROUP;
use super::rows8::{
    accumulate, act_quad, prefetch, prefetch_head, prefetch_share, rows_ahead, rows_of,
    scales_and_mins, transpose_quads, write_lanes, Acc,
};
use super::{BlockQ8Act, Q8Format, QK8};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::arch::x86_64::*;
use core::ops::Range;

/// Tokens per register block of the transposed ways.
const TOKENS: usize = 4;
/// Tokens whose activation blocks one pass over the rows reuses (kept in L2).
const TOKEN_TILE: usize = 32;
/// Fewest tokens in a tile for which decoding the tile's weights into a segment pays.
const SEGMENT_MIN_TOKENS: usize = 8;
/// Chunks of a row group decoded and transposed at once: 8 KiB of weights, 8 KiB of their
/// magnitudes (signed formats) and 2 KiB of scales and mins, so the segment stays in L1.
const SEGMENT_CHUNKS: usize = 32;

/// Whether the driver moves the weights' signs onto the activations: signed formats without an
/// [`Q8Format::OFFSET`] (those with one are multiplied as unsigned `q`).
const fn sign_moved<F: Q8Format>() -> bool {
    F::SIGNED && F::OFFSET == 0
}

/// Takes `F`'s offset back from a token's integer sums: `Σ(q − o)·a = Σq·a − o·Σa`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn unoffset<F: Q8Format>(s: __m256i, a: &BlockQ8Act) -> __m256i {
    if F::OFFSET == 0 {
        s
    } else {
        _mm256_sub_epi32(s, _mm256_set1_epi32(F::OFFSET * a.sum))
    }
}

/// One block of eight rows, decoded: per half, each row's 32 bytes; the rows' scales and mins.
type GroupBlock = ([[__m256i; GROUP]; 2], __m256, __m256);

/// Block `b` of the eight rows, decoded (signed weights as they are, or plus their format's
/// [`Q8Format::OFFSET`]), asking for the block's share of `next` (the rows
/// [`super::rows8::PREFETCH_AHEAD`] groups on) meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_group_block<F: Q8Format>(
    rows: &[&[u8]; GROUP],
    b: usize,
    next: &[u8],
    lines_per_block: usize,
) -> GroupBlock {
    for line in b * lines_per_block..(b + 1) * lines_per_block {
        prefetch(next, line * 64);
    }
    let mut w = [[_mm256_setzero_si256(); GROUP]; 2];
    let mut heads = [_mm_setzero_si128(); GROUP];
    for i in 0..GROUP {
        let block = &rows[i][b * F::BYTES..(b + 1) * F::BYTES];
        // SAFETY: this tier's table installs `F` only where the CPU has the features its
        // decoder needs (AVX2, FMA, F16C), all enabled here.
        let dec = unsafe {
            if F::OFFSET != 0 {
                F::decode_offset(block)
            } else {
                F::decode(block)
            }
        };
        w[0][i] = dec.w[0];
        w[1][i] = dec.w[1];
        heads[i] = super::load16(block, 0);
    }
    let (d, m) = scales_and_mins(&heads);
    (w, d, m)
}

/// Chunks `2c` and `2c + 1` of the eight rows (32-weight formats: blocks `b = 2c` and `b + 1`
/// by [`Q8Format::decode_pair_halves`]; 64-weight formats: block `b = c` by
/// [`Q8Format::decode_halves`]), per half each row's vector, and both chunks' scales and mins
/// (the callers ask for the rows ahead themselves, `rows8::prefetch_share`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn decode_pair_halves_of_group<F: Q8Format, const VNNI: bool>(
    rows: &[&[u8]; GROUP],
    b: usize,
) -> ([[__m256i; GROUP]; 2], [(__m256, __m256); 2]) {
    let blocks = 64 / F::ELEMS;
    let mut w = [[_mm256_setzero_si256(); GROUP]; 2];
    let mut heads = [[_mm_setzero_si128(); GROUP]; 2];
    for i in 0..GROUP {
        let both = &rows[i][b * F::BYTES..(b + blocks) * F::BYTES];
        // The decoders' safety: this tier's table installs `F` only where the CPU has the
        // features its decoder needs (AVX2, FMA, F16C), all enabled here; `F::PAIR_HALVES` (the
        // caller's condition) says it implements the decode for its block size.
        if F::ELEMS == 32 {
            let (b0, b1) = both.split_at(F::BYTES);
            // SAFETY: see above.
            [w[0][i], w[1][i]] = unsafe {
                if VNNI {
                    F::decode_pair_halves_vnni(b0, b1)
                } else {
                    F::decode_pair_halves(b0, b1)
                }
            };
            heads[0][i] = super::load16(b0, 0);
            heads[1][i] = super::load16(b1, 0);
        } else {
            // SAFETY: see above.
            [w[0][i], w[1][i]] = unsafe {
                if VNNI {
                    F::decode_halves_vnni(both)
                } else {
                    F::decode_halves(both)
                }
            };
            heads[0][i] = super::load16(both, 0);
        }
    }
    let first = scales_and_mins(&heads[0]);
    let second = if F::ELEMS == 32 {
        scales_and_mins(&heads[1])
    } else {
        first
    };
    (w, [first, second])
}

/// The exact i32 dot products of two consecutive chunks of eight rows (`w` as
/// [`decode_pair_halves_of_group`] gives them) with one token's quants `a0`, `a1`: per chunk, lane
/// `i` is row `i`'s. A row's two `vpmaddubsw` (weights 0..16 and 16..32 of both chunks) are added
/// in 16 bits, and two rounds of `vphaddw` add neighbouring words of four rows at a time, so each
/// word sums at most 16 products of a quant `≤ 15` and an activation `≤ 128` in magnitude
/// (`≤ 30720`, exact in i16); one `vpmaddwd` per four rows then leaves row sums in i32, each
/// 128-bit half being one chunk. Ten instructions where `vpmaddwd` per row and an i32 `vphaddd`
/// tree took sixteen. 5-bit quants (`≤ 31`) stop after one 16-bit round (eight products,
/// `≤ 31744`) and take the second in 32 bits: twelve.
/// `quant_bits`: 4, or 5 ([`Q8Format::PAIR_QUANT_BITS`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sums_pair_halves(
    w: &[[__m256i; GROUP]; 2],
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
    quant_bits: u32,
) -> [__m256i; 2] {
    // SAFETY: each `qs` is 32 readable bytes: unaligned 16-byte reads at 0 and 16.
    let (low, high) = unsafe {
        let (q0, q1) = (a0.qs.as_ptr(), a1.qs.as_ptr());
        (
            _mm256_set_m128i(_mm_loadu_si128(q1.cast()), _mm_loadu_si128(q0.cast())),
            _mm256_set_m128i(
                _mm_loadu_si128(q1.add(16).cast()),
                _mm_loadu_si128(q0.add(16).cast()),
            ),
        )
    };
    let mut p = [_mm256_setzero_si256(); GROUP];
    for (i, p) in p.iter_mut().enumerate() {
        *p = _mm256_add_epi16(
            _mm256_maddubs_epi16(w[0][i], low),
            _mm256_maddubs_epi16(w[1][i], high),
        );
    }
    // Per 128-bit half (chunk): after two rounds, words 2i, 2i + 1 of `r0123` are row i's.
    let r01 = _mm256_hadd_epi16(p[0], p[1]);
    let r23 = _mm256_hadd_epi16(p[2], p[3]);
    let r45 = _mm256_hadd_epi16(p[4], p[5]);
    let r67 = _mm256_hadd_epi16(p[6], p[7]);
    let ones = _mm256_set1_epi16(1);
    let (rows0123, rows4567) = if quant_bits == 4 {
        (
            _mm256_madd_epi16(_mm256_hadd_epi16(r01, r23), ones),
            _mm256_madd_epi16(_mm256_hadd_epi16(r45, r67), ones),
        )
    } else {
        // 5-bit quants: words of eight products are as far as 16 bits go; widen (dwords 0, 1 of
        // `madd(r01)` hold row 0's halves, 2, 3 row 1's), then the second round in 32 bits.
        let wide = |r: __m256i| _mm256_madd_epi16(r, ones);
        (
            _mm256_hadd_epi32(wide(r01), wide(r23)),
            _mm256_hadd_epi32(wide(r45), wide(r67)),
        )
    };
    [
        _mm256_permute2x128_si256::<0x20>(rows0123, rows4567),
        _mm256_permute2x128_si256::<0x31>(rows0123, rows4567),
    ]
}

/// Eight i32 sums of four neighbouring products `w · a` (`w_mag` = `|w|` for signed weights,
/// the quants themselves for unsigned ones).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn dot4(w_mag: __m256i, w: __m256i, a: __m256i, signed: bool) -> __m256i {
    let a = if signed { _mm256_sign_epi8(a, w) } else { a };
    _mm256_madd_epi16(_mm256_maddubs_epi16(w_mag, a), _mm256_set1_epi16(1))
}

/// `|w|` of every vector for signed formats (`vpabsb`: −128 becomes 128 read as unsigned),
/// the vectors themselves for unsigned ones.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn magnitudes(w: &[__m256i; GROUP], signed: bool) -> [__m256i; GROUP] {
    core::array::from_fn(|i| if signed { _mm256_abs_epi8(w[i]) } else { w[i] })
}

/// The exact i32 dot products of one chunk of eight rows (`w[i]`) with one token's quants:
/// lane `i` is row `i`'s.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_one_token(w: &[__m256i; GROUP], a: &BlockQ8Act, signed: bool) -> __m256i {
    // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
    let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
    let mag = magnitudes(w, signed);
    let p: [__m256i; GROUP] = core::array::from_fn(|i| dot4(mag[i], w[i], av, signed));
    super::sum_lanes8_i32(&p)
}

/// [`sums_one_token`] from transposed weights `v` and their magnitudes `mag`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_transposed(
    v: &[__m256i; GROUP],
    mag: &[__m256i; GROUP],
    a: &BlockQ8Act,
    signed: bool,
) -> __m256i {
    let quad = |k: usize| _mm256_set1_epi32(act_quad(a, k));
    let mut even = _mm256_setzero_si256();
    let mut odd = _mm256_setzero_si256();
    for k in (0..GROUP).step_by(2) {
        even = _mm256_add_epi32(even, dot4(mag[k], v[k], quad(k), signed));
        odd = _mm256_add_epi32(odd, dot4(mag[k + 1], v[k + 1], quad(k + 1), signed));
    }
    _mm256_add_epi32(even, odd)
}

/// The lanes of one token's accumulators as outputs.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn finish(a: &Acc) -> __m256 {
    _mm256_add_ps(
        _mm256_add_ps(a.sum[0], a.sum[1]),
        _mm256_add_ps(a.min[0], a.min[1]),
    )
}

/// Outputs of eight rows (lane `i`: `rows[i]`) for tokens `t0 .. t0 + N`, decoding each block
/// once per `N` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn group_tokens<F: Q8Format, const N: usize>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    t0: usize,
) -> [__m256; N] {
    let halves = F::ELEMS / QK8;
    let zero = _mm256_setzero_ps();
    let mut acc = [Acc {
        sum: [zero; 2],
        min: [zero; 2],
    }; N];
    let blocks = rows[0].len() / F::BYTES;
    // One token asks for its share of `next` at a fixed count of lines per block
    // (`prefetch_share`); more tokens spread the lines over the blocks.
    let lines_per_block = if N == 1 {
        0
    } else {
        next.len().div_ceil(64).div_ceil(blocks.max(1))
    };
    let mut first = 0;
    if N == 1 && F::PAIR_HALVES {
        // Two chunks at a time (chains 0 and 1): blocks b and b + 1 of 32 weights (b even),
        // or block b of 64.
        let step = 64 / F::ELEMS;
        while first + step <= blocks {
            let b = first;
            prefetch_share::<false>(next, b * GROUP * F::BYTES, step * GROUP * F::BYTES);
            let (w, [(d0, m0), (d1, m1)]) = decode_pair_halves_of_group::<F, false>(rows, b);
            let chunk = t0 * acts_per_token + b * halves;
            let (a0, a1) = (&x[chunk], &x[chunk + 1]);
            let [s0, s1] = sums_pair_halves(&w, a0, a1, F::PAIR_QUANT_BITS);
            let (m0, m1) = ((!F::SIGNED).then_some(m0), (!F::SIGNED).then_some(m1));
            accumulate(&mut acc[0], 0, unoffset::<F>(s0, a0), d0, m0, a0);
            accumulate(&mut acc[0], 1, unoffset::<F>(s1, a1), d1, m1, a1);
            first += step;
        }
    }
    for b in first..blocks {
        if N == 1 {
            prefetch_share::<false>(next, b * GROUP * F::BYTES, GROUP * F::BYTES);
        }
        let (w, d, m) = decode_group_block::<F>(rows, b, next, lines_per_block);
        let m = (!F::SIGNED).then_some(m);
        for (h, w) in w.iter().enumerate().take(halves) {
            let chunk = b * halves + h;
            let chain = chunk & 1;
            if N == 1 {
                let a = &x[t0 * acts_per_token + chunk];
                let s = unoffset::<F>(sums_one_token(w, a, sign_moved::<F>()), a);
                accumulate(&mut acc[0], chain, s, d, m, a);
            } else {
                let v = transpose_quads(w);
                let mag = magnitudes(&v, sign_moved::<F>());
                for (t, acc) in acc.iter_mut().enumerate() {
                    let a = &x[(t0 + t) * acts_per_token + chunk];
                    let s = sums_transposed(&v, &mag, a, sign_moved::<F>());
                    accumulate(acc, chain, unoffset::<F>(s, a), d, m, a);
                }
            }
        }
    }
    core::array::from_fn(|t| finish(&acc[t]))
}

/// Up to [`SEGMENT_CHUNKS`] chunks of one row group, decoded and transposed, with their
/// magnitudes and each chunk's eight scales and mins.
struct Segment {
    v: [[__m256i; GROUP]; SEGMENT_CHUNKS],
    mag: [[__m256i; GROUP]; SEGMENT_CHUNKS],
    d: [__m256; SEGMENT_CHUNKS],
    m: [__m256; SEGMENT_CHUNKS],
}

/// Working memory of the tile way, on the caller's stack (about 22 KiB): overwritten before it
/// is read, so zeroed once per matmul call.
struct Scratch {
    seg: Segment,
    acc: [Acc; TOKEN_TILE],
}

/// Adds chunks `first_chunk .. first_chunk + len` (the segment) to the accumulators of tokens
/// `t0 .. t0 + N` (`acc[0..N]`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn segment_tokens<F: Q8Format, const N: usize>(
    seg: &Segment,
    len: usize,
    first_chunk: usize,
    x: &[BlockQ8Act],
    acts_per_token: usize,
    t0: usize,
    acc: &mut [Acc],
) {
    // The first segment starts the sums (the scratch holds the previous group's otherwise).
    let zero = _mm256_setzero_ps();
    let mut regs: [Acc; N] = core::array::from_fn(|t| {
        if first_chunk == 0 {
            Acc {
                sum: [zero; 2],
                min: [zero; 2],
            }
        } else {
            acc[t]
        }
    });
    let m = |c: usize| (!F::SIGNED).then_some(seg.m[c]);
    let mut add_chunk = |c: usize, chain: usize| {
        for (t, r) in regs.iter_mut().enumerate() {
            let a = &x[(t0 + t) * acts_per_token + first_chunk + c];
            let s = sums_transposed(&seg.v[c], &seg.mag[c], a, sign_moved::<F>());
            accumulate(r, chain, unoffset::<F>(s, a), seg.d[c], m(c), a);
        }
    };
    // `first_chunk` is a multiple of SEGMENT_CHUNKS, so chunk `c` of the segment belongs to
    // chain `c & 1`; walking pairs keeps both chains in registers.
    let mut c = 0;
    while c + 2 <= len {
        add_chunk(c, 0);
        add_chunk(c + 1, 1);
        c += 2;
    }
    if c < len {
        add_chunk(c, 0);
    }
    acc[..N].copy_from_slice(&regs);
}

/// Outputs of one row group for every token of `tokens` (8 to [`TOKEN_TILE`]), written to
/// rows `first .. first + count` of the `n`-row output.
///
/// # Safety
/// Those rows of `out` belong to the caller (no other thread touches them).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_tile<F: Q8Format>(
    rows: &[&[u8]; GROUP],
    next: &[u8],
    x: &[BlockQ8Act],
    acts_per_token: usize,
    tokens: Range<usize>,
    out: &SharedOut<'_>,
    n: usize,
    first: usize,
    count: usize,
    scratch: &mut Scratch,
) {
    let halves = F::ELEMS / QK8;
    let blocks = rows[0].len() / F::BYTES;
    let lines_per_block = next.len().div_ceil(64).div_ceil(blocks.max(1));
    let Scratch { seg, acc } = scratch;
    let acc = &mut acc[..tokens.len()];
    let blocks_per_segment = SEGMENT_CHUNKS / halves;
    let mut b0 = 0;
    while b0 < blocks {
        let seg_blocks = blocks_per_segment.min(blocks - b0);
        for b in 0..seg_blocks {
            let (w, d, m) = decode_group_block::<F>(rows, b0 + b, next, lines_per_block);
            for (h, w) in w.iter().enumerate().take(halves) {
                let c = b * halves + h;
                seg.v[c] = transpose_quads(w);
                seg.mag[c] = magnitudes(&seg.v[c], sign_moved::<F>());
                seg.d[c] = d;
                seg.m[c] = m;
            }
        }
        let (len, first_chunk) = (seg_blocks * halves, b0 * halves);
        let mut t = tokens.start;
        while t < tokens.end {
            let i = t - tokens.start;
            if t + TOKENS <= tokens.end {
                let acc = &mut acc[i..];
                segment_tokens::<F, TOKENS>(seg, len, first_chunk, x, acts_per_token, t, acc);
                t += TOKENS;
            } else {
                segment_tokens::<F, 1>(seg, len, first_chunk, x, acts_per_token, t, &mut acc[i..]);
                t += 1;
            }
        }
        b0 += seg_blocks;
    }
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: rows `first .. first + count` belong to the caller (this function's contract).
        unsafe { write_lanes(out, finish(a), tokens.start + i, n, first, count) };
    }
}

/// The 8-bit matmul for format `F` over rows `rows`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C (and the features of `F`'s decoder); no other thread
/// touches rows `rows` of `out`; `x` holds `tokens × w.cols / 32` blocks and `w.cols` is a
/// multiple of `F::ELEMS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn matmul<F: Q8Format>(
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
    let n = w.rows;
    let last = rows.end - 1;
    // As in rows8: the range's first groups asked for at once, then each group's successors
    // PREFETCH_AHEAD groups on while it is worked on.
    prefetch_head(w, &rows, GROUP);
    let next_rows = |first: usize| rows_ahead(w, first, GROUP);
    if tokens == 1 {
        // One token (a decode step) in a loop of its own, as in `one_token::matmul`: on a Zen 5
        // (`TIER=avx2 matmul_min 1`, two rounds, 2026-12-05 04:15 UTC) Q8_0 28.7 → 32.2–32.5,
        // Q4_0 44.9–46.6 → 48.7–49.4, IQ4_NL 30.1–31.0 → 33.4–34.7 G weights/s, NQ3 −4 %.
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            let [v] = group_tokens::<F, 1>(&group, next_rows(first), x, acts_per_token, 0);
            // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
            unsafe { write_lanes(out, v, 0, n, first, count) };
        }
        return;
    }
    let mut scratch = (tokens >= SEGMENT_MIN_TOKENS).then(|| {
        let zero = _mm256_setzero_ps();
        Scratch {
            seg: Segment {
                v: [[_mm256_setzero_si256(); GROUP]; SEGMENT_CHUNKS],
                mag: [[_mm256_setzero_si256(); GROUP]; SEGMENT_CHUNKS],
                d: [zero; SEGMENT_CHUNKS],
                m: [zero; SEGMENT_CHUNKS],
            },
            acc: [Acc {
                sum: [zero; 2],
                min: [zero; 2],
            }; TOKEN_TILE],
        }
    });
    let mut tile = 0;
    while tile < tokens {
        let tile_end = (tile + TOKEN_TILE).min(tokens);
        for first in rows.clone().step_by(GROUP) {
            let count = (rows.end - first).min(GROUP);
            // Rows past the range repeat its last row; their lanes are computed, not written.
            let group: [&[u8]; GROUP] = rows_of(w, first, last);
            let next = next_rows(first);
            if let Some(scratch) = scratch
                .as_mut()
                .filter(|_| tile_end - tile >= SEGMENT_MIN_TOKENS)
            {
                // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
                unsafe {
                    group_tile::<F>(
                        &group,
                        next,
                        x,
                        acts_per_token,
                        tile..tile_end,
                        out,
                        n,
                        first,
                        count,
                        scratch,
                    )
                };
                continue;
            }
            let mut t0 = tile;
            while t0 + TOKENS <= tile_end {
                let v = group_tokens::<F, TOKENS>(&group, next, x, acts_per_token, t0);
                for (t, v) in v.into_iter().enumerate() {
                    // SAFETY: rows `first .. first + count` lie in `rows`, owned by this call.
                    unsafe { write_lanes(out, v, t0 + t, n, first, count) };
                }
                t0 += TOKENS;
            }
            while t0 < tile_end {
                let [v] = group_tokens::<F, 1>(&group, next, x, acts_per_token, t0);
                // SAFETY: as above.
                unsafe { write_lanes(out, v, t0, n, first, count) };
                t0 += 1;
            }
        }
        tile = tile_end;
    }
}
