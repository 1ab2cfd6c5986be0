//! Weight formats: how one row of a weight tensor is stored.
//!
//! A row of `n` weights is `n / block_elems()` blocks of `block_bytes()` bytes each. Plain floats
//! are blocks of one element. The GGUF block formats keep the ggml type ids so files map 1:1;
//! Vspec's own packed formats (`VQ2`, `VQ3`, `VQ4`, `NQ3`, `TQ2`, `TQ3`, `TQ4`, groups of 64) have no ggml id.

mod spec;

pub use spec::FormatSpec;

use crate::error::{Error, Result};
use alloc::format;
use serde::{Deserialize, Serialize};

/// A weight storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum Format {
    /// IEEE f32, little-endian.
    F32,
    /// IEEE f16, little-endian.
    F16,
    /// bfloat16, little-endian.
    BF16,
    /// ggml Q8_0: 32 weights, f16 scale + 32 × i8 (8.5 bpw).
    Q8_0,
    /// ggml Q4_0: 32 weights, f16 scale + 16 bytes of nibbles (4.5 bpw).
    Q4_0,
    /// ggml Q4_1: 32 weights, f16 scale and min + 16 bytes of nibbles (5.0 bpw).
    Q4_1,
    /// ggml Q5_0: 32 weights, f16 scale, 32 high bits, 16 bytes of nibbles (5.5 bpw).
    Q5_0,
    /// ggml Q5_1: 32 weights, f16 scale and min, 32 high bits, nibbles (6.0 bpw).
    Q5_1,
    /// ggml Q2_K: 256-weight super-blocks (2.625 bpw).
    Q2_K,
    /// ggml Q3_K: 256-weight super-blocks (3.4375 bpw).
    Q3_K,
    /// ggml Q4_K: 256-weight super-blocks (4.5 bpw).
    Q4_K,
    /// ggml Q5_K: 256-weight super-blocks (5.5 bpw).
    Q5_K,
    /// ggml Q6_K: 256-weight super-blocks (6.5625 bpw).
    Q6_K,
    /// ggml IQ4_NL: 32 weights, f16 scale + 4-bit indices into a non-linear codebook (4.5 bpw).
    IQ4_NL,
    /// ggml IQ4_XS: 256-weight super-blocks of IQ4_NL codes with 6-bit sub-scales (4.25 bpw).
    IQ4_XS,
    /// Vspec VQ2: 64 weights, f16 scale and min + 2-bit quants (2.5 bpw); `quant::vspec::vq2`.
    VQ2,
    /// Vspec VQ3: 64 weights, f16 scale and min + 3-bit quants (3.5 bpw); `quant::vspec::vq3`.
    VQ3,
    /// Vspec VQ4: 64 weights, f16 scale and min + 4-bit quants (4.5 bpw); `quant::vspec::vq4`.
    VQ4,
    /// Vspec NQ3: 64 weights, f16 scale + 3-bit indices into a non-uniform codebook (3.25 bpw);
    /// `quant::vspec::nq3`.
    NQ3,
    /// Vspec TQ2: 64 weights, f16 scale + a 2-bit-per-weight trellis code (2.25 bpw);
    /// `quant::vspec::tq2`.
    TQ2,
    /// Vspec TQ3: 64 weights, f16 scale + a 3-bit-per-weight trellis code (3.25 bpw);
    /// `quant::vspec::tq3`.
    TQ3,
    /// Vspec TQ4: 64 weights, f16 scale + a 4-bit-per-weight trellis code (4.25 bpw);
    /// `quant::vspec::tq4`.
    TQ4,
}

impl Format {
    /// Every format, for tables and tests.
    pub const ALL: [Format; 22] = [
        Format::F32,
        Format::F16,
        Format::BF16,
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q5_0,
        Format::Q5_1,
        Format::Q2_K,
        Format::Q3_K,
        Format::Q4_K,
        Format::Q5_K,
        Format::Q6_K,
        Format::IQ4_NL,
        Format::IQ4_XS,
        Format::VQ2,
        Format::VQ3,
        Format::VQ4,
        Format::NQ3,
        Format::TQ2,
        Format::TQ3,
        Format::TQ4,
    ];

    /// The description of this format: sizes, name, ggml id, decoder, dots, quantizer and GPTQ
    /// hook. The one exhaustive match over the formats; everything else derives from it.
    pub fn spec(self) -> &'static FormatSpec {
        use crate::quant::gguf::*;
        use crate::quant::vspec::*;
        match self {
            Format::F32 => &float::F32_SPEC,
            Format::F16 => &float::F16_SPEC,
            Format::BF16 => &float::BF16_SPEC,
            Format::Q8_0 => &q8_0::SPEC,
            Format::Q4_0 => &q4_0::SPEC,
            Format::Q4_1 => &q4_1::SPEC,
            Format::Q5_0 => &q5_0::SPEC,
            Format::Q5_1 => &q5_1::SPEC,
            Format::Q2_K => &q2_k::SPEC,
            Format::Q3_K => &q3_k::SPEC,
            Format::Q4_K => &q4_k::SPEC,
            Format::Q5_K => &q5_k::SPEC,
            Format::Q6_K => &q6_k::SPEC,
            Format::IQ4_NL => &iq4_nl::SPEC,
            Format::IQ4_XS => &iq4_xs::SPEC,
            Format::VQ2 => &vq2::SPEC,
            Format::VQ3 => &vq3::SPEC,
            Format::VQ4 => &vq4::SPEC,
            Format::NQ3 => &nq3::SPEC,
            Format::TQ2 => &tq2::SPEC,
            Format::TQ3 => &tq3::SPEC,
            Format::TQ4 => &tq4::SPEC,
        }
    }

    /// The format for a ggml type id, if we support it.
    pub fn from_ggml_type(id: u32) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.spec().ggml_type == Some(id))
    }

    /// The ggml type id of this format; `None` for Vspec's own formats, which GGUF cannot hold.
    pub fn ggml_type(self) -> Option<u32> {
        self.spec().ggml_type
    }

    /// The format with this [`Format::name`], compared ASCII case-insensitively (`"q4_k"` finds
    /// `Q4_K`).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Human name, as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        self.spec().block_elems
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.spec().block_bytes
    }

    /// Exact bits per weight, scales and mins included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_elems() as f64
    }

    /// Bytes of a row of `n` weights; an error naming `tensor` when `n` is not whole blocks.
    pub fn row_bytes(self, n: usize, tensor: &str) -> Result<usize> {
        let be = self.block_elems();
        if !n.is_multiple_of(be) {
            return Err(Error::invalid(
                format!("tensor '{tensor}'"),
                format!(
                    "row length {n} is not a multiple of the {} block size {be}",
                    self.name()
                ),
            ));
        }
        (n / be)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| Error::invalid(format!("tensor '{tensor}'"), "row size overflows"))
    }

    /// Bytes of a tensor with `rows` rows of `cols` weights: the one function that computes a
    /// tensor's size, so every reader, writer and planner agrees on it.
    pub fn tensor_bytes(self, cols: usize, rows: usize, tensor: &str) -> Result<usize> {
        self.row_bytes(cols, tensor)?
            .checked_mul(rows)
            .ok_or_else(|| Error::invalid(format!("tensor '{tensor}'"), "size overflows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_format_has_its_own_spec() {
        for (i, f) in Format::ALL.into_iter().enumerate() {
            let spec = f.spec();
            assert_eq!(spec.format, f, "{}", spec.name);
            assert!(
                spec.block_elems > 0 && spec.block_bytes > 0,
                "{}",
                spec.name
            );
            assert!(
                Format::ALL[..i].iter().all(|g| *g != f),
                "{} listed twice",
                spec.name
            );
            assert_eq!(Format::from_name(spec.name), Some(f));
            assert_eq!(Format::from_name(&spec.name.to_ascii_lowercase()), Some(f));
            if let Some(id) = spec.ggml_type {
                assert_eq!(Format::from_ggml_type(id), Some(f), "{}", spec.name);
            }
        }
        assert_eq!(Format::from_ggml_type(4), None); // Q4_2, removed from ggml
        assert_eq!(Format::from_name("Q4_2"), None);
    }

    /// The formats lacking each optional capability. Giving a format a capability (or adding a
    /// format without one) changes one of these lists on purpose.
    #[test]
    fn formats_lacking_each_capability() {
        let lacking = |has: fn(&FormatSpec) -> bool| -> Vec<&str> {
            Format::ALL
                .iter()
                .map(|f| f.spec())
                .filter(|s| !has(s))
                .map(|s| s.name)
                .collect()
        };
        let no_dot = [
            "F32", "F16", "BF16", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS",
        ];
        assert_eq!(lacking(|s| s.dot_f32.is_some()), no_dot);
        assert_eq!(
            lacking(|s| s.dot_q8.is_some()),
            ["F32", "F16", "BF16", "Q5_0", "Q5_1"]
        );
        assert_eq!(
            lacking(|s| s.quantize.is_some()),
            ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"]
        );
        let vspec_own = ["VQ2", "VQ3", "VQ4", "NQ3", "TQ2", "TQ3", "TQ4"];
        assert_eq!(lacking(|s| s.ggml_type.is_some()), vspec_own);
        // GPTQ rounds element by element only in Vspec's own formats; in the others the walk
        // keeps the block search's quants. So the formats *with* a hook are listed here.
        assert_eq!(lacking(|s| s.gptq.is_none()), vspec_own);
        let gptq_kinds: Vec<&str> = vspec_own
            .iter()
            .map(|n| Format::from_name(n).unwrap().spec().gptq.unwrap().kind())
            .collect();
        assert_eq!(
            gptq_kinds,
            ["affine", "affine", "affine", "codebook", "trellis", "trellis", "trellis"]
        );
    }

    #[test]
    fn tensor_bytes_checks_whole_blocks_and_overflow() {
        assert_eq!(Format::Q4_0.tensor_bytes(64, 3, "t").unwrap(), 3 * 2 * 18);
        assert_eq!(Format::TQ3.tensor_bytes(128, 2, "t").unwrap(), 2 * 2 * 26);
        assert_eq!(Format::F16.tensor_bytes(5, 7, "t").unwrap(), 70);
        let err = Format::Q4_K
            .tensor_bytes(576, 1, "blk.0.ffn_up")
            .unwrap_err();
        assert!(alloc::format!("{err}").contains("blk.0.ffn_up"));
        assert!(Format::F32.tensor_bytes(usize::MAX, 2, "t").is_err());
        assert!(Format::F32.tensor_bytes(1 << 40, 1 << 40, "t").is_err());
    }
}
