//! `.vspec` files end to end: the tiny Hugging Face Llama fixture written as a `.vspec` (F32
//! weights, tokenizer, config) must load through [`ModelFile::open`] and give bit-identical
//! logits and identical tokenization; the SmolLM2 GGUF (when present) likewise with its quantized
//! weights and GGUF-built tokenizer. Then the writer's failure modes: unwritable directory,
//! producer error mid-stream, bad tensor, dropped writer (no output, no temp file left), and a
//! corrupt file refused at open with a checksum error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::anyhow;
use vspec_core::graph::Limits;
use vspec_core::vspecfile as vf;
use vspec_core::Format;
use vspec_host::model::Source;
use vspec_host::tokenizer::Tokenizer;
use vspec_host::vspecfile::{write_vspec, TensorItem, VspecWriter};
use vspec_host::{Engine, ModelFile};

#[path = "common/smollm2.rs"]
mod smollm2;
use smollm2::smollm2_gguf;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vspec-vspecfile-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// Names of the files in the directory, sorted.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hf_llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/llama")
}

/// Every tensor of `model` by GGUF name, sorted, as (name, format, dims, bytes).
fn all_tensors(model: &ModelFile) -> Vec<TensorItem<Vec<u8>>> {
    let names: Vec<String> = match &model.source {
        Source::Hf { names, .. } => names.keys().cloned().collect(),
        Source::Gguf { header } => header.tensors.iter().map(|t| t.name.clone()).collect(),
        Source::Vspec { header } => header.tensors.iter().map(|t| t.name.clone()).collect(),
    };
    let mut out: Vec<_> = names
        .into_iter()
        .map(|n| {
            let t = model.raw_tensor(&n).unwrap().unwrap();
            (n, t.format, t.dims, t.data.to_vec())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Converts `src` to a `.vspec` at `dst` (all tensors as they are stored), returning the
/// metadata written.
fn convert(src: &ModelFile, dst: &Path) -> BTreeMap<String, String> {
    let tok = src.tokenizer().unwrap().to_parts().unwrap();
    let meta = BTreeMap::from([
        ("source".to_string(), src.path.display().to_string()),
        ("converter".to_string(), "vspecfile test".to_string()),
    ]);
    let items = all_tensors(src).into_iter().map(Ok);
    write_vspec(dst, &src.config, &tok, &meta, items).unwrap();
    meta
}

/// Logits (all positions) for `tokens`, in steps of `step`.
fn logits(model: &ModelFile, tokens: &[u32], step: usize) -> Vec<f32> {
    let lim = Limits {
        max_ctx: 64,
        max_tokens: step,
        all_logits: true,
    };
    let mut engine = Engine::new(model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    let mut out = Vec::new();
    for chunk in tokens.chunks(step) {
        out.extend_from_slice(sess.forward(chunk).unwrap());
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

const TEXTS: &[&str] = &[
    "",
    " ",
    "Hello, world!",
    "  leading spaces and trailing   ",
    "line one\nline two\n\n\tTabbed",
    "12345 3.14159 2,718,281",
    "I'm can't won't they're",
    "emoji: 😀👍🏽🚀 and ❤️ 中文分词测试 Ünïcödé Straße",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<s>hello</s> <unk> text<|endoftext|>more",
    "def f(x):\n    return x ** 2  # square\n",
];

/// The rebuilt tokenizer must behave exactly like the original.
fn assert_same_tokenizer(a: &Tokenizer, b: &Tokenizer, extra: &[String]) {
    assert_eq!(a.vocab_size(), b.vocab_size());
    assert_eq!(a.bos_id(), b.bos_id());
    assert_eq!(a.bos_token(), b.bos_token());
    assert_eq!(a.eos_token(), b.eos_token());
    assert_eq!(a.eos_ids(), b.eos_ids());
    assert_eq!(a.add_bos(), b.add_bos());
    assert_eq!(a.chat_template(), b.chat_template());
    for id in 0..a.vocab_size() as u32 + 2 {
        assert_eq!(a.is_special(id), b.is_special(id), "special flag of {id}");
        assert_eq!(a.token_bytes(id), b.token_bytes(id), "bytes of {id}");
    }
    for text in TEXTS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        for bos in [false, true] {
            let ids = a.encode(text, bos).unwrap();
            assert_eq!(b.encode(text, bos).unwrap(), ids, "{text:?} (bos {bos})");
            assert_eq!(b.decode(&ids), a.decode(&ids), "{text:?}");
        }
    }
    // The parts themselves are stable: rebuilding from the rebuilt one gives the same parts.
    assert_eq!(a.to_parts().unwrap(), b.to_parts().unwrap());
}

#[test]
fn hf_llama_round_trip_is_bit_exact() {
    let dir = TempDir::new("hf");
    let hf = ModelFile::open(&hf_llama()).unwrap();
    // An extension that says nothing: the magic decides.
    let out = dir.path().join("tiny.bin");
    let meta = convert(&hf, &out);
    assert_eq!(dir.entries(), ["tiny.bin"], "no temp file left behind");

    let v = ModelFile::open(&out).unwrap();
    let h = v.vspec().expect("opened as .vspec");
    assert!(v.gguf().is_none());
    assert_eq!(h.metadata, meta);
    assert_eq!(v.config, hf.config);
    let names: Vec<_> = all_tensors(&hf);
    assert_eq!(h.tensors.len(), names.len());
    for (name, format, dims, data) in &names {
        let t = v.raw_tensor(name).unwrap().unwrap();
        assert_eq!((t.format, &t.dims), (*format, dims), "{name}");
        assert_eq!(t.data, &data[..], "{name}");
        // Zero-copy: the view points into the mapped file, 64-byte aligned.
        let base = v.maps[0].1.as_ptr() as usize;
        let p = t.data.as_ptr() as usize;
        assert!(
            p >= base && p + t.data.len() <= base + v.maps[0].1.len(),
            "{name} not in the map"
        );
        assert_eq!((p - base) % 64, 0, "{name}");
    }
    assert!(v.raw_tensor("no.such.tensor").unwrap().is_none());

    let (ta, tb) = (hf.tokenizer().unwrap(), v.tokenizer().unwrap());
    assert_same_tokenizer(&ta, &tb, &[]);

    let tokens = ta
        .encode("The quick brown fox jumps over the lazy dog", true)
        .unwrap();
    assert!(tokens.len() >= 4);
    for step in [64, 3, 1] {
        assert!(
            same_bits(&logits(&hf, &tokens, step), &logits(&v, &tokens, step)),
            "step {step}"
        );
    }
}

#[test]
fn header_that_outgrows_its_gap_is_still_written() {
    let dir = TempDir::new("reserve");
    let hf = ModelFile::open(&hf_llama()).unwrap();
    let tok = hf.tokenizer().unwrap().to_parts().unwrap();
    let meta = BTreeMap::new();
    let a = dir.path().join("a.vspec");
    let b = dir.path().join("b.vspec");
    let mut w = VspecWriter::create_with_reserve(&a, &hf.config, &tok, &meta, 0).unwrap();
    for (n, f, d, data) in all_tensors(&hf) {
        w.add_tensor(&n, f, &d, &data).unwrap();
    }
    w.finish().unwrap();
    write_vspec(
        &b,
        &hf.config,
        &tok,
        &meta,
        all_tensors(&hf).into_iter().map(Ok),
    )
    .unwrap();
    assert_eq!(dir.entries(), ["a.vspec", "b.vspec"]);
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    vf::verify_checksum(&ba).unwrap();
    let (pa, pb) = (vf::parse(&ba).unwrap(), vf::parse(&bb).unwrap());
    assert!(
        pa.data_offset < pb.data_offset,
        "the small reserve gives the tight layout"
    );
    assert_eq!(pa.tensors, pb.tensors);
    for t in &pa.tensors {
        assert_eq!(
            pa.tensor_data(&ba, t).unwrap(),
            pb.tensor_data(&bb, t).unwrap()
        );
    }
    ModelFile::open(&a).unwrap();
}

#[test]
fn smollm2_gguf_round_trip() {
    let Some(path) = smollm2_gguf() else {
        return;
    };
    let dir = TempDir::new("smollm2");
    let g = ModelFile::open(&path).unwrap();
    let out = dir.path().join("smollm2.vspec");
    convert(&g, &out);
    if let Some(keep) = std::env::var_os("VSPEC_TEST_KEEP_VSPEC") {
        // For trying the CLI on a real .vspec file.
        std::fs::copy(&out, keep).unwrap();
    }
    let v = ModelFile::open(&out).unwrap();
    assert_eq!(v.config, g.config);

    let (ta, tb) = (g.tokenizer().unwrap(), v.tokenizer().unwrap());
    let cases_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/tokenize.json");
    let extra: Vec<String> = std::fs::read_to_string(cases_path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("cases").and_then(|c| c.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["text"].as_str().map(String::from))
        .collect();
    assert_same_tokenizer(&ta, &tb, &extra);

    let tokens = ta
        .encode(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
            true,
        )
        .unwrap();
    assert!(same_bits(&logits(&g, &tokens, 8), &logits(&v, &tokens, 8)));
}

#[test]
fn gguf_tokenizer_parts_round_trip() {
    // The GGUF-built tokenizer through its parts, without a model file (always runs when the
    // SmolLM2 GGUF is present; cheap).
    let Some(path) = smollm2_gguf() else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let g = vspec_core::gguf::parse(&bytes).unwrap();
    let a = Tokenizer::from_gguf(&g).unwrap();
    let parts = a.to_parts().unwrap();
    assert!(parts.byte_level);
    assert!(
        parts.token_bytes.is_empty(),
        "bytes derive from the pipeline: {:?}",
        &parts.token_bytes[..3.min(parts.token_bytes.len())]
    );
    let b = Tokenizer::from_parts(&parts).unwrap();
    assert_same_tokenizer(&a, &b, &[]);
}

#[test]
fn from_parts_rejects_bad_parts() {
    let hf = ModelFile::open(&hf_llama()).unwrap();
    let mut p = hf.tokenizer().unwrap().to_parts().unwrap();
    p.json = "{not json".into();
    let e = Tokenizer::from_parts(&p).unwrap_err();
    assert!(format!("{e:#}").contains("tokenizer"), "{e:#}");
    let mut p = hf.tokenizer().unwrap().to_parts().unwrap();
    p.bos_id = Some(p.vocab_size);
    assert!(Tokenizer::from_parts(&p).is_err());
}

// ---------------------------------------------------------------------------------------------
// Writer failures

fn tiny_parts() -> (vspec_core::model::ModelConfig, vf::TokenizerParts) {
    let hf = ModelFile::open(&hf_llama()).unwrap();
    (
        hf.config.clone(),
        hf.tokenizer().unwrap().to_parts().unwrap(),
    )
}

#[test]
fn unwritable_output_directory_is_a_clear_error() {
    let dir = TempDir::new("unwritable");
    let (cfg, tok) = tiny_parts();
    let missing = dir.path().join("no/such/dir/out.vspec");
    let e = write_vspec(
        &missing,
        &cfg,
        &tok,
        &BTreeMap::new(),
        std::iter::empty::<anyhow::Result<TensorItem<Vec<u8>>>>(),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(
        msg.contains(&dir.path().join("no/such/dir").display().to_string()),
        "{msg}"
    );
    // A "directory" that is a file.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let under_file = dir.path().join("file/out.vspec");
    let e = write_vspec(
        &under_file,
        &cfg,
        &tok,
        &BTreeMap::new(),
        std::iter::empty::<anyhow::Result<TensorItem<Vec<u8>>>>(),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(&under_file.display().to_string()),
        "{e:#}"
    );
    assert_eq!(dir.entries(), ["file"]);
    // A read-only directory (only meaningful when not running as root).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = std::fs::File::create(ro.join("probe")).is_ok();
        if !probe {
            let e = write_vspec(
                &ro.join("out.vspec"),
                &cfg,
                &tok,
                &BTreeMap::new(),
                std::iter::empty::<anyhow::Result<TensorItem<Vec<u8>>>>(),
            )
            .unwrap_err();
            assert!(
                format!("{e:#}").contains(&ro.display().to_string()),
                "{e:#}"
            );
            assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn producer_error_mid_stream_leaves_nothing() {
    let dir = TempDir::new("midstream");
    let hf = ModelFile::open(&hf_llama()).unwrap();
    let (cfg, tok) = tiny_parts();
    let out = dir.path().join("out.vspec");
    let mut items: Vec<anyhow::Result<TensorItem<Vec<u8>>>> =
        all_tensors(&hf).into_iter().map(Ok).collect();
    items.insert(5, Err(anyhow!("quantizer ran out of patience")));
    let e = write_vspec(&out, &cfg, &tok, &BTreeMap::new(), items).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("patience") && msg.contains("out.vspec"),
        "{msg}"
    );
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());

    // An existing file at the target survives a failed rewrite untouched.
    std::fs::write(&out, b"old contents").unwrap();
    let bad = vec![Ok((
        "t".to_string(),
        Format::F32,
        vec![4u64],
        vec![0u8; 15],
    ))];
    let e = write_vspec(&out, &cfg, &tok, &BTreeMap::new(), bad).unwrap_err();
    assert!(format!("{e:#}").contains("tensor 't'"), "{e:#}");
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    assert_eq!(dir.entries(), ["out.vspec"]);

    // Duplicate names, a bad shape, an unfinished (dropped) writer: no output either.
    std::fs::remove_file(&out).unwrap();
    let dup = vec![
        Ok(("t".to_string(), Format::F32, vec![4u64], vec![0u8; 16])),
        Ok(("t".to_string(), Format::F32, vec![4u64], vec![0u8; 16])),
    ];
    assert!(write_vspec(&out, &cfg, &tok, &BTreeMap::new(), dup).is_err());
    let shape = vec![Ok((
        "q".to_string(),
        Format::Q4_0,
        vec![31u64],
        vec![0u8; 18],
    ))];
    assert!(write_vspec(&out, &cfg, &tok, &BTreeMap::new(), shape).is_err());
    let mut w = VspecWriter::create(&out, &cfg, &tok, &BTreeMap::new()).unwrap();
    w.add_tensor("t", Format::F32, &[4], &[0; 16]).unwrap();
    assert_eq!(dir.entries().len(), 1, "the temp file exists while writing");
    drop(w);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn corrupt_file_is_refused_at_open() {
    let dir = TempDir::new("corrupt");
    let hf = ModelFile::open(&hf_llama()).unwrap();
    let out = dir.path().join("m.vspec");
    convert(&hf, &out);
    let good = std::fs::read(&out).unwrap();
    let h = vf::parse(&good).unwrap();

    let mut bad = good.clone();
    bad[h.data_offset as usize + 1000] ^= 1;
    std::fs::write(&out, &bad).unwrap();
    let msg = format!(
        "{:#}",
        ModelFile::open(&out).err().expect("corrupt file opened")
    );
    assert!(msg.contains("checksum") && msg.contains("m.vspec"), "{msg}");

    // Truncated: a clear error naming the file, never a panic.
    for n in [good.len() - 1, good.len() / 2, 41, 8, 3] {
        std::fs::write(&out, &good[..n]).unwrap();
        let msg = format!(
            "{:#}",
            ModelFile::open(&out).err().expect("truncated file opened")
        );
        assert!(msg.contains("m.vspec"), "{msg}");
    }
    std::fs::write(&out, &good).unwrap();
    ModelFile::open(&out).unwrap();
}
