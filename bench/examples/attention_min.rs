//! The attention kernel timed alone, fastest of many runs (see `matmul_min` for why the fastest):
//! one call over every head on one thread, reported in GFLOP/s (a multiply-add counts 2, for
//! both Q·Kᵀ and P·V) so the figure can be set against the FMA peak.
//!
//!   cargo run --release -p vspec-bench --example attention_min -- [TOKENS] [POS0] [KV]
//!
//! Defaults: 512 tokens from position 0 (a prefill) over an f16 cache; `1 2048` is one decode
//! step at depth 2048. KV is `f32`, `f16` or `q8_0`. Shape: SmolLM2-135M's (9 query heads,
//! 3 KV heads, head_dim 64); `TIER` as in `matmul_min`. `LAYERS=30` attends 30 separate caches
//! in turn (times are per call), so a long cache is read from memory as in a real decode step.
//! `HEADS=A..B` attends query heads A..B only (what one thread's share of a decode step does);
//! GFLOP/s still count all heads, so compare its times.

use std::time::Instant;
use vspec_bench::{tier_table, Rng};
use vspec_core::kernels::attention::{chunk_slots, partials_len, AttnShape, AttnSpan};
use vspec_core::kernels::SharedOut;
use vspec_core::kv::{store_row, KvRows, KvType};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokens: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(512);
    let pos0: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let kv_type = match args.get(3).map(String::as_str).unwrap_or("f16") {
        "f32" => KvType::F32,
        "f16" => KvType::F16,
        "q8_0" => KvType::Q8_0,
        other => {
            eprintln!("KV type '{other}': expected f32, f16 or q8_0");
            std::process::exit(2);
        }
    };
    let tier = std::env::var("TIER").unwrap_or_default();
    let Some(table) = tier_table(&tier) else {
        eprintln!("this CPU lacks the tier '{tier}'");
        std::process::exit(2);
    };
    let (n_heads, n_kv_heads, head_dim) = (9, 3, 64);
    let kv_width = n_kv_heads * head_dim;
    let positions = pos0 + tokens;
    let mut rng = Rng::new(11);
    let q: Vec<f32> = (0..tokens * n_heads * head_dim)
        .map(|_| rng.f32())
        .collect();
    let row_bytes = kv_type.row_bytes(kv_width);
    // u32 storage keeps the rows aligned for the f32 and f16 views.
    let mut k_words = vec![0u32; (positions * row_bytes).div_ceil(4)];
    let mut v_words = vec![0u32; (positions * row_bytes).div_ceil(4)];
    let k_bytes: &mut [u8] = &mut bytemuck_bytes(&mut k_words)[..positions * row_bytes];
    let v_bytes: &mut [u8] = &mut bytemuck_bytes(&mut v_words)[..positions * row_bytes];
    let row: Vec<f32> = (0..kv_width).map(|_| rng.f32()).collect();
    for p in 0..positions {
        store_row(
            kv_type,
            &row,
            &mut k_bytes[p * row_bytes..(p + 1) * row_bytes],
        );
        store_row(
            kv_type,
            &row,
            &mut v_bytes[p * row_bytes..(p + 1) * row_bytes],
        );
    }
    let view = |b: &'static [u8]| match kv_type {
        KvType::F32 => KvRows::F32(cast(b)),
        KvType::F16 => KvRows::F16(cast(b)),
        KvType::Q8_0 => KvRows::Q8_0(b),
    };
    // LAYERS copies of the cache, attended in turn, so that with 30 of them (SmolLM2's depth) a
    // long cache no longer fits the caches, as in a real decode step.
    let layers: usize = std::env::var("LAYERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let caches: Vec<(KvRows<'static>, KvRows<'static>)> = (0..layers)
        .map(|_| (view(k_bytes.to_vec().leak()), view(v_bytes.to_vec().leak())))
        .collect();
    let shape = AttnShape {
        n_heads,
        n_kv_heads,
        head_dim,
        scale: 0.125,
        tokens,
        pos0,
        span: AttnSpan::Whole,
        partial_slots: chunk_slots(positions),
    };
    let heads = match std::env::var("HEADS") {
        Ok(h) => match h.split_once("..").map(|(a, b)| (a.parse(), b.parse())) {
            Some((Ok(a), Ok(b))) if a < b && b <= n_heads => a..b,
            _ => {
                eprintln!("HEADS '{h}': expected A..B with A < B <= {n_heads}");
                std::process::exit(2);
            }
        },
        Err(_) => 0..n_heads,
    };
    let mut scores = vec![0f32; partials_len(n_heads, head_dim, positions).unwrap()];
    let mut out = vec![0f32; tokens * n_heads * head_dim];
    let attended: usize = (0..tokens).map(|t| pos0 + t + 1).sum();
    let flops = (4 * attended * n_heads * head_dim) as f64;
    let runs = ((2e10 / flops) as usize).clamp(50, 5000);
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        for &(k, v) in &caches {
            let (sc, o) = (SharedOut::new(&mut scores), SharedOut::new(&mut out));
            let q = std::hint::black_box(&q);
            // SAFETY: one call on this thread owns every head it attends.
            unsafe { (table.attention.f)(&shape, q, k, v, heads.clone(), &sc, &o) };
        }
        seconds.push(start.elapsed().as_secs_f64() / layers as f64);
    }
    seconds.sort_by(f64::total_cmp);
    println!(
        "{} tokens from {pos0}, {kv_type} KV: {}  fastest {:.2} ms = {:.1} GFLOP/s  p10 {:.1}",
        tokens,
        table.attention.name,
        seconds[0] * 1e3,
        flops / seconds[0] / 1e9,
        flops / seconds[runs / 10] / 1e9,
    );
}

/// The words' bytes.
fn bytemuck_bytes(words: &mut [u32]) -> &mut [u8] {
    bytemuck::cast_slice_mut(words)
}

/// Aligned bytes as a slice of `T`.
fn cast<T: bytemuck::Pod>(b: &[u8]) -> &[T] {
    bytemuck::cast_slice(b)
}
