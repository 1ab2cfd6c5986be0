//! The KV cache: its element types, byte layout, and the views attention reads.
//!
//! Layout of the whole cache (one buffer of [`crate::plan::Plan::kv_bytes`]): for every layer, the
//! K rows of positions `0..max_ctx`, then the V rows of the same positions. A row is one position's
//! `kv_width = n_kv_heads × head_dim` values, head after head, in the cache's [`KvType`]:
//!
//! | type | bytes per row | element `i` of a row |
//! |---|---|---|
//! | `F32` | `4 · kv_width` | f32 at `4i` |
//! | `F16` | `2 · kv_width` | IEEE half at `2i` (round to nearest even from f32) |
//! | `Q8_0` | `34 · kv_width / 32` | block `i / 32` (34 bytes, ggml's `block_q8_0`: f16 scale `d`, 32 × i8) holds `d · q[i % 32]` |
//!
//! The cache is never stored, so floats are in native byte order (what the views read).
//! Q8_0 blocks run along `head_dim`, so it needs `head_dim` to be a multiple of 32 and a head's
//! values are whole blocks. Rows are written once, when a step's keys and values are appended,
//! by the kernel table's `kv_store`, whose every tier writes the bytes of [`store_row`] (the
//! AVX2 tier's f16 conversion is `vcvtps2ph`, round to nearest even, checked byte for byte), so
//! every tier reads the same cached bits.

use crate::error::{Error, Result};
use crate::quant::gguf::q8_0;
use half::f16;
use serde::{Deserialize, Serialize};

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KvType {
    /// 32-bit float: the exact reference.
    F32,
    /// IEEE half: half the bytes; the default (as llama.cpp's).
    #[default]
    F16,
    /// ggml Q8_0 blocks of 32 along `head_dim`: 8.5 bits per value.
    Q8_0,
}

impl KvType {
    /// Every type, largest first.
    pub const ALL: [KvType; 3] = [KvType::F32, KvType::F16, KvType::Q8_0];

    /// The name used on the command line and in reports (`f32`, `f16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Parses [`KvType::name`] (case-insensitive).
    pub fn parse(s: &str) -> Option<KvType> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// Bytes of one cached row of `width` values (`width` a multiple of 32 for Q8_0; see
    /// [`KvType::check_head_dim`]).
    pub fn row_bytes(self, width: usize) -> usize {
        match self {
            KvType::F32 => width * 4,
            KvType::F16 => width * 2,
            KvType::Q8_0 => width / q8_0::BLOCK_ELEMS * q8_0::BLOCK_BYTES,
        }
    }

    /// Whether heads of `head_dim` values can be stored in this type.
    pub fn check_head_dim(self, head_dim: usize) -> Result<()> {
        if self == KvType::Q8_0 && !head_dim.is_multiple_of(q8_0::BLOCK_ELEMS) {
            return Err(Error::invalid(
                "kv type",
                alloc::format!(
                    "q8_0 stores blocks of 32 along head_dim, but head_dim is {head_dim}; use f16 or f32"
                ),
            ));
        }
        Ok(())
    }
}

impl core::fmt::Display for KvType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer's K or V rows as attention reads them: `positions × width` values.
#[derive(Debug, Clone, Copy)]
pub enum KvRows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 bit patterns.
    F16(&'a [u16]),
    /// Q8_0 blocks, 34 bytes per 32 values.
    Q8_0(&'a [u8]),
}

impl<'a> KvRows<'a> {
    /// The element type.
    pub fn kv_type(&self) -> KvType {
        match self {
            KvRows::F32(_) => KvType::F32,
            KvRows::F16(_) => KvType::F16,
            KvRows::Q8_0(_) => KvType::Q8_0,
        }
    }

    /// Decodes the `len` values starting at value `start` (of the flattened `positions × width`
    /// rows) into `out`. For Q8_0, `start` and `len` are whole blocks.
    pub fn decode(&self, start: usize, out: &mut [f32]) {
        let len = out.len();
        match self {
            KvRows::F32(v) => out.copy_from_slice(&v[start..start + len]),
            KvRows::F16(v) => {
                for (o, &h) in out.iter_mut().zip(&v[start..start + len]) {
                    *o = f16::from_bits(h).to_f32();
                }
            }
            KvRows::Q8_0(b) => {
                let (be, bb) = (q8_0::BLOCK_ELEMS, q8_0::BLOCK_BYTES);
                let first = start / be;
                let src = &b[first * bb..(first + len / be) * bb];
                for (blk, o) in src.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
                    q8_0::dequantize_block(blk, o);
                }
            }
        }
    }
}

/// Writes one row of `src.len()` values into `dst` (exactly [`KvType::row_bytes`] long) in
/// `kv_type`. The one place values enter the cache, so every kernel tier reads the same bits.
pub fn store_row(kv_type: KvType, src: &[f32], dst: &mut [u8]) {
    match kv_type {
        KvType::F32 => {
            for (d, &v) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_ne_bytes());
            }
        }
        KvType::F16 => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(v).to_bits().to_ne_bytes());
            }
        }
        KvType::Q8_0 => {
            for (d, x) in dst
                .chunks_exact_mut(q8_0::BLOCK_BYTES)
                .zip(src.chunks_exact(q8_0::BLOCK_ELEMS))
            {
                q8_0::quantize_block(x, d);
            }
        }
    }
}

/// Reads one stored row (or a whole number of heads of it) of `kv_type` from `src` into `out`;
/// the inverse of [`store_row`].
pub fn load_row(kv_type: KvType, src: &[u8], out: &mut [f32]) {
    match kv_type {
        KvType::F32 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        KvType::F16 => {
            for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_ne_bytes([b[0], b[1]])).to_f32();
            }
        }
        KvType::Q8_0 => {
            for (blk, o) in src
                .chunks_exact(q8_0::BLOCK_BYTES)
                .zip(out.chunks_exact_mut(q8_0::BLOCK_ELEMS))
            {
                q8_0::dequantize_block(blk, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sizes() {
        for t in KvType::ALL {
            assert_eq!(KvType::parse(t.name()), Some(t));
        }
        assert_eq!(KvType::parse("Q8_0"), Some(KvType::Q8_0));
        assert_eq!(KvType::parse("q4"), None);
        assert_eq!(KvType::F32.row_bytes(192), 768);
        assert_eq!(KvType::F16.row_bytes(192), 384);
        assert_eq!(KvType::Q8_0.row_bytes(192), 204);
        assert!(KvType::Q8_0.check_head_dim(64).is_ok());
        assert!(KvType::Q8_0.check_head_dim(48).is_err());
        assert!(KvType::F16.check_head_dim(48).is_ok());
    }

    #[test]
    fn rows_decode_what_was_stored() {
        let src: alloc::vec::Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
        for t in KvType::ALL {
            let mut bytes = alloc::vec![0u8; t.row_bytes(64)];
            store_row(t, &src, &mut bytes);
            let mut out = [0f32; 32];
            let f32s: alloc::vec::Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let u16s: alloc::vec::Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .collect();
            let rows = match t {
                KvType::F32 => KvRows::F32(&f32s),
                KvType::F16 => KvRows::F16(&u16s),
                KvType::Q8_0 => KvRows::Q8_0(&bytes),
            };
            rows.decode(32, &mut out);
            let tol = match t {
                KvType::F32 => 0.0,
                KvType::F16 => 1e-2,
                KvType::Q8_0 => 0.1,
            };
            for (a, b) in out.iter().zip(&src[32..]) {
                assert!((a - b).abs() <= tol, "{t}: {a} vs {b}");
            }
        }
    }
}
