//! [`GgufWriter`]: builds a GGUF v3 file in memory (for tests and converters).

use super::{
    align_up, element_count, tensor_size, MetaValue, ALIGNMENT_KEY, DEFAULT_ALIGNMENT,
    MAX_ARRAY_DEPTH, MAX_DIMS,
};
use crate::error::{Error, Result};
use crate::format::Format;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Builds a GGUF v3 file in memory. Tensor data is borrowed until [`GgufWriter::finish`], which
/// allocates the output once.
///
/// Every file it produces parses with [`super::parse`]: keys and tensor names are unique, arrays
/// are homogeneous, and each tensor's data matches its shape and format.
#[derive(Debug, Clone)]
pub struct GgufWriter<'a> {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

#[derive(Debug, Clone)]
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    format: Format,
    data: &'a [u8],
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty writer with the default alignment of 32 bytes.
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// An empty writer with another alignment (a power of two that fits in a `u32`); the file
    /// then carries `general.alignment`.
    pub fn with_alignment(alignment: u64) -> Result<Self> {
        if alignment == 0 || !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(Error::invalid(
                "GGUF writer alignment",
                format!("{alignment} is not a power of two that fits in a u32"),
            ));
        }
        Ok(GgufWriter {
            alignment,
            ..Self::new()
        })
    }

    /// Add a metadata key/value pair (checked in [`GgufWriter::finish`]).
    pub fn add_meta(&mut self, key: impl Into<String>, value: MetaValue) {
        self.metadata.push((key.into(), value));
    }

    /// Add a tensor. `dims` is in ggml order (`dims[0]` is the row length), 1 to 4 entries, all
    /// > 0; `data` must be exactly the tensor's size in `format`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        format: Format,
        data: &'a [u8],
    ) -> Result<()> {
        let name = name.into();
        let field = || format!("tensor '{name}'");
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(Error::invalid(
                field(),
                format!("{} dimensions (must be 1 to {MAX_DIMS})", dims.len()),
            ));
        }
        if dims.contains(&0) {
            return Err(Error::invalid(field(), "a dimension is 0"));
        }
        if element_count(dims).is_none() {
            return Err(Error::invalid(
                field(),
                format!("element count of shape {dims:?} overflows"),
            ));
        }
        if format.ggml_type().is_none() {
            return Err(Error::invalid(
                field(),
                format!(
                    "{} has no ggml type id, so GGUF cannot hold it",
                    format.name()
                ),
            ));
        }
        let size = tensor_size(format, dims, &name)?;
        if size != data.len() as u64 {
            return Err(Error::invalid(
                field(),
                format!(
                    "data is {} bytes but shape {dims:?} in {} needs {size}",
                    data.len(),
                    format.name()
                ),
            ));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::invalid(field(), "duplicate tensor name"));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            format,
            data,
        });
        Ok(())
    }

    /// Serialize: header, key/value pairs, tensor infos, padding to the alignment, then each
    /// tensor's data padded to the alignment.
    pub fn finish(self) -> Result<Vec<u8>> {
        let mut metadata = self.metadata;
        let mut seen = BTreeSet::new();
        for (k, v) in &metadata {
            if !seen.insert(k.as_str()) {
                return Err(Error::invalid(
                    format!("metadata key '{k}'"),
                    "duplicate key",
                ));
            }
            check_value(k, v, 0)?;
            if k == ALIGNMENT_KEY && v.as_int() != Some(i128::from(self.alignment)) {
                return Err(Error::invalid(
                    format!("metadata key '{k}'"),
                    format!(
                        "{v:?} differs from the writer's alignment {}; use GgufWriter::with_alignment",
                        self.alignment
                    ),
                ));
            }
        }
        if self.alignment != DEFAULT_ALIGNMENT && !seen.contains(ALIGNMENT_KEY) {
            metadata.push((
                String::from(ALIGNMENT_KEY),
                MetaValue::U32(self.alignment as u32),
            ));
        }

        // Relative data offsets and the total size, all checked.
        let overflow = || Error::invalid("GGUF writer", "file size overflows");
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut data_len = 0u64;
        for t in &self.tensors {
            offsets.push(data_len);
            data_len = data_len
                .checked_add(t.data.len() as u64)
                .and_then(|x| align_up(x, self.alignment))
                .ok_or_else(overflow)?;
        }

        let mut out = Vec::new();
        out.extend_from_slice(&super::MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in &metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            write_value(&mut out, v);
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            // add_tensor only accepts formats with a ggml id.
            let ggml_type = t.format.ggml_type().unwrap_or(u32::MAX);
            out.extend_from_slice(&ggml_type.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        let data_offset = align_up(out.len() as u64, self.alignment).ok_or_else(overflow)?;
        let total = data_offset.checked_add(data_len).ok_or_else(overflow)?;
        let total = usize::try_from(total).map_err(|_| overflow())?;
        out.reserve_exact(total - out.len());
        out.resize(data_offset as usize, 0);
        for t in &self.tensors {
            out.extend_from_slice(t.data);
            let padded = align_up(out.len() as u64, self.alignment).ok_or_else(overflow)?;
            out.resize(padded as usize, 0);
        }
        Ok(out)
    }
}

/// Reject values the parser would refuse: mixed-type arrays and over-deep nesting.
fn check_value(key: &str, v: &MetaValue, depth: u32) -> Result<()> {
    if let MetaValue::Array(items) = v {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::invalid(
                format!("metadata key '{key}'"),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        if let Some(first) = items.first() {
            let ty = first.type_id();
            for (i, item) in items.iter().enumerate() {
                if item.type_id() != ty {
                    return Err(Error::invalid(
                        format!("metadata key '{key}'[{i}]"),
                        format!(
                            "array mixes {} and {} elements",
                            first.type_name(),
                            item.type_name()
                        ),
                    ));
                }
                check_value(key, item, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::Str(s) => write_str(out, s),
        MetaValue::Array(items) => {
            // An empty array is written as an array of u8; it parses back as an empty array.
            let ty = items.first().map_or(super::T_U8, MetaValue::type_id);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}
