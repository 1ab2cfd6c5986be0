//! Static arena planning: given every buffer's size, alignment and lifetime, choose byte offsets in
//! one arena so that no two buffers live at the same time overlap (STYLE H10–H12).
//!
//! Everything here is a pure function of its input: no I/O, no hidden state, same input → same
//! plan on every machine.
//!
//! - [`greedy::plan`] is the planner used for real sessions (best-fit, reuses memory);
//! - [`linear::plan`] is a bump allocator that reuses nothing: the debug mode and the test oracle;
//! - [`LoadHeap`] bounds the heap a core-only loader takes besides the arena and KV cache;
//! - [`validate`] proves a plan sound, [`peak_live_bytes`] is the lower bound any plan must meet,
//!   and [`render_ascii`] draws a plan for test failures.
//!
//! Conventions shared by all of them:
//! - a buffer's size is rounded up to its alignment ([`aligned_size`]) and that many bytes are
//!   reserved at its offset;
//! - lifetimes are half-open `start..end` in op steps; a buffer with an empty range
//!   (`start >= end`) is never live and never conflicts with anything;
//! - a zero-size buffer gets offset 0 and never conflicts with anything;
//! - `arena_bytes` is the end of the highest buffer, so every buffer (live or not) lies inside the
//!   arena.

use alloc::vec::Vec;
use core::ops::Range;

pub mod greedy;
pub mod lifetime;
pub mod linear;
mod load_heap;
mod memory;
mod report;
mod validate;

pub use load_heap::{grown_vec_bytes, LoadHeap};
pub use memory::Plan;
pub use report::{LayerBytes, PlanReport};

pub use validate::{peak_live_bytes, render_ascii, validate};

/// One buffer to place: bytes, alignment (power of two), and half-open lifetime in op steps.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Buf {
    /// Size in bytes (rounded up to `align` by the planner).
    pub size: usize,
    /// Required alignment of the offset, a power of two. The planners treat 0 as 1; [`validate`]
    /// rejects anything that is not a power of two.
    pub align: usize,
    /// Op steps during which the buffer holds data, half-open.
    pub live: Range<u32>,
}

/// The output of a planner: one offset per buffer, in input order, and the arena size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArenaLayout {
    /// Byte offset of buffer `i` in the arena.
    pub offsets: Vec<usize>,
    /// Total arena bytes: the end of the highest buffer.
    pub arena_bytes: usize,
}

/// The alignment a planner uses for `buf`: `buf.align`, with 0 read as 1.
fn effective_align(buf: &Buf) -> usize {
    buf.align.max(1)
}

/// The bytes a planner reserves for `buf`: its size rounded up to its alignment (0 read as 1),
/// saturating at `usize::MAX` instead of overflowing.
pub fn aligned_size(buf: &Buf) -> usize {
    align_up(buf.size, effective_align(buf))
}

/// Round `x` up to a multiple of `align` (`align >= 1`), saturating instead of overflowing.
fn align_up(x: usize, align: usize) -> usize {
    match x % align {
        0 => x,
        r => x.saturating_add(align - r),
    }
}

/// Whether `buf` is never live (empty or reversed lifetime range).
fn never_live(buf: &Buf) -> bool {
    buf.live.start >= buf.live.end
}

/// Whether two buffers are live at a common step (half-open ranges; empty ranges never are).
pub fn lifetimes_intersect(a: &Buf, b: &Buf) -> bool {
    !never_live(a) && !never_live(b) && a.live.start < b.live.end && b.live.start < a.live.end
}

/// Whether two buffers can conflict at all: both have bytes and their lifetimes intersect.
fn may_conflict(a: &Buf, b: &Buf) -> bool {
    aligned_size(a) > 0 && aligned_size(b) > 0 && lifetimes_intersect(a, b)
}

/// The arena size implied by `offsets`: the end of the highest non-empty buffer.
fn arena_end(bufs: &[Buf], offsets: &[usize]) -> usize {
    bufs.iter()
        .zip(offsets)
        .filter(|(b, _)| aligned_size(b) > 0)
        .map(|(b, &o)| o.saturating_add(aligned_size(b)))
        .max()
        .unwrap_or(0)
}
