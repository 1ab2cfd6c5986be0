//! Vspec `NQ3`: 64 weights per block, 3-bit indices into a fixed non-uniform codebook, one f16
//! scale, no min.
//!
//! Block layout (26 bytes), **3.25 bits per weight** (26 × 8 / 64):
//!
//! | bytes   | field     | meaning                                  |
//! |---------|-----------|------------------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale                  |
//! | 2..18   | `ql[16]`  | low 2 bits of each index, four per byte  |
//! | 18..26  | `qh[8]`   | high bit of each index, eight per byte   |
//!
//! Element `i` (0..64): its low two bits are bits `2·(i/16) .. 2·(i/16)+2` of byte `2 + i % 16`,
//! its high bit is bit `i / 8` of byte `18 + i % 8` (VQ3's bit layout, two bytes earlier);
//! `q = low | high << 2 ∈ 0..=7`. Value: `d * LEVELS[q] as f32`, in f32.
//!
//! Why a codebook and no min: on weights whose residual stream was rotated (`convert --rotate`)
//! groups are close to symmetric and bell-shaped, and 8 levels placed for that shape (a Lloyd–Max
//! fit on SmolLM2's rotated weights, scaled to ±127) lose less than a uniform grid. Measured on
//! those weights (relative squared error, best scale per group): 0.0294 for NQ3 at 3.25 bpw,
//! 0.0275 for VQ3 (uniform, with a min) at 3.5 bpw, 0.0333 for a symmetric uniform grid at 3.25.

use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::{isum32, BlockQ8Act, QK8};
use crate::quant::gguf::{f16_at, put_f16};
use crate::quant::gptq::GptqCode;
use crate::quant::search::{self, Codebook};

/// The format this file defines.
pub const FORMAT: Format = Format::NQ3;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 64;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 26;
/// The codebook, ascending and symmetric.
pub const LEVELS: [i8; 8] = [-127, -77, -42, -14, 14, 42, 77, 127];
const OFF_D: usize = 0;
const OFF_QL: usize = 2;
const OFF_QH: usize = 18;
const _: () = assert!(OFF_QL + BLOCK_ELEMS / 4 == OFF_QH);
const _: () = assert!(OFF_QH + BLOCK_ELEMS / 8 == BLOCK_BYTES);

/// The codebook for the searches and the GPTQ walk.
pub const CODEBOOK: Codebook = Codebook {
    levels: &LEVELS,
    nearest,
};

/// Index of the level nearest to `t` (the lower on exact ties; 0 for NaN).
pub fn nearest(t: f32) -> usize {
    // Midpoints between neighbouring levels: the index is how many of them lie below t.
    const MID: [f32; 7] = [-102.0, -59.5, -28.0, 0.0, 28.0, 59.5, 102.0];
    MID.iter().filter(|&&m| t > m).count()
}

/// The index of element `i`.
#[inline(always)]
fn index(block: &[u8], i: usize) -> usize {
    let lo = (block[OFF_QL + i % 16] >> (2 * (i / 16))) & 3;
    let hi = (block[OFF_QH + i % 8] >> (i / 8)) & 1;
    (lo | (hi << 2)) as usize
}

/// Decode one block: `out[i] = d * LEVELS[q[i]]`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    for (i, o) in out.iter_mut().enumerate() {
        *o = d * LEVELS[index(block, i)] as f32;
    }
}

/// Store `d` and the indices `q` (each `<= 7`) as one block.
pub fn pack(d: f32, q: &[u8], out: &mut [u8]) {
    debug_assert_eq!(q.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    put_f16(out, OFF_D, d);
    out[OFF_QL..].iter_mut().for_each(|b| *b = 0);
    for (i, &qi) in q.iter().enumerate() {
        out[OFF_QL + i % 16] |= (qi & 3) << (2 * (i / 16));
        out[OFF_QH + i % 8] |= ((qi >> 2) & 1) << (i / 8);
    }
}

/// Quantize one block with importance weights `w` ([`search::fit_in_codebook`]).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let mut q = [0u8; BLOCK_ELEMS];
    let d = search::fit_in_codebook(&CODEBOOK, x, w, &mut q);
    pack(d, &q, out);
}

/// Quantize one block with the default weights of [`search::default_weights`].
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    let mut w = [0f32; BLOCK_ELEMS];
    search::default_weights(x, &mut w);
    quantize_block_weighted(x, &w, out);
}

/// Reference dot product with 64 f32 values: `d · Σ LEVELS[q]·x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let s: f32 = x
        .iter()
        .enumerate()
        .map(|(i, &xi)| LEVELS[index(block, i)] as f32 * xi)
        .sum();
    f16_at(block, OFF_D) * s
}

/// Reference dot product with two 8-bit activation blocks (elements 0..32 and 32..64):
/// `d · Σₛ daₛ · Σ LEVELS[q]·qa`, the inner sums in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(act.len(), BLOCK_ELEMS / QK8);
    let d = f16_at(block, OFF_D);
    let mut s = 0f32;
    for (half, a) in act.iter().enumerate() {
        let q = |j: usize| LEVELS[index(block, half * QK8 + j)] as i32;
        s += a.d * isum32(&a.qs, (0..QK8).map(q)) as f32;
    }
    d * s
}

/// What the runtime knows about NQ3 (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "NQ3",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: None,
    decode: dequantize_block,
    dot_f32: Some(dot_f32),
    dot_q8: Some(dot_q8),
    quantize: Some(quantize_block_weighted),
    gptq: Some(GptqCode::Codebook {
        codebook: CODEBOOK,
        pack,
    }),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::act_q8::testutil::*;

    #[test]
    fn sizes_match_format() {
        assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
        assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
        assert_eq!(FORMAT.bits_per_weight(), 3.25);
    }

    #[test]
    fn nearest_is_nearest() {
        for k in -3000..=3000 {
            let t = k as f32 * 0.05;
            let got = nearest(t);
            let dist = |j: usize| (t - LEVELS[j] as f32).abs();
            let best = (0..8).fold(0, |b, j| if dist(j) < dist(b) { j } else { b });
            assert_eq!(dist(got), dist(best), "{t}");
            assert!(got == best || got + 1 == best, "lower on ties: {t}");
        }
        assert_eq!(nearest(f32::NAN), 0);
        assert_eq!(nearest(f32::INFINITY), 7);
        assert_eq!(nearest(f32::NEG_INFINITY), 0);
    }

    #[test]
    fn layout_matches_doc() {
        let q: [u8; 64] = core::array::from_fn(|i| ((i * 5 + i / 9) % 8) as u8);
        let mut b = [0u8; BLOCK_BYTES];
        pack(0.5, &q, &mut b);
        let mut out = [0f32; 64];
        dequantize_block(&b, &mut out);
        for i in 0..64 {
            let lo = (b[2 + i % 16] >> (2 * (i / 16))) & 3;
            let hi = (b[18 + i % 8] >> (i / 8)) & 1;
            assert_eq!(lo + 4 * hi, q[i], "element {i}");
            assert_eq!(out[i], 0.5 * LEVELS[q[i] as usize] as f32, "element {i}");
        }
    }

    #[test]
    fn round_trip_rmse() {
        // Measured 0.179 on these 16384 N(0,1) values (default weights); ~10% of slack.
        check_round_trip(
            quantize_block,
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            0.20,
        );
    }

    #[test]
    fn special_blocks() {
        check_codebook_special_blocks(quantize_block, dequantize_block, BLOCK_BYTES, BLOCK_ELEMS);
    }

    #[test]
    fn decode_never_panics_any_bytes() {
        crate::quant::gguf::testutil::decode_never_panics(
            dequantize_block,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D],
        );
    }

    #[test]
    fn dots_match_reference() {
        check_dots(
            dequantize_block,
            dot_f32,
            dot_q8,
            BLOCK_BYTES,
            BLOCK_ELEMS,
            &[OFF_D],
        );
    }
}
