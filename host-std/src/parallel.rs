//! Rayon-backed [`Parallel`]: splits a row range over a private thread pool.

use rayon::prelude::*;
use std::ops::Range;
use vspec_core::kernels::Parallel;

/// A thread pool of a fixed size.
pub struct RayonParallel {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl RayonParallel {
    /// A pool of `threads` threads (0 = one per available core).
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = if threads == 0 { cores } else { threads };
        // Far more threads than cores only costs start-up time (thousands take minutes).
        let limit = (8 * cores).max(64);
        if threads > limit {
            anyhow::bail!(
                "-t/--threads {threads} is more than {limit} (this machine has {cores} cores)"
            );
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        Ok(RayonParallel { pool, threads })
    }
}

impl Parallel for RayonParallel {
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n == 0 {
            return;
        }
        if self.threads == 1 {
            return f(0..n);
        }
        // Four chunks per thread balance uneven rows without making chunks tiny.
        let chunk = n.div_ceil(self.threads * 4).max(1);
        let chunks = n.div_ceil(chunk);
        self.pool.install(|| {
            (0..chunks)
                .into_par_iter()
                .for_each(|c| f(c * chunk..((c + 1) * chunk).min(n)));
        });
    }

    fn threads(&self) -> usize {
        self.threads
    }
}
