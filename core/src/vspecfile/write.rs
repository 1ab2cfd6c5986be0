//! Writing, the pure parts: tensor placement, the header, preamble and trailer. The file I/O is
//! `vspec_host::vspecfile`'s.

use super::checksum::checksum;
use super::header::{format_name, tensor_bytes, validate_tensors, HeaderIn, HeaderOut};
use super::header::{TensorEntry, TokenizerParts};
use super::{ALIGNMENT, END_MAGIC, MAGIC, PREAMBLE_BYTES, TRAILER_BYTES, VERSION};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::model::ModelConfig;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// `n` rounded up to [`ALIGNMENT`].
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1)
        .map(|x| x / ALIGNMENT * ALIGNMENT)
}

/// Lays tensors out in the data section one after another, each at the next 64-aligned offset,
/// validating each as it comes. Writers stream: [`TensorPlacer::place`] says how many zero bytes
/// of padding to write before the tensor's data.
#[derive(Debug, Default, Clone)]
pub struct TensorPlacer {
    entries: Vec<TensorEntry>,
    names: BTreeSet<String>,
    end: u64,
}

impl TensorPlacer {
    /// An empty data section.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor of `data_len` bytes; checks the name is new and non-empty and that
    /// `data_len` is what `format` needs for `dims`. Returns the padding to write first.
    pub fn place(
        &mut self,
        name: &str,
        format: Format,
        dims: &[u64],
        data_len: u64,
    ) -> Result<u64> {
        if name.is_empty() {
            return Err(Error::invalid(
                format!("tensor #{}", self.entries.len()),
                "empty name",
            ));
        }
        if self.names.contains(name) {
            return Err(Error::invalid(
                format!("tensor '{name}'"),
                "name appears more than once",
            ));
        }
        let need = tensor_bytes(format, dims, name)?;
        if data_len != need {
            return Err(Error::invalid(
                format!("tensor '{name}'"),
                format!(
                    "{data_len} bytes given, but {} {dims:?} needs {need}",
                    format_name(format)
                ),
            ));
        }
        let offset =
            align_up(self.end).ok_or_else(|| Error::invalid("vspec data section", "overflows"))?;
        let end = offset
            .checked_add(need)
            .ok_or_else(|| Error::invalid("vspec data section", "overflows"))?;
        let pad = offset - self.end;
        self.names.insert(String::from(name));
        self.entries.push(TensorEntry {
            name: String::from(name),
            format,
            dims: dims.to_vec(),
            offset,
            bytes: need,
        });
        self.end = end;
        Ok(pad)
    }

    /// Bytes of the data section so far.
    pub fn data_len(&self) -> u64 {
        self.end
    }

    /// The tensors placed so far.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }
}

/// The JSON header for these parts, validated as [`parse`] would validate it (so a writer never
/// produces a file that does not load).
pub fn encode_header(
    config: &ModelConfig,
    tokenizer: &TokenizerParts,
    metadata: &BTreeMap<String, String>,
    tensors: &[TensorEntry],
    data_len: u64,
) -> Result<Vec<u8>> {
    config.validate()?;
    tokenizer.validate()?;
    validate_tensors(tensors, data_len)?;
    let out = HeaderOut {
        config,
        metadata,
        tensors,
        tokenizer,
    };
    let json = serde_json::to_vec(&out)
        .map_err(|e| Error::invalid("vspec header", format!("cannot serialize: {e}")))?;
    // Floats must survive the text round trip exactly (the loader compares nothing, so check here).
    let back: HeaderIn = serde_json::from_slice(&json)
        .map_err(|e| Error::invalid("vspec header", format!("does not parse back: {e}")))?;
    if back.config != *config || back.tokenizer != *tokenizer || back.metadata != *metadata {
        return Err(Error::invalid(
            "vspec header",
            "does not survive a JSON round trip",
        ));
    }
    Ok(json)
}

/// The 40-byte preamble.
pub fn preamble(header_len: u64, data_offset: u64, data_len: u64) -> [u8; PREAMBLE_BYTES] {
    let mut p = [0u8; PREAMBLE_BYTES];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&VERSION.to_le_bytes());
    p[12..16].copy_from_slice(&0u32.to_le_bytes());
    p[16..24].copy_from_slice(&header_len.to_le_bytes());
    p[24..32].copy_from_slice(&data_offset.to_le_bytes());
    p[32..40].copy_from_slice(&data_len.to_le_bytes());
    p
}

/// The 16-byte trailer.
pub fn trailer(checksum: u64) -> [u8; TRAILER_BYTES] {
    let mut t = [0u8; TRAILER_BYTES];
    t[..8].copy_from_slice(&checksum.to_le_bytes());
    t[8..].copy_from_slice(&END_MAGIC);
    t
}

/// The smallest valid data offset after a header of `header_len` bytes.
pub fn min_data_offset(header_len: u64) -> Option<u64> {
    (PREAMBLE_BYTES as u64)
        .checked_add(header_len)
        .and_then(align_up)
}

/// A whole file in memory (for tests and small models): preamble, header, padding, data,
/// trailer. `tensors` are `(name, format, dims, data)`.
pub fn to_bytes(
    config: &ModelConfig,
    tokenizer: &TokenizerParts,
    metadata: &BTreeMap<String, String>,
    tensors: &[(&str, Format, &[u64], &[u8])],
) -> Result<Vec<u8>> {
    let mut placer = TensorPlacer::new();
    let mut data = Vec::new();
    for &(name, format, dims, bytes) in tensors {
        let pad = placer.place(name, format, dims, bytes.len() as u64)?;
        data.resize(data.len() + pad as usize, 0);
        data.extend_from_slice(bytes);
    }
    let header = encode_header(
        config,
        tokenizer,
        metadata,
        placer.entries(),
        placer.data_len(),
    )?;
    let data_offset = min_data_offset(header.len() as u64)
        .ok_or_else(|| Error::invalid("vspec header", "too long"))?;
    let mut out = Vec::with_capacity(data_offset as usize + data.len() + TRAILER_BYTES);
    out.extend_from_slice(&preamble(
        header.len() as u64,
        data_offset,
        data.len() as u64,
    ));
    out.extend_from_slice(&header);
    out.resize(data_offset as usize, 0);
    let sum = checksum(&out, &data);
    out.extend_from_slice(&data);
    out.extend_from_slice(&trailer(sum));
    Ok(out)
}
