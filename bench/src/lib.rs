//! Benchmark helpers: deterministic weight rows in any format.

use vspec_core::format::Format;
use vspec_core::kernels::{CpuFeatures, KernelTable};

/// A small deterministic generator (xorshift64*), so benchmarks see the same data on every run.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `rows × cols` weights of `format` with random bytes, and finite f16 scales where the format
/// has them (random bytes there could be NaN). Float formats get random finite values.
pub fn random_weights(format: Format, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = format
        .tensor_bytes(cols, rows, "bench")
        .expect("whole blocks");
    match format {
        Format::F32 => (0..rows * cols)
            .flat_map(|_| rng.f32().to_le_bytes())
            .collect(),
        Format::F16 | Format::BF16 => (0..rows * cols)
            .flat_map(|_| ((rng.next_u64() as u16) & 0x3bff).to_le_bytes())
            .collect(),
        _ => {
            let mut v: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            // Block formats keep their f16 scales (and mins) in their first or last four bytes;
            // high bytes of 0x2e give values near 0.1, so every decode is finite.
            for b in v.chunks_exact_mut(format.block_bytes()) {
                let n = b.len();
                for i in [1, 3, n - 3, n - 1] {
                    b[i] = 0x2e;
                }
            }
            v
        }
    }
}

/// The table of tier `tier` (`scalar`, `avx2`, `avx512`, `avx512-split` (the AVX-512 tier as
/// installed for CPUs that split 512-bit operations, such as Zen 4), or `""` for the best this
/// CPU has), or `None` when this CPU lacks it.
pub fn tier_table(tier: &str) -> Option<KernelTable> {
    if tier == "scalar" {
        return Some(KernelTable::scalar());
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 = avx2
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx512vbmi");
        // SAFETY: each flag is true only when the CPU reported the features it stands for.
        let features = unsafe { CpuFeatures::assume_detected(avx2) };
        match tier {
            "avx2" if avx2 => return Some(KernelTable::select(&features).0),
            "avx512" | "avx512-split" | "" if avx512 => {
                // SAFETY: `avx512` is true only when the CPU reported the five AVX-512 features.
                let features = unsafe { features.assume_avx512() };
                let split = tier == "avx512-split";
                return Some(KernelTable::select(&features.with_split_512(split)).0);
            }
            "" if avx2 => return Some(KernelTable::select(&features).0),
            _ => {}
        }
    }
    (tier.is_empty()).then(KernelTable::scalar)
}
