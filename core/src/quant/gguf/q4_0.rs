//! ggml `Q4_0`: 32 weights per block, symmetric 4-bit with one f16 scale.
//!
//! Block layout (18 bytes, ggml-common.h `block_q4_0`), **4.5 bits per weight** (18 × 8 / 32):
//!
//! | bytes   | field     | meaning                          |
//! |---------|-----------|----------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale          |
//! | 2..18   | `qs[16]`  | 4-bit quants, two per byte       |
//!
//! Element `i < 16` is the low nibble (bits 0..4) of byte `2 + i`; element `i >= 16` is the high
//! nibble (bits 4..8) of byte `2 + i - 16`. Value: `(q - 8) as f32 * d`, in f32.

use super::{f16_at, put_f16};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::{isum32, BlockQ8Act};
use crate::quant::search;

/// The format this file defines.
pub const FORMAT: Format = Format::Q4_0;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;
const OFF_D: usize = 0;
const OFF_QS: usize = 2;
const _: () = assert!(OFF_QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// Decode one block: `out[i] = (q[i] - 8) * d`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        lo[j] = ((b & 0x0F) as i32 - 8) as f32 * d;
        hi[j] = ((b >> 4) as i32 - 8) as f32 * d;
    }
}

/// ggml's reference quantizer (`quantize_row_q4_0_ref`): `d = max / -8` where `max` is the
/// signed value of largest magnitude (first one on ties), `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, OFF_D, d);
    // `as i8` truncates toward zero and saturates (NaN gives 0), like ggml's `(int8_t)` cast on
    // the values ggml can produce; the clamp keeps any input in 0..=15.
    let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
    for j in 0..16 {
        out[OFF_QS + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Quantize one block with importance weights `w`: the scale search of
/// [`search::fit_symmetric`] over `q - 8 ∈ -8..=7` (never worse than [`quantize_block`] in the
/// weighted error).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let mut q = [0i8; BLOCK_ELEMS];
    let d = search::fit_symmetric(x, w, -8, 7, &mut q);
    put_f16(out, OFF_D, d);
    let u = |v: i8| (v + 8) as u8 & 0x0F;
    for j in 0..16 {
        out[OFF_QS + j] = u(q[j]) | (u(q[j + 16]) << 4);
    }
}

/// Reference dot product with 32 f32 values: `d · Σ (q - 8)·x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let mut s = 0f32;
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        s += ((b & 0x0F) as i32 - 8) as f32 * x[j] + ((b >> 4) as i32 - 8) as f32 * x[j + 16];
    }
    d * s
}

/// Reference dot product with one 8-bit activation block: `d · da · Σ (q - 8)·qa`, in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(act.len(), 1);
    let d = f16_at(block, OFF_D);
    let a = &act[0];
    let q = |i: usize| ((block[OFF_QS + i % 16] >> (4 * (i / 16))) & 0x0F) as i32 - 8;
    let isum = isum32(&a.qs, (0..BLOCK_ELEMS).map(q));
    d * a.d * isum as f32
}

/// What the runtime knows about Q4_0 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q4_0",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(2),
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
        assert_eq!(FORMAT.bits_per_weight(), 4.5);
    }

    #[test]
    fn layout_matches_doc() {
        let mut rng = Rng::new(3);
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [0f32; BLOCK_ELEMS];
        for _ in 0..100 {
            rng.fill_bytes(&mut b);
            put_f16(&mut b, OFF_D, rng.normal());
            dequantize_block(&b, &mut y);
            let d = f16_at(&b, 0);
            for (i, &v) in y.iter().enumerate() {
                let byte = b[2 + i % 16];
                let q = if i < 16 { byte & 15 } else { byte >> 4 };
                assert_eq!(v.to_bits(), ((q as f32 - 8.0) * d).to_bits());
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
        // Measured 0.0844 on these 8192 N(0,1) values; the budget leaves ~10% of slack.
        assert!(e < 0.092, "rel rmse {e}");
    }

    #[test]
    fn special_blocks() {
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [1f32; BLOCK_ELEMS];
        quantize_block(&[0.0; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        // Constant block: d = -c/8, every quant 0, decodes to -8 * d = c.
        quantize_block(&[0.75; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.75));
        let x: [f32; BLOCK_ELEMS] =
            core::array::from_fn(|i| if i % 2 == 0 { 6.0e4 } else { -6.0e4 });
        quantize_block(&x, &mut b);
        dequantize_block(&b, &mut y);
        // max = +6e4 -> q = 0 gives +6e4 exactly (to f16); -6e4 -> q = 15 gives 7/8 of it.
        assert!(y.iter().all(|v| v.is_finite()));
        assert!(rel_rmse(&x, &y) < 0.1);
        // Non-finite input must not panic.
        let mut x = [1.0f32; BLOCK_ELEMS];
        x[3] = f32::NAN;
        x[5] = f32::INFINITY;
        quantize_block(&x, &mut b);
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        decode_never_panics(dequantize_block, BLOCK_BYTES, BLOCK_ELEMS, &[OFF_D]);
    }

    #[test]
    fn dots_match_reference() {
        crate::quant::act_q8::testutil::check_dots(
            dequantize_block,
            dot_f32,
            dot_q8,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D],
        );
    }
}
