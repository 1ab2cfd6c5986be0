//! GGUF (versions 2 and 3) header parser as a pure function over `&[u8]`, plus typed metadata
//! accessors and a writer ([`GgufWriter`]) for tests and converters.
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` key/value count,
//! the key/value pairs, the tensor infos (name, `u32` n_dims, `u64` dims, `u32` ggml type, `u64`
//! offset relative to the data section), padding up to `general.alignment` (default 32), then the
//! tensor data.
//!
//! [`parse`] checks every count against the bytes that remain *before* allocating, so a malicious
//! header cannot make it allocate more than a small multiple of the input size; it checks every
//! tensor's shape, alignment and byte range (within the input, no overlaps, unique names); and every
//! error names the metadata key or tensor at fault. It never panics on any input.
//!
//! The code follows the file's structure: `reader.rs` is the bounds-checked byte cursor,
//! `parse.rs` reads the header one function per part, `metadata.rs` holds the value types and the
//! typed getters, `writer.rs` builds files.

mod metadata;
mod parse;
mod reader;
mod writer;

pub use metadata::MetaValue;
pub use parse::parse;
pub use writer::GgufWriter;

use metadata::T_U8;

use crate::error::{Error, Result};
use crate::format::Format;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The four magic bytes at the start of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: u32 = 4;

/// A parsed GGUF header: metadata and tensor infos, with absolute data offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    /// File format version (2 or 3).
    pub version: u32,
    /// Alignment of the data section and of every tensor (`general.alignment`, default 32).
    pub alignment: u64,
    /// Metadata key/value pairs in file order; keys are unique.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset of the data section (header end rounded up to `alignment`).
    pub data_offset: u64,
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, unique in the file.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (innermost). 1 to 4 entries, all > 0.
    pub dims: Vec<u64>,
    /// The ggml type id as stored.
    pub ggml_type: u32,
    /// The format for `ggml_type`, when we support it.
    pub format: Option<Format>,
    /// Absolute file offset of the first byte of the tensor's data.
    pub offset: u64,
    /// Size of the tensor's data in bytes, when the format is known.
    pub size: Option<u64>,
}

impl TensorInfo {
    /// Number of elements (product of `dims`; checked at parse time not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Bytes of a tensor of `format` with `dims` (ggml order), or an error naming `name` when the row
/// length is not whole blocks or the size overflows.
pub fn tensor_size(format: Format, dims: &[u64], name: &str) -> Result<u64> {
    let field = || format!("tensor '{name}'");
    let (&cols, outer) = dims
        .split_first()
        .ok_or_else(|| Error::invalid(field(), "tensor has no dimensions"))?;
    let overflow = || Error::invalid(field(), format!("byte size of shape {dims:?} overflows"));
    // Every dimension past the first multiplies the row count.
    let rows = outer
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let cols = usize::try_from(cols).map_err(|_| overflow())?;
    let rows = usize::try_from(rows).map_err(|_| overflow())?;
    let bytes = format.tensor_bytes(cols, rows, name)?;
    u64::try_from(bytes).map_err(|_| overflow())
}

/// Product of `dims`, or `None` when it overflows ggml's `i64` element count.
pub(crate) fn element_count(dims: &[u64]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    x.checked_add(mask).map(|v| v & !mask)
}

impl Gguf {
    /// The tensor info named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of tensor `t` inside `file` (the same bytes given to [`parse`]), bounds-checked.
    /// An error if the tensor's ggml type is not one we support.
    pub fn tensor_data<'a>(&self, file: &'a [u8], t: &TensorInfo) -> Result<&'a [u8]> {
        let (Some(_), Some(size)) = (t.format, t.size) else {
            return Err(Error::UnsupportedFormat {
                tensor: t.name.clone(),
                format: format!("ggml type {}", t.ggml_type),
            });
        };
        let end = t.offset.saturating_add(size);
        let range = usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(end).ok());
        range.and_then(|(s, e)| file.get(s..e)).ok_or_else(|| {
            Error::truncated(format!("tensor '{}' data", t.name), end, file.len() as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn tensor_size_checks_blocks_and_overflow() {
        assert_eq!(tensor_size(Format::F32, &[4, 3], "t").unwrap(), 48);
        assert_eq!(
            tensor_size(Format::Q4_0, &[64, 2], "t").unwrap(),
            2 * 2 * 18
        );
        assert!(matches!(
            tensor_size(Format::Q4_0, &[33], "t"),
            Err(Error::Invalid { .. })
        ));
        assert!(tensor_size(Format::F32, &[u64::MAX, 2], "t").is_err());
    }
}
