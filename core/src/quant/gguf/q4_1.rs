//! ggml `Q4_1`: 32 weights per block, asymmetric 4-bit with an f16 scale and an f16 min.
//!
//! Block layout (20 bytes, ggml-common.h `block_q4_1`), **5.0 bits per weight** (20 × 8 / 32):
//!
//! | bytes   | field     | meaning                          |
//! |---------|-----------|----------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale          |
//! | 2..4    | `m`       | f16 little-endian min            |
//! | 4..20   | `qs[16]`  | 4-bit quants, two per byte       |
//!
//! Element `i < 16` is the low nibble of byte `4 + i`; element `i >= 16` is the high nibble of
//! byte `4 + i - 16`. Value: `d * q + m`, two f32 roundings (no fused multiply-add).

use super::{f16_at, put_f16};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::{isum32, BlockQ8Act};
use crate::quant::search;

/// The format this file defines.
pub const FORMAT: Format = Format::Q4_1;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 20;
const OFF_D: usize = 0;
const OFF_M: usize = 2;
const OFF_QS: usize = 4;
const _: () = assert!(OFF_QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// Decode one block: `out[i] = d * q[i] + m`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        lo[j] = d * (b & 0x0F) as f32 + m;
        hi[j] = d * (b >> 4) as f32 + m;
    }
}

/// ggml's reference quantizer (`quantize_row_q4_1_ref`): `d = (max - min) / 15`, `m = min`,
/// `q = min(15, trunc((x - min) / d + 0.5))`.
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
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, OFF_D, d);
    put_f16(out, OFF_M, min);
    let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
    for j in 0..16 {
        out[OFF_QS + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Quantize one block with importance weights `w`: the scale-and-min search of
/// [`search::fit_affine`] (never worse than [`quantize_block`] in the weighted error, and lossless
/// on values that already lie on a Q4_1 grid using quants 0 and 15).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let mut q = [0u8; BLOCK_ELEMS];
    let (d, m) = search::fit_affine(x, w, 15, &mut q);
    put_f16(out, OFF_D, d);
    put_f16(out, OFF_M, m);
    for j in 0..16 {
        out[OFF_QS + j] = q[j] | (q[j + 16] << 4);
    }
}

/// Reference dot product with 32 f32 values: `d · Σ q·x + m · Σ x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let (mut sqx, mut sx) = (0f32, 0f32);
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        sqx += (b & 0x0F) as f32 * x[j] + (b >> 4) as f32 * x[j + 16];
        sx += x[j] + x[j + 16];
    }
    d * sqx + m * sx
}

/// Reference dot product with one 8-bit activation block: `da · (d · Σ q·qa + m · sum)`, the inner
/// sum in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(act.len(), 1);
    let d = f16_at(block, OFF_D);
    let m = f16_at(block, OFF_M);
    let a = &act[0];
    let q = |i: usize| ((block[OFF_QS + i % 16] >> (4 * (i / 16))) & 0x0F) as i32;
    let isum = isum32(&a.qs, (0..BLOCK_ELEMS).map(q));
    a.d * (d * isum as f32 + m * a.sum as f32)
}

/// What the runtime knows about Q4_1 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q4_1",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(3),
    decode: dequantize_block,
    dot_f32: Some(dot_f32),
    dot_q8: Some(dot_q8),
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
        assert_eq!(FORMAT.bits_per_weight(), 5.0);
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
                let byte = b[4 + i % 16];
                let q = if i < 16 { byte & 15 } else { byte >> 4 };
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
        // Measured 0.0778 on these 8192 N(0,1) values; the budget leaves ~10% of slack.
        assert!(e < 0.085, "rel rmse {e}");
    }

    #[test]
    fn special_blocks() {
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [1f32; BLOCK_ELEMS];
        quantize_block(&[0.0; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        // Constant block: d = 0, the min carries the value.
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

    #[test]
    fn dots_match_reference() {
        crate::quant::act_q8::testutil::check_dots(
            dequantize_block,
            dot_f32,
            dot_q8,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D, OFF_M],
        );
    }
}
