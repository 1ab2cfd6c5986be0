//! safetensors header parser as a pure function over `&[u8]`.
//!
//! Layout: a `u64` little-endian header length `N`, then `N` bytes of UTF-8 JSON mapping each tensor
//! name to `{"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}` (offsets relative to the
//! data section, which starts right after the header) plus an optional `"__metadata__"`
//! string→string map, then the data.
//!
//! [`parse_header`] bounds the header length before reading it, and checks every tensor's dtype,
//! byte range (within the input, matching its shape, no overlaps) and name (unique); every error
//! names the tensor or field at fault. It never panics on any input.
//!
//! Not the `safetensors` crate (0.8; it does build no_std with `default-features = false,
//! features = ["alloc"]`): a malformed entry (missing or mistyped `dtype`, `shape` or
//! `data_offsets`, an unknown dtype, a negative dimension) comes back as serde's message with a
//! line and column but no tensor name; it refuses files whose tensors do not tile the data
//! section exactly (a zero-sized tensor inside another's range, bytes after the last tensor) and
//! reports overlaps and duplicate names only as "invalid offset"; and it returns tensors sorted
//! by offset, not in header order. Naming the tensor would mean parsing the JSON again here.

use crate::error::{Error, Result};
use crate::format::Format;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Largest JSON header accepted (100 MB, as the reference implementation).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The key of the free-form string→string metadata map.
pub const METADATA_KEY: &str = "__metadata__";

/// A safetensors element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum StDtype {
    /// Boolean, one byte.
    BOOL,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits and 2 mantissa bits.
    F8_E5M2,
    /// 8-bit float, 4 exponent bits and 3 mantissa bits.
    F8_E4M3,
    /// 8-bit exponent-only float (microscaling scales).
    F8_E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl StDtype {
    /// Every dtype, for tables and tests.
    pub const ALL: [StDtype; 16] = [
        StDtype::BOOL,
        StDtype::U8,
        StDtype::I8,
        StDtype::F8_E5M2,
        StDtype::F8_E4M3,
        StDtype::F8_E8M0,
        StDtype::I16,
        StDtype::U16,
        StDtype::F16,
        StDtype::BF16,
        StDtype::I32,
        StDtype::U32,
        StDtype::F32,
        StDtype::F64,
        StDtype::I64,
        StDtype::U64,
    ];

    /// The dtype for its name in a safetensors header ("F16", "BF16", ...), if we know it.
    pub fn from_name(name: &str) -> Option<StDtype> {
        StDtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The name as written in a safetensors header.
    pub fn name(self) -> &'static str {
        match self {
            StDtype::BOOL => "BOOL",
            StDtype::U8 => "U8",
            StDtype::I8 => "I8",
            StDtype::F8_E5M2 => "F8_E5M2",
            StDtype::F8_E4M3 => "F8_E4M3",
            StDtype::F8_E8M0 => "F8_E8M0",
            StDtype::I16 => "I16",
            StDtype::U16 => "U16",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::I32 => "I32",
            StDtype::U32 => "U32",
            StDtype::F32 => "F32",
            StDtype::F64 => "F64",
            StDtype::I64 => "I64",
            StDtype::U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            StDtype::BOOL
            | StDtype::U8
            | StDtype::I8
            | StDtype::F8_E5M2
            | StDtype::F8_E4M3
            | StDtype::F8_E8M0 => 1,
            StDtype::I16 | StDtype::U16 | StDtype::F16 | StDtype::BF16 => 2,
            StDtype::I32 | StDtype::U32 | StDtype::F32 => 4,
            StDtype::F64 | StDtype::I64 | StDtype::U64 => 8,
        }
    }

    /// The weight [`Format`] with the same bytes, for the float types that have one.
    pub fn format(self) -> Option<Format> {
        match self {
            StDtype::F32 => Some(Format::F32),
            StDtype::F16 => Some(Format::F16),
            StDtype::BF16 => Some(Format::BF16),
            _ => None,
        }
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTensor {
    /// Tensor name (unique in the file).
    pub name: String,
    /// Element type.
    pub dtype: StDtype,
    /// Shape, outermost first (PyTorch order: a `[rows, cols]` matrix stores rows contiguously).
    pub shape: Vec<u64>,
    /// Absolute file offset of the first data byte.
    pub start: u64,
    /// Absolute file offset one past the last data byte.
    pub end: u64,
}

impl StTensor {
    /// Size of the data in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the tensor holds no data (a dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A parsed safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Tensors in header (JSON) order.
    pub tensors: Vec<StTensor>,
    /// The `__metadata__` entries, sorted by key (empty when absent).
    pub metadata: Vec<(String, String)>,
    /// Absolute file offset of the data section (`8 + header length`).
    pub data_start: u64,
}

impl SafetensorsHeader {
    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&StTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of tensor `t` inside `file` (the bytes given to [`parse_header`]), bounds-checked.
    pub fn tensor_data<'a>(&self, file: &'a [u8], t: &StTensor) -> Result<&'a [u8]> {
        let range = usize::try_from(t.start)
            .ok()
            .zip(usize::try_from(t.end).ok());
        range.and_then(|(s, e)| file.get(s..e)).ok_or_else(|| {
            Error::truncated(
                format!("tensor '{}' data", t.name),
                t.end,
                file.len() as u64,
            )
        })
    }
}

/// The top-level JSON object as (key, value) pairs in file order, duplicates kept so they can be
/// reported (a `serde_json::Map` would silently keep the last one).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> core::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn tensor_field(name: &str) -> String {
    format!("tensor '{name}'")
}

/// Parse the header of a safetensors file held in memory.
///
/// `bytes` must hold the whole file: every tensor's data range is checked to lie within it.
pub fn parse_header(bytes: &[u8]) -> Result<SafetensorsHeader> {
    let have = bytes.len() as u64;
    if bytes.starts_with(b"GGUF") {
        return Err(Error::BadMagic {
            expected: "safetensors",
        });
    }
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::truncated("safetensors header length", 8, have))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(Error::invalid(
            "safetensors header length",
            format!("{n} bytes exceeds the limit of {MAX_HEADER_BYTES} (not a safetensors file?)"),
        ));
    }
    // n <= 100 MB, so 8 + n cannot overflow and fits in usize on every supported target.
    let data_start = 8 + n;
    let json = usize::try_from(data_start)
        .ok()
        .and_then(|end| bytes.get(8..end))
        .ok_or_else(|| Error::truncated("safetensors header", data_start, have))?;
    let json = core::str::from_utf8(json).map_err(|e| {
        Error::invalid(
            "safetensors header",
            format!("JSON is not valid UTF-8: {e}"),
        )
    })?;
    if !json.starts_with('{') {
        return Err(Error::invalid(
            "safetensors header",
            "JSON does not start with '{'",
        ));
    }
    let Entries(entries) = serde_json::from_str(json)
        .map_err(|e| Error::invalid("safetensors header", format!("invalid JSON: {e}")))?;
    let data_len = have - data_start;

    let mut metadata = Vec::new();
    let mut tensors = Vec::with_capacity(entries.len());
    let mut seen = BTreeSet::new();
    let mut seen_metadata = false;
    for (name, value) in entries {
        if name == METADATA_KEY {
            if seen_metadata {
                return Err(Error::invalid(METADATA_KEY, "duplicate key"));
            }
            seen_metadata = true;
            metadata = parse_metadata(value)?;
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(Error::invalid(tensor_field(&name), "duplicate tensor name"));
        }
        tensors.push(parse_tensor(name, value, data_start, data_len)?);
    }

    let mut ranges: Vec<(u64, u64, usize)> = tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| (t.start, t.end, i))
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.1 > b.0 {
            return Err(Error::invalid(
                tensor_field(&tensors[b.2].name),
                format!(
                    "data [{}, {}) overlaps tensor '{}' at [{}, {})",
                    b.0, b.1, tensors[a.2].name, a.0, a.1
                ),
            ));
        }
    }

    Ok(SafetensorsHeader {
        tensors,
        metadata,
        data_start,
    })
}

fn parse_metadata(value: Value) -> Result<Vec<(String, String)>> {
    let Value::Object(map) = value else {
        return Err(Error::invalid(METADATA_KEY, "not a JSON object"));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            Value::String(s) => out.push((k, s)),
            _ => {
                return Err(Error::invalid(
                    format!("{METADATA_KEY}.{k}"),
                    "value is not a string",
                ))
            }
        }
    }
    Ok(out)
}

fn parse_tensor(name: String, value: Value, data_start: u64, data_len: u64) -> Result<StTensor> {
    let field = || tensor_field(&name);
    let Value::Object(obj) = value else {
        return Err(Error::invalid(field(), "entry is not a JSON object"));
    };
    // Other fields are ignored, as the reference implementation does.
    let dtype_name = match obj.get("dtype") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Error::invalid(field(), "dtype is not a string")),
        None => return Err(Error::missing(format!("tensor '{name}' dtype"))),
    };
    let dtype = StDtype::from_name(dtype_name).ok_or_else(|| Error::UnsupportedFormat {
        tensor: name.clone(),
        format: String::from(dtype_name),
    })?;
    let u64_list = |key: &str| -> Result<Vec<u64>> {
        match obj.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64().ok_or_else(|| {
                        Error::invalid(
                            field(),
                            format!("{key} holds {v}, not a non-negative integer"),
                        )
                    })
                })
                .collect(),
            Some(v) => Err(Error::invalid(
                field(),
                format!("{key} is {v}, not an array"),
            )),
            None => Err(Error::missing(format!("tensor '{name}' {key}"))),
        }
    };
    let shape = u64_list("shape")?;
    let offsets = u64_list("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(Error::invalid(
            field(),
            format!("data_offsets has {} entries, not 2", offsets.len()),
        ));
    };
    if begin > end {
        return Err(Error::invalid(
            field(),
            format!("data_offsets [{begin}, {end}]: begin > end"),
        ));
    }
    if end > data_len {
        return Err(Error::truncated(
            format!("tensor '{name}' data"),
            data_start.saturating_add(end),
            data_start.saturating_add(data_len),
        ));
    }
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::invalid(field(), format!("byte size of shape {shape:?} overflows"))
        })?;
    if end - begin != expected {
        return Err(Error::invalid(
            field(),
            format!(
                "data_offsets [{begin}, {end}] span {} bytes but shape {shape:?} of {} needs {expected}",
                end - begin,
                dtype.name()
            ),
        ));
    }
    // end <= data_len = file length - data_start, so these sums cannot overflow.
    Ok(StTensor {
        shape,
        dtype,
        start: data_start + begin,
        end: data_start + end,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_round_trip() {
        for d in StDtype::ALL {
            assert_eq!(StDtype::from_name(d.name()), Some(d));
        }
        assert_eq!(StDtype::from_name("F4"), None);
    }

    #[test]
    fn empty_object_parses() {
        let mut f = 2u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        let h = parse_header(&f).unwrap();
        assert!(h.tensors.is_empty() && h.metadata.is_empty());
        assert_eq!(h.data_start, 10);
    }
}
