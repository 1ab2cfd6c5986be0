//! Sampler tests: greedy, filters, determinism, distribution and config validation.

use vspec_core::sample::{Sampler, SamplerConfig};

/// Temperature 1 and every filter off: a plain draw from the softmax.
fn plain(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        seed,
    }
}

/// Logits whose softmax is exactly `probs` (up to rounding).
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

/// Frequencies of each token over `draws` calls.
fn frequencies(config: SamplerConfig, logits: &[f32], draws: usize) -> Vec<f64> {
    let mut s = Sampler::new(config, logits.len()).unwrap();
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[s.sample(logits, &[]) as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

fn assert_close(found: &[f64], expected: &[f64], tol: f64) {
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert!(
            (f - e).abs() <= tol,
            "token {i}: frequency {f:.4}, expected {e:.4} ({found:?})"
        );
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in [-8, 8).
    fn logit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 16.0 - 8.0
    }
}

const PROBS: [f64; 4] = [0.5, 0.25, 0.15, 0.1];

#[test]
fn defaults_are_llama_cpp_like() {
    let d = SamplerConfig::default();
    assert_eq!(
        d,
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0
        }
    );
    d.validate().unwrap();
    SamplerConfig::greedy().validate().unwrap();
}

#[test]
fn greedy_picks_argmax_lowest_id_on_ties_and_ignores_nan() {
    let mut s = Sampler::new(SamplerConfig::greedy(), 6).unwrap();
    assert_eq!(s.sample(&[0.1, 2.0, -3.0, 2.0, 1.9, 0.0], &[]), 1);
    assert_eq!(s.sample(&[0.1, f32::NAN, -3.0, 2.0, 1.9, 0.0], &[]), 3);
    assert_eq!(s.sample(&[f32::NAN; 6], &[]), 0);
    assert_eq!(s.sample(&[-0.0, 0.0, -1.0, -1.0, -1.0, -1.0], &[]), 0);
    assert_eq!(
        s.sample(&[1.0, f32::INFINITY, 3.0, f32::INFINITY, 0.0, 0.0], &[]),
        1
    );
}

#[test]
fn nan_logits_are_never_drawn() {
    let logits = [f32::NAN, 0.0, f32::NAN, 0.0];
    let f = frequencies(plain(3), &logits, 4000);
    assert_eq!((f[0], f[2]), (0.0, 0.0));
    assert_close(&f, &[0.0, 0.5, 0.0, 0.5], 0.03);
}

#[test]
fn top_k_one_equals_greedy_at_any_temperature() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut greedy = Sampler::new(SamplerConfig::greedy(), 300).unwrap();
    for (i, temp) in [0.05f32, 0.7, 1.0, 3.0, 1000.0].into_iter().enumerate() {
        let config = SamplerConfig {
            temperature: temp,
            top_k: 1,
            seed: i as u64,
            ..Default::default()
        };
        let mut top1 = Sampler::new(config, 300).unwrap();
        for _ in 0..50 {
            let mut logits: Vec<f32> = (0..300).map(|_| rng.logit()).collect();
            logits[(rng.next() % 300) as usize] = logits[(rng.next() % 300) as usize]; // a tie, sometimes at the top
            let history: Vec<u32> = (0..10).map(|_| (rng.next() % 300) as u32).collect();
            assert_eq!(
                top1.sample(&logits, &history),
                greedy.sample(&logits, &history)
            );
        }
    }
}

#[test]
fn same_seed_same_tokens_and_golden_sequence() {
    let mut rng = XorShift(99);
    let inputs: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..64).map(|_| rng.logit() / 4.0).collect())
        .collect();
    let config = SamplerConfig {
        seed: 42,
        repeat_penalty: 1.1,
        ..Default::default()
    };
    let run = || {
        let mut s = Sampler::new(config.clone(), 64).unwrap();
        let mut history = vec![1u32, 2, 3];
        for logits in &inputs {
            let t = s.sample(logits, &history);
            history.push(t);
        }
        history
    };
    let a = run();
    assert_eq!(a, run());
    // Pinned so that a change of generator, exp or chain order is noticed: the same seed must
    // give the same tokens on every machine and every version.
    assert_eq!(&a[3..13], GOLDEN_SEED_42);
}

/// The first ten tokens of `same_seed_same_tokens_and_golden_sequence`.
const GOLDEN_SEED_42: &[u32] = &[36, 37, 49, 29, 23, 32, 17, 62, 62, 12];

#[test]
fn different_seeds_differ_on_a_flat_distribution() {
    let logits = vec![0.0f32; 1000];
    let draw = |seed| {
        let mut s = Sampler::new(plain(seed), 1000).unwrap();
        (0..20)
            .map(|_| s.sample(&logits, &[]))
            .collect::<Vec<u32>>()
    };
    let (a, b) = (draw(1), draw(2));
    assert_ne!(a, b);
    // A flat distribution really is sampled: many distinct tokens.
    let mut distinct = a.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 15, "{a:?}");
}

#[test]
fn frequencies_match_the_softmax() {
    let logits = logits_of(&PROBS);
    assert_close(&frequencies(plain(7), &logits, 20_000), &PROBS, 0.015);
    // Temperature 2: probabilities proportional to sqrt(p).
    let w: Vec<f64> = PROBS.iter().map(|p| p.sqrt()).collect();
    let total: f64 = w.iter().sum();
    let expected: Vec<f64> = w.iter().map(|x| x / total).collect();
    let f = frequencies(
        SamplerConfig {
            temperature: 2.0,
            ..plain(8)
        },
        &logits,
        20_000,
    );
    assert_close(&f, &expected, 0.015);
}

#[test]
fn top_k_top_p_and_min_p_exclude_the_right_tokens() {
    let logits = logits_of(&PROBS);
    // top-k 2: tokens 0 and 1, renormalised 2/3 and 1/3.
    let f = frequencies(
        SamplerConfig {
            top_k: 2,
            ..plain(1)
        },
        &logits,
        20_000,
    );
    assert_close(&f, &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0], 0.015);
    assert_eq!((f[2], f[3]), (0.0, 0.0));
    // top-p 0.7: cumulative 0.5 < 0.7, then 0.75 >= 0.7 → tokens 0 and 1.
    let f = frequencies(
        SamplerConfig {
            top_p: 0.7,
            ..plain(2)
        },
        &logits,
        20_000,
    );
    assert_close(&f, &[2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0], 0.015);
    assert_eq!((f[2], f[3]), (0.0, 0.0));
    // top-p 0.3: the first token alone reaches it.
    let f = frequencies(
        SamplerConfig {
            top_p: 0.3,
            ..plain(3)
        },
        &logits,
        2_000,
    );
    assert_eq!(f, [1.0, 0.0, 0.0, 0.0]);
    // top-p 0.8: 0.75 < 0.8, 0.9 >= 0.8 → tokens 0, 1, 2.
    let f = frequencies(
        SamplerConfig {
            top_p: 0.8,
            ..plain(4)
        },
        &logits,
        20_000,
    );
    assert_close(&f, &[0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0], 0.015);
    assert_eq!(f[3], 0.0);
    // min-p 0.25: thresholds at 0.25 × 0.5 = 0.125 → token 3 (0.1) goes, token 2 (0.15) stays.
    let f = frequencies(
        SamplerConfig {
            min_p: 0.25,
            ..plain(5)
        },
        &logits,
        20_000,
    );
    assert_close(&f, &[0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0], 0.015);
    assert_eq!(f[3], 0.0);
    // min-p 0.6: only token 0 (token 1 is at 0.5 of the max).
    let f = frequencies(
        SamplerConfig {
            min_p: 0.6,
            ..plain(6)
        },
        &logits,
        2_000,
    );
    assert_eq!(f, [1.0, 0.0, 0.0, 0.0]);
    // Min-p is relative to the best token after top-k, independent of the order of ids.
    let reversed: Vec<f32> = logits.iter().rev().copied().collect();
    let f = frequencies(
        SamplerConfig {
            min_p: 0.25,
            top_k: 3,
            ..plain(9)
        },
        &reversed,
        20_000,
    );
    assert_close(&f, &[0.0, 0.15 / 0.9, 0.25 / 0.9, 0.5 / 0.9], 0.015);
}

#[test]
fn repetition_penalty_changes_the_argmax() {
    let cfg = |penalty, last_n| SamplerConfig {
        repeat_penalty: penalty,
        repeat_last_n: last_n,
        ..SamplerConfig::greedy()
    };
    // Positive logit divided: 2.0 / 1.5 = 1.33 < 1.5.
    let mut s = Sampler::new(cfg(1.5, 64), 3).unwrap();
    assert_eq!(s.sample(&[2.0, 1.5, -1.0], &[]), 0);
    assert_eq!(s.sample(&[2.0, 1.5, -1.0], &[0]), 1);
    // Negative logit multiplied: -1.0 × 1.5 = -1.5 < -1.2.
    assert_eq!(s.sample(&[-1.0, -1.2, -9.0], &[0]), 1);
    // Each distinct token once: -1.0 × 1.1 = -1.1 > -1.2 however often 0 repeats (1.1³ would not).
    let mut s = Sampler::new(cfg(1.1, 64), 3).unwrap();
    assert_eq!(s.sample(&[-1.0, -1.2, -9.0], &[0, 0, 0, 0]), 0);
    // Only the last `repeat_last_n` tokens count.
    let mut s = Sampler::new(cfg(1.5, 2), 3).unwrap();
    assert_eq!(s.sample(&[2.0, 1.5, -1.0], &[0, 2, 2]), 0);
    assert_eq!(s.sample(&[2.0, 1.5, -1.0], &[2, 0, 2]), 1);
    // A penalty below 1 encourages: 1.5 / 0.5 = 3 > 2.
    let mut s = Sampler::new(cfg(0.5, 64), 3).unwrap();
    assert_eq!(s.sample(&[2.0, 1.5, -1.0], &[1, 7_000]), 1);
}

#[test]
fn validate_rejects_bad_fields_by_name() {
    let bad = [
        (
            "temperature",
            SamplerConfig {
                temperature: -0.1,
                ..Default::default()
            },
        ),
        (
            "temperature",
            SamplerConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "top_p",
            SamplerConfig {
                top_p: 0.0,
                ..Default::default()
            },
        ),
        (
            "top_p",
            SamplerConfig {
                top_p: 1.01,
                ..Default::default()
            },
        ),
        (
            "top_p",
            SamplerConfig {
                top_p: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "min_p",
            SamplerConfig {
                min_p: -0.01,
                ..Default::default()
            },
        ),
        (
            "min_p",
            SamplerConfig {
                min_p: 1.5,
                ..Default::default()
            },
        ),
        (
            "min_p",
            SamplerConfig {
                min_p: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "repeat_penalty",
            SamplerConfig {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ),
        (
            "repeat_penalty",
            SamplerConfig {
                repeat_penalty: -1.0,
                ..Default::default()
            },
        ),
        (
            "repeat_penalty",
            SamplerConfig {
                repeat_penalty: f32::NAN,
                ..Default::default()
            },
        ),
    ];
    for (field, config) in bad {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("sampler.{field}")), "{field}: {err}");
        let err = Sampler::new(config, 10)
            .expect_err("new must validate")
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    let edges = [
        SamplerConfig {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        },
        SamplerConfig {
            min_p: 1.0,
            repeat_penalty: 0.01,
            ..Default::default()
        },
    ];
    for config in edges {
        config.validate().unwrap();
    }
    assert!(Sampler::new(SamplerConfig::default(), 0).is_err());
}

#[test]
fn config_round_trips_through_json() {
    let c = SamplerConfig {
        seed: 7,
        ..Default::default()
    };
    let back: SamplerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}
