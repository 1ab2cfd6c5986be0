//! Weight formats: how one row of a weight tensor is stored.
//!
//! A row of `n` weights is `n / block_elems()` blocks of `block_bytes()` bytes each. Plain floats
//! are blocks of one element. The GGUF block formats keep the ggml type ids so files map 1:1;
//! Vspec's own packed formats (`VQ2`, `VQ3`, `VQ4`, `NQ3`, `TQ2`, `TQ3`, `TQ4`, groups of 64) have no ggml id.

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

    /// The format for a ggml type id, if we support it.
    pub fn from_ggml_type(id: u32) -> Option<Format> {
        Some(match id {
            0 => Format::F32,
            1 => Format::F16,
            2 => Format::Q4_0,
            3 => Format::Q4_1,
            6 => Format::Q5_0,
            7 => Format::Q5_1,
            8 => Format::Q8_0,
            10 => Format::Q2_K,
            11 => Format::Q3_K,
            12 => Format::Q4_K,
            13 => Format::Q5_K,
            14 => Format::Q6_K,
            20 => Format::IQ4_NL,
            23 => Format::IQ4_XS,
            30 => Format::BF16,
            _ => return None,
        })
    }

    /// The ggml type id of this format; `None` for Vspec's own formats, which GGUF cannot hold.
    pub fn ggml_type(self) -> Option<u32> {
        Some(match self {
            Format::F32 => 0,
            Format::F16 => 1,
            Format::Q4_0 => 2,
            Format::Q4_1 => 3,
            Format::Q5_0 => 6,
            Format::Q5_1 => 7,
            Format::Q8_0 => 8,
            Format::Q2_K => 10,
            Format::Q3_K => 11,
            Format::Q4_K => 12,
            Format::Q5_K => 13,
            Format::Q6_K => 14,
            Format::IQ4_NL => 20,
            Format::IQ4_XS => 23,
            Format::BF16 => 30,
            Format::VQ2
            | Format::VQ3
            | Format::VQ4
            | Format::NQ3
            | Format::TQ2
            | Format::TQ3
            | Format::TQ4 => return None,
        })
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
        match self {
            Format::F32 => "F32",
            Format::F16 => "F16",
            Format::BF16 => "BF16",
            Format::Q8_0 => "Q8_0",
            Format::Q4_0 => "Q4_0",
            Format::Q4_1 => "Q4_1",
            Format::Q5_0 => "Q5_0",
            Format::Q5_1 => "Q5_1",
            Format::Q2_K => "Q2_K",
            Format::Q3_K => "Q3_K",
            Format::Q4_K => "Q4_K",
            Format::Q5_K => "Q5_K",
            Format::Q6_K => "Q6_K",
            Format::IQ4_NL => "IQ4_NL",
            Format::IQ4_XS => "IQ4_XS",
            Format::VQ2 => "VQ2",
            Format::VQ3 => "VQ3",
            Format::VQ4 => "VQ4",
            Format::NQ3 => "NQ3",
            Format::TQ2 => "TQ2",
            Format::TQ3 => "TQ3",
            Format::TQ4 => "TQ4",
        }
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            Format::F32 | Format::F16 | Format::BF16 => 1,
            Format::Q8_0 | Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 => 32,
            Format::IQ4_NL => 32,
            Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K => 256,
            Format::IQ4_XS => 256,
            Format::VQ2
            | Format::VQ3
            | Format::VQ4
            | Format::NQ3
            | Format::TQ2
            | Format::TQ3
            | Format::TQ4 => 64,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::F32 => 4,
            Format::F16 | Format::BF16 => 2,
            Format::Q8_0 => 34,
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q2_K => 84,
            Format::Q3_K => 110,
            Format::Q4_K => 144,
            Format::Q5_K => 176,
            Format::Q6_K => 210,
            Format::IQ4_NL => 18,
            Format::IQ4_XS => 136,
            Format::VQ2 => 20,
            Format::VQ3 => 28,
            Format::VQ4 => 36,
            Format::NQ3 | Format::TQ3 => 26,
            Format::TQ2 => 18,
            Format::TQ4 => 34,
        }
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

    /// Bytes of a tensor with `rows` rows of `cols` weights.
    pub fn tensor_bytes(self, cols: usize, rows: usize, tensor: &str) -> Result<usize> {
        self.row_bytes(cols, tensor)?
            .checked_mul(rows)
            .ok_or_else(|| Error::invalid(format!("tensor '{tensor}'"), "size overflows"))
    }
}
