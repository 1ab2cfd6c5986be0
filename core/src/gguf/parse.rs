//! [`parse`]: the GGUF header, one step per part of the file — preamble (magic, version, counts),
//! metadata key/value pairs, tensor infos, then the data section's placement (alignment, byte
//! ranges, overlaps). Each step checks counts against the bytes left before allocating for them.

use super::metadata::{min_value_bytes, type_id_name};
use super::metadata::{
    T_ARRAY, T_BOOL, T_F32, T_F64, T_I16, T_I32, T_I64, T_I8, T_STR, T_U16, T_U32, T_U64, T_U8,
};
use super::reader::Reader;
use super::{
    align_up, element_count, tensor_size, Gguf, MetaValue, TensorInfo, ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS,
};
use crate::error::{Error, Result};
use crate::format::Format;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Smallest possible key/value pair: key length, value type, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest possible tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// Parse a GGUF file (v2 or v3) held in memory.
///
/// `bytes` must hold the whole file: every tensor's data range is checked to lie within it.
/// Tensors of ggml types we do not support are accepted (with `format: None` and `size: None`);
/// [`Gguf::tensor_data`] refuses them.
pub fn parse(bytes: &[u8]) -> Result<Gguf> {
    let mut r = Reader::new(bytes);
    let Preamble {
        version,
        n_tensors,
        n_kv,
    } = read_preamble(&mut r)?;
    let metadata = read_metadata(&mut r, n_kv)?;
    let alignment = alignment_of(&metadata)?;
    let mut tensors = read_tensor_infos(&mut r, n_tensors)?;
    let data_offset = align_up(r.pos(), alignment).ok_or_else(|| {
        Error::invalid(
            "GGUF data offset",
            "header end rounded up to the alignment overflows",
        )
    })?;
    let ranges = place_tensors(&mut tensors, data_offset, alignment, bytes.len() as u64)?;
    check_unique_names(&tensors)?;
    check_disjoint(&tensors, ranges)?;
    Ok(Gguf {
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

/// The fixed part at the start of the file.
struct Preamble {
    version: u32,
    n_tensors: u64,
    n_kv: u64,
}

/// Magic, version and the two counts, each count checked against the bytes that remain.
fn read_preamble(r: &mut Reader<'_>) -> Result<Preamble> {
    let magic = r.array::<4>(&|| String::from("GGUF magic"))?;
    if magic != MAGIC {
        return Err(Error::BadMagic { expected: "GGUF" });
    }
    let version = r.u32(&|| String::from("GGUF version"))?;
    check_version(version)?;
    let n_tensors = r.u64(&|| String::from("tensor count"))?;
    let n_kv = r.u64(&|| String::from("metadata count"))?;
    r.ensure(n_kv.saturating_mul(MIN_KV_BYTES), &|| {
        format!("{n_kv} metadata key/value pairs")
    })?;
    r.ensure(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES), &|| {
        format!("{n_tensors} tensor infos")
    })?;
    Ok(Preamble {
        version,
        n_tensors,
        n_kv,
    })
}

/// Versions 2 and 3 are read; 1 and byte-swapped (big-endian) files get their own messages.
fn check_version(version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(Error::invalid(
            "GGUF version",
            "version 1 is not supported (only versions 2 and 3); re-convert the model",
        )),
        v if matches!(v.swap_bytes(), 1..=3) => Err(Error::invalid(
            "GGUF version",
            format!(
                "big-endian GGUF (version {}) is not supported",
                v.swap_bytes()
            ),
        )),
        v => Err(Error::invalid(
            "GGUF version",
            format!("unsupported version {v} (only 2 and 3)"),
        )),
    }
}

/// The `n_kv` key/value pairs, in file order; a repeated key is an error.
fn read_metadata(r: &mut Reader<'_>, n_kv: u64) -> Result<Vec<(String, MetaValue)>> {
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string(&|| format!("metadata key #{i}"))?;
        let ty = r.u32(&|| format!("metadata key '{key}' type"))?;
        let value = read_value(r, ty, &key, 0)?;
        metadata.push((key, value));
    }
    let mut seen = BTreeSet::new();
    for (k, _) in &metadata {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid(
                format!("metadata key '{k}'"),
                "duplicate key",
            ));
        }
    }
    Ok(metadata)
}

/// One value of GGUF type `ty` (arrays recursively, up to [`MAX_ARRAY_DEPTH`]).
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
        T_ARRAY => read_array(r, key, depth)?,
        other => {
            return Err(Error::invalid(
                what(),
                format!("unknown value type id {other}"),
            ))
        }
    })
}

/// An array value after its type id: element type, count, elements.
fn read_array(r: &mut Reader<'_>, key: &str, depth: u32) -> Result<MetaValue> {
    let what = || format!("metadata key '{key}'");
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
    Ok(MetaValue::Array(items))
}

/// `general.alignment` (a power of two that fits a u32), or [`DEFAULT_ALIGNMENT`] when absent.
fn alignment_of(metadata: &[(String, MetaValue)]) -> Result<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
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
    Ok(u64::from(a))
}

/// The `n_tensors` tensor infos, with offsets still relative to the data section and no sizes.
fn read_tensor_infos(r: &mut Reader<'_>, n_tensors: u64) -> Result<Vec<TensorInfo>> {
    // Re-check against what is left now that the metadata is consumed.
    r.ensure(n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES), &|| {
        format!("{n_tensors} tensor infos")
    })?;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("tensor #{i} name"))?;
        let what = || format!("tensor '{name}'");
        let dims = read_dims(r, &what)?;
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
    Ok(tensors)
}

/// A tensor's dimension count and dimensions: 1 to [`MAX_DIMS`] of them, none 0, and an element
/// count that fits ggml's `i64`.
fn read_dims(r: &mut Reader<'_>, what: &dyn Fn() -> String) -> Result<Vec<u64>> {
    let n_dims = r.u32(what)?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(Error::invalid(
            what(),
            format!("{n_dims} dimensions (must be 1 to {MAX_DIMS})"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = r.u64(what)?;
        if d == 0 {
            return Err(Error::invalid(what(), "a dimension is 0"));
        }
        dims.push(d);
    }
    if element_count(&dims).is_none() {
        return Err(Error::invalid(
            what(),
            format!("element count of shape {dims:?} overflows"),
        ));
    }
    Ok(dims)
}

/// A tensor's data as `[start, end)` in the file, with its index in the tensor list.
type DataRange = (u64, u64, usize);

/// Makes every offset absolute and fills in the sizes of known formats, checking alignment and
/// that each range lies within the `file_len` bytes. Returns the ranges of sized tensors.
fn place_tensors(
    tensors: &mut [TensorInfo],
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<DataRange>> {
    let mut ranges: Vec<DataRange> = Vec::with_capacity(tensors.len());
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
        let past_end =
            |end: u64| Error::truncated(format!("tensor '{}' data", t.name), end, file_len);
        match t.format {
            Some(f) => {
                let size = tensor_size(f, &t.dims, &t.name)?;
                let end = start.saturating_add(size);
                if end > file_len {
                    return Err(past_end(end));
                }
                t.size = Some(size);
                ranges.push((start, end, i));
            }
            // Unknown types have no size; their start must still lie within the file.
            None if start > file_len => return Err(past_end(start)),
            None => {}
        }
        t.offset = start;
    }
    Ok(ranges)
}

/// Tensor names are unique.
fn check_unique_names(tensors: &[TensorInfo]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::invalid(
                format!("tensor '{}'", t.name),
                "duplicate tensor name",
            ));
        }
    }
    Ok(())
}

/// No two tensors' data ranges overlap.
fn check_disjoint(tensors: &[TensorInfo], mut ranges: Vec<DataRange>) -> Result<()> {
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
    Ok(())
}
