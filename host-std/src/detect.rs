//! CPU feature detection: the one place that proves which instructions the kernels may use.

use vspec_core::kernels::{CpuFeatures, KernelTable};

/// Features of this CPU, limited by `VSPEC_ISA`: `scalar` forces the reference kernels, `avx2`
/// stops at the AVX2 tier, `avx512` (or nothing) takes the best tier the CPU has. Asking for a
/// tier the CPU lacks logs a warning and takes the best it has.
pub fn detect() -> CpuFeatures {
    let forced = std::env::var("VSPEC_ISA").ok();
    if forced.as_deref() == Some("scalar") {
        return CpuFeatures::none();
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 = avx2
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx512vbmi");
        match forced.as_deref() {
            Some("avx2") if !avx2 => {
                log::warn!("VSPEC_ISA=avx2 but this CPU lacks AVX2/FMA/F16C; using scalar kernels")
            }
            Some("avx512") if !avx512 => log::warn!(
                "VSPEC_ISA=avx512 but this CPU lacks AVX-512 F/BW/VL/VNNI/VBMI; using the best tier it has"
            ),
            _ => {}
        }
        // SAFETY: avx2 is true only when the running CPU reported AVX2, FMA and F16C.
        let features = unsafe { CpuFeatures::assume_detected(avx2) };
        if avx512 && forced.as_deref() != Some("avx2") {
            // SAFETY: avx512 is true only when the CPU reported every AVX-512 feature the tier
            // needs and the AVX2 tier's.
            unsafe { features.assume_avx512() }
        } else {
            features
        }
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
