//! ggml `Q8_0`: 32 weights per block, symmetric 8-bit with one f16 scale.
//!
//! Block layout (34 bytes, ggml-common.h `block_q8_0`), **8.5 bits per weight** (34 × 8 / 32):
//!
//! | bytes   | field     | meaning                               |
//! |---------|-----------|---------------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale               |
//! | 2..34   | `qs[32]`  | i8 (two's complement) quants          |
//!
//! Element `i` is the whole byte `2 + i` read as `i8`; its value is `qs[i] as f32 * d` in f32.

use super::{f16_at, put_f16};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::{isum32, BlockQ8Act};
use crate::quant::search;

/// The format this file defines.
pub const FORMAT: Format = Format::Q8_0;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;
const OFF_D: usize = 0;
const OFF_QS: usize = 2;
const _: () = assert!(OFF_QS + BLOCK_ELEMS == BLOCK_BYTES);

/// Decode one block: `out[i] = qs[i] * d`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    for (o, &q) in out.iter_mut().zip(&block[OFF_QS..OFF_QS + BLOCK_ELEMS]) {
        *o = (q as i8) as f32 * d;
    }
}

/// C `roundf`: round half away from zero, for the range `|x| < 2^31` we need.
fn roundf(x: f32) -> f32 {
    let t = x as i32 as f32; // truncation toward zero (NaN gives 0)
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// ggml's reference quantizer (`quantize_row_q8_0_ref`): `d = amax / 127`, `q = roundf(x / d)`.
///
/// The quants use the f32 `d`; only the stored scale is rounded to f16, exactly as ggml does.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(out, OFF_D, d);
    for (q, &v) in out[OFF_QS..OFF_QS + BLOCK_ELEMS].iter_mut().zip(x) {
        *q = (roundf(v * id) as i8) as u8;
    }
}

/// Quantize one block with importance weights `w`: the scale search of
/// [`search::fit_symmetric`] over `q ∈ -127..=127` (never worse than [`quantize_block`] in the
/// weighted error).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let mut q = [0i8; BLOCK_ELEMS];
    let d = search::fit_symmetric(x, w, -127, 127, &mut q);
    put_f16(out, OFF_D, d);
    for (o, &qi) in out[OFF_QS..].iter_mut().zip(&q) {
        *o = qi as u8;
    }
}

/// Reference dot product with 32 f32 values: `d · Σ q·x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let s: f32 = block[OFF_QS..]
        .iter()
        .zip(x)
        .map(|(&q, &v)| (q as i8) as f32 * v)
        .sum();
    d * s
}

/// Reference dot product with one 8-bit activation block: `d · da · Σ q·qa`, the sum in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(act.len(), 1);
    let d = f16_at(block, OFF_D);
    let a = &act[0];
    let isum = isum32(&a.qs, block[OFF_QS..].iter().map(|&q| (q as i8) as i32));
    d * a.d * isum as f32
}

/// What the runtime knows about Q8_0 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q8_0",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(8),
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
        assert_eq!(FORMAT.bits_per_weight(), 8.5);
    }

    #[test]
    fn roundf_is_c_roundf() {
        for (x, r) in [
            (0.5f32, 1.0f32),
            (-0.5, -1.0),
            (1.5, 2.0),
            (2.5, 3.0),
            (0.49999997, 0.0),
            (-126.5, -127.0),
        ] {
            assert_eq!(roundf(x), r, "{x}");
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
        // Measured 0.00527 on these 8192 N(0,1) values; the budget leaves ~10% of slack.
        assert!(e < 0.0058, "rel rmse {e}");
    }

    #[test]
    fn special_blocks() {
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [1f32; BLOCK_ELEMS];
        quantize_block(&[0.0; BLOCK_ELEMS], &mut b);
        assert_eq!(b, [0u8; BLOCK_BYTES]);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        // Constant block: every quant is 127, value exact to f16 precision of d.
        quantize_block(&[0.375; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(b[OFF_QS..].iter().all(|&q| q == 127));
        assert!(y.iter().all(|&v| (v - 0.375).abs() < 0.375 / 1000.0));
        // ±max alternating: both signs hit ±127.
        let x: [f32; BLOCK_ELEMS] =
            core::array::from_fn(|i| if i % 2 == 0 { 3.0e4 } else { -3.0e4 });
        quantize_block(&x, &mut b);
        dequantize_block(&b, &mut y);
        assert!(rel_rmse(&x, &y) < 1e-3);
        // Exact multiples of a power-of-two scale round-trip exactly.
        let x: [f32; BLOCK_ELEMS] = core::array::from_fn(|i| (i as f32 * 8.0 - 127.0) / 64.0);
        quantize_block(&x, &mut b);
        dequantize_block(&b, &mut y);
        assert!(rel_rmse(&x, &y) < 1e-3);
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
