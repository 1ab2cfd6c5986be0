//! What the trellis formats ([`super::tq2`], [`super::tq3`], [`super::tq4`]) share: the bit
//! stream, the state of each weight, the Viterbi encoder, the scale search and the reference dots,
//! generic over `K`, the bits each weight adds to the stream.
//!
//! A block is 64 weights: an f16 scale `d` at bytes 0..2, then a stream of `64·K` bits,
//! little-endian (stream bit `k` is bit `k % 8` of byte `2 + k / 8`). Weight `i` adds stream bits
//! `K·i .. K·i+K`, its symbol `b_i`. Its **state** is the 8-bit window of the stream that ends
//! there, bits `K·i+K−8 .. K·i+K` read as a little-endian integer, with bits before the stream
//! taken as zero; so `state(i) = state(i−1) >> K | b_i << (8−K)`, and the first state has its low
//! `8−K` bits zero. The weight decodes to `d * codebook[state(i)] as f32`, one of 256 levels,
//! although it paid only `K` bits: neighbours share bits (the "bitshift trellis" of QTIP, Tseng et
//! al., 2024). Decoding is random-access (one 16-bit load, a shift, a table lookup per weight, no
//! dependence on earlier weights), so SIMD kernels can decode lanes independently.
//!
//! The encoder picks the whole block's stream at once: [`viterbi`] finds the stream with the
//! least weighted squared error for a given `d` exactly, over the 256 states. State `s'` is
//! entered from the `2^K` states `(s' mod 2^(8−K)) << K | t`, a contiguous group, so each step
//! takes one minimum per group and adds the new weight's error to every state.
//!
//! Each codebook was trained for unit-variance Gaussian weights (the shape of rotated weights,
//! `convert --rotate`) by Lloyd's algorithm on trellis paths: Viterbi-encode Gaussian samples,
//! move each entry to the mean of the values it coded, repeat; then scale by the format's `UNIT`
//! and round to i8.

use crate::quant::act_q8::{isum32, BlockQ8Act, QK8};
use crate::quant::gguf::{f16_at, put_f16, q8_0};
use crate::quant::search;
use alloc::vec::Vec;

/// Weights per block.
pub const BLOCK_ELEMS: usize = 64;
/// Trellis states: the last 8 bits of the stream.
pub const STATES: usize = 256;
/// Byte offset of the f16 scale.
pub const OFF_D: usize = 0;
/// Byte offset of the stream.
pub const OFF_QS: usize = 2;

/// Bytes of a block whose weights add `K` bits each.
pub const fn block_bytes(k: usize) -> usize {
    OFF_QS + BLOCK_ELEMS * k / 8
}

/// The state of weight `i` from the stream `qs` of a block with `K` bits per weight.
#[inline(always)]
pub fn state<const K: usize>(qs: &[u8], i: usize) -> usize {
    // The window is stream bits end−8 .. end.
    let end = K * i + K;
    if end < 8 {
        ((qs[0] as usize) << (8 - end)) & 0xFF
    } else {
        let pos = end - 8;
        let (byte, shift) = (pos / 8, pos % 8);
        let lo = qs[byte] as usize;
        let hi = qs.get(byte + 1).map_or(0, |&b| b as usize);
        ((lo | hi << 8) >> shift) & 0xFF
    }
}

/// Decode one block: `out[i] = d * codebook[state(i)]`.
#[inline(always)]
pub fn decode<const K: usize>(codebook: &[i8; STATES], block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), block_bytes(K));
    debug_assert_eq!(out.len(), BLOCK_ELEMS);
    let d = f16_at(block, OFF_D);
    let qs = &block[OFF_QS..];
    for (i, o) in out.iter_mut().enumerate() {
        *o = d * codebook[state::<K>(qs, i)] as f32;
    }
}

/// Bytes of the Q8_0 blocks one trellis block expands into ([`expand_q8_0`]).
pub const EXPANDED_BYTES: usize = 2 * q8_0::BLOCK_BYTES;

/// Rewrite one block as two ggml Q8_0 blocks that decode to the same f32 values bit for bit:
/// each weight is `d · codebook[state]`, an i8 entry times the block's f16 scale, which is
/// exactly a Q8_0 quant times its scale, so both halves carry the block's `d` bytes unchanged.
/// CPUs whose trellis decode costs a table lookup per weight run the Q8_0 kernels instead, at
/// 8.5 bits per weight in memory (see `KernelTable::expansion`).
pub fn expand_q8_0<const K: usize>(codebook: &[i8; STATES], block: &[u8], out: &mut [u8]) {
    debug_assert_eq!(block.len(), block_bytes(K));
    debug_assert_eq!(out.len(), EXPANDED_BYTES);
    let qs = &block[OFF_QS..];
    for (h, half) in out.chunks_exact_mut(q8_0::BLOCK_BYTES).enumerate() {
        half[..2].copy_from_slice(&block[OFF_D..OFF_D + 2]);
        for (j, q) in half[2..].iter_mut().enumerate() {
            *q = codebook[state::<K>(qs, h * q8_0::BLOCK_ELEMS + j)] as u8;
        }
    }
}

/// The bits each weight of a trellis format adds to its stream (TQ2, TQ3, TQ4: 2, 3, 4); `None`
/// for the other formats.
pub fn stream_bits(format: crate::format::Format) -> Option<usize> {
    use crate::format::Format;
    match format {
        Format::TQ2 => Some(2),
        Format::TQ3 => Some(3),
        Format::TQ4 => Some(4),
        _ => None,
    }
}

/// Rows per group of the interleaved layout (`model::Layout::Rows16`).
pub const ROWS16: usize = 16;

/// Bytes of one (group, block) of a format whose weights add `k` bits each.
pub const fn group_block_bytes(k: usize) -> usize {
    ROWS16 * block_bytes(k)
}

/// Rewrites `rows` rows (a multiple of [`ROWS16`]) of `blocks` row-major trellis blocks with `k`
/// bits per weight into the interleaved layout. `None` when the sizes do not fit.
pub fn interleave_rows16(k: usize, rows: usize, blocks: usize, data: &[u8]) -> Option<Vec<u8>> {
    let block = block_bytes(k);
    if !rows.is_multiple_of(ROWS16) || data.len() != rows.checked_mul(blocks)?.checked_mul(block)? {
        return None;
    }
    let stream = block - OFF_QS;
    let gb = group_block_bytes(k);
    let mut out = alloc::vec![0u8; data.len()];
    for (row, bytes) in data.chunks_exact(blocks * block).enumerate() {
        let (g, r) = (row / ROWS16, row % ROWS16);
        for (b, src) in bytes.chunks_exact(block).enumerate() {
            let base = (g * blocks + b) * gb;
            out[base + 2 * r..base + 2 * r + 2].copy_from_slice(&src[..2]);
            for p in 0..stream {
                out[base + 2 * ROWS16 + ROWS16 * p + r] = src[OFF_QS + p];
            }
        }
    }
    Some(out)
}

/// Block `b` of row `row` of an interleaved tensor with `blocks` blocks per row, as the
/// row-major block it came from.
pub fn row_block_rows16(
    k: usize,
    data: &[u8],
    blocks: usize,
    row: usize,
    b: usize,
    out: &mut [u8],
) {
    let gb = group_block_bytes(k);
    let (g, r) = (row / ROWS16, row % ROWS16);
    let base = (g * blocks + b) * gb;
    out[..2].copy_from_slice(&data[base + 2 * r..base + 2 * r + 2]);
    for (p, o) in out[OFF_QS..block_bytes(k)].iter_mut().enumerate() {
        *o = data[base + 2 * ROWS16 + ROWS16 * p + r];
    }
}

/// Store `d` and the `K`-bit symbols `sym` as one block.
pub fn pack<const K: usize>(d: f32, sym: &[u8], out: &mut [u8]) {
    debug_assert_eq!(sym.len(), BLOCK_ELEMS);
    debug_assert_eq!(out.len(), block_bytes(K));
    put_f16(out, OFF_D, d);
    let qs = &mut out[OFF_QS..];
    qs.iter_mut().for_each(|b| *b = 0);
    let mask = (1u16 << K) - 1;
    for (i, &s) in sym.iter().enumerate() {
        let pos = K * i;
        let (byte, shift) = (pos / 8, pos % 8);
        let v = (s as u16 & mask) << shift;
        qs[byte] |= v as u8;
        if shift + K > 8 {
            qs[byte + 1] |= (v >> 8) as u8;
        }
    }
}

/// The stream minimising `Σ wᵢ (xᵢ − d·codebook[state(i)])²` over all `2^(K·n)` streams of
/// `n = x.len()` symbols (`1 ≤ n ≤ 64`), written to `sym[..n]`; returns that minimum.
pub fn viterbi<const K: usize>(
    codebook: &[i8; STATES],
    x: &[f32],
    w: &[f32],
    d: f32,
    sym: &mut [u8],
) -> f32 {
    viterbi_from::<K>(codebook, 0, x, w, d, sym)
}

/// [`viterbi`] for a stream that continues from state `start` (the state of the weight before
/// `x[0]`) instead of the beginning of a block.
pub fn viterbi_from<const K: usize>(
    codebook: &[i8; STATES],
    start: usize,
    x: &[f32],
    w: &[f32],
    d: f32,
    sym: &mut [u8],
) -> f32 {
    let groups = STATES >> K;
    // The states the first symbol can reach: low 8−K bits from `start`, high K bits free.
    let entry = (start >> K) % groups;
    let n = x.len();
    debug_assert!((2..=6).contains(&K));
    debug_assert!((1..=BLOCK_ELEMS).contains(&n) && w.len() == n && sym.len() >= n);
    let level: [f32; STATES] = core::array::from_fn(|s| d * codebook[s] as f32);
    let mut cost = [0f32; STATES];
    for (s, c) in cost.iter_mut().enumerate() {
        let e = x[0] - level[s];
        *c = if s % groups == entry {
            w[0] * e * e
        } else {
            f32::INFINITY
        };
    }
    // back[i][g]: which state of group g (entered from) the best path into group g's
    // successors came from, as an offset 0..2^K.
    let mut back = [[0u8; 64]; BLOCK_ELEMS];
    let mut gmin = [0f32; 64];
    for i in 1..n {
        for (g, (m, b)) in gmin[..groups]
            .iter_mut()
            .zip(back[i].iter_mut())
            .enumerate()
        {
            let (best, arg) = min_cost(&cost[g << K..(g + 1) << K]);
            *m = best;
            *b = arg as u8;
        }
        let (xi, wi) = (x[i], w[i]);
        for (chunk, lv) in cost
            .chunks_exact_mut(groups)
            .zip(level.chunks_exact(groups))
        {
            for ((c, &g), &l) in chunk.iter_mut().zip(&gmin[..groups]).zip(lv) {
                let e = xi - l;
                *c = g + wi * e * e;
            }
        }
    }
    let (best, mut s) = min_cost(&cost);
    for i in (0..n).rev() {
        sym[i] = (s >> (8 - K)) as u8;
        if i > 0 {
            let g = s % groups;
            s = g << K | back[i][g] as usize;
        }
    }
    best
}

/// The least cost and its first index; a NaN cost (from non-finite inputs) never wins over a
/// number, so the traceback still follows a real path.
#[inline(always)]
fn min_cost(costs: &[f32]) -> (f32, usize) {
    let (mut best, mut arg) = (costs[0], 0);
    for (k, &c) in costs.iter().enumerate().skip(1) {
        if c < best || (best.is_nan() && !c.is_nan()) {
            best = c;
            arg = k;
        }
    }
    (best, arg)
}

/// The state after `state` when the next weight's symbol is `sym`.
#[inline(always)]
pub fn next_state<const K: usize>(state: usize, sym: u8) -> usize {
    state >> K | (sym as usize) << (8 - K)
}

/// The codebook values of the states the symbols `sym` walk through.
pub fn path_levels<const K: usize>(codebook: &[i8; STATES], sym: &[u8], out: &mut [f32]) {
    let mut s = 0usize;
    for (o, &b) in out.iter_mut().zip(sym) {
        s = next_state::<K>(s, b);
        *o = codebook[s] as f32;
    }
}

/// `Σ wᵢ (xᵢ − d·cᵢ)²` and the least-squares scale `Σ wxc / Σ wc²` (0 when every `c` is 0).
fn error_and_refit(x: &[f32], w: &[f32], c: &[f32], d: f32) -> (f32, f32) {
    let (mut err, mut sxc, mut scc) = (0f64, 0f64, 0f64);
    for ((&xi, &wi), &ci) in x.iter().zip(w).zip(c) {
        let e = (xi - d * ci) as f64;
        err += wi as f64 * e * e;
        sxc += (wi * xi) as f64 * ci as f64;
        scc += (wi * ci) as f64 * ci as f64;
    }
    let refit = if scc > 0.0 { (sxc / scc) as f32 } else { 0.0 };
    (err as f32, refit)
}

/// Quantize one block with importance weights `w`: a first scale `d = rms / unit` from the
/// weighted RMS, a Viterbi pass, the least-squares scale for that path, a second pass at it; the
/// best path and scale seen (after rounding `d` to f16) are kept.
pub fn quantize<const K: usize>(
    codebook: &[i8; STATES],
    unit: f32,
    x: &[f32],
    w: &[f32],
    out: &mut [u8],
) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let ones = [1f32; BLOCK_ELEMS];
    let w = if w.iter().any(|&v| v > 0.0) { w } else { &ones };
    // Weighted RMS in f64, so huge values cannot overflow; non-finite inputs give d = 0.
    let (mut sw, mut swx) = (0f64, 0f64);
    for (&xi, &wi) in x.iter().zip(w) {
        sw += wi as f64;
        swx += wi as f64 * xi as f64 * xi as f64;
    }
    let rms = if sw > 0.0 {
        libm::sqrt(swx / sw) as f32
    } else {
        0.0
    };
    let mut sym = [0u8; BLOCK_ELEMS];
    if rms == 0.0 || !rms.is_finite() {
        pack::<K>(0.0, &sym, out);
        return;
    }
    // The all-zero stream stays in state 0, so `d · codebook[0]` everywhere: with its
    // least-squares scale a constant block comes back exact (to the f16 rounding of d).
    let mut c = [codebook[0] as f32; BLOCK_ELEMS];
    let (_, flat) = error_and_refit(x, w, &c, 0.0);
    let flat = search::round_f16(flat);
    let mut best = (error_and_refit(x, w, &c, flat).0, flat, [0u8; BLOCK_ELEMS]);
    let mut d = search::round_f16(rms / unit);
    for _pass in 0..2 {
        viterbi::<K>(codebook, x, w, d, &mut sym);
        path_levels::<K>(codebook, &sym, &mut c);
        let (err, refit) = error_and_refit(x, w, &c, d);
        if err < best.0 {
            best = (err, d, sym);
        }
        let refit = search::round_f16(refit);
        let (err, _) = error_and_refit(x, w, &c, refit);
        if err < best.0 {
            best = (err, refit, sym);
        }
        if refit == d || refit == 0.0 {
            break;
        }
        d = refit;
    }
    pack::<K>(best.1, &best.2, out);
}

/// Reference dot product with 64 f32 values: `d · Σ codebook[state(i)]·x`.
#[inline(always)]
pub fn dot_f32<const K: usize>(codebook: &[i8; STATES], block: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(block.len(), block_bytes(K));
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let qs = &block[OFF_QS..];
    let s: f32 = x
        .iter()
        .enumerate()
        .map(|(i, &xi)| codebook[state::<K>(qs, i)] as f32 * xi)
        .sum();
    f16_at(block, OFF_D) * s
}

/// Reference dot product with two 8-bit activation blocks (elements 0..32 and 32..64):
/// `d · Σₛ daₛ · Σ codebook[state]·qa`, the inner sums in i32.
#[inline(always)]
pub fn dot_q8<const K: usize>(codebook: &[i8; STATES], block: &[u8], act: &[BlockQ8Act]) -> f32 {
    debug_assert_eq!(block.len(), block_bytes(K));
    debug_assert_eq!(act.len(), BLOCK_ELEMS / QK8);
    let d = f16_at(block, OFF_D);
    let qs = &block[OFF_QS..];
    let mut s = 0f32;
    for (half, a) in act.iter().enumerate() {
        let q = |j: usize| codebook[state::<K>(qs, half * QK8 + j)] as i32;
        s += a.d * isum32(&a.qs, (0..QK8).map(q)) as f32;
    }
    d * s
}

/// Stamps a trellis format's block functions and the tests every trellis format runs into the
/// module that invokes it (`tq2`, `tq3`, `tq4`), from that module's `K`, `UNIT` and `CODEBOOK`.
/// The module keeps only what is its own: layout doc, constants, `SPEC` and its measured numbers.
macro_rules! trellis_format {
    () => {
        /// Weights per block.
        pub const BLOCK_ELEMS: usize = $crate::quant::vspec::trellis::BLOCK_ELEMS;
        /// Bytes per block.
        pub const BLOCK_BYTES: usize = $crate::quant::vspec::trellis::block_bytes(K);

        /// Decode one block: `out[i] = d * CODEBOOK[state(i)]`.
        pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
            $crate::quant::vspec::trellis::decode::<K>(&CODEBOOK, block, out);
        }

        /// Rewrite one block as two Q8_0 blocks with the same values (`trellis::expand_q8_0`).
        pub fn expand_q8_0(block: &[u8], out: &mut [u8]) {
            $crate::quant::vspec::trellis::expand_q8_0::<K>(&CODEBOOK, block, out);
        }

        /// Store `d` and the `K`-bit symbols `sym` as one block.
        pub fn pack(d: f32, sym: &[u8], out: &mut [u8]) {
            $crate::quant::vspec::trellis::pack::<K>(d, sym, out);
        }

        /// Quantize one block with importance weights `w` (`trellis::quantize`).
        pub fn quantize_block_weighted(x: &[f32], w: &[f32], out: &mut [u8]) {
            $crate::quant::vspec::trellis::quantize::<K>(&CODEBOOK, UNIT, x, w, out);
        }

        /// Quantize one block with the default weights of `search::default_weights`.
        pub fn quantize_block(x: &[f32], out: &mut [u8]) {
            let mut w = [0f32; BLOCK_ELEMS];
            $crate::quant::search::default_weights(x, &mut w);
            quantize_block_weighted(x, &w, out);
        }

        /// Reference dot product with 64 f32 values: `d · Σ CODEBOOK[state(i)]·x`.
        pub fn dot_f32(block: &[u8], x: &[f32]) -> f32 {
            $crate::quant::vspec::trellis::dot_f32::<K>(&CODEBOOK, block, x)
        }

        /// Reference dot product with two 8-bit activation blocks:
        /// `d · Σₛ daₛ · Σ CODEBOOK[state]·qa`, the inner sums in i32.
        pub fn dot_q8(block: &[u8], act: &[$crate::quant::act_q8::BlockQ8Act]) -> f32 {
            $crate::quant::vspec::trellis::dot_q8::<K>(&CODEBOOK, block, act)
        }

        #[cfg(test)]
        mod trellis_format_tests {
            use super::*;
            use $crate::quant::act_q8::testutil::*;
            use $crate::quant::vspec::trellis::{self, testutil::*};

            #[test]
            fn sizes_match_format() {
                assert_eq!(FORMAT.block_bytes(), BLOCK_BYTES);
                assert_eq!(FORMAT.block_elems(), BLOCK_ELEMS);
                assert_eq!(FORMAT.bits_per_weight(), (BLOCK_BYTES * 8) as f64 / 64.0);
                assert_eq!(FORMAT.bits_per_weight(), K as f64 + 0.25);
            }

            #[test]
            fn layout_matches_doc() {
                check_layout::<K>(&CODEBOOK);
            }

            #[test]
            fn expansion_to_q8_0_is_exact() {
                check_expansion::<K>(&CODEBOOK);
            }

            #[test]
            fn viterbi_is_optimal_on_short_blocks() {
                check_viterbi_optimal::<K>(&CODEBOOK);
            }

            #[test]
            fn special_blocks() {
                check_codebook_special_blocks(
                    quantize_block,
                    dequantize_block,
                    BLOCK_BYTES,
                    BLOCK_ELEMS,
                );
            }

            #[test]
            fn decode_never_panics_any_bytes() {
                $crate::quant::gguf::testutil::decode_never_panics(
                    dequantize_block,
                    BLOCK_BYTES,
                    BLOCK_ELEMS,
                    &[trellis::OFF_D],
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
                    &[trellis::OFF_D],
                );
            }

            #[test]
            fn spec_is_this_file() {
                let spec = FORMAT.spec();
                assert_eq!(spec.block_bytes, BLOCK_BYTES);
                match spec.gptq {
                    Some($crate::quant::gptq::GptqCode::Trellis(code)) => {
                        assert!(core::ptr::eq(code.codebook, &CODEBOOK));
                    }
                    _ => panic!("{} has no trellis GPTQ hook", spec.name),
                }
            }
        }
    };
}
pub(crate) use trellis_format;

/// Tests every trellis format runs on itself.
#[cfg(test)]
pub mod testutil {
    use super::*;
    use crate::quant::gguf::testutil::Rng;
    use alloc::vec::Vec;

    /// The stream holds each symbol where the doc says, and each weight decodes from the
    /// 8-bit window ending at its symbol.
    pub fn check_layout<const K: usize>(codebook: &[i8; STATES]) {
        let sym: [u8; 64] = core::array::from_fn(|i| ((i * 5 + i / 9) % (1 << K)) as u8);
        let mut b = alloc::vec![0u8; block_bytes(K)];
        pack::<K>(0.5, &sym, &mut b);
        let bit = |k: usize| (b[OFF_QS + k / 8] >> (k % 8)) & 1;
        let mut out = [0f32; 64];
        decode::<K>(codebook, &b, &mut out);
        for i in 0..64 {
            let got: u8 = (0..K).map(|j| bit(K * i + j) << j).sum();
            assert_eq!(got, sym[i], "symbol {i}");
            let mut st = 0usize;
            for j in 0..8 {
                let k = (K * i + K) as isize - 8 + j as isize;
                if k >= 0 {
                    st |= (bit(k as usize) as usize) << j;
                }
            }
            assert_eq!(state::<K>(&b[OFF_QS..], i), st, "state {i}");
            assert_eq!(out[i], 0.5 * codebook[st] as f32, "element {i}");
        }
    }

    /// Random blocks (any stream bytes; scales of every kind, subnormal, infinite and NaN
    /// included) decode to the same f32 bits as the two Q8_0 blocks they expand into.
    pub fn check_expansion<const K: usize>(codebook: &[i8; STATES]) {
        let mut rng = Rng::new(K as u64 + 11);
        let scales: [u16; 6] = [0x3C00, 0x0001, 0x8000, 0x7C00, 0x7E00, 0xFBFF];
        for round in 0..200 {
            let mut b = alloc::vec![0u8; block_bytes(K)];
            rng.fill_bytes(&mut b);
            if round < scales.len() {
                b[OFF_D..OFF_D + 2].copy_from_slice(&scales[round].to_le_bytes());
            }
            let mut expanded = [0u8; EXPANDED_BYTES];
            expand_q8_0::<K>(codebook, &b, &mut expanded);
            let (mut want, mut got) = ([0f32; 64], [0f32; 64]);
            decode::<K>(codebook, &b, &mut want);
            for (h, half) in expanded.chunks_exact(q8_0::BLOCK_BYTES).enumerate() {
                q8_0::dequantize_block(half, &mut got[32 * h..32 * h + 32]);
            }
            for i in 0..64 {
                assert_eq!(
                    got[i].to_bits(),
                    want[i].to_bits(),
                    "round {round}, weight {i}"
                );
            }
        }
    }

    /// Viterbi against every stream of a few symbols.
    pub fn check_viterbi_optimal<const K: usize>(codebook: &[i8; STATES]) {
        let n = 12 / K; // 4096 streams
        let mut rng = Rng::new(33);
        for case in 0..30 {
            let x: Vec<f32> = rng.normals(n).iter().map(|v| v * 40.0).collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + ((case + i) % 3) as f32).collect();
            let mut sym = [0u8; 6];
            let got = viterbi::<K>(codebook, &x, &w, 1.25, &mut sym);
            let cost = |s: &[u8]| {
                let mut c = [0f32; 6];
                path_levels::<K>(codebook, s, &mut c[..n]);
                (0..n)
                    .map(|i| w[i] * (x[i] - 1.25 * c[i]).powi(2))
                    .sum::<f32>()
            };
            let mut best = f32::INFINITY;
            for k in 0..1u32 << (K * n) {
                let s: Vec<u8> = (0..n)
                    .map(|i| ((k >> (K * i)) & ((1 << K) - 1)) as u8)
                    .collect();
                best = best.min(cost(&s));
            }
            assert!(
                (got - best).abs() <= 1e-4 * best.max(1.0),
                "{got} vs {best}"
            );
            assert!((cost(&sym[..n]) - got).abs() <= 1e-4 * got.max(1.0));
        }
    }

    /// Mean squared error per weight of `quant`/`deq` on N(0,1) values with uniform weights.
    pub fn gaussian_mse(
        quant: fn(&[f32], &[f32], &mut [u8]),
        deq: fn(&[u8], &mut [f32]),
        bytes: usize,
    ) -> f64 {
        let x = Rng::new(5).normals(64 * 256);
        let ones = [1f32; BLOCK_ELEMS];
        let (mut b, mut y) = (alloc::vec![0u8; bytes], [0f32; BLOCK_ELEMS]);
        let mut e = 0f64;
        for xs in x.chunks_exact(BLOCK_ELEMS) {
            quant(xs, &ones, &mut b);
            deq(&b, &mut y);
            e += xs
                .iter()
                .zip(&y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
        }
        e / x.len() as f64
    }
}
