//! ggml `IQ4_XS`: 256-weight super-blocks of 8 sub-blocks of 32 weights; IQ4_NL codebook indices
//! with a signed 6-bit scale per sub-block and one f16 super-scale.
//!
//! Block layout (136 bytes, ggml-common.h `block_iq4_xs`), **4.25 bits per weight**
//! (136 × 8 / 256):
//!
//! | bytes   | field          | meaning                                          |
//! |---------|----------------|--------------------------------------------------|
//! | 0..2    | `d`            | f16 little-endian super-scale                    |
//! | 2..4    | `scales_h`     | u16 little-endian: bits `2s..2s+2` = high 2 bits of scale `s` |
//! | 4..8    | `scales_l[4]`  | low 4 bits of scale `s`: nibble `s % 2` of byte `4 + s / 2` |
//! | 8..136  | `qs[128]`      | 4-bit codebook indices, two per byte             |
//!
//! Element `i` (0..256): with `s = i / 32` and `w = i % 32`, the index is the low nibble
//! (`w < 16`) or high nibble (`w >= 16`) of byte `8 + 16 * s + w % 16`. The 6-bit scale of
//! sub-block `s` is stored biased by 32.
//!
//! Value, in f32 with ggml's rounding order: `dl = d * (scale - 32)`, then `dl * KVALUES[index]`
//! with the IQ4_NL codebook [`super::iq4_nl::KVALUES`].

use super::iq4_nl::KVALUES;
use super::{dot_q8_superblock, f16_at, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::IQ4_XS;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 136;
const OFF_D: usize = 0;
const OFF_SCALES_H: usize = 2;
const OFF_SCALES_L: usize = 4;
const OFF_QS: usize = 8;
const _: () = assert!(OFF_QS + QK_K / 2 == BLOCK_BYTES);

/// Decode one super-block (ggml `dequantize_row_iq4_xs`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let scales_h = u16::from_le_bytes([block[OFF_SCALES_H], block[OFF_SCALES_H + 1]]);
    for (s, y) in out.chunks_exact_mut(32).enumerate() {
        let low = (block[OFF_SCALES_L + s / 2] >> (4 * (s % 2))) & 0x0F;
        let high = ((scales_h >> (2 * s)) & 3) as u8;
        let dl = d * ((low | (high << 4)) as i32 - 32) as f32;
        let qs = &block[OFF_QS + 16 * s..][..16];
        let (lo, hi) = y.split_at_mut(16);
        for (j, &b) in qs.iter().enumerate() {
            lo[j] = dl * KVALUES[(b & 0x0F) as usize] as f32;
            hi[j] = dl * KVALUES[(b >> 4) as usize] as f32;
        }
    }
}

/// Reference dot product with the block's eight 8-bit activation blocks (one per sub-block):
/// per activation block `a`, `a.d · d · (scale − 32) · Σ KVALUES[index]·qa` with the sum in i32
/// (see [`super::dot_q8_superblock`]).
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    let scales_h = u16::from_le_bytes([block[OFF_SCALES_H], block[OFF_SCALES_H + 1]]);
    let quant = |i: usize| {
        let (s, w) = (i / 32, i % 32);
        let byte = block[OFF_QS + 16 * s + w % 16];
        KVALUES[((byte >> (4 * (w / 16))) & 0x0F) as usize] as i32
    };
    let scale = |s: usize| {
        let low = (block[OFF_SCALES_L + s / 2] >> (4 * (s % 2))) & 0x0F;
        let high = ((scales_h >> (2 * s)) & 3) as u8;
        (low | (high << 4)) as i32 - 32
    };
    dot_q8_superblock(act, 32, f16_at(block, OFF_D), quant, scale, None)
}

/// What the runtime knows about IQ4_XS (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "IQ4_XS",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(23),
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
        assert_eq!(FORMAT.bits_per_weight(), 4.25);
    }

    #[test]
    fn layout_matches_doc() {
        let mut rng = Rng::new(3);
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [0f32; BLOCK_ELEMS];
        for _ in 0..50 {
            rng.fill_bytes(&mut b);
            put_f16(&mut b, OFF_D, rng.normal());
            dequantize_block(&b, &mut y);
            let d = f16_at(&b, 0);
            let sh = u16::from_le_bytes([b[2], b[3]]);
            for (i, &v) in y.iter().enumerate() {
                let (s, w) = (i / 32, i % 32);
                let byte = b[8 + 16 * s + w % 16];
                let q = if w < 16 { byte & 15 } else { byte >> 4 };
                let sl = (b[4 + s / 2] >> (4 * (s % 2))) & 15;
                let scale = (sl as u16 | ((sh >> (2 * s)) & 3) << 4) as i32 - 32;
                let want = d * scale as f32 * KVALUES[q as usize] as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        // All bits set: scale 63 - 32 = 31, index 15 -> 113.
        let mut b = [0xFFu8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.5 * 31.0 * 113.0));
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        decode_never_panics(dequantize_block, BLOCK_BYTES, BLOCK_ELEMS, &[OFF_D]);
    }

    #[test]
    fn dot_q8_matches_reference() {
        crate::quant::act_q8::testutil::check_dot_q8(
            dequantize_block,
            dot_q8,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D],
        );
    }
}
