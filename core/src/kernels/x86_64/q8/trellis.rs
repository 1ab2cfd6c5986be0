//! Vspec's trellis formats TQ2, TQ3, TQ4 (layout in `crate::quant::vspec::trellis`): weight `i`
//! is `d · codebook[state(i)]`, `state(i)` the 8-bit window of the block's bit stream ending at
//! its `K` bits. The windows of eight consecutive weights span at most 36 bits, so one unaligned
//! 64-bit load yields all eight states by constant shifts; each state is then one byte lookup.

use super::{f16_at, Decoded, Q8Format};
use crate::quant::vspec::trellis::STATES;
use crate::quant::vspec::{tq2, tq3, tq4};
use core::arch::x86_64::*;

/// Vspec TQ2 (2 bits per weight).
pub(crate) struct Tq2;
/// Vspec TQ3 (3 bits per weight).
pub(crate) struct Tq3;
/// Vspec TQ4 (4 bits per weight).
pub(crate) struct Tq4;

/// The 64 weights of one block as signed codebook values.
#[inline(always)]
fn decode_states<const K: usize>(codebook: &[i8; STATES], qs: &[u8]) -> [i8; 64] {
    // The stream with 8 zero bits in front (the window of the first weights reaches before the
    // stream) and room for the last 64-bit load.
    let mut padded = [0u8; 1 + 32 + 8];
    padded[1..1 + qs.len()].copy_from_slice(qs);
    let mut out = [0i8; 64];
    for g in 0..8 {
        // Weight i's window starts at padded bit K·(i + 1).
        let base = K * (8 * g + 1);
        let (byte, shift) = (base / 8, base % 8);
        let word = u64::from_le_bytes(padded[byte..byte + 8].try_into().unwrap_or([0; 8]));
        let word = word >> shift;
        for j in 0..8 {
            out[8 * g + j] = codebook[((word >> (K * j)) & 0xFF) as usize];
        }
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_block<const K: usize>(codebook: &[i8; STATES], block: &[u8]) -> Decoded {
    let w = decode_states::<K>(codebook, &block[2..2 + 8 * K]);
    // SAFETY: `w` is 64 readable bytes; loadu needs no alignment.
    let (w0, w1) = unsafe {
        (
            _mm256_loadu_si256(w.as_ptr().cast()),
            _mm256_loadu_si256(w[32..].as_ptr().cast()),
        )
    };
    Decoded {
        w: [w0, w1],
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
