//! The thread pool behind [`Parallel`]: a few persistent workers that spin briefly between ops.
//!
//! Decoding one token runs about two hundred short parallel regions (every matmul and each
//! layer's attention). Entering a general-purpose pool for each costs microseconds of wake-up and
//! scheduling, which at a hundred tokens per second is a large share of the time. Here the
//! calling thread publishes the job by bumping a generation counter, runs its share itself, and the
//! workers, which were spinning on that counter, join in within nanoseconds. Workers that see no
//! new job for a while sleep on a condition variable, so an idle pool costs no CPU.
//!
//! Each thread owns a contiguous share of the units and claims it from the front in shrinking
//! pieces; a thread that finished its share steals pieces from the back of another's. A thread
//! thus streams one contiguous run of weight rows (the kernels prefetch past the end of a piece
//! into the next one), where pieces handed out from one shared counter alternated between the
//! threads, each piece starting a cold stream (decode of SmolLM2 `--bits 2` with 2 threads: 355
//! → 428 tok/s, medians of 5). Stealing keeps a thread slowed down by the machine's other load
//! from holding up the step. Which thread computes a piece never changes the result, because
//! every output element is computed by exactly one call in a fixed order. A worker must join a
//! job before touching it, and the caller closes the job once no unit is left to claim: it then
//! waits only for the workers that joined, never for one the OS has not yet scheduled (on a busy
//! machine that wait would cost a scheduler time slice per op).

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vspec_core::kernels::Parallel;

/// How long an idle worker keeps polling for the next job (spinning, then yielding the core)
/// before it sleeps.
const POLL_FOR: Duration = Duration::from_millis(2);
/// Busy-wait iterations before a waiting thread starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 2_000;

/// `state` packs the job's generation (high 32 bits), a closed flag and the count of workers
/// inside the job (low 31 bits).
const CLOSED: u64 = 1 << 31;
const ACTIVE_MASK: u64 = CLOSED - 1;

fn generation_of(state: u64) -> u64 {
    state >> 32
}

/// The job being run: a type-erased pointer to the caller's closure, the units it covers and
/// how many units one slot step stands for (1 unless `n` exceeds `u32::MAX`).
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(Range<usize>) + Sync),
    n: usize,
    grain: usize,
}

/// One thread's unclaimed share of a job, `[begin, end)` in grains packed as `end << 32 |
/// begin`, on its own cache line so that an owner's claims do not contend with the others'.
#[repr(align(64))]
struct Share(AtomicU64);

fn unpack(s: u64) -> (u64, u64) {
    (s & 0xFFFF_FFFF, s >> 32)
}

fn pack(begin: u64, end: u64) -> u64 {
    end << 32 | begin
}

struct Shared {
    state: AtomicU64,
    /// Written only by the calling thread while no worker is inside a job (see `for_each_range`).
    job: UnsafeCell<Option<Job>>,
    /// One share per thread (the caller's is 0); written by the caller before it publishes a
    /// job, then changed only by compare-and-swap claims.
    shares: Box<[Share]>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    panicked: AtomicBool,
}

// SAFETY: `job` is written only by the caller in `for_each_range` while the previous job is
// closed with no worker inside, before it publishes the new generation (Release); a worker reads
// it only after joining that generation (Acquire CAS) and before leaving it. The closure it
// points to is Sync.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer inside is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A fixed-size pool: the calling thread plus `threads - 1` workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serializes callers: one job at a time.
    busy: Mutex<u64>,
}

impl ThreadPool {
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
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            job: UnsafeCell::new(None),
            shares: (0..threads).map(|_| Share(AtomicU64::new(0))).collect(),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        // The pool is returned only once every worker runs: a thread's start-up in std
        // allocates (its name, for the stack-overflow handler), and a worker the OS starts late
        // would do so while a session is already running, breaking "no allocation after the
        // session exists".
        let started = Arc::new(AtomicUsize::new(0));
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let started = Arc::clone(&started);
            let spawned = std::thread::Builder::new()
                .name(format!("vspec-worker-{i}"))
                .spawn(move || {
                    started.fetch_add(1, Ordering::Release);
                    worker(&s, i)
                });
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // The workers already running see the shutdown flag and return.
                    shared.shutdown.store(true, Ordering::Release);
                    return Err(e.into());
                }
            }
        }
        while started.load(Ordering::Acquire) < threads - 1 {
            std::thread::yield_now();
        }
        Ok(ThreadPool {
            shared,
            workers,
            threads,
            busy: Mutex::new(0),
        })
    }
}

/// Units per grain and the number of grains for a job of `n` units: shares are counted in grains
/// so that their bounds fit the packed 32 bits.
fn grains_of(n: usize) -> (usize, u64) {
    let grain = n.div_ceil(u32::MAX as usize).max(1);
    (grain, n.div_ceil(grain) as u64)
}

/// Thread `i`'s share of `grains` (of `threads`): consecutive, equal within one grain.
fn initial_share(grains: u64, i: usize, threads: usize) -> (u64, u64) {
    let (i, t) = (i as u64, threads as u64);
    (grains * i / t, grains * (i + 1) / t)
}

/// Claims half (rounded up) of what is left of `share`: the front half for its owner (the next
/// piece of its contiguous run), the back half for a thread stealing from it.
fn claim(share: &Share, front: bool) -> Option<(u64, u64)> {
    let mut s = share.0.load(Ordering::Relaxed);
    loop {
        let (begin, end) = unpack(s);
        if begin >= end {
            return None;
        }
        let half = (end - begin).div_ceil(2);
        let (piece, left) = if front {
            ((begin, begin + half), pack(begin + half, end))
        } else {
            ((end - half, end), pack(begin, end - half))
        };
        match share
            .0
            .compare_exchange_weak(s, left, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return Some(piece),
            Err(now) => s = now,
        }
    }
}

/// Runs pieces of `job` as thread `me`: its own share first, then stolen ones, until no unit
/// is left anywhere.
fn run_pieces(shared: &Shared, job: &Job, me: usize) {
    // SAFETY: the closure outlives the job: `for_each_range` does not return before every
    // worker that joined has left, and `f` is Sync.
    let f = unsafe { &*job.f };
    let run = |(begin, end): (u64, u64)| {
        let start = begin as usize * job.grain;
        let stop = (end as usize * job.grain).min(job.n);
        f(start..stop);
    };
    let shares = &shared.shares;
    while let Some(piece) = claim(&shares[me], true) {
        run(piece);
    }
    for other in (1..shares.len()).map(|k| (me + k) % shares.len()) {
        while let Some(piece) = claim(&shares[other], false) {
            run(piece);
        }
    }
}

/// Waits politely: spins first, then yields the core to whatever else wants it.
fn backoff(spins: &mut u32) {
    if *spins < SPINS_BEFORE_YIELD {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Joins generation `g` if it is still open: true when this worker is now inside the job.
fn try_join(shared: &Shared, g: u64) -> bool {
    let mut s = shared.state.load(Ordering::Acquire);
    loop {
        if generation_of(s) != g || s & CLOSED != 0 {
            return false;
        }
        match shared
            .state
            .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
}

fn worker(shared: &Shared, me: usize) {
    let mut seen = generation_of(shared.state.load(Ordering::Acquire));
    loop {
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        let generation = loop {
            let g = generation_of(shared.state.load(Ordering::Acquire));
            if g != seen {
                break g;
            }
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            backoff(&mut spins);
            if spins < SPINS_BEFORE_YIELD {
                continue;
            }
            let t0 = *since.get_or_insert_with(Instant::now);
            if t0.elapsed() < POLL_FOR {
                continue;
            }
            // Sleep until the generation moves. Announcing ourselves before re-checking under
            // the lock means a publisher either sees a sleeper and notifies, or we see its
            // generation (both sides use SeqCst).
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            while generation_of(shared.state.load(Ordering::SeqCst)) == seen
                && !shared.shutdown.load(Ordering::SeqCst)
            {
                guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            drop(guard);
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
            since = None;
        };
        seen = generation;
        if !try_join(shared, generation) {
            continue;
        }
        // SAFETY: we joined this generation (Acquire), which the caller opened only after
        // writing `job`, and the caller does not write it again before we leave below.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_pieces(shared, &job, me)
            }));
            if outcome.is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        shared.state.fetch_sub(1, Ordering::AcqRel);
    }
}

// SAFETY: every index of 0..n is in exactly one share, each unit of a share is claimed once
// (compare-and-swap on the share's bounds), and the call returns only after the caller found
// no unit left, closed the job and every worker that joined it has left.
unsafe impl Parallel for ThreadPool {
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n == 0 {
            return;
        }
        if self.threads == 1 || n == 1 {
            return f(0..n);
        }
        let mut generation = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        let (grain, grains) = grains_of(n);
        for (i, share) in shared.shares.iter().enumerate() {
            let (begin, end) = initial_share(grains, i, self.threads);
            share.0.store(pack(begin, end), Ordering::Relaxed);
        }
        // SAFETY: erasing the closure's lifetime is sound because no worker dereferences it after
        // this call returns: the job is closed and every worker inside has left before we return,
        // even when a piece panics.
        let f_static: *const (dyn Fn(Range<usize>) + Sync) = unsafe {
            std::mem::transmute::<
                *const (dyn Fn(Range<usize>) + Sync + '_),
                *const (dyn Fn(Range<usize>) + Sync + 'static),
            >(f as *const _)
        };
        let job = Job {
            f: f_static,
            n,
            grain,
        };
        // SAFETY: the previous job was closed with no worker inside before the previous call
        // returned, and workers only read `job` after joining an open generation.
        unsafe { *shared.job.get() = Some(job) };
        *generation = (*generation + 1) & 0xFFFF_FFFF;
        shared.state.store(*generation << 32, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_pieces(shared, &job, 0)));
        // No unit is left to claim: close the job and wait for those still running one.
        let mut state = shared.state.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
        let mut spins = 0u32;
        while state & ACTIVE_MASK != 0 {
            backoff(&mut spins);
            state = shared.state.load(Ordering::Acquire);
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel panicked on a worker thread");
        }
    }

    fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_index_once_for_many_jobs_and_sizes() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads).unwrap();
            for n in [1usize, 2, 7, 64, 1000] {
                for _ in 0..50 {
                    let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                    pool.for_each_range(n, &|r| {
                        for i in r {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            }
        }
    }

    #[test]
    fn a_slow_thread_is_relieved_by_stealing() {
        for threads in [2, 3, 4] {
            let pool = ThreadPool::new(threads).unwrap();
            for n in [2usize, 5, 33, 400] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                let calls = AtomicU32::new(0);
                pool.for_each_range(n, &|r| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if r.contains(&0) {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                assert!(calls.load(Ordering::Relaxed) as usize <= n);
            }
        }
    }

    #[test]
    fn shares_cover_every_unit_even_beyond_32_bits() {
        for n in [
            1usize,
            7,
            1 << 20,
            u32::MAX as usize,
            (u32::MAX as usize) * 3 + 5,
        ] {
            let (grain, grains) = grains_of(n);
            assert!(grains <= u32::MAX as u64);
            for threads in [1, 2, 3, 7] {
                let mut next = 0u64;
                for i in 0..threads {
                    let (begin, end) = initial_share(grains, i, threads);
                    assert_eq!(begin, next);
                    assert!(end >= begin);
                    next = end;
                }
                assert_eq!(next, grains);
                assert!(grains as usize * grain >= n && (grains as usize - 1) * grain < n);
            }
        }
    }

    #[test]
    fn sleeping_workers_wake_up() {
        let pool = ThreadPool::new(2).unwrap();
        let hits = AtomicU32::new(0);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            pool.for_each_range(100, &|r| {
                hits.fetch_add(r.len() as u32, Ordering::Relaxed);
            });
        }
        assert_eq!(hits.load(Ordering::Relaxed), 300);
    }

    #[test]
    fn a_panicking_chunk_panics_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.for_each_range(64, &|r| {
                if r.contains(&40) {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let hits = AtomicU32::new(0);
        pool.for_each_range(10, &|r| {
            hits.fetch_add(r.len() as u32, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 10);
    }
}
