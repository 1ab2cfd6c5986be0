//! The four memory functions the compiler calls for copies, fills and comparisons (`memcpy`,
//! `memmove`, `memset`, `memcmp`/`bcmp`), which a hosted program takes from libc. Copies and
//! fills are `rep movsb`/`rep stosb` in inline assembly (fast on every x86_64 since Ivy Bridge,
//! and no Rust loop the optimizer could turn back into a call to themselves); comparisons are a
//! byte loop, kept a loop by the crate's `#![no_builtins]`.

use core::arch::asm;

/// # Safety
/// `dst` and `src` valid for `n` bytes (writes / reads), not overlapping: C's contract.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller promises both ranges valid and disjoint; the direction flag is clear
    // (the ABI keeps it clear between calls), so `rep movsb` copies forward `n` bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `dst` and `src` valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` is below `src` or past its end: a forward copy reads each byte before it is
        // overwritten.
        // SAFETY: as `memcpy`'s, for forward copies of possibly overlapping ranges.
        unsafe { memcpy(dst, src, n) };
    } else {
        // SAFETY: the caller promises both ranges valid; `std` makes `rep movsb` walk down from
        // the last byte, so an overlap with `dst` above `src` reads each byte before it is
        // overwritten; `cld` restores the flag the ABI requires clear.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dst
}

/// # Safety
/// `dst` valid for `n` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller promises `dst` writable for `n` bytes; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// `a` and `b` valid for `n` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n` and the caller promises `n` readable bytes behind both pointers.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As [`memcmp`]; only zero / non-zero is meaningful.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as the caller's.
    unsafe { memcmp(a, b, n) }
}
