//! The CUDA C sources (in `cuda-shell/kernels/`, one op family or format family per file) and
//! how the host names what they define.
//!
//! The sources form one NVRTC program, concatenated in [`SOURCES`] order: the prelude, the
//! reductions, the format decoders, then the ops that use them. Each format's decoder reproduces its scalar
//! decoder in `core/src/quant/` in f32, rounding for rounding.

use vspec_core::format::Format;
use vspec_core::quant::vspec::{tq2, tq3, tq4};

/// `(file name, text)` of every kernel source, in program order.
pub const SOURCES: [(&str, &str); 12] = [
    ("prelude.cu", include_str!("../kernels/prelude.cu")),
    ("reduce.cu", include_str!("../kernels/reduce.cu")),
    (
        "formats_gguf.cu",
        include_str!("../kernels/formats_gguf.cu"),
    ),
    (
        "formats_vspec.cu",
        include_str!("../kernels/formats_vspec.cu"),
    ),
    ("matmul.cu", include_str!("../kernels/matmul.cu")),
    ("gemv_packed.cu", include_str!("../kernels/gemv_packed.cu")),
    ("gemv_q8.cu", include_str!("../kernels/gemv_q8.cu")),
    ("norm.cu", include_str!("../kernels/norm.cu")),
    ("rope.cu", include_str!("../kernels/rope.cu")),
    ("elementwise.cu", include_str!("../kernels/elementwise.cu")),
    ("kv.cu", include_str!("../kernels/kv.cu")),
    ("attention.cu", include_str!("../kernels/attention.cu")),
];

/// The whole program: every source in order, each preceded by a `#line` so NVRTC's messages
/// name the file and line.
pub fn program() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("#line 1 \"{name}\"\n"));
        s.push_str(text);
        s.push('\n');
    }
    s
}

/// A weight format the kernels decode: its id in `dq_any` (matmul.cu) and the suffix of its
/// `gemv_*`/`gemm_*` kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatId {
    /// The `case` of `dq_any`.
    pub id: i32,
    /// Kernel name suffix.
    pub name: &'static str,
}

/// The device id of `format`, or `None` for formats without device kernels (Q2_K, Q3_K, Q5_K,
/// IQ4_NL, IQ4_XS: the issue asks for Q4_0, Q4_1, Q4_K, Q6_K at least; the others are a decoder
/// each away). Q5_0 and Q5_1 are in because `--bits 4` files store the embedding in Q5_1.
pub fn format_id(format: Format) -> Option<FormatId> {
    let (id, name) = match format {
        Format::F32 => (0, "f32"),
        Format::F16 => (1, "f16"),
        Format::BF16 => (2, "bf16"),
        Format::Q8_0 => (3, "q8_0"),
        Format::Q4_0 => (4, "q4_0"),
        Format::Q4_1 => (5, "q4_1"),
        Format::Q4_K => (6, "q4_k"),
        Format::Q6_K => (7, "q6_k"),
        Format::VQ2 => (8, "vq2"),
        Format::VQ3 => (9, "vq3"),
        Format::VQ4 => (10, "vq4"),
        Format::NQ3 => (11, "nq3"),
        Format::TQ2 => (12, "tq2"),
        Format::TQ3 => (13, "tq3"),
        Format::TQ4 => (14, "tq4"),
        Format::Q5_0 => (15, "q5_0"),
        Format::Q5_1 => (16, "q5_1"),
        _ => return None,
    };
    Some(FormatId { id, name })
}

/// Every format with device kernels.
pub fn device_formats() -> impl Iterator<Item = Format> {
    Format::ALL.into_iter().filter(|f| format_id(*f).is_some())
}

/// The 256-entry codebook a trellis format decodes through (uploaded once per session), or
/// `None` for formats without one.
pub fn codebook(format: Format) -> Option<&'static [i8; 256]> {
    match format {
        Format::TQ2 => Some(&tq2::CODEBOOK),
        Format::TQ3 => Some(&tq3::CODEBOOK),
        Format::TQ4 => Some(&tq4::CODEBOOK),
        _ => None,
    }
}

/// Every `extern "C"` kernel the session loads by name.
pub fn kernel_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "dequant_row",
        "rms_norm",
        "add_rms_norm",
        "head_rms_norm",
        "rope",
        "head_rms_norm_rope",
        "swiglu",
        "add",
        "embed",
        "last_row",
        "kv_store",
        "attn_partial",
        "attn_combine",
        "quantize_act",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for f in device_formats() {
        let n = format_id(f).map_or("", |id| id.name);
        v.push(format!("gemv_{n}"));
        v.push(format!("gemm_{n}"));
        if has_int8_gemv(f) {
            v.push(format!("gemvq_{n}"));
        }
    }
    v
}

/// Whether `format` has a one-token GEMV on 8-bit activations (`gemvq_<fmt>`, gemv_q8.cu).
pub fn has_int8_gemv(format: Format) -> bool {
    matches!(
        format,
        Format::Q4_0
            | Format::Q4_1
            | Format::Q5_0
            | Format::Q5_1
            | Format::Q8_0
            | Format::Q4_K
            | Format::Q6_K
            | Format::VQ2
            | Format::VQ3
            | Format::VQ4
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_cover_the_issue_formats() {
        let mut ids: Vec<i32> = device_formats()
            .filter_map(format_id)
            .map(|f| f.id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..17).collect::<Vec<_>>());
        for f in [
            Format::VQ2,
            Format::VQ3,
            Format::VQ4,
            Format::NQ3,
            Format::TQ2,
            Format::TQ3,
            Format::TQ4,
            Format::Q8_0,
            Format::Q4_0,
            Format::Q4_1,
            Format::Q5_0,
            Format::Q5_1,
            Format::Q4_K,
            Format::Q6_K,
        ] {
            assert!(format_id(f).is_some(), "{f:?}");
        }
    }

    #[test]
    fn every_kernel_name_is_defined_in_the_sources() {
        let prog = program();
        for name in kernel_names() {
            let plain = format!(" {name}(");
            let (kind, suffix) = name.split_once('_').unwrap_or(("", ""));
            let stamped = format!("VSPEC_MATMUL({suffix},");
            let gemm_only = format!("VSPEC_GEMM({suffix},");
            let gemv_own = format!("GEMV_KERNEL({suffix})");
            let gemvq_own = format!("GEMVQ_KERNEL({suffix})");
            assert!(
                prog.contains(&plain)
                    || prog.contains(&stamped)
                    || (kind == "gemm" && prog.contains(&gemm_only))
                    || (kind == "gemv" && prog.contains(&gemv_own))
                    || (kind == "gemvq" && prog.contains(&gemvq_own)),
                "kernel {name} is not in the sources"
            );
        }
    }
}
