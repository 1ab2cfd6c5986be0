//! The 8-bit-activation matmuls of the x86-64 tiers: one file per weight format family holds
//! its block decoder ([`Q8Format::decode`], 32-lane byte vectors: signed weights, or unsigned
//! quants whose block also has a min), and the drivers multiply the decoded blocks with the
//! activation quants:
//!
//! - [`lanes8`] (AVX2) and [`rows8`] / `segmented` (AVX-512): eight or sixteen rows at a time,
//!   one row per f32 lane, for the formats of 32 or 64 weights per block;
//! - [`kquant`] (AVX2): one row at a time for the 256-weight super-blocks, up to four tokens per
//!   decoded block ([`for_row_tiles`]); [`kquant_wide`] (AVX-512): the same decoders feeding the
//!   sixteen-row segmented driver.
//!
//! Every output's sum runs through the same instructions in the same order whatever the token
//! blocking or row split, so results are bit-identical for any thread count and step size.

mod affine;
mod codebook;
pub(crate) mod kquant;
pub(crate) mod kquant_lanes8;
mod kquant_scales;
pub(crate) mod kquant_wide;
pub(crate) mod lanes8;
mod legacy;
mod one_token;
pub(crate) mod rows8;
mod segmented;
pub(crate) mod split512;
mod trellis;
pub(crate) mod trellis_rows16;

use crate::quant::act_q8::{BlockQ8Act, QK8};
use core::arch::x86_64::*;

pub(crate) use affine::{Vq2, Vq3, Vq4};
pub(crate) use codebook::{Iq4Nl, Nq3};
pub(crate) use kquant::{Iq4Xs, Q2K, Q3K, Q4K, Q5K, Q6K};
pub(crate) use legacy::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
pub(crate) use trellis::{Tq2, Tq2Vbmi, Tq3, Tq3Vbmi, Tq4, Tq4Vbmi};

/// One block's weights as up to two 32-lane byte vectors (`ELEMS / 32` used). The drivers read
/// the block's scale and min from its first bytes themselves (see [`Q8Format`]).
pub(crate) struct Decoded {
    pub w: [__m256i; 2],
}

/// A weight format's AVX2 block decoder for the 8-bit matmul.
///
/// Every block starts with its f16 scale, then (unsigned formats) its f16 min: the AVX-512
/// driver reads those bytes directly for eight rows at once (`rows8::scales_and_mins`), and the
/// kernel suite checks every format against its scalar reference.
pub(crate) trait Q8Format {
    /// Weights per block (32 or 64).
    const ELEMS: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// `true`: lanes hold signed weights in `-128..=127`; `false`: unsigned quants in `0..=127`
    /// whose value is `d·q + m`.
    const SIGNED: bool;

    /// For signed formats whose weights are `q − OFFSET` with `q` in `0..=127` (Q4_0, Q5_0): the
    /// offset, so that the AVX2 driver can multiply the unsigned `q` ([`Q8Format::decode_offset`])
    /// and take `OFFSET · Σa` back from the integer sums, instead of moving each weight's sign
    /// onto the activations. 0 for the others.
    const OFFSET: i32 = 0;

    /// Decodes one block (`block.len() == BYTES`).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C, and for the AVX-512 decoders (the `…Vbmi` types,
    /// installed only by the AVX-512 tier) AVX-512 F, BW, VL and VBMI.
    unsafe fn decode(block: &[u8]) -> Decoded;

    /// [`Q8Format::decode_biased`] of a 64-weight block as one 512-bit vector (weights 0..32 in
    /// the low half), for the AVX-512 tier's one-token path. This default joins the halves;
    /// decoders with a 512-bit form (the trellis formats' VBMI ones, VQ2–VQ4) override it.
    ///
    /// # Safety
    /// As [`Q8Format::decode`], and the CPU has the AVX-512 tier's features.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
        // SAFETY: this function's contract includes decode's.
        let dec = unsafe { Self::decode_biased(block) };
        join_i(dec.w[0], dec.w[1])
    }

    /// For the VBMI trellis decoders: the bits each weight adds to the stream and the codebook
    /// biased for `vpdpbusd`, with which [`trellis_rows16`] runs the interleaved layout
    /// (`model::Layout::Rows16`); `None` for the other formats.
    const ROWS16: Option<(usize, &'static [i8; crate::quant::vspec::trellis::STATES])> = None;

    /// Whether [`Q8Format::decode_biased_halves_512`] costs no more than
    /// [`Q8Format::decode_biased_512`] (the VBMI trellis decoders gather their windows in either
    /// order): the driver for CPUs that split 512-bit operations (`split512`) then takes one
    /// token of these 64-weight blocks as 256-bit pairs.
    const HALVES_512: bool = false;

    /// [`Q8Format::decode_biased_512`] with each chunk's halves apart: the low 256 bits hold
    /// weights 0..16 then 32..48, the high 256 bits 16..32 then 48..64 (per 128-bit lane one
    /// chunk's half, as [`Q8Format::decode_halves`] lays them out). This default moves the
    /// 128-bit lanes of the plain decode.
    ///
    /// # Safety
    /// As [`Q8Format::decode_biased_512`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_biased_halves_512(block: &[u8]) -> __m512i {
        // SAFETY: this function's contract is decode_biased_512's.
        let v = unsafe { Self::decode_biased_512(block) };
        _mm512_shuffle_i64x2::<0b11_01_10_00>(v, v)
    }

    /// [`Q8Format::decode_biased`] of two consecutive 32-weight blocks as one 512-bit vector
    /// (`b0`'s weights in the low half), for the AVX-512 tier's one-token path. This default
    /// joins the two decodes; decoders with a 512-bit form (Q4_0, Q4_1, IQ4_NL) override it.
    ///
    /// # Safety
    /// As [`Q8Format::decode`] (for both blocks), and the CPU has the AVX-512 tier's features.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_pair_biased_512(b0: &[u8], b1: &[u8]) -> __m512i {
        // SAFETY: this function's contract includes decode's for both blocks.
        let (d0, d1) = unsafe { (Self::decode_biased(b0), Self::decode_biased(b1)) };
        join_i(d0.w[0], d1.w[0])
    }

    /// Whether the AVX2 one-token path takes two 32-weight chunks at a time, halves together:
    /// formats with unsigned quants of at most [`Q8Format::PAIR_QUANT_BITS`] bits (stored, or
    /// plus [`Q8Format::OFFSET`]), whose `vpmaddubsw` pairs (`≤ 2 · 31 · 128`) two of them can
    /// add in 16 bits. 32-weight formats implement [`Q8Format::decode_pair_halves`] (two
    /// blocks), 64-weight ones [`Q8Format::decode_halves`] (one block).
    const PAIR_HALVES: bool = false;

    /// Bits of the unsigned quants the pair path multiplies: 4, or 5 (Q5_0, Q5_1). A 16-bit
    /// word then holds the sum of at most 16 products of 4-bit quants (`≤ 30720`) or 8 of
    /// 5-bit ones (`≤ 31744`), which decides where the reduction widens to 32 bits.
    const PAIR_QUANT_BITS: u32 = 4;

    /// A 64-weight block as its unsigned quants, halves together: the first vector holds
    /// weights 0..16 then 32..48, the second 16..32 then 48..64 (each chunk's first and second
    /// halves, as [`Q8Format::decode_pair_halves`] lays out two blocks), for the AVX2 tier's
    /// one-token path where [`Q8Format::PAIR_HALVES`]. This default rearranges the decode.
    ///
    /// # Safety
    /// As [`Q8Format::decode`].
    #[inline(always)]
    unsafe fn decode_halves(block: &[u8]) -> [__m256i; 2] {
        // SAFETY: this function's contract is decode's; AVX2 is part of it.
        unsafe {
            let d = Self::decode(block);
            [
                _mm256_permute2x128_si256::<0x20>(d.w[0], d.w[1]),
                _mm256_permute2x128_si256::<0x31>(d.w[0], d.w[1]),
            ]
        }
    }

    /// How many bits up [`Q8Format::decode_halves_vnni`] leaves the second chunk's quants (the
    /// upper 128-bit lane of both vectors): the VNNI one-token path (`split512`) shifts that
    /// chunk's integer sums back down, exactly (every product is a multiple of `2^k`). 0 where
    /// the decode is [`Q8Format::decode_halves`] itself.
    const HALVES_VNNI_SHIFT: i32 = 0;

    /// [`Q8Format::decode_halves`] for `vpdpbusd`, whose 32-bit sums have room for quants
    /// scaled up: the second chunk's quants may come multiplied by `2^HALVES_VNNI_SHIFT`
    /// where that saves instructions (VQ4: a nibble's high half kept in place). This default is
    /// `decode_halves`.
    ///
    /// # Safety
    /// As [`Q8Format::decode`], and the CPU has AVX-512 F, BW and VL.
    #[inline(always)]
    unsafe fn decode_halves_vnni(block: &[u8]) -> [__m256i; 2] {
        // SAFETY: this function's contract includes decode_halves'.
        unsafe { Self::decode_halves(block) }
    }

    /// [`Q8Format::decode_pair_halves`] with AVX-512 VBMI at hand (the VNNI one-token path,
    /// `split512`): the same bytes, where its instructions save some (Q5_0, Q5_1: the fifth
    /// bits moved into place by `vpmultishiftqb`). This default is `decode_pair_halves`.
    ///
    /// # Safety
    /// As [`Q8Format::decode`] (for both blocks), and the CPU has AVX-512 F, BW, VL and VBMI.
    #[inline(always)]
    unsafe fn decode_pair_halves_vnni(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        // SAFETY: this function's contract includes decode_pair_halves'.
        unsafe { Self::decode_pair_halves(b0, b1) }
    }

    /// Two consecutive 32-weight blocks as their unsigned quants (plus [`Q8Format::OFFSET`]),
    /// halves together: the first vector holds weights 0..16 of `b0` then of `b1`, the second
    /// weights 16..32 of each, for the AVX2 tier's one-token path where
    /// [`Q8Format::PAIR_HALVES`]. This default rearranges two decodes; the nibble formats
    /// override it with one nibble split of one joined load.
    ///
    /// # Safety
    /// As [`Q8Format::decode`] (for both blocks).
    #[inline(always)]
    unsafe fn decode_pair_halves(b0: &[u8], b1: &[u8]) -> [__m256i; 2] {
        // SAFETY: this function's contract is decode's, for both blocks; AVX2 is part of it.
        unsafe {
            let (d0, d1) = if Self::OFFSET != 0 {
                (Self::decode_offset(b0), Self::decode_offset(b1))
            } else {
                (Self::decode(b0), Self::decode(b1))
            };
            [
                _mm256_permute2x128_si256::<0x20>(d0.w[0], d1.w[0]),
                _mm256_permute2x128_si256::<0x31>(d0.w[0], d1.w[0]),
            ]
        }
    }

    /// The block's weights plus [`Q8Format::OFFSET`] (called only where that is not 0).
    ///
    /// # Safety
    /// As [`Q8Format::decode`].
    #[inline(always)]
    unsafe fn decode_offset(block: &[u8]) -> Decoded {
        // SAFETY: this function's contract is decode's.
        let mut dec = unsafe { Self::decode(block) };
        // SAFETY: AVX2 is part of decode's contract; the intrinsics touch registers only.
        unsafe {
            let offset = _mm256_set1_epi8(Self::OFFSET as i8);
            dec.w = dec.w.map(|w| _mm256_add_epi8(w, offset));
        }
        dec
    }

    /// [`Q8Format::decode`] in `vpdpbusd`'s unsigned operand form: signed weights as `w + 128`
    /// (bytes read as `u8`), unsigned quants unchanged. Users take the bias back as `128 · Σa`.
    /// This default adds it after decoding; decoders that already add a constant or read a
    /// table fold it in for free.
    ///
    /// # Safety
    /// As [`Q8Format::decode`].
    #[inline(always)]
    unsafe fn decode_biased(block: &[u8]) -> Decoded {
        // SAFETY: this function's contract is decode's.
        let mut dec = unsafe { Self::decode(block) };
        if Self::SIGNED {
            // SAFETY: AVX2 is part of decode's contract, already met by the caller; the
            // intrinsics touch registers only.
            unsafe {
                let bias = _mm256_set1_epi8(-128);
                dec.w = dec.w.map(|w| _mm256_xor_si256(w, bias));
            }
        }
        dec
    }
}

/// Two 256-bit halves as one 512-bit vector (`lo` in lanes 0–7).
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn join_i(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `low | (rotl(plane, rot) & value)`, the rotation per qword: a bit plane's bits rotated onto
/// `value`'s bit of their own bytes and merged into weights whose `value` bit is clear, one
/// rotate and one `vpternlogq` (0xF8: the truth table of `a | (b & c)`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
#[inline]
pub(crate) fn or_rotated_bits(low: __m512i, plane: __m512i, rot: __m512i, value: i8) -> __m512i {
    _mm512_ternarylogic_epi64::<0xF8>(low, _mm512_rolv_epi64(plane, rot), _mm512_set1_epi8(value))
}

/// 16 bytes at `block[off..off + 16]`.
#[inline(always)]
pub(crate) fn load16(block: &[u8], off: usize) -> __m128i {
    let s = &block[off..off + 16];
    // SAFETY: `s` is 16 readable bytes (bounds-checked slice); loadu needs no alignment.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// 32 bytes at `block[off..off + 32]`.
#[inline(always)]
pub(crate) fn load32(block: &[u8], off: usize) -> __m256i {
    let s = &block[off..off + 32];
    // SAFETY: `s` is 32 readable bytes (bounds-checked slice); loadu needs no alignment.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// 8 bytes at `block[off..off + 8]` in the low half of an xmm register.
#[inline(always)]
pub(crate) fn load8(block: &[u8], off: usize) -> __m128i {
    let s: [u8; 8] = block[off..off + 8].try_into().unwrap_or([0; 8]);
    // SAFETY: plain register move of a value.
    unsafe { _mm_cvtsi64_si128(i64::from_le_bytes(s)) }
}

/// The low nibbles of 16 bytes then their high nibbles: 32 values in `0..16`, element `i < 16`
/// from byte `i`'s low nibble, `i >= 16` from byte `i - 16`'s high nibble (ggml's 32-block
/// nibble order).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn nibbles_32(v: __m128i) -> __m256i {
    // Both halves hold `v` (a broadcast, which a load folds into, costs no shuffle), the high
    // one shifted by 4 (a per-dword shift works: the mask drops what crosses nibbles).
    let both = _mm256_broadcastsi128_si256(v);
    let shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

/// The nibbles of two 32-weight blocks' 16 quant bytes (`block0[off..]`, `block1[off..]`) in
/// [`nibbles_32`]'s order, `block0`'s in the low half: each 16 bytes in two 128-bit lanes, the
/// second shifted by 4.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
#[inline]
pub(crate) fn nibbles_pair_512(block0: &[u8], block1: &[u8], off: usize) -> __m512i {
    let v = join_i(
        _mm256_broadcastsi128_si256(load16(block0, off)),
        _mm256_broadcastsi128_si256(load16(block1, off)),
    );
    let shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(0x0F))
}

/// Sums the 8 lanes of `v` in a fixed order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

pub(crate) use rows8 as avx512;

/// Rounds like `libm::roundf` (half away from zero), exactly, for `|v| < 2^23`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn round_half_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let sign = _mm256_set1_ps(-0.0);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
    _mm256_add_ps(t, _mm256_and_ps(up, one))
}

/// The activation quantizer, bit-identical to [`BlockQ8Act::quantize`]: NaN inputs count as 0 in
/// the maximum and quantize to 0, like the scalar `as i8`. Eight blocks at a time, so their
/// maxima, scales and sums are reduced and divided as lanes of one vector each (one block at a
/// time this was ~50 cycles a block, ~5 % of a prefill, mostly horizontal reductions and two
/// scalar divisions); the last blocks as one group padded with zero blocks.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize(x: &[f32], out: &mut [BlockQ8Act]) {
    let mut groups = out.chunks_exact_mut(8);
    let mut xs = x.chunks_exact(8 * QK8);
    for (b8, x8) in groups.by_ref().zip(xs.by_ref()) {
        quantize8(x8, b8);
    }
    let rest = groups.into_remainder();
    if !rest.is_empty() {
        // The last blocks padded with zero blocks (which quantize to zeros, unused).
        let n = rest.len();
        let mut padded = [0f32; 8 * QK8];
        padded[..n * QK8].copy_from_slice(xs.remainder());
        let mut blocks = [BlockQ8Act::ZERO; 8];
        quantize8(&padded, &mut blocks);
        rest.copy_from_slice(&blocks[..n]);
    }
}

/// Blocks `x[32b .. 32b + 32]` quantized into `out[b]` for `b < 8`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn quantize8(x: &[f32], out: &mut [BlockQ8Act]) {
    assert!(x.len() == 8 * QK8 && out.len() == 8);
    let sign = _mm256_set1_ps(-0.0);
    // NaN lanes zeroed (they count as 0 in the maximum and quantize to 0).
    let mut v = [[_mm256_setzero_ps(); 4]; 8];
    let mut m = [_mm256_setzero_ps(); 8];
    for (b, (vb, mb)) in v.iter_mut().zip(m.iter_mut()).enumerate() {
        for (i, vi) in vb.iter_mut().enumerate() {
            let raw = super::ops::load(x, b * QK8 + 8 * i);
            *vi = _mm256_and_ps(raw, _mm256_cmp_ps::<_CMP_ORD_Q>(raw, raw));
        }
        let m01 = _mm256_max_ps(_mm256_andnot_ps(sign, vb[0]), _mm256_andnot_ps(sign, vb[1]));
        let m23 = _mm256_max_ps(_mm256_andnot_ps(sign, vb[2]), _mm256_andnot_ps(sign, vb[3]));
        *mb = _mm256_max_ps(m01, m23);
    }
    // Lane b: block b's largest magnitude (a maximum is exact in any order).
    let amax = max_lanes8(&m);
    let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
    let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
    let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nonzero);
    let mut sums = [_mm256_setzero_si256(); 8];
    for (b, (vb, (o, s))) in v
        .iter()
        .zip(out.iter_mut().zip(sums.iter_mut()))
        .enumerate()
    {
        let idv = _mm256_permutevar8x32_ps(id, _mm256_set1_epi32(b as i32));
        let q: [__m256i; 4] = core::array::from_fn(|i| {
            let r = round_half_away(_mm256_mul_ps(vb[i], idv));
            // Zero what became NaN (inf · 0): the scalar `as i8` maps NaN to 0.
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            _mm256_cvtps_epi32(r)
        });
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_packs_epi16(p01, p23);
        // The packs interleave 128-bit lanes: restore element order.
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let bytes = _mm256_max_epi8(bytes, _mm256_set1_epi8(-127));
        // SAFETY: `o.qs` is 32 writable bytes; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), bytes) };
        let s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes);
        *s = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    }
    // Lane b: block b's integer sum.
    let total = sum_lanes8_i32(&sums);
    let (mut dl, mut sl) = ([0f32; 8], [0i32; 8]);
    super::ops::store(&mut dl, 0, d);
    // SAFETY: `sl` is 8 writable i32; storeu needs no alignment.
    unsafe { _mm256_storeu_si256(sl.as_mut_ptr().cast(), total) };
    for ((o, &d), &s) in out.iter_mut().zip(&dl).zip(&sl) {
        o.d = d;
        o.sum = s;
    }
}

/// Lane `j` of the result is the sum of `p[j]`'s eight lanes (exact: integers).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_lanes8_i32(p: &[__m256i; 8]) -> __m256i {
    let [low, high] = sum_lanes8_halves(p);
    _mm256_add_epi32(low, high)
}

/// Lane `j` of the first vector is the sum of `p[j]`'s lanes 0–3, of the second its lanes 4–7
/// (exact: integers).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_lanes8_halves(p: &[__m256i; 8]) -> [__m256i; 2] {
    // Pairwise sums within 128-bit lanes: after two rounds, the low half of `s0123` holds
    // vectors 0–3's sums over lanes 0–3 and its high half their sums over lanes 4–7.
    let s01 = _mm256_hadd_epi32(p[0], p[1]);
    let s23 = _mm256_hadd_epi32(p[2], p[3]);
    let s45 = _mm256_hadd_epi32(p[4], p[5]);
    let s67 = _mm256_hadd_epi32(p[6], p[7]);
    let s0123 = _mm256_hadd_epi32(s01, s23);
    let s4567 = _mm256_hadd_epi32(s45, s67);
    [
        _mm256_permute2x128_si256::<0x20>(s0123, s4567),
        _mm256_permute2x128_si256::<0x31>(s0123, s4567),
    ]
}

/// Like `vhaddps` with max: per 128-bit half, (max(a0, a1), max(a2, a3), max(b0, b1),
/// max(b2, b3)).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hmax(a: __m256, b: __m256) -> __m256 {
    _mm256_max_ps(
        _mm256_shuffle_ps::<0b10_00_10_00>(a, b),
        _mm256_shuffle_ps::<0b11_01_11_01>(a, b),
    )
}

/// Lane `j` of the result is the largest of `m[j]`'s eight lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn max_lanes8(m: &[__m256; 8]) -> __m256 {
    let m0123 = hmax(hmax(m[0], m[1]), hmax(m[2], m[3]));
    let m4567 = hmax(hmax(m[4], m[5]), hmax(m[6], m[7]));
    _mm256_max_ps(
        _mm256_permute2f128_ps::<0x20>(m0123, m4567),
        _mm256_permute2f128_ps::<0x31>(m0123, m4567),
    )
}
