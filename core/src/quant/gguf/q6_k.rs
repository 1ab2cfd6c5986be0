//! ggml `Q6_K`: 256-weight super-blocks of 16 sub-blocks of 16 weights; 6-bit quants (4 low bits
//! plus 2 high bits) with a signed 8-bit scale per sub-block and one f16 super-scale.
//!
//! Block layout (210 bytes, ggml-common.h `block_q6_K`), **6.5625 bits per weight**
//! (210 × 8 / 256):
//!
//! | bytes    | field         | meaning                                     |
//! |----------|---------------|---------------------------------------------|
//! | 0..128   | `ql[128]`     | bits 0..4 of each quant, two per byte       |
//! | 128..192 | `qh[64]`      | bits 4..6 of each quant, four per byte      |
//! | 192..208 | `scales[16]`  | i8 scale of each 16-weight sub-block        |
//! | 208..210 | `d`           | f16 little-endian super-scale               |
//!
//! Element `i` (0..256): with `n = i / 128`, `k = (i % 128) / 32`, `l = i % 32`, the low 4 bits
//! are the low nibble (`k < 2`) or high nibble (`k >= 2`) of byte `64 * n + 32 * (k % 2) + l`;
//! bits 4..6 are bits `2k..2k+2` of byte `128 + 32 * n + l`. The quant is that 6-bit value minus
//! 32 (range -32..=31). Sub-block `s = i / 16` has scale `scales[s] as i8`.
//!
//! Value, in f32 with ggml's rounding order: `(d * scale) * quant`.

use super::{dot_q8_superblock, f16_at, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::Q6_K;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 210;
const OFF_QL: usize = 0;
const OFF_QH: usize = 128;
const OFF_SCALES: usize = 192;
const OFF_D: usize = 208;
const _: () = assert!(OFF_QH + QK_K / 4 == OFF_SCALES && OFF_D + 2 == BLOCK_BYTES);

/// Decode one super-block (ggml `dequantize_row_q6_K`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    for (s, y) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * (block[OFF_SCALES + s] as i8) as f32;
        // Sub-block s: n = s / 8, k = (s / 2) % 4, l runs over 16(s % 2) .. +16.
        let (n, k, l0) = (s / 8, (s / 2) % 4, 16 * (s % 2));
        let ql = &block[OFF_QL + 64 * n + 32 * (k % 2) + l0..][..16];
        let qh = &block[OFF_QH + 32 * n + l0..][..16];
        let lshift = 4 * (k / 2);
        let hshift = 2 * k;
        for ((o, &lo), &hi) in y.iter_mut().zip(ql).zip(qh) {
            let q = (((lo >> lshift) & 0x0F) | (((hi >> hshift) & 3) << 4)) as i32 - 32;
            *o = dl * q as f32;
        }
    }
}

/// Reference dot product with the block's eight 8-bit activation blocks: per activation block
/// `a`, `a.d · d · Σ scale·quant·qa` with the sum in i32 (see [`super::dot_q8_superblock`]).
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    let quant = |i: usize| {
        let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = (block[OFF_QL + 64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
        let high = (block[OFF_QH + 32 * n + l] >> (2 * k)) & 3;
        (low | (high << 4)) as i32 - 32
    };
    let scale = |s: usize| (block[OFF_SCALES + s] as i8) as i32;
    dot_q8_superblock(act, 16, f16_at(block, OFF_D), quant, scale, None)
}

/// What the runtime knows about Q6_K (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q6_K",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(14),
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
        assert_eq!(FORMAT.bits_per_weight(), 6.5625);
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
            let d = f16_at(&b, 208);
            for (i, &v) in y.iter().enumerate() {
                let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
                let byte = b[64 * n + 32 * (k % 2) + l];
                let lo = if k < 2 { byte & 15 } else { byte >> 4 };
                let hi = (b[128 + 32 * n + l] >> (2 * k)) & 3;
                let q = (lo | (hi << 4)) as i32 - 32;
                let want = d * (b[192 + i / 16] as i8) as f32 * q as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        // Quant bits all set -> 63 - 32 = 31; scales 0xFF -> -1.
        let mut b = [0xFFu8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == -0.5 * 31.0));
        // Extreme: scale -128, quant -32, d = max f16 stays finite.
        let mut b = [0u8; BLOCK_BYTES];
        b[OFF_SCALES..OFF_D].iter_mut().for_each(|s| *s = 0x80);
        put_f16(&mut b, OFF_D, 65504.0);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 65504.0 * -128.0 * -32.0));
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
