//! Vspec `TQ2`: 64 weights per block coded along a trellis at 2 bits per weight, one f16 scale.
//!
//! Block layout (18 bytes), **2.25 bits per weight** (18 × 8 / 64):
//!
//! | bytes     | field      | meaning                                                |
//! |-----------|------------|--------------------------------------------------------|
//! | 0..2      | `d`        | f16 little-endian scale                                |
//! | 2..18      | `qs[16]`  | a 128-bit stream, 2 bits per weight, little-endian      |
//!
//! Stream bit `k` is bit `k % 8` of `qs[k / 8]`; weight `i` adds bits `2i .. 2i+2`. Its state is
//! the 8-bit window of the stream ending there (bits `2i+2−8 .. 2i+2`, zeros before the stream),
//! `state(i) = state(i−1) >> 2 | b_i << 6`, and it decodes to `d * CODEBOOK[state(i)] as f32`
//! ([`super::trellis`] has the details and the encoder).
//!
//! Measured on N(0,1) data (mean squared error per weight, uniform weights, this file's test):
//! 0.0786 for TQ2, 0.1029 for VQ2 (uniform with a min) although VQ2 spends 2.5 bpw.

use super::trellis;
use crate::format::{Format, FormatSpec};
use crate::quant::gptq::{GptqCode, TrellisCode};

/// The format this file defines.
pub const FORMAT: Format = Format::TQ2;
/// Bits each weight adds to the stream.
pub const K: usize = 2;
/// Codebook units per standard deviation of the Gaussian it was trained for: a block of
/// `N(0, σ²)` weights codes best near `d = σ / UNIT`.
pub const UNIT: f32 = 43.44;
const _: () = assert!(BLOCK_BYTES == 18);

/// The value of each state, in units of `d`.
#[rustfmt::skip]
pub const CODEBOOK: [i8; trellis::STATES] = [
    -57, -15, -52, -95, -53, -14, 88, 40, 8, 115, 36, 25, -47, 11, -14, 70,
    87, 47, -11, 5, -4, -36, 22, -60, 22, 76, 43, -3, 44, -6, 13, 70,
    -18, 4, -16, 54, -57, -99, 71, 24, -10, 30, -35, -57, 29, 46, -76, -60,
    -48, -15, 38, 36, 17, -78, 61, 7, 68, -44, -13, -38, 91, -66, 34, 11,
    15, -58, 38, -4, 3, 15, 29, -19, 43, -18, -28, 79, -10, -27, -49, 9,
    25, -10, 22, -90, -43, 96, 54, -13, 57, -6, 12, -27, -68, -36, -18, 25,
    47, -35, 16, -31, 7, -27, 33, -6, -55, -26, 19, 26, -16, 18, 61, -35,
    52, -58, 100, 2, -71, -24, 25, -26, -27, 20, -48, 0, 12, -125, -33, -37,
    -11, 21, 9, 35, -19, -53, -39, 10, -42, 53, -69, -5, 9, -74, 21, 27,
    -82, -30, -48, 79, 38, 34, -32, 12, -25, -51, -74, 41, 4, -68, 43, -32,
    10, -80, 55, 23, 45, 2, -2, -46, 22, 76, -9, 59, 5, 83, 21, -6,
    16, 16, 3, -29, -29, 14, -18, 51, 10, 47, 48, 108, 48, -15, 4, -6,
    56, 71, -14, -34, 34, 51, -91, -49, -12, 16, 6, -40, 45, 60, -91, -29,
    -19, 15, 62, -44, -101, 0, -2, 59, 4, 31, -25, -70, -25, 33, 127, -3,
    -48, 35, -42, -2, -21, -58, -35, -114, 60, 4, 80, -9, -55, 9, -17, 38,
    -8, 47, -32, -70, -24, 24, -4, 60, -78, -12, 10, 27, -25, -35, 81, 48,
];

trellis::trellis_format!();

/// What the runtime knows about TQ2 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "TQ2",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: None,
    decode: dequantize_block,
    dot_f32: Some(dot_f32),
    dot_q8: Some(dot_q8),
    quantize: Some(quantize_block_weighted),
    gptq: Some(GptqCode::Trellis(TrellisCode::of::<K>(&CODEBOOK))),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::act_q8::testutil::*;
    use trellis::testutil::*;

    #[test]
    fn round_trip_rmse() {
        check_round_trip(
            quantize_block,
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            0.36,
        );
    }

    #[test]
    fn beats_the_scalar_format_on_gaussian_weights() {
        use super::super::vq2;
        let ours = gaussian_mse(quantize_block_weighted, dequantize_block, BLOCK_BYTES);
        let other = gaussian_mse(
            vq2::quantize_block_weighted,
            vq2::dequantize_block,
            vq2::BLOCK_BYTES,
        );
        std::println!("mse TQ2 {ours:.5}, VQ2 {other:.5}");
        assert!(ours < 0.85 * other, "TQ2 {ours}, VQ2 {other}");
    }
}
