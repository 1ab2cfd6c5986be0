//! Shared helpers for the integration tests.

use std::path::PathBuf;

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
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

/// The SmolLM2 GGUF if it is present: `VSPEC_SMOLLM2_GGUF`, else the default cache location.
/// Tests that need it print `SKIPPED(no model)` when it is absent, unless `VSPEC_REQUIRE_MODEL=1`
/// (set by CI, which fetches it first) turns the skip into a failure.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let p = std::env::var_os("VSPEC_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(vspec_host::fetch::default_model_path);
    if p.exists() {
        Some(p)
    } else if std::env::var("VSPEC_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!(
            "VSPEC_REQUIRE_MODEL=1 but the model is missing at {}",
            p.display()
        );
    } else {
        println!(
            "SKIPPED(no model): {} is absent; run `vspec fetch`",
            p.display()
        );
        None
    }
}
