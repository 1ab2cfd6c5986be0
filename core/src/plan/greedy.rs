//! Greedy best-fit arena planner (like TFLM's greedy_memory_planner, with half-open lifetimes and a
//! stable sort).
//!
//! Algorithm:
//! 1. Round every size up to its alignment (alignment 0 is read as 1).
//! 2. Give every zero-size buffer offset 0; it never conflicts, so it is not considered further.
//! 3. Order the remaining buffer ids by (aligned size descending, id ascending) with a stable sort.
//! 4. For each buffer in that order, collect the already-placed buffers whose lifetimes intersect
//!    its own (half-open; an empty range intersects nothing) and sort them by (offset, id).
//! 5. Walk those neighbours in offset order with a cursor starting at 0. Before each neighbour,
//!    the gap runs from the cursor rounded up to the buffer's alignment to the neighbour's offset;
//!    if the buffer fits, that gap is a candidate of size `neighbour.offset - aligned cursor`.
//!    Then move the cursor to `max(cursor, neighbour end)`.
//! 6. Place the buffer in the smallest candidate gap (the lowest offset on ties); if none fits,
//!    place it at the final cursor rounded up to its alignment (after the last neighbour).
//! 7. `arena_bytes` is the highest end of any placed buffer.
//! 8. If the [`linear`](super::linear) plan is smaller — possible only when mixed alignments make
//!    the size order pad more than the id order — return the linear plan instead, so the greedy
//!    plan is never larger than the oracle.
//!
//! Cost: O(n² log n) time and O(n) memory for n buffers.

use super::{
    align_up, aligned_size, arena_end, effective_align, lifetimes_intersect, ArenaLayout, Buf,
};
use alloc::vec;
use alloc::vec::Vec;

/// Plan offsets with greedy best-fit (see the module doc for the steps). Pure and deterministic.
pub fn plan(bufs: &[Buf]) -> ArenaLayout {
    let n = bufs.len();
    let mut offsets = vec![0usize; n];

    // Steps 1–3.
    let mut order: Vec<usize> = (0..n).filter(|&i| aligned_size(&bufs[i]) > 0).collect();
    order.sort_by(|&a, &b| {
        aligned_size(&bufs[b])
            .cmp(&aligned_size(&bufs[a]))
            .then(a.cmp(&b))
    });

    let mut placed: Vec<usize> = Vec::with_capacity(order.len());
    let mut neighbours: Vec<(usize, usize)> = Vec::with_capacity(order.len());
    for &id in &order {
        let buf = &bufs[id];
        let size = aligned_size(buf);
        let align = effective_align(buf);

        // Step 4.
        neighbours.clear();
        neighbours.extend(
            placed
                .iter()
                .filter(|&&p| lifetimes_intersect(buf, &bufs[p]))
                .map(|&p| (offsets[p], p)),
        );
        neighbours.sort_unstable();

        // Steps 5–6.
        let mut cursor = 0usize;
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        for &(off, p) in &neighbours {
            let start = align_up(cursor, align);
            if off >= start && off - start >= size {
                let gap = off - start;
                if !matches!(best, Some((g, _)) if g <= gap) {
                    best = Some((gap, start));
                }
            }
            cursor = cursor.max(off.saturating_add(aligned_size(&bufs[p])));
        }
        offsets[id] = match best {
            Some((_, off)) => off,
            None => align_up(cursor, align),
        };
        placed.push(id);
    }

    // Steps 7–8.
    let arena_bytes = arena_end(bufs, &offsets);
    let oracle = super::linear::plan(bufs);
    if oracle.arena_bytes < arena_bytes {
        return oracle;
    }
    ArenaLayout {
        offsets,
        arena_bytes,
    }
}
