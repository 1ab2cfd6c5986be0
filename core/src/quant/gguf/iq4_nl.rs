//! ggml `IQ4_NL`: 32 weights per block, 4-bit indices into a fixed non-linear codebook, one f16
//! scale.
//!
//! Block layout (18 bytes, ggml-common.h `block_iq4_nl`), **4.5 bits per weight** (18 × 8 / 32):
//!
//! | bytes   | field     | meaning                              |
//! |---------|-----------|--------------------------------------|
//! | 0..2    | `d`       | f16 little-endian scale              |
//! | 2..18   | `qs[16]`  | 4-bit codebook indices, two per byte |
//!
//! Element `i < 16` is the low nibble of byte `2 + i`; element `i >= 16` is the high nibble of
//! byte `2 + i - 16`. Value: `d * KVALUES[q] as f32`, in f32.

use super::{f16_at, put_f16};
use crate::format::{Format, FormatSpec};
use crate::quant::act_q8::{isum32, BlockQ8Act};
use crate::quant::search::{self, Codebook};

/// The format this file defines.
pub const FORMAT: Format = Format::IQ4_NL;
/// Weights per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;
const OFF_D: usize = 0;
const OFF_QS: usize = 2;
const _: () = assert!(OFF_QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// The codebook shared by IQ4_NL and IQ4_XS (ggml `kvalues_iq4nl`), ascending.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Decode one block: `out[i] = d * KVALUES[q[i]]`.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        lo[j] = d * KVALUES[(b & 0x0F) as usize] as f32;
        hi[j] = d * KVALUES[(b >> 4) as usize] as f32;
    }
}

/// Index of the codebook entry nearest to `x` (ggml `best_index_int8`; the lower entry on exact
/// ties). NaN maps to a valid index.
pub(crate) fn best_index(x: f32) -> usize {
    let v = |i: usize| KVALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < v(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - v(hi - 1) < v(hi) - x {
        hi - 1
    } else {
        hi
    }
}

/// Best scale for one group of `x` with weights `w` (ggml `quantize_row_iq4_nl_impl` without
/// importance weights, `ntry = 7`): start from `d = max / 127`, refit `d` by weighted least
/// squares, then try 15 nearby inverse scales and keep the best. Returns 0 for an (almost)
/// all-zero group.
pub(crate) fn best_scale(x: &[f32], w: &[f32]) -> f32 {
    const NTRY: i32 = 7;
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        return 0.0;
    }
    let fit = |id: f32| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (&xv, &wv) in x.iter().zip(w) {
            let q = KVALUES[best_index(id * xv)] as f32;
            sumqx += wv * q * xv;
            sumq2 += wv * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / KVALUES[0] as f32;
    let (sumqx, sumq2) = fit(1.0 / d0);
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + KVALUES[0] as f32) / max;
        let (sumqx, sumq2) = fit(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// For `i` in `0..=256`: the largest index `j < 15` with `KVALUES[j] <= i - 128` (0 below the
/// first entry).
const KV_FLOOR: [u8; 257] = {
    let mut t = [0u8; 257];
    let mut i = 0;
    while i < 257 {
        let v = i as i32 - 128;
        let mut j = 0;
        while j + 1 < 15 && KVALUES[j + 1] as i32 <= v {
            j += 1;
        }
        t[i] = j as u8;
        i += 1;
    }
    t
};

/// Index of the IQ4_NL codebook entry nearest to `t` (the upper one on exact ties), the same
/// answer as ggml's `best_index_int8` through a table instead of a binary search. NaN gives a
/// valid index.
#[inline(always)]
fn nearest_kvalue(t: f32) -> usize {
    if t <= KVALUES[0] as f32 {
        return 0;
    }
    if t >= KVALUES[15] as f32 {
        return 15;
    }
    // t ∈ (-127, 113): floor(t) + 128 ∈ 1..=240; KVALUES[j] <= floor(t) <= t < KVALUES[j + 1].
    let j = KV_FLOOR[((t + 128.0) as usize).min(256)] as usize;
    if t - (KVALUES[j] as f32) < KVALUES[j + 1] as f32 - t {
        j
    } else {
        j + 1
    }
}

/// IQ4_NL's codebook (ggml `kvalues_iq4nl`).
pub const CODEBOOK: Codebook = Codebook {
    levels: &KVALUES,
    nearest: nearest_kvalue,
};

/// Search an f16-exact scale `d` and IQ4_NL codebook indices minimising
/// `Σ wᵢ (xᵢ − d·KVALUES[qᵢ])²`. Same contract as [`search::fit_affine`].
pub fn fit_codebook(x: &[f32], w: &[f32], q: &mut [u8]) -> f32 {
    search::fit_in_codebook(&CODEBOOK, x, w, q)
}

/// Reference quantizer, ggml's `quantize_row_iq4_nl_ref` without importance weights: the scale
/// from [`best_scale`] with weights `x²`, then each element to its nearest codebook entry.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let w: [f32; BLOCK_ELEMS] = core::array::from_fn(|j| x[j] * x[j]);
    let d = best_scale(x, &w);
    put_f16(out, OFF_D, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for j in 0..16 {
        let (q0, q1) = (best_index(id * x[j]), best_index(id * x[j + 16]));
        out[OFF_QS + j] = (q0 | (q1 << 4)) as u8;
    }
}

/// Quantize one block with importance weights `w`: the scale search of
/// [`fit_codebook`] (scales swept around both ends of the codebook, each refitted by
/// weighted least squares).
pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), BLOCK_BYTES);
    let mut q = [0u8; BLOCK_ELEMS];
    let d = fit_codebook(x, w, &mut q);
    put_f16(out, OFF_D, d);
    for j in 0..16 {
        out[OFF_QS + j] = q[j] | (q[j + 16] << 4);
    }
}

/// Reference dot product with 32 f32 values: `d · Σ KVALUES[q]·x`.
pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let mut s = 0f32;
    for (j, &b) in block[OFF_QS..OFF_QS + 16].iter().enumerate() {
        s += KVALUES[(b & 0x0F) as usize] as f32 * x[j]
            + KVALUES[(b >> 4) as usize] as f32 * x[j + 16];
    }
    d * s
}

/// Reference dot product with one 8-bit activation block: `d · da · Σ KVALUES[q]·qa`, in i32.
pub fn dot_q8(block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), BLOCK_BYTES);
    debug_assert_eq!(act.len(), 1);
    let d = f16_at(block, OFF_D);
    let a = &act[0];
    let q = |i: usize| KVALUES[((block[OFF_QS + i % 16] >> (4 * (i / 16))) & 0x0F) as usize] as i32;
    let isum = isum32(&a.qs, (0..BLOCK_ELEMS).map(q));
    d * a.d * isum as f32
}

/// What the runtime knows about IQ4_NL (see [`FormatSpec`]).
pub const SPEC: FormatSpec = FormatSpec {
    format: FORMAT,
    name: "IQ4_NL",
    block_elems: BLOCK_ELEMS,
    block_bytes: BLOCK_BYTES,
    ggml_type: Some(20),
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
    fn nearest_kvalue_matches_ggml_best_index() {
        let mut rng = Rng::new(9);
        for i in 0..200_000 {
            let t = match i % 3 {
                0 => rng.uniform() * 140.0,
                1 => (rng.next_u64() % 260) as f32 - 130.0,
                _ => ((rng.next_u64() % 520) as f32 - 260.0) * 0.5,
            };
            assert_eq!(nearest_kvalue(t), best_index(t), "{t}");
        }
        for t in [f32::INFINITY, f32::NEG_INFINITY, -127.0, 113.0, 0.0, -0.0] {
            assert_eq!(nearest_kvalue(t), best_index(t), "{t}");
        }
        assert!(nearest_kvalue(f32::NAN) < 16);
    }

    #[test]
    fn fit_codebook_degenerate_groups() {
        let w = [1f32; 32];
        let mut qc = [0u8; 32];
        assert_eq!(fit_codebook(&[0.0; 32], &w, &mut qc), 0.0);
        let big: [f32; 32] = core::array::from_fn(|i| if i % 2 == 0 { 3e38 } else { -3e38 });
        let mut wb = [0f32; 32];
        search::default_weights(&big, &mut wb);
        assert!(fit_codebook(&big, &wb, &mut qc).is_finite());
    }

    #[test]
    fn sizes_match_format() {
        assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
        assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
        assert_eq!(FORMAT.bits_per_weight(), 4.5);
    }

    #[test]
    fn best_index_is_nearest() {
        for k in -1300..=1300 {
            let x = k as f32 / 10.0;
            let i = best_index(x);
            let err = (KVALUES[i] as f32 - x).abs();
            assert!(KVALUES.iter().all(|&v| (v as f32 - x).abs() >= err), "{x}");
        }
        assert!(best_index(f32::NAN) < 16);
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
                assert_eq!(v.to_bits(), (d * KVALUES[q as usize] as f32).to_bits());
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
        // Measured 0.0743 on these 8192 N(0,1) values; the budget leaves ~10% of slack.
        assert!(e < 0.080, "rel rmse {e}");
    }

    #[test]
    fn special_blocks() {
        let mut b = [0u8; BLOCK_BYTES];
        let mut y = [1f32; BLOCK_ELEMS];
        quantize_block(&[0.0; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        quantize_block(&[0.75; BLOCK_ELEMS], &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|&v| (v - 0.75).abs() < 1e-3), "{y:?}");
        let x: [f32; BLOCK_ELEMS] =
            core::array::from_fn(|i| if i % 2 == 0 { 3.0e4 } else { -3.0e4 });
        quantize_block(&x, &mut b);
        dequantize_block(&b, &mut y);
        assert!(y.iter().all(|v| v.is_finite()));
        assert!(rel_rmse(&x, &y) < 0.1);
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
