//! Vspec's trellis formats TQ2, TQ3, TQ4 (layout in `crate::quant::vspec::trellis`): weight `i`
//! is `d · codebook[state(i)]`, `state(i)` the 8-bit window of the block's bit stream ending at
//! its `K` bits. States come out sixteen at a time: one byte shuffle gathers each weight's two
//! stream bytes into a 16-bit lane, one multiply shifts its window into the high byte (the
//! pattern repeats every eight weights, so shuffle and multipliers are constants). The 256-entry
//! codebook is then read for 32 states at once by sixteen 16-entry `vpshufb` lookups, each kept
//! where the state's high nibble selects its slice.

use super::{f16_at, load16, Decoded, Q8Format};
use crate::quant::vspec::trellis::STATES;
use crate::quant::vspec::{tq2, tq3, tq4};
use core::arch::x86_64::*;

/// Vspec TQ2 (2 bits per weight).
pub(crate) struct Tq2;
/// Vspec TQ3 (3 bits per weight).
pub(crate) struct Tq3;
/// Vspec TQ4 (4 bits per weight).
pub(crate) struct Tq4;

/// The shuffle that gathers, into 16-bit lane `j` of each 128-bit lane, the two stream bytes
/// holding the window of that lane's weight `j`, and the multiplier `2^(8 − shift)` that moves
/// the window into the lane's high byte.
///
/// Weight `8g + j`'s window starts at padded-stream bit `8Kg + K(j + 1)`: byte
/// `Kg + ⌊K(j + 1)/8⌋`, bit `K(j + 1) mod 8`. Relative to byte `Kg` the pattern is the same for
/// every group `g` of eight weights, so both vectors are constants per `K`.
const fn window_layout<const K: usize>() -> ([i8; 32], [i16; 16]) {
    let mut idx = [0i8; 32];
    let mut mul = [0i16; 16];
    let mut lane = 0;
    while lane < 2 {
        let mut j = 0;
        while j < 8 {
            let bit = K * (j + 1);
            let byte = (bit / 8) as i8;
            idx[lane * 16 + 2 * j] = byte;
            idx[lane * 16 + 2 * j + 1] = byte + 1;
            mul[lane * 8 + j] = 1 << (8 - bit % 8);
            j += 1;
        }
        lane += 1;
    }
    (idx, mul)
}

/// The states of weights `8g .. 8g + 16` as 16-bit lanes: lane 0 of the register holds group
/// `g`, lane 1 group `g + 1`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn states_16<const K: usize>(padded: &[u8], g: usize) -> __m256i {
    let (idx, mul) = const { window_layout::<K>() };
    let v = _mm256_set_m128i(load16(padded, K * (g + 1)), load16(padded, K * g));
    // SAFETY: `idx` and `mul` are 32 readable bytes each; loadu needs no alignment.
    let (idx, mul) = unsafe {
        (
            _mm256_loadu_si256(idx.as_ptr().cast()),
            _mm256_loadu_si256(mul.as_ptr().cast()),
        )
    };
    let words = _mm256_shuffle_epi8(v, idx);
    // The low 16 bits of `word << (8 − shift)` hold the window in their high byte.
    _mm256_srli_epi16::<8>(_mm256_mullo_epi16(words, mul))
}

/// Codebook values of 32 states (bytes): one `vpshufb` per 16-entry slice of the table, kept
/// where the state's high nibble selects that slice.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lookup_32(codebook: &[i8; STATES], states: __m256i) -> __m256i {
    let nib = _mm256_set1_epi8(0x0F);
    let lo = _mm256_and_si256(states, nib);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(states), nib);
    let mut out = _mm256_setzero_si256();
    for t in 0..16 {
        let slice = &codebook[16 * t..16 * t + 16];
        // SAFETY: `slice` is 16 readable bytes; loadu needs no alignment.
        let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(slice.as_ptr().cast()) });
        let hit = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(t as i8));
        out = _mm256_blendv_epi8(out, _mm256_shuffle_epi8(table, lo), hit);
    }
    out
}

/// Weights `32h .. 32h + 32` of a block as signed codebook values.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_half<const K: usize>(codebook: &[i8; STATES], padded: &[u8], h: usize) -> __m256i {
    let a = states_16::<K>(padded, 4 * h);
    let b = states_16::<K>(padded, 4 * h + 2);
    // packus interleaves the lanes (a0 b0 | a1 b1); the permute restores weight order.
    let states = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b));
    lookup_32(codebook, states)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_block<const K: usize>(codebook: &[i8; STATES], block: &[u8]) -> Decoded {
    // The stream with 8 zero bits in front (the first weights' windows reach before it) and
    // room for the last 16-byte load.
    let mut padded = [0u8; 64];
    padded[1..1 + 8 * K].copy_from_slice(&block[2..2 + 8 * K]);
    Decoded {
        w: [
            decode_half::<K>(codebook, &padded, 0),
            decode_half::<K>(codebook, &padded, 1),
        ],
        d: f16_at(block, 0),
        m: 0.0,
    }
}

impl Q8Format for Tq2 {
    const ELEMS: usize = 64;
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<2>(&tq2::CODEBOOK, block)
    }
}

impl Q8Format for Tq3 {
    const ELEMS: usize = 64;
    const BYTES: usize = 26;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<3>(&tq3::CODEBOOK, block)
    }
}

impl Q8Format for Tq4 {
    const ELEMS: usize = 64;
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<4>(&tq4::CODEBOOK, block)
    }
}
