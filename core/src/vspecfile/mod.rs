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

mod checksum;
mod header;
mod read;
mod write;

pub use checksum::{checksum, combine_checksum, verify_checksum, xxh64, Xxh64};
pub use header::{format_from_name, format_name, tensor_bytes, TensorEntry, TokenizerParts};
pub use read::{frame, parse, Frame, VspecFile};
pub use write::{
    align_up, encode_header, min_data_offset, preamble, to_bytes, trailer, TensorPlacer,
};

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;

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

/// `v` as a `usize`, or an error naming `what` on targets where it does not fit.
fn to_usize(v: u64, what: &dyn Fn() -> String) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(what(), format!("{v} does not fit in memory")))
}
