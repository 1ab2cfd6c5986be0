//! ggml `Q4_K`: 256-weight super-blocks of 8 sub-blocks of 32 weights; 4-bit quants with a 6-bit
//! scale and a 6-bit min per sub-block, and f16 super-scales for both.
//!
//! Block layout (144 bytes, ggml-common.h `block_q4_K`), **4.5 bits per weight** (144 × 8 / 256):
//!
//! | bytes   | field         | meaning                                         |
//! |---------|---------------|-------------------------------------------------|
//! | 0..2    | `d`           | f16 little-endian super-scale for the scales    |
//! | 2..4    | `dmin`        | f16 little-endian super-scale for the mins      |
//! | 4..16   | `scales[12]`  | eight 6-bit scales and eight 6-bit mins, packed |
//! | 16..144 | `qs[128]`     | 4-bit quants, two per byte                      |
//!
//! Element `i` (0..256): with `c = i / 64` and `w = i % 64`, the quant is the low nibble
//! (`w < 32`) or high nibble (`w >= 32`) of byte `16 + 32 * c + w % 32`; its sub-block is
//! `s = i / 32`.
//!
//! Scale and min of sub-block `s` (ggml `get_scale_min_k4`, see [`super::scale_min_k4`]), with
//! `p = scales`: for `s < 4`, scale = `p[s] & 63`, min = `p[s + 4] & 63`; for `s >= 4`,
//! scale = `(p[s + 4] & 15) | (p[s - 4] >> 6) << 4`, min = `(p[s + 4] >> 4) | (p[s] >> 6) << 4`.
//!
//! Value, in f32 with ggml's rounding order: `dl = d * scale`, `ml = dmin * min`, `dl * q - ml`.

use super::{dot_q8_superblock, f16_at, scale_min_k4, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::Q4_K;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 144;
const OFF_D: usize = 0;
const OFF_DMIN: usize = 2;
const OFF_SCALES: usize = 4;
const OFF_QS: usize = 16;
const _: () = assert!(OFF_QS + QK_K / 2 == BLOCK_BYTES);

/// Decode one super-block (ggml `dequantize_row_q4_K`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let dmin = f16_at(block, OFF_DMIN);
    let scales = &block[OFF_SCALES..OFF_SCALES + 12];
    for (s, y) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(s, scales);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        let q = &block[OFF_QS + 32 * (s / 2)..][..32];
        let shift = 4 * (s % 2);
        for (o, &b) in y.iter_mut().zip(q) {
            *o = dl * ((b >> shift) & 0x0F) as f32 - ml;
        }
    }
}

/// Reference dot product with the block's eight 8-bit activation blocks (one per sub-block):
/// per activation block `a`, `a.d · (d · sc · Σ q·qa − dmin · m · Σ qa)` with the sums in i32
/// (see [`super::dot_q8_superblock`]).
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    let scales = &block[OFF_SCALES..OFF_SCALES + 12];
    let quant = |i: usize| {
        let byte = block[OFF_QS + 32 * (i / 64) + i % 32];
        ((byte >> (4 * ((i / 32) % 2))) & 0x0F) as i32
    };
    let scale = |s: usize| scale_min_k4(s, scales).0 as i32;
    let min = |s: usize| scale_min_k4(s, scales).1 as i32;
    let (d, dmin) = (f16_at(block, OFF_D), f16_at(block, OFF_DMIN));
    dot_q8_superblock(act, 32, d, quant, scale, Some((dmin, &min)))
}

/// What the runtime knows about Q4_K (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q4_K",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(12),
    decode: dequantize_block,
    dot_f32: None,
    dot_q8: Some(dot_q8),
    quantize: None,
    gptq: None,
};

#[cfg(test)]
mod tests {
    use super::super::put_f16;
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
        for _ in 0..50 {
            rng.fill_bytes(&mut b);
            put_f16(&mut b, OFF_D, rng.normal());
            put_f16(&mut b, OFF_DMIN, rng.normal());
            dequantize_block(&b, &mut y);
            let (d, dmin) = (f16_at(&b, 0), f16_at(&b, 2));
            let p = &b[4..16];
            for (i, &v) in y.iter().enumerate() {
                let (c, w, s) = (i / 64, i % 64, i / 32);
                let byte = b[16 + 32 * c + w % 32];
                let q = if w < 32 { byte & 15 } else { byte >> 4 };
                let (sc, m) = if s < 4 {
                    (p[s] & 63, p[s + 4] & 63)
                } else {
                    (
                        (p[s + 4] & 15) | (p[s - 4] >> 6) << 4,
                        (p[s + 4] >> 4) | (p[s] >> 6) << 4,
                    )
                };
                let want = d * sc as f32 * q as f32 - dmin * m as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        // All bits set: scale 63, min 63, quant 15.
        let mut b = [0xFFu8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        put_f16(&mut b, OFF_DMIN, 0.25);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.5 * 63.0 * 15.0 - 0.25 * 63.0));
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        decode_never_panics(
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D, OFF_DMIN],
        );
    }

    #[test]
    fn dot_q8_matches_reference() {
        crate::quant::act_q8::testutil::check_dot_q8(
            dequantize_block,
            dot_q8,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D, OFF_DMIN],
        );
    }
}
