//! Vspec `VQ3`: 64 weights per block, asymmetric 3-bit with an f16 scale and an f16 min.
//!
//! Block layout (28 bytes), **3.5 bits per weight** (28 × 8 / 64):
//!
//! | bytes   | field     | meaning                               |
//! |---------|-----------|---------------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale               |
//! | 2..4    | `m`       | f16 little-endian min                 |
//! | 4..20   | `ql[16]`  | low 2 bits of each quant, four per byte |
//! | 20..28  | `qh[8]`   | high bit of each quant, eight per byte  |
//!
//! Element `i` (0..64): its low two bits are bits `2·(i/16) .. 2·(i/16)+2` of byte `4 + i % 16`,
//! its high bit is bit `i / 8` of byte `20 + i % 8`; `q = low | high << 2 ∈ 0..=7`. One 16-byte
//! load of `ql` gives 16 consecutive elements per shift, one 8-byte load of `qh` gives 8 per bit.
//! Value: `d * q + m`, two f32 roundings (no fused multiply-add).

use crate::format::{Format, FormatSpec};
use crate::quant::gguf::put_f16;
use crate::quant::gptq::GptqCode;

/// The format this file defines.
pub const FORMAT: Format = Format::VQ3;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 64;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 28;
/// Largest quant.
pub const QMAX: u8 = 7;
const OFF_D: usize = 0;
const OFF_M: usize = 2;
const OFF_QL: usize = 4;
const OFF_QH: usize = 20;
const _: () = assert!(OFF_QL + BLOCK_ELEMS / 4 == OFF_QH);
const _: () = assert!(OFF_QH + BLOCK_ELEMS / 8 == BLOCK_BYTES);

/// The quant of element `i`.
#[inline(always)]
fn quant(block: &[u8], i: usize) -> u8 {
    let lo = (block[OFF_QL + i % 16] >> (2 * (i / 16))) & 3;
    let hi = (block[OFF_QH + i % 8] >> (i / 8)) & 1;
    lo | (hi << 2)
}

/// Decode one block: `out[i] = d * q[i] + m`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    super::decode_affine(block, out, quant);
}

/// Store `d`, `m` and the quants `q` (each `<= 7`) as one block.
pub fn pack(d: f32, m: f32, q: &[u8], out: &mut [u8]) {
    debug_assert_eq!(q.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    put_f16(out, OFF_D, d);
    put_f16(out, OFF_M, m);
    out[OFF_QL..].iter_mut().for_each(|b| *b = 0);
    for (i, &qi) in q.iter().enumerate() {
        out[OFF_QL + i % 16] |= (qi & 3) << (2 * (i / 16));
        out[OFF_QH + i % 8] |= ((qi >> 2) & 1) << (i / 8);
    }
}

/// Reference dot product with 64 f32 values: `d · Σ q·x + m · Σ x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    super::dot_f32_affine(block, x, quant)
}

super::affine_format!();

/// What the runtime knows about VQ3 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "VQ3",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: None,
    decode: dequantize_block,
    dot_f32: Some(dot_f32),
    dot_q8: Some(dot_q8),
    quantize: Some(quantize_block_weighted),
    gptq: Some(GptqCode::Affine { qmax: QMAX, pack }),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::act_q8::testutil::*;

    #[test]
    fn bits_per_weight() {
        assert_eq!(FORMAT.bits_per_weight(), 3.5);
    }

    #[test]
    fn layout_matches_doc() {
        check_affine_layout(dequantize_block, pack, BLOCK_BYTES, QMAX, |b, i| {
            let lo = (b[4 + i % 16] >> (2 * (i / 16))) & 3;
            let hi = (b[20 + i % 8] >> (i / 8)) & 1;
            lo + 4 * hi
        });
    }

    #[test]
    fn round_trip_rmse() {
        // Measured 0.172 on these 16384 N(0,1) values (default weights); ~10% of slack.
        check_round_trip(
            quantize_block,
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            0.19,
        );
    }
}
