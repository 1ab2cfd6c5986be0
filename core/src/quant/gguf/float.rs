//! Plain float formats `F32`, `F16` and `BF16`: blocks of one element, little-endian.
//!
//! | format | block bytes | bits per weight | element 0                                 |
//! |--------|-------------|-----------------|-------------------------------------------|
//! | F32    | 4           | 32              | IEEE binary32, bytes 0..4 LE               |
//! | F16    | 2           | 16              | IEEE binary16, bytes 0..2 LE, widened exactly |
//! | BF16   | 2           | 16              | bfloat16, bytes 0..2 LE: the top 16 bits of an f32 |
//!
//! Widening is exact for every finite value, subnormals and infinities included. NaNs: BF16 keeps
//! the payload bit for bit (`bits << 16`, like ggml's `GGML_BF16_TO_FP32` and gguf-py); F16 goes
//! through `half`, which, like x86 F16C and ggml, sets the quiet bit of a signalling NaN (numpy
//! may keep it clear; either way the result is a NaN).

use crate::format::{Format, FormatSpec};
use half::f16;

/// Bytes of one F32 block.
pub const F32_BLOCK_BYTES: usize = 4;
/// Bytes of one F16 block.
pub const F16_BLOCK_BYTES: usize = 2;
/// Bytes of one BF16 block.
pub const BF16_BLOCK_BYTES: usize = 2;
/// Elements per block of every float format.
pub const BLOCK_ELEMS: usize = 1;

/// Decode F32 blocks (any whole number of them).
pub fn dequantize_f32(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), F32_BLOCK_BYTES * out.len());
    for (o, b) in out.iter_mut().zip(block.chunks_exact(F32_BLOCK_BYTES)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Decode F16 blocks (any whole number of them).
pub fn dequantize_f16(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), F16_BLOCK_BYTES * out.len());
    for (o, b) in out.iter_mut().zip(block.chunks_exact(F16_BLOCK_BYTES)) {
        *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

/// Decode BF16 blocks (any whole number of them): the 16 bits become the top half of an f32.
pub fn dequantize_bf16(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BF16_BLOCK_BYTES * out.len());
    for (o, b) in out.iter_mut().zip(block.chunks_exact(BF16_BLOCK_BYTES)) {
        *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}

/// Block bytes of the float `format`, `None` for packed formats.
pub fn block_bytes(format: Format) -> Option<usize> {
    match format {
        Format::F32 => Some(F32_BLOCK_BYTES),
        Format::F16 => Some(F16_BLOCK_BYTES),
        Format::BF16 => Some(BF16_BLOCK_BYTES),
        _ => None,
    }
}

/// Store `x` as F32 blocks (any whole number of them); the weights are ignored (storing is exact).
pub fn quantize_f32(x: &[f32], _w: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(F32_BLOCK_BYTES).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Store `x` as F16 blocks (any whole number of them), rounding to nearest even and saturating
/// finite values beyond ±65504 to ±65504; the weights are ignored.
pub fn quantize_f16(x: &[f32], _w: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(F16_BLOCK_BYTES).zip(x) {
        let h = f16::from_f32(v.clamp(-65504.0, 65504.0));
        o.copy_from_slice(&h.to_bits().to_le_bytes());
    }
}

/// Store `x` as BF16 blocks (any whole number of them), rounding to nearest even and saturating
/// to the largest finite bfloat16; the weights are ignored.
pub fn quantize_bf16(x: &[f32], _w: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(BF16_BLOCK_BYTES).zip(x) {
        let mut h = half::bf16::from_f32(v);
        if h.is_infinite() {
            h = if v > 0.0 {
                half::bf16::MAX
            } else {
                half::bf16::MIN
            };
        }
        o.copy_from_slice(&h.to_bits().to_le_bytes());
    }
}

/// F32: what a float format has is its decoder and its (exact) store; no reference dots.
pub const F32_SPEC: FormatSpec = FormatSpec {
    format: Format::F32,
    name: "F32",
    block_elems: BLOCK_ELEMS,
    block_bytes: F32_BLOCK_BYTES,
    ggml_type: Some(0),
    decode: dequantize_f32,
    dot_f32: None,
    dot_q8: None,
    quantize: Some(quantize_f32),
    gptq: None,
};

/// F16.
pub const F16_SPEC: FormatSpec = FormatSpec {
    format: Format::F16,
    name: "F16",
    block_elems: BLOCK_ELEMS,
    block_bytes: F16_BLOCK_BYTES,
    ggml_type: Some(1),
    decode: dequantize_f16,
    dot_f32: None,
    dot_q8: None,
    quantize: Some(quantize_f16),
    gptq: None,
};

/// BF16.
pub const BF16_SPEC: FormatSpec = FormatSpec {
    format: Format::BF16,
    name: "BF16",
    block_elems: BLOCK_ELEMS,
    block_bytes: BF16_BLOCK_BYTES,
    ggml_type: Some(30),
    decode: dequantize_bf16,
    dot_f32: None,
    dot_q8: None,
    quantize: Some(quantize_bf16),
    gptq: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn sizes_match_format() {
        for f in [Format::F32, Format::F16, Format::BF16] {
            assert_eq!(block_bytes(f), Some(f.block_bytes()));
            assert_eq!(f.block_elems(), BLOCK_ELEMS);
        }
        assert_eq!(block_bytes(Format::Q4_0), None);
    }

    #[test]
    fn f32_bits_pass_through() {
        let vals = [
            0.0f32,
            -0.0,
            1.5,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.extend_from_slice(&0x7FA0_0001u32.to_le_bytes()); // signalling NaN
        let mut out = vec![0f32; vals.len() + 1];
        dequantize_f32(&bytes, &mut out);
        for (v, o) in vals.iter().zip(&out) {
            assert_eq!(v.to_bits(), o.to_bits());
        }
        assert_eq!(out[vals.len()].to_bits(), 0x7FA0_0001);
    }

    #[test]
    fn f16_edge_values() {
        let cases: [(u16, f32); 9] = [
            (0x0000, 0.0),
            (0x8000, -0.0),
            (0x3C00, 1.0),
            (0xC000, -2.0),
            (0x7BFF, 65504.0),
            (0x0001, 1.0 / 16_777_216.0),    // smallest subnormal, 2^-24
            (0x03FF, 1023.0 / 16_777_216.0), // largest subnormal
            (0x7C00, f32::INFINITY),
            (0xFC00, f32::NEG_INFINITY),
        ];
        let mut out = [0f32; 1];
        for (bits, want) in cases {
            dequantize_f16(&bits.to_le_bytes(), &mut out);
            assert_eq!(out[0].to_bits(), want.to_bits(), "{bits:#06x}");
        }
        for bits in [0x7E00u16, 0x7C01, 0xFFFF, 0x7FFF] {
            dequantize_f16(&bits.to_le_bytes(), &mut out);
            assert!(out[0].is_nan(), "{bits:#06x}");
        }
        // Every f16 widens exactly: round trip through half's narrowing is the identity.
        for bits in 0..=u16::MAX {
            dequantize_f16(&bits.to_le_bytes(), &mut out);
            if !out[0].is_nan() {
                assert_eq!(f16::from_f32(out[0]).to_bits(), bits);
            }
        }
    }

    #[test]
    fn bf16_edge_values() {
        let mut out = [0f32; 1];
        for bits in 0..=u16::MAX {
            dequantize_bf16(&bits.to_le_bytes(), &mut out);
            assert_eq!(out[0].to_bits(), (bits as u32) << 16, "{bits:#06x}");
        }
        dequantize_bf16(&0x7F80u16.to_le_bytes(), &mut out);
        assert_eq!(out[0], f32::INFINITY);
        dequantize_bf16(&0x3F80u16.to_le_bytes(), &mut out);
        assert_eq!(out[0], 1.0);
        dequantize_bf16(&0x7F81u16.to_le_bytes(), &mut out);
        assert!(out[0].is_nan());
    }
}
