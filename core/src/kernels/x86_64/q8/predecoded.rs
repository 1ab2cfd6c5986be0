//! The AVX2 tier's multi-token driver: each row is decoded once per token tile, a segment of
//! chunks at a time, into an L1-resident buffer that every token of the tile then reads. The
//! one-row driver ([`super::avx2`]) decodes a block again for every four tokens, which costs
//! little for Q8_0 or Q4_0 but dominated the trellis formats' prefill (their decode is about a
//! cycle per weight on AVX2).
//!
//! Each output runs the one-row driver's arithmetic in its order (chunks in order, even chunks
//! in one chain and odd in the other, the same products, scales and final sum), so the results
//! are bit-identical to it and thus for any thread count and step size.

use super::{dot32_avx2, hsum, Q8Format, TOKEN_TILE};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::act_q8::{BlockQ8Act, QK8};
use core::arch::x86_64::*;
use core::ops::Range;

/// Chunks (32 weights) decoded at a time: 2 KiB of weights and 512 bytes of scales and mins.
const SEGMENT_CHUNKS: usize = 64;

/// A row segment's decoded chunks and the scale and min of each chunk's block.
struct Segment {
    w: [__m256i; SEGMENT_CHUNKS],
    d: [f32; SEGMENT_CHUNKS],
    m: [f32; SEGMENT_CHUNKS],
    /// Chunks in use.
    len: usize,
    /// The row's chunk index of `w[0]` (a multiple of `SEGMENT_CHUNKS`, so even).
    first: usize,
}

/// A token tile's running sums, per token the two chains of the one-row driver.
struct TileSums {
    acc: [[__m256; 2]; TOKEN_TILE],
    mins: [[f32; 2]; TOKEN_TILE],
}

/// Adds the segment's chunks to the sums of tokens `t0 .. t0 + N` of the tile starting at
/// token `tile`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn add_segment<F: Q8Format, const N: usize>(
    seg: &Segment,
    x: &[BlockQ8Act],
    acts_per_token: usize,
    tile: usize,
    t0: usize,
    sums: &mut TileSums,
) {
    let mut acc: [[__m256; 2]; N] = core::array::from_fn(|t| sums.acc[t0 + t]);
    let mut mins: [[f32; 2]; N] = core::array::from_fn(|t| sums.mins[t0 + t]);
    // `seg.first` is even, so chunk `c` of the segment belongs to chain `c & 1`; walking the
    // chunks in pairs keeps both chains in registers.
    let mut add_chunk = |c: usize, chain: usize| {
        for t in 0..N {
            let a = &x[(tile + t0 + t) * acts_per_token + seg.first + c];
            // SAFETY: `a.qs` is 32 readable bytes; loadu needs no alignment.
            let av = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
            let s = dot32_avx2(seg.w[c], av, F::SIGNED);
            acc[t][chain] = _mm256_fmadd_ps(
                _mm256_set1_ps(seg.d[c] * a.d),
                _mm256_cvtepi32_ps(s),
                acc[t][chain],
            );
            if !F::SIGNED {
                mins[t][chain] += seg.m[c] * a.d * a.sum as f32;
            }
        }
    };
    let mut c = 0;
    while c + 2 <= seg.len {
        add_chunk(c, 0);
        add_chunk(c + 1, 1);
        c += 2;
    }
    if c < seg.len {
        add_chunk(c, 0);
    }
    sums.acc[t0..t0 + N].copy_from_slice(&acc);
    sums.mins[t0..t0 + N].copy_from_slice(&mins);
}

/// The 8-bit matmul for format `F` over rows `rows`, for steps of several tokens.
///
/// # Safety
/// As [`super::avx2::matmul`]: the CPU supports this tier's features (and those of `F`'s
/// decoder); no other thread touches rows `rows` of `out`; `x` holds `tokens × w.cols / 32`
/// blocks and `w.cols` is a multiple of `F::ELEMS`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matmul<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    let acts_per_token = w.cols / QK8;
    let halves = F::ELEMS / QK8;
    let blocks_per_segment = SEGMENT_CHUNKS / halves;
    let mut seg = Segment {
        w: [_mm256_setzero_si256(); SEGMENT_CHUNKS],
        d: [0.0; SEGMENT_CHUNKS],
        m: [0.0; SEGMENT_CHUNKS],
        len: 0,
        first: 0,
    };
    let mut sums = TileSums {
        acc: [[_mm256_setzero_ps(); 2]; TOKEN_TILE],
        mins: [[0.0; 2]; TOKEN_TILE],
    };
    let mut tile = 0;
    while tile < tokens {
        let n = TOKEN_TILE.min(tokens - tile);
        for r in rows.clone() {
            sums.acc[..n].fill([_mm256_setzero_ps(); 2]);
            sums.mins[..n].fill([0.0; 2]);
            let row = w.row(r);
            for (s, blocks) in row.chunks(blocks_per_segment * F::BYTES).enumerate() {
                seg.first = s * SEGMENT_CHUNKS;
                seg.len = 0;
                for block in blocks.chunks_exact(F::BYTES) {
                    // SAFETY: this tier's table installs `F` only where the CPU has the
                    // features its decoder needs, all enabled here (target_feature).
                    let dec = unsafe { F::decode(block) };
                    for h in 0..halves {
                        seg.w[seg.len] = dec.w[h];
                        seg.d[seg.len] = dec.d;
                        seg.m[seg.len] = dec.m;
                        seg.len += 1;
                    }
                }
                let mut t0 = 0;
                while t0 + 4 <= n {
                    add_segment::<F, 4>(&seg, x, acts_per_token, tile, t0, &mut sums);
                    t0 += 4;
                }
                while t0 < n {
                    add_segment::<F, 1>(&seg, x, acts_per_token, tile, t0, &mut sums);
                    t0 += 1;
                }
            }
            for t in 0..n {
                let [a0, a1] = sums.acc[t];
                let [m0, m1] = sums.mins[t];
                let v = hsum(_mm256_add_ps(a0, a1)) + (m0 + m1);
                // SAFETY: rows `rows` of `out` belong to this call (its contract).
                unsafe { out.write((tile + t) * w.rows + r, v) };
            }
        }
        tile += n;
    }
}
