//! The C ABI of Vspec: `libvspec.so` / `libvspec.a` with the header `capi/include/vspec.h`
//! (generated from this crate by cbindgen; `tests/header.rs` fails when it is stale).
//!
//! Every entry point returns a status code (`VSPEC_OK` or a `VSPEC_ERR_*`), catches panics, and
//! leaves a message for `vspec_last_error()` (per thread). Handles are registry numbers, never
//! pointers into our memory, so a bad handle is an error code rather than a crash
//! (`handle.rs`). Ownership, lifetimes, threading and the ABI-number rule: `docs/ABI.md`.

mod cbuf;
mod error;
mod handle;
mod model;
mod sampler;
mod session;

pub use error::*;
pub use model::*;
pub use sampler::*;
pub use session::*;

use std::ffi::c_char;

/// The ABI number: raised whenever a function, struct, constant or documented behaviour that
/// existed changes incompatibly (adding new ones does not raise it; `docs/ABI.md`).
pub const VSPEC_ABI_VERSION: u32 = 1;

/// The library version ("0.1.0"), a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn vspec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI number the library was built with; a program compares it with the
/// `VSPEC_ABI_VERSION` of the header it was compiled against.
#[no_mangle]
pub extern "C" fn vspec_abi_version() -> u32 {
    VSPEC_ABI_VERSION
}
