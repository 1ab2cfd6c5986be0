//! Weight quantization formats: one scalar reference block decoder per [`Format`].
//!
//! Every packed format lives in its own file under [`gguf`] (layout, bits per weight, decoder,
//! reference quantizer where we have one, and tests). This module is the dispatch table that the
//! loaders and kernels call: [`block_decoder`] picks the decoder of one block and
//! [`dequantize_row`] decodes whole rows after checking their lengths.
//!
//! The decoders match ggml's scalar dequantization bit for bit (same f32 operations in the same
//! order); `core/tests/quant_vs_gguf_py.rs` checks that against fixtures made by gguf-py.

pub mod gguf;

use crate::error::{Error, Result};
use crate::format::Format;
use alloc::format;

/// Decoder of one block: `block.len() == format.block_bytes()`, `out.len() == format.block_elems()`.
///
/// Decoders never panic on any byte content; they may panic (debug) or misbehave only when the
/// lengths above are wrong, which [`dequantize_row`] checks for its callers.
pub type BlockDecoder = fn(block: &[u8], out: &mut [f32]);

/// The scalar reference decoder for `format`.
pub fn block_decoder(format: Format) -> BlockDecoder {
    use gguf::*;
    match format {
        Format::F32 => float::dequantize_f32,
        Format::F16 => float::dequantize_f16,
        Format::BF16 => float::dequantize_bf16,
        Format::Q8_0 => q8_0::dequantize_block,
        Format::Q4_0 => q4_0::dequantize_block,
        Format::Q4_1 => q4_1::dequantize_block,
        Format::Q5_0 => q5_0::dequantize_block,
        Format::Q5_1 => q5_1::dequantize_block,
        Format::Q2_K => q2_k::dequantize_block,
        Format::Q3_K => q3_k::dequantize_block,
        Format::Q4_K => q4_k::dequantize_block,
        Format::Q5_K => q5_k::dequantize_block,
        Format::Q6_K => q6_k::dequantize_block,
        Format::IQ4_NL => iq4_nl::dequantize_block,
        Format::IQ4_XS => iq4_xs::dequantize_block,
    }
}

/// Decode a whole row (any number of whole blocks) of `format` from `row` into `out`.
///
/// Errors when `row` is not whole blocks or `out` does not hold exactly the decoded elements; the
/// message names only the lengths (the caller knows which tensor it is decoding).
pub fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) -> Result<()> {
    let bb = format.block_bytes();
    let be = format.block_elems();
    let blocks = row.len() / bb;
    if blocks * bb != row.len() {
        return Err(Error::invalid(
            "dequantize_row",
            format!(
                "{} bytes are not whole {}-byte {} blocks",
                row.len(),
                bb,
                format.name()
            ),
        ));
    }
    if blocks.checked_mul(be) != Some(out.len()) {
        return Err(Error::invalid(
            "dequantize_row",
            format!(
                "{} blocks of {} decode to {} values but the output holds {}",
                blocks,
                format.name(),
                blocks.saturating_mul(be),
                out.len()
            ),
        ));
    }
    let decode = block_decoder(format);
    for (block, dst) in row.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        decode(block, dst);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::gguf::testutil::Rng;
    use super::*;
    use alloc::vec;

    #[test]
    fn row_length_errors() {
        for f in Format::ALL {
            let (bb, be) = (f.block_bytes(), f.block_elems());
            let row = vec![0u8; 3 * bb];
            let mut out = vec![0f32; 3 * be];
            assert!(dequantize_row(f, &row, &mut out).is_ok());
            assert!(dequantize_row(f, &row, &mut out[..3 * be - 1]).is_err());
            let mut longer = vec![0f32; 3 * be + 1];
            assert!(dequantize_row(f, &row, &mut longer).is_err());
            if bb > 1 {
                assert!(dequantize_row(f, &row[..3 * bb - 1], &mut out).is_err());
            }
            assert!(dequantize_row(f, &[], &mut []).is_ok());
        }
    }

    #[test]
    fn row_equals_blockwise_and_never_panics() {
        let mut rng = Rng::new(7);
        for f in Format::ALL {
            let (bb, be) = (f.block_bytes(), f.block_elems());
            for nb in [1usize, 2, 3, 5, 17] {
                let mut row = vec![0u8; nb * bb];
                rng.fill_bytes(&mut row);
                let mut out = vec![0f32; nb * be];
                dequantize_row(f, &row, &mut out).unwrap();
                let mut one = vec![0f32; be];
                for b in 0..nb {
                    block_decoder(f)(&row[b * bb..(b + 1) * bb], &mut one);
                    for (x, y) in one.iter().zip(&out[b * be..(b + 1) * be]) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{}", f.name());
                    }
                }
            }
            // All-0xFF bytes: f16 scales become NaN; decoding must still not panic.
            let row = vec![0xFFu8; 4 * bb];
            let mut out = vec![0f32; 4 * be];
            dequantize_row(f, &row, &mut out).unwrap();
        }
    }

    #[test]
    fn all_zero_blocks_decode_to_zero() {
        for f in Format::ALL {
            let row = vec![0u8; 2 * f.block_bytes()];
            let mut out = vec![1f32; 2 * f.block_elems()];
            dequantize_row(f, &row, &mut out).unwrap();
            assert!(out.iter().all(|&v| v == 0.0), "{}", f.name());
        }
    }
}
