//! Vspec `TQ3`: 64 weights per block coded along a trellis at 3 bits per weight, one f16 scale.
//!
//! Block layout (26 bytes), **3.25 bits per weight** (26 × 8 / 64):
//!
//! | bytes     | field      | meaning                                                |
//! |-----------|------------|--------------------------------------------------------|
//! | 0..2      | `d`        | f16 little-endian scale                                |
//! | 2..26      | `qs[24]`  | a 192-bit stream, 3 bits per weight, little-endian      |
//!
//! Stream bit `k` is bit `k % 8` of `qs[k / 8]`; weight `i` adds bits `3i .. 3i+3`. Its state is
//! the 8-bit window of the stream ending there (bits `3i+3−8 .. 3i+3`, zeros before the stream),
//! `state(i) = state(i−1) >> 3 | b_i << 5`, and it decodes to `d * CODEBOOK[state(i)] as f32`
//! ([`super::trellis`] has the details and the encoder).
//!
//! Measured on N(0,1) data (mean squared error per weight, uniform weights, this file's test):
//! 0.0214 for TQ3, 0.0286 for NQ3 (Lloyd–Max levels, same 3.25 bpw).

use super::trellis;
use crate::format::{Format, FormatSpec};
use crate::quant::gptq::{GptqCode, TrellisCode};

/// The format this file defines.
pub const FORMAT: Format = Format::TQ3;
/// Bits each weight adds to the stream.
pub const K: usize = 3;
/// Codebook units per standard deviation of the Gaussian it was trained for: a block of
/// `N(0, σ²)` weights codes best near `d = σ / UNIT`.
pub const UNIT: f32 = 37.85;
const _: () = assert!(BLOCK_BYTES == 26);

/// The value of each state, in units of `d`.
#[rustfmt::skip]
pub const CODEBOOK: [i8; trellis::STATES] = [
    17, 47, 2, -66, -34, -21, -43, -103, -30, 81, 44, -1, 10, 26, -80, -17,
    19, 53, -39, 16, -5, 39, -66, 5, 5, -18, -11, -5, 26, 7, -24, -45,
    -28, 11, 36, 66, -12, -44, -65, -19, 107, -3, 66, -48, 42, -1, 15, 29,
    -79, -30, 16, 34, 55, -9, -48, -28, 40, 89, -2, -38, -58, 58, -9, 11,
    3, 23, 20, 36, 3, -10, -25, -47, 65, 13, -15, 46, -3, -55, -49, -33,
    -32, -13, 32, 3, -62, 59, 12, -19, 67, 11, 23, -63, 41, -23, 53, -15,
    -12, 30, -31, -2, 13, 45, 3, 37, 87, 44, 21, 8, 56, -28, 31, -10,
    38, 32, 5, 125, -19, 7, -6, -43, -38, 45, -26, 73, 10, -7, 24, -58,
    38, 70, -17, 21, 53, 4, 14, -33, -3, -75, -27, -109, 25, -39, -15, -53,
    1, 18, 53, -83, -43, 29, -19, 21, 29, -26, 56, 10, -16, -57, -36, -2,
    68, 2, 12, -40, 38, -127, 26, -7, 36, 28, 3, -30, -56, -14, 58, 14,
    -50, 7, -19, -7, 27, -31, 25, 45, -90, -56, 82, 29, 89, 17, -68, -28,
    -82, -11, -46, -23, 24, 63, -9, -63, 49, -19, -52, 25, -20, -95, -33, 3,
    67, 0, 94, -19, -27, 16, -36, -7, -13, -43, 36, 51, -29, -38, -94, 23,
    -48, -68, -8, 49, 72, 24, 42, 11, 16, -42, 101, -15, 79, -72, 2, 53,
    -16, 73, -5, -36, 10, -68, 41, -58, 17, -5, 9, -21, -3, 35, -49, -79,
];

trellis::trellis_format!();

/// What the runtime knows about TQ3 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "TQ3",
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
            0.19,
        );
    }

    #[test]
    fn beats_the_scalar_format_on_gaussian_weights() {
        use super::super::nq3;
        let ours = gaussian_mse(quantize_block_weighted, dequantize_block, BLOCK_BYTES);
        let other = gaussian_mse(
            nq3::quantize_block_weighted,
            nq3::dequantize_block,
            nq3::BLOCK_BYTES,
        );
        std::println!("mse TQ3 {ours:.5}, NQ3 {other:.5}");
        assert!(ours < 0.85 * other, "TQ3 {ours}, NQ3 {other}");
    }
}
