//! Shared helpers for the integration tests.

use std::path::PathBuf;

pub mod cuda_host;
pub mod encode;
pub mod kquant_encode;
pub mod synth;
pub mod tiny_gguf;

/// The repository's `tests/fixtures` folder, or `VSPEC_FIXTURES` where the test binaries run
/// away from the checkout they were built in (`cuda-shell/check.sh` on a GPU machine without
/// a Rust toolchain).
pub fn fixtures() -> PathBuf {
    std::env::var_os("VSPEC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
}

/// `max |a - b| / max |b|`: the error measure the reference tests bound.
pub fn rel_max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b
        .iter()
        .fold(0f64, |m, &x| m.max((x as f64).abs()))
        .max(1e-30);
    let err = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    err / scale
}

// The SmolLM2 GGUF if present, else SKIPPED (or a failure under `VSPEC_REQUIRE_MODEL=1`); the
// host-std tests include the same file.
#[path = "../../host-std/tests/common/smollm2.rs"]
mod smollm2;
pub use smollm2::smollm2_gguf;
