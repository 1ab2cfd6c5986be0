//! GGUF parser and writer: a round trip, one test per kind of bad input, every truncation of a
//! valid file, and a fixed-seed byte-flipping fuzz loop that must never panic.

use vspec_core::gguf::{parse, Gguf, GgufWriter, MetaValue};
use vspec_core::{Error, Format};

/// The field, key or tensor an error names.
fn named(e: &Error) -> String {
    match e {
        Error::Invalid { field, .. } => field.clone(),
        Error::Truncated { what, .. } => what.clone(),
        Error::Missing { what } => what.clone(),
        Error::UnsupportedFormat { tensor, format } => format!("{tensor} {format}"),
        other => format!("{other:?}"),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample_metadata() -> Vec<(String, MetaValue)> {
    let kv = |k: &str, v: MetaValue| (k.to_string(), v);
    vec![
        kv("general.architecture", MetaValue::Str("llama".into())),
        kv("general.name", MetaValue::Str("tiny ünïcode".into())),
        kv("llama.block_count", MetaValue::U32(2)),
        kv("llama.context_length", MetaValue::U64(4096)),
        kv("llama.embedding_length", MetaValue::I32(4)),
        kv("llama.small", MetaValue::U8(7)),
        kv("llama.neg", MetaValue::I8(-3)),
        kv("llama.u16", MetaValue::U16(65535)),
        kv("llama.i16", MetaValue::I16(-2)),
        kv("llama.i64", MetaValue::I64(-1)),
        kv(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        ),
        kv("llama.rope.freq_base", MetaValue::F64(10000.0)),
        kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(true)),
        kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![
                MetaValue::Str("<s>".into()),
                MetaValue::Str("</s>".into()),
                MetaValue::Str("▁a".into()),
            ]),
        ),
        kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(vec![
                MetaValue::F32(0.0),
                MetaValue::F32(-1.5),
                MetaValue::F32(2.0),
            ]),
        ),
        kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(vec![
                MetaValue::I32(3),
                MetaValue::I32(3),
                MetaValue::I32(1),
            ]),
        ),
        kv("empty", MetaValue::Array(vec![])),
        kv(
            "nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
                MetaValue::Array(vec![MetaValue::Str("x".into())]),
            ]),
        ),
    ]
}

struct Sample {
    emb: Vec<u8>,
    q4: Vec<u8>,
    norm: Vec<u8>,
}

impl Sample {
    fn new() -> Self {
        let emb = f32_bytes(&(0..12).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
        let q4 = (0..2 * 2 * 18).map(|i| (i * 7 % 251) as u8).collect();
        // 8 × f32 = 32 bytes: the file ends exactly at the last tensor's end, with no padding,
        // so every strict prefix is missing data.
        let norm = f32_bytes(&[1.0; 8]);
        Sample { emb, q4, norm }
    }

    fn file(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in sample_metadata() {
            w.add_meta(k, v);
        }
        w.add_tensor("token_embd.weight", &[4, 3], Format::F32, &self.emb)
            .unwrap();
        w.add_tensor("blk.0.attn_q.weight", &[64, 2], Format::Q4_0, &self.q4)
            .unwrap();
        w.add_tensor("output_norm.weight", &[8], Format::F32, &self.norm)
            .unwrap();
        w.finish().unwrap()
    }
}

#[test]
fn round_trip_preserves_metadata_and_tensor_bytes() {
    let s = Sample::new();
    let file = s.file();
    let g = parse(&file).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.metadata, sample_metadata());
    assert_eq!(g.data_offset % 32, 0);
    assert_eq!(g.tensors.len(), 3);

    let expect = [
        ("token_embd.weight", vec![4u64, 3], Format::F32, &s.emb),
        ("blk.0.attn_q.weight", vec![64, 2], Format::Q4_0, &s.q4),
        ("output_norm.weight", vec![8], Format::F32, &s.norm),
    ];
    for (name, dims, format, data) in expect {
        let t = g.tensor(name).unwrap();
        assert_eq!(t.dims, dims);
        assert_eq!(t.format, Some(format));
        assert_eq!(Some(t.ggml_type), format.ggml_type());
        assert_eq!(t.size, Some(data.len() as u64));
        assert_eq!(t.offset % 32, 0);
        assert!(t.offset >= g.data_offset);
        assert_eq!(g.tensor_data(&file, t).unwrap(), &data[..]);
    }
    assert_eq!(g.tensor("token_embd.weight").unwrap().n_elements(), 12);
    assert!(g.tensor("nope").is_none());
    // Padding: 48 bytes of embeddings are followed by 16 zero bytes.
    let t0 = g.tensor("token_embd.weight").unwrap();
    let t1 = g.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(t1.offset, t0.offset + 64);
    assert_eq!(*file.last().unwrap(), 1.0f32.to_le_bytes()[3]);
    assert_eq!(
        file.len() as u64,
        g.tensor("output_norm.weight").unwrap().offset + 32
    );
}

#[test]
fn typed_accessors() {
    let file = Sample::new().file();
    let g = parse(&file).unwrap();
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(g.get_u32("llama.context_length").unwrap(), 4096);
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 4);
    assert_eq!(g.get_u32("llama.small").unwrap(), 7);
    assert_eq!(g.get_u32("llama.u16").unwrap(), 65535);
    assert_eq!(g.get_u32_opt("llama.block_count").unwrap(), Some(2));
    assert_eq!(g.get_u32_opt("absent").unwrap(), None);
    assert_eq!(
        g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(g.get_f32_opt("absent").unwrap(), None);
    assert_eq!(g.get_str("general.name").unwrap(), "tiny ünïcode");
    assert_eq!(g.get_str_opt("absent").unwrap(), None);
    assert_eq!(
        g.get_bool_opt("tokenizer.ggml.add_bos_token").unwrap(),
        Some(true)
    );
    assert_eq!(g.get_bool_opt("absent").unwrap(), None);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["<s>", "</s>", "▁a"]
    );
    assert_eq!(
        g.get_f32_array("tokenizer.ggml.scores").unwrap(),
        [0.0, -1.5, 2.0]
    );
    assert_eq!(
        g.get_f32_array("tokenizer.ggml.token_type").unwrap(),
        [3.0, 3.0, 1.0]
    );
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        [3, 3, 1]
    );
    assert_eq!(g.get_i32_array("empty").unwrap(), Vec::<i32>::new());
    assert_eq!(g.get("llama.i16"), Some(&MetaValue::I16(-2)));

    // Errors name the key.
    let e = g.get_u32("absent.key").unwrap_err();
    assert!(
        matches!(e, Error::Missing { .. }) && named(&e).contains("absent.key"),
        "{e}"
    );
    for key in ["llama.neg", "llama.i64"] {
        let e = g.get_u32(key).unwrap_err();
        assert!(
            matches!(e, Error::Invalid { .. }) && named(&e).contains(key),
            "{e}"
        );
    }
    let e = g.get_u32("llama.rope.freq_base").unwrap_err();
    assert!(named(&e).contains("llama.rope.freq_base"), "{e}");
    let e = g.get_f32("llama.block_count").unwrap_err();
    assert!(named(&e).contains("llama.block_count"), "{e}");
    let e = g.get_str("llama.block_count").unwrap_err();
    assert!(named(&e).contains("llama.block_count"), "{e}");
    let e = g.get_bool_opt("general.name").unwrap_err();
    assert!(named(&e).contains("general.name"), "{e}");
    let e = g.get_str_array("tokenizer.ggml.scores").unwrap_err();
    assert!(named(&e).contains("'tokenizer.ggml.scores'[0]"), "{e}");
    let e = g.get_i32_array("tokenizer.ggml.scores").unwrap_err(); // -1.5 is not whole
    assert!(named(&e).contains("'tokenizer.ggml.scores'[1]"), "{e}");
    let e = g.get_f32_array("tokenizer.ggml.tokens").unwrap_err();
    assert!(named(&e).contains("'tokenizer.ggml.tokens'[0]"), "{e}");
    let e = g.get_str_array("general.name").unwrap_err();
    assert!(named(&e).contains("general.name"), "{e}");
    let e = g.architecture();
    assert!(e.is_ok());
}

#[test]
fn version_2_parses() {
    let mut file = Sample::new().file();
    file[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = parse(&file).unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.tensors.len(), 3);
}

#[test]
fn every_prefix_is_an_error() {
    let file = Sample::new().file();
    for len in 0..file.len() {
        assert!(parse(&file[..len]).is_err(), "prefix of {len} bytes parsed");
    }
    assert!(parse(&file).is_ok());
}

#[test]
fn wrong_magic() {
    let mut file = Sample::new().file();
    file[0] = b'g';
    assert_eq!(
        parse(&file).unwrap_err(),
        Error::BadMagic { expected: "GGUF" }
    );
    assert!(matches!(
        parse(b"GGML\x03\0\0\0"),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 0x0300_0000, u32::MAX] {
        let mut file = Sample::new().file();
        file[4..8].copy_from_slice(&v.to_le_bytes());
        let e = parse(&file).unwrap_err();
        assert!(
            matches!(e, Error::Invalid { .. }) && named(&e) == "GGUF version",
            "{v}: {e}"
        );
    }
    let mut file = Sample::new().file();
    file[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(parse(&file).unwrap_err().to_string().contains("version 1"));
}

/// Hand-built GGUF bytes, for inputs the writer refuses to produce.
#[derive(Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn new(n_tensors: u64, n_kv: u64) -> Self {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&n_tensors.to_le_bytes());
        v.extend_from_slice(&n_kv.to_le_bytes());
        Raw(v)
    }
    fn u8(mut self, x: u8) -> Self {
        self.0.push(x);
        self
    }
    fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn str(self, s: &[u8]) -> Self {
        let mut r = self.u64(s.len() as u64);
        r.0.extend_from_slice(s);
        r
    }
    /// A tensor info: name, dims, ggml type, relative offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pad to `align` and append `data_len` bytes of data.
    fn data(mut self, align: usize, data_len: usize) -> Vec<u8> {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + data_len, 0xAB);
        self.0
    }
}

#[test]
fn hand_built_file_parses() {
    // Sanity check of the Raw builder itself.
    let file = Raw::new(2, 1)
        .str(b"general.architecture")
        .u32(8)
        .str(b"llama")
        .tensor("a", &[4], 0, 0)
        .tensor("b", &[2, 2], 1, 32)
        .data(32, 40);
    let g = parse(&file).unwrap();
    assert_eq!(g.tensors[1].offset, g.data_offset + 32);
    assert_eq!(g.tensors[1].size, Some(8));
    assert_eq!(g.tensor_data(&file, &g.tensors[1]).unwrap(), &[0xAB; 8]);
}

#[test]
fn tensor_offset_past_end() {
    let file = Raw::new(1, 0)
        .tensor("blk.0.attn_q.weight", &[4], 0, 32)
        .data(32, 32);
    let e = parse(&file).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    assert!(named(&e).contains("blk.0.attn_q.weight"), "{e}");
    // An offset that overflows when added to the data offset.
    let file = Raw::new(1, 0)
        .tensor("t", &[4], 0, u64::MAX - 31)
        .data(32, 32);
    let e = parse(&file).unwrap_err();
    assert!(named(&e).contains("'t'"), "{e}");
    // The data stops one byte short.
    let file = Raw::new(1, 0).tensor("t", &[4], 0, 0).data(32, 15);
    assert!(matches!(parse(&file), Err(Error::Truncated { need, have, .. }) if need == have + 1));
}

#[test]
fn misaligned_offset() {
    let file = Raw::new(1, 0)
        .tensor("blk.0.ffn_up.weight", &[4], 0, 4)
        .data(32, 64);
    let e = parse(&file).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && named(&e).contains("blk.0.ffn_up.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("alignment"), "{e}");
}

#[test]
fn custom_alignment() {
    let data = f32_bytes(&[1.0, 2.0, 3.0]);
    let mut w = GgufWriter::with_alignment(64).unwrap();
    w.add_meta("general.architecture", MetaValue::Str("llama".into()));
    w.add_tensor("a", &[3], Format::F32, &data).unwrap();
    w.add_tensor("b", &[3], Format::F32, &data).unwrap();
    let file = w.finish().unwrap();
    let g = parse(&file).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.get_u32("general.alignment").unwrap(), 64);
    assert_eq!(g.data_offset % 64, 0);
    assert_eq!(g.tensors[1].offset - g.tensors[0].offset, 64);
    assert_eq!(g.tensor_data(&file, &g.tensors[1]).unwrap(), &data[..]);

    // Offsets aligned to 32 but not 64 are refused under alignment 64.
    let file = Raw::new(1, 1)
        .str(b"general.alignment")
        .u32(4)
        .u32(64)
        .tensor("t", &[4], 0, 32)
        .data(64, 128);
    assert!(named(&parse(&file).unwrap_err()).contains("'t'"));

    for bad in [0u32, 3, 48] {
        let file = Raw::new(0, 1)
            .str(b"general.alignment")
            .u32(4)
            .u32(bad)
            .data(32, 0);
        let e = parse(&file).unwrap_err();
        assert!(named(&e).contains("general.alignment"), "{bad}: {e}");
    }
    // Wrong type for the alignment.
    let file = Raw::new(0, 1)
        .str(b"general.alignment")
        .u32(8)
        .str(b"32")
        .data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("general.alignment"));
    assert!(GgufWriter::with_alignment(24).is_err());
    assert!(GgufWriter::with_alignment(0).is_err());
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    // Tensor count and key/value count.
    assert!(matches!(
        parse(&Raw::new(u64::MAX, 0).0),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        parse(&Raw::new(0, u64::MAX).0),
        Err(Error::Truncated { .. })
    ));
    assert!(parse(&Raw::new(u64::MAX / 2, u64::MAX / 2).data(32, 64)).is_err());
    // Key length.
    let file = Raw::new(0, 1).u64(u64::MAX).data(32, 64);
    assert!(matches!(parse(&file), Err(Error::Truncated { .. })));
    // Value string length.
    let file = Raw::new(0, 1)
        .str(b"general.name")
        .u32(8)
        .u64(u64::MAX)
        .data(32, 64);
    let e = parse(&file).unwrap_err();
    assert!(named(&e).contains("general.name"), "{e}");
    // u64::MAX strings, u64::MAX bytes, u64::MAX arrays.
    for elem_ty in [8u32, 0, 9, 10] {
        let file = Raw::new(0, 1)
            .str(b"tokenizer.ggml.tokens")
            .u32(9)
            .u32(elem_ty)
            .u64(u64::MAX)
            .data(32, 256);
        let e = parse(&file).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{elem_ty}: {e}");
        assert!(named(&e).contains("tokenizer.ggml.tokens"), "{e}");
    }
    // A count that fits the bytes when multiplied by 1 but not by the 8 bytes a string needs.
    let file = Raw::new(0, 1).str(b"k").u32(9).u32(8).u64(40).data(32, 0);
    let len = file.len();
    assert!(40 < len && 40 * 8 > len);
    assert!(parse(&file).is_err());
    // Tensor name length.
    let file = Raw::new(1, 0).u64(u64::MAX).data(32, 64);
    assert!(matches!(parse(&file), Err(Error::Truncated { .. })));
}

#[test]
fn bad_dims() {
    // Product overflows.
    for dims in [&[u64::MAX, 2][..], &[1 << 32, 1 << 32], &[1 << 62, 4, 1, 1]] {
        let file = Raw::new(1, 0).tensor("big", dims, 0, 0).data(32, 64);
        let e = parse(&file).unwrap_err();
        assert!(
            matches!(e, Error::Invalid { .. }) && named(&e).contains("big"),
            "{dims:?}: {e}"
        );
    }
    // Element count fits but the byte size does not.
    let file = Raw::new(1, 0).tensor("big", &[1 << 62], 0, 0).data(32, 64);
    assert!(named(&parse(&file).unwrap_err()).contains("big"));
    // Too many dimensions, none, or a zero dimension.
    for dims in [&[1u64, 1, 1, 1, 1][..], &[], &[4, 0]] {
        let file = Raw::new(1, 0).tensor("t", dims, 0, 0).data(32, 64);
        let e = parse(&file).unwrap_err();
        assert!(
            matches!(e, Error::Invalid { .. }) && named(&e).contains("'t'"),
            "{dims:?}: {e}"
        );
    }
    // n_dims absurdly large.
    let file = Raw::new(1, 0).str(b"t").u32(u32::MAX).data(32, 64);
    assert!(named(&parse(&file).unwrap_err()).contains("'t'"));
    // Row length not a multiple of the block size.
    let file = Raw::new(1, 0).tensor("q", &[33, 1], 2, 0).data(32, 64);
    let e = parse(&file).unwrap_err();
    assert!(
        named(&e).contains("'q'") && e.to_string().contains("block"),
        "{e}"
    );
}

#[test]
fn bad_utf8() {
    // In a value.
    let file = Raw::new(0, 1)
        .str(b"general.name")
        .u32(8)
        .str(b"ab\xff")
        .data(32, 0);
    let e = parse(&file).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && named(&e).contains("general.name"),
        "{e}"
    );
    // In an array element.
    let file = Raw::new(0, 1)
        .str(b"tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .str(b"ok")
        .str(b"\xc3\x28")
        .data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("tokenizer.ggml.tokens"));
    // In a key.
    let file = Raw::new(0, 1).str(b"\xfe").u32(4).u32(1).data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("metadata key #0"));
    // In a tensor name.
    let file = Raw::new(1, 0)
        .str(b"\xff")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .data(32, 64);
    assert!(named(&parse(&file).unwrap_err()).contains("tensor #0"));
}

#[test]
fn bad_metadata_values() {
    // Unknown value type.
    let file = Raw::new(0, 1).str(b"k").u32(13).u32(0).data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("'k'"));
    // Unknown array element type.
    let file = Raw::new(0, 1).str(b"k").u32(9).u32(77).u64(0).data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("'k'"));
    // A bool that is not 0 or 1.
    let file = Raw::new(0, 1).str(b"flag").u32(7).u8(2).data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("'flag'"));
    // Duplicate keys.
    let file = Raw::new(0, 2)
        .str(b"k")
        .u32(4)
        .u32(1)
        .str(b"k")
        .u32(4)
        .u32(2)
        .data(32, 0);
    let e = parse(&file).unwrap_err();
    assert!(
        named(&e).contains("'k'") && e.to_string().contains("duplicate"),
        "{e}"
    );
    // Arrays nested too deep (each level is an array of one array).
    let mut r = Raw::new(0, 1).str(b"deep").u32(9);
    for _ in 0..64 {
        r = r.u32(9).u64(1);
    }
    let file = r.u32(0).u64(0).data(32, 0);
    assert!(named(&parse(&file).unwrap_err()).contains("'deep'"));
}

#[test]
fn unknown_ggml_type_parses_but_has_no_data() {
    let file = Raw::new(2, 0)
        .tensor("blk.0.exotic", &[16, 2], 99, 0)
        .tensor("known", &[8], 0, 64)
        .data(32, 96);
    let g: Gguf = parse(&file).unwrap();
    let t = g.tensor("blk.0.exotic").unwrap();
    assert_eq!((t.format, t.size, t.ggml_type), (None, None, 99));
    let e = g.tensor_data(&file, t).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
    assert!(
        named(&e).contains("blk.0.exotic") && named(&e).contains("99"),
        "{e}"
    );
    assert_eq!(
        g.tensor_data(&file, g.tensor("known").unwrap())
            .unwrap()
            .len(),
        32
    );
    // An unknown tensor's offset must still be aligned and inside the file.
    let file = Raw::new(1, 0).tensor("x", &[4], 99, 1 << 20).data(32, 32);
    assert!(named(&parse(&file).unwrap_err()).contains("'x'"));
}

#[test]
fn tensor_data_checks_bounds_against_the_given_slice() {
    let file = Sample::new().file();
    let g = parse(&file).unwrap();
    let t = g.tensor("output_norm.weight").unwrap();
    assert!(matches!(
        g.tensor_data(&file[..file.len() - 1], t),
        Err(Error::Truncated { .. })
    ));
    let mut forged = t.clone();
    forged.offset = u64::MAX - 4;
    assert!(g.tensor_data(&file, &forged).is_err());
}

#[test]
fn overlapping_and_duplicate_tensors() {
    let file = Raw::new(2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 64);
    let e = parse(&file).unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    assert!(
        named(&e).contains("'b'") || named(&e).contains("'a'"),
        "{e}"
    );
    let file = Raw::new(2, 0)
        .tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .data(32, 64);
    let e = parse(&file).unwrap_err();
    assert!(
        named(&e).contains("'a'") && e.to_string().contains("duplicate"),
        "{e}"
    );
    // Same offset, listed in reverse order.
    let file = Raw::new(2, 0)
        .tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 32)
        .data(32, 64);
    assert!(parse(&file).is_err());
    // Adjacent is fine.
    let file = Raw::new(2, 0)
        .tensor("a", &[8], 0, 32)
        .tensor("b", &[8], 0, 0)
        .data(32, 64);
    assert!(parse(&file).is_ok());
}

#[test]
fn writer_refuses_bad_input() {
    let data = [0u8; 16];
    let mut w = GgufWriter::new();
    let e = w.add_tensor("t", &[3], Format::F32, &data).unwrap_err();
    assert!(named(&e).contains("'t'"), "{e}");
    assert!(w.add_tensor("t", &[], Format::F32, &data).is_err());
    assert!(w
        .add_tensor("t", &[1, 1, 1, 1, 4], Format::F32, &data)
        .is_err());
    assert!(w.add_tensor("t", &[0, 4], Format::F32, &data).is_err());
    assert!(w.add_tensor("q", &[16], Format::Q4_0, &data).is_err());
    assert!(w
        .add_tensor("t", &[u64::MAX, 2], Format::F32, &data)
        .is_err());
    w.add_tensor("t", &[4], Format::F32, &data).unwrap();
    assert!(w.add_tensor("t", &[2, 2], Format::F32, &data).is_err());

    let mut w = GgufWriter::new();
    w.add_meta(
        "mixed",
        MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U16(1)]),
    );
    assert!(named(&w.finish().unwrap_err()).contains("mixed"));
    let mut w = GgufWriter::new();
    w.add_meta("k", MetaValue::U8(1));
    w.add_meta("k", MetaValue::U8(2));
    assert!(w.finish().is_err());
    let mut w = GgufWriter::new();
    w.add_meta("general.alignment", MetaValue::U32(64));
    assert!(w.finish().is_err());
    let mut w = GgufWriter::new();
    w.add_meta("general.alignment", MetaValue::U32(32));
    assert_eq!(parse(&w.finish().unwrap()).unwrap().alignment, 32);
}

#[test]
fn empty_file_round_trips() {
    let file = GgufWriter::new().finish().unwrap();
    let g = parse(&file).unwrap();
    assert!(g.metadata.is_empty() && g.tensors.is_empty());
    assert_eq!(g.data_offset, 32);
    let e = g.architecture().unwrap_err();
    assert!(matches!(e, Error::Missing { .. }) && named(&e).contains("general.architecture"));
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Exercise everything a loader would call on a parsed file.
fn poke(g: &Gguf, file: &[u8]) {
    for t in &g.tensors {
        let _ = g.tensor_data(file, t);
        let _ = t.n_elements();
    }
    for (k, _) in &g.metadata {
        let _ = g.get_u32(k);
        let _ = g.get_f32(k);
        let _ = g.get_str(k);
        let _ = g.get_bool_opt(k);
        let _ = g.get_str_array(k);
        let _ = g.get_i32_array(k);
        let _ = g.get_f32_array(k);
    }
    let _ = g.architecture();
}

#[test]
fn fuzz_byte_flips_never_panic() {
    let clean = Sample::new().file();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut ok = 0;
    for _ in 0..10_000 {
        let mut file = clean.clone();
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            let i = (rng.next() % file.len() as u64) as usize;
            // Mostly flip bytes in the header, where the parser looks.
            let i = if rng.next().is_multiple_of(4) {
                i
            } else {
                i % 400
            };
            file[i] ^= (rng.next() % 255 + 1) as u8;
        }
        let cut = if rng.next().is_multiple_of(8) {
            (rng.next() % file.len() as u64) as usize
        } else {
            file.len()
        };
        if let Ok(g) = parse(&file[..cut]) {
            ok += 1;
            poke(&g, &file[..cut]);
        }
    }
    // Flips in tensor data and in values leave the file valid: both paths are exercised.
    assert!(ok > 100 && ok < 10_000, "{ok} of 10000 parsed");
}
