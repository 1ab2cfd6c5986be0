//! Vspec `TQ4`: 64 weights per block coded along a trellis at 4 bits per weight, one f16 scale.
//!
//! Block layout (34 bytes), **4.25 bits per weight** (34 × 8 / 64):
//!
//! | bytes     | field      | meaning                                                |
//! |-----------|------------|--------------------------------------------------------|
//! | 0..2      | `d`        | f16 little-endian scale                                |
//! | 2..34      | `qs[32]`  | a 256-bit stream, 4 bits per weight, little-endian      |
//!
//! Stream bit `k` is bit `k % 8` of `qs[k / 8]`; weight `i` adds bits `4i .. 4i+4`. Its state is
//! the 8-bit window of the stream ending there (bits `4i+4−8 .. 4i+4`, zeros before the stream),
//! `state(i) = state(i−1) >> 4 | b_i << 4`, and it decodes to `d * CODEBOOK[state(i)] as f32`
//! ([`super::trellis`] has the details and the encoder).
//!
//! Measured on N(0,1) data (mean squared error per weight, uniform weights, this file's test):
//! 0.0057 for TQ4, 0.0062 for VQ4 (uniform with a min) although VQ4 spends 4.5 bpw.

use super::trellis;
use crate::format::Format;
use crate::quant::act_q8::BlockQ8Act;
use crate::quant::search;

/// The format this file defines.
pub const FORMAT: Format = Format::TQ4;
/// Weights per block.
pub const BLOCK_ELEMS: usize = trellis::BLOCK_ELEMS;
/// Bytes per block.
pub const BLOCK_BYTES: usize = trellis::block_bytes(K);
/// Bits each weight adds to the stream.
pub const K: usize = 4;
/// Codebook units per standard deviation of the Gaussian it was trained for: a block of
/// `N(0, σ²)` weights codes best near `d = σ / UNIT`.
pub const UNIT: f32 = 35.71;
const _: () = assert!(BLOCK_BYTES == 34);

/// The value of each state, in units of `d`.
#[rustfmt::skip]
pub const CODEBOOK: [i8; trellis::STATES] = [
    41, -12, 0, 20, 19, -6, 7, -50, 11, -44, 43, -25, -18, 27, -8, 60,
    78, 44, 12, 35, -3, -28, -10, -67, 28, -55, -73, -44, 6, 18, -18, -35,
    -11, -78, -19, -5, -108, -51, 16, 8, 1, 15, -38, 62, 1, -57, 21, 39,
    -27, 6, 37, -21, 25, 3, -40, 47, -52, -31, 20, 41, 16, -7, 11, 31,
    12, -37, 33, 27, 4, -21, 24, -59, -5, -69, -29, -13, 22, -44, 127, -54,
    2, 11, -62, -36, 77, -2, -17, 15, -20, -10, 31, 24, -46, -28, 45, -25,
    -51, -29, -126, 64, -10, 11, 37, 56, 4, -22, -101, 7, -56, 41, 1, 16,
    -19, 24, -12, 42, 32, -24, 0, -30, 55, -94, 66, 15, -4, 80, -3, 6,
    6, 58, 27, 9, 47, 16, -27, -39, -33, 22, -2, -17, -11, 33, -23, -46,
    -36, -47, 19, 3, -16, 95, 31, 66, -26, -16, 53, -58, 38, 10, 27, -5,
    -75, -3, 44, -15, 68, -42, -55, 24, -86, 11, -12, -33, 51, -22, 35, 51,
    26, 18, 6, 0, 9, 49, -78, -8, -16, -39, -61, -1, -25, -34, -12, 110,
    54, 31, -42, 82, 39, -33, 59, -18, 18, -5, -50, -88, -35, -71, -61, 71,
    19, 2, -7, 51, 13, -16, 71, -1, -41, 7, -83, -8, -67, 1, -30, 87,
    33, 72, -25, 13, -32, 24, 89, 37, -8, 2, -21, 49, 28, -14, -40, -14,
    -3, -21, -32, -9, 59, -12, 46, 99, -65, 31, 7, 35, 13, 53, -47, 23,
];

/// Decode one block: `out[i] = d * CODEBOOK[state(i)]`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    trellis::decode::<K>(&CODEBOOK, block, out);
}

/// Store `d` and the 4-bit symbols `sym` as one block.
pub fn pack(d: f32, sym: &[u8], out: &mut [u8]) {
    trellis::pack::<K>(d, sym, out);
}

/// Quantize one block with importance weights `w` ([`trellis::quantize`]).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    trellis::quantize::<K>(&CODEBOOK, UNIT, x, w, out);
}

/// Quantize one block with the default weights of [`search::default_weights`].
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut w = [0f32; BLOCK_ELEMS];
    search::default_weights(x, &mut w);
    quantize_block_weighted(x, &w, out);
}

/// Reference dot product with 64 f32 values: `d · Σ CODEBOOK[state(i)]·x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    trellis::dot_f32::<K>(&CODEBOOK, block, x)
}

/// Reference dot product with two 8-bit activation blocks: `d · Σₛ daₛ · Σ CODEBOOK[state]·qa`,
/// the inner sums in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    trellis::dot_q8::<K>(&CODEBOOK, block, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::act_q8::testutil::*;
    use trellis::testutil::*;

    #[test]
    fn sizes_match_format() {
        assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
        assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
        assert_eq!(FORMAT.bits_per_weight(), 4.25);
    }

    #[test]
    fn layout_matches_doc() {
        check_layout::<K>(&CODEBOOK);
    }

    #[test]
    fn viterbi_is_optimal_on_short_blocks() {
        check_viterbi_optimal::<K>(&CODEBOOK);
    }

    #[test]
    fn round_trip_rmse() {
        check_round_trip(
            quantize_block,
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            0.10,
        );
    }

    #[test]
    fn beats_the_scalar_format_on_gaussian_weights() {
        let ours = gaussian_mse(quantize_block_weighted, dequantize_block, BLOCK_BYTES);
        let other = gaussian_mse(
            super::super::vq4::quantize_block_weighted,
            super::super::vq4::dequantize_block,
            super::super::vq4::BLOCK_BYTES,
        );
        std::println!("mse TQ4 {ours:.5}, VQ4 {other:.5}");
        assert!(ours < 0.95 * other, "TQ4 {ours}, VQ4 {other}");
    }

    #[test]
    fn special_blocks() {
        check_codebook_special_blocks(quantize_block, dequantize_block, BLOCK_BYTES, BLOCK_ELEMS);
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        crate::quant::gguf::testutil::decode_never_panics(
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[trellis::OFF_D],
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
            &[trellis::OFF_D],
        );
    }
}
