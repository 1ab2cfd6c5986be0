//! What stays resident: handing memory the process no longer needs back to the system, so that
//! peak RSS stays what the plan and its fixed overhead count (`bench/plan_vs_rss.sh`).

use memmap2::Mmap;

/// Frees this process's copies of the whole pages of `map` that lie inside `data` (nothing when
/// `data` is not inside `map`): `madvise(MADV_DONTNEED)`. Page size assumed 4 KiB; on larger
/// pages the call fails or frees whole pages around the range, and either is harmless (below).
#[cfg(unix)]
pub(crate) fn release_pages(map: &Mmap, data: &[u8]) {
    const PAGE: usize = 4096;
    let base = map.as_ptr() as usize;
    let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    if start < base || end > base + map.len() {
        return;
    }
    let (first, last) = (
        (start - base).next_multiple_of(PAGE),
        (end - base) / PAGE * PAGE,
    );
    if first >= last {
        return;
    }
    // SAFETY: `map` is a read-only private mapping of a file this process never writes
    // (`model::map_file`), so MADV_DONTNEED only drops resident copies: the next read of those pages
    // faults the same bytes in from the file, and every `&[u8]` into the mapping keeps reading
    // the values it read before. The range lies inside the mapping (checked above).
    let freed = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first)
    };
    if let Err(e) = freed {
        log::debug!("madvise(DONTNEED) of {} bytes: {e}", last - first);
    }
}

/// Gives the allocator's free memory back to the system (`malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn return_free_heap() {
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no pointer
    // and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators keep what they keep.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn return_free_heap() {}

/// Elsewhere the pages stay resident.
#[cfg(not(unix))]
pub(crate) fn release_pages(_map: &Mmap, _data: &[u8]) {}
