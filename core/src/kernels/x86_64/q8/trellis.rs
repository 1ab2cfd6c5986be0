//! Vspec's trellis formats TQ2, TQ3, TQ4 (layout in `crate::quant::vspec::trellis`): weight `i`
//! is `d · codebook[state(i)]`, `state(i)` the 8-bit window of the block's bit stream ending at
//! its `K` bits. States come out sixteen at a time: one byte shuffle gathers each weight's two
//! stream bytes into a 16-bit lane, one multiply shifts its window into the high byte (the
//! pattern repeats every eight weights, so shuffle and multipliers are constants). The 256-entry
//! codebook is then read for 32 states at once by sixteen 16-entry `vpshufb` lookups on the low
//! nibble and a tree of fifteen blends on the high nibble's bits: about one instruction per
//! weight, which keeps the trellis formats slower than the others on AVX2.
//!
//! With AVX-512 VBMI (the `…Vbmi` decoders) a block is eight instructions: one masked load of the
//! stream, one byte permute that gives each qword the eight stream bytes its eight windows lie
//! in, one `vpmultishiftqb` that cuts the eight windows out, and the 256-entry codebook read as
//! two 128-entry `vpermi2b` lookups blended by the state's top bit. Both decoders give the same
//! bytes, so both tiers give the same sums.

use super::{Decoded, Q8Format};
use crate::quant::vspec::trellis::STATES;
use crate::quant::vspec::{tq2, tq3, tq4};
use core::arch::x86_64::*;

/// Vspec TQ2 (2 bits per weight).
pub(crate) struct Tq2;
/// Vspec TQ3 (3 bits per weight).
pub(crate) struct Tq3;
/// Vspec TQ4 (4 bits per weight).
pub(crate) struct Tq4;

/// The shuffle that gathers, into 16-bit lane `j` of each 128-bit lane, the two stream bytes
/// holding the window of that lane's weight `j`, and the multiplier `2^(8 − shift)` that moves
/// the window into the lane's high byte.
///
/// Weight `8g + j`'s window starts at padded-stream bit `8Kg + K(j + 1)`: byte
/// `Kg + ⌊K(j + 1)/8⌋`, bit `K(j + 1) mod 8`. Relative to byte `Kg` the pattern is the same for
/// every group `g` of eight weights, so both vectors are constants per `K`.
const fn window_layout<const K: usize>() -> ([i8; 32], [i16; 16]) {
    let mut idx = [0i8; 32];
    let mut mul = [0i16; 16];
    let mut lane = 0;
    while lane < 2 {
        let mut j = 0;
        while j < 8 {
            let bit = K * (j + 1);
            let byte = (bit / 8) as i8;
            idx[lane * 16 + 2 * j] = byte;
            idx[lane * 16 + 2 * j + 1] = byte + 1;
            mul[lane * 8 + j] = 1 << (8 - bit % 8);
            j += 1;
        }
        lane += 1;
    }
    (idx, mul)
}

/// Padded stream bytes `Kg .. Kg + 8` as a little-endian u64: the `K + 2` bytes group `g`'s
/// shuffle reads (padded byte `p` is block byte `p + 1`, padded byte 0 the zero bits before the
/// stream), then bytes nothing reads. Built from in-bounds 8-byte reads of `block` rather than
/// from a padded copy on the stack, whose 16-byte reloads straddled the copy's stores and
/// stalled on store forwarding.
#[inline(always)]
fn group_bytes<const K: usize>(block: &[u8], g: usize) -> u64 {
    let len = 2 + 8 * K;
    let read = |off: usize| u64::from_le_bytes(block[off..off + 8].try_into().unwrap_or([0; 8]));
    let start = K * g + 1;
    if g == 0 {
        // Padded byte 0 is zero; block byte 1 (the scale's high byte) is not part of it.
        read(2) << 8
    } else if start + 8 <= len {
        read(start)
    } else {
        // The last groups: the block's final eight bytes, moved down to start at `start`.
        read(len - 8) >> (8 * (start + 8 - len))
    }
}

/// The states of weights `8g .. 8g + 16` as 16-bit lanes: lane 0 of the register holds group
/// `g`, lane 1 group `g + 1`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn states_16<const K: usize>(block: &[u8], g: usize) -> __m256i {
    let (idx, mul) = const { window_layout::<K>() };
    let v = _mm256_set_epi64x(
        0,
        group_bytes::<K>(block, g + 1) as i64,
        0,
        group_bytes::<K>(block, g) as i64,
    );
    // SAFETY: `idx` and `mul` are 32 readable bytes each; loadu needs no alignment.
    let (idx, mul) = unsafe {
        (
            _mm256_loadu_si256(idx.as_ptr().cast()),
            _mm256_loadu_si256(mul.as_ptr().cast()),
        )
    };
    let words = _mm256_shuffle_epi8(v, idx);
    // The low 16 bits of `word << (8 − shift)` hold the window in their high byte.
    _mm256_srli_epi16::<8>(_mm256_mullo_epi16(words, mul))
}

/// Codebook values of 32 states (bytes): one `vpshufb` per 16-entry slice of the table on the
/// state's low nibble, then a tree of blends on its high nibble's bits (bit 4 picks between
/// slices `2k` and `2k + 1`, bit 5 between those pairs, ...): 16 shuffles and 15 blends, where
/// comparing the high nibble with each slice number cost a compare and a blend per slice.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn lookup_32(codebook: &[i8; STATES], states: __m256i) -> __m256i {
    let lo = _mm256_and_si256(states, _mm256_set1_epi8(0x0F));
    // `vpblendvb` selects by each byte's top bit: bring state bit 4 + level there. A 16-bit shift
    // is enough, as only bit 7 of each byte is read and it comes from the same byte.
    let select = [
        _mm256_slli_epi16::<3>(states),
        _mm256_slli_epi16::<2>(states),
        _mm256_slli_epi16::<1>(states),
        states,
    ];
    let tree = LookupTree {
        codebook,
        lo,
        select,
    };
    let half =
        |h: usize| _mm256_blendv_epi8(tree.quarter(2 * h), tree.quarter(2 * h + 1), select[2]);
    _mm256_blendv_epi8(half(0), half(1), select[3])
}

/// The levels of [`lookup_32`]'s blend tree, written out so that every slice number is a
/// constant after inlining (a loop kept the partial results on the stack).
struct LookupTree<'a> {
    codebook: &'a [i8; STATES],
    lo: __m256i,
    select: [__m256i; 4],
}

impl LookupTree<'_> {
    /// Slice `t`'s entries at the states' low nibbles.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn slice(&self, t: usize) -> __m256i {
        let slice = &self.codebook[16 * t..16 * t + 16];
        // SAFETY: `slice` is 16 readable bytes; loadu needs no alignment.
        let table = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(slice.as_ptr().cast()) });
        _mm256_shuffle_epi8(table, self.lo)
    }

    /// Entries `32p .. 32p + 32`, by bit 4.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn pair(&self, p: usize) -> __m256i {
        _mm256_blendv_epi8(self.slice(2 * p), self.slice(2 * p + 1), self.select[0])
    }

    /// Entries `64q .. 64q + 64`, by bits 4 and 5.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quarter(&self, q: usize) -> __m256i {
        _mm256_blendv_epi8(self.pair(2 * q), self.pair(2 * q + 1), self.select[1])
    }
}

/// Weights `32h .. 32h + 32` of a block as signed codebook values.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_half<const K: usize>(codebook: &[i8; STATES], block: &[u8], h: usize) -> __m256i {
    let a = states_16::<K>(block, 4 * h);
    let b = states_16::<K>(block, 4 * h + 2);
    // packus interleaves the lanes (a0 b0 | a1 b1); the permute restores weight order.
    let states = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b));
    lookup_32(codebook, states)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn decode_block<const K: usize>(codebook: &[i8; STATES], block: &[u8]) -> Decoded {
    Decoded {
        w: [
            decode_half::<K>(codebook, block, 0),
            decode_half::<K>(codebook, block, 1),
        ],
    }
}

/// Byte `8g + m` of the gather index is block byte `1 + Kg + m`, so qword `g` holds padded stream
/// bytes `Kg .. Kg + 8` (padded byte `p` is block byte `p + 1`, and the load zeroes block byte 1:
/// it stands for the zero bits before the stream). Byte `8g + j` of the multishift control is
/// `K(j + 1)`, where weight `8g + j`'s window starts in that qword (see [`window_layout`]);
/// windows end by bit `8K + 8 <= 40`, inside the qword.
///
/// With `halves`, qword `q` holds group [`HALVES_ORDER`]`[q]` instead, so that the decoded vector
/// comes out as [`Q8Format::decode_biased_halves_512`] lays it out.
const fn vbmi_layout<const K: usize>(halves: bool) -> ([u8; 64], [u8; 64]) {
    let mut gather = [0u8; 64];
    let mut shift = [0u8; 64];
    let mut q = 0;
    while q < 8 {
        let g = if halves { HALVES_ORDER[q] } else { q };
        let mut j = 0;
        while j < 8 {
            gather[8 * q + j] = (1 + K * g + j) as u8;
            shift[8 * q + j] = (K * (j + 1)) as u8;
            j += 1;
        }
        q += 1;
    }
    (gather, shift)
}

/// The eight-weight groups in the order of [`Q8Format::decode_biased_halves_512`]: weights 0..16
/// (groups 0, 1), 32..48 (4, 5), 16..32 (2, 3), 48..64 (6, 7).
const HALVES_ORDER: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// The block's 64 states, one per byte, from one masked load, `vpermb` and `vpmultishiftqb`
/// (in weight order, or with `HALVES` in [`HALVES_ORDER`]'s).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn states_64<const K: usize, const HALVES: bool>(block: &[u8]) -> __m512i {
    let (gather, shift) = const { vbmi_layout::<K>(HALVES) };
    let len = 2 + 8 * K;
    assert!(block.len() >= len);
    // Bytes 2 .. 2 + 8K: the stream; the scale's bytes and everything after read as zero.
    let mask = ((1u64 << len) - 1) & !3;
    // SAFETY: a masked load touches only the bytes its mask selects (faults are suppressed on
    // the others), and those lie in `block` (checked above); `gather` and `shift` are 64
    // readable bytes each; no alignment is needed.
    let (stream, gather, shift) = unsafe {
        (
            _mm512_maskz_loadu_epi8(mask, block.as_ptr().cast()),
            _mm512_loadu_si512(gather.as_ptr().cast()),
            _mm512_loadu_si512(shift.as_ptr().cast()),
        )
    };
    _mm512_multishift_epi64_epi8(shift, _mm512_permutexvar_epi8(gather, stream))
}

/// `codebook` with every entry moved to `vpdpbusd`'s unsigned form (`c + 128`, as a byte).
const fn biased(codebook: &[i8; STATES]) -> [i8; STATES] {
    let mut out = [0i8; STATES];
    let mut i = 0;
    while i < STATES {
        out[i] = codebook[i] ^ i8::MIN;
        i += 1;
    }
    out
}

/// Codebook values of 64 states: entries `0..128` and `128..256` by one two-table byte permute
/// each (index bits 0–6), kept by the state's top bit.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn lookup_64(codebook: &[i8; STATES], states: __m512i) -> __m512i {
    // SAFETY: each quarter of `codebook` is 64 readable bytes; no alignment is needed.
    let t: [__m512i; 4] =
        core::array::from_fn(|q| unsafe { _mm512_loadu_si512(codebook[64 * q..].as_ptr().cast()) });
    // The mask taken first, so that the second lookup may overwrite `states` (`vpermi2b`):
    // one table copy per block fewer (TQ2–TQ4 +0–2 % at one token, 2026-12-05).
    let upper = _mm512_movepi8_mask(states);
    let low = _mm512_permutex2var_epi8(t[0], states, t[1]);
    let high = _mm512_permutex2var_epi8(t[2], states, t[3]);
    _mm512_mask_blend_epi8(upper, low, high)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
#[inline]
fn decode_block_vbmi<const K: usize>(codebook: &[i8; STATES], block: &[u8]) -> Decoded {
    let w = lookup_64(codebook, states_64::<K, false>(block));
    Decoded {
        w: [_mm512_castsi512_si256(w), _mm512_extracti64x4_epi64::<1>(w)],
    }
}

/// Vspec TQ2 decoded with AVX-512 VBMI.
pub(crate) struct Tq2Vbmi;
/// Vspec TQ3 decoded with AVX-512 VBMI.
pub(crate) struct Tq3Vbmi;
/// Vspec TQ4 decoded with AVX-512 VBMI.
pub(crate) struct Tq4Vbmi;

/// The `Q8Format` impl of a VBMI decoder (same geometry as its AVX2 twin).
macro_rules! vbmi_format {
    ($ty:ident, $twin:ident, $k:literal, $codebook:path) => {
        impl Q8Format for $ty {
            const ELEMS: usize = $twin::ELEMS;
            const BYTES: usize = $twin::BYTES;
            const SIGNED: bool = true;
            const ROWS16: Option<(usize, &'static [i8; STATES])> = Some(($k, &biased(&$codebook)));
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
            #[inline]
            unsafe fn decode(block: &[u8]) -> Decoded {
                decode_block_vbmi::<$k>(&$codebook, block)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vbmi")]
            #[inline]
            unsafe fn decode_biased(block: &[u8]) -> Decoded {
                decode_block_vbmi::<$k>(const { &biased(&$codebook) }, block)
            }
            #[target_feature(
                enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"
            )]
            #[inline]
            unsafe fn decode_biased_512(block: &[u8]) -> __m512i {
                lookup_64(const { &biased(&$codebook) }, states_64::<$k, false>(block))
            }
            const HALVES_512: bool = true;
            #[target_feature(
                enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi"
            )]
            #[inline]
            unsafe fn decode_biased_halves_512(block: &[u8]) -> __m512i {
                lookup_64(const { &biased(&$codebook) }, states_64::<$k, true>(block))
            }
        }
    };
}

vbmi_format!(Tq2Vbmi, Tq2, 2, tq2::CODEBOOK);
vbmi_format!(Tq3Vbmi, Tq3, 3, tq3::CODEBOOK);
vbmi_format!(Tq4Vbmi, Tq4, 4, tq4::CODEBOOK);

impl Q8Format for Tq2 {
    const ELEMS: usize = 64;
    const BYTES: usize = 18;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<2>(&tq2::CODEBOOK, block)
    }
}

impl Q8Format for Tq3 {
    const ELEMS: usize = 64;
    const BYTES: usize = 26;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<3>(&tq3::CODEBOOK, block)
    }
}

impl Q8Format for Tq4 {
    const ELEMS: usize = 64;
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn decode(block: &[u8]) -> Decoded {
        decode_block::<4>(&tq4::CODEBOOK, block)
    }
}
