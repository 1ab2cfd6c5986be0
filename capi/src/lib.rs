//! The C ABI of Vspec (header: `capi/include/vspec.h`).
//!
//! This first slice answers the question a firmware or service integrator asks before anything
//! else: how many bytes will this model need, for this context? Every entry point catches panics,
//! returns an integer status, and leaves a message for `vspec_last_error`.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use vspec_core::graph::Limits;
use vspec_core::plan::Plan;

/// Success.
pub const VSPEC_OK: i32 = 0;
/// A null pointer or an out-of-range argument.
pub const VSPEC_ERR_ARGUMENT: i32 = 1;
/// The model could not be opened or is invalid (see `vspec_last_error`).
pub const VSPEC_ERR_MODEL: i32 = 2;
/// An internal error (a caught panic): a bug, please report it.
pub const VSPEC_ERR_INTERNAL: i32 = 99;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning errors and panics into status codes.
fn guarded(f: impl FnOnce() -> Result<(), (i32, String)>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => VSPEC_OK,
        Ok(Err((code, msg))) => {
            set_error(&msg);
            code
        }
        Err(_) => {
            set_error("internal error (panic caught at the C boundary)");
            VSPEC_ERR_INTERNAL
        }
    }
}

/// Bytes a session needs, by category (mirrors `struct vspec_memory` in vspec.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VspecMemory {
    /// Model weights as stored (mapped, not copied).
    pub weight_bytes: u64,
    /// Activation arena.
    pub arena_bytes: u64,
    /// KV cache.
    pub kv_bytes: u64,
}

/// The library version as a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn vspec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread ("" if none). Valid until the next call.
#[no_mangle]
pub extern "C" fn vspec_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Plans the memory of the model at `path` (GGUF file or Hugging Face directory) for a context of
/// `max_ctx` positions and `max_tokens` per step, reading headers only, and writes it to `out`.
///
/// # Safety
/// `path` must be a NUL-terminated string and `out` a valid pointer to a `VspecMemory`, or null
/// (then `VSPEC_ERR_ARGUMENT` is returned).
#[no_mangle]
pub unsafe extern "C" fn vspec_plan_memory(
    path: *const c_char,
    max_ctx: u32,
    max_tokens: u32,
    out: *mut VspecMemory,
) -> i32 {
    guarded(|| {
        if path.is_null() || out.is_null() {
            return Err((VSPEC_ERR_ARGUMENT, "path and out must not be null".into()));
        }
        if max_ctx == 0 || max_tokens == 0 || max_tokens > max_ctx {
            return Err((VSPEC_ERR_ARGUMENT, "need 0 < max_tokens <= max_ctx".into()));
        }
        // SAFETY: non-null (checked) and NUL-terminated by the caller's contract.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| (VSPEC_ERR_ARGUMENT, "path is not UTF-8".to_string()))?;
        let model = vspec_host::ModelFile::open(Path::new(path))
            .map_err(|e| (VSPEC_ERR_MODEL, format!("{e:#}")))?;
        let lim = Limits {
            max_ctx: max_ctx as usize,
            max_tokens: max_tokens as usize,
            all_logits: false,
        };
        let (graph, _) = model
            .bind(lim)
            .map_err(|e| (VSPEC_ERR_MODEL, format!("{e:#}")))?;
        let plan = Plan::new(&graph).map_err(|e| (VSPEC_ERR_MODEL, e.to_string()))?;
        let mem = VspecMemory {
            weight_bytes: plan.weight_bytes as u64,
            arena_bytes: plan.arena_bytes as u64,
            kv_bytes: plan.kv_bytes as u64,
        };
        // SAFETY: non-null (checked) and valid for writes by the caller's contract.
        unsafe { out.write(mem) };
        Ok(())
    })
}
