//! Kernels: scalar references for every op, reached through a [`KernelTable`] of function
//! pointers chosen once at load (SIMD tiers overwrite entries; nothing dispatches per call).
//!
//! Kernels are single-threaded over a range of output rows (or heads); the [`Parallel`] the shell
//! provides splits the range. Each output element is computed by exactly one call in a fixed
//! order, so results do not depend on the thread count or on how many tokens a step holds.

pub mod activation;
pub mod attention;
pub mod matmul;
pub mod norm;
pub mod parallel;
pub mod rope;
pub mod table;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use matmul::TILE;
pub use parallel::{Parallel, Serial, SharedOut};
pub use table::{
    ActKind, CpuFeatures, KernelTable, MatMulEntry, MatMulF32Fn, MatMulKernel, MatMulQ8Fn, OpEntry,
    Quality,
};

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

/// The scalar embedding lookup: row `row` of `w` decoded into `out` (`w.cols` values).
pub fn embed_row_scalar(w: &crate::model::WeightView<'_>, row: usize, out: &mut [f32]) {
    if w.layout == crate::model::Layout::Rows16 {
        return embed_row_rows16(w, row, out);
    }
    for_each_tile(w, row, |c0, tile| {
        out[c0..c0 + tile.len()].copy_from_slice(tile)
    });
}

/// [`embed_row_scalar`] of an interleaved trellis weight: each block of the row gathered back
/// into its row-major bytes, then decoded by the format's own decoder.
fn embed_row_rows16(w: &crate::model::WeightView<'_>, row: usize, out: &mut [f32]) {
    use crate::quant::vspec::trellis;
    let spec = w.format.spec();
    let k = trellis::stream_bits(w.format).expect("only trellis weights are held interleaved");
    let blocks = w.cols / trellis::BLOCK_ELEMS;
    let mut block = [0u8; trellis::block_bytes(4)];
    let block = &mut block[..spec.block_bytes];
    for (b, out) in out.chunks_exact_mut(trellis::BLOCK_ELEMS).enumerate() {
        trellis::row_block_rows16(k, w.data, blocks, row, b, block);
        (spec.decode)(block, out);
    }
}
