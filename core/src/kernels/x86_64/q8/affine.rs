//! Vspec's 64-weight affine formats VQ2, VQ3, VQ4 (`d·q + m`; layouts in `crate::quant::vspec`).

use super::{load16, load32, load8, Decoded, Q8Format};
use core::arch::x86_64::*;

/// Vspec VQ2: `d`, `m` f16, 16 bytes of 2-bit quants.
pub(crate) struct Vq2;
/// Vspec VQ3: `d`, `m` f16, 16 bytes of low 2 bits, 8 bytes of high bits.
pub(crate) struct Vq3;
/// Vspec VQ4: `d`, `m` f16, 32 bytes of nibbles.
pub(crate) struct Vq4;

/// The 2-bit fields of 16 bytes: elements `0..32` and `32..64`, element `i` from bits
/// `2·(i/16)..` of byte `i % 16`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn crumbs_64(v: __m128i) -> [__m256i; 2] {
    let three = _mm_set1_epi8(3);
    let e0 = _mm_and_si128(v, three);
    let e1 = _mm_and_si128(_mm_srli_epi16::<2>(v), three);
    let e2 = _mm_and_si128(_mm_srli_epi16::<4>(v), three);
    let e3 = _mm_and_si128(_mm_srli_epi16::<6>(v), three);
    [_mm256_set_m128i(e1, e0), _mm256_set_m128i(e3, e2)]
}

/// The third bit of 64 elements as `4` or `0`: element `i`'s is bit `i / 8` of byte `i % 8` of
/// the 8 bytes in `qh`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn third_bits_64(qh: __m128i) -> [__m256i; 2] {
    // Byte p of `rep` is qh[p % 8]; element i < 32 sits at p = i and needs bit i / 8.
    let rep = _mm256_broadcastq_epi64(qh);
    let m0 = _mm256_setr_epi64x(
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0404_0404_0404_0404,
        0x0808_0808_0808_0808,
    );
    let m1 = _mm256_slli_epi64::<4>(m0);
    let four = _mm256_set1_epi8(4);
    let h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, m0), m0), four);
    let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, m1), m1), four);
    [h0, h1]
}

impl Q8Format for Vq2 {
    const ELEMS: usize = 64;
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        Decoded {
            w: crumbs_64(load16(block, 4)),
        }
    }
}

impl Q8Format for Vq3 {
    const ELEMS: usize = 64;
    const BYTES: usize = 28;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let [l0, l1] = crumbs_64(load16(block, 4));
        let [h0, h1] = third_bits_64(load8(block, 20));
        Decoded {
            w: [_mm256_or_si256(l0, h0), _mm256_or_si256(l1, h1)],
        }
    }
}

impl Q8Format for Vq4 {
    const ELEMS: usize = 64;
    const BYTES: usize = 36;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let v = load32(block, 4);
        let nib = _mm256_set1_epi8(0x0F);
        Decoded {
            w: [
                _mm256_and_si256(v, nib),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib),
            ],
        }
    }
}
