//! One sampling call timed many times (the fastest run, µs): the per-token cost of the sampler
//! chain on a vocabulary of SmolLM2's size, greedy and with the CLI's default chain.
//!
//!   cargo run --release -p vspec-bench --example sample_min -- [VOCAB]
//!
//! Logits are bell-shaped (a sum of four uniforms, spread ±12), as a language model's spread.

use std::time::Instant;
use vspec_bench::Rng;
use vspec_core::sample::{Sampler, SamplerConfig};

fn main() {
    let vocab: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(49152);
    let mut rng = Rng::new(3);
    let logits: Vec<f32> = (0..vocab)
        .map(|_| (0..4).map(|_| rng.f32()).sum::<f32>() * 3.0)
        .collect();
    let history: Vec<u32> = (0..64).map(|i| (i * 97) as u32 % vocab as u32).collect();
    let configs = [
        ("greedy", SamplerConfig::greedy()),
        (
            "default (top-k 40, top-p 0.95, min-p 0.05, temp 0.8)",
            SamplerConfig::default(),
        ),
        (
            "top-k 0, top-p 0.95",
            SamplerConfig {
                top_k: 0,
                ..SamplerConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        let mut sampler = Sampler::new(config, vocab).expect("valid config");
        let mut best = f64::MAX;
        let mut sink = 0u64;
        for _ in 0..300 {
            let t = Instant::now();
            sink += u64::from(sampler.sample(&logits, &history));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:>55}: {:8.1} µs per token (vocab {vocab}; {sink})",
            best * 1e6
        );
    }
}
