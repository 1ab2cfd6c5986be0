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
            unsafe { features.assume_avx512() }.with_split_512(splits_512())
        } else {
            features
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    CpuFeatures::none()
}

/// Whether this CPU issues 512-bit operations as two 256-bit halves: AMD family 19h with
/// AVX-512 (Zen 4; Zen 3 of the same family has no AVX-512, Zen 5 is family 1Ah and full
/// width). `VSPEC_SPLIT_512=0|1` overrides the guess (to compare both ways on one machine).
#[cfg(target_arch = "x86_64")]
fn splits_512() -> bool {
    match std::env::var("VSPEC_SPLIT_512").as_deref() {
        Ok("1") => return true,
        Ok("0") => return false,
        _ => {}
    }
    use std::arch::x86_64::__cpuid;
    // Leaves 0 (vendor) and 1 (signature) exist on every x86-64 CPU.
    let (vendor, signature) = (__cpuid(0), __cpuid(1).eax);
    let amd = [vendor.ebx, vendor.edx, vendor.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
    // The family as CPUID reports it: base family 0xF plus the extended family field.
    let family = ((signature >> 8) & 0xF) + ((signature >> 20) & 0xFF);
    amd && family == 0x19
}

/// The kernel table for this CPU, logging what was activated.
pub fn kernel_table() -> KernelTable {
    let (table, log) = KernelTable::select(&detect());
    log::info!("kernels: {log}");
    table
}
