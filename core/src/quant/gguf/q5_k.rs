//! ggml `Q5_K`: 256-weight super-blocks of 8 sub-blocks of 32 weights; 5-bit quants (4 low bits
//! plus a high-bit plane) with a 6-bit scale and a 6-bit min per sub-block, and f16 super-scales.
//!
//! Block layout (176 bytes, ggml-common.h `block_q5_K`), **5.5 bits per weight** (176 × 8 / 256):
//!
//! | bytes   | field         | meaning                                              |
//! |---------|---------------|------------------------------------------------------|
//! | 0..2    | `d`           | f16 little-endian super-scale for the scales         |
//! | 2..4    | `dmin`        | f16 little-endian super-scale for the mins           |
//! | 4..16   | `scales[12]`  | eight 6-bit scales and mins, packed as in Q4_K       |
//! | 16..48  | `qh[32]`      | bit 4 of each quant                                  |
//! | 48..176 | `qs[128]`     | bits 0..4 of each quant, two per byte                |
//!
//! Element `i` (0..256): with `c = i / 64` and `w = i % 64`, the low 4 bits are the low nibble
//! (`w < 32`) or high nibble (`w >= 32`) of byte `48 + 32 * c + w % 32`; bit 4 is bit `i / 32` of
//! byte `16 + i % 32`. Sub-block `s = i / 32` takes its scale and min as in Q4_K
//! ([`super::scale_min_k4`]).
//!
//! Value, in f32 with ggml's rounding order: `dl = d * scale`, `ml = dmin * min`, `dl * q - ml`.

use super::{dot_q8_superblock, f16_at, scale_min_k4, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::Q5_K;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 176;
const OFF_D: usize = 0;
const OFF_DMIN: usize = 2;
const OFF_SCALES: usize = 4;
const OFF_QH: usize = 16;
const OFF_QS: usize = 48;
const _: () = assert!(OFF_QH + QK_K / 8 == OFF_QS && OFF_QS + QK_K / 2 == BLOCK_BYTES);

/// Decode one super-block (ggml `dequantize_row_q5_K`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let dmin = f16_at(block, OFF_DMIN);
    let scales = &block[OFF_SCALES..OFF_SCALES + 12];
    let qh = &block[OFF_QH..OFF_QH + 32];
    for (s, y) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(s, scales);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        let ql = &block[OFF_QS + 32 * (s / 2)..][..32];
        let shift = 4 * (s % 2);
        for ((o, &lo), &hi) in y.iter_mut().zip(ql).zip(qh) {
            let q = ((lo >> shift) & 0x0F) | (((hi >> s) & 1) << 4);
            *o = dl * q as f32 - ml;
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
        let low = (byte >> (4 * ((i / 32) % 2))) & 0x0F;
        let high = (block[OFF_QH + i % 32] >> (i / 32)) & 1;
        (low | (high << 4)) as i32
    };
    let scale = |s: usize| scale_min_k4(s, scales).0 as i32;
    let min = |s: usize| scale_min_k4(s, scales).1 as i32;
    let (d, dmin) = (f16_at(block, OFF_D), f16_at(block, OFF_DMIN));
    dot_q8_superblock(act, 32, d, quant, scale, Some((dmin, &min)))
}

/// What the runtime knows about Q5_K (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q5_K",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(13),
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
        assert_eq!(FORMAT.bits_per_weight(), 5.5);
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
            for (i, &v) in y.iter().enumerate() {
                let (c, w, s) = (i / 64, i % 64, i / 32);
                let byte = b[48 + 32 * c + w % 32];
                let lo = if w < 32 { byte & 15 } else { byte >> 4 };
                let hi = (b[16 + i % 32] >> (i / 32)) & 1;
                let q = lo | (hi << 4);
                let (sc, m) = scale_min_k4(s, &b[4..16]);
                let want = d * sc as f32 * q as f32 - dmin * m as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        let mut b = [0xFFu8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        put_f16(&mut b, OFF_DMIN, 0.25);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.5 * 63.0 * 31.0 - 0.25 * 63.0));
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
