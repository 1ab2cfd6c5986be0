//! `.vspec` container: XXH64 against libxxhash's values, a round trip, one test per kind of bad
//! input (each built with a valid checksum, so the parser itself must catch it), every
//! truncation of a valid file, and a fixed-seed byte-flipping loop that must never panic.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use vspec_core::graph::RopeLayout;
use vspec_core::model::{Arch, ModelConfig, RopeScaling};
use vspec_core::vspecfile::{self as vf, TokenizerParts, Xxh64};
use vspec_core::{Error, Format};

fn config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_layers: 1,
        d_model: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        d_ff: 128,
        vocab: 32,
        train_ctx: 128,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_dim: 16,
        rope_layout: RopeLayout::Neox,
        rope_scaling: RopeScaling::FreqFactors(vec![
            1.0,
            0.1,
            1.0 / 3.0,
            7.25,
            1e-7,
            3.4e38,
            0.5,
            2.0,
        ]),
        tied_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        output_mix: false,
        qk_norm: false,
    }
}

fn tokenizer() -> TokenizerParts {
    TokenizerParts {
        json: r#"{"version":"1.0","model":{"type":"BPE"}}"#.to_string(),
        vocab_size: 32,
        bos_id: Some(1),
        bos_token: Some("<s>".into()),
        eos_id: Some(2),
        eos_token: Some("</s>".into()),
        eos_ids: vec![2, 3],
        add_bos: true,
        chat_template: Some("{{ messages }}\n\"quoted\" \u{1F600}".into()),
        byte_level: true,
        special_ids: vec![1, 2, 3],
        token_bytes: vec![(5, vec![0xff, 0x00])],
    }
}

fn metadata() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("source".to_string(), "tiny.gguf".to_string()),
        (
            "recipe".to_string(),
            "ffn_down: Q4_K\nrest: Q4_0".to_string(),
        ),
    ])
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A valid file: an F32 vector (not a multiple of 64 bytes, so the next tensor is padded), a
/// Q4_0 matrix and a 3-D F16 tensor.
fn sample() -> Vec<u8> {
    let a = pattern(4 * 17, 1);
    let b = pattern(Format::Q4_0.tensor_bytes(64, 3, "b").unwrap(), 2);
    let c = pattern(2 * 4 * 3 * 2, 3);
    vf::to_bytes(
        &config(),
        &tokenizer(),
        &metadata(),
        &[
            ("a", Format::F32, &[17], &a),
            ("blk.0.b", Format::Q4_0, &[64, 3], &b),
            ("c", Format::F16, &[4, 3, 2], &c),
        ],
    )
    .unwrap()
}

fn header_json(bytes: &[u8]) -> Value {
    let hl = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[40..40 + hl]).unwrap()
}

fn data_of(bytes: &[u8]) -> Vec<u8> {
    let off = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    bytes[off..off + len].to_vec()
}

/// A file with `header` (any bytes) and `data`, framed and checksummed correctly.
fn build_raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let off = vf::min_data_offset(header.len() as u64).unwrap();
    let mut out = vf::preamble(header.len() as u64, off, data.len() as u64).to_vec();
    out.extend_from_slice(header);
    out.resize(off as usize, 0);
    let sum = vf::checksum(&out, data);
    out.extend_from_slice(data);
    out.extend_from_slice(&vf::trailer(sum));
    out
}

fn build(header: &Value, data: &[u8]) -> Vec<u8> {
    build_raw(&serde_json::to_vec(header).unwrap(), data)
}

/// The sample's header with `edit` applied, rebuilt with a valid checksum.
fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let s = sample();
    let mut h = header_json(&s);
    edit(&mut h);
    build(&h, &data_of(&s))
}

fn invalid_field(e: &Error) -> String {
    match e {
        Error::Invalid { field, .. } => field.clone(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// XXH64

#[test]
fn xxh64_matches_libxxhash() {
    // Values from libxxhash 0.8 (XXH64 via ctypes).
    let long: Vec<u8> = (0..=255u8).cycle().take(1024).chain(*b"xyz").collect();
    let cases: [(&[u8], u64, u64); 7] = [
        (b"", 0, 0xef46db3751d8e999),
        (b"a", 0, 0xd24ec4f1a98c6e5b),
        (b"abc", 0, 0x44bc2cf5ad770999),
        (
            b"Nobody inspects the spammish repetition",
            0,
            0xfbcea83c8a378bf1,
        ),
        (&long, 0, 0xe146cb31b65bc21a),
        (&long, 12345, 0xe323a559c0f2ee86),
        (
            b"0123456789abcdef0123456789abcdef01234",
            7,
            0x12b6d879083cd1f2,
        ),
    ];
    for (data, seed, want) in cases {
        assert_eq!(
            vf::xxh64(data, seed),
            want,
            "len {} seed {seed}",
            data.len()
        );
    }
}

#[test]
fn xxh64_streaming_equals_one_shot() {
    let data = pattern(5000, 9);
    let want = vf::xxh64(&data, 42);
    for step in [1, 3, 7, 31, 32, 33, 64, 100, 4999] {
        let mut h = Xxh64::new(42);
        for c in data.chunks(step) {
            h.update(c);
        }
        assert_eq!(h.digest(), want, "chunks of {step}");
    }
    let mut h = Xxh64::new(42);
    h.update(&data[..10]);
    h.update(&[]);
    h.update(&data[10..]);
    assert_eq!(h.digest(), want);
}

#[test]
fn file_checksums_are_unchanged() {
    // Values from the hand-written XXH64 that wrote the first .vspec files: a new hasher must
    // give the same bits or those files stop verifying.
    let known = [
        (40, 0, 0x5c7675aada44aadd),
        (104, 5000, 0x4c1a4d29867c3add),
        (4160, 1 << 20, 0x93e06c342338205a),
    ];
    for (head_len, data_len, want) in known {
        let (head, data) = (pattern(head_len, 3), pattern(data_len, 9));
        assert_eq!(
            vf::checksum(&head, &data),
            want,
            "{head_len} + {data_len} bytes"
        );
        let mut streamed = Xxh64::new(0);
        for piece in data.chunks(4096) {
            streamed.update(piece);
        }
        assert_eq!(vf::combine_checksum(&head, streamed.digest()), want);
    }
}

/// `cargo test --release -p vspec-core --test vspecfile -- --ignored --nocapture`
#[test]
#[ignore = "a timing that checks nothing; run with --ignored --nocapture"]
fn xxh64_speed() {
    let data = pattern(100 << 20, 5);
    let mut best = f64::MAX;
    let mut sum = 0;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        sum ^= vf::xxh64(std::hint::black_box(&data), 0);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "xxh64 over 100 MiB: {:.1} ms, {:.2} GB/s ({sum:x})",
        best * 1e3,
        data.len() as f64 / best / 1e9
    );
}

// ---------------------------------------------------------------------------------------------
// Round trip

#[test]
fn round_trip() {
    let bytes = sample();
    vf::verify_checksum(&bytes).unwrap();
    let f = vf::parse(&bytes).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.config, config());
    assert_eq!(f.tokenizer, tokenizer());
    assert_eq!(f.metadata, metadata());
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(bytes.len() as u64, f.data_offset + f.data_len + 16);
    let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "blk.0.b", "c"]);
    let a = f.tensor("a").unwrap();
    assert_eq!(
        (a.format, a.dims.clone(), a.offset, a.bytes),
        (Format::F32, vec![17], 0, 68)
    );
    let b = f.tensor("blk.0.b").unwrap();
    assert_eq!(
        b.offset, 128,
        "'a' ends at 68; the next 64-aligned offset is 128"
    );
    assert_eq!(f.tensor_data(&bytes, a).unwrap(), pattern(68, 1));
    assert_eq!(
        f.tensor_data(&bytes, b).unwrap(),
        pattern(b.bytes as usize, 2)
    );
    let c = f.tensor("c").unwrap();
    assert_eq!(c.n_elements(), 24);
    assert_eq!(f.tensor_data(&bytes, c).unwrap(), pattern(48, 3));
    for t in &f.tensors {
        let start = f.data_offset + t.offset;
        assert_eq!(start % 64, 0, "{}", t.name);
    }
    assert!(f.tensor("missing").is_none());
    // The header is readable JSON with the documented keys and Format's serde names.
    let h = header_json(&bytes);
    assert_eq!(h["tensors"][1]["format"], "Q4_0");
    assert_eq!(h["tensors"][2]["dims"], json!([4, 3, 2]));
    assert_eq!(h["tokenizer"]["bos_id"], 1);
}

#[test]
fn every_format_name_round_trips() {
    for f in Format::ALL {
        let name = vf::format_name(f);
        assert_eq!(vf::format_from_name(&name), Some(f), "{name}");
    }
    assert_eq!(vf::format_from_name("Q9_Z"), None);
}

#[test]
fn every_format_stores_and_loads() {
    for f in Format::ALL {
        let cols = f.block_elems() as u64 * 2;
        let data = pattern(f.tensor_bytes(cols as usize, 3, "t").unwrap(), 4);
        let bytes = vf::to_bytes(
            &config(),
            &tokenizer(),
            &metadata(),
            &[("t", f, &[cols, 3], &data)],
        )
        .unwrap();
        let p = vf::parse(&bytes).unwrap();
        assert_eq!(p.tensors[0].format, f);
        assert_eq!(p.tensor_data(&bytes, &p.tensors[0]).unwrap(), data);
    }
}

#[test]
fn empty_tensor_list_is_valid() {
    let bytes = vf::to_bytes(&config(), &tokenizer(), &BTreeMap::new(), &[]).unwrap();
    vf::verify_checksum(&bytes).unwrap();
    let f = vf::parse(&bytes).unwrap();
    assert!(f.tensors.is_empty());
    assert_eq!(f.data_len, 0);
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for n in 0..bytes.len() {
        assert!(
            vf::parse(&bytes[..n]).is_err(),
            "parse accepted a {n}-byte prefix"
        );
        assert!(
            vf::verify_checksum(&bytes[..n]).is_err(),
            "verify accepted a {n}-byte prefix"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        invalid_field(&vf::parse(&longer).unwrap_err()),
        "vspec file length"
    );
}

#[test]
fn wrong_magic() {
    let mut b = sample();
    b[0] = b'G';
    assert_eq!(
        vf::parse(&b).unwrap_err(),
        Error::BadMagic { expected: "vspec" }
    );
    assert_eq!(
        vf::verify_checksum(&b).unwrap_err(),
        Error::BadMagic { expected: "vspec" }
    );
    assert_eq!(
        vf::parse(b"GGUF").unwrap_err(),
        Error::BadMagic { expected: "vspec" }
    );
    assert!(matches!(
        vf::parse(b"VSP").unwrap_err(),
        Error::Truncated { .. }
    ));
}

#[test]
fn unknown_version_and_flags() {
    for v in [0u8, 3] {
        let mut b = sample();
        b[8] = v;
        let e = vf::parse(&b).unwrap_err();
        assert_eq!(invalid_field(&e), "vspec version");
        assert!(e.to_string().contains(&format!("version {v}")), "{e}");
    }
    let mut b = sample();
    b[13] = 1;
    assert_eq!(invalid_field(&vf::parse(&b).unwrap_err()), "vspec flags");
}

#[test]
fn header_length_past_end() {
    for hl in [u64::MAX, u64::MAX - 39, 1 << 40] {
        let mut b = sample();
        b[16..24].copy_from_slice(&hl.to_le_bytes());
        let e = vf::parse(&b).unwrap_err();
        assert!(
            matches!(e, Error::Truncated { .. } | Error::Invalid { .. }),
            "{e:?}"
        );
        assert!(vf::verify_checksum(&b).is_err());
    }
}

#[test]
fn bad_data_offset_and_length() {
    let s = sample();
    for (at, v) in [
        (24, 100u64),
        (24, 0),
        (24, u64::MAX - 63),
        (32, u64::MAX),
        (32, 1 << 50),
        (32, 0),
    ] {
        let mut b = s.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        assert!(vf::parse(&b).is_err(), "field at {at} = {v}");
        assert!(vf::verify_checksum(&b).is_err(), "field at {at} = {v}");
    }
}

#[test]
fn bad_end_magic() {
    let mut b = sample();
    let n = b.len();
    b[n - 1] ^= 1;
    assert_eq!(
        invalid_field(&vf::parse(&b).unwrap_err()),
        "vspec end magic"
    );
}

#[test]
fn bad_json() {
    let s = sample();
    for h in [
        &b"{"[..],
        b"",
        b"[]",
        b"{\"config\": 1}",
        b"\xff\xfe",
        b"null",
    ] {
        let e = vf::parse(&build_raw(h, &data_of(&s))).unwrap_err();
        assert_eq!(
            invalid_field(&e),
            "vspec header",
            "{:?}",
            String::from_utf8_lossy(h)
        );
    }
    let e = vf::parse(&edited(|h| h["surprise"] = json!(1))).unwrap_err();
    assert!(e.to_string().contains("surprise"), "{e}");
    let e = vf::parse(&edited(|h| h["tensors"][0]["codebook"] = json!(1))).unwrap_err();
    assert!(e.to_string().contains("codebook"), "{e}");
}

#[test]
fn unknown_format_name() {
    let e = vf::parse(&edited(|h| h["tensors"][1]["format"] = json!("Q9_Z"))).unwrap_err();
    assert_eq!(
        e,
        Error::UnsupportedFormat {
            tensor: "blk.0.b".into(),
            format: "Q9_Z".into()
        }
    );
}

#[test]
fn tensor_past_end() {
    let e = vf::parse(&edited(|h| h["tensors"][2]["offset"] = json!(1 << 20))).unwrap_err();
    assert_eq!(invalid_field(&e), "tensor 'c'");
    assert!(e.to_string().contains("past the data section"), "{e}");
    let e = vf::parse(&edited(|h| {
        h["tensors"][2]["offset"] = json!(u64::MAX - 63)
    }))
    .unwrap_err();
    assert_eq!(invalid_field(&e), "tensor 'c'");
}

#[test]
fn misaligned_offset() {
    let e = vf::parse(&edited(|h| h["tensors"][1]["offset"] = json!(96))).unwrap_err();
    assert_eq!(invalid_field(&e), "tensor 'blk.0.b'");
    assert!(e.to_string().contains("multiple of 64"), "{e}");
}

#[test]
fn overlapping_tensors() {
    let e = vf::parse(&edited(|h| h["tensors"][0]["offset"] = json!(128))).unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
}

#[test]
fn duplicate_names_wrong_sizes_and_shapes() {
    let e = vf::parse(&edited(|h| h["tensors"][2]["name"] = json!("a"))).unwrap_err();
    assert!(e.to_string().contains("more than once"), "{e}");
    let e = vf::parse(&edited(|h| h["tensors"][0]["bytes"] = json!(64))).unwrap_err();
    assert_eq!(invalid_field(&e), "tensor 'a'");
    let e = vf::parse(&edited(|h| h["tensors"][1]["dims"] = json!([63, 3]))).unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
    for dims in [
        json!([]),
        json!([1, 1, 1, 1, 1]),
        json!([17, 0]),
        json!([u64::MAX, u64::MAX]),
    ] {
        assert!(
            vf::parse(&edited(|h| h["tensors"][0]["dims"] = dims.clone())).is_err(),
            "{dims}"
        );
    }
    let e = vf::parse(&edited(|h| h["tensors"][0]["name"] = json!(""))).unwrap_err();
    assert!(e.to_string().contains("empty name"), "{e}");
}

#[test]
fn data_section_longer_than_tensors() {
    let s = sample();
    let mut data = data_of(&s);
    data.extend_from_slice(&[0; 64]);
    let e = vf::parse(&build(&header_json(&s), &data)).unwrap_err();
    assert_eq!(invalid_field(&e), "vspec data section");
}

#[test]
fn bad_config_and_tokenizer() {
    let e = vf::parse(&edited(|h| h["config"]["n_heads"] = json!(0))).unwrap_err();
    assert_eq!(invalid_field(&e), "n_heads");
    let e = vf::parse(&edited(|h| h["tokenizer"]["bos_id"] = json!(32))).unwrap_err();
    assert_eq!(invalid_field(&e), "tokenizer.bos_id");
    let e = vf::parse(&edited(|h| h["tokenizer"]["eos_ids"] = json!([2, 99]))).unwrap_err();
    assert_eq!(invalid_field(&e), "tokenizer.eos_ids");
}

#[test]
fn checksum_mismatch() {
    let s = sample();
    let f = vf::parse(&s).unwrap();
    // One bit in the data, in the header, in the padding, in the stored checksum.
    let n = s.len();
    for at in [
        f.data_offset as usize + 5,
        45,
        f.data_offset as usize - 1,
        n - 16,
    ] {
        let mut b = s.clone();
        b[at] ^= 0x10;
        let e = vf::verify_checksum(&b).unwrap_err();
        assert_eq!(invalid_field(&e), "checksum", "byte {at}");
        let msg = e.to_string();
        assert!(
            msg.contains("stored") && msg.contains("computed") && msg.contains("corrupt"),
            "{msg}"
        );
    }
}

#[test]
fn tensor_data_rejects_foreign_entries() {
    let s = sample();
    let f = vf::parse(&s).unwrap();
    let mut t = f.tensors[0].clone();
    t.offset = u64::MAX;
    assert!(f.tensor_data(&s, &t).is_err());
    assert!(f.tensor_data(&s[..100], &f.tensors[2]).is_err());
}

#[test]
fn writer_helpers_refuse_what_the_parser_refuses() {
    let mut p = vf::TensorPlacer::new();
    assert_eq!(p.place("a", Format::F32, &[17], 68).unwrap(), 0);
    assert_eq!(p.place("b", Format::F32, &[1], 4).unwrap(), 60);
    assert!(p.place("a", Format::F32, &[1], 4).is_err());
    assert!(p.place("c", Format::Q4_0, &[31], 18).is_err());
    assert!(p.place("c", Format::F32, &[2], 4).is_err());
    assert!(p.place("", Format::F32, &[1], 4).is_err());
    let mut bad = config();
    bad.d_model = 0;
    assert!(vf::encode_header(&bad, &tokenizer(), &metadata(), &[], 0).is_err());
    let mut tok = tokenizer();
    tok.special_ids.push(40);
    assert!(vf::encode_header(&config(), &tok, &metadata(), &[], 0).is_err());
}

#[test]
fn byte_flips_never_panic() {
    let s = sample();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut b = s.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
        }
        let _ = vf::parse(&b);
        let _ = vf::verify_checksum(&b);
    }
    // Flips inside the preamble and header specifically (the JSON parser's input).
    for at in 0..200.min(s.len()) {
        for v in [0u8, 0xff, b'"', b'}', b'9'] {
            let mut b = s.clone();
            b[at] = v;
            let _ = vf::parse(&b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tokenizer's JSON: compressed in version 2, a plain string in version 1

#[test]
fn tokenizer_json_is_stored_compressed_and_plain_still_reads() {
    let t = tokenizer();
    let wire = serde_json::to_value(&t).unwrap();
    assert!(
        wire.get("json").is_none() && wire["json_deflate"].is_string(),
        "{wire}"
    );
    assert_eq!(
        serde_json::from_value::<vf::TokenizerParts>(wire.clone()).unwrap(),
        t
    );
    // Version 1 wrote the JSON as a plain string.
    let mut v1 = wire.clone();
    v1.as_object_mut().unwrap().remove("json_deflate");
    v1["json"] = serde_json::Value::String(t.json.clone());
    assert_eq!(
        serde_json::from_value::<vf::TokenizerParts>(v1.clone()).unwrap(),
        t
    );
    // Both, neither, bad base64, bad deflate: errors naming the field (the size cap is tested
    // in the crate, with a small limit).
    let mut both = v1.clone();
    both["json_deflate"] = wire["json_deflate"].clone();
    let mut neither = v1.clone();
    neither.as_object_mut().unwrap().remove("json");
    let mut not_b64 = wire.clone();
    not_b64["json_deflate"] = serde_json::Value::String("%%%".into());
    let mut not_deflate = wire.clone();
    not_deflate["json_deflate"] = serde_json::Value::String("AAAAAAAA".into());
    for (bad, needle) in [
        (both, "exactly one"),
        (neither, "exactly one"),
        (not_b64, "not base64"),
        (not_deflate, "cannot inflate"),
    ] {
        let e = serde_json::from_value::<vf::TokenizerParts>(bad).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}
