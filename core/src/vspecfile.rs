//! The `.vspec` model file: Vspec's own versioned, self-describing, memory-mappable container.
//!
//! One file holds everything needed to run a model: the [`ModelConfig`], the tokenizer
//! ([`TokenizerParts`]), free-form metadata (source file, converter version, recipe, ...) and the
//! weights, each tensor stored in its [`Format`] at a 64-byte aligned offset so a loader can bind
//! it zero-copy from a memory map.
//!
//! # Layout (versions 1 and 2, all integers little-endian)
//!
//! ```text
//! offset  size         field
//! 0       8            magic  "VSPEC\0\r\n"   (NUL: not text; CR LF: catches line-ending mangling)
//! 8       4            u32 format version = 2 (1 is still read)
//! 12      4            u32 flags = 0          (no flags are defined; any set bit is an error)
//! 16      8            u64 header_len         (bytes of the JSON header)
//! 24      8            u64 data_offset        (start of the data section; a multiple of 64,
//!                                              ≥ 40 + header_len)
//! 32      8            u64 data_len           (bytes of the data section)
//! 40      header_len   header: UTF-8 JSON, see below
//! ...                  zero bytes up to data_offset
//! data_offset data_len tensor data; each tensor at data_offset + its `offset` (a multiple of 64),
//!                      zero bytes between tensors; the section ends where the last tensor ends
//! end-16  8            u64 checksum (see below)
//! end-8   8            end magic "VSPECEND"
//! ```
//!
//! The file is exactly `data_offset + data_len + 16` bytes long.
//!
//! The header is one JSON object:
//!
//! ```json
//! {"config":    { ModelConfig, as serde writes it },
//!  "metadata":  {"source": "...", "converter": "...", ...},          (string → string)
//!  "tensors":   [{"name": "blk.0.attn_q.weight", "format": "Q4_K",    (Format's serde name)
//!                 "dims": [576, 576],                                  (GGUF order: dims[0] = row length)
//!                 "offset": 0, "bytes": 186624}, ...],                 (offset relative to data_offset)
//!  "tokenizer": {"json_deflate": "<the tokenizers-crate JSON, raw deflate, base64>",
//!                ("json": "<the same JSON as a plain string>" in version 1 files; a reader
//!                 takes either key, never both),
//!                "vocab_size": 49152,
//!                "bos_id": 1, "bos_token": "<|im_start|>", "eos_id": 2, "eos_token": "<|im_end|>",
//!                "eos_ids": [2, 0], "add_bos": false, "chat_template": "...",
//!                "byte_level": true, "special_ids": [0, 1, 2], "token_bytes": [[id, [bytes]], ...]}}
//! ```
//!
//! Unknown keys are errors (a newer writer must bump the version), except inside `metadata`.
//!
//! # Checksum
//!
//! XXH64 ([`Xxh64`], the standard algorithm, checked against libxxhash's values) in two steps, so
//! the writer can hash the data while streaming it and write the header last:
//!
//! ```text
//! checksum = XXH64(seed = XXH64(seed = 0, bytes[data_offset .. data_offset + data_len]),
//!                  bytes[0 .. data_offset])
//! ```
//!
//! It covers the preamble, header, padding and data; only the 16-byte trailer is outside it.
//!
//! # Reading
//!
//! [`parse`] validates the whole structure without reading tensor data: magic, version, flags,
//! every length with checked arithmetic, the JSON, each tensor's format (known), dims, byte size
//! (equal to what the format needs), alignment, range (inside the data section), overlaps and
//! name uniqueness, the config ([`ModelConfig::validate`]) and the tokenizer's ids.
//! [`verify_checksum`] reads every byte and is separate; loaders call it once at open.
//!
//! # Writing
//!
//! The pure parts live here ([`encode_header`], [`preamble`], [`trailer`], [`TensorPlacer`],
//! [`Xxh64`]); `vspec_host::vspecfile` does the file I/O.

use crate::error::{Error, Result};
use crate::format::Format;
use crate::model::ModelConfig;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The eight bytes every `.vspec` file starts with.
pub const MAGIC: [u8; 8] = *b"VSPEC\0\r\n";
/// The eight bytes every `.vspec` file ends with.
pub const END_MAGIC: [u8; 8] = *b"VSPECEND";
/// The format version this build writes (2: the tokenizer JSON is compressed).
pub const VERSION: u32 = 2;
/// The oldest version this build reads (1: the tokenizer JSON is a plain string).
pub const MIN_VERSION: u32 = 1;
/// Bytes before the JSON header: magic, version, flags, header_len, data_offset, data_len.
pub const PREAMBLE_BYTES: usize = 40;
/// Bytes after the data section: checksum and end magic.
pub const TRAILER_BYTES: usize = 16;
/// Alignment of the data section and of every tensor in it.
pub const ALIGNMENT: u64 = 64;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 4;

/// Everything needed to rebuild a tokenizer (`vspec_host::tokenizer::Tokenizer`), stored in the
/// header's `"tokenizer"` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TokenizerWire", into = "TokenizerWire")]
pub struct TokenizerParts {
    /// The `tokenizers` crate's JSON serialization of the pipeline (model, pre-tokenizer,
    /// decoder, added tokens).
    pub json: String,
    /// Number of token ids, added tokens included.
    pub vocab_size: u32,
    /// BOS id, if the model has one.
    pub bos_id: Option<u32>,
    /// BOS token text, as the vocabulary spells it.
    pub bos_token: Option<String>,
    /// EOS id, if the model has one.
    pub eos_id: Option<u32>,
    /// EOS token text.
    pub eos_token: Option<String>,
    /// Ids that end a generation (EOS first, then end-of-turn tokens).
    pub eos_ids: Vec<u32>,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// The Jinja chat template, if any.
    pub chat_template: Option<String>,
    /// Whether the vocabulary is byte-level (each id maps to exact bytes).
    pub byte_level: bool,
    /// Ids of control/special tokens, ascending.
    pub special_ids: Vec<u32>,
    /// Exact bytes of the ids whose bytes differ from what the pipeline derives (usually none).
    pub token_bytes: Vec<(u32, Vec<u8>)>,
}

/// [`TokenizerParts`] as the header stores it: the pipeline JSON raw-deflated and base64-encoded
/// (`json_deflate`, version 2: the JSON-escaped string was most of a small model's header, 1.85 of
/// SmolLM2's 1.89 MB; compressed it is 0.74 MB), or as a plain string (`json`, version 1).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizerWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json_deflate: Option<String>,
    vocab_size: u32,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_id: Option<u32>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
    byte_level: bool,
    special_ids: Vec<u32>,
    token_bytes: Vec<(u32, Vec<u8>)>,
}

/// The most bytes `json_deflate` may inflate to (a guard against decompression bombs; the
/// largest real tokenizers are around 10 MB).
const MAX_TOKENIZER_JSON: usize = 64 << 20;

/// Inflates a `json_deflate` field into at most `limit` bytes of UTF-8.
fn inflate_tokenizer_json(packed: &str, limit: usize) -> core::result::Result<String, String> {
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packed)
        .map_err(|e| format!("tokenizer.json_deflate: not base64: {e}"))?;
    let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(&bytes, limit).map_err(|e| {
        format!(
            "tokenizer.json_deflate: cannot inflate within {limit} bytes: {:?}",
            e.status
        )
    })?;
    String::from_utf8(raw).map_err(|_| String::from("tokenizer.json_deflate: not UTF-8"))
}

impl From<TokenizerParts> for TokenizerWire {
    fn from(t: TokenizerParts) -> Self {
        let packed = miniz_oxide::deflate::compress_to_vec(t.json.as_bytes(), 9);
        TokenizerWire {
            json: None,
            json_deflate: Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                packed,
            )),
            vocab_size: t.vocab_size,
            bos_id: t.bos_id,
            bos_token: t.bos_token,
            eos_id: t.eos_id,
            eos_token: t.eos_token,
            eos_ids: t.eos_ids,
            add_bos: t.add_bos,
            chat_template: t.chat_template,
            byte_level: t.byte_level,
            special_ids: t.special_ids,
            token_bytes: t.token_bytes,
        }
    }
}

impl TryFrom<TokenizerWire> for TokenizerParts {
    type Error = String;

    fn try_from(w: TokenizerWire) -> core::result::Result<Self, String> {
        let json = match (w.json, w.json_deflate) {
            (Some(j), None) => j,
            (None, Some(packed)) => inflate_tokenizer_json(&packed, MAX_TOKENIZER_JSON)?,
            _ => {
                return Err(String::from(
                    "tokenizer: exactly one of 'json' and 'json_deflate' must be present",
                ))
            }
        };
        Ok(TokenizerParts {
            json,
            vocab_size: w.vocab_size,
            bos_id: w.bos_id,
            bos_token: w.bos_token,
            eos_id: w.eos_id,
            eos_token: w.eos_token,
            eos_ids: w.eos_ids,
            add_bos: w.add_bos,
            chat_template: w.chat_template,
            byte_level: w.byte_level,
            special_ids: w.special_ids,
            token_bytes: w.token_bytes,
        })
    }
}

impl TokenizerParts {
    /// Checks every id is inside the vocabulary.
    pub fn validate(&self) -> Result<()> {
        let n = self.vocab_size;
        if n == 0 {
            return Err(Error::invalid("tokenizer.vocab_size", "is zero"));
        }
        let check = |field: &str, id: u32| {
            if id < n {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("tokenizer.{field}"),
                    format!("id {id} is outside the vocabulary of {n} tokens"),
                ))
            }
        };
        if let Some(id) = self.bos_id {
            check("bos_id", id)?;
        }
        if let Some(id) = self.eos_id {
            check("eos_id", id)?;
        }
        for &id in &self.eos_ids {
            check("eos_ids", id)?;
        }
        for &id in &self.special_ids {
            check("special_ids", id)?;
        }
        for (id, _) in &self.token_bytes {
            check("token_bytes", *id)?;
        }
        if self.json.is_empty() {
            return Err(Error::invalid("tokenizer.json", "is empty"));
        }
        Ok(())
    }
}

/// One tensor of the data section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorEntry {
    /// Name (GGUF naming), unique in the file.
    pub name: String,
    /// Storage format.
    pub format: Format,
    /// Dimensions in GGUF order: `dims[0]` is the row length. 1 to 4 entries, all > 0.
    pub dims: Vec<u64>,
    /// Offset of the first byte, relative to the data section; a multiple of 64.
    pub offset: u64,
    /// Bytes of data, exactly what `format` needs for `dims`.
    pub bytes: u64,
}

impl TensorEntry {
    /// Number of weights (product of `dims`; checked at parse time not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The header as serialized (key order = field order).
#[derive(Serialize)]
struct HeaderOut<'a> {
    config: &'a ModelConfig,
    metadata: &'a BTreeMap<String, String>,
    tensors: &'a [TensorEntry],
    tokenizer: &'a TokenizerParts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    name: String,
    format: String,
    dims: Vec<u64>,
    offset: u64,
    bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn {
    config: ModelConfig,
    metadata: BTreeMap<String, String>,
    tensors: Vec<RawTensor>,
    tokenizer: TokenizerParts,
}

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

fn to_usize(v: u64, what: &dyn Fn() -> String) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(what(), format!("{v} does not fit in memory")))
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

/// The format whose serde name is `name` (`"Q4_K"`), if this build knows it.
pub fn format_from_name(name: &str) -> Option<Format> {
    serde_json::from_value(serde_json::Value::String(String::from(name))).ok()
}

/// The serde name of `format`, as the header stores it.
pub fn format_name(format: Format) -> String {
    match serde_json::to_value(format) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from(format.name()),
    }
}

/// Bytes `format` needs for `dims` (GGUF order), validating the dims (1 to 4, all > 0, whole
/// blocks per row, no overflow).
pub fn tensor_bytes(format: Format, dims: &[u64], name: &str) -> Result<u64> {
    let field = || format!("tensor '{name}'");
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(Error::invalid(
            field(),
            format!("{} dimensions (1 to {MAX_DIMS} allowed)", dims.len()),
        ));
    }
    if dims.contains(&0) {
        return Err(Error::invalid(
            field(),
            format!("shape {dims:?} has a zero dimension"),
        ));
    }
    let mut rows: u64 = 1;
    for &d in &dims[1..] {
        rows = rows
            .checked_mul(d)
            .ok_or_else(|| Error::invalid(field(), format!("shape {dims:?} overflows")))?;
    }
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid(field(), format!("shape {dims:?} overflows")))?;
    let cols = to_usize(dims[0], &field)?;
    let rows = to_usize(rows, &field)?;
    let b = format.tensor_bytes(cols, rows, name)?;
    u64::try_from(b).map_err(|_| Error::invalid(field(), "size overflows"))
}

/// Checks each tensor (name, dims, size, alignment, range within `data_len`), name uniqueness,
/// overlaps, and that the data section ends where the last tensor ends. Returns the name index.
fn validate_tensors(tensors: &[TensorEntry], data_len: u64) -> Result<BTreeMap<String, usize>> {
    let mut index = BTreeMap::new();
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let field = || format!("tensor '{}'", t.name);
        if t.name.is_empty() {
            return Err(Error::invalid(format!("tensor #{i}"), "empty name"));
        }
        if index.insert(t.name.clone(), i).is_some() {
            return Err(Error::invalid(field(), "name appears more than once"));
        }
        let need = tensor_bytes(t.format, &t.dims, &t.name)?;
        if t.bytes != need {
            return Err(Error::invalid(
                field(),
                format!(
                    "{} bytes stored, but {} {:?} needs {need}",
                    t.bytes,
                    format_name(t.format),
                    t.dims
                ),
            ));
        }
        if !t.offset.is_multiple_of(ALIGNMENT) {
            return Err(Error::invalid(
                field(),
                format!("offset {} is not a multiple of {ALIGNMENT}", t.offset),
            ));
        }
        let end = t
            .offset
            .checked_add(t.bytes)
            .ok_or_else(|| Error::invalid(field(), "end offset overflows"))?;
        if end > data_len {
            return Err(Error::invalid(
                field(),
                format!(
                    "bytes {}..{end} run past the data section ({data_len} bytes)",
                    t.offset
                ),
            ));
        }
        ranges.push((t.offset, end, i));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            return Err(Error::invalid(
                format!("tensor '{}'", tensors[b].name),
                format!("overlaps tensor '{}'", tensors[a].name),
            ));
        }
    }
    let last_end = ranges.last().map_or(0, |r| r.1);
    if last_end != data_len {
        return Err(Error::invalid(
            "vspec data section",
            format!("{data_len} bytes, but the last tensor ends at {last_end}"),
        ));
    }
    Ok(index)
}

/// Checks the stored checksum against one computed over the file (reads every byte). The error
/// is `Invalid { field: "checksum", reason: "stored X, computed Y: the file is corrupt" }`.
pub fn verify_checksum(bytes: &[u8]) -> Result<()> {
    let fr = frame(bytes)?;
    let what = || String::from("vspec data section");
    let d0 = to_usize(fr.data_offset, &what)?;
    let d1 = to_usize(fr.data_offset + fr.data_len, &what)?;
    let computed = checksum(&bytes[..d0], &bytes[d0..d1]);
    if computed != fr.checksum {
        return Err(Error::invalid(
            "checksum",
            format!(
                "stored {:#018x}, computed {computed:#018x}: the file is corrupt",
                fr.checksum
            ),
        ));
    }
    Ok(())
}

/// The file checksum from the bytes before the data section and the data section.
pub fn checksum(head: &[u8], data: &[u8]) -> u64 {
    combine_checksum(head, xxh64(data, 0))
}

/// The file checksum from the bytes before the data section and the data section's XXH64
/// (seed 0), for writers that hashed the data while streaming it.
pub fn combine_checksum(head: &[u8], data_hash: u64) -> u64 {
    xxh64(head, data_hash)
}

// ---------------------------------------------------------------------------------------------
// Writing (pure parts)

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

// ---------------------------------------------------------------------------------------------
// XXH64

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline(always)]
fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

#[inline(always)]
fn merge_round(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Streaming XXH64 (Yann Collet's xxHash, 64-bit variant): four independent lanes of
/// multiply-rotate over 32-byte stripes, then a merge and an avalanche. Pure and deterministic
/// on every platform; matches libxxhash's `XXH64` bit for bit.
#[derive(Debug, Clone)]
pub struct Xxh64 {
    seed: u64,
    v: [u64; 4],
    total: u64,
    buf: [u8; 32],
    buf_len: usize,
}

impl Xxh64 {
    /// A hasher with `seed`.
    pub fn new(seed: u64) -> Self {
        Xxh64 {
            seed,
            v: [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ],
            total: 0,
            buf: [0; 32],
            buf_len: 0,
        }
    }

    #[inline(always)]
    fn stripe(v: &mut [u64; 4], s: &[u8; 32]) {
        // Fixed-size array: the compiler proves every index in range (no checks in the loop).
        for (i, lane) in v.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[i * 8..i * 8 + 8]);
            *lane = round(*lane, u64::from_le_bytes(w));
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let buf = self.buf;
            Self::stripe(&mut self.v, &buf);
            self.buf_len = 0;
        }
        let mut v = self.v;
        let mut chunks = data.chunks_exact(32);
        for s in &mut chunks {
            if let Ok(s) = <&[u8; 32]>::try_from(s) {
                Self::stripe(&mut v, s);
            }
        }
        self.v = v;
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// The hash of everything added so far.
    pub fn digest(&self) -> u64 {
        let [v1, v2, v3, v4] = self.v;
        let mut h = if self.total >= 32 {
            let mut h = v1
                .rotate_left(1)
                .wrapping_add(v2.rotate_left(7))
                .wrapping_add(v3.rotate_left(12))
                .wrapping_add(v4.rotate_left(18));
            h = merge_round(h, v1);
            h = merge_round(h, v2);
            h = merge_round(h, v3);
            merge_round(h, v4)
        } else {
            self.seed.wrapping_add(P5)
        };
        h = h.wrapping_add(self.total);
        let mut rest = &self.buf[..self.buf_len];
        while rest.len() >= 8 {
            h ^= round(0, le64(rest));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&rest[..4]);
            h ^= u64::from(u32::from_le_bytes(a)).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            rest = &rest[4..];
        }
        for &b in rest {
            h ^= u64::from(b).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// XXH64 of `data` with `seed`.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let mut h = Xxh64::new(seed);
    h.update(data);
    h.digest()
}

#[cfg(test)]
mod tokenizer_wire_tests {
    use super::*;

    #[test]
    fn inflating_stops_at_the_limit() {
        // 1 MiB of spaces deflates to about a kilobyte.
        let big = alloc::vec![b' '; 1 << 20];
        let packed = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            miniz_oxide::deflate::compress_to_vec(&big, 9),
        );
        assert!(packed.len() < 8 << 10);
        assert_eq!(
            inflate_tokenizer_json(&packed, 1 << 20).unwrap().len(),
            1 << 20
        );
        let e = inflate_tokenizer_json(&packed, 64 << 10).unwrap_err();
        assert!(e.contains("cannot inflate within 65536 bytes"), "{e}");
    }
}
