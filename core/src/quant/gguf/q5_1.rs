//! ggml `Q5_1`: 32 weights per block, asymmetric 5-bit with an f16 scale and an f16 min.
//!
//! Block layout (24 bytes, ggml-common.h `block_q5_1`), **6.0 bits per weight** (24 × 8 / 32):
//!
//! | bytes   | field     | meaning                                   |
//! |---------|-----------|-------------------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale                   |
//! | 2..4    | `m`       | f16 little-endian min                     |
//! | 4..8    | `qh`      | u32 little-endian: bit `i` = bit 4 of q_i |
//! | 8..24   | `qs[16]`  | low 4 bits of the quants, two per byte    |
//!
//! Element `i < 16`: low nibble of byte `8 + i`; element `i >= 16`: high nibble of byte
//! `8 + i - 16`. Bit 4 of element `i` is bit `i % 8` of byte `4 + i / 8`.
//! Value: `d * q + m`, two f32 roundings (no fused multiply-add).

use super::{f16_at, put_f16};
use crate::format::{Format, FormatSpec};
use crate::quant::search;

/// The format this file defines.
pub const FORMAT: Format = Format::Q5_1;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 24;
const OFF_D: usize = 0;
const OFF_M: usize = 2;
const OFF_QH: usize = 4;
const OFF_QS: usize = 8;
const _: () = assert!(OFF_QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// Decode one block: `out[i] = d * q[i] + m`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let qh = u32::from_le_bytes([
        block[OFF_QH],
        block[OFF_QH + 1],
        block[OFF_QH + 2],
        block[OFF_QH + 3],
    ]);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        lo[j] = d * ((b & 0x0F) as u32 | h0) as f32 + m;
        hi[j] = d * ((b >> 4) as u32 | h1) as f32 + m;
    }
}

/// ggml's reference quantizer (`quantize_row_q5_1_ref`): `d = (max - min) / 31`, `m = min`,
/// `q = trunc((x - min) / d + 0.5)` (clamped to 31 so that no input can overflow the 5 bits).
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, OFF_D, d);
    put_f16(out, OFF_M, min);
    let q = |v: f32| (((v - min) * id + 0.5) as u8).min(31) as u32;
    let mut qh = 0u32;
    for j in 0..16 {
        let (q0, q1) = (q(x[j]), q(x[j + 16]));
        out[OFF_QS + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
        qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
    }
    out[OFF_QH..OFF_QH + 4].copy_from_slice(&qh.to_le_bytes());
}

/// Quantize one block with importance weights `w` by the scale-and-min search of
/// [`search::fit_affine`] (5-bit quants 0..=31).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let mut q = [0u8; BLOCK_ELEMS];
    let (d, m) = search::fit_affine(x, w, 31, &mut q);
    put_f16(out, OFF_D, d);
    put_f16(out, OFF_M, m);
    pack5(&q, out);
}

/// Stores 32 five-bit quants: low nibbles in `qs` (element j < 16 in byte j's low nibble, j ≥ 16
/// in byte j−16's high nibble), fifth bits in `qh` (bit j for element j).
fn pack5(q: &[u8; BLOCK_ELEMS], out: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (q0, q1) = (q[j] as u32, q[j + 16] as u32);
        out[OFF_QS + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
        qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
    }
    out[OFF_QH..OFF_QH + 4].copy_from_slice(&qh.to_le_bytes());
}

/// What the runtime knows about Q5_1 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q5_1",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(7),
    decode: dequantize_block,
    dot_f32: None,
    dot_q8: None,
    quantize: Some(quantize_block_weighted),
    gptq: None,
};

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn sizes_match_format() {
        assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
        assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
        assert_eq!(FORMAT.bits_per_weight(), 6.0);
    }

    #[test]
    fn layout_matches_doc() {
        let mut rng = Rng::new(3);
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [0f32; BLOCK_ELEMS];
        for _ in 0..100 {
            rng.fill_bytes(&mut b);
            put_f16(&mut b, OFF_D, rng.normal());
            put_f16(&mut b, OFF_M, rng.normal());
            dequantize_block(&b, &mut y);
            let (d, m) = (f16_at(&b, 0), f16_at(&b, 2));
            for (i, &v) in y.iter().enumerate() {
                let byte = b[8 + i % 16];
                let lo = if i < 16 { byte & 15 } else { byte >> 4 };
                let hbit = (b[4 + i / 8] >> (i % 8)) & 1;
                let q = lo | (hbit << 4);
                assert_eq!(v.to_bits(), (d * q as f32 + m).to_bits());
            }
        }
    }

    #[test]
    fn round_trip_rmse() {
        let x = Rng::new(1).normals(BLOCK_ELEMS * 256);
        let y = round_trip(
            quantize_block,
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &x,
        );
        let e = rel_rmse(&x, &y);
        // Measured 0.0374 on these 8192 N(0,1) values; the budget leaves ~10% of slack.
        assert!(e < 0.041, "rel rmse {e}");
    }

    #[test]
    fn special_blocks() {
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [1f32; BLOCK_ELEMS];
        quantize_block(&[0.0; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        quantize_block(&[-2.5; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == -2.5));
        let x: [f32; BLOCK_ELEMS] =
            core::array::from_fn(|i| if i % 2 == 0 { 3.0e4 } else { -3.0e4 });
        quantize_block(&x, &mut b);
        dequantize_block(&b, &mut y);
        assert!(rel_rmse(&x, &y) < 1e-3);
        let mut x = [1.0f32; BLOCK_ELEMS];
        x[3] = f32::NAN;
        x[5] = f32::NEG_INFINITY;
        quantize_block(&x, &mut b);
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        decode_never_panics(dequantize_block, BLOCK_BYTES, BLOCK_ELEMS, &[OFF_D, OFF_M]);
    }
}
