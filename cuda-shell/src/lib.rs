//! CUDA backend of Vspec — not implemented yet.
//!
//! The plan (DESIGN.md): run the same `Plan` on the GPU through `cudarc` (driver API + NVRTC,
//! loaded dynamically so the workspace builds without CUDA). Until then this crate only states
//! that no CUDA backend exists, so callers can fall back to the CPU path honestly.

/// Why CUDA execution is unavailable in this build.
pub const STATUS: &str = "the CUDA backend is not implemented yet; Vspec runs on the CPU";

/// Whether this build can execute on a CUDA device (always false for now).
pub fn available() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_no_backend() {
        assert!(!super::available());
        assert!(super::STATUS.contains("not implemented"));
    }
}
