//! Kernels: scalar references for every op, reached through a [`KernelTable`] of function
//! pointers chosen once at load (later SIMD tiers overwrite entries; nothing dispatches per call).
//!
//! Kernels are single-threaded over a range of output rows (or heads); the [`Parallel`] the shell
//! provides splits the range. Each output element is computed by exactly one call in a fixed
//! order, so results do not depend on the thread count.

pub mod activation;
pub mod attention;
pub mod matmul;
pub mod norm;
pub mod rope;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use crate::format::Format;
use core::marker::PhantomData;
use core::ops::Range;

pub use matmul::MatMulFn;

/// Splits work over threads. The core only ever sees this trait.
pub trait Parallel: Sync {
    /// Calls `f` on disjoint sub-ranges that together cover `0..n`, each index exactly once.
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync));
    /// Threads used (for logs).
    fn threads(&self) -> usize;
}

/// Runs everything on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Serial;

impl Parallel for Serial {
    fn for_each_range(&self, n: usize, f: &(dyn Fn(Range<usize>) + Sync)) {
        if n > 0 {
            f(0..n)
        }
    }
    fn threads(&self) -> usize {
        1
    }
}

/// A mutable f32 buffer that several threads write at disjoint indices.
///
/// Matmul outputs are `[tokens, rows]` and threads own row ranges, so each thread's elements are
/// strided, not contiguous; safe slices cannot express that split.
pub struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a SharedOut only hands out writes through `unsafe fn`s whose contract is that no two
// threads touch the same index; the buffer itself is an exclusive borrow for 'a.
unsafe impl Sync for SharedOut<'_> {}
// SAFETY: as above; moving the handle to another thread moves the exclusive borrow with it.
unsafe impl Send for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    /// Wraps an exclusive borrow.
    pub fn new(buf: &'a mut [f32]) -> Self {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `v` at `i`.
    ///
    /// # Safety
    /// No other thread reads or writes index `i` while this handle is shared.
    #[inline]
    pub unsafe fn write(&self, i: usize, v: f32) {
        assert!(
            i < self.len,
            "SharedOut index {i} out of bounds {}",
            self.len
        );
        // SAFETY: i is in bounds (checked above) and, by the caller's contract, no other thread
        // accesses element i concurrently.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// A mutable sub-slice `range`.
    ///
    /// # Safety
    /// No other thread reads or writes any index in `range` while the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, range: Range<usize>) -> &mut [f32] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "SharedOut range out of bounds"
        );
        // SAFETY: the range is in bounds (checked above); exclusivity is the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Whether a kernel is the scalar reference or a faster variant checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// The scalar reference, defining the op's result.
    Reference,
    /// A faster kernel tested against the reference.
    Optimized,
}

/// A matmul kernel for one weight format.
#[derive(Clone, Copy)]
pub struct MatMulEntry {
    /// `isa_op_format`, e.g. `scalar_matmul_q4_1`.
    pub name: &'static str,
    /// Reference or optimized.
    pub quality: Quality,
    /// The kernel.
    pub f: MatMulFn,
}

impl core::fmt::Debug for MatMulEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:?})", self.name, self.quality)
    }
}

/// Function pointers per (op, format), filled once at load.
#[derive(Debug, Clone)]
pub struct KernelTable {
    matmul: [MatMulEntry; Format::ALL.len()],
}

fn format_index(f: Format) -> usize {
    Format::ALL.iter().position(|&x| x == f).unwrap_or(0)
}

impl KernelTable {
    /// Every slot filled with the scalar reference.
    pub fn scalar() -> Self {
        let mut matmul = [MatMulEntry {
            name: "scalar_matmul",
            quality: Quality::Reference,
            f: matmul::matmul_scalar,
        }; Format::ALL.len()];
        for (i, f) in Format::ALL.iter().enumerate() {
            matmul[i].name = matmul::scalar_name(*f);
        }
        KernelTable { matmul }
    }

    /// The matmul kernel for weights in `format`.
    #[inline]
    pub fn matmul(&self, format: Format) -> &MatMulEntry {
        &self.matmul[format_index(format)]
    }

    /// Replaces the matmul kernel for `format` (a faster tier installing itself).
    pub fn set_matmul(&mut self, format: Format, entry: MatMulEntry) {
        self.matmul[format_index(format)] = entry;
    }
}

/// CPU features the running machine has, as detected by the shell. Faster kernels are installed
/// only from a value whose constructor promises detection, so a safe function pointer in the
/// table can never run an instruction the CPU lacks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    avx2_fma: bool,
}

impl CpuFeatures {
    /// No optional features: the scalar references only.
    pub fn none() -> Self {
        CpuFeatures::default()
    }

    /// Features as detected at run time.
    ///
    /// # Safety
    /// Every feature passed as `true` must be supported by the CPU (and enabled by the OS) that
    /// will run the kernels, e.g. checked with `is_x86_feature_detected!`.
    pub unsafe fn assume_detected(avx2_fma: bool) -> Self {
        CpuFeatures { avx2_fma }
    }

    /// AVX2 and FMA (x86-64).
    pub fn avx2_fma(&self) -> bool {
        self.avx2_fma
    }
}

/// Safe entry for the AVX2 matmul; installed in a table only when [`CpuFeatures::avx2_fma`] holds.
#[cfg(target_arch = "x86_64")]
fn matmul_avx2(
    w: &crate::model::WeightView<'_>,
    x: &[f32],
    tokens: usize,
    rows: Range<usize>,
    out: &SharedOut<'_>,
) {
    // SAFETY: this function is reachable only through a KernelTable built by `select` from a
    // CpuFeatures whose constructor guarantees AVX2 and FMA are present.
    unsafe { x86_64::avx2::matmul_unchecked(w, x, tokens, rows, out) }
}

impl KernelTable {
    /// The scalar table with every slot the CPU can run faster replaced, and a line saying which
    /// kernels were activated (for logs).
    pub fn select(features: &CpuFeatures) -> (Self, alloc::string::String) {
        let mut table = Self::scalar();
        #[allow(unused_mut)]
        let mut log = alloc::string::String::from("scalar");
        #[cfg(target_arch = "x86_64")]
        if features.avx2_fma {
            for f in Format::ALL {
                table.set_matmul(
                    f,
                    MatMulEntry {
                        name: "avx2_matmul_4x3",
                        quality: Quality::Optimized,
                        f: matmul_avx2,
                    },
                );
            }
            log = alloc::string::String::from(
                "avx2+fma matmul (4 rows x 3 tokens), scalar elsewhere",
            );
        }
        let _ = features;
        (table, log)
    }
}

impl Default for KernelTable {
    fn default() -> Self {
        Self::scalar()
    }
}

/// Dot product of two equal-length slices with eight partial sums combined in a fixed order,
/// so the result does not depend on where the slices came from (and vectorizes).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (ca, cb) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Decodes weights `c0 .. c0 + tile.len()` of row `row` of `w` into `tile`; `c0` and the length
/// are whole blocks (tiles of [`matmul::TILE`] always are, and so is a row's last tile).
#[inline]
pub fn decode_tile(w: &crate::model::WeightView<'_>, row: usize, c0: usize, tile: &mut [f32]) {
    let be = w.format.block_elems();
    let bb = w.format.block_bytes();
    let decode = crate::quant::block_decoder(w.format);
    let bytes = w.row(row);
    let src = &bytes[(c0 / be) * bb..((c0 + tile.len()) / be) * bb];
    for (chunk, out) in src.chunks_exact(bb).zip(tile.chunks_exact_mut(be)) {
        decode(chunk, out);
    }
}

/// Decodes row `row` of `w` tile by tile (at most [`matmul::TILE`] weights, whole blocks) and
/// calls `f(first_column, tile)`, so vector weights (norms, biases) never need a heap buffer.
pub fn for_each_tile(
    w: &crate::model::WeightView<'_>,
    row: usize,
    mut f: impl FnMut(usize, &[f32]),
) {
    let mut tile = [0f32; matmul::TILE];
    let mut c0 = 0;
    while c0 < w.cols {
        let len = matmul::TILE.min(w.cols - c0);
        decode_tile(w, row, c0, &mut tile[..len]);
        f(c0, &tile[..len]);
        c0 += len;
    }
}
