//! The super-block formats' scales and mins, eight rows at a time with a row per lane
//! ([`ScaleLanes`]), cut out of the packed bytes of all eight rows at once ([`ChunkScaled`]): what
//! both tiers' drivers (`super::kquant_lanes8`, `super::kquant_wide`) multiply the decoded
//! groups' integer sums by. The decoders themselves are in `super::kquant`.

use super::kquant::{Iq4Xs, KQuant, GROUPS, Q2K, Q3K, Q4K, Q5K, Q6K};
use super::load16;
use super::rows8::GROUP;
use core::arch::x86_64::*;

/// Eight rows' super-block scales with one lane per row (lane `i`: row `i`), as both tiers'
/// drivers (`super::kquant_lanes8`, `super::kquant_wide`) apply them.
#[derive(Clone, Copy)]
pub(crate) struct ScaleLanes {
    /// The super-blocks' `d`.
    pub d: __m256,
    /// Their `−dmin` (0 without mins).
    pub neg_dmin: __m256,
    /// Item `k`'s integer scale: chunk `k` (items 0..8), or with [`ChunkScaled::SUB16`]
    /// sub-block `k` (items 0..16).
    pub scales: [__m256i; 16],
    /// Item `k`'s integer min, as for `scales` (without mins untouched).
    pub mins: [__m256i; 16],
}

impl ScaleLanes {
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn zero() -> ScaleLanes {
        ScaleLanes {
            d: _mm256_setzero_ps(),
            neg_dmin: _mm256_setzero_ps(),
            scales: [_mm256_setzero_si256(); 16],
            mins: [_mm256_setzero_si256(); 16],
        }
    }

    /// Chunk `g`'s float lanes, where a 32-weight block has its `d` and `m`: `d · sc_g` and
    /// `−dmin · m_g` (both products exact), or with `sub16` (scales and mins per 16 weights,
    /// applied to the integer sums instead) `d` and `−dmin`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn chunk_d_m(&self, g: usize, sub16: bool) -> (__m256, __m256) {
        if sub16 {
            (self.d, self.neg_dmin)
        } else {
            (
                _mm256_mul_ps(_mm256_cvtepi32_ps(self.scales[g]), self.d),
                _mm256_mul_ps(_mm256_cvtepi32_ps(self.mins[g]), self.neg_dmin),
            )
        }
    }

    /// Items `2g` and `2g + 1` of `items` (`scales` or `mins`): chunk `g`'s halves where scales
    /// are per 16 weights.
    #[inline(always)]
    pub(crate) fn halves(items: &[__m256i; 16], g: usize) -> &[__m256i; 2] {
        &items.as_chunks::<2>().0[g]
    }
}

/// A super-block format whose scales [`ScaleLanes`] carry.
pub(crate) trait ChunkScaled: KQuant {
    /// Scales per 16 weights rather than per 32.
    const SUB16: bool;

    /// The scales of eight rows' super-blocks (each `BYTES` long) as [`ScaleLanes`], cut out
    /// of their bytes for all eight rows at once (each row's scales unpacked in scalar code and
    /// transposed had cost a quarter of a one-token matmul).
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes);
}

/// Bytes `off .. off + 16` of each of eight rows' blocks as four dwords with a row per lane:
/// vector `k` lane `i` is row `i`'s bytes `off + 4k .. off + 4k + 4` (little-endian). Rows `i`
/// and `i + 4` share a register, then one 4 × 4 transpose per 128-bit half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dword_lanes(blocks: &[&[u8]; GROUP], off: usize) -> [__m256i; 4] {
    let mut r = [_mm256_setzero_si256(); 4];
    for (i, r) in r.iter_mut().enumerate() {
        *r = _mm256_set_m128i(load16(blocks[i + 4], off), load16(blocks[i], off));
    }
    let (a, b) = (
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
    );
    let (c, e) = (
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
    );
    [
        _mm256_unpacklo_epi64(a, c),
        _mm256_unpackhi_epi64(a, c),
        _mm256_unpacklo_epi64(b, e),
        _mm256_unpackhi_epi64(b, e),
    ]
}

/// The f16 values in the low and the high 16 bits of each lane of `v`, as f32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn f16_halves(v: __m256i) -> [__m256; 2] {
    let words = _mm256_packus_epi32(
        _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)),
        _mm256_srli_epi32::<16>(v),
    );
    // packus works per 128-bit half: [low 0–3, high 0–3 | low 4–7, high 4–7].
    let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(words);
    [
        _mm256_cvtph_ps(_mm256_castsi256_si128(words)),
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(words)),
    ]
}

/// The `bits`-bit field at bit `shift` of each lane of `v` (`bits` ≥ 32: the lanes shifted).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lane_field(v: __m256i, shift: usize, bits: u32) -> __m256i {
    let v = _mm256_srl_epi32(v, _mm_cvtsi32_si128(shift as i32));
    if bits >= 32 {
        v
    } else {
        _mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1))
    }
}

/// The two f16 values in the last four bytes of each of eight rows' blocks (`bytes` long), as
/// f32 lanes: low half, high half.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn tail_f16_lanes(blocks: &[&[u8]; GROUP], bytes: usize) -> [__m256; 2] {
    f16_halves(dword_lanes(blocks, bytes - 16)[3])
}

/// Byte `j` of each lane of `v`, sign-extended.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lane_byte_signed(v: __m256i, j: usize) -> __m256i {
    let up = _mm256_sll_epi32(v, _mm_cvtsi32_si128(24 - 8 * j as i32));
    _mm256_srai_epi32::<24>(up)
}

/// Q4_K/Q5_K's [`ScaleLanes`] from each row's first 16 bytes (`d`, `dmin`, the 12 packed bytes
/// of `scale_min_k4`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k4_scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
    let [head, q0, q4, q8] = dword_lanes(blocks, 0);
    let [d, dmin] = f16_halves(head);
    out.d = d;
    out.neg_dmin = _mm256_sub_ps(_mm256_setzero_ps(), dmin);
    for j in 0..4 {
        out.scales[j] = lane_field(q0, 8 * j, 6);
        out.mins[j] = lane_field(q4, 8 * j, 6);
        // Sub-blocks 4..8: low 4 bits from bytes 8..12, high 2 bits from the tops of 0..4 / 4..8.
        out.scales[4 + j] = _mm256_or_si256(
            lane_field(q8, 8 * j, 4),
            _mm256_slli_epi32::<4>(lane_field(q0, 8 * j + 6, 2)),
        );
        out.mins[4 + j] = _mm256_or_si256(
            lane_field(q8, 8 * j + 4, 4),
            _mm256_slli_epi32::<4>(lane_field(q4, 8 * j + 6, 2)),
        );
    }
}

impl ChunkScaled for Q4K {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        k4_scale_lanes(blocks, out)
    }
}

impl ChunkScaled for Q5K {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        k4_scale_lanes(blocks, out)
    }
}

impl ChunkScaled for Iq4Xs {
    const SUB16: bool = false;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        // Bytes 0..2 d, 2..4 the scales' high 2 bits, 4..8 their low 4 bits.
        let [head, low, _, _] = dword_lanes(blocks, 0);
        out.d = f16_halves(head)[0];
        for g in 0..GROUPS {
            let high = lane_field(head, 16 + 2 * g, 2);
            let v = _mm256_or_si256(lane_field(low, 4 * g, 4), _mm256_slli_epi32::<4>(high));
            out.scales[g] = _mm256_sub_epi32(v, _mm256_set1_epi32(32));
        }
    }
}

impl ChunkScaled for Q2K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        // Byte s of 0..16: sub-block s's scale (low nibble) and min (high nibble); d and dmin
        // are the block's last four bytes.
        let packed = dword_lanes(blocks, 0);
        let [d, dmin] = tail_f16_lanes(blocks, Self::BYTES);
        out.d = d;
        out.neg_dmin = _mm256_sub_ps(_mm256_setzero_ps(), dmin);
        for s in 0..16 {
            out.scales[s] = lane_field(packed[s / 4], 8 * (s % 4), 4);
            out.mins[s] = lane_field(packed[s / 4], 8 * (s % 4) + 4, 4);
        }
    }
}

impl ChunkScaled for Q3K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        // The block's last 16 bytes (94..110): two of the quants, the 12 packed scale bytes
        // p[0..12] at 96..108 (loaded byte 2 + k), then d.
        let tail = dword_lanes(blocks, 94);
        out.d = f16_halves(tail[3])[1];
        // p[4k .. 4k + 4] as dwords.
        let p = |k: usize| {
            _mm256_or_si256(
                _mm256_srli_epi32::<16>(tail[k]),
                _mm256_slli_epi32::<16>(tail[k + 1]),
            )
        };
        let (p0, p4, p8) = (p(0), p(1), p(2));
        let top = _mm256_set1_epi32(0x8080_8080u32 as i32);
        for t in 0..4 {
            // Sub-blocks 4t .. 4t + 4 as the bytes of one dword: low 4 bits from the low (t < 2)
            // or high nibbles of p[4(t % 2) ..], high 2 bits from bits 2t of p[8 .. 12]; then
            // −32 bytewise (bit 7 set first, so no byte borrows from the next).
            let low = if t % 2 == 0 { p0 } else { p4 };
            let low = lane_field(low, 4 * (t / 2), 32);
            let low = _mm256_and_si256(low, _mm256_set1_epi32(0x0F0F_0F0F));
            let high = lane_field(p8, 2 * t, 32);
            let high = _mm256_and_si256(high, _mm256_set1_epi32(0x0303_0303));
            let v = _mm256_or_si256(low, _mm256_slli_epi32::<4>(high));
            let v = _mm256_sub_epi32(_mm256_or_si256(v, top), _mm256_set1_epi32(0x2020_2020));
            let v = _mm256_xor_si256(v, top);
            for r in 0..4 {
                out.scales[4 * t + r] = lane_byte_signed(v, r);
            }
        }
    }
}

impl ChunkScaled for Q6K {
    const SUB16: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_lanes(blocks: &[&[u8]; GROUP], out: &mut ScaleLanes) {
        // Sixteen i8 scales at 192..208; d in the block's last two bytes.
        let scales = dword_lanes(blocks, 192);
        out.d = tail_f16_lanes(blocks, Self::BYTES)[1];
        for s in 0..16 {
            out.scales[s] = lane_byte_signed(scales[s / 4], s % 4);
        }
    }
}
