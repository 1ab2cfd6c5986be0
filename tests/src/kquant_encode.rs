//! Round-to-nearest encoders for ggml's 256-weight super-block formats (Q2_K–Q6_K, IQ4_XS), so
//! the end-to-end tests can run k-quant weights made from the default model: Vspec's quantizer
//! does not write these formats. Plain rounding with max-based scales, not ggml's searched
//! scales: enough for a model that still talks, nothing to ship. Layouts as documented in
//! `core/src/quant/gguf/*.rs`; tests check each encoding by decoding it with the core.

use half::f16;
use vspec_core::format::Format;
use vspec_core::quant::gguf::iq4_nl::KVALUES;

/// Weights per super-block.
const QK_K: usize = 256;

/// Encodes `x` (a whole number of 256-weight super-blocks) in `format`, one of Q2_K–Q6_K and
/// IQ4_XS; `None` for any other format.
pub fn encode_row(format: Format, x: &[f32]) -> Option<Vec<u8>> {
    let encode: fn(&[f32], &mut [u8]) = match format {
        Format::Q2_K => q2_k,
        Format::Q3_K => q3_k,
        Format::Q4_K => |x, b| q4_5_k(x, b, false),
        Format::Q5_K => |x, b| q4_5_k(x, b, true),
        Format::Q6_K => q6_k,
        Format::IQ4_XS => iq4_xs,
        _ => return None,
    };
    if !x.len().is_multiple_of(QK_K) {
        return None;
    }
    let bytes = format.block_bytes();
    let mut out = vec![0u8; x.len() / QK_K * bytes];
    for (xs, b) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(bytes)) {
        encode(xs, b);
    }
    Some(out)
}

/// `v` rounded to f16: its bytes and its value.
fn half(v: f32) -> ([u8; 2], f32) {
    let h = f16::from_f32(v);
    (h.to_le_bytes(), h.to_f32())
}

/// `round(v / step)` clamped to `lo..=hi`; 0 when `step` is 0.
fn level(v: f32, step: f32, lo: i32, hi: i32) -> i32 {
    if step == 0.0 {
        0
    } else {
        ((v / step).round() as i32).clamp(lo, hi)
    }
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Per sub-block of `sub` weights, the scale and min of `x ≈ scale · q − min` with `q` in
/// `0..=qmax` and `min ≥ 0`.
fn affine_subs(x: &[f32], sub: usize, qmax: f32) -> Vec<(f32, f32)> {
    x.chunks_exact(sub)
        .map(|s| {
            let lo = s.iter().fold(0f32, |m, &v| m.min(v));
            let hi = s.iter().fold(lo, |m, &v| m.max(v));
            ((hi - lo) / qmax, -lo)
        })
        .collect()
}

/// Super-scale and quantized sub-block values (`0..=top`) of non-negative `v`.
fn super_scale(v: impl Iterator<Item = f32> + Clone, top: i32) -> ([u8; 2], f32, Vec<i32>) {
    let (bytes, d) = half(v.clone().fold(0f32, f32::max) / top as f32);
    let q = v.map(|s| level(s, d, 0, top)).collect();
    (bytes, d, q)
}

fn q2_k(x: &[f32], b: &mut [u8]) {
    let subs = affine_subs(x, 16, 3.0);
    let (db, d, sc) = super_scale(subs.iter().map(|s| s.0), 15);
    let (mb, dmin, m) = super_scale(subs.iter().map(|s| s.1), 15);
    for s in 0..16 {
        b[s] = (sc[s] | (m[s] << 4)) as u8;
    }
    for (i, &v) in x.iter().enumerate() {
        let s = i / 16;
        let q = level(v + dmin * m[s] as f32, d * sc[s] as f32, 0, 3);
        b[16 + 32 * (i / 128) + i % 32] |= (q as u8) << (2 * ((i / 32) % 4));
    }
    b[80..82].copy_from_slice(&db);
    b[82..84].copy_from_slice(&mb);
}

fn q3_k(x: &[f32], b: &mut [u8]) {
    let (db, d, sc) = super_scale(x.chunks_exact(16).map(|s| max_abs(s) / 4.0), 31);
    for (s, &v) in sc.iter().enumerate() {
        let v = (v + 32) as u8; // 6 bits, biased by 32
        if s < 8 {
            b[96 + s] |= v & 0x0F;
        } else {
            b[96 + s - 8] |= (v & 0x0F) << 4;
        }
        b[96 + 8 + s % 4] |= (v >> 4) << (2 * (s / 4));
    }
    for (i, &v) in x.iter().enumerate() {
        // Stored as u = q + 4: low two bits in qs, bit 2 in hmask.
        let u = (level(v, d * sc[i / 16] as f32, -4, 3) + 4) as u8;
        b[32 + 32 * (i / 128) + i % 32] |= (u & 3) << (2 * ((i / 32) % 4));
        b[i % 32] |= (u >> 2) << (i / 32);
    }
    b[108..110].copy_from_slice(&db);
}

/// Q4_K, or Q5_K with `five_bits`.
fn q4_5_k(x: &[f32], b: &mut [u8], five_bits: bool) {
    let qmax = if five_bits { 31 } else { 15 };
    let subs = affine_subs(x, 32, qmax as f32);
    let (db, d, sc) = super_scale(subs.iter().map(|s| s.0), 63);
    let (mb, dmin, m) = super_scale(subs.iter().map(|s| s.1), 63);
    b[0..2].copy_from_slice(&db);
    b[2..4].copy_from_slice(&mb);
    // The packing `scale_min_k4` reads: 6 bits each for sub-blocks 0..4, the low 4 bits of
    // 4..8 in bytes 8..12 and their high 2 bits on top of bytes 0..8.
    let p = &mut b[4..16];
    for j in 0..4 {
        p[j] = (sc[j] | ((sc[j + 4] >> 4) << 6)) as u8;
        p[j + 4] = (m[j] | ((m[j + 4] >> 4) << 6)) as u8;
        p[j + 8] = ((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4)) as u8;
    }
    let qs = if five_bits { 48 } else { 16 };
    for (i, &v) in x.iter().enumerate() {
        let s = i / 32;
        let q = level(v + dmin * m[s] as f32, d * sc[s] as f32, 0, qmax) as u8;
        b[qs + 32 * (i / 64) + i % 32] |= (q & 15) << (4 * (s % 2));
        if five_bits {
            b[16 + i % 32] |= (q >> 4) << s;
        }
    }
}

fn q6_k(x: &[f32], b: &mut [u8]) {
    let (db, d, sc) = super_scale(x.chunks_exact(16).map(|s| max_abs(s) / 32.0), 127);
    for (s, &v) in sc.iter().enumerate() {
        b[192 + s] = v as u8;
    }
    for (i, &v) in x.iter().enumerate() {
        let u = (level(v, d * sc[i / 16] as f32, -32, 31) + 32) as u8;
        let (n, k, l) = (i / 128, (i % 128) / 32, i % 32);
        b[64 * n + 32 * (k % 2) + l] |= (u & 15) << (4 * (k / 2));
        b[128 + 32 * n + l] |= (u >> 4) << (2 * k);
    }
    b[208..210].copy_from_slice(&db);
}

fn iq4_xs(x: &[f32], b: &mut [u8]) {
    let (db, d, sc) = super_scale(x.chunks_exact(32).map(|s| max_abs(s) / 127.0), 31);
    b[0..2].copy_from_slice(&db);
    let mut scales_h = 0u16;
    for (s, &v) in sc.iter().enumerate() {
        let v = (v + 32) as u8; // 6 bits, biased by 32
        b[4 + s / 2] |= (v & 15) << (4 * (s % 2));
        scales_h |= ((v >> 4) as u16) << (2 * s);
    }
    b[2..4].copy_from_slice(&scales_h.to_le_bytes());
    for (i, &v) in x.iter().enumerate() {
        let (s, w) = (i / 32, i % 32);
        let dl = d * sc[s] as f32;
        let k = (0..16)
            .min_by(|&a, &c| {
                let ea = (KVALUES[a] as f32 * dl - v).abs();
                let ec = (KVALUES[c] as f32 * dl - v).abs();
                ea.total_cmp(&ec)
            })
            .unwrap_or(0);
        b[8 + 16 * s + w % 16] |= (k as u8) << (4 * (w / 16));
    }
}
