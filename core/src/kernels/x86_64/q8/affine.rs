//! Vspec's 64-weight affine formats VQ2, VQ3, VQ4 (`d·q + m`; layouts in `crate::quant::vspec`).

use super::{load16, load32, load8, or_rotated_bits, Decoded, Q8Format};
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
/// the 8 bytes in `qh` (the first vector elements 0..32, one qword each of bits 0..4, the
/// second 32..64, bits 4..8).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn third_bits_64(qh: __m128i) -> [__m256i; 2] {
    bits_as_fours(qh, [0x04, 0x08, 0x10, 0x20], [0x10, 0x20, 0x40, 0x80])
}

/// Bits of the 8 bytes in `qh` spread to bytes as `4` or `0`: qword `j` of the first vector
/// keeps bit `low[j] / 4` of every byte (`low[j]` ≥ 4 names it as it sits two places up), of the
/// second bit `high[j]` itself (≥ 4). With every kept bit at 4 or above, `min(bit, 4)` is its
/// value: one instruction where a compare and a mask took two. The first vector's bits move up
/// by one shift of the qword (bits shifted into a byte from the one below land in bits 0, 1,
/// which no mask keeps).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bits_as_fours(qh: __m128i, low: [u8; 4], high: [u8; 4]) -> [__m256i; 2] {
    let rep = _mm256_broadcastq_epi64(qh);
    let rep2 = _mm256_slli_epi64::<2>(rep);
    let mask = |m: [u8; 4]| {
        let q = |b: u8| i64::from_le_bytes([b; 8]);
        _mm256_setr_epi64x(q(m[0]), q(m[1]), q(m[2]), q(m[3]))
    };
    let four = _mm256_set1_epi8(4);
    [
        _mm256_min_epu8(_mm256_and_si256(rep2, mask(low)), four),
        _mm256_min_epu8(_mm256_and_si256(rep, mask(high)), four),
    ]
}

/// [`crumbs_64`] in [`Q8Format::decode_halves`]' layout: elements 0..16 then 32..48, and 16..32
/// then 48..64 (bits 0, 4 of each byte, then bits 2, 6): the 16 bytes broadcast to both lanes,
/// each lane shifted by its field.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn crumb_halves(v: __m128i) -> [__m256i; 2] {
    let v = _mm256_broadcastsi128_si256(v);
    let three = _mm256_set1_epi8(3);
    [
        _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), three),
        _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(2, 2, 6, 6)), three),
    ]
}

/// [`third_bits_64`] in [`Q8Format::decode_halves`]' layout: byte `p` of the first vector's
/// lower lane is element `p` (bit `p / 8` of byte `p % 8`), of its upper lane element `32 + p`
/// (bit `4 + p / 8`); the second vector holds elements 16..32 and 48..64 (bits 2, 3, 6, 7).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn third_bit_halves(qh: __m128i) -> [__m256i; 2] {
    bits_as_fours(qh, [0x04, 0x08, 0x40, 0x80], [0x04, 0x08, 0x40, 0x80])
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
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_halves(block: &[u8]) -> [__m256i; 2] {
        crumb_halves(load16(block, 4))
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
        crumbs_512(block, 4)
    }
}

/// The 2-bit fields of 16 bytes as 64 bytes, element `i` from bits `2·(i/16)..` of byte
/// `i % 16` (as [`crumbs_64`]): the bytes broadcast to the four 128-bit lanes, lane `k` shifted
/// by `2k`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
#[inline]
pub(crate) fn crumbs_512(block: &[u8], off: usize) -> __m512i {
    let v = _mm512_broadcast_i32x4(load16(block, off));
    let shifts = _mm512_set_epi64(6, 6, 4, 4, 2, 2, 0, 0);
    _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(3))
}

/// `low` (2-bit fields, as [`crumbs_512`] gives them) with element `i`'s third bit (bit `i / 8`
/// of byte `i % 8` of the 8 bytes at `block[off..]`) added as `4`: the bytes broadcast to every
/// qword, qword `j` rotated so that bit `j` of each byte lands on bit 2, merged under a `0x04`
/// mask by one ternary op. (Testing the bits into a mask register and a masked add had cost
/// VQ3 a sixth of its one-token rate.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
#[inline]
pub(crate) fn with_third_bits(low: __m512i, block: &[u8], off: usize) -> __m512i {
    let qh = &block[off..off + 8];
    // SAFETY: `qh` is 8 readable bytes (bounds-checked slice); `loadl_epi64` reads 8 bytes
    // unaligned.
    let qh = _mm512_broadcastq_epi64(unsafe { _mm_loadl_epi64(qh.as_ptr().cast()) });
    or_rotated_bits(low, qh, _mm512_set_epi64(59, 60, 61, 62, 63, 0, 1, 2), 4)
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
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_halves(block: &[u8]) -> [__m256i; 2] {
        let [l0, l1] = crumb_halves(load16(block, 4));
        let [h0, h1] = third_bit_halves(load8(block, 20));
        [_mm256_or_si256(l0, h0), _mm256_or_si256(l1, h1)]
    }
    const HALVES_VNNI_SHIFT: i32 = 4;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn decode_halves_vnni(block: &[u8]) -> [__m256i; 2] {
        // The second chunk's 3-bit quants (upper lane) as 16 · q: its crumbs stay at bits 4–5,
        // where they lie, and its third bits go to bit 6. Per vector one mask of the crumbs
        // and one rotate and `vpternlogq` for the third bits (bit `p / 8` of plane byte `p % 8`
        // for weight `p`: qword `j` of the first vector takes bit 0, 1, 4, 5 to bit 2, 2, 6, 6,
        // of the second bit 2, 3, 6, 7), where `decode_halves` shifts every field down.
        let crumbs = _mm256_setr_epi64x(
            0x0303_0303_0303_0303,
            0x0303_0303_0303_0303,
            0x3030_3030_3030_3030,
            0x3030_3030_3030_3030,
        );
        let third = _mm256_setr_epi64x(
            0x0404_0404_0404_0404,
            0x0404_0404_0404_0404,
            0x4040_4040_4040_4040,
            0x4040_4040_4040_4040,
        );
        let v = _mm256_broadcastsi128_si256(load16(block, 4));
        let plane = _mm256_broadcastq_epi64(load8(block, 20));
        let with_third = |low: __m256i, rot: __m256i| {
            // 0xF8: `a | (b & c)`.
            _mm256_ternarylogic_epi64::<0xF8>(low, _mm256_rolv_epi64(plane, rot), third)
        };
        [
            with_third(_mm256_and_si256(v, crumbs), _mm256_setr_epi64x(2, 1, 2, 1)),
            with_third(
                _mm256_and_si256(_mm256_srli_epi16::<2>(v), crumbs),
                _mm256_setr_epi64x(0, 63, 0, 63),
            ),
        ]
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
        let low = crumbs_512(block, 4);
        with_third_bits(low, block, 20)
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
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_halves(block: &[u8]) -> [__m256i; 2] {
        // Bytes 0..16 hold weights 0..16 (low nibbles) and 32..48 (high), bytes 16..32 the
        // rest: each 16 bytes broadcast, the upper lane shifted by 4.
        let shifts = _mm256_setr_epi64x(0, 0, 4, 4);
        let nib = _mm256_set1_epi8(0x0F);
        let (v0, v1) = (
            _mm256_broadcastsi128_si256(load16(block, 4)),
            _mm256_broadcastsi128_si256(load16(block, 20)),
        );
        [
            _mm256_and_si256(_mm256_srlv_epi64(v0, shifts), nib),
            _mm256_and_si256(_mm256_srlv_epi64(v1, shifts), nib),
        ]
    }
    const HALVES_VNNI_SHIFT: i32 = 4;
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn decode_halves_vnni(block: &[u8]) -> [__m256i; 2] {
        // The high nibbles (the second chunk, upper lane) stay in place, as 16 · q: one mask per
        // vector instead of a shift and a mask.
        let nibbles = _mm256_setr_epi64x(
            0x0F0F_0F0F_0F0F_0F0F,
            0x0F0F_0F0F_0F0F_0F0F,
            0xF0F0_F0F0_F0F0_F0F0_u64 as i64,
            0xF0F0_F0F0_F0F0_F0F0_u64 as i64,
        );
        [
            _mm256_and_si256(_mm256_broadcastsi128_si256(load16(block, 4)), nibbles),
            _mm256_and_si256(_mm256_broadcastsi128_si256(load16(block, 20)), nibbles),
        ]
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
        // Low nibbles in the low half, high nibbles in the high half.
        let v = _mm512_broadcast_i64x4(load32(block, 4));
        let shifts = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
        _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(0x0F))
    }
}
