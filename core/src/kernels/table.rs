//! The kernel contract: one table of function pointers, filled once at load from the detected CPU
//! features, through which the session runs every op. Nothing dispatches per call and nothing
//! falls back silently: a matmul whose weight format has no entry is an error when the session is
//! created ([`KernelTable::check_formats`]).
//!
//! A matmul entry states what it consumes ([`ActKind`]: f32 rows, or 8-bit blocks of 32 with their
//! sums, quantized once per step by the table's `quantize_q8`) and the row multiple its callers
//! must split on. Each format has at most one entry per activation kind and one preferred kind.

use super::attention::AttnShape;
use super::SharedOut;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::graph::RopeLayout;
use crate::kv::KvRows;
use crate::model::WeightView;
use crate::quant::act_q8::BlockQ8Act;
use alloc::string::String;
use core::ops::Range;

/// Whether a kernel is the scalar reference or a faster variant checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// The scalar reference, defining the op's result.
    Reference,
    /// A faster kernel tested against the reference.
    Optimized,
}

/// What a matmul kernel reads as its activation input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// `[tokens, cols]` f32.
    F32,
    /// `[tokens, cols / 32]` [`BlockQ8Act`] (8-bit quants, f32 scale, integer sum).
    Q8,
}

impl ActKind {
    /// Both kinds, in table order.
    pub const ALL: [ActKind; 2] = [ActKind::F32, ActKind::Q8];

    fn index(self) -> usize {
        match self {
            ActKind::F32 => 0,
            ActKind::Q8 => 1,
        }
    }
}

/// Computes rows `rows` of `out` (`[tokens, w.rows]`) from f32 activations `x`
/// (`[tokens, w.cols]`).
///
/// # Safety
/// No other thread reads or writes rows `rows` of `out` (for any token) during the call.
pub type MatMulF32Fn = unsafe fn(
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
);

/// Computes rows `rows` of `out` (`[tokens, w.rows]`) from 8-bit activation blocks `x`
/// (`[tokens, w.cols / 32]`).
///
/// # Safety
/// No other thread reads or writes rows `rows` of `out` (for any token) during the call.
pub type MatMulQ8Fn = unsafe fn(
    w: &WeightView<'_>,
    x: &[BlockQ8Act],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
);

/// A matmul kernel and the activation kind it consumes.
#[derive(Clone, Copy)]
pub enum MatMulKernel {
    /// Reads f32 rows.
    F32(MatMulF32Fn),
    /// Reads 8-bit activation blocks.
    Q8(MatMulQ8Fn),
}

/// A matmul kernel for one weight format and activation kind.
#[derive(Clone, Copy)]
pub struct MatMulEntry {
    /// `isa_op_format_act`, e.g. `avx2_matmul_q4_0_q8`.
    pub name: &'static str,
    /// Reference or optimized.
    pub quality: Quality,
    /// The kernel.
    pub kernel: MatMulKernel,
    /// Callers split the rows on multiples of this (the last range may be shorter).
    pub row_multiple: usize,
}

impl MatMulEntry {
    /// What the kernel reads.
    pub fn consumes(&self) -> ActKind {
        match self.kernel {
            MatMulKernel::F32(_) => ActKind::F32,
            MatMulKernel::Q8(_) => ActKind::Q8,
        }
    }
}

impl core::fmt::Debug for MatMulEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?})",
            self.name,
            self.quality,
            self.consumes()
        )
    }
}

/// `y = x / sqrt(mean(x²) + eps) * w` for every row of `x` (`rows × w.cols`), `w` a one-row
/// weight in any format.
pub type RmsNormFn = fn(x: &[f32], w: &WeightView<'_>, eps: f32, y: &mut [f32]);
/// RMSNorm of each `head_dim` slice of `x` with the same decoded `w` (`head_dim` values).
pub type HeadNormFn = fn(x: &[f32], w: &[f32], eps: f32, head_dim: usize, y: &mut [f32]);
/// An element-wise op of two equal-length inputs (`swiglu`, `add`).
pub type BinaryFn = fn(a: &[f32], b: &[f32], y: &mut [f32]);
/// Rotates every head of one row for one position.
pub type RopeFn =
    fn(x: &[f32], y: &mut [f32], pos: usize, head_dim: usize, layout: RopeLayout, inv_freq: &[f32]);
/// Attention for a range of query heads over one layer's KV cache (any [`crate::kv::KvType`]).
/// The session may hand a part of a step's tokens to each call (`s.tokens`, `s.pos0`, `q` and
/// `out` then describe that part alone), so two concurrent calls can cover the same heads on
/// different tokens; the kernels keep their block scratch on the stack. With
/// [`super::attention::AttnSpan::Chunks`] (one token, kernels that fold by chunks) the call
/// covers some chunks of positions and writes their states to `partials` (planned,
/// [`super::attention::chunk_slots`] states per head) instead of `out`.
///
/// # Safety
/// No other thread touches the output columns of heads `heads` in these tokens, or (with
/// `Chunks`) those heads' states of those chunks in `partials`, during the call.
pub type AttentionFn = unsafe fn(
    s: &AttnShape,
    q: &[f32],
    k_cache: KvRows<'_>,
    v_cache: KvRows<'_>,
    heads: Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
);
/// Quantizes whole 32-blocks of activations (`out.len() == x.len() / 32`).
pub type QuantizeQ8Fn = fn(x: &[f32], out: &mut [BlockQ8Act]);
/// Decodes row `row` of a weight into `out` (`w.cols` values): the embedding lookup.
pub type EmbedFn = fn(w: &WeightView<'_>, row: usize, out: &mut [f32]);
/// Stores one row (or whole heads of it) into the KV cache as `kv_type`: the bytes of
/// [`crate::kv::store_row`], on every tier (a cache written by one tier reads the same on all).
pub type KvStoreFn = fn(kv_type: crate::kv::KvType, src: &[f32], dst: &mut [u8]);

/// One non-matmul kernel.
#[derive(Clone, Copy)]
pub struct OpEntry<F> {
    /// `isa_op`, e.g. `avx2_swiglu`.
    pub name: &'static str,
    /// Reference or optimized.
    pub quality: Quality,
    /// The kernel.
    pub f: F,
}

impl<F> core::fmt::Debug for OpEntry<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:?})", self.name, self.quality)
    }
}

impl<F> OpEntry<F> {
    const fn reference(name: &'static str, f: F) -> Self {
        OpEntry {
            name,
            quality: Quality::Reference,
            f,
        }
    }

    /// An optimized entry.
    pub(crate) const fn optimized(name: &'static str, f: F) -> Self {
        OpEntry {
            name,
            quality: Quality::Optimized,
            f,
        }
    }
}

const FORMATS: usize = Format::ALL.len();

/// Index of `f` in [`Format::ALL`].
fn format_index(f: Format) -> usize {
    // The enum's declaration order is Format::ALL's order (a test checks it), so the
    // discriminant is the index.
    f as usize
}

/// Function pointers for every op the session runs, filled once at load.
#[derive(Clone)]
pub struct KernelTable {
    matmul: [[Option<MatMulEntry>; 2]; FORMATS],
    preferred: [ActKind; FORMATS],
    /// RMSNorm of rows.
    pub rms_norm: OpEntry<RmsNormFn>,
    /// RMSNorm of each head's slice (Qwen3's q/k norm).
    pub head_rms_norm: OpEntry<HeadNormFn>,
    /// `silu(gate) * up`.
    pub swiglu: OpEntry<BinaryFn>,
    /// Residual add.
    pub add: OpEntry<BinaryFn>,
    /// Rotary position embedding of one row.
    pub rope: OpEntry<RopeFn>,
    /// Attention over the KV cache.
    pub attention: OpEntry<AttentionFn>,
    /// `attention` folds positions in fixed chunks and accepts
    /// [`super::attention::AttnSpan::Chunks`], so a one-token step may be split by positions.
    pub attention_folds_chunks: bool,
    /// f32 → 8-bit activation blocks.
    pub quantize_q8: OpEntry<QuantizeQ8Fn>,
    /// Embedding row decode.
    pub embed: OpEntry<EmbedFn>,
    /// Rows into the KV cache.
    pub kv_store: OpEntry<KvStoreFn>,
    /// Per format, the format its weights run faster in after a lossless rewrite at load (see
    /// [`KernelTable::expansion`]).
    expand: [Option<Format>; FORMATS],
    /// Per format, whether its matmul kernels read the interleaved layout (see
    /// [`KernelTable::rows16`]).
    rows16: [bool; FORMATS],
}

impl core::fmt::Debug for KernelTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KernelTable")
            .field("matmul", &self.describe_matmuls())
            .field("rms_norm", &self.rms_norm)
            .field("head_rms_norm", &self.head_rms_norm)
            .field("swiglu", &self.swiglu)
            .field("add", &self.add)
            .field("rope", &self.rope)
            .field("attention", &self.attention)
            .field("attention_folds_chunks", &self.attention_folds_chunks)
            .field("quantize_q8", &self.quantize_q8)
            .field("embed", &self.embed)
            .field("kv_store", &self.kv_store)
            .finish()
    }
}

impl KernelTable {
    /// The scalar references: an f32 matmul for every format (preferred) and an 8-bit one for the
    /// formats with a reference 8-bit dot; scalar norm, RoPE, attention, activations.
    pub fn scalar() -> Self {
        let mut matmul = [[None; 2]; FORMATS];
        for f in Format::ALL {
            matmul[format_index(f)][ActKind::F32.index()] = Some(MatMulEntry {
                name: "scalar_matmul",
                quality: Quality::Reference,
                kernel: MatMulKernel::F32(super::matmul::matmul_scalar),
                row_multiple: 1,
            });
            if crate::quant::block_dot_q8(f).is_some() {
                matmul[format_index(f)][ActKind::Q8.index()] = Some(MatMulEntry {
                    name: "scalar_matmul_q8",
                    quality: Quality::Reference,
                    kernel: MatMulKernel::Q8(super::matmul::matmul_q8_scalar),
                    row_multiple: 1,
                });
            }
        }
        KernelTable {
            matmul,
            preferred: [ActKind::F32; FORMATS],
            rms_norm: OpEntry::reference("scalar_rms_norm", super::norm::rms_norm_rows),
            head_rms_norm: OpEntry::reference("scalar_head_rms_norm", super::norm::head_rms_norm),
            swiglu: OpEntry::reference("scalar_swiglu", super::activation::swiglu),
            add: OpEntry::reference("scalar_add", super::activation::add),
            rope: OpEntry::reference("scalar_rope", super::rope::rope_row),
            attention: OpEntry::reference("scalar_attention", super::attention::attention_heads),
            attention_folds_chunks: false,
            quantize_q8: OpEntry::reference(
                "scalar_quantize_q8",
                super::matmul::quantize_q8_scalar,
            ),
            embed: OpEntry::reference("scalar_embed", super::embed_row_scalar),
            kv_store: OpEntry::reference("scalar_kv_store", crate::kv::store_row),
            expand: [None; FORMATS],
            rows16: [false; FORMATS],
        }
    }

    /// The scalar table with every entry the CPU can run faster replaced, and a line saying
    /// which kernels were activated (for logs).
    pub fn select(features: &CpuFeatures) -> (Self, String) {
        #[allow(unused_mut)]
        let mut table = Self::scalar();
        #[cfg(target_arch = "x86_64")]
        if features.avx2_fma {
            super::x86_64::install_avx2(&mut table, features);
        }
        #[cfg(target_arch = "x86_64")]
        if features.avx512 {
            super::x86_64::install_avx512(&mut table, features);
        }
        let _ = features;
        let log = table.describe();
        (table, log)
    }

    /// The preferred matmul kernel for weights in `format`, if the table has one.
    #[inline]
    pub fn matmul(&self, format: Format) -> Option<&MatMulEntry> {
        self.matmul_for(format, self.preferred[format_index(format)])
    }

    /// The matmul kernel for `format` reading `act`, if any.
    #[inline]
    pub fn matmul_for(&self, format: Format, act: ActKind) -> Option<&MatMulEntry> {
        self.matmul[format_index(format)][act.index()].as_ref()
    }

    /// The format this table would rather run `format`'s weights in: a format whose blocks
    /// rewrite `format`'s without changing a value and whose kernel is much faster here, at the
    /// cost of more memory. The AVX2 tier names Q8_0 for the trellis formats (a 256-entry table
    /// lookup per weight without VBMI; 8.5 bits per weight in memory instead of 2.25–4.25);
    /// whether a session takes it is the embedder's choice (the CLI's `VSPEC_EXPAND`).
    #[inline]
    pub fn expansion(&self, format: Format) -> Option<Format> {
        self.expand[format_index(format)]
    }

    /// Sets [`KernelTable::expansion`] for `format`.
    pub fn set_expansion(&mut self, format: Format, to: Option<Format>) {
        self.expand[format_index(format)] = to;
    }

    /// Whether this table's matmul kernels for `format` also read a weight in
    /// [`crate::model::Layout::Rows16`] (the trellis formats on the AVX-512 VBMI tier), where
    /// they run faster: a session may then hold such a weight interleaved, when its rows come in
    /// whole groups of sixteen. Every other kernel and table reads row-major weights only.
    #[inline]
    pub fn rows16(&self, format: Format) -> bool {
        self.rows16[format_index(format)]
    }

    /// Sets [`KernelTable::rows16`] for `format`.
    pub fn set_rows16(&mut self, format: Format, on: bool) {
        self.rows16[format_index(format)] = on;
    }

    /// Installs `entry` for `format` and the activation kind it consumes; `prefer` makes that
    /// kind the one the session uses.
    pub fn set_matmul(&mut self, format: Format, entry: MatMulEntry, prefer: bool) {
        let act = entry.consumes();
        self.matmul[format_index(format)][act.index()] = Some(entry);
        if prefer {
            self.preferred[format_index(format)] = act;
        }
    }

    /// An error naming the first of `formats` that has no matmul kernel: checked when a session
    /// is created, so a missing kernel is never discovered mid-run.
    pub fn check_formats(&self, formats: impl IntoIterator<Item = Format>) -> Result<()> {
        for f in formats {
            if self.matmul(f).is_none() {
                return Err(Error::invalid(
                    "kernels",
                    alloc::format!("no matmul kernel for {} weights", f.name()),
                ));
            }
        }
        Ok(())
    }

    fn describe_matmuls(&self) -> String {
        let mut s = String::new();
        for f in Format::ALL {
            if let Some(e) = self.matmul(f) {
                if !s.is_empty() {
                    s.push_str(", ");
                }
                s.push_str(e.name);
            }
        }
        s
    }

    /// One line naming the optimized kernels in use (or "scalar").
    pub fn describe(&self) -> String {
        let mut names: alloc::vec::Vec<&str> = alloc::vec::Vec::new();
        for f in Format::ALL {
            if let Some(e) = self.matmul(f) {
                if e.quality == Quality::Optimized && !names.contains(&e.name) {
                    names.push(e.name);
                }
            }
        }
        for (name, q) in [
            (self.rms_norm.name, self.rms_norm.quality),
            (self.head_rms_norm.name, self.head_rms_norm.quality),
            (self.swiglu.name, self.swiglu.quality),
            (self.add.name, self.add.quality),
            (self.rope.name, self.rope.quality),
            (self.attention.name, self.attention.quality),
            (self.quantize_q8.name, self.quantize_q8.quality),
            (self.embed.name, self.embed.quality),
            (self.kv_store.name, self.kv_store.quality),
        ] {
            if q == Quality::Optimized {
                names.push(name);
            }
        }
        if names.is_empty() {
            String::from("scalar")
        } else {
            let mut s = names.join(", ");
            s.push_str("; scalar elsewhere");
            s
        }
    }
}

impl Default for KernelTable {
    fn default() -> Self {
        Self::scalar()
    }
}

/// CPU features the running machine has, as detected by the shell. Faster kernels are installed
/// only from a value whose constructor promises detection, so a safe function pointer in the
/// table can never run an instruction the CPU lacks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    pub(crate) avx2_fma: bool,
    pub(crate) avx512: bool,
    pub(crate) split_512: bool,
}

impl CpuFeatures {
    /// No optional features: the scalar references only.
    pub fn none() -> Self {
        CpuFeatures::default()
    }

    /// Features as detected at run time. `avx2_fma` stands for the AVX2 tier: AVX2, FMA and
    /// F16C (every CPU with AVX2 and FMA so far also has F16C, which the tier's f16 scales use).
    ///
    /// # Safety
    /// Every feature passed as `true` must be supported by the CPU (and enabled by the OS) that
    /// will run the kernels, e.g. checked with `is_x86_feature_detected!`: for `avx2_fma`, all of
    /// `avx2`, `fma` and `f16c`.
    pub unsafe fn assume_detected(avx2_fma: bool) -> Self {
        CpuFeatures {
            avx2_fma,
            avx512: false,
            split_512: false,
        }
    }

    /// These features plus the AVX-512 tier: AVX-512 F, BW, VL, VNNI and VBMI (on top of the
    /// AVX2 tier's, which it needs and turns on).
    ///
    /// # Safety
    /// The CPU that will run the kernels supports (and its OS enables) `avx512f`, `avx512bw`,
    /// `avx512vl`, `avx512vnni` and `avx512vbmi`, and `avx2`, `fma` and `f16c`.
    pub unsafe fn assume_avx512(self) -> Self {
        CpuFeatures {
            avx2_fma: true,
            avx512: true,
            ..self
        }
    }

    /// These features, noting whether the CPU issues a 512-bit operation as two 256-bit halves
    /// (AMD Zen 4; Zen 5 and Intel's AVX-512 cores have full-width units). A performance hint
    /// only, hence safe: with it the AVX-512 tier decodes one token of the formats with two
    /// chunks per decode (Q4_0, Q4_1, Q5_0, Q5_1, VQ2–VQ4) and of the trellis formats (TQ2–TQ4,
    /// after their 512-bit lookup) with 256-bit `vpdpbusd`, which spends fewer 256-bit slots per
    /// weight there, and asks for fewer rows ahead with a non-temporal hint (Q8_0, IQ4_NL and
    /// NQ3 too), with the same bits.
    pub fn with_split_512(self, split_512: bool) -> Self {
        CpuFeatures { split_512, ..self }
    }

    /// AVX2 and FMA (x86-64).
    pub fn avx2_fma(&self) -> bool {
        self.avx2_fma
    }

    /// The AVX-512 tier's features (see [`CpuFeatures::assume_avx512`]).
    pub fn avx512(&self) -> bool {
        self.avx512
    }

    /// Whether 512-bit operations are split in two (see [`CpuFeatures::with_split_512`]).
    pub fn split_512(&self) -> bool {
        self.split_512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_discriminants_follow_all() {
        for (i, f) in Format::ALL.iter().enumerate() {
            assert_eq!(format_index(*f), i, "{}", f.name());
        }
    }

    #[test]
    fn scalar_table_covers_every_format() {
        let t = KernelTable::scalar();
        t.check_formats(Format::ALL).unwrap();
        for f in Format::ALL {
            assert_eq!(t.matmul(f).unwrap().consumes(), ActKind::F32);
            assert_eq!(
                t.matmul_for(f, ActKind::Q8).is_some(),
                crate::quant::block_dot_q8(f).is_some()
            );
        }
    }

    #[test]
    fn a_missing_kernel_is_an_error() {
        let mut t = KernelTable::scalar();
        t.matmul[format_index(Format::Q4_0)] = [None, None];
        let e = t.check_formats([Format::F32, Format::Q4_0]).unwrap_err();
        assert!(alloc::format!("{e}").contains("Q4_0"));
    }
}
