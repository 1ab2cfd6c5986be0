//! K and V rows of the cache widened to f32 for a tile's rows to share: f32 copied, f16 by
//! `vcvtph2ps`, Q8_0 as `scale · q` (all exact).

use super::POS_STEP;
use crate::kernels::x86_64::ops::store;
use crate::kv::KvRows;
use crate::quant::gguf::q8_0::{BLOCK_BYTES as Q8_BYTES, BLOCK_ELEMS as Q8_ELEMS};
use core::arch::x86_64::*;
use half::f16;

/// Writes positions `first..first + count` (at most [`POS_STEP`]) of the head at value offset
/// `head_off` into `wide` as f32; positions past `count` are zeroed. Laid out as rows
/// (position `j` at `j · hd`), or with `PAIRED` as pairs of positions with their 8-element
/// chunks interleaved (chunk `c` of position `j` at `(j / 2) · 2·hd + 16c + 8·(j % 2)`, so one
/// 16-lane load holds chunk `c` of both positions of a pair; needs `hd.is_multiple_of(8)`).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) fn widen_rows<const PAIRED: bool>(
    rows: &KvRows<'_>,
    first: usize,
    count: usize,
    kv_width: usize,
    head_off: usize,
    hd: usize,
    wide: &mut [f32],
) {
    assert!(
        !PAIRED || hd.is_multiple_of(8),
        "paired chunks of a head of {hd}"
    );
    let whole = hd / 8 * 8;
    for j in 0..POS_STEP {
        // Element i (a chunk's first when paired) of position j goes to base + spread · i.
        let (base, spread) = if PAIRED {
            (j / 2 * 2 * hd + 8 * (j % 2), 2)
        } else {
            (j * hd, 1)
        };
        // Paired, this position's chunks end at 2·(hd − 8) + 8, and it has no tail past them.
        let len = if PAIRED { 2 * hd - 8 } else { hd };
        let (dst, tail) = wide[base..base + len].split_at_mut(if PAIRED { len } else { whole });
        if j >= count {
            for i in (0..whole).step_by(8) {
                store(dst, spread * i, _mm256_setzero_ps());
            }
            tail.fill(0.0);
            continue;
        }
        let off = (first + j) * kv_width + head_off;
        match rows {
            KvRows::F32(c) => {
                let src = &c[off..off + hd];
                // SAFETY: `src` holds `whole` f32 and `dst` reaches past the last chunk's
                // `spread · (whole − 8) + 8` (its length above).
                unsafe { widen_chunks::<f32>(src.as_ptr(), dst, whole / 8, spread) };
                tail.copy_from_slice(&src[whole..]);
            }
            KvRows::F16(c) => {
                let h = &c[off..off + hd];
                // SAFETY: as above, with `h` holding `whole` f16.
                unsafe { widen_chunks::<u16>(h.as_ptr(), dst, whole / 8, spread) };
                for (d, &x) in tail.iter_mut().zip(&h[whole..]) {
                    *d = f16::from_bits(x).to_f32();
                }
            }
            KvRows::Q8_0(b) => {
                let first_blk = off / Q8_ELEMS;
                let src = &b[first_blk * Q8_BYTES..(first_blk + hd / Q8_ELEMS) * Q8_BYTES];
                for (n, blk) in src.chunks_exact(Q8_BYTES).enumerate() {
                    // scale · q is exact in f32 (an 11-bit mantissa times an 8-bit integer).
                    let scale = _mm256_set1_ps(q8_scale(blk));
                    for c in 0..Q8_ELEMS / 8 {
                        let v = _mm256_mul_ps(load_i8(blk, c), scale);
                        store(dst, spread * (n * Q8_ELEMS + 8 * c), v);
                    }
                }
            }
        }
    }
}

/// A Q8_0 block's f16 scale.
#[inline]
fn q8_scale(blk: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32()
}

/// A cache element that widens to f32 eight at a time: f32 itself, or f16 bits.
trait Widen: Copy {
    /// The 8 elements at `p` as f32.
    ///
    /// # Safety
    /// `p` points at 8 readable elements; the CPU has AVX2 and F16C.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Widen for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller's contract; loadu needs no alignment.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Widen for u16 {
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> __m256 {
        // SAFETY: the caller's contract (16 readable bytes, F16C); loadu needs no alignment.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// Chunk `c` (elements `8c..8c + 8`) of `src`, for `c < chunks`, to `dst[spread · 8c..][..8]`,
/// two chunks per step and without a bounds check per chunk: checked per chunk, the loop of a
/// decode step's attention spent a third of its time here (`attention_min 1 2048`).
///
/// # Safety
/// `src` points at `8 · chunks` readable elements; `dst` holds at least `spread · 8 · (chunks −
/// 1) + 8` elements when `chunks > 0`; the CPU has AVX2 and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn widen_chunks<T: Widen>(src: *const T, dst: &mut [f32], chunks: usize, spread: usize) {
    if chunks == 0 {
        return;
    }
    assert!(
        dst.len() >= spread * 8 * (chunks - 1) + 8,
        "widened row past its scratch"
    );
    let out = dst.as_mut_ptr();
    let mut c = 0;
    while c + 2 <= chunks {
        // SAFETY: chunks `c` and `c + 1 < chunks` read `src[8c..8c + 16]`, inside the caller's
        // `8 · chunks` elements, and write `dst[spread · 8c..][..8]` and `dst[spread · 8(c +
        // 1)..][..8]`, inside `dst` by the assert above.
        unsafe {
            let a = T::load8(src.add(8 * c));
            let b = T::load8(src.add(8 * c + 8));
            _mm256_storeu_ps(out.add(spread * 8 * c), a);
            _mm256_storeu_ps(out.add(spread * 8 * (c + 1)), b);
        }
        c += 2;
    }
    if c < chunks {
        // SAFETY: as above, for the last chunk `c < chunks`.
        unsafe { _mm256_storeu_ps(out.add(spread * 8 * c), T::load8(src.add(8 * c))) };
    }
}

/// Quants `8c..8c + 8` of a Q8_0 block widened to f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_i8(blk: &[u8], c: usize) -> __m256 {
    let b = &blk[2 + 8 * c..2 + 8 * c + 8];
    // SAFETY: `b` is 8 readable bytes; loadl_epi64 reads exactly 8 bytes, unaligned.
    let x = unsafe { _mm_loadl_epi64(b.as_ptr().cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x))
}
