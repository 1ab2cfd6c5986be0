//! ggml `Q3_K`: 256-weight super-blocks of 16 sub-blocks of 16 weights; 3-bit quants (2 low bits
//! plus a high-bit mask) with a signed 6-bit scale per sub-block and one f16 super-scale.
//!
//! Block layout (110 bytes, ggml-common.h `block_q3_K`), **3.4375 bits per weight**
//! (110 × 8 / 256):
//!
//! | bytes    | field         | meaning                                      |
//! |----------|---------------|----------------------------------------------|
//! | 0..32    | `hmask[32]`   | bit 2 of each quant                          |
//! | 32..96   | `qs[64]`      | bits 0..2 of each quant, four per byte       |
//! | 96..108  | `scales[12]`  | sixteen 6-bit scales, packed (below)         |
//! | 108..110 | `d`           | f16 little-endian super-scale                |
//!
//! Element `i` (0..256): low bits are bits `2k..2k+2`, with `k = (i / 32) % 4`, of byte
//! `32 + 32 * (i / 128) + i % 32`; the high bit is bit `i / 32` of byte `i % 32`. The quant is
//! `low - 4` when that high bit is **clear** and `low` when it is set (range -4..=3).
//!
//! Scale of sub-block `s = i / 16` (6 bits, stored biased by 32): its low 4 bits are the low
//! nibble of `scales[s]` for `s < 8`, the high nibble of `scales[s - 8]` for `s >= 8`; its high
//! 2 bits are bits `2 * (s / 4) .. +2` of `scales[8 + s % 4]`. (ggml unpacks this with `kmask1 =
//! 0x03030303` and `kmask2 = 0x0f0f0f0f` on u32 words.)
//!
//! Value, in f32 with ggml's rounding order: `dl = d * (scale - 32)`, then `dl * quant`.

use super::{dot_q8_superblock, f16_at, QK_K};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::BlockQ8Act;

/// The format this file defines.
pub const FORMAT: Format = Format::Q3_K;
/// Weights per block.
pub const BLOCK_ELEMS: usize = QK_K;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 110;
const OFF_HMASK: usize = 0;
const OFF_QS: usize = 32;
const OFF_SCALES: usize = 96;
const OFF_D: usize = 108;
const _: () = assert!(OFF_QS + QK_K / 4 == OFF_SCALES && OFF_D + 2 == BLOCK_BYTES);

/// The sixteen 6-bit scales, unbiased (-32..=31).
fn unpack_scales(p: &[u8]) -> [i32; 16] {
    core::array::from_fn(|s| {
        let low = if s < 8 { p[s] & 0x0F } else { p[s - 8] >> 4 };
        let high = (p[8 + s % 4] >> (2 * (s / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    })
}

/// Decode one super-block (ggml `dequantize_row_q3_K`).
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let scales = unpack_scales(&block[OFF_SCALES..OFF_SCALES + 12]);
    let hmask = &block[OFF_HMASK..OFF_HMASK + 32];
    for (s, y) in out.chunks_exact_mut(16).enumerate() {
        let dl = d * scales[s] as f32;
        // Sub-block s: elements 16s..16s+16, byte column c0 = 16(s % 2) of both qs half and hmask.
        let c0 = 16 * (s % 2);
        let q = &block[OFF_QS + 32 * (s / 8) + c0..][..16];
        let shift = 2 * ((s / 2) % 4);
        let hbit = s / 2; // = i / 32
        for (l, o) in y.iter_mut().enumerate() {
            let low = ((q[l] >> shift) & 3) as i32;
            let high_clear = (hmask[c0 + l] >> hbit) & 1 == 0;
            let quant = if high_clear { low - 4 } else { low };
            *o = dl * quant as f32;
        }
    }
}

/// Reference dot product with the block's eight 8-bit activation blocks: per activation block
/// `a`, `a.d · d · Σ (scale − 32)·quant·qa` with the sum in i32 (see
/// [`super::dot_q8_superblock`]).
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    let scales = unpack_scales(&block[OFF_SCALES..OFF_SCALES + 12]);
    let quant = |i: usize| {
        let low = ((block[OFF_QS + 32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3) as i32;
        let high_set = (block[OFF_HMASK + i % 32] >> (i / 32)) & 1 == 1;
        if high_set {
            low
        } else {
            low - 4
        }
    };
    dot_q8_superblock(act, 16, f16_at(block, OFF_D), quant, |s| scales[s], None)
}

/// What the runtime knows about Q3_K (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "Q3_K",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(11),
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
        assert_eq!(FORMAT.bits_per_weight(), 3.4375);
    }

    /// ggml's own unpacking, on u32 words with kmask1/kmask2, as an independent check.
    fn unpack_scales_kmask(p: &[u8]) -> [i32; 16] {
        const KMASK1: u32 = 0x0303_0303;
        const KMASK2: u32 = 0x0f0f_0f0f;
        let w = |k: usize| u32::from_le_bytes([p[4 * k], p[4 * k + 1], p[4 * k + 2], p[4 * k + 3]]);
        let (a0, a1, tmp) = (w(0), w(1), w(2));
        let aux = [
            (a0 & KMASK2) | ((tmp & KMASK1) << 4),
            (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
            ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
            ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
        ];
        core::array::from_fn(|s| (aux[s / 4].to_le_bytes()[s % 4] as i8) as i32 - 32)
    }

    #[test]
    fn scales_match_kmask_unpacking() {
        let mut rng = Rng::new(9);
        let mut p = [0u8; 12];
        for _ in 0..1000 {
            rng.fill_bytes(&mut p);
            assert_eq!(unpack_scales(&p), unpack_scales_kmask(&p));
        }
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
            let d = f16_at(&b, 108);
            let sc = unpack_scales_kmask(&b[96..108]);
            for (i, &v) in y.iter().enumerate() {
                let low = (b[32 + 32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
                let high = (b[i % 32] >> (i / 32)) & 1;
                let q = low as i32 - if high == 1 { 0 } else { 4 };
                let want = d * sc[i / 16] as f32 * q as f32;
                assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
            }
        }
    }

    #[test]
    fn hand_built_block() {
        // All scale bits set -> scale 63 - 32 = 31; all quant bits set -> quant 3.
        let mut b = [0xFFu8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        let mut y = [0f32; BLOCK_ELEMS];
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.5 * 31.0 * 3.0));
        // Zero bits -> scale -32, quant -4.
        let mut b = [0u8; BLOCK_BYTES];
        put_f16(&mut b, OFF_D, 0.5);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.5 * -32.0 * -4.0));
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
