//! Checking, bounding and drawing plans: [`validate`] (the `DoAnyBuffersOverlap` of TFLM, made to
//! return the offending pair), [`peak_live_bytes`] (the lower bound) and [`render_ascii`].

use super::{aligned_size, lifetimes_intersect, may_conflict, never_live, ArenaLayout, Buf};
use crate::{Error, Result};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Check that `plan` is sound for `bufs`:
/// - there is one offset per buffer;
/// - every alignment is a power of two and every offset a multiple of it;
/// - every buffer (its size rounded up to its alignment) ends within `arena_bytes`;
/// - no two buffers live at a common step overlap in bytes (zero-size buffers and never-live
///   buffers conflict with nothing).
///
/// The error names the field, or the pair of buffers, that is wrong.
pub fn validate(bufs: &[Buf], plan: &ArenaLayout) -> Result<()> {
    if plan.offsets.len() != bufs.len() {
        return Err(Error::invalid(
            "plan.offsets",
            format!("{} offsets for {} buffers", plan.offsets.len(), bufs.len()),
        ));
    }
    for (i, (b, &off)) in bufs.iter().zip(&plan.offsets).enumerate() {
        if !b.align.is_power_of_two() {
            return Err(Error::invalid(
                format!("buf[{i}].align"),
                format!("{} is not a power of two", b.align),
            ));
        }
        if off % b.align != 0 {
            return Err(Error::invalid(
                format!("plan.offsets[{i}]"),
                format!(
                    "offset {off} is not a multiple of the alignment {}",
                    b.align
                ),
            ));
        }
        let end = off
            .checked_add(aligned_size(b))
            .filter(|&e| e <= plan.arena_bytes);
        if end.is_none() {
            return Err(Error::invalid(
                format!("plan.offsets[{i}]"),
                format!(
                    "buffer of {} bytes at offset {off} does not fit in arena_bytes {}",
                    aligned_size(b),
                    plan.arena_bytes
                ),
            ));
        }
    }
    // Ends cannot overflow from here on: each is <= arena_bytes.
    for i in 0..bufs.len() {
        for j in i + 1..bufs.len() {
            let (a, b) = (&bufs[i], &bufs[j]);
            if !may_conflict(a, b) {
                continue;
            }
            let (oa, ob) = (plan.offsets[i], plan.offsets[j]);
            let (ea, eb) = (oa + aligned_size(a), ob + aligned_size(b));
            if oa < eb && ob < ea {
                let steps = a.live.start.max(b.live.start)..a.live.end.min(b.live.end);
                return Err(Error::invalid(
                    format!("plan buffers {i} and {j}"),
                    format!(
                        "both live in steps {steps:?} but bytes {oa}..{ea} and {ob}..{eb} overlap"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The lower bound on any plan's `arena_bytes`: the maximum over steps of the sum of the aligned
/// sizes of the buffers live at that step (saturating at `usize::MAX`).
pub fn peak_live_bytes(bufs: &[Buf]) -> usize {
    // (step, 0 = end / 1 = start, bytes): at one step, ends come before starts (half-open).
    let mut events: Vec<(u32, u8, usize)> = Vec::with_capacity(2 * bufs.len());
    for b in bufs.iter().filter(|b| !never_live(b)) {
        let size = aligned_size(b);
        events.push((b.live.start, 1, size));
        events.push((b.live.end, 0, size));
    }
    events.sort_unstable();
    let (mut live, mut peak) = (0u128, 0u128);
    for (_, kind, size) in events {
        if kind == 1 {
            live += size as u128;
            peak = peak.max(live);
        } else {
            live -= size as u128;
        }
    }
    usize::try_from(peak).unwrap_or(usize::MAX)
}

/// Most timeline rows and table rows [`render_ascii`] prints.
const MAX_ROWS: usize = 64;
/// Width of the arena bar in [`render_ascii`].
const COLUMNS: usize = 64;
/// The character standing for buffer `i` in the timeline.
fn symbol(i: usize) -> char {
    const SYMBOLS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    SYMBOLS[i % SYMBOLS.len()] as char
}

/// Draw `plan` for a test failure: a table of buffers, then one line per step showing which
/// buffer occupies each slice of the arena (`.` free, `*` several buffers share the slice, which
/// at coarse scale may just be neighbours), then the [`validate`] verdict.
pub fn render_ascii(bufs: &[Buf], plan: &ArenaLayout) -> String {
    let mut s = String::new();
    let peak = peak_live_bytes(bufs);
    let usage = if plan.arena_bytes == 0 {
        1.0
    } else {
        peak as f64 / plan.arena_bytes as f64
    };
    let _ = writeln!(
        s,
        "arena {} bytes, {} buffers, peak live {} bytes, usage {:.1}%",
        plan.arena_bytes,
        bufs.len(),
        peak,
        usage * 100.0
    );
    let _ = writeln!(s, "  id sym       size  align  live         bytes");
    for (i, b) in bufs.iter().enumerate().take(MAX_ROWS) {
        let off = plan.offsets.get(i).copied();
        let bytes = match off {
            Some(o) => format!("{o}..{}", o.saturating_add(aligned_size(b))),
            None => String::from("(no offset)"),
        };
        let live = format!("{:?}", b.live);
        let _ = writeln!(
            s,
            "{i:4} {:>3} {:>10} {:>6}  {live:<12} {bytes}",
            symbol(i),
            b.size,
            b.align
        );
    }
    if bufs.len() > MAX_ROWS {
        let _ = writeln!(s, "  ... {} more buffers", bufs.len() - MAX_ROWS);
    }

    let live_bufs = || bufs.iter().filter(|b| !never_live(b));
    if let (Some(first), Some(last)) = (
        live_bufs().map(|b| b.live.start).min(),
        live_bufs().map(|b| b.live.end).max(),
    ) {
        let per_col = plan.arena_bytes.div_ceil(COLUMNS).max(1);
        let cols = plan.arena_bytes.div_ceil(per_col);
        let _ = writeln!(s, "step | arena, one column = {per_col} bytes");
        for step in (first..last).take(MAX_ROWS) {
            let probe = Buf {
                size: 0,
                align: 1,
                live: step..step + 1,
            };
            let _ = write!(s, "{step:4} |");
            for c in 0..cols {
                let (lo, hi) = (c * per_col, (c + 1) * per_col);
                let mut here = bufs
                    .iter()
                    .zip(&plan.offsets)
                    .enumerate()
                    .filter(|(_, (b, &o))| {
                        aligned_size(b) > 0
                            && lifetimes_intersect(b, &probe)
                            && o < hi
                            && o.saturating_add(aligned_size(b)) > lo
                    })
                    .map(|(i, _)| i);
                let ch = match (here.next(), here.next()) {
                    (None, _) => '.',
                    (Some(i), None) => symbol(i),
                    (Some(_), Some(_)) => '*',
                };
                s.push(ch);
            }
            s.push('\n');
        }
        if (last - first) as usize > MAX_ROWS {
            let _ = writeln!(s, "  ... {} more steps", (last - first) as usize - MAX_ROWS);
        }
    }
    match validate(bufs, plan) {
        Ok(()) => s.push_str("validate: ok\n"),
        Err(e) => {
            let _ = writeln!(s, "validate: {e}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{greedy, linear};
    use alloc::vec;

    fn buf(size: usize, align: usize, live: core::ops::Range<u32>) -> Buf {
        Buf { size, align, live }
    }

    #[test]
    fn validator_names_the_overlapping_pair() {
        let bufs = vec![buf(16, 8, 0..2), buf(16, 8, 3..4), buf(16, 8, 1..3)];
        // Buffers 0 and 1 never meet, so sharing bytes is fine; 0 and 2 meet at step 1.
        let plan = ArenaLayout {
            offsets: vec![0, 0, 8],
            arena_bytes: 24,
        };
        let err = validate(&bufs, &plan).unwrap_err();
        assert_eq!(
            err,
            Error::invalid(
                "plan buffers 0 and 2",
                "both live in steps 1..2 but bytes 0..16 and 8..24 overlap"
            )
        );
    }

    #[test]
    fn validator_checks_alignment_length_and_arena() {
        let bufs = vec![buf(10, 8, 0..1)];
        let bad_align = ArenaLayout {
            offsets: vec![4],
            arena_bytes: 64,
        };
        assert!(format!("{}", validate(&bufs, &bad_align).unwrap_err()).contains("offsets[0]"));
        let short = ArenaLayout {
            offsets: vec![],
            arena_bytes: 64,
        };
        assert!(validate(&bufs, &short).is_err());
        // Aligned size is 16, so an arena of 10 is too small.
        let small = ArenaLayout {
            offsets: vec![0],
            arena_bytes: 10,
        };
        assert!(validate(&bufs, &small).is_err());
        let not_pow2 = vec![buf(10, 3, 0..1)];
        let e = validate(
            &not_pow2,
            &ArenaLayout {
                offsets: vec![0],
                arena_bytes: 64,
            },
        )
        .unwrap_err();
        assert!(format!("{e}").contains("buf[0].align"));
    }

    #[test]
    fn peak_counts_half_open_lifetimes() {
        // 0..2 and 2..4 never meet; 1..3 meets both.
        let bufs = vec![
            buf(10, 1, 0..2),
            buf(20, 1, 2..4),
            buf(5, 4, 1..3),
            buf(99, 1, 5..5),
        ];
        assert_eq!(peak_live_bytes(&bufs), 28);
        assert_eq!(peak_live_bytes(&[]), 0);
    }

    #[test]
    fn render_shows_buffers_and_verdict() {
        let bufs = vec![buf(32, 16, 0..2), buf(32, 16, 1..3), buf(32, 16, 2..4)];
        let g = render_ascii(&bufs, &greedy::plan(&bufs));
        assert!(g.contains("validate: ok"), "{g}");
        assert!(g.contains("usage 100.0%"), "{g}");
        let l = render_ascii(&bufs, &linear::plan(&bufs));
        assert!(l.contains("arena 96 bytes"), "{l}");
        let bad = render_ascii(
            &bufs,
            &ArenaLayout {
                offsets: vec![0, 0, 0],
                arena_bytes: 32,
            },
        );
        assert!(
            bad.contains("validate: invalid plan buffers 0 and 1"),
            "{bad}"
        );
        assert!(bad.contains('*'), "{bad}");
    }
}
