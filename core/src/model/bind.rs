//! Binding the graph's weight tensors to bytes of a model file, with every shape, format and length
//! checked once, so kernels can index without checks of their own.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::graph::{Graph, Role};
use alloc::vec::Vec;

/// A tensor as a model file holds it.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    /// Storage format.
    pub format: Format,
    /// Dimensions in GGUF order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    /// The tensor's bytes.
    pub data: &'a [u8],
}

/// How a weight's rows lie in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, each `row_bytes` long: as files store them.
    RowMajor,
    /// A trellis format (TQ2–TQ4) with each sixteen-row group's blocks interleaved byte by byte
    /// (`quant::vspec::trellis::interleave_rows16`): the same bytes, permuted at load for the
    /// kernels that read it (`KernelTable::rows16`); `row` does not apply.
    Rows16,
}

/// A validated weight: `rows` rows of `cols` weights in `format`, `data` exactly that long.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    /// Storage format.
    pub format: Format,
    /// Rows (output features), 1 for vectors.
    pub rows: usize,
    /// Row length.
    pub cols: usize,
    /// Bytes of one row.
    pub row_bytes: usize,
    /// `rows * row_bytes` bytes.
    pub data: &'a [u8],
    /// How the rows lie in `data`.
    pub layout: Layout,
}

impl<'a> WeightView<'a> {
    /// The bytes of row `r` (caller keeps `r < rows`; the layout is [`Layout::RowMajor`]).
    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

/// Looks up a tensor by its GGUF name; `Ok(None)` when absent.
pub type Lookup<'f, 'a> = dyn Fn(&str) -> Result<Option<RawTensor<'a>>> + 'f;

/// Binds every weight of `graph` through `lookup`, recording each format in the graph.
/// Returns one entry per graph tensor (`None` for activations).
pub fn bind_weights<'a>(
    graph: &mut Graph,
    lookup: &Lookup<'_, 'a>,
) -> Result<Vec<Option<WeightView<'a>>>> {
    let mut views = alloc::vec![None; graph.tensors.len()];
    for (id, view) in views.iter_mut().enumerate() {
        let t = &graph.tensors[id];
        if t.role != Role::Weight {
            continue;
        }
        let raw = lookup(&t.name)?
            .ok_or_else(|| Error::missing(alloc::format!("tensor '{}'", t.name)))?;
        let (rows, cols) = (t.weight_rows, t.cols);
        let dims_ok = match raw.dims.as_slice() {
            [c] => rows == 1 && *c == cols as u64,
            [c, r] => *c == cols as u64 && *r == rows as u64,
            _ => false,
        };
        if !dims_ok {
            let expected = if rows == 1 {
                alloc::vec![cols as u64]
            } else {
                alloc::vec![cols as u64, rows as u64]
            };
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected,
                found: raw.dims,
            });
        }
        let row_bytes = raw.format.row_bytes(cols, &t.name)?;
        let need = raw.format.tensor_bytes(cols, rows, &t.name)?;
        if raw.data.len() != need {
            return Err(Error::invalid(
                alloc::format!("tensor '{}'", t.name),
                alloc::format!(
                    "{} bytes of data, {} [{cols} x {rows}] needs {need}",
                    raw.data.len(),
                    raw.format.name()
                ),
            ));
        }
        *view = Some(WeightView {
            format: raw.format,
            rows,
            cols,
            row_bytes,
            data: raw.data,
            layout: Layout::RowMajor,
        });
        graph.tensors[id].format = Some(raw.format);
    }
    Ok(views)
}

/// Bytes of all bound weights.
pub fn weight_bytes(views: &[Option<WeightView<'_>>]) -> usize {
    // The tied embedding appears once in the graph, so nothing is counted twice.
    views.iter().flatten().map(|w| w.data.len()).sum()
}
