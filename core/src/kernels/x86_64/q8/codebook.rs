//! Formats whose quants index a small fixed codebook: ggml IQ4_NL (16 levels) and Vspec NQ3
//! (8 levels). The lookup is one in-register byte shuffle per 32 weights.

use super::affine::{crumbs_512, crumbs_64, third_bits_64, with_third_bits};
use super::{load16, load8, nibbles_32, nibbles_pair_512, Decoded, Q8Format};
use crate::quant::gguf::iq4_nl::KVALUES;
use crate::quant::vspec::nq3::LEVELS;
use core::arch::x86_64::*;

/// ggml IQ4_NL: `d` f16, 16 bytes of nibble indices into `KVALUES`.
pub(crate) struct Iq4Nl;
/// Vspec NQ3: `d` f16, 3-bit indices (VQ3's bit layout at offset 2) into `LEVELS`.
pub(crate) struct Nq3;

/// A 16-entry table in `vpdpbusd`'s unsigned form (`level + 128`) in every 128-bit lane of a
/// 512-bit vector, for `vpshufb`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
#[inline]
fn biased_table16_512(levels: &[i8]) -> __m512i {
    let mut t = [0i8; 16];
    for (t, &l) in t.iter_mut().zip(levels) {
        *t = l ^ i8::MIN;
    }
    // SAFETY: `t` is 16 readable bytes; loadu needs no alignment.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// A 16-entry signed table in both 128-bit lanes, for `vpshufb`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn table16(levels: &[i8]) -> __m256i {
    let mut t = [0i8; 16];
    t[..levels.len()].copy_from_slice(levels);
    // SAFETY: `t` is 16 readable bytes; loadu needs no alignment.
    let v = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
    _mm256_broadcastsi128_si256(v)
}

impl Q8Format for Iq4Nl {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = _mm256_shuffle_epi8(table16(&KVALUES), nibbles_32(load16(block, 2)));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        _mm512_shuffle_epi8(biased_table16_512(&KVALUES), nibbles_pair_512(b0, b1, 2))
    }
}

impl Q8Format for Nq3 {
    const ELEMS: usize = 64;
    const BYTES: usize = 26;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let [l0, l1] = crumbs_64(load16(block, 2));
        let [h0, h1] = third_bits_64(load8(block, 18));
        let t = table16(&LEVELS);
        Decoded {
            w: [
                _mm256_shuffle_epi8(t, _mm256_or_si256(l0, h0)),
                _mm256_shuffle_epi8(t, _mm256_or_si256(l1, h1)),
            ],
        }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
        let low = crumbs_512(block, 2);
        let idx = with_third_bits(low, block, 18);
        _mm512_shuffle_epi8(biased_table16_512(&LEVELS), idx)
    }
}
