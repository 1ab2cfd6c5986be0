//! Reading the caller's arguments and writing into the caller's buffers: every raw pointer the
//! C side hands us is turned into a slice here, after its null and length checks.

use crate::error::{Failure, Outcome, VSPEC_ERR_BUFFER_TOO_SMALL};
use std::ffi::{c_char, CStr};

/// The UTF-8 text at `ptr` of `len` bytes (`ptr` may be null only when `len` is 0).
///
/// # Safety
/// A non-null `ptr` must point to `len` readable bytes that stay unchanged during the call.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, len: usize, what: &str) -> Outcome<&'a str> {
    // SAFETY: forwarded from this function's contract.
    let bytes = unsafe { slice(ptr.cast::<u8>(), len, what) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::argument(format!(
            "{what} is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

/// The NUL-terminated UTF-8 string at `ptr`.
///
/// # Safety
/// A non-null `ptr` must point to a NUL-terminated string that stays unchanged during the call.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Outcome<&'a str> {
    if ptr.is_null() {
        return Err(Failure::argument(format!("{what} is null")));
    }
    // SAFETY: non-null (checked) and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|e| {
        Failure::argument(format!("{what} is not UTF-8 (at byte {})", e.valid_up_to()))
    })
}

/// `len` elements at `ptr` (null allowed only for `len` 0).
///
/// # Safety
/// A non-null `ptr` must point to `len` initialized, aligned elements that nothing writes during
/// the call.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Outcome<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::argument(format!(
            "{what} is null but its length is {len}"
        )));
    }
    if !ptr.is_aligned() {
        return Err(Failure::argument(format!("{what} is misaligned")));
    }
    // SAFETY: non-null and aligned (checked); `len` readable elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `value` to `out`.
///
/// # Safety
/// A non-null `out` must be valid for a write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Outcome {
    if out.is_null() {
        return Err(Failure::argument(format!("{what} is null")));
    }
    if !out.is_aligned() {
        return Err(Failure::argument(format!("{what} is misaligned")));
    }
    // SAFETY: non-null and aligned (checked), writable by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Writes `value` to `out` when `out` is not null.
///
/// # Safety
/// As [`put`].
pub(crate) unsafe fn put_opt<T>(out: *mut T, value: T, what: &str) -> Outcome {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: forwarded.
    unsafe { put(out, value, what) }
}

/// Copies `items` into the caller's buffer of `cap` elements and writes `items.len()` to `len`
/// (always, so a call with a small or null buffer learns the size it needs). With `nul`, one more
/// element (zero) terminates the data and must fit too.
///
/// # Safety
/// A non-null `buf` must be valid for writes of `cap` elements; `len` as [`put`].
pub(crate) unsafe fn copy_out<T: Copy + Default>(
    items: &[T],
    nul: bool,
    buf: *mut T,
    cap: usize,
    len: *mut usize,
    what: &str,
) -> Outcome {
    // SAFETY: forwarded.
    unsafe { put(len, items.len(), "the length output") }?;
    let need = items.len() + usize::from(nul);
    if cap < need {
        return Err(Failure::new(
            VSPEC_ERR_BUFFER_TOO_SMALL,
            format!(
                "{what}: {need} elements needed{}, the buffer holds {cap}",
                if nul {
                    " (terminating NUL included)"
                } else {
                    ""
                }
            ),
        ));
    }
    if need == 0 {
        return Ok(());
    }
    if buf.is_null() {
        return Err(Failure::argument(format!(
            "{what} buffer is null but its capacity is {cap}"
        )));
    }
    if !buf.is_aligned() {
        return Err(Failure::argument(format!("{what} buffer is misaligned")));
    }
    // SAFETY: non-null and aligned (checked); `cap >= need` elements are writable by the
    // caller's contract, and our `items` cannot overlap the caller's buffer.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, need) };
    out[..items.len()].copy_from_slice(items);
    if nul {
        out[items.len()] = T::default();
    }
    Ok(())
}
