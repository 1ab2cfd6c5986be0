//! x86-64 kernels, one file per instruction-set tier and op family. Reached only through
//! [`crate::kernels::KernelTable::select`], which installs them from detected [`CpuFeatures`].

pub mod avx2;

use crate::format::Format;
use crate::kernels::table::{CpuFeatures, KernelTable, MatMulEntry, MatMulKernel, Quality};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use core::ops::Range;

/// Safe-to-store entry for the AVX2 f32 matmul.
///
/// # Safety
/// Same contract as [`crate::kernels::MatMulF32Fn`]; reachable only through a table built by
/// `select` from a [`CpuFeatures`] whose constructor guarantees AVX2 and FMA.
unsafe fn matmul_f32_avx2(
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    // SAFETY: AVX2+FMA are present (only installed from detected features); row exclusivity
    // is this function's own contract, passed on.
    unsafe { avx2::matmul_unchecked(w, x, tokens, rows, out) }
}

/// Installs every AVX2+FMA kernel into `table`.
pub(crate) fn install_avx2(table: &mut KernelTable, features: &CpuFeatures) {
    debug_assert!(features.avx2_fma);
    for f in Format::ALL {
        table.set_matmul(
            f,
            MatMulEntry {
                name: "avx2_matmul_4x3",
                quality: Quality::Optimized,
                kernel: MatMulKernel::F32(matmul_f32_avx2),
                row_multiple: 1,
            },
            true,
        );
    }
}
