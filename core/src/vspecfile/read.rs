//! Reading: the fixed frame (preamble and trailer) and the whole-header parse.

use super::header::{format_from_name, validate_tensors, HeaderIn, TensorEntry, TokenizerParts};
use super::{
    to_usize, ALIGNMENT, END_MAGIC, MAGIC, MIN_VERSION, PREAMBLE_BYTES, TRAILER_BYTES, VERSION,
};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A parsed, validated `.vspec` file (the header; tensor data stays in the caller's bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct VspecFile {
    /// Format version (1).
    pub version: u32,
    /// Flags (0).
    pub flags: u32,
    /// Bytes of the JSON header.
    pub header_len: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Bytes of the data section.
    pub data_len: u64,
    /// The checksum stored in the trailer (checked by [`verify_checksum`], not by [`parse`]).
    pub checksum: u64,
    /// Model hyper-parameters.
    pub config: ModelConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerParts,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tensors in file order.
    pub tensors: Vec<TensorEntry>,
    index: BTreeMap<String, usize>,
}

impl VspecFile {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The bytes of `t` inside `bytes` (the whole file this header was parsed from).
    pub fn tensor_data<'a>(&self, bytes: &'a [u8], t: &TensorEntry) -> Result<&'a [u8]> {
        let what = || format!("tensor '{}'", t.name);
        let start = self
            .data_offset
            .checked_add(t.offset)
            .ok_or_else(|| Error::invalid(what(), "offset overflows"))?;
        let end = start
            .checked_add(t.bytes)
            .ok_or_else(|| Error::invalid(what(), "end overflows"))?;
        let have = bytes.len() as u64;
        if end > have {
            return Err(Error::truncated(what(), end, have));
        }
        let (s, e) = (to_usize(start, &what)?, to_usize(end, &what)?);
        bytes
            .get(s..e)
            .ok_or_else(|| Error::truncated(what(), end, have))
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The fixed-size parts of a file, validated against its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Format version.
    pub version: u32,
    /// Flags.
    pub flags: u32,
    /// Bytes of the JSON header (starting at [`PREAMBLE_BYTES`]).
    pub header_len: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Bytes of the data section.
    pub data_len: u64,
    /// Stored checksum.
    pub checksum: u64,
}

/// Reads and validates the preamble and trailer: magic, version, flags, lengths (checked
/// arithmetic, against `bytes.len()`), end magic. Touches only the first 40 and last 16 bytes.
pub fn frame(bytes: &[u8]) -> Result<Frame> {
    let have = bytes.len() as u64;
    if bytes.len() < MAGIC.len() {
        if MAGIC.starts_with(bytes) {
            return Err(Error::truncated("vspec magic", MAGIC.len() as u64, have));
        }
        return Err(Error::BadMagic { expected: "vspec" });
    }
    if bytes[..8] != MAGIC[..] {
        return Err(Error::BadMagic { expected: "vspec" });
    }
    if bytes.len() < PREAMBLE_BYTES {
        return Err(Error::truncated(
            "vspec preamble",
            PREAMBLE_BYTES as u64,
            have,
        ));
    }
    let version = u32_at(bytes, 8);
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(Error::invalid(
            "vspec version",
            format!(
                "version {version} is not supported (this build reads versions {MIN_VERSION} to {VERSION})"
            ),
        ));
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(Error::invalid(
            "vspec flags",
            format!(
                "{flags:#x} has bits this build does not know (version {VERSION} defines none)"
            ),
        ));
    }
    let header_len = u64_at(bytes, 16);
    let data_offset = u64_at(bytes, 24);
    let data_len = u64_at(bytes, 32);
    let header_end = (PREAMBLE_BYTES as u64)
        .checked_add(header_len)
        .ok_or_else(|| Error::invalid("vspec header_len", format!("{header_len} overflows")))?;
    if header_end > have {
        return Err(Error::truncated("vspec header", header_end, have));
    }
    if !data_offset.is_multiple_of(ALIGNMENT) || data_offset < header_end {
        return Err(Error::invalid(
            "vspec data_offset",
            format!(
                "{data_offset} must be a multiple of {ALIGNMENT} and at least the header end {header_end}"
            ),
        ));
    }
    let file_end = data_offset
        .checked_add(data_len)
        .and_then(|e| e.checked_add(TRAILER_BYTES as u64))
        .ok_or_else(|| Error::invalid("vspec data_len", format!("{data_len} overflows")))?;
    if file_end > have {
        return Err(Error::truncated(
            "vspec data section and trailer",
            file_end,
            have,
        ));
    }
    if file_end < have {
        return Err(Error::invalid(
            "vspec file length",
            format!(
                "{} bytes follow the trailer (file is {have} bytes, expected {file_end})",
                have - file_end
            ),
        ));
    }
    let t = bytes.len() - TRAILER_BYTES;
    if bytes[t + 8..] != END_MAGIC[..] {
        return Err(Error::invalid(
            "vspec end magic",
            "missing: the file is truncated or corrupt",
        ));
    }
    Ok(Frame {
        version,
        flags,
        header_len,
        data_offset,
        data_len,
        checksum: u64_at(bytes, t),
    })
}

/// Parses and validates a whole `.vspec` file held in memory (see the module docs for what is
/// checked). Does not read tensor data or check the checksum ([`verify_checksum`] does).
pub fn parse(bytes: &[u8]) -> Result<VspecFile> {
    let fr = frame(bytes)?;
    let what = || String::from("vspec header");
    let hs = PREAMBLE_BYTES;
    let he = to_usize(fr.header_end(), &what)?;
    let json = bytes
        .get(hs..he)
        .ok_or_else(|| Error::truncated(what(), fr.header_end(), bytes.len() as u64))?;
    let raw: HeaderIn = serde_json::from_slice(json)
        .map_err(|e| Error::invalid("vspec header", format!("not valid JSON: {e}")))?;
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for t in raw.tensors {
        let format = format_from_name(&t.format).ok_or_else(|| Error::UnsupportedFormat {
            tensor: t.name.clone(),
            format: t.format.clone(),
        })?;
        tensors.push(TensorEntry {
            name: t.name,
            format,
            dims: t.dims,
            offset: t.offset,
            bytes: t.bytes,
        });
    }
    let index = validate_tensors(&tensors, fr.data_len)?;
    raw.config.validate()?;
    raw.tokenizer.validate()?;
    Ok(VspecFile {
        version: fr.version,
        flags: fr.flags,
        header_len: fr.header_len,
        data_offset: fr.data_offset,
        data_len: fr.data_len,
        checksum: fr.checksum,
        config: raw.config,
        tokenizer: raw.tokenizer,
        metadata: raw.metadata,
        tensors,
        index,
    })
}

impl Frame {
    /// Absolute offset just past the JSON header.
    pub fn header_end(&self) -> u64 {
        PREAMBLE_BYTES as u64 + self.header_len
    }
}
