//! x86-64 kernels, one file per instruction-set tier and op family. Reached only through
//! [`crate::kernels::KernelTable::select`], which installs them from detected [`CpuFeatures`].

mod attention;
pub mod avx2;
mod ops;
mod q8;
mod rope;

use crate::format::Format;
use crate::kernels::table::{CpuFeatures, KernelTable, MatMulEntry, MatMulKernel, Quality};
use crate::kernels::SharedOut;
use crate::model::WeightView;
use crate::quant::act_q8::BlockQ8Act;
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

/// An 8-bit matmul entry for format type `$fmt` on driver `$tier` (`lanes8`, the AVX2 default,
/// `avx512`, `split512` (AVX-512 on CPUs that split 512-bit operations), or `kquant_lanes8` /
/// `kquant_wide` for the super-block formats on AVX2 / AVX-512).
macro_rules! q8_entry {
    ($fmt:ty, $name:literal) => {
        q8_entry!(lanes8, $fmt, $name)
    };
    ($tier:ident, $fmt:ty, $name:literal) => {{
        /// # Safety
        /// Same contract as [`crate::kernels::MatMulQ8Fn`]; installed only from detected
        /// features of the tier (and of the format's decoder).
        unsafe fn kernel(
            w: &WeightView<'_>,
            x: &[BlockQ8Act],
            tokens: usize,
            rows: Range<usize>,
            out: &SharedOut<'_>,
        ) {
            // SAFETY: the features are present (see above); row exclusivity and the activation
            // layout are this function's own contract, passed on.
            unsafe { q8::$tier::matmul::<$fmt>(w, x, tokens, rows, out) }
        }
        MatMulEntry {
            name: $name,
            quality: Quality::Optimized,
            kernel: MatMulKernel::Q8(kernel),
            row_multiple: 1,
        }
    }};
}

/// The 8-bit matmul entry for `format`, where the AVX2 tier has one.
fn q8_matmul_entry(format: Format) -> Option<MatMulEntry> {
    Some(match format {
        Format::Q4_0 => q8_entry!(q8::Q4_0, "avx2_matmul_q4_0_q8"),
        Format::Q4_1 => q8_entry!(q8::Q4_1, "avx2_matmul_q4_1_q8"),
        Format::Q5_0 => q8_entry!(q8::Q5_0, "avx2_matmul_q5_0_q8"),
        Format::Q5_1 => q8_entry!(q8::Q5_1, "avx2_matmul_q5_1_q8"),
        Format::Q8_0 => q8_entry!(q8::Q8_0, "avx2_matmul_q8_0_q8"),
        Format::IQ4_NL => q8_entry!(q8::Iq4Nl, "avx2_matmul_iq4_nl_q8"),
        Format::VQ2 => q8_entry!(q8::Vq2, "avx2_matmul_vq2_q8"),
        Format::VQ3 => q8_entry!(q8::Vq3, "avx2_matmul_vq3_q8"),
        Format::VQ4 => q8_entry!(q8::Vq4, "avx2_matmul_vq4_q8"),
        Format::NQ3 => q8_entry!(q8::Nq3, "avx2_matmul_nq3_q8"),
        Format::TQ2 => q8_entry!(q8::Tq2, "avx2_matmul_tq2_q8"),
        Format::TQ3 => q8_entry!(q8::Tq3, "avx2_matmul_tq3_q8"),
        Format::TQ4 => q8_entry!(q8::Tq4, "avx2_matmul_tq4_q8"),
        Format::Q2_K => q8_entry!(kquant_lanes8, q8::Q2K, "avx2_matmul_q2_k_q8"),
        Format::Q3_K => q8_entry!(kquant_lanes8, q8::Q3K, "avx2_matmul_q3_k_q8"),
        Format::Q4_K => q8_entry!(kquant_lanes8, q8::Q4K, "avx2_matmul_q4_k_q8"),
        Format::Q5_K => q8_entry!(kquant_lanes8, q8::Q5K, "avx2_matmul_q5_k_q8"),
        Format::Q6_K => q8_entry!(kquant_lanes8, q8::Q6K, "avx2_matmul_q6_k_q8"),
        Format::IQ4_XS => q8_entry!(kquant_lanes8, q8::Iq4Xs, "avx2_matmul_iq4_xs_q8"),
        // Floats keep f32 activations.
        Format::F32 | Format::F16 | Format::BF16 => return None,
    })
}

/// Installs every AVX2+FMA(+F16C) kernel into `table`.
pub(crate) fn install_avx2(table: &mut KernelTable, features: &CpuFeatures) {
    debug_assert!(features.avx2_fma);
    ops::install(table);
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
        if let Some(mut entry) = q8_matmul_entry(f) {
            // The eight-row drivers (`q8::lanes8`, `q8::kquant_lanes8`): splits on multiples of
            // 8 leave no lane of a group idle.
            entry.row_multiple = q8::lanes8::GROUP;
            table.set_matmul(f, entry, true);
        }
        if crate::quant::vspec::q8_0_expansion(f).is_some() {
            // The trellis lookup is ~1 cycle per weight here, Q8_0 several times faster.
            table.set_expansion(f, Some(Format::Q8_0));
        }
    }
}

/// The AVX-512 tier's 8-bit matmul for `format`: every format of the AVX2 tier on the VNNI
/// drivers (the super-block formats on `kquant_wide`), and the trellis formats with
/// their VBMI decoders.
fn avx512_matmul_entry(format: Format) -> Option<MatMulEntry> {
    let entry = match format {
        Format::Q4_0 => q8_entry!(avx512, q8::Q4_0, "avx512_matmul_q4_0_q8"),
        Format::Q4_1 => q8_entry!(avx512, q8::Q4_1, "avx512_matmul_q4_1_q8"),
        Format::Q5_0 => q8_entry!(avx512, q8::Q5_0, "avx512_matmul_q5_0_q8"),
        Format::Q5_1 => q8_entry!(avx512, q8::Q5_1, "avx512_matmul_q5_1_q8"),
        Format::Q8_0 => q8_entry!(avx512, q8::Q8_0, "avx512_matmul_q8_0_q8"),
        Format::IQ4_NL => q8_entry!(avx512, q8::Iq4Nl, "avx512_matmul_iq4_nl_q8"),
        Format::VQ2 => q8_entry!(avx512, q8::Vq2, "avx512_matmul_vq2_q8"),
        Format::VQ3 => q8_entry!(avx512, q8::Vq3, "avx512_matmul_vq3_q8"),
        Format::VQ4 => q8_entry!(avx512, q8::Vq4, "avx512_matmul_vq4_q8"),
        Format::NQ3 => q8_entry!(avx512, q8::Nq3, "avx512_matmul_nq3_q8"),
        Format::TQ2 => q8_entry!(avx512, q8::Tq2Vbmi, "avx512_matmul_tq2_q8"),
        Format::TQ3 => q8_entry!(avx512, q8::Tq3Vbmi, "avx512_matmul_tq3_q8"),
        Format::TQ4 => q8_entry!(avx512, q8::Tq4Vbmi, "avx512_matmul_tq4_q8"),
        Format::Q2_K => q8_entry!(kquant_wide, q8::Q2K, "avx512_matmul_q2_k_q8"),
        Format::Q3_K => q8_entry!(kquant_wide, q8::Q3K, "avx512_matmul_q3_k_q8"),
        Format::Q4_K => q8_entry!(kquant_wide, q8::Q4K, "avx512_matmul_q4_k_q8"),
        Format::Q5_K => q8_entry!(kquant_wide, q8::Q5K, "avx512_matmul_q5_k_q8"),
        Format::Q6_K => q8_entry!(kquant_wide, q8::Q6K, "avx512_matmul_q6_k_q8"),
        Format::IQ4_XS => q8_entry!(kquant_wide, q8::Iq4Xs, "avx512_matmul_iq4_xs_q8"),
        _ => return None,
    };
    // Ranges of whole sixteen-row groups keep the prefill path's lanes all in use.
    Some(MatMulEntry {
        row_multiple: q8::avx512::ROWS_PER_GROUP,
        ..entry
    })
}

/// Installs the AVX-512 tier over the AVX2 tier's table (the formats and ops it does not
/// cover keep their AVX2 kernels).
pub(crate) fn install_avx512(table: &mut KernelTable, features: &CpuFeatures) {
    debug_assert!(features.avx512 && features.avx2_fma);
    for f in Format::ALL {
        if let Some(entry) = avx512_matmul_entry(f) {
            table.set_matmul(f, entry, true);
            // The VBMI trellis decoders run near the other formats' rate: nothing to rewrite.
            table.set_expansion(f, None);
        }
    }
    // `rows8::matmul` (and `split512::matmul`, which hands such weights to it) runs the trellis
    // formats interleaved per sixteen rows as well (`q8::trellis_rows16`, no reduction tree: TQ3
    // 55 -> 92 G weights/s for one token on a Zen 5). On a CPU that splits 512-bit operations its
    // decode costs what the row-major one costs, and the tree it leaves out is ~17 % of the
    // row-major one-token loop's 256-bit issue slots (docs/OPTIMIZATION.md, "Interleaved rows on
    // Zen 4"; not timed on such a CPU).
    for f in [Format::TQ2, Format::TQ3, Format::TQ4] {
        table.set_rows16(f, true);
    }
    if features.split_512 {
        // 512-bit operations issued as two 256-bit halves (Zen 4): one token through
        // `q8::split512` (256-bit `vpdpbusd` pairs for the formats that decode two chunks as
        // halves, 6–30 % faster there, and for the trellis formats held row-major after their
        // 512-bit decode, +7 %; fewer rows asked for ahead, Q8_0 +25 %), more tokens through the
        // 512-bit path; the same bits.
        for (f, entry) in [
            (
                Format::Q4_0,
                q8_entry!(split512, q8::Q4_0, "avx512_matmul_q4_0_q8_split"),
            ),
            (
                Format::Q4_1,
                q8_entry!(split512, q8::Q4_1, "avx512_matmul_q4_1_q8_split"),
            ),
            (
                Format::Q5_0,
                q8_entry!(split512, q8::Q5_0, "avx512_matmul_q5_0_q8_split"),
            ),
            (
                Format::Q5_1,
                q8_entry!(split512, q8::Q5_1, "avx512_matmul_q5_1_q8_split"),
            ),
            (
                Format::VQ2,
                q8_entry!(split512, q8::Vq2, "avx512_matmul_vq2_q8_split"),
            ),
            (
                Format::VQ3,
                q8_entry!(split512, q8::Vq3, "avx512_matmul_vq3_q8_split"),
            ),
            (
                Format::VQ4,
                q8_entry!(split512, q8::Vq4, "avx512_matmul_vq4_q8_split"),
            ),
            (
                Format::Q8_0,
                q8_entry!(split512, q8::Q8_0, "avx512_matmul_q8_0_q8_split"),
            ),
            (
                Format::IQ4_NL,
                q8_entry!(split512, q8::Iq4Nl, "avx512_matmul_iq4_nl_q8_split"),
            ),
            (
                Format::NQ3,
                q8_entry!(split512, q8::Nq3, "avx512_matmul_nq3_q8_split"),
            ),
            (
                Format::TQ2,
                q8_entry!(split512, q8::Tq2Vbmi, "avx512_matmul_tq2_q8_split"),
            ),
            (
                Format::TQ3,
                q8_entry!(split512, q8::Tq3Vbmi, "avx512_matmul_tq3_q8_split"),
            ),
            (
                Format::TQ4,
                q8_entry!(split512, q8::Tq4Vbmi, "avx512_matmul_tq4_q8_split"),
            ),
        ] {
            let entry = MatMulEntry {
                row_multiple: q8::avx512::ROWS_PER_GROUP,
                ..entry
            };
            table.set_matmul(f, entry, true);
        }
    }
    // The AVX2 attention with 16-lane scores and value sums for prefill tiles (the same bits).
    table.attention =
        crate::kernels::table::OpEntry::optimized("avx512_attention", attention::attention::<true>);
}
