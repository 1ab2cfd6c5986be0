//! Vspec's own packed formats: asymmetric 2, 3 and 4-bit quants in groups of 64.
//!
//! llama.cpp's k-quants need rows that are multiples of 256, but small models have rows of 576
//! or 1536 (SmolLM2-135M), so these formats use 64-weight blocks: every row length that is a
//! multiple of 64 works. Each block is `x̂ = d·q + m` with an f16 scale `d`, an f16 min `m` and
//! `b`-bit quants `q ∈ 0..2^b`, laid out so that a SIMD kernel unpacks 32 or 16 consecutive
//! elements with one shift and one mask:
//!
//! | format | bytes | bits per weight | layout of the quants after `d`, `m` (bytes 0..4) |
//! |--------|-------|-----------------|--------------------------------------------------|
//! | [`vq2`] | 20   | 2.5             | 16 bytes, 2-bit fields                             |
//! | [`vq3`] | 28   | 3.5             | 16 bytes of low 2 bits + 8 bytes of high bits      |
//! | [`vq4`] | 36   | 4.5             | 32 bytes of nibbles                               |
//!
//! [`nq3`] (26 bytes, 3.25 bpw) drops the min and decodes `x̂ = d·LEVELS[q]` with a fixed
//! non-uniform 8-level codebook, for weights whose residual stream was rotated.
//!
//! [`tq2`], [`tq3`] and [`tq4`] (18, 26 and 34 bytes: 2.25, 3.25 and 4.25 bpw) code the block as
//! one bit stream along a trellis, each weight decoding through the 8-bit window that ends at its
//! bits into a 256-entry codebook; [`trellis`] has what they share, the Viterbi encoder included.
//!
//! Each file defines the exact bit layout, decoder, quantizer (the weighted search of
//! [`super::search::fit_affine`]), and scalar reference dot products against f32 and against 8-bit
//! activations ([`super::act_q8`]). Conventions are those of [`super::gguf`]: unaligned byte
//! slices, little-endian fields, decoders that never panic on any bytes.

pub mod nq3;
pub mod tq2;
pub mod tq3;
pub mod tq4;
pub mod trellis;
pub mod vq2;
pub mod vq3;
pub mod vq4;

use super::act_q8::{isum32, BlockQ8Act, QK8};
use super::gguf::f16_at;
use super::search;

// What the three formats share: `d` at byte 0, `m` at byte 2, `x̂ = d·q + m`. Each file passes
// its own `quant(block, i)` (which quant element i has) or `pack`; these generic bodies inline it.

/// Byte offset of the f16 scale `d` in every VQ block.
const OFF_D: usize = 0;
/// Byte offset of the f16 min `m` in every VQ block.
const OFF_M: usize = 2;

/// Decodes a block element by element: `out[i] = d · quant(block, i) + m`.
#[inline(always)]
fn decode_affine(block: &[u8], out: &mut [f32], quant: impl Fn(&[u8], usize) -> u8) {
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    for (i, o) in out.iter_mut().enumerate() {
        *o = d * quant(block, i) as f32 + m;
    }
}

/// Reference dot product with f32 values: `d · Σ q·x + m · Σ x`.
#[inline(always)]
fn dot_f32_affine(block: &[u8], x: &[f32], quant: impl Fn(&[u8], usize) -> u8) -> f32 {
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let (mut sqx, mut sx) = (0f32, 0f32);
    for (i, &xi) in x.iter().enumerate() {
        sqx += quant(block, i) as f32 * xi;
        sx += xi;
    }
    d * sqx + m * sx
}

/// Reference dot product with 8-bit activation blocks of [`QK8`] elements each:
/// `Σₛ daₛ · (d · Σ q·qa + m · sumₛ)`, the inner sums in i32.
#[inline(always)]
fn dot_q8_affine(block: &[u8], act: &[BlockQ8Act], quant: impl Fn(&[u8], usize) -> u8) -> f32 {
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let mut acc = 0f32;
    for (s, a) in act.iter().enumerate() {
        let isum = isum32(&a.qs, (0..QK8).map(|j| quant(block, s * QK8 + j) as i32));
        acc += a.d * (d * isum as f32 + m * a.sum as f32);
    }
    acc
}

/// Weighted search ([`search::fit_affine`]) for a 64-weight group, then `pack`.
#[inline(always)]
fn quantize_affine(
    x: &[f32],
    w: &[f32],
    qmax: u8,
    pack: fn(f32, f32, &[u8], &mut [u8]),
    out: &mut [u8],
) {
    let mut q = [0u8; 64];
    let (d, m) = search::fit_affine(x, w, qmax, &mut q[..x.len()]);
    pack(d, m, &q[..x.len()], out);
}

/// [`quantize_affine`] with the default weights of [`search::default_weights`].
#[inline(always)]
fn quantize_affine_default(
    x: &[f32],
    qmax: u8,
    pack: fn(f32, f32, &[u8], &mut [u8]),
    out: &mut [u8],
) {
    let mut w = [0f32; 64];
    search::default_weights(x, &mut w[..x.len()]);
    quantize_affine(x, &w[..x.len()], qmax, pack, out);
}

/// Stamps what VQ2, VQ3 and VQ4 share into the module that invokes it: the weighted and default
/// quantizers (the search of [`search::fit_affine`] at the module's `QMAX`, then its `pack`), the
/// 8-bit dot over its `quant(block, i)`, and the tests every affine format runs. The module keeps
/// its layout: `quant`, `pack`, the decoder and the f32 dot (VQ4 has faster ones of its own).
macro_rules! affine_format {
    () => {
        /// Quantize one block with importance weights `w` (see `search::fit_affine`).
        pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
            debug_assert_eq!(x.len(), BLOCK_ELEMS);
            super::quantize_affine(x, w, QMAX, pack, out);
        }

        /// Quantize one block with the default weights of `search::default_weights`.
        pub fn quantize_block(x: &[f32], out: &mut [u8]) {
            debug_assert_eq!(x.len(), BLOCK_ELEMS);
            super::quantize_affine_default(x, QMAX, pack, out);
        }

        /// Reference dot product with two 8-bit activation blocks (elements 0..32 and 32..64):
        /// `Σₛ daₛ · (d · Σ q·qa + m · sumₛ)`, the inner sums in i32.
        pub fn dot_q8(block: &[u8], act: &[$crate::quant::act_q8::BlockQ8Act]) -> f32 {
            debug_assert_eq!(block.len(), BLOCK_BYTES);
            debug_assert_eq!(act.len(), BLOCK_ELEMS / $crate::quant::act_q8::QK8);
            super::dot_q8_affine(block, act, quant)
        }

        #[cfg(test)]
        mod affine_format_tests {
            use super::*;
            use $crate::quant::act_q8::testutil::*;

            #[test]
            fn sizes_match_format() {
                assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
                assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
            }

            #[test]
            fn special_blocks() {
                check_special_blocks(quantize_block, dequantize_block, BLOCK_BYTES, BLOCK_ELEMS);
            }

            #[test]
            fn decode_never_panics_any_bytes() {
                $crate::quant::gguf::testutil::decode_never_panics(
                    dequantize_block,
                    BLOCK_BYTES,
                    BLOCK_ELEMS,
                    &[OFF_D, OFF_M],
                );
            }

            #[test]
            fn dots_match_reference() {
                check_dots(
                    dequantize_block,
                    dot_f32,
                    dot_q8,
                    BLOCK_BYTES,
                    BLOCK_ELEMS,
                    &[OFF_D, OFF_M],
                );
            }

            #[test]
            fn spec_is_this_file() {
                match FORMAT.spec().gptq {
                    Some($crate::quant::gptq::GptqCode::Affine { qmax, .. }) => {
                        assert_eq!(qmax, QMAX)
                    }
                    _ => panic!("{} has no affine GPTQ hook", FORMAT.name()),
                }
            }
        }
    };
}
use affine_format;

/// Rewrites one block of a format into another's blocks (`block`, `out`).
pub type BlockRewrite = fn(&[u8], &mut [u8]);

/// The lossless rewrite of `format`'s blocks as ggml Q8_0 blocks, for the trellis formats
/// (each 64-weight block becomes two 34-byte Q8_0 blocks, see [`trellis::expand_q8_0`]).
pub fn q8_0_expansion(format: crate::format::Format) -> Option<BlockRewrite> {
    use crate::format::Format;
    match format {
        Format::TQ2 => Some(tq2::expand_q8_0),
        Format::TQ3 => Some(tq3::expand_q8_0),
        Format::TQ4 => Some(tq4::expand_q8_0),
        _ => None,
    }
}

/// A whole tensor in `format` rewritten as Q8_0 with the same values, block after block (rows
/// stay where they were: a row of `n` weights is `n / 32` Q8_0 blocks); `None` when `format`
/// has no such rewrite or `data` is not whole blocks.
pub fn expand_to_q8_0(format: crate::format::Format, data: &[u8]) -> Option<alloc::vec::Vec<u8>> {
    let expand = q8_0_expansion(format)?;
    let bytes = format.block_bytes();
    if !data.len().is_multiple_of(bytes) {
        return None;
    }
    let mut out = alloc::vec![0u8; data.len() / bytes * trellis::EXPANDED_BYTES];
    for (block, q8) in data
        .chunks_exact(bytes)
        .zip(out.chunks_exact_mut(trellis::EXPANDED_BYTES))
    {
        expand(block, q8);
    }
    Some(out)
}
