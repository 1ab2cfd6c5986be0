//! CPU feature detection: the one place that proves which instructions the kernels may use.

use vspec_core::kernels::{CpuFeatures, KernelTable};

/// Features of this CPU, limited by `VSPEC_ISA` (`scalar` forces the reference kernels; `avx2`
/// asks for AVX2 and fails over to scalar with a warning when the CPU lacks it).
pub fn detect() -> CpuFeatures {
    let forced = std::env::var("VSPEC_ISA").ok();
    if forced.as_deref() == Some("scalar") {
        return CpuFeatures::none();
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        if forced.as_deref() == Some("avx2") && !avx2 {
            log::warn!("VSPEC_ISA=avx2 but this CPU lacks AVX2/FMA; using scalar kernels");
        }
        // SAFETY: avx2 is true only when the running CPU reported AVX2, FMA and F16C.
        unsafe { CpuFeatures::assume_detected(avx2) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    CpuFeatures::none()
}

/// The kernel table for this CPU, logging what was activated.
pub fn kernel_table() -> KernelTable {
    let (table, log) = KernelTable::select(&detect());
    log::info!("kernels: {log}");
    table
}
