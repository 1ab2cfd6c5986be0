//! The SmolLM2 GGUF for tests that need a real model. One file for every test crate: the
//! host-std tests and `vspec-tests` (`tests/src/lib.rs`) include it with `#[path]`, so the skip
//! rule cannot drift between them, and the library stays free of test-only panics.

use std::path::PathBuf;

/// `VSPEC_SMOLLM2_GGUF`, else the default model's cache location, when the file is there.
///
/// When it is absent the test should skip: this prints `SKIPPED(no model)` and returns `None`,
/// unless `VSPEC_REQUIRE_MODEL=1` (set by CI, which fetches the model first) turns the skip into
/// a failure, so a missing model can never make a suite pass silently.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = std::env::var_os("VSPEC_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(vspec_host::fetch::default_model_path);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("VSPEC_REQUIRE_MODEL").as_deref() != Ok("1"),
        "VSPEC_REQUIRE_MODEL=1 but the model is missing at {}",
        path.display()
    );
    println!(
        "SKIPPED(no model): {} is absent; run `vspec fetch`",
        path.display()
    );
    None
}
