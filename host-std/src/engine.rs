//! The engine: a model bound for this CPU (weights rewritten where the kernel table asks), its
//! memory plan, the arena and KV cache (owned or in the caller's memory), the kernels and the
//! thread pool; sessions run over it.

use crate::expand::{Expansion, Rewritten};
use crate::model::ModelFile;
use crate::parallel::ThreadPool;
use anyhow::{anyhow, bail, Result};
use vspec_core::exec::Session;
use vspec_core::graph::{Graph, Limits};
use vspec_core::kernels::{KernelTable, Parallel};
use vspec_core::kv::KvType;
use vspec_core::model::WeightView;
use vspec_core::plan::Plan;

/// An arena or KV cache the process could not allocate: which, how large, and for which limits.
/// The message names the limits, not a flag (the CLI's commands, `vspec bench` and the C API set
/// them differently); callers that own flags can find it with `downcast_ref` and name theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationError {
    /// "activation arena" or "KV cache".
    pub what: &'static str,
    pub bytes: usize,
    pub limits: Limits,
}

impl std::fmt::Display for AllocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot allocate {:.1} MiB for the {} of a {}-token context in steps of up to {} \
             tokens: use a shorter context or smaller steps",
            self.bytes as f64 / (1 << 20) as f64,
            self.what,
            self.limits.max_ctx,
            self.limits.max_tokens
        )
    }
}

impl std::error::Error for AllocationError {}

/// 64 bytes aligned to 64: the unit the engine allocates its arena and KV cache in.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct CacheLine([u32; 16]);

// SAFETY: `CacheLine` is 64 bytes of u32 with alignment 64: no padding, every bit pattern valid,
// all zeros a valid value.
unsafe impl bytemuck::Zeroable for CacheLine {}
// SAFETY: as above; `Copy`, `repr(C)`, no padding, no pointers.
unsafe impl bytemuck::Pod for CacheLine {}

/// A zeroed buffer of `bytes` (rounded up to 64) starting at a cache-line boundary, or an
/// [`AllocationError`]: an oversized context must be a message, not an abort.
fn zeroed_lines(bytes: usize, what: &'static str, limits: &Limits) -> Result<Vec<CacheLine>> {
    let lines = bytes.div_ceil(64);
    let mut v = Vec::new();
    v.try_reserve_exact(lines).map_err(|_| AllocationError {
        what,
        bytes,
        limits: *limits,
    })?;
    v.resize(lines, CacheLine([0; 16]));
    Ok(v)
}

/// Where the KV cache starts within a cache line, whoever allocates it.
///
/// Measured, not derived: on the 2-core Zen 5 development VM, with a cache that started in the
/// first 16 bytes of a line (every row of it then does, rows being multiples of 64 bytes), a
/// SmolLM2 decode at depth 1024 ran at 125–149 tok/s against 190–209 for any start from 16 to
/// 63 (`vspec bench -p 0 -n 64 -d 1024 -t 1`, the start moved by 4 to 64 bytes, both tiers;
/// tg128 354 → 364–369). A `Vec<u32>` put it wherever the allocator did (16 bytes past a page
/// from `mmap`, anywhere on the heap), so one engine decoded a third slower than the next. 32
/// keeps rows in the fast range and every 16- or 32-byte load of a row inside one line. Why
/// the first 16 bytes are slow was not pinned down (not line splits: a start of 0 has none).
pub const KV_LINE_OFFSET: usize = 32;

/// The weights of `model` bound as sessions with `kernels` hold them under `policy`, and the
/// plan of that graph.
type Bound<'m> = (Graph, Vec<Option<WeightView<'m>>>, Rewritten, Plan);

fn bound<'m>(
    model: &'m ModelFile,
    limits: Limits,
    kv_type: KvType,
    kernels: &KernelTable,
    policy: Expansion,
) -> Result<Bound<'m>> {
    let (graph, weights, rewritten) = model.bind_cpu(limits, kv_type, kernels, policy)?;
    let plan = Plan::new(&graph).map_err(|e| anyhow!("planning: {e}"))?;
    Ok((graph, weights, rewritten, plan))
}

/// Alignment the session's buffers get inside a caller's memory (a cache line; the kernels need
/// 4 bytes).
const CALLER_MEMORY_ALIGN: usize = 64;

/// Bytes a caller's buffer must hold for [`Engine::with_memory`] under `plan`: the arena from a
/// 64-byte boundary, the KV cache [`KV_LINE_OFFSET`] bytes past the next one, plus room to reach
/// the first boundary from any start address.
pub fn caller_memory_bytes(plan: &Plan) -> usize {
    (CALLER_MEMORY_ALIGN - 1)
        + plan.arena_bytes.next_multiple_of(CALLER_MEMORY_ALIGN)
        + KV_LINE_OFFSET
        + plan.kv_bytes
}

/// Where a session's arena and KV cache live.
enum SessionMemory<'m> {
    /// Allocated by the engine, each starting on a cache line ([`zeroed_lines`]); the KV cache is
    /// the `kv` bytes from [`KV_LINE_OFFSET`].
    Owned {
        arena: Vec<CacheLine>,
        kv: Vec<CacheLine>,
    },
    /// Carved out of a buffer the caller owns (embedded use: nothing is allocated for them).
    Borrowed {
        arena: &'m mut [u8],
        kv: &'m mut [u8],
    },
}

/// Everything needed to run: graph, plan, bound weights, the arena and KV buffers, kernels and
/// threads. Create a [`Session`] over it with [`Engine::session`].
pub struct Engine<'m> {
    /// The graph.
    pub graph: Graph,
    /// Its memory plan.
    pub plan: Plan,
    weights: Vec<Option<WeightView<'m>>>,
    memory: SessionMemory<'m>,
    kernels: KernelTable,
    par: ThreadPool,
    rewritten: Rewritten,
}

impl<'m> Engine<'m> {
    /// Plans `model` for `limits` with an f32 KV cache (the exact reference) and allocates
    /// exactly the planned arena and KV cache.
    pub fn new(model: &'m ModelFile, limits: Limits, threads: usize) -> Result<Engine<'m>> {
        Self::with_kv(model, limits, KvType::F32, threads)
    }

    /// [`Engine::new`] with a KV cache of `kv_type` (the CLI's default is f16).
    pub fn with_kv(
        model: &'m ModelFile,
        limits: Limits,
        kv_type: KvType,
        threads: usize,
    ) -> Result<Engine<'m>> {
        Self::build(
            model,
            limits,
            kv_type,
            threads,
            crate::detect::kernel_table(),
        )
    }

    /// [`Engine::new`] with a given kernel table (tests compare the scalar references with the
    /// table `select` returns).
    pub fn with_kernels(
        model: &'m ModelFile,
        limits: Limits,
        threads: usize,
        kernels: KernelTable,
    ) -> Result<Engine<'m>> {
        Self::build(model, limits, KvType::F32, threads, kernels)
    }

    /// Plans `model` for `limits` and `kv_type`, allocates the planned arena and KV cache, and
    /// starts `threads` threads running `kernels`; weights are rewritten for them as
    /// `VSPEC_EXPAND` says ([`crate::expand`]).
    pub fn build(
        model: &'m ModelFile,
        limits: Limits,
        kv_type: KvType,
        threads: usize,
        kernels: KernelTable,
    ) -> Result<Engine<'m>> {
        let policy = Expansion::from_env()?;
        Self::build_with(model, limits, kv_type, threads, kernels, policy)
    }

    /// [`Engine::build`] with the rewrite policy given rather than read from `VSPEC_EXPAND`.
    pub fn build_with(
        model: &'m ModelFile,
        limits: Limits,
        kv_type: KvType,
        threads: usize,
        kernels: KernelTable,
        policy: Expansion,
    ) -> Result<Engine<'m>> {
        let (graph, weights, rewritten, plan) = bound(model, limits, kv_type, &kernels, policy)?;
        log::info!("memory plan: {}", plan.summary());
        // The cache first: it is what grows with the context, so an impossible context is
        // reported as the cache it needs (the arena grows too, by the attention partials).
        let kv = zeroed_lines(KV_LINE_OFFSET + plan.kv_bytes, "KV cache", &limits)?;
        let arena = zeroed_lines(plan.arena_bytes, "activation arena", &limits)?;
        Ok(Engine {
            graph,
            plan,
            weights,
            memory: SessionMemory::Owned { arena, kv },
            kernels,
            par: ThreadPool::new(threads)?,
            rewritten,
        })
    }

    /// [`Engine::with_kv`] with the arena and KV cache placed in `memory`, which must hold
    /// [`caller_memory_bytes`] of the plan (an error says how many are missing otherwise).
    pub fn with_memory(
        model: &'m ModelFile,
        limits: Limits,
        kv_type: KvType,
        threads: usize,
        memory: &'m mut [u8],
    ) -> Result<Engine<'m>> {
        let kernels = crate::detect::kernel_table();
        let policy = Expansion::from_env()?;
        let (graph, weights, rewritten, plan) = bound(model, limits, kv_type, &kernels, policy)?;
        let need = caller_memory_bytes(&plan);
        if memory.len() < need {
            bail!(
                "the session buffer holds {} bytes but the plan needs {need} (arena {} + KV cache \
                 {} + alignment; {} bytes short)",
                memory.len(),
                plan.arena_bytes,
                plan.kv_bytes,
                need - memory.len()
            );
        }
        let skip = memory.as_ptr().align_offset(CALLER_MEMORY_ALIGN);
        let arena_span = plan.arena_bytes.next_multiple_of(CALLER_MEMORY_ALIGN);
        let (arena, rest) = memory[skip..].split_at_mut(arena_span);
        let kv = &mut rest[KV_LINE_OFFSET..KV_LINE_OFFSET + plan.kv_bytes];
        // A reused buffer may hold anything; the session reads only what it wrote, but zeroing
        // keeps runs reproducible and the KV cache of unused positions defined.
        arena.fill(0);
        kv.fill(0);
        Ok(Engine {
            graph,
            plan,
            weights,
            memory: SessionMemory::Borrowed { arena, kv },
            kernels,
            par: ThreadPool::new(threads)?,
            rewritten,
        })
    }

    /// The weights this engine holds rewritten for the CPU ([`crate::expand`]).
    pub fn rewritten(&self) -> &Rewritten {
        &self.rewritten
    }

    /// How many weights this engine holds interleaved per sixteen rows
    /// ([`vspec_core::model::Layout::Rows16`]; `VSPEC_INTERLEAVE`).
    pub fn interleaved(&self) -> usize {
        self.weights
            .iter()
            .flatten()
            .filter(|w| w.layout == vspec_core::model::Layout::Rows16)
            .count()
    }

    /// Threads in use.
    pub fn threads(&self) -> usize {
        self.par.threads()
    }

    /// A session starting at position 0.
    pub fn session(&mut self) -> Result<Session<'_>> {
        let (arena, kv): (&mut [u8], &mut [u8]) = match &mut self.memory {
            SessionMemory::Owned { arena, kv } => {
                let kv: &mut [u8] = bytemuck::cast_slice_mut(kv);
                (
                    bytemuck::cast_slice_mut(arena),
                    &mut kv[KV_LINE_OFFSET..KV_LINE_OFFSET + self.plan.kv_bytes],
                )
            }
            SessionMemory::Borrowed { arena, kv } => (arena, kv),
        };
        Session::new(
            &self.graph,
            &self.plan,
            &self.weights,
            arena,
            kv,
            &self.kernels,
            &self.par,
        )
        .map_err(|e| anyhow!("session: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_buffers_start_on_a_cache_line_and_the_cache_at_its_offset() {
        let limits = Limits {
            max_ctx: 16,
            max_tokens: 1,
            all_logits: false,
        };
        for bytes in [1, 63, 64, 65, 4096 + 16, 1 << 20] {
            let v = zeroed_lines(KV_LINE_OFFSET + bytes, "KV cache", &limits).unwrap();
            let b: &[u8] = bytemuck::cast_slice(&v);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert!(b.len() >= KV_LINE_OFFSET + bytes);
            assert!(b.iter().all(|&x| x == 0));
            let kv = &b[KV_LINE_OFFSET..KV_LINE_OFFSET + bytes];
            assert_eq!(kv.as_ptr() as usize % 64, KV_LINE_OFFSET);
        }
    }
}
