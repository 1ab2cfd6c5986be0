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

/// `row` (whole blocks of `format`) decoded by the format's scalar decoder.
pub fn decode(format: Format, row: &[u8]) -> Vec<f32> {
    let spec = format.spec();
    let mut out = vec![0f32; row.len() / spec.block_bytes * spec.block_elems];
    for (b, o) in row
        .chunks_exact(spec.block_bytes)
        .zip(out.chunks_exact_mut(spec.block_elems))
    {
        (spec.decode)(b, o);
    }
    out
}

/// `x` (whole blocks of 32) as the 8-bit activation kernels see it: quantized to the CPU's
/// `BlockQ8Act` and decoded back.
pub fn through_q8(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (xs, o) in x.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        vspec_core::quant::act_q8::BlockQ8Act::quantize(xs).dequantize(o);
    }
    out
}

/// `Σ a·b` in f64, rounded once to f32: the reference a kernel's reassociated sums are held to.
pub fn dot_f64(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum::<f64>() as f32
}
