//! The AVX-512 tier's matmul for CPUs that issue a 512-bit operation as two 256-bit halves
//! (AMD Zen 4): one-token steps through the AVX2 tier's eight-row driver ([`super::lanes8`]),
//! steps of more tokens through [`super::rows8`].
//!
//! On such a CPU a 512-bit instruction costs what two 256-bit ones do, so a driver wins by
//! spending fewer 256-bit slots per weight, not fewer instructions. For Q4_0 and Q4_1 one token
//! costs the AVX2 driver about ten 256-bit operations per row and 64 weights (two
//! `vpmaddubsw` added in 16 bits, one `vpmaddwd` shared by two chunks), where `rows8` spends
//! about eight 512-bit ones (sixteen slots). `TIER=avx2|avx512 ROWS=120000 matmul_min 1` on a
//! Zen 4 (2026-12-04, three alternating rounds, G weights/s, streamed from memory): Q4_0 31.3–32.0
//! against 27.0–27.5, Q4_1 28.8–30.2 against 26.2–27.7; every other format of 32 or 64 weights
//! was as fast or faster on `rows8`, and every format's prefill (8+ tokens) twice as fast there.
//!
//! Both drivers end each 32-weight chunk with the same exact integer sum and hand it to the
//! same float arithmetic ([`super::rows8::accumulate`], chunk by chunk on two chains), so an
//! output has the same bits whichever driver computed it: decoding token by token still gives
//! a prefill's bits (the SIMD suite's one-token check, stamped on this table too).

use super::{lanes8, rows8, BlockQ8Act, Q8Format};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::ops::Range;

/// The 8-bit matmul for format `F` over rows `rows`: [`lanes8::matmul`] for one token,
/// [`rows8::matmul`] otherwise.
///
/// # Safety
/// As [`rows8::matmul`] (whose features include [`lanes8::matmul`]'s).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn matmul<F: Q8Format>(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    if tokens == 1 {
        // SAFETY: this function's contract, which includes AVX2, FMA and F16C.
        unsafe { lanes8::matmul::<F>(w, x, tokens, rows, out) }
    } else {
        // SAFETY: this function's contract.
        unsafe { rows8::matmul::<F>(w, x, tokens, rows, out) }
    }
}
