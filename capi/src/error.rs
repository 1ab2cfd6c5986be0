//! Status codes, the per-thread last error, and the guard every entry point runs in.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const VSPEC_OK: i32 = 0;
/// A null pointer, a value out of range, or text that is not UTF-8.
pub const VSPEC_ERR_ARGUMENT: i32 = 1;
/// The model could not be opened or is invalid.
pub const VSPEC_ERR_MODEL: i32 = 2;
/// A handle that is null, misaligned, already freed, or of the wrong kind.
pub const VSPEC_ERR_HANDLE: i32 = 3;
/// A caller's buffer is too small; the call wrote the size it needs to its length output.
pub const VSPEC_ERR_BUFFER_TOO_SMALL: i32 = 4;
/// The tokens do not fit in what is left of the session's context.
pub const VSPEC_ERR_CONTEXT_FULL: i32 = 5;
/// The session is being used by another thread right now.
pub const VSPEC_ERR_BUSY: i32 = 6;
/// A feature this build or this model does not have (a KV type, a chat template).
pub const VSPEC_ERR_UNSUPPORTED: i32 = 7;
/// Running the model failed (out of memory, an I/O error, a failed download).
pub const VSPEC_ERR_RUNTIME: i32 = 8;
/// An internal error (a caught panic): a bug, please report it. A session that was running when
/// it happened stays unusable.
pub const VSPEC_ERR_INTERNAL: i32 = 99;

/// A failed call: its status code and the message `vspec_last_error` will return.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn argument(message: impl Into<String>) -> Failure {
        Failure::new(VSPEC_ERR_ARGUMENT, message)
    }

    /// An error of the host library with its whole context chain (`file: tensor 'x': ...`).
    pub(crate) fn host(code: i32, e: &anyhow::Error) -> Failure {
        Failure::new(code, format!("{e:#}"))
    }
}

/// What an entry point's body returns.
pub(crate) type Outcome<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed call on this thread ("" if none has failed). The pointer stays
/// valid until the next failing call on the same thread.
#[no_mangle]
pub extern "C" fn vspec_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs an entry point's body: errors become their status code and panics `VSPEC_ERR_INTERNAL`,
/// each leaving its message for `vspec_last_error`. Nothing unwinds into the caller.
pub(crate) fn guarded(body: impl FnOnce() -> Outcome) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => VSPEC_OK,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            f.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!(
                "internal error (panic caught at the C boundary): {what}"
            ));
            VSPEC_ERR_INTERNAL
        }
    }
}
