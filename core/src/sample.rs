//! Token sampling: a seeded, deterministic chain in the order of llama.cpp's default sampler.
//!
//! For each call to [`Sampler::sample`]:
//! 1. Copy the logits into scratch; NaN becomes `-inf`, `+inf` becomes `f32::MAX`, `-0.0`
//!    becomes `+0.0` (so ties compare the same in every step).
//! 2. Repetition penalty over the last `repeat_last_n` tokens of the history, each distinct token
//!    once: a positive logit is divided by `repeat_penalty`, a non-positive one multiplied.
//! 3. If `temperature <= 0`: return the argmax (ties → lowest id). No random number is drawn.
//! 4. Otherwise draw one uniform number (exactly one per call, whatever the filters leave), keep
//!    the tokens with a finite logit, then:
//!    - top-k: keep the `top_k` highest logits (0 = off; ties → lower id first), ordered by logit
//!      (descending, ties → lower id) when it drops any, else in id order;
//!    - top-p: sort by logit (descending, ties → lower id), take the softmax at temperature 1 of
//!      what is left and keep the shortest prefix whose probability reaches `top_p` (at least 1);
//!    - min-p: drop tokens whose probability is below `min_p` × the highest probability;
//!    - temperature: weights `exp((logit - max) / temperature)`, and pick the token where the
//!      running sum of weights first exceeds `u × total`.
//!
//! All arithmetic is plain IEEE `f32`/`f64` with a portable `exp` written here (no platform libm),
//! and the generator is xoshiro256** seeded through splitmix64, so the same seed, logits and
//! history give the same token on every machine. After [`Sampler::new`], `sample` does not
//! allocate.

use crate::{Error, Result};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

/// Sampling parameters. Field meanings follow llama.cpp.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerConfig {
    /// Softmax temperature; `0` (or less, though [`validate`](Self::validate) rejects negatives)
    /// means greedy argmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns the filter off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `top_p`, in (0, 1]; 1 turns the filter off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one, in [0, 1]; 0 turns it off.
    pub min_p: f32,
    /// Repetition penalty, > 0; 1 turns it off, above 1 discourages repeats.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalty looks at; 0 turns it off.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp-like defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition
    /// penalty (window 64), seed 0.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: temperature 0 and every filter off, so `sample` returns the argmax.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Self::default()
        }
    }

    /// Check every field; the error names the first bad one (`sampler.temperature`, ...).
    pub fn validate(&self) -> Result<()> {
        if self.temperature.is_nan() || self.temperature < 0.0 {
            return Err(Error::invalid(
                "sampler.temperature",
                format!("{} must be >= 0 (0 = greedy)", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(
                "sampler.top_p",
                format!("{} must be in (0, 1]", self.top_p),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid(
                "sampler.min_p",
                format!("{} must be in [0, 1]", self.min_p),
            ));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(Error::invalid(
                "sampler.repeat_penalty",
                format!("{} must be finite and > 0 (1 = off)", self.repeat_penalty),
            ));
        }
        Ok(())
    }
}

/// A seeded sampler with scratch for one vocabulary. See the module doc for the chain.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Xoshiro256,
    /// Sanitised, penalised logits.
    logits: Vec<f32>,
    /// Candidate token ids.
    ids: Vec<u32>,
    /// Per-candidate weights (f64 for the sums).
    weights: Vec<f64>,
    /// `seen[t] == epoch` when token t was already penalised in this call.
    seen: Vec<u32>,
    epoch: u32,
}

impl Sampler {
    /// Validate `config` and preallocate scratch for `vocab_size` tokens (1 ..= 2³² ids).
    pub fn new(config: SamplerConfig, vocab_size: usize) -> Result<Self> {
        config.validate()?;
        if vocab_size == 0 || vocab_size as u64 > u64::from(u32::MAX) + 1 {
            return Err(Error::invalid(
                "sampler vocab_size",
                format!("{vocab_size} must be in 1..=2^32"),
            ));
        }
        Ok(Sampler {
            rng: Xoshiro256::seeded(config.seed),
            config,
            logits: vec![0.0; vocab_size],
            ids: vec![0; vocab_size],
            weights: vec![0.0; vocab_size],
            seen: vec![0; vocab_size],
            epoch: 0,
        })
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The vocabulary size the scratch was allocated for.
    pub fn vocab_size(&self) -> usize {
        self.logits.len()
    }

    /// Pick the next token from `logits` given `history`, the previous tokens (prompt and
    /// generated so far).
    ///
    /// Only the first `min(logits.len(), vocab_size)` logits are considered, and history ids
    /// outside that range are ignored; an empty `logits` returns 0. If every logit is `-inf`
    /// (or NaN) the result is 0, the argmax's tie rule.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let n = logits.len().min(self.logits.len());
        if n == 0 {
            return 0;
        }
        let Sampler {
            config,
            rng,
            logits: scratch,
            ids,
            weights,
            seen,
            epoch,
        } = self;
        let scratch = &mut scratch[..n];

        // Step 1.
        for (d, &s) in scratch.iter_mut().zip(logits) {
            *d = sanitize(s);
        }

        // Step 2.
        let penalty = config.repeat_penalty;
        if penalty != 1.0 && config.repeat_last_n > 0 {
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                seen.fill(0);
                *epoch = 1;
            }
            let start = history.len().saturating_sub(config.repeat_last_n);
            for &t in &history[start..] {
                let t = t as usize;
                if t < n && seen[t] != *epoch {
                    seen[t] = *epoch;
                    let l = scratch[t];
                    scratch[t] = sanitize(if l <= 0.0 { l * penalty } else { l / penalty });
                }
            }
        }

        // Step 3.
        if config.temperature <= 0.0 {
            return argmax(scratch);
        }

        // Step 4.
        let u = rng.next_f64();
        let scratch = &*scratch;
        let by_logit_desc = |a: &u32, b: &u32| rank(scratch, *a, *b);
        // Candidates, with top-k in the same pass.
        let mut len = if config.top_k > 0 {
            top_k_finite(scratch, config.top_k, ids)
        } else {
            let mut len = 0;
            for (i, &l) in scratch.iter().enumerate() {
                if l > f32::NEG_INFINITY {
                    ids[len] = i as u32;
                    len += 1;
                }
            }
            len
        };
        if len == 0 {
            return argmax(scratch);
        }

        // Top-p (needs the candidates sorted, the first one then holds the max).
        let mut sorted = false;
        if config.top_p < 1.0 && len > 1 {
            ids[..len].sort_unstable_by(by_logit_desc);
            sorted = true;
            let max = scratch[ids[0] as usize];
            let mut sum = 0.0f64;
            for (w, &id) in weights[..len].iter_mut().zip(&ids[..len]) {
                *w = exp(f64::from(scratch[id as usize]) - f64::from(max));
                sum += *w;
            }
            let target = f64::from(config.top_p) * sum;
            let mut cum = 0.0f64;
            for (i, &w) in weights[..len].iter().enumerate() {
                cum += w;
                if cum >= target {
                    len = i + 1;
                    break;
                }
            }
        }

        let max = if sorted {
            scratch[ids[0] as usize]
        } else {
            ids[..len]
                .iter()
                .map(|&id| scratch[id as usize])
                .fold(f32::NEG_INFINITY, f32::max)
        };

        // Min-p: p_i / p_max = exp(l_i - l_max) at temperature 1. Order is kept.
        if config.min_p > 0.0 && len > 1 {
            let min_p = f64::from(config.min_p);
            let mut kept = 0;
            for i in 0..len {
                let id = ids[i];
                if exp(f64::from(scratch[id as usize]) - f64::from(max)) >= min_p {
                    ids[kept] = id;
                    kept += 1;
                }
            }
            len = kept; // the max itself always stays (exp(0) = 1 >= min_p)
        }

        // Temperature, softmax weights and the draw.
        let temp = f64::from(config.temperature);
        let mut total = 0.0f64;
        for (w, &id) in weights[..len].iter_mut().zip(&ids[..len]) {
            *w = exp((f64::from(scratch[id as usize]) - f64::from(max)) / temp);
            total += *w;
        }
        let target = u * total;
        let mut cum = 0.0f64;
        for (&w, &id) in weights[..len].iter().zip(&ids[..len]) {
            cum += w;
            if target < cum {
                return id;
            }
        }
        ids[len - 1]
    }
}

/// The chain's rank order of ids `a` and `b`: higher logit first, ties → lower id.
fn rank(logits: &[f32], a: u32, b: u32) -> Ordering {
    logits[b as usize]
        .total_cmp(&logits[a as usize])
        .then(a.cmp(&b))
}

/// The ids of the `k` highest finite logits of `logits` (sanitized: no NaN) in `ids[..len]`,
/// returning `len`: sorted by logit, descending, ties → lower id; or, when at most `k` logits
/// are finite, all of them in id order (no filter, as the chain describes).
///
/// One pass with a heap of the `k` best so far whose root is the worst of them, sixteen logits
/// at a time: a group whose maximum does not beat the root is skipped whole (the maximum
/// vectorizes), so a vocabulary of 49 152 costs little more than reading it, where selecting
/// among all candidates took a tenth of a 2-thread decode step of SmolLM2. Ids arrive in
/// increasing order, so a logit equal to the root's ranks after it (ties → lower id) and is
/// skipped like a smaller one.
fn top_k_finite(logits: &[f32], k: usize, ids: &mut [u32]) -> usize {
    const GROUP: usize = 16;
    let mut heap = TopK {
        logits,
        ids,
        k,
        len: 0,
        bar: f32::NEG_INFINITY,
        dropped: false,
    };
    let groups = logits.chunks_exact(GROUP);
    let tail = groups.remainder();
    for (g, group) in groups.enumerate() {
        let top = group
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        if top <= heap.bar {
            heap.dropped |= top > f32::NEG_INFINITY;
            continue;
        }
        for (j, &l) in group.iter().enumerate() {
            heap.consider(g * GROUP + j, l);
        }
    }
    let base = logits.len() - tail.len();
    for (j, &l) in tail.iter().enumerate() {
        heap.consider(base + j, l);
    }
    let (len, dropped) = (heap.len, heap.dropped);
    let kept = &mut ids[..len];
    if !dropped {
        kept.sort_unstable();
    } else {
        kept.sort_unstable_by(|a, b| rank(logits, *a, *b));
    }
    len
}

/// The heap of [`top_k_finite`]: `ids[..len]` with the worst kept id at the root.
struct TopK<'a> {
    logits: &'a [f32],
    ids: &'a mut [u32],
    k: usize,
    len: usize,
    /// The root's logit once the heap is full (until then every finite logit enters).
    bar: f32,
    /// Whether a finite logit was left out.
    dropped: bool,
}

impl TopK<'_> {
    /// Whether id `a` ranks after id `b`.
    fn worse(&self, a: u32, b: u32) -> bool {
        rank(self.logits, a, b) == Ordering::Greater
    }

    fn consider(&mut self, id: usize, l: f32) {
        if l <= self.bar {
            self.dropped |= l > f32::NEG_INFINITY;
        } else if self.len < self.k {
            let mut at = self.len;
            self.ids[at] = id as u32;
            self.len += 1;
            while at > 0 && self.worse(self.ids[at], self.ids[(at - 1) / 2]) {
                self.ids.swap(at, (at - 1) / 2);
                at = (at - 1) / 2;
            }
            if self.len == self.k {
                self.bar = self.logits[self.ids[0] as usize];
            }
        } else {
            self.ids[0] = id as u32;
            self.dropped = true;
            let mut at = 0;
            loop {
                let (l, r) = (2 * at + 1, 2 * at + 2);
                let mut worst = at;
                if l < self.len && self.worse(self.ids[l], self.ids[worst]) {
                    worst = l;
                }
                if r < self.len && self.worse(self.ids[r], self.ids[worst]) {
                    worst = r;
                }
                if worst == at {
                    break;
                }
                self.ids.swap(at, worst);
                at = worst;
            }
            self.bar = self.logits[self.ids[0] as usize];
        }
    }
}

/// NaN → `-inf`, `+inf` → `f32::MAX`, `-0.0` → `+0.0`.
fn sanitize(x: f32) -> f32 {
    // Selects, not branches: the copy of the logits vectorizes.
    let x = if x.is_nan() { f32::NEG_INFINITY } else { x };
    (if x > f32::MAX { f32::MAX } else { x }) + 0.0
}

/// Index of the largest value, the lowest index on ties; 0 when every value is `-inf` (the
/// values are sanitized: no NaN).
///
/// Eight running maxima, then the first position of the maximum: both loops vectorize, where one
/// loop carrying the best index did not (30 µs per token for SmolLM2's 49 152 logits).
fn argmax(xs: &[f32]) -> u32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let first = xs.chunks(64).position(|c| c.contains(&max)).unwrap_or(0);
    let at = xs[first * 64..].iter().position(|&x| x == max).unwrap_or(0);
    (first * 64 + at) as u32
}

/// Portable `e^x` for the softmax: Cody–Waite range reduction to |r| <= ln2/2, a degree-13
/// Taylor polynomial, and an exact power-of-two scale. Relative error below 1e-15; returns 0
/// below -708 (and for NaN) and `+inf` above 709. Uses only IEEE `+ - × /`, so it gives the same
/// bits on every machine.
fn exp(x: f64) -> f64 {
    if x.is_nan() || x <= -708.0 {
        return 0.0;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let k = (x * core::f64::consts::LOG2_E + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let kf = k as f64;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // Horner for sum r^i / i!, i = 0..=13.
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    for d in (1..=12u32).rev() {
        p = p * r + 1.0 / factorial(d);
    }
    p = p * r + 1.0;
    // k is in [-1022, 1023] here, so 2^k is a normal number.
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

/// `d!` for small `d`, exact in f64.
const fn factorial(d: u32) -> f64 {
    let mut acc = 1.0;
    let mut i = 2;
    while i <= d {
        acc *= i as f64;
        i += 1;
    }
    acc
}

/// xoshiro256** (Blackman & Vigna), seeded with splitmix64.
#[derive(Clone, Debug)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn seeded(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -707.9;
        while x < 5.0 {
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 1e-14, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(f64::NAN), 0.0);
    }

    #[test]
    fn xoshiro_reference_values() {
        // splitmix64(0) first outputs, from the reference C implementation.
        let mut sm = Xoshiro256::seeded(0);
        assert_eq!(sm.s[0], 0xe220_a839_7b1d_cdaf);
        let a = sm.next_u64();
        let b = sm.next_u64();
        assert_ne!(a, b);
        let f = sm.next_f64();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn sanitize_and_argmax() {
        assert_eq!(sanitize(f32::NAN), f32::NEG_INFINITY);
        assert_eq!(sanitize(f32::INFINITY), f32::MAX);
        assert!(sanitize(-0.0).is_sign_positive());
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn top_k_keeps_the_best_finite_logits_in_rank_order() {
        let mut rng = Xoshiro256::seeded(11);
        for case in 0..400 {
            let n = 1 + (rng.next_u64() % 300) as usize;
            // Few distinct values so that ties are common; some -inf (sanitized NaN).
            let levels = 1 + (rng.next_u64() % 12) as u32;
            let logits: Vec<f32> = (0..n)
                .map(|_| match rng.next_u64() % 10 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::MAX,
                    _ => (rng.next_u64() % u64::from(levels)) as f32 * 0.5 - 2.0,
                })
                .collect();
            let k = 1 + (rng.next_u64() % (n as u64 + 3)) as usize;
            let mut ids = vec![0u32; n];
            let len = top_k_finite(&logits, k, &mut ids);
            let mut finite: Vec<u32> = (0..n as u32)
                .filter(|&i| logits[i as usize] > f32::NEG_INFINITY)
                .collect();
            let want: Vec<u32> = if finite.len() <= k {
                finite
            } else {
                finite.sort_by(|a, b| {
                    logits[*b as usize]
                        .total_cmp(&logits[*a as usize])
                        .then(a.cmp(b))
                });
                finite[..k].to_vec()
            };
            assert_eq!(&ids[..len], &want[..], "case {case}: n {n}, k {k}");
        }
    }

    #[test]
    fn sample_does_not_grow_scratch() {
        let mut s = Sampler::new(
            SamplerConfig {
                top_k: 0,
                ..Default::default()
            },
            4,
        )
        .unwrap();
        let caps = (s.logits.capacity(), s.ids.capacity(), s.weights.capacity());
        for _ in 0..100 {
            s.sample(&[0.1, 0.2, 0.3, 0.4, 9.0], &[0, 1, 2, 3, 7]);
        }
        assert_eq!(
            caps,
            (s.logits.capacity(), s.ids.capacity(), s.weights.capacity())
        );
    }
}
