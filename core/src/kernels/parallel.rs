//! How kernels are split over threads without data races.
//!
//! A kernel computes a range of output rows (or heads). The shell's [`Parallel`] splits the full
//! range into disjoint sub-ranges, and every kernel writes only the elements of its own rows
//! through a [`SharedOut`]. Both halves of that promise are `unsafe` to state: implementing
//! [`Parallel`] promises the ranges are disjoint, and calling a kernel promises no other call
//! writes the same rows at the same time.

use core::marker::PhantomData;
use core::ops::Range;

/// Splits work over threads. The core only ever sees this trait.
///
/// # Safety
/// `for_each_range(n, f)` must call `f` on sub-ranges of `0..n` that are pairwise disjoint and
/// together cover `0..n` (each index exactly once), and must return only after every call of `f`
/// has returned. Kernels write shared outputs by row on the strength of this promise.
pub unsafe trait Parallel: Sync {
    /// Calls `f` on disjoint sub-ranges that together cover `0..n`, each index exactly once.
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync));
    /// Threads used (for logs).
    fn threads(&self) -> usize;
}

/// Runs everything on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Serial;

// SAFETY: one call covering 0..n, made before returning.
unsafe impl Parallel for Serial {
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n > 0 {
            f(0..n)
        }
    }
    fn threads(&self) -> usize {
        1
    }
}

/// A mutable buffer (of f32 unless said) that several threads write at disjoint indices.
///
/// Matmul outputs are `[tokens, rows]` and threads own row ranges, so each thread's elements are
/// strided, not contiguous; safe slices cannot express that split. Every access is `unsafe`.
pub struct SharedOut<'a, T = f32> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedOut only hands out access through `unsafe fn`s whose contract is that no two
// threads touch the same index; the buffer itself is an exclusive borrow for 'a, and its
// elements may be sent to the threads that write them.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}
// SAFETY: as above; moving the handle to another thread moves the exclusive borrow with it.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    /// Wraps an exclusive borrow.
    pub fn new(buf: &'a mut [T]) -> Self {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `v` at `i`.
    ///
    /// # Safety
    /// No other thread reads or writes index `i` while this handle is shared.
    #[inline]
    pub unsafe fn write(&self, i: usize, v: T) {
        assert!(
            i < self.len,
            "SharedOut index {i} out of bounds {}",
            self.len
        );
        // SAFETY: i is in bounds (checked above) and, by the caller's contract, no other thread
        // accesses element i concurrently.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// A handle to elements `range` alone, indexed from 0 (for handing a part of the output to
    /// a kernel that indexes from the start of its own part). Accesses stay `unsafe`.
    pub fn sub(&self, range: Range<usize>) -> SharedOut<'_, T> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "SharedOut range out of bounds"
        );
        SharedOut {
            // SAFETY: start <= len (checked above), so the pointer stays inside the borrow.
            ptr: unsafe { self.ptr.add(range.start) },
            len: range.len(),
            _borrow: PhantomData,
        }
    }

    /// A mutable sub-slice `range`.
    ///
    /// # Safety
    /// No other thread reads or writes any index in `range` while the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "SharedOut range out of bounds"
        );
        // SAFETY: the range is in bounds (checked above); exclusivity is the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

impl SharedOut<'_, f32> {
    /// Adds `v` to element `i`.
    ///
    /// # Safety
    /// No other thread reads or writes index `i` while this handle is shared.
    #[inline]
    pub unsafe fn add(&self, i: usize, v: f32) {
        assert!(
            i < self.len,
            "SharedOut index {i} out of bounds {}",
            self.len
        );
        // SAFETY: in bounds (checked above); exclusivity of element i is the caller's contract.
        unsafe { *self.ptr.add(i) += v }
    }
}
