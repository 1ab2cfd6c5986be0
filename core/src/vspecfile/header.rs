//! The JSON header's types: the tokenizer, the tensor table and the name/size rules both the
//! reader and the writer apply to it.

use super::{to_usize, ALIGNMENT, MAX_DIMS};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::model::ModelConfig;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

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
pub(super) struct HeaderOut<'a> {
    pub(super) config: &'a ModelConfig,
    pub(super) metadata: &'a BTreeMap<String, String>,
    pub(super) tensors: &'a [TensorEntry],
    pub(super) tokenizer: &'a TokenizerParts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTensor {
    pub(super) name: String,
    pub(super) format: String,
    pub(super) dims: Vec<u64>,
    pub(super) offset: u64,
    pub(super) bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderIn {
    pub(super) config: ModelConfig,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) tensors: Vec<RawTensor>,
    pub(super) tokenizer: TokenizerParts,
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
pub(super) fn validate_tensors(
    tensors: &[TensorEntry],
    data_len: u64,
) -> Result<BTreeMap<String, usize>> {
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
