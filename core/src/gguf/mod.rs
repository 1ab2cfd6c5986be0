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

mod writer;

pub use writer::GgufWriter;

use crate::error::{Error, Result};
use crate::format::Format;
use alloc::collections::BTreeSet;
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

// GGUF metadata value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// Fewest bytes a value of GGUF type `ty` can occupy, or `None` for an unknown type id.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 => 8,
        T_STR => 8,       // u64 length
        T_ARRAY => 4 + 8, // element type + count
        _ => return None,
    })
}

/// Smallest possible key/value pair: key length, value type, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

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

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool` (stored as one byte, 0 or 1).
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array whose elements all have the same type.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => T_U8,
            MetaValue::I8(_) => T_I8,
            MetaValue::U16(_) => T_U16,
            MetaValue::I16(_) => T_I16,
            MetaValue::U32(_) => T_U32,
            MetaValue::I32(_) => T_I32,
            MetaValue::U64(_) => T_U64,
            MetaValue::I64(_) => T_I64,
            MetaValue::F32(_) => T_F32,
            MetaValue::F64(_) => T_F64,
            MetaValue::Bool(_) => T_BOOL,
            MetaValue::Str(_) => T_STR,
            MetaValue::Array(_) => T_ARRAY,
        }
    }

    /// Short type name for messages ("u32", "string", "array", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// The value of any integer variant, widened; `None` for other variants.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value of any numeric variant (integer or float) as `f64`; `None` otherwise.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_int().map(|i| i as f64),
        }
    }

    /// The string, if this is a [`MetaValue::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
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
    let row = *dims
        .first()
        .ok_or_else(|| Error::invalid(field(), "tensor has no dimensions"))?;
    let be = format.block_elems() as u64;
    if row % be != 0 {
        return Err(Error::invalid(
            field(),
            format!(
                "row length {row} is not a multiple of the {} block size {be}",
                format.name()
            ),
        ));
    }
    let mut size = (row / be).checked_mul(format.block_bytes() as u64);
    for &d in &dims[1..] {
        size = size.and_then(|s| s.checked_mul(d));
    }
    size.ok_or_else(|| Error::invalid(field(), format!("byte size of shape {dims:?} overflows")))
}

/// Bounds-checked little-endian cursor over the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn have(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Error unless `n` more bytes are present (without consuming them).
    fn ensure(&self, n: u64, what: &dyn Fn() -> String) -> Result<()> {
        if n <= self.remaining() {
            Ok(())
        } else {
            let need = (self.pos as u64).saturating_add(n);
            Err(Error::truncated(what(), need, self.have()))
        }
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        self.ensure(n, what)?;
        // `ensure` proved pos + n <= len, so these conversions and the slice cannot fail.
        let end = self.pos + n as usize;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Error::truncated(what(), end as u64, self.have()))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64`-length-prefixed UTF-8 string.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        let s = core::str::from_utf8(bytes)
            .map_err(|e| Error::invalid(what(), format!("string is not valid UTF-8: {e}")))?;
        Ok(String::from(s))
    }
}

fn type_id_name(ty: u32) -> &'static str {
    match ty {
        T_U8 => "u8",
        T_I8 => "i8",
        T_U16 => "u16",
        T_I16 => "i16",
        T_U32 => "u32",
        T_I32 => "i32",
        T_F32 => "f32",
        T_BOOL => "bool",
        T_STR => "string",
        T_ARRAY => "array",
        T_U64 => "u64",
        T_I64 => "i64",
        T_F64 => "f64",
        _ => "unknown",
    }
}

fn read_value(r: &mut Reader<'_>, ty: u32, key: &str, depth: u32) -> Result<MetaValue> {
    let what = || format!("metadata key '{key}'");
    Ok(match ty {
        T_U8 => MetaValue::U8(r.u8(&what)?),
        T_I8 => MetaValue::I8(r.u8(&what)? as i8),
        T_U16 => MetaValue::U16(r.u16(&what)?),
        T_I16 => MetaValue::I16(r.u16(&what)? as i16),
        T_U32 => MetaValue::U32(r.u32(&what)?),
        T_I32 => MetaValue::I32(r.u32(&what)? as i32),
        T_U64 => MetaValue::U64(r.u64(&what)?),
        T_I64 => MetaValue::I64(r.u64(&what)? as i64),
        T_F32 => MetaValue::F32(f32::from_bits(r.u32(&what)?)),
        T_F64 => MetaValue::F64(f64::from_bits(r.u64(&what)?)),
        T_BOOL => match r.u8(&what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(Error::invalid(
                    what(),
                    format!("bool byte is {b}, not 0 or 1"),
                ))
            }
        },
        T_STR => MetaValue::Str(r.string(&what)?),
        T_ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::invalid(
                    what(),
                    format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                ));
            }
            let elem_ty = r.u32(&what)?;
            let n = r.u64(&what)?;
            let min = min_value_bytes(elem_ty).ok_or_else(|| {
                Error::invalid(what(), format!("unknown array element type id {elem_ty}"))
            })?;
            // Bound the count by the bytes left before allocating anything for it.
            let need = n.saturating_mul(min);
            r.ensure(need, &|| {
                format!(
                    "metadata key '{key}' (array of {n} {} elements)",
                    type_id_name(elem_ty)
                )
            })?;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_value(r, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        other => {
            return Err(Error::invalid(
                what(),
                format!("unknown value type id {other}"),
            ))
        }
    })
}

/// Parse a GGUF file (v2 or v3) held in memory.
///
/// `bytes` must hold the whole file: every tensor's data range is checked to lie within it.
/// Tensors of ggml types we do not support are accepted (with `format: None` and `size: None`);
/// [`Gguf::tensor_data`] refuses them.
pub fn parse(bytes: &[u8]) -> Result<Gguf> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let magic = r.array::<4>(&|| String::from("GGUF magic"))?;
    if magic != MAGIC {
        return Err(Error::BadMagic { expected: "GGUF" });
    }
    let version = r.u32(&|| String::from("GGUF version"))?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::invalid(
                "GGUF version",
                "version 1 is not supported (only versions 2 and 3); re-convert the model",
            ))
        }
        v if matches!(v.swap_bytes(), 1..=3) => {
            return Err(Error::invalid(
                "GGUF version",
                format!(
                    "big-endian GGUF (version {}) is not supported",
                    v.swap_bytes()
                ),
            ))
        }
        v => {
            return Err(Error::invalid(
                "GGUF version",
                format!("unsupported version {v} (only 2 and 3)"),
            ))
        }
    }
    let n_tensors = r.u64(&|| String::from("tensor count"))?;
    let n_kv = r.u64(&|| String::from("metadata count"))?;
    r.ensure(n_kv.saturating_mul(MIN_KV_BYTES), &|| {
        format!("{n_kv} metadata key/value pairs")
    })?;
    r.ensure(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES), &|| {
        format!("{n_tensors} tensor infos")
    })?;

    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string(&|| format!("metadata key #{i}"))?;
        let ty = r.u32(&|| format!("metadata key '{key}' type"))?;
        let value = read_value(&mut r, ty, &key, 0)?;
        metadata.push((key, value));
    }
    {
        let mut seen = BTreeSet::new();
        for (k, _) in &metadata {
            if !seen.insert(k.as_str()) {
                return Err(Error::invalid(
                    format!("metadata key '{k}'"),
                    "duplicate key",
                ));
            }
        }
    }

    let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let field = || format!("metadata key '{ALIGNMENT_KEY}'");
            let a = v
                .as_int()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| Error::invalid(field(), format!("expected a u32, found {v:?}")))?;
            if a == 0 || !a.is_power_of_two() {
                return Err(Error::invalid(
                    field(),
                    format!("alignment {a} is not a power of two"),
                ));
            }
            u64::from(a)
        }
    };

    // Re-check against what is left now that the metadata is consumed.
    r.ensure(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES), &|| {
        format!("{n_tensors} tensor infos")
    })?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("tensor #{i} name"))?;
        let what = || format!("tensor '{name}'");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(Error::invalid(
                what(),
                format!("{n_dims} dimensions (must be 1 to {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64(&what)?;
            if d == 0 {
                return Err(Error::invalid(what(), "a dimension is 0"));
            }
            dims.push(d);
        }
        // ggml counts elements in i64.
        if element_count(&dims).is_none() {
            return Err(Error::invalid(
                what(),
                format!("element count of shape {dims:?} overflows"),
            ));
        }
        let ggml_type = r.u32(&what)?;
        let offset = r.u64(&what)?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            format: Format::from_ggml_type(ggml_type),
            offset,
            size: None,
        });
    }

    let header_end = r.pos as u64;
    let data_offset = align_up(header_end, alignment).ok_or_else(|| {
        Error::invalid(
            "GGUF data offset",
            "header end rounded up to the alignment overflows",
        )
    })?;

    let file_len = bytes.len() as u64;
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter_mut().enumerate() {
        let field = || format!("tensor '{}'", t.name);
        if t.offset % alignment != 0 {
            return Err(Error::invalid(
                field(),
                format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                ),
            ));
        }
        let start = data_offset.checked_add(t.offset).ok_or_else(|| {
            Error::invalid(field(), format!("data offset {} overflows", t.offset))
        })?;
        match t.format {
            Some(f) => {
                let size = tensor_size(f, &t.dims, &t.name)?;
                let end = start.saturating_add(size);
                if end > file_len {
                    return Err(Error::truncated(
                        format!("tensor '{}' data", t.name),
                        end,
                        file_len,
                    ));
                }
                t.size = Some(size);
                ranges.push((start, end, i));
            }
            None => {
                if start > file_len {
                    return Err(Error::truncated(
                        format!("tensor '{}' data", t.name),
                        start,
                        file_len,
                    ));
                }
            }
        }
        t.offset = start;
    }

    {
        let mut seen = BTreeSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::invalid(
                    format!("tensor '{}'", t.name),
                    "duplicate tensor name",
                ));
            }
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.1 > b.0 {
            return Err(Error::invalid(
                format!("tensor '{}'", tensors[b.2].name),
                format!(
                    "data [{}, {}) overlaps tensor '{}' at [{}, {})",
                    b.0, b.1, tensors[a.2].name, a.0, a.1
                ),
            ));
        }
    }

    Ok(Gguf {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
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

fn key_field(key: &str) -> String {
    format!("metadata key '{key}'")
}

fn wrong_type(key: &str, expected: &str, found: &MetaValue) -> Error {
    Error::invalid(
        key_field(key),
        format!("expected {expected}, found {}", found.type_name()),
    )
}

fn to_u32(key: &str, v: &MetaValue) -> Result<u32> {
    let i = v.as_int().ok_or_else(|| wrong_type(key, "an integer", v))?;
    u32::try_from(i)
        .map_err(|_| Error::invalid(key_field(key), format!("value {i} does not fit in a u32")))
}

fn to_f32(key: &str, v: &MetaValue) -> Result<f32> {
    match *v {
        MetaValue::F32(x) => Ok(x),
        MetaValue::F64(x) => Ok(x as f32),
        _ => Err(wrong_type(key, "a float", v)),
    }
}

fn to_str<'v>(key: &str, v: &'v MetaValue) -> Result<&'v str> {
    v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
}

impl Gguf {
    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| Error::missing(key_field(key)))
    }

    /// `general.architecture` ("llama", "qwen2", ...).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// A required integer key as `u32`; any integer type whose value fits is accepted.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        to_u32(key, self.require(key)?)
    }

    /// An optional integer key as `u32`; present but of the wrong type or range is an error.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.get(key).map(|v| to_u32(key, v)).transpose()
    }

    /// A required float key (`f32` or `f64`) as `f32`.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        to_f32(key, self.require(key)?)
    }

    /// An optional float key (`f32` or `f64`) as `f32`.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|v| to_f32(key, v)).transpose()
    }

    /// A required string key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        to_str(key, self.require(key)?)
    }

    /// An optional string key.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.get(key).map(|v| to_str(key, v)).transpose()
    }

    /// An optional bool key.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong_type(key, "a bool", v)),
        }
    }

    fn require_array(&self, key: &str) -> Result<&[MetaValue]> {
        match self.require(key)? {
            MetaValue::Array(items) => Ok(items),
            v => Err(wrong_type(key, "an array", v)),
        }
    }

    /// A required array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let items = self.require_array(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            out.push(v.as_str().ok_or_else(|| {
                Error::invalid(
                    format!("metadata key '{key}'[{i}]"),
                    format!("expected a string, found {}", v.type_name()),
                )
            })?);
        }
        Ok(out)
    }

    /// A required numeric array as `i32`: integer elements must fit, float elements must be
    /// whole numbers that fit.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let items = self.require_array(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            let field = || format!("metadata key '{key}'[{i}]");
            let x = match v {
                MetaValue::F32(_) | MetaValue::F64(_) => {
                    let f = v.as_f64().unwrap_or(f64::NAN);
                    if f.is_finite() && f == (f as i64) as f64 && i32::try_from(f as i64).is_ok() {
                        f as i32
                    } else {
                        return Err(Error::invalid(
                            field(),
                            format!("float {f} is not a whole number that fits in an i32"),
                        ));
                    }
                }
                _ => {
                    let n = v.as_int().ok_or_else(|| {
                        Error::invalid(
                            field(),
                            format!("expected a number, found {}", v.type_name()),
                        )
                    })?;
                    i32::try_from(n).map_err(|_| {
                        Error::invalid(field(), format!("value {n} does not fit in an i32"))
                    })?
                }
            };
            out.push(x);
        }
        Ok(out)
    }

    /// A required numeric array as `f32` (any integer or float element type).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let items = self.require_array(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            let x = v.as_f64().ok_or_else(|| {
                Error::invalid(
                    format!("metadata key '{key}'[{i}]"),
                    format!("expected a number, found {}", v.type_name()),
                )
            })?;
            out.push(x as f32);
        }
        Ok(out)
    }

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

    #[test]
    fn reader_never_reads_past_end() {
        let mut r = Reader {
            buf: &[1, 2, 3],
            pos: 0,
        };
        assert!(r.u32(&|| String::from("x")).is_err());
        assert_eq!(r.u16(&|| String::from("x")).unwrap(), 0x0201);
        assert!(r.take(u64::MAX, &|| String::from("x")).is_err());
        assert_eq!(r.u8(&|| String::from("x")).unwrap(), 3);
    }
}
