//! ggml `Q2_K`: 256-weight super-blocks of 16 sub-blocks of 16 weights; 2-bit quants with a 4-bit
//! scale and a 4-bit min per sub-block, and f16 super-scales for both.
//!
//! Block layout (84 bytes, ggml-common.h `block_q2_K`), **2.625 bits per weight** (84 × 8 / 256):
//!
//! | bytes   | field         | meaning                                             |
//! |---------|---------------|-----------------------------------------------------|
//! | 0..16   | `scales[16]`  | byte `s`: bits 0..4 scale, bits 4..8 min of sub-block `s` |
//! | 16..80  | `qs[64]`      | 2-bit quants, four per byte                         |
//! | 80..82  | `d`           | f16 little-endian super-scale for the scales        |
//! | 82..84  | `dmin`        | f16 little-endian super-scale for the mins          |
//!
//! Element `i` (0..256): its quant is bits `2k..2k+2`, with `k = (i / 32) % 4`, of byte
//! `16 + 32 * (i / 128) + i % 32`; its sub-block is `s = i / 16`. Value, in f32 with ggml's
//! rounding order: `dl = d * (scales[s] & 15)`, `ml = dmin * (scales[s] >> 4)`, `dl * q - ml`.

use super::{dot_q8_superblock, f16_at, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::Q2_K;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 84;
const OFF_SCALES: usize = 0;
const OFF_QS: usize = 16;
const OFF_D: usize = 80;
const OFF_DMIN: usize = 82;
const _: () = assert!(OFF_QS + QK_K / 4 == OFF_D && OFF_DMIN + 2 == BLOCK_BYTES);

/// Decode one super-block (ggml `dequantize_row_q2_K`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let dmin = f16_at(block, OFF_DMIN);
    let scales = &block[OFF_SCALES..OFF_SCALES + 16];
    for (s, (y, &sc)) in out.chunks_exact_mut(16).zip(scales).enumerate() {
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        // Sub-block s covers elements 16s..16s+16: half h = s / 8, shift pair k = (s / 2) % 4,
        // bytes 32h + 16(s % 2) .. +16 of qs.
        let q = &block[OFF_QS + 32 * (s / 8) + 16 * (s % 2)..][..16];
        let shift = 2 * ((s / 2) % 4);
        for (o, &b) in y.iter_mut().zip(q) {
            *o = dl * ((b >> shift) & 3) as f32 - ml;
        }
    }
}

/// Reference dot product with the block's eight 8-bit activation blocks: per activation block
/// `a`, `a.d · (d · Σ sc·q·qa − dmin · Σ m·qa)` with the sums in i32 (see
/// [`super::dot_q8_superblock`]).
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    let quant =
        |i: usize| ((block[OFF_QS + 32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3) as i32;
    let scale = |s: usize| (block[OFF_SCALES + s] & 0x0F) as i32;
    let min = |s: usize| (block[OFF_SCALES + s] >> 4) as i32;
    let (d, dmin) = (f16_at(block, OFF_D), f16_at(block, OFF_DMIN));
    dot_q8_superblock(act, 16, d, quant, scale, Some((dmin, &min)))
}

/// What the runtime knows about Q2_K (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q2_K",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(10),
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
        assert_eq!(FORMAT.bits_per_weight(), 2.625);
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
            let (d, dmin) = (f16_at(&b, 80), f16_at(&b, 82));
            for (i, &v) in y.iter().enumerate() {
                let q = (b[16 + 32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
                let sc = b[i / 16];
                let want = d * (sc & 15) as f32 * q as f32 - dmin * (sc >> 4) as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        // Sub-block s gets scale s % 16 and min 1; all quants 3 -> value d*s*3 - dmin.
        let mut b = [0xFFu8; BLOCK_BYTES];
        for (s, sc) in b[..16].iter_mut().enumerate() {
            *sc = (s as u8) | (1 << 4);
        }
        put_f16(&mut b, OFF_D, 0.5);
        put_f16(&mut b, OFF_DMIN, 0.25);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        for (i, &v) in y.iter().enumerate() {
            assert_eq!(v, 0.5 * (i / 16) as f32 * 3.0 - 0.25);
        }
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
