//! The GGUF (ggml) weight formats, one file each, with the exact ggml block layouts.
//!
//! Layouts follow ggml's `ggml-common.h` (`block_q4_0`, `block_q4_K`, ...) and its scalar
//! `dequantize_row_*` functions; the fixtures in `core/tests/fixtures/quant/` come from gguf-py
//! (`gguf` 0.19.0, `gguf/quants.py`), an independent numpy implementation of the same formats.
//!
//! Conventions shared by every file here:
//! - blocks are byte slices that need not be aligned; multi-byte fields are read with
//!   `from_le_bytes`, never by casting;
//! - decoders never panic on any byte content (NaN or infinite f16 scales just give NaN or
//!   infinite outputs); lengths are checked with `debug_assert!` only, since
//!   [`super::dequantize_row`] checks them for callers;
//! - "element i" in a layout comment is the index within the block, 0-based.

pub mod float;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;

use crate::quant::act_q8::{BlockQ8Act, QK8};
use half::f16;

/// Weights per K-quant super-block (ggml `QK_K`).
pub const QK_K: usize = 256;

/// The f16 at byte `off` of `b` (little-endian), widened to f32 exactly.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Store `v` rounded to f16 (round to nearest even, like ggml's `GGML_FP32_TO_FP16`) at byte `off`.
#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes `q` of Q4_K and Q5_K
/// (ggml `get_scale_min_k4`). For `j < 4` they are the low 6 bits of `q[j]` and `q[j + 4]`; for
/// `j >= 4` the low 4 bits come from the nibbles of `q[j + 4]` and the high 2 bits from the top
/// bits of `q[j - 4]` (scale) and `q[j]` (min).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The reference dot of one 256-weight super-block (Q2_K–Q6_K, IQ4_XS) with its eight 8-bit
/// activation blocks, in the integer form the 8-bit kernels use: per activation block `a`,
/// `a.d · (d · Σ sc·q·qa − dmin · Σ m·qa)`, both sums over the block's 32 elements in i32, the
/// blocks' results added in order.
///
/// `quant(i)` is element `i`'s integer quant (signed where the format's is), `scale(s)` and
/// `min = Some((dmin, m))` the integer scale and min of sub-block `s` (`sub_len` weights);
/// `min = None` for the formats without mins. Neither sum can overflow: each of its 32 terms is
/// at most 128 · 127 · 127 in magnitude.
pub(crate) fn dot_q8_superblock(
    act: &[BlockQ8Act],
    sub_len: usize,
    d: f32,
    quant: impl Fn(usize) -> i32,
    scale: impl Fn(usize) -> i32,
    min: Option<(f32, &dyn Fn(usize) -> i32)>,
) -> f32 {
    debug_assert_eq!(act.len(), QK_K / QK8);
    let mut total = 0f32;
    for (j, a) in act.iter().enumerate() {
        let (mut isum, mut msum) = (0i32, 0i32);
        for (k, &qa) in a.qs.iter().enumerate() {
            let i = QK8 * j + k;
            let s = i / sub_len;
            isum += scale(s) * quant(i) * qa as i32;
            if let Some((_, m)) = min {
                msum += m(s) * qa as i32;
            }
        }
        total += match min {
            Some((dmin, _)) => a.d * (d * isum as f32 - dmin * msum as f32),
            None => a.d * (d * isum as f32),
        };
    }
    total
}

/// Test helpers shared by the format files: a deterministic RNG and error measures.
#[cfg(test)]
pub(crate) mod testutil {
    use alloc::vec;
    use alloc::vec::Vec;

    /// splitmix64: deterministic, no dependencies.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [-1, 1).
        pub fn uniform(&mut self) -> f32 {
            ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        /// Roughly standard normal (Irwin-Hall of 12 uniforms).
        pub fn normal(&mut self) -> f32 {
            let s: f32 = (0..12).map(|_| (self.uniform() + 1.0) * 0.5).sum();
            s - 6.0
        }
        pub fn fill_bytes(&mut self, b: &mut [u8]) {
            for x in b {
                *x = self.next_u64() as u8;
            }
        }
        pub fn normals(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.normal()).collect()
        }
    }

    /// RMS of `a - b` divided by the RMS of `a`.
    pub fn rel_rmse(a: &[f32], b: &[f32]) -> f32 {
        let (mut e, mut s) = (0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            e += ((x - y) as f64).powi(2);
            s += (x as f64).powi(2);
        }
        if s == 0.0 {
            e.sqrt() as f32
        } else {
            (e / s).sqrt() as f32
        }
    }

    /// Quantize `x` block by block, decode it back, return the decoded values.
    pub fn round_trip(
        quant: fn(&[f32], &mut [u8]),
        deq: fn(&[u8], &mut [f32]),
        bytes: usize,
        elems: usize,
        x: &[f32],
    ) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        let mut blk = vec![0u8; bytes];
        for (xb, yb) in x.chunks_exact(elems).zip(y.chunks_exact_mut(elems)) {
            quant(xb, &mut blk);
            deq(&blk, yb);
        }
        y
    }

    /// Decode random blocks, all-0x00 and all-0xFF blocks: must not panic. With the f16 fields at
    /// `f16_offsets` forced to finite values, every output must be finite.
    pub fn decode_never_panics(
        deq: fn(&[u8], &mut [f32]),
        bytes: usize,
        elems: usize,
        f16_offsets: &[usize],
    ) {
        let mut rng = Rng::new(0xDEC0DE);
        let mut blk = vec![0u8; bytes];
        let mut out = vec![0f32; elems];
        for fill in [0x00u8, 0xFF, 0x80, 0x7F, 0x55, 0xAA] {
            blk.iter_mut().for_each(|b| *b = fill);
            deq(&blk, &mut out);
        }
        for _ in 0..2000 {
            rng.fill_bytes(&mut blk);
            deq(&blk, &mut out);
            for &o in f16_offsets {
                super::put_f16(&mut blk, o, rng.normal() * 1000.0);
            }
            deq(&blk, &mut out);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        // Largest finite f16 scales keep outputs finite too.
        blk.iter_mut().for_each(|b| *b = 0xFF);
        for &o in f16_offsets {
            super::put_f16(&mut blk, o, 65504.0);
        }
        deq(&blk, &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
