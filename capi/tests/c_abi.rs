//! The C entry points, called as C would call them.

use std::ffi::{CStr, CString};
use vspec::{
    vspec_last_error, vspec_plan_memory, vspec_version, VspecMemory, VSPEC_ERR_ARGUMENT,
    VSPEC_ERR_MODEL, VSPEC_OK,
};

fn last_error() -> String {
    // SAFETY: vspec_last_error returns a valid NUL-terminated string owned by the library.
    unsafe { CStr::from_ptr(vspec_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn plans_a_model_and_reports_errors() {
    // SAFETY: vspec_version returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(vspec_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/hf/llama");
    let path = CString::new(dir).unwrap();
    let mut m = VspecMemory::default();
    // SAFETY: valid string and out pointer.
    let status = unsafe { vspec_plan_memory(path.as_ptr(), 64, 8, &mut m) };
    assert_eq!(status, VSPEC_OK);
    assert!(m.weight_bytes > 400_000 && m.arena_bytes > 0);
    // 2 layers × (k, v) × 64 positions × 2 kv heads × 16 dims × 4 bytes.
    assert_eq!(m.kv_bytes, 2 * 2 * 64 * 2 * 16 * 4);

    // SAFETY: null pointers are part of the contract (rejected).
    let status = unsafe { vspec_plan_memory(std::ptr::null(), 64, 8, &mut m) };
    assert_eq!(status, VSPEC_ERR_ARGUMENT);
    let missing = CString::new("/nonexistent/model.gguf").unwrap();
    // SAFETY: valid string and out pointer.
    let status = unsafe { vspec_plan_memory(missing.as_ptr(), 64, 8, &mut m) };
    assert_eq!(status, VSPEC_ERR_MODEL);
    assert!(
        last_error().contains("/nonexistent/model.gguf"),
        "{}",
        last_error()
    );
}
