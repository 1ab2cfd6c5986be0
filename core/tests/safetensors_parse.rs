//! safetensors header parser: a valid file, one test per kind of bad input, every truncation of a
//! valid file, and a fixed-seed byte-flipping fuzz loop that must never panic.

use vspec_core::safetensors::{parse_header, SafetensorsHeader, StDtype};
use vspec_core::{Error, Format};

/// The field or tensor an error names.
fn named(e: &Error) -> String {
    match e {
        Error::Invalid { field, .. } => field.clone(),
        Error::Truncated { what, .. } => what.clone(),
        Error::Missing { what } => what.clone(),
        Error::UnsupportedFormat { tensor, format } => format!("{tensor} {format}"),
        other => format!("{other:?}"),
    }
}

/// A file from a JSON header and `data_len` bytes of data (byte i is i % 251).
fn build(json: &str, data_len: usize) -> Vec<u8> {
    let mut f = (json.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(json.as_bytes());
    f.extend((0..data_len).map(|i| (i % 251) as u8));
    f
}

const VALID: &str = r#"{"__metadata__":{"format":"pt","b":"2"},"model.embed_tokens.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"model.norm.weight":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"model.mask":{"dtype":"BOOL","shape":[],"data_offsets":[32,33]},"empty":{"dtype":"I64","shape":[0,5],"data_offsets":[33,33]}}"#;

fn valid() -> Vec<u8> {
    build(VALID, 33)
}

#[test]
fn valid_file() {
    let file = valid();
    let h: SafetensorsHeader = parse_header(&file).unwrap();
    let ds = 8 + VALID.len() as u64;
    assert_eq!(h.data_start, ds);
    assert_eq!(
        h.metadata,
        [
            ("b".to_string(), "2".to_string()),
            ("format".into(), "pt".into())
        ]
    );
    let names: Vec<_> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "model.mask",
            "empty"
        ]
    );

    let t = h.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(
        (t.dtype, t.shape.as_slice(), t.start, t.end),
        (StDtype::F32, &[2u64, 3][..], ds, ds + 24)
    );
    assert_eq!(t.len(), 24);
    assert_eq!(
        h.tensor_data(&file, t).unwrap(),
        &file[ds as usize..ds as usize + 24]
    );
    let n = h.tensor("model.norm.weight").unwrap();
    assert_eq!((n.dtype, n.start, n.end), (StDtype::BF16, ds + 24, ds + 32));
    assert_eq!(n.dtype.format(), Some(Format::BF16));
    let m = h.tensor("model.mask").unwrap();
    assert!(m.shape.is_empty() && m.len() == 1);
    let e = h.tensor("empty").unwrap();
    assert!(e.is_empty());
    assert_eq!(h.tensor_data(&file, e).unwrap(), &[] as &[u8]);
    assert!(h.tensor("nope").is_none());
    assert!(h.tensor_data(&file[..file.len() - 1], m).is_err());
}

#[test]
fn header_padding_and_no_metadata() {
    // Trailing spaces pad the header to an 8-byte multiple, as the reference writer does.
    let json = r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}   "#;
    let h = parse_header(&build(json, 4)).unwrap();
    assert!(h.metadata.is_empty());
    assert_eq!(h.tensors[0].dtype, StDtype::F16);
    // Unknown tensor fields are ignored.
    let json = r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":1}}"#;
    assert!(parse_header(&build(json, 2)).is_ok());
}

#[test]
fn all_dtypes_have_their_size() {
    for d in StDtype::ALL {
        let json = format!(
            r#"{{"t":{{"dtype":"{}","shape":[3],"data_offsets":[0,{}]}}}}"#,
            d.name(),
            3 * d.size()
        );
        let h = parse_header(&build(&json, 3 * d.size() as usize)).unwrap();
        assert_eq!(h.tensors[0].dtype, d);
    }
}

#[test]
fn every_prefix_is_an_error() {
    let file = valid();
    for len in 0..file.len() {
        assert!(
            parse_header(&file[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

#[test]
fn header_length_past_end_or_too_big() {
    let mut file = valid();
    let n = (file.len() - 8 + 1) as u64;
    file[..8].copy_from_slice(&n.to_le_bytes());
    assert!(matches!(parse_header(&file), Err(Error::Truncated { .. })));
    file[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = parse_header(&file).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && named(&e).contains("header length"),
        "{e}"
    );
    file[..8].copy_from_slice(&100_000_001u64.to_le_bytes());
    assert!(matches!(parse_header(&file), Err(Error::Invalid { .. })));
    assert!(matches!(
        parse_header(&[1, 0, 0]),
        Err(Error::Truncated { .. })
    ));
    // A GGUF file is not a safetensors file.
    assert!(matches!(
        parse_header(b"GGUF\x03\0\0\0\0\0\0\0"),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn invalid_json() {
    for json in [
        "{",
        r#"{"a":}"#,
        "[]",
        r#""x""#,
        "  {}",
        "{}x",
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},}"#,
    ] {
        let e = parse_header(&build(json, 4)).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{json}: {e}");
        assert!(named(&e).contains("safetensors header"), "{json}: {e}");
    }
    // Not UTF-8.
    let mut file = build(r#"{"a":"xx"}"#, 0);
    file[14] = 0xff;
    assert!(named(&parse_header(&file).unwrap_err()).contains("safetensors header"));
    // Deep nesting is refused by the JSON parser's recursion limit, not a stack overflow.
    let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_header(&build(&deep, 0)).is_err());
}

#[test]
fn unknown_dtype() {
    let json = r#"{"model.layers.0.w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#;
    let e = parse_header(&build(json, 1)).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e}");
    assert!(
        named(&e).contains("model.layers.0.w") && named(&e).contains("F4"),
        "{e}"
    );
    let json = r#"{"w":{"dtype":7,"shape":[2],"data_offsets":[0,1]}}"#;
    assert!(named(&parse_header(&build(json, 1)).unwrap_err()).contains("'w'"));
}

#[test]
fn size_shape_mismatch() {
    let json = r#"{"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#;
    let e = parse_header(&build(json, 16)).unwrap_err();
    assert!(
        matches!(e, Error::Invalid { .. }) && named(&e).contains("model.norm.weight"),
        "{e}"
    );
    // Shape product overflows.
    let json = r#"{"w":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#;
    let e = parse_header(&build(json, 8)).unwrap_err();
    assert!(
        named(&e).contains("'w'") && e.to_string().contains("overflow"),
        "{e}"
    );
    // Negative or fractional dims.
    for shape in ["[-1]", "[1.5]", "[\"2\"]", "2"] {
        let json = format!(r#"{{"w":{{"dtype":"U8","shape":{shape},"data_offsets":[0,2]}}}}"#);
        assert!(
            named(&parse_header(&build(&json, 2)).unwrap_err()).contains("'w'"),
            "{shape}"
        );
    }
}

#[test]
fn bad_data_offsets() {
    let cases = [
        ("[8,4]", 16),                    // begin > end
        ("[0,8]", 4),                     // past end of data
        ("[18446744073709551615,0]", 16), // begin > end, huge
        ("[0]", 16),                      // wrong arity
        ("[0,4,8]", 16),
        ("[-4,4]", 16),
    ];
    for (offsets, data_len) in cases {
        let json =
            format!(r#"{{"layer.w":{{"dtype":"U8","shape":[4],"data_offsets":{offsets}}}}}"#);
        let e = parse_header(&build(&json, data_len)).unwrap_err();
        assert!(named(&e).contains("layer.w"), "{offsets}: {e}");
    }
    let json = r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,8]}}"#;
    assert!(matches!(
        parse_header(&build(json, 4)),
        Err(Error::Truncated { .. })
    ));
    // Missing fields.
    for json in [
        r#"{"w":{"shape":[4],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"U8","data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"U8","shape":[4]}}"#,
    ] {
        let e = parse_header(&build(json, 4)).unwrap_err();
        assert!(
            matches!(e, Error::Missing { .. }) && named(&e).contains("'w'"),
            "{json}: {e}"
        );
    }
    let json = r#"{"w":[1,2]}"#;
    assert!(named(&parse_header(&build(json, 4)).unwrap_err()).contains("'w'"));
}

#[test]
fn overlaps_and_duplicates() {
    let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    let e = parse_header(&build(json, 8)).unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
    let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#;
    let e = parse_header(&build(json, 8)).unwrap_err();
    assert!(
        named(&e).contains("'a'") && e.to_string().contains("duplicate"),
        "{e}"
    );
    let json = r#"{"__metadata__":{},"__metadata__":{}}"#;
    assert!(parse_header(&build(json, 0)).is_err());
    // Zero-sized tensors overlap nothing.
    let json = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}"#;
    assert!(parse_header(&build(json, 4)).is_ok());
}

#[test]
fn bad_metadata() {
    for meta in [r#"{"a":1}"#, r#"{"a":null}"#, r#""x""#, "[]"] {
        let json = format!(r#"{{"__metadata__":{meta}}}"#);
        let e = parse_header(&build(&json, 0)).unwrap_err();
        assert!(named(&e).contains("__metadata__"), "{meta}: {e}");
    }
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

#[test]
fn fuzz_byte_flips_never_panic() {
    let clean = valid();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut ok = 0;
    for _ in 0..10_000 {
        let mut file = clean.clone();
        for _ in 0..1 + rng.next() % 3 {
            let i = (rng.next() % file.len() as u64) as usize;
            // Bias towards ASCII digits and JSON punctuation so some mutants stay valid JSON.
            file[i] = match rng.next() % 3 {
                0 => b"0123456789[]{},:\"-"[(rng.next() % 18) as usize],
                _ => file[i] ^ (rng.next() % 255 + 1) as u8,
            };
        }
        if let Ok(h) = parse_header(&file) {
            ok += 1;
            for t in &h.tensors {
                assert!(h.tensor_data(&file, t).unwrap().len() as u64 == t.end - t.start);
            }
        }
    }
    assert!(ok > 10 && ok < 10_000, "{ok} of 10000 parsed");
}
