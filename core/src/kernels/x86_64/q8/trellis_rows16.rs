//! The trellis formats (TQ2, TQ3, TQ4) with each sixteen-row group's blocks interleaved byte by
//! byte (`trellis::interleave_rows16`), on the AVX-512 VBMI tier: no reduction tree.
//!
//! Layout of one (group, block) (`trellis::group_block_bytes`): the sixteen rows' f16 scales (32
//! bytes), then stream byte `p` of row `r` at `32 + 16·p + r`: the same bytes as sixteen blocks,
//! permuted, so a tensor keeps its size. Weights `4k .. 4k + 4` of a row (quad `k`) lie in at
//! most three stream bytes, so per quad one 64-byte load, one `vpermb` (row `r`'s bytes to dword
//! `r`), one `vpmultishiftqb` (each dword's four 8-bit windows) and the codebook lookup give
//! quad `k` of all sixteen rows, and one `vpdpbusd` against the broadcast activation quad adds
//! it to each row's own lane. A row-major block needs a tree of shuffles to bring each row's
//! sixteen partial sums into one lane; this layout needs none: about 7 vector instructions per
//! row and 64 weights instead of about 12 (docs/OPTIMIZATION.md, "Why the trellis formats moved
//! least"). Several tokens decode each (group, block) once and reuse its quads.
//!
//! Every row's chunk sums are the same integers as the row-major kernels', and the float
//! arithmetic the same per lane (`rows8::accumulate`'s two chains), so the outputs have the same
//! bits (the SIMD suite compares them).

use super::{BlockQ8Act, QK8};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::vspec::trellis::{group_block_bytes, BLOCK_ELEMS, ROWS16 as ROWS, STATES};
use core::arch::x86_64::*;
use core::ops::Range;

/// Quad `q`'s first stream byte, and the `vpermb` index, `vpmultishiftqb` control and byte mask
/// that turn the bytes from there into its sixteen rows' states (dword `r` = row `r`). Weight
/// `i`'s window is stream bits `K(i + 1) − 8 .. K(i + 1)`; quad 0's starts before the stream, so
/// its dwords take a zero byte below the stream's first ones.
const fn quad_layout(k: usize, q: usize) -> (usize, [u8; 64], [u8; 64], u64) {
    let start_bit = (k * (4 * q + 1)) as isize - 8;
    let (first, pad) = if start_bit < 0 {
        (0usize, 1usize)
    } else {
        ((start_bit / 8) as usize, 0)
    };
    let offset = (if pad == 1 {
        8 + start_bit
    } else {
        start_bit - 8 * first as isize
    }) as usize;
    let (mut index, mut control, mut mask) = ([0u8; 64], [0u8; 64], 0u64);
    let mut r = 0;
    while r < ROWS {
        let mut j = 0;
        while j < 4 {
            let pos = 4 * r + j;
            if j >= pad && j - pad < 3 {
                index[pos] = ((j - pad) * ROWS + r) as u8;
            }
            // Only a quad that starts before the stream needs a byte zeroed (its pad byte, which
            // its first windows read); any other quad's windows end by its dwords' third byte
            // (`offset + 3K + 8 <= 24`), so their fourth may hold anything, and `vpermb` needs no
            // mask (no `vpandq` after it).
            if pad == 0 || j >= pad {
                mask |= 1 << pos;
            }
            control[pos] = (32 * (r % 2) + offset + k * j) as u8;
            j += 1;
        }
        r += 1;
    }
    (first, index, control, mask)
}

/// Quad `Q` of the sixteen rows of the (group, block) at `base`, biased for `vpdpbusd`. With
/// `TAIL` the load reads only the bytes the quad uses (the tensor's last (group, block), after
/// which nothing may be read).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VBMI; `base` points at a whole (group, block) of a `K`-bit
/// format and, unless `TAIL`, at least 32 more readable bytes follow it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
unsafe fn decode_quad<const K: usize, const Q: usize, const TAIL: bool>(
    base: *const u8,
    table: &[__m512i; 4],
) -> __m512i {
    let (first, index, control, mask) = const { quad_layout(K, Q) };
    let at = base.wrapping_add(2 * ROWS + ROWS * first);
    // SAFETY: without `TAIL` the 64 bytes start inside the (group, block) and end at most 32
    // bytes past it (the last quad starts at most 48 bytes before its stream's end), readable
    // by the caller's contract; with `TAIL` the masked load reads only the bytes the quad's
    // windows lie in, which end by the stream's end (faults are suppressed on the others);
    // `index` and `control` are 64 readable bytes.
    let (v, index, control) = unsafe {
        let v = if TAIL {
            // Two bytes per row for TQ2 (its windows span 16 bits), three for TQ3 and TQ4.
            let bytes: u32 = if K == 2 { 2 } else { 3 };
            _mm512_maskz_loadu_epi8((1u64 << (16 * bytes)) - 1, at.cast())
        } else {
            _mm512_loadu_si512(at.cast())
        };
        (
            v,
            _mm512_loadu_si512(index.as_ptr().cast()),
            _mm512_loadu_si512(control.as_ptr().cast()),
        )
    };
    let states =
        _mm512_multishift_epi64_epi8(control, _mm512_maskz_permutexvar_epi8(mask, index, v));
    let upper = _mm512_movepi8_mask(states);
    let low = _mm512_permutex2var_epi8(table[0], states, table[1]);
    let high = _mm512_permutex2var_epi8(table[2], states, table[3]);
    _mm512_mask_blend_epi8(upper, low, high)
}

/// Activation quad `k` (0..16) of the 64 weights whose blocks are `a0`, `a1`.
#[inline(always)]
fn act_quad(a0: &BlockQ8Act, a1: &BlockQ8Act, k: usize) -> i32 {
    let a = if k < 8 { a0 } else { a1 };
    let q = &a.qs[4 * (k % 8)..4 * (k % 8) + 4];
    i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
}

/// The sixteen quads of the (group, block) at `base`.
///
/// # Safety
/// As [`decode_quad`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
unsafe fn decode_block<const K: usize, const TAIL: bool>(
    base: *const u8,
    table: &[__m512i; 4],
) -> [__m512i; 16] {
    let mut w = [_mm512_setzero_si512(); 16];
    macro_rules! quads {
        ($($q:literal)*) => {
            // SAFETY: this function's contract.
            $( w[$q] = unsafe { decode_quad::<K, $q, TAIL>(base, table) }; )*
        };
    }
    quads!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    w
}

/// One token's two chunks of the (group, block) at `base` added to its chains: each quad
/// decoded and multiplied at once, four sums per chunk.
///
/// # Safety
/// As [`decode_quad`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[inline]
unsafe fn add_one_token<const K: usize, const TAIL: bool>(
    base: *const u8,
    table: &[__m512i; 4],
    d: __m512,
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
    chains: &mut [__m512; 2],
) {
    let mut s = [_mm512_setzero_si512(); 8];
    macro_rules! quads {
        ($($q:literal)*) => {
            $(
                // SAFETY: this function's contract.
                let w = unsafe { decode_quad::<K, $q, TAIL>(base, table) };
                let i = ($q / 8) * 4 + $q % 4;
                s[i] = _mm512_dpbusd_epi32(s[i], w, _mm512_set1_epi32(act_quad(a0, a1, $q)));
            )*
        };
    }
    quads!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    let sum4 = |s: &[__m512i]| {
        _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]))
    };
    finish_chunks(sum4(&s[..4]), sum4(&s[4..]), d, a0, a1, chains);
}

/// Chunk sums `s0`, `s1` (biased weights) of one token scaled into its chains: per lane what
/// `rows8::accumulate` does.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn finish_chunks(
    s0: __m512i,
    s1: __m512i,
    d: __m512,
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
    chains: &mut [__m512; 2],
) {
    // The weights' +128 bias taken back as 128 · Σa.
    let s0 = _mm512_sub_epi32(s0, _mm512_set1_epi32(128 * a0.sum));
    let s1 = _mm512_sub_epi32(s1, _mm512_set1_epi32(128 * a1.sum));
    chains[0] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s0),
        _mm512_mul_ps(d, _mm512_set1_ps(a0.d)),
        chains[0],
    );
    chains[1] = _mm512_fmadd_ps(
        _mm512_cvtepi32_ps(s1),
        _mm512_mul_ps(d, _mm512_set1_ps(a1.d)),
        chains[1],
    );
}

/// Adds one token's two chunks of one (group, block) (`w`: its quads, `d`: the rows' scales)
/// to that token's chains, per lane what `rows8::accumulate` does.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn add_token(
    w: &[__m512i; 16],
    d: __m512,
    a0: &BlockQ8Act,
    a1: &BlockQ8Act,
    chains: &mut [__m512; 2],
) {
    // Two sums per chunk, so that no chain of `vpdpbusd` waits on itself.
    let mut s = [_mm512_setzero_si512(); 4];
    for (k, w) in w.iter().enumerate() {
        let i = (k / 8) * 2 + k % 2;
        s[i] = _mm512_dpbusd_epi32(s[i], *w, _mm512_set1_epi32(act_quad(a0, a1, k)));
    }
    let s0 = _mm512_add_epi32(s[0], s[1]);
    let s1 = _mm512_add_epi32(s[2], s[3]);
    finish_chunks(s0, s1, d, a0, a1, chains);
}

/// [`matmul`] for the `k` of a format (2, 3 or 4), with its codebook biased for `vpdpbusd`.
///
/// # Safety
/// As [`matmul`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul_k(
    k: usize,
    codebook: &[i8; STATES],
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    // SAFETY: this function's contract, passed on.
    unsafe {
        match k {
            2 => matmul::<2>(w, codebook, x, tokens, rows, out),
            3 => matmul::<3>(w, codebook, x, tokens, rows, out),
            _ => matmul::<4>(w, codebook, x, tokens, rows, out),
        }
    }
}

/// Tokens whose chains one pass over a row group keeps.
const TILE: usize = 32;
/// Row groups ahead of the one computed whose bytes one token asks for, at most
/// [`BYTES_AHEAD`] ahead.
const GROUPS_AHEAD: usize = 4;
/// How far ahead of its reads one token asks for bytes at most. Zen 4's 32 KiB L1 data cache
/// streamed Q8_0 rows worst with 20 KiB asked for ahead (`split512::BYTES_AHEAD`, 8 KiB, from
/// the same measurements), and four groups of 1536-column TQ4 rows are 51 KiB; on a Zen 5 4
/// groups, 8 KiB and 16 KiB stream TQ2–TQ4 at the same rate (576 and 1536 columns,
/// `TIER=avx512 LAYOUT=rows16 ROWS=120000|48000 matmul_min 1`, three rounds).
const BYTES_AHEAD: usize = 8 << 10;

/// Writes token `$token`'s outputs of row group `$g` (`$chains`, summed as `rows8`'s drivers
/// finish: `(even + odd) + (min terms, zero here)`), those of rows in `$rows` only, the caller
/// owning them. A macro, not a function: through a function the 32-token rate fell 316 → 242
/// G weights/s.
macro_rules! write_group {
    ($out:expr, $chains:expr, $token:expr, $n:expr, $g:expr, $rows:expr) => {{
        let zero = _mm512_setzero_ps();
        let v = _mm512_add_ps(
            _mm512_add_ps($chains[0], $chains[1]),
            _mm512_add_ps(zero, zero),
        );
        let mut lanes = [0f32; ROWS];
        // SAFETY: `lanes` is 16 writable f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        for (r, &l) in lanes.iter().enumerate() {
            let row = $g * ROWS + r;
            if $rows.contains(&row) {
                // SAFETY: the caller owns rows `rows` of `out` (`matmul`'s contract).
                unsafe { $out.write($token * $n + row, l) };
            }
        }
    }};
}

/// The 8-bit matmul of an interleaved `K`-bit trellis tensor over rows `rows` (whole groups).
///
/// # Safety
/// The CPU supports AVX2, FMA, F16C and AVX-512 F, BW, VL, VNNI and VBMI; `w` holds the
/// interleaved layout of a `K`-bit trellis format with `w.rows` a multiple of [`ROWS`]; `rows`
/// starts and ends on multiples of [`ROWS`]; no other thread touches rows `rows` of `out`; `x`
/// holds `tokens × w.cols / 32` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul<const K: usize>(
    w: &WeightView<'_>,
    codebook: &[i8; STATES],
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let blocks = w.cols / BLOCK_ELEMS;
    let gb = group_block_bytes(K);
    let groups = w.rows / ROWS;
    let acts_per_token = w.cols / QK8;
    assert!(w.data.len() == groups * blocks * gb && x.len() >= tokens * acts_per_token);
    // SAFETY: each quarter of `codebook` is 64 readable bytes.
    let table: [__m512i; 4] =
        core::array::from_fn(|q| unsafe { _mm512_loadu_si512(codebook[64 * q..].as_ptr().cast()) });
    let group_bytes = blocks * gb;
    let groups = rows.start / ROWS..rows.end.div_ceil(ROWS).min(groups);
    // The (group, block) at `offset`: its start, derived from all of the remaining data so
    // that the loads past it stay inside the slice they come from, its scales, and whether it
    // is the tensor's last (after which nothing may be read).
    let block_at = |offset: usize| {
        let base = w.data[offset..].as_ptr();
        // SAFETY: the first 32 bytes of the (group, block) are the rows' scales.
        let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(base.cast()) });
        (base, d, offset + gb + 32 > w.data.len())
    };
    if tokens == 1 {
        for g in groups {
            let mut chains = [_mm512_setzero_ps(); 2];
            for b in 0..blocks {
                let offset = g * group_bytes + b * gb;
                let ahead = offset + (GROUPS_AHEAD * group_bytes).min(BYTES_AHEAD);
                for line in 0..gb.div_ceil(64) {
                    // A hint, which cannot fault whatever the address.
                    _mm_prefetch::<_MM_HINT_NTA>(
                        w.data.as_ptr().wrapping_add(ahead + 64 * line).cast(),
                    );
                }
                let (base, d, last) = block_at(offset);
                let (a0, a1) = (&x[2 * b], &x[2 * b + 1]);
                // SAFETY: `base` is a whole (group, block) of `w.data` (the assert above);
                // unless `last`, at least 32 more bytes of it follow.
                unsafe {
                    if last {
                        add_one_token::<K, true>(base, &table, d, a0, a1, &mut chains)
                    } else {
                        add_one_token::<K, false>(base, &table, d, a0, a1, &mut chains)
                    }
                }
            }
            write_group!(out, &chains, 0, w.rows, g, rows);
        }
        return;
    }
    for g in groups {
        let mut tile = 0;
        while tile < tokens {
            let n = (tokens - tile).min(TILE);
            let mut chains = [[_mm512_setzero_ps(); 2]; TILE];
            for b in 0..blocks {
                let (base, d, last) = block_at(g * group_bytes + b * gb);
                // SAFETY: `base` is a whole (group, block) of `w.data` (the assert above);
                // unless `last`, at least 32 more bytes of it follow.
                let q = unsafe {
                    if last {
                        decode_block::<K, true>(base, &table)
                    } else {
                        decode_block::<K, false>(base, &table)
                    }
                };
                for (t, chains) in chains.iter_mut().enumerate().take(n) {
                    let acts = &x[(tile + t) * acts_per_token + 2 * b..][..2];
                    add_token(&q, d, &acts[0], &acts[1], chains);
                }
            }
            for (t, chains) in chains.iter().enumerate().take(n) {
                write_group!(out, chains, tile + t, w.rows, g, rows);
            }
            tile += n;
        }
    }
}
