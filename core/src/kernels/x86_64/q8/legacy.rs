//! ggml's 32-weight formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (layouts in `crate::quant::gguf`).

use super::{load16, load32, nibbles_32, nibbles_pair_512, Decoded, Q8Format};
use core::arch::x86_64::*;

/// ggml Q4_0: `d` f16, 16 bytes of nibbles; value `d·(q − 8)`.
pub(crate) struct Q4_0;
/// ggml Q4_1: `d`, `m` f16, 16 bytes of nibbles; value `d·q + m`.
pub(crate) struct Q4_1;
/// ggml Q5_0: `d` f16, 32 high bits, 16 bytes of nibbles; value `d·(q − 16)`.
pub(crate) struct Q5_0;
/// ggml Q5_1: `d`, `m` f16, 32 high bits, nibbles; value `d·q + m`.
pub(crate) struct Q5_1;
/// ggml Q8_0: `d` f16, 32 signed bytes; value `d·q`.
pub(crate) struct Q8_0;

/// The fifth bit of each of 32 elements: bit `i` of the little-endian `u32` at `block[off..]`,
/// as `0x10` or `0`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn high_bits_32(block: &[u8], off: usize) -> __m256i {
    let qh = u32::from_le_bytes([block[off], block[off + 1], block[off + 2], block[off + 3]]);
    // Byte i takes byte i / 8 of qh.
    fifth_bit_bytes(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    )
}

/// `0x10` in byte `i` where bit `i % 8` of byte `spread[i]` of `words`' 128-bit lane is set, else
/// 0: one shuffle, a bit test by mask and compare, a mask.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn fifth_bit_bytes(words: __m256i, spread: __m256i) -> __m256i {
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(
        _mm256_and_si256(_mm256_shuffle_epi8(words, spread), bit),
        bit,
    );
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The fifth bits of two 32-weight blocks as one byte mask: bit `i` of the u32 at `b0[off..]`
/// for element `i`, of `b1[off..]` for element `32 + i` (AVX-512 BW adds `0x10` under it, where
/// AVX2 spreads the bits to bytes with a shuffle, a compare and two ands).
#[inline(always)]
fn fifth_bits_pair(b0: &[u8], b1: &[u8], off: usize) -> __mmask64 {
    let word = |b: &[u8]| u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as u64;
    word(b0) | (word(b1) << 32)
}

impl Q8Format for Q4_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    const OFFSET: i32 = 8;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = _mm256_sub_epi8(nibbles_32(load16(block, 2)), _mm256_set1_epi8(8));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_offset(block: &[u8]) -> Decoded {
        let q = nibbles_32(load16(block, 2));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_biased(block: &[u8]) -> Decoded {
        // q − 8 + 128.
        let q = _mm256_add_epi8(nibbles_32(load16(block, 2)), _mm256_set1_epi8(120));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        _mm512_add_epi8(nibbles_pair_512(b0, b1, 2), _mm512_set1_epi8(120))
    }
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        nibble_halves(b0, b1, 2)
    }
}

impl Q8Format for Q4_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = nibbles_32(load16(block, 4));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        nibbles_pair_512(b0, b1, 4)
    }
    const PAIR_HALVES: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        nibble_halves(b0, b1, 4)
    }
}

/// The 16 quant bytes at `off` of two blocks joined, split into their low nibbles (weights
/// 0..16 of `b0`, then of `b1`) and their high nibbles (weights 16..32 of each).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn nibble_halves(b0: &[u8], b1: &[u8], off: usize) -> [__m256i; 2] {
    let both = _mm256_set_m128i(load16(b1, off), load16(b0, off));
    let mask = _mm256_set1_epi8(0x0F);
    [
        _mm256_and_si256(both, mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(both), mask),
    ]
}

impl Q8Format for Q5_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 22;
    const SIGNED: bool = true;
    const OFFSET: i32 = 16;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = _mm256_or_si256(nibbles_32(load16(block, 6)), high_bits_32(block, 2));
        let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_offset(block: &[u8]) -> Decoded {
        let q = _mm256_or_si256(nibbles_32(load16(block, 6)), high_bits_32(block, 2));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_biased(block: &[u8]) -> Decoded {
        // q − 16 + 128.
        let q = _mm256_or_si256(nibbles_32(load16(block, 6)), high_bits_32(block, 2));
        let q = _mm256_add_epi8(q, _mm256_set1_epi8(112));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        // q − 16 + 128, the fifth bits added under their mask.
        let low = _mm512_add_epi8(nibbles_pair_512(b0, b1, 6), _mm512_set1_epi8(112));
        _mm512_mask_add_epi8(low, fifth_bits_pair(b0, b1, 2), low, _mm512_set1_epi8(16))
    }
    const PAIR_HALVES: bool = true;
    const PAIR_QUANT_BITS: u32 = 5;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        five_bit_halves(b0, b1, 6, 2)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_halves_vnni(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        five_bit_halves_vbmi(b0, b1, 6, 2)
    }
}

impl Q8Format for Q5_1 {
    const ELEMS: usize = 32;
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = _mm256_or_si256(nibbles_32(load16(block, 8)), high_bits_32(block, 4));
        Decoded { w: [q, q] }
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        let low = nibbles_pair_512(b0, b1, 8);
        _mm512_mask_add_epi8(low, fifth_bits_pair(b0, b1, 4), low, _mm512_set1_epi8(16))
    }
    const PAIR_HALVES: bool = true;
    const PAIR_QUANT_BITS: u32 = 5;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode_pair_halves(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        five_bit_halves(b0, b1, 8, 4)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_halves_vnni(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        five_bit_halves_vbmi(b0, b1, 8, 4)
    }
}

/// The 5-bit quants (nibbles at `off`, fifth bits as the u32 at `qh`) of two 32-weight blocks
/// in [`nibble_halves`]'s layout: weights 0..16 of `b0` then of `b1`, and 16..32 of each. Each
/// block's 16 bytes from `qh` fill one 128-bit lane (only the first four matter: the fifth
/// bits, bit `i` for weight `i`), so one in-lane shuffle per vector spreads bits 0..16 or
/// 16..32 of both blocks to their weights' bytes, and a bit test turns each into `0x10`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn five_bit_halves(b0: &[u8], b1: &[u8], off: usize, qh: usize) -> [__m256i; 2] {
    let [low, high] = nibble_halves(b0, b1, off);
    let bits = _mm256_set_m128i(load16(b1, qh), load16(b0, qh));
    // Byte i of a lane takes byte i / 8 of the lane's fifth bits (weights 0..16), or byte
    // 2 + i / 8 (weights 16..32).
    let first = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1,
        1, 1,
    );
    let second = _mm256_setr_epi8(
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    [
        _mm256_or_si256(low, fifth_bit_bytes(bits, first)),
        _mm256_or_si256(high, fifth_bit_bytes(bits, second)),
    ]
}

/// [`five_bit_halves`] with AVX-512 VBMI: each block's bit word copied to both qwords of its
/// 128-bit lane by one permute, then per vector one `vpmultishiftqb` that brings weight `i`'s
/// bit to bit 4 of its byte (the byte taken from bit `i − 4` of the word, rotating) and one
/// `vpternlogq` that merges it under `0x10`: five vector instructions for both vectors where
/// the shuffle, test and merge took ten. (Adding `0x10` under masks built from the words with
/// integer instructions measured slower: Q5_1 26.7 → 21.0 G weights/s on a Zen 4.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn five_bit_halves_vbmi(b0: &[u8], b1: &[u8], off: usize, qh: usize) -> [__m256i; 2] {
    let [low, high] = nibble_halves(b0, b1, off);
    let bits = _mm256_set_m128i(load16(b1, qh), load16(b0, qh));
    // Qwords 0, 1: b0's bytes qh..qh + 8 (its word in bits 0..32); 2, 3: b1's.
    let words = _mm256_permute4x64_epi64::<0b10_10_00_00>(bits);
    let sixteen = _mm256_set1_epi8(0x10);
    let merge = |nibbles: __m256i, control: &[i8; 32]| {
        // SAFETY: `control` is 32 readable bytes; loadu needs no alignment.
        let control = unsafe { _mm256_loadu_si256(control.as_ptr().cast()) };
        let moved = _mm256_multishift_epi64_epi8(control, words);
        // 0xF8: `a | (b & c)`.
        _mm256_ternarylogic_epi64::<0xF8>(nibbles, moved, sixteen)
    };
    [
        merge(low, const { &fifth_bit_control(0) }),
        merge(high, const { &fifth_bit_control(16) }),
    ]
}

/// The `vpmultishiftqb` control of [`five_bit_halves_vbmi`]: byte `p` of each lane is weight
/// `first + p` of the lane's block, whose bit `first + p` of the word lands on bit 4 when the
/// byte is taken from bit `first + p − 4` (modulo 64: the shift rotates within the qword).
const fn fifth_bit_control(first: i8) -> [i8; 32] {
    let mut c = [0i8; 32];
    let mut b = 0;
    while b < 32 {
        c[b] = (first + (b % 16) as i8 - 4) & 63;
        b += 1;
    }
    c
}

impl Q8Format for Q8_0 {
    const ELEMS: usize = 32;
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        let q = load32(block, 2);
        Decoded { w: [q, q] }
    }
}
