//! Rows of test weights in any format: deterministic values and their encoding with the
//! format's own quantizer (or, for the k-quants, which the core cannot quantize, the tests'
//! round-to-nearest encoder). Used by the CUDA decoder tests.

use vspec_core::format::Format;

/// Deterministic values with a few outliers (xorshift, then a rough bell shape).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            let mut u = 0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                u += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            if i % 97 == 13 {
                u * 8.0
            } else {
                u
            }
        })
        .collect()
}

/// `x` in `format`: the format's own quantizer, or the tests' k-quant encoder.
pub fn encode(format: Format, x: &[f32]) -> Vec<u8> {
    let spec = format.spec();
    match spec.quantize {
        Some(q) => {
            let mut out = vec![0u8; format.tensor_bytes(x.len(), 1, "row").unwrap()];
            let w = vec![1f32; spec.block_elems];
            for (xb, ob) in x
                .chunks_exact(spec.block_elems)
                .zip(out.chunks_exact_mut(spec.block_bytes))
            {
                q(xb, &w, ob);
            }
            out
        }
        None => crate::kquant_encode::encode_row(format, x)
            .unwrap_or_else(|| panic!("no encoder for {format:?}")),
    }
}
