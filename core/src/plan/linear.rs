//! Linear (bump) arena planner: every buffer gets its own bytes and nothing is reused.
//!
//! It is the debug mode (a use-after-free in the schedule cannot corrupt another buffer) and the
//! oracle the greedy planner is tested against: its `arena_bytes` is an upper bound.
//!
//! Algorithm:
//! 1. Round every size up to its alignment (alignment 0 is read as 1).
//! 2. Walk buffers in id order with a cursor starting at 0. A zero-size buffer gets offset 0;
//!    any other buffer gets the cursor rounded up to its alignment, and the cursor moves to its end.
//! 3. `arena_bytes` is the final cursor.

use super::{align_up, aligned_size, effective_align, ArenaLayout, Buf};
use alloc::vec::Vec;

/// Plan offsets with a bump allocator (see the module doc). Pure and deterministic.
pub fn plan(bufs: &[Buf]) -> ArenaLayout {
    let mut cursor = 0usize;
    let offsets: Vec<usize> = bufs
        .iter()
        .map(|b| {
            let size = aligned_size(b);
            if size == 0 {
                return 0;
            }
            let off = align_up(cursor, effective_align(b));
            cursor = off.saturating_add(size);
            off
        })
        .collect();
    ArenaLayout {
        offsets,
        arena_bytes: cursor,
    }
}
