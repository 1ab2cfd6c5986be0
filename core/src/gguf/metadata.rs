//! GGUF metadata values ([`MetaValue`]), their type ids, and the typed getters on [`Gguf`] that
//! the config and tokenizer loaders use. Every getter error names the key (and the element for
//! arrays).

use super::Gguf;
use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

// GGUF metadata value type ids.
pub(super) const T_U8: u32 = 0;
pub(super) const T_I8: u32 = 1;
pub(super) const T_U16: u32 = 2;
pub(super) const T_I16: u32 = 3;
pub(super) const T_U32: u32 = 4;
pub(super) const T_I32: u32 = 5;
pub(super) const T_F32: u32 = 6;
pub(super) const T_BOOL: u32 = 7;
pub(super) const T_STR: u32 = 8;
pub(super) const T_ARRAY: u32 = 9;
pub(super) const T_U64: u32 = 10;
pub(super) const T_I64: u32 = 11;
pub(super) const T_F64: u32 = 12;

/// Fewest bytes a value of GGUF type `ty` can occupy, or `None` for an unknown type id.
pub(super) fn min_value_bytes(ty: u32) -> Option<u64> {
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

/// The type name for a type id, for messages.
pub(super) fn type_id_name(ty: u32) -> &'static str {
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
}
