//! The `vspec` binary on bad input: every case must exit with a clean error (non-zero status, not
//! Rust's panic status 101, no "panicked" on stderr) whose message names the file, metadata key,
//! field or tensor at fault.
//!
//! The GGUF cases start from a small valid GGUF built in memory from the tiny Hugging Face Llama
//! fixture (tests/fixtures/hf/llama) with [`GgufWriter`], q/k rows permuted the way
//! llama.cpp's convert_hf_to_gguf does; that file is checked to work (generate, inspect) and to
//! give the same logits as the Hugging Face directory it came from, then damaged one way per test.

mod common;

use std::path::Path;
use std::process::Command;

use vspec_core::format::Format;
use vspec_core::gguf::{GgufWriter, MetaValue};
use vspec_core::graph::Limits;
use vspec_host::{Engine, ModelFile};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers (the shared ones are in common/mod.rs).
// ---------------------------------------------------------------------------------------------

/// Copies a fixture directory (flat) into `dst`, leaving out the files named in `skip`.
fn copy_fixture(name: &str, dst: &Path, skip: &[&str]) {
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        let fname = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file() && !skip.contains(&fname.as_str()) {
            std::fs::copy(e.path(), dst.join(&fname)).unwrap();
        }
    }
}

/// Like [`fails_with`], but the run is killed after `secs` seconds (a hang is a failure too).
#[track_caller]
fn fails_within(secs: u64, args: &[&str], needles: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vspec"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running the vspec binary");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vspec {args:?} still running after {secs} s (killed)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let ctx = format!("vspec {args:?}\nstatus: {status:?}\nstderr:\n{stderr}");
    assert!(!status.success(), "expected failure: {ctx}");
    assert!(
        status.code().is_some() && status.code() != Some(101),
        "crashed: {ctx}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {ctx}");
    }
}

/// The same failure from `generate` and `inspect`.
#[track_caller]
fn both_fail_with(model: &Path, needles: &[&str]) {
    fails_with(&gen_args(s(model)), needles);
    fails_with(&["inspect", "-m", s(model)], needles);
}

// ---------------------------------------------------------------------------------------------
// A tiny GGUF built from the Hugging Face Llama fixture (`GgufSpec::llama`, common/mod.rs):
// editing and writing it.
// ---------------------------------------------------------------------------------------------

impl GgufSpec {
    fn remove_meta(&mut self, key: &str) {
        let before = self.meta.len();
        self.meta.retain(|(k, _)| k != key);
        assert_eq!(self.meta.len() + 1, before, "no key {key}");
    }

    fn set_meta(&mut self, key: &str, v: MetaValue) {
        let slot = self
            .meta
            .iter_mut()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no key {key}"));
        slot.1 = v;
    }

    fn bytes(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.meta {
            w.add_meta(k.clone(), v.clone());
        }
        for (name, dims, data) in &self.tensors {
            w.add_tensor(name.clone(), dims, Format::F32, data).unwrap();
        }
        w.finish().unwrap()
    }
}

/// Keeps the first `rows` rows of the embedding table and the output head.
fn shrink_vocabulary(spec: &mut GgufSpec, rows: u64) {
    for t in spec
        .tensors
        .iter_mut()
        .filter(|t| t.0 == "token_embd.weight" || t.0 == "output.weight")
    {
        t.1[1] = rows;
        t.2.truncate((rows * t.1[0] * 4) as usize);
    }
}

/// Byte position of tensor `name`'s info (its u64 name length) in a GGUF file.
fn tensor_info_pos(file: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let hits: Vec<usize> = file
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "tensor info of {name} found {} times",
        hits.len()
    );
    hits[0]
}

/// Byte positions of the ggml type (u32) and offset (u64) fields of tensor `name`'s info.
fn tensor_type_and_offset_pos(file: &[u8], name: &str) -> (usize, usize) {
    let p = tensor_info_pos(file, name) + 8 + name.len();
    let n_dims = u32::from_le_bytes(file[p..p + 4].try_into().unwrap()) as usize;
    let ty = p + 4 + 8 * n_dims;
    (ty, ty + 4)
}

/// Byte position of metadata key `key` (its u64 length) in a GGUF file.
fn meta_key_pos(file: &[u8], key: &str) -> usize {
    tensor_info_pos(file, key)
}

// ---------------------------------------------------------------------------------------------
// The valid file works.
// ---------------------------------------------------------------------------------------------

#[test]
fn valid_gguf_generates_and_inspects() {
    let tmp = TempDir::new("valid");
    let bytes = GgufSpec::llama().bytes();
    vspec_core::gguf::parse(&bytes).expect("the writer's output parses");
    let p = tmp.write("tiny.gguf", &bytes);

    let out = vspec(&gen_args(s(&p)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "generate failed: {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = vspec(&["inspect", "-m", s(&p)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inspect failed: {:?}\n{stderr}",
        out.status
    );
    for want in [
        "blk.0.attn_q.weight",
        "output.weight",
        "general.architecture = \"llama\"",
        "GGUF v3",
    ] {
        assert!(
            stdout.contains(want),
            "inspect output lacks {want:?}:\n{stdout}"
        );
    }
}

/// The GGUF (q/k permuted as convert_hf_to_gguf does, interleaved RoPE) and the Hugging Face
/// directory (rotate-half RoPE) are the same model: same tokens, same logits.
#[test]
fn gguf_logits_match_hf_directory() {
    let tmp = TempDir::new("logits");
    let p = tmp.write("tiny.gguf", &GgufSpec::llama().bytes());
    let gguf = ModelFile::open(&p).unwrap();
    let hf = ModelFile::open(&fixture("llama")).unwrap();
    assert_eq!(gguf.config.n_layers, hf.config.n_layers);
    assert_eq!(gguf.config.vocab, hf.config.vocab);
    assert_ne!(
        gguf.config.rope_layout, hf.config.rope_layout,
        "the two loaders should differ in RoPE layout"
    );

    let text = "Hello world, the quick brown fox jumps over the lazy dog. <|im_start|>user 123";
    let tg = gguf.tokenizer().unwrap();
    let th = hf.tokenizer().unwrap();
    let ids = th.encode(text, true).unwrap();
    assert_eq!(
        tg.encode(text, true).unwrap(),
        ids,
        "GGUF and HF tokenizers disagree"
    );
    assert_eq!(tg.decode(&ids), th.decode(&ids));
    assert_eq!(tg.bos_id(), th.bos_id());
    assert_eq!(tg.eos_ids().first(), th.eos_ids().first());
    assert!(ids.len() > 8 && ids.len() <= 64, "{} tokens", ids.len());

    let lim = Limits {
        max_ctx: 64,
        max_tokens: ids.len(),
        all_logits: true,
    };
    let run = |m: &ModelFile| {
        let mut e = Engine::new(m, lim, 1).unwrap();
        let mut sess = e.session().unwrap();
        sess.forward(&ids).unwrap().to_vec()
    };
    let (lg, lh) = (run(&gguf), run(&hf));
    assert_eq!(lg.len(), lh.len());
    assert_eq!(lg.len(), ids.len() * hf.config.vocab);
    let scale = lh.iter().fold(0f32, |a, x| a.max(x.abs()));
    let err = lg
        .iter()
        .zip(&lh)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(scale > 0.0);
    eprintln!("GGUF vs HF logits: max abs error {err:e}, max abs logit {scale}");
    assert!(
        err <= 1e-5 * scale.max(1.0),
        "GGUF vs HF logits: max abs error {err:e} (scale {scale})"
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF damage.
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_gguf_in_header() {
    let tmp = TempDir::new("trunc-header");
    let bytes = GgufSpec::llama().bytes();
    // Magic only; magic + version + half the tensor count.
    let p = tmp.write("a.gguf", &bytes[..4]);
    both_fail_with(&p, &[s(&p), "truncated", "GGUF version"]);
    let p = tmp.write("b.gguf", &bytes[..12]);
    both_fail_with(&p, &[s(&p), "truncated", "tensor count"]);
    let p = tmp.write("c.gguf", &bytes[..2]);
    both_fail_with(&p, &[s(&p), "truncated", "GGUF magic"]);
}

#[test]
fn truncated_gguf_in_metadata() {
    let tmp = TempDir::new("trunc-meta");
    let bytes = GgufSpec::llama().bytes();
    // Inside the value of llama.block_count (key length + key + type + 2 of 4 value bytes).
    let k = "llama.block_count";
    let cut = meta_key_pos(&bytes, k) + 8 + k.len() + 4 + 2;
    let p = tmp.write("a.gguf", &bytes[..cut]);
    both_fail_with(&p, &[s(&p), "truncated", "metadata"]);
    // Inside the token list (the largest array): names the key.
    let k = "tokenizer.ggml.tokens";
    let cut = meta_key_pos(&bytes, k) + 8 + k.len() + 4 + 8 + 100;
    let p = tmp.write("b.gguf", &bytes[..cut]);
    both_fail_with(&p, &[s(&p), "truncated", "'tokenizer.ggml.tokens'"]);
}

#[test]
fn truncated_gguf_in_tensor_infos() {
    let tmp = TempDir::new("trunc-infos");
    let bytes = GgufSpec::llama().bytes();
    let spec = GgufSpec::llama();
    // In the middle of the dims of the last tensor info: names that tensor.
    let last = spec.tensors.last().unwrap().0.clone();
    let cut = tensor_info_pos(&bytes, &last) + 8 + last.len() + 4 + 3;
    let p = tmp.write("a.gguf", &bytes[..cut]);
    both_fail_with(&p, &[s(&p), "truncated", &format!("tensor '{last}'")]);
    // Right after the first tensor name: fewer bytes than the infos' minimum size.
    let first = spec.tensors[0].0.clone();
    let cut = tensor_info_pos(&bytes, &first) + 8 + first.len();
    let p = tmp.write("b.gguf", &bytes[..cut]);
    both_fail_with(
        &p,
        &[
            s(&p),
            "truncated",
            &format!("{} tensor infos", spec.tensors.len()),
        ],
    );
}

#[test]
fn truncated_gguf_in_tensor_data() {
    let tmp = TempDir::new("trunc-data");
    let spec = GgufSpec::llama();
    let bytes = spec.bytes();
    let last = spec.tensors.last().unwrap().0.clone();
    let p = tmp.write("a.gguf", &bytes[..bytes.len() - 100]);
    both_fail_with(&p, &[s(&p), "truncated", &format!("tensor '{last}' data")]);
    // Just after the data section starts: the first tensor's data is cut.
    let g = vspec_core::gguf::parse(&bytes).unwrap();
    let first = &g.tensors.iter().min_by_key(|t| t.offset).unwrap().name;
    let p = tmp.write("b.gguf", &bytes[..g.data_offset as usize + 8]);
    both_fail_with(&p, &[s(&p), "truncated", &format!("tensor '{first}' data")]);
}

#[test]
fn gguf_with_wrong_magic() {
    let tmp = TempDir::new("magic");
    let mut bytes = GgufSpec::llama().bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let p = tmp.write("bad-magic.gguf", &bytes);
    both_fail_with(&p, &[s(&p), "bad magic", "GGUF"]);
    // A text file passed as a model.
    let p = tmp.write("notes.txt", b"just some text, not a model\n");
    both_fail_with(&p, &[s(&p), "bad magic"]);
    // An empty file.
    let p = tmp.write("empty.gguf", b"");
    both_fail_with(&p, &[s(&p), "GGUF magic"]);
}

#[test]
fn gguf_tensor_offset_past_end_of_file() {
    let tmp = TempDir::new("offset");
    let mut bytes = GgufSpec::llama().bytes();
    let (_, off) = tensor_type_and_offset_pos(&bytes, "blk.1.ffn_up.weight");
    bytes[off..off + 8].copy_from_slice(&(1u64 << 30).to_le_bytes());
    let p = tmp.write("offset.gguf", &bytes);
    both_fail_with(&p, &[s(&p), "'blk.1.ffn_up.weight'"]);
    // A misaligned offset is named too.
    let mut bytes = GgufSpec::llama().bytes();
    let (_, off) = tensor_type_and_offset_pos(&bytes, "blk.1.ffn_up.weight");
    let old = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
    bytes[off..off + 8].copy_from_slice(&(old + 4).to_le_bytes());
    let p = tmp.write("misaligned.gguf", &bytes);
    both_fail_with(&p, &[s(&p), "'blk.1.ffn_up.weight'", "alignment"]);
    // An offset so large that data_offset + offset overflows u64.
    let mut bytes = GgufSpec::llama().bytes();
    let (_, off) = tensor_type_and_offset_pos(&bytes, "blk.0.attn_v.weight");
    bytes[off..off + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let p = tmp.write("overflow.gguf", &bytes);
    both_fail_with(&p, &[s(&p), "'blk.0.attn_v.weight'"]);
}

#[test]
fn gguf_tensor_shape_mismatch() {
    let tmp = TempDir::new("shape");
    let mut spec = GgufSpec::llama();
    // attn_q with half its rows: [64 cols, 32 rows].
    let t = spec
        .tensors
        .iter_mut()
        .find(|t| t.0 == "blk.1.attn_q.weight")
        .unwrap();
    let cols = t.1[0];
    let rows = t.1[1] / 2;
    t.1 = vec![cols, rows];
    t.2.truncate((cols * rows * 4) as usize);
    let p = tmp.write("shape.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "'blk.1.attn_q.weight'", "shape"]);

    // A 3-d norm weight.
    let mut spec = GgufSpec::llama();
    let t = spec
        .tensors
        .iter_mut()
        .find(|t| t.0 == "output_norm.weight")
        .unwrap();
    t.1 = vec![16, 2, 2];
    let p = tmp.write("shape3.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "'output_norm.weight'"]);
}

#[test]
fn gguf_unsupported_or_unknown_tensor_type() {
    let tmp = TempDir::new("dtype");
    for (ty, file) in [(19u32, "iq1s.gguf"), (99, "t99.gguf")] {
        let mut bytes = GgufSpec::llama().bytes();
        let (tyo, _) = tensor_type_and_offset_pos(&bytes, "blk.0.ffn_gate.weight");
        bytes[tyo..tyo + 4].copy_from_slice(&ty.to_le_bytes());
        let p = tmp.write(file, &bytes);
        both_fail_with(
            &p,
            &[s(&p), "'blk.0.ffn_gate.weight'", &format!("ggml type {ty}")],
        );
    }
}

#[test]
fn gguf_unknown_architecture() {
    let tmp = TempDir::new("arch");
    let mut spec = GgufSpec::llama();
    spec.set_meta("general.architecture", MetaValue::Str("mamba".into()));
    let p = tmp.write("mamba.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "'mamba'", "architecture"]);
    // Missing architecture key.
    let mut spec = GgufSpec::llama();
    spec.remove_meta("general.architecture");
    let p = tmp.write("noarch.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "general.architecture"]);
    // Architecture of the wrong type.
    let mut spec = GgufSpec::llama();
    spec.set_meta("general.architecture", MetaValue::U32(7));
    let p = tmp.write("intarch.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "general.architecture"]);
}

#[test]
fn gguf_missing_required_metadata() {
    let tmp = TempDir::new("meta");
    for key in [
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.context_length",
        "llama.attention.layer_norm_rms_epsilon",
    ] {
        let mut spec = GgufSpec::llama();
        spec.remove_meta(key);
        let p = tmp.write(&format!("no-{key}.gguf"), &spec.bytes());
        both_fail_with(&p, &[s(&p), &format!("'{key}'")]);
    }
    // Wrong type: a string block count.
    let mut spec = GgufSpec::llama();
    spec.set_meta("llama.block_count", MetaValue::Str("two".into()));
    let p = tmp.write("str-blocks.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "'llama.block_count'"]);
    // Inconsistent: zero heads.
    let mut spec = GgufSpec::llama();
    spec.set_meta("llama.attention.head_count", MetaValue::U32(0));
    let p = tmp.write("zero-heads.gguf", &spec.bytes());
    both_fail_with(&p, &[s(&p), "head_count"]);
}

#[test]
fn gguf_missing_tokenizer_model() {
    let tmp = TempDir::new("tok-gguf");
    let mut spec = GgufSpec::llama();
    spec.remove_meta("tokenizer.ggml.model");
    let p = tmp.write("notok.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer.ggml.model"]);
    // No token list.
    let mut spec = GgufSpec::llama();
    spec.remove_meta("tokenizer.ggml.tokens");
    let p = tmp.write("notokens.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer.ggml.tokens"]);
    // An unsupported tokenizer model (SentencePiece).
    let mut spec = GgufSpec::llama();
    spec.set_meta("tokenizer.ggml.model", MetaValue::Str("llama".into()));
    let p = tmp.write("spm.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer.ggml.model"]);
    // An unknown pre-tokenizer.
    let mut spec = GgufSpec::llama();
    spec.set_meta("tokenizer.ggml.pre", MetaValue::Str("no-such-pre".into()));
    let p = tmp.write("pre.gguf", &spec.bytes());
    fails_with(
        &gen_args(s(&p)),
        &[s(&p), "tokenizer.ggml.pre", "no-such-pre"],
    );
    // A BOS id outside the vocabulary.
    let mut spec = GgufSpec::llama();
    spec.set_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(100_000));
    let p = tmp.write("bos.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer.ggml.bos_token_id"]);
}

// ---------------------------------------------------------------------------------------------
// Hugging Face directory damage.
// ---------------------------------------------------------------------------------------------

#[test]
fn hf_dir_without_tokenizer_json() {
    let tmp = TempDir::new("hf-notok");
    copy_fixture("llama", tmp.path(), &["tokenizer.json"]);
    fails_with(&gen_args(s(tmp.path())), &["tokenizer.json"]);
}

#[test]
fn hf_dir_with_invalid_tokenizer_json() {
    let tmp = TempDir::new("hf-badtok");
    copy_fixture("llama", tmp.path(), &["tokenizer.json"]);
    tmp.write("tokenizer.json", b"{\"model\": [1, 2");
    fails_with(&gen_args(s(tmp.path())), &["tokenizer.json"]);
}

#[test]
fn hf_dir_with_invalid_config_json() {
    let tmp = TempDir::new("hf-cfg");
    copy_fixture("llama", tmp.path(), &["config.json"]);
    tmp.write("config.json", b"{\"hidden_size\": 64,, }");
    both_fail_with(tmp.path(), &["config.json", "JSON"]);
}

#[test]
fn hf_dir_with_config_missing_fields() {
    let tmp = TempDir::new("hf-cfg-missing");
    copy_fixture("llama", tmp.path(), &[]);
    let cfg = read_json(&fixture("llama").join("config.json"));
    for key in [
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "vocab_size",
        "num_attention_heads",
    ] {
        let mut c = cfg.clone();
        c.as_object_mut().unwrap().remove(key).unwrap();
        tmp.write("config.json", serde_json::to_string(&c).unwrap().as_bytes());
        both_fail_with(tmp.path(), &["config.json", &format!("'{key}'")]);
    }
    // Unknown architecture.
    let mut c = cfg.clone();
    c["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    tmp.write("config.json", serde_json::to_string(&c).unwrap().as_bytes());
    both_fail_with(tmp.path(), &["config.json", "MambaForCausalLM"]);
    // Config larger than the weights: tensors no longer match.
    let mut c = cfg.clone();
    c["hidden_size"] = serde_json::json!(128);
    tmp.write("config.json", serde_json::to_string(&c).unwrap().as_bytes());
    both_fail_with(tmp.path(), &["'hidden_size'", "tensor 'token_embd.weight'"]);
}

#[test]
fn hf_dir_without_config_json() {
    let tmp = TempDir::new("hf-nocfg");
    copy_fixture("llama", tmp.path(), &["config.json"]);
    both_fail_with(tmp.path(), &["config.json"]);
}

#[test]
fn hf_dir_with_truncated_safetensors() {
    let tmp = TempDir::new("hf-st");
    copy_fixture("llama", tmp.path(), &["model.safetensors"]);
    let st = std::fs::read(fixture("llama").join("model.safetensors")).unwrap();
    // Inside the tensor data.
    tmp.write("model.safetensors", &st[..st.len() - 1000]);
    both_fail_with(tmp.path(), &["model.safetensors", "truncated"]);
    // Inside the JSON header.
    tmp.write("model.safetensors", &st[..100]);
    both_fail_with(
        tmp.path(),
        &["model.safetensors", "truncated", "safetensors header"],
    );
    // Inside the header length.
    tmp.write("model.safetensors", &st[..5]);
    both_fail_with(tmp.path(), &["model.safetensors", "truncated"]);
}

#[test]
fn hf_dir_with_no_weights() {
    let tmp = TempDir::new("hf-noweights");
    copy_fixture("llama", tmp.path(), &["model.safetensors"]);
    both_fail_with(tmp.path(), &[s(tmp.path()), "safetensors"]);
}

// ---------------------------------------------------------------------------------------------
// Runtime limits and paths.
// ---------------------------------------------------------------------------------------------

#[test]
fn prompt_longer_than_context() {
    let long = "the quick brown fox jumps over the lazy dog ".repeat(8);
    let dir = fixture("llama");
    fails_with(
        &[
            "generate",
            "-m",
            s(&dir),
            "-p",
            &long,
            "-n",
            "4",
            "--temp",
            "0",
            "-t",
            "1",
            "-c",
            "8",
        ],
        &["context", "-c"],
    );
    // The same through a GGUF.
    let tmp = TempDir::new("ctx");
    let p = tmp.write("tiny.gguf", &GgufSpec::llama().bytes());
    fails_with(
        &[
            "generate",
            "-m",
            s(&p),
            "-p",
            &long,
            "-n",
            "4",
            "--temp",
            "0",
            "-t",
            "1",
            "-c",
            "8",
        ],
        &["context", "-c"],
    );
}

#[test]
fn perplexity_on_missing_text_file() {
    let tmp = TempDir::new("ppl");
    let missing = tmp.path().join("no-such-text.txt");
    fails_with(
        &[
            "perplexity",
            "-m",
            s(&fixture("llama")),
            "-f",
            s(&missing),
            "-t",
            "1",
        ],
        &[s(&missing)],
    );
}

#[test]
fn model_path_does_not_exist() {
    let tmp = TempDir::new("nomodel");
    let missing = tmp.path().join("no-such-model.gguf");
    fails_with(&gen_args(s(&missing)), &[s(&missing)]);
    fails_with(&["inspect", "-m", s(&missing)], &[s(&missing)]);
    fails_with(&["ir", "-m", s(&missing)], &[s(&missing)]);
    let text = tmp.write("text.txt", b"hello world hello world hello world\n");
    fails_with(
        &["perplexity", "-m", s(&missing), "-f", s(&text)],
        &[s(&missing)],
    );
}

// ---------------------------------------------------------------------------------------------
// Inconsistent files: tokenizer vs. embedding, hyper-parameters out of range.
// ---------------------------------------------------------------------------------------------

#[test]
fn gguf_embedding_smaller_than_tokenizer_vocabulary() {
    let tmp = TempDir::new("small-embd");
    let mut spec = GgufSpec::llama();
    shrink_vocabulary(&mut spec, 256);
    let p = tmp.write("small-embd.gguf", &spec.bytes());
    // Refused when the file is opened, before any prompt could look up an id past the table.
    both_fail_with(
        &p,
        &[s(&p), "tokenizer.ggml.tokens", "320 tokens", "is 256"],
    );
}

#[test]
fn gguf_tokenizer_merge_names_a_missing_token() {
    let tmp = TempDir::new("small-tok");
    let mut spec = GgufSpec::llama();
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"] {
        if let Some((_, MetaValue::Array(a))) = spec.meta.iter_mut().find(|(k, _)| k == key) {
            a.truncate(280);
        }
    }
    // The embedding shrinks with the token list (which must match it) so that the merges are
    // what is wrong.
    shrink_vocabulary(&mut spec, 280);
    let p = tmp.write("small-tok.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer", "out of vocabulary"]);
    // token_type of another length than tokens.
    let mut spec = GgufSpec::llama();
    if let Some((_, MetaValue::Array(a))) = spec
        .meta
        .iter_mut()
        .find(|(k, _)| k == "tokenizer.ggml.token_type")
    {
        a.truncate(280);
    }
    let p = tmp.write("toktype.gguf", &spec.bytes());
    fails_with(&gen_args(s(&p)), &[s(&p), "tokenizer.ggml.token_type"]);
}

#[test]
fn gguf_hyperparameters_out_of_range() {
    let tmp = TempDir::new("hparams");
    // (key, value, what the message names): the GGUF key itself.
    let cases: Vec<(&str, MetaValue, &str)> = vec![
        (
            "llama.attention.head_count_kv",
            MetaValue::U32(3),
            "kv heads",
        ),
        (
            "llama.attention.head_count",
            MetaValue::U32(5),
            "query heads",
        ),
        (
            "llama.block_count",
            MetaValue::U32(u32::MAX),
            "llama.block_count",
        ),
        (
            "llama.embedding_length",
            MetaValue::U32(u32::MAX),
            "llama.embedding_length",
        ),
        (
            "llama.feed_forward_length",
            MetaValue::U32(u32::MAX),
            "llama.feed_forward_length",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(f32::NAN),
            "llama.attention.layer_norm_rms_epsilon",
        ),
        (
            "llama.rope.freq_base",
            MetaValue::F32(0.0),
            "llama.rope.freq_base",
        ),
    ];
    for (i, (key, v, needle)) in cases.into_iter().enumerate() {
        let mut spec = GgufSpec::llama();
        spec.set_meta(key, v);
        let p = tmp.write(&format!("h{i}.gguf"), &spec.bytes());
        both_fail_with(&p, &[s(&p), needle]);
    }
}

// ---------------------------------------------------------------------------------------------
// Resource limits: oversized contexts and thread counts, empty perplexity runs.
// ---------------------------------------------------------------------------------------------

#[test]
fn context_size_beyond_memory_is_an_error() {
    let dir = fixture("llama");
    fails_with(
        &[
            "generate",
            "-m",
            s(&dir),
            "-p",
            "Hi",
            "-n",
            "2",
            "-t",
            "1",
            "-c",
            "100000000000",
        ],
        &["-c"],
    );
    let tmp = TempDir::new("ppl-ctx");
    let text = tmp.write("t.txt", "the quick brown fox ".repeat(50).as_bytes());
    fails_with(
        &[
            "perplexity",
            "-m",
            s(&dir),
            "-f",
            s(&text),
            "--ctx",
            "100000000000",
            "-t",
            "1",
        ],
        &["--ctx"],
    );
}

#[test]
fn absurd_thread_count_is_rejected_quickly() {
    fails_within(
        30,
        &[
            "generate",
            "-m",
            s(&fixture("llama")),
            "-p",
            "Hi",
            "-n",
            "2",
            "-t",
            "4096",
        ],
        &["-t"],
    );
}

#[test]
fn perplexity_zero_chunks_is_an_error() {
    let tmp = TempDir::new("ppl0");
    let text = tmp.write("t.txt", "the quick brown fox ".repeat(100).as_bytes());
    fails_with(
        &[
            "perplexity",
            "-m",
            s(&fixture("llama")),
            "-f",
            s(&text),
            "--ctx",
            "16",
            "--chunks",
            "0",
            "-t",
            "1",
        ],
        &["--chunks"],
    );
}

// ---------------------------------------------------------------------------------------------
// Metadata that contradicts itself or the tensors: one value of a valid model changed, refused
// when the model is opened, the message naming the file and the field as that file spells it.
// ---------------------------------------------------------------------------------------------

/// Opening `path` fails; the whole error chain, one line.
#[track_caller]
fn open_fails(path: &Path) -> String {
    match ModelFile::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn gguf_config_contradictions_name_the_key() {
    let tmp = TempDir::new("gguf-contradictions");
    let nan = MetaValue::F32(f32::NAN);
    let inf = MetaValue::F32(f32::INFINITY);
    let linear = |factor: f32| {
        vec![
            ("llama.rope.scaling.type", MetaValue::Str("linear".into())),
            ("llama.rope.scaling.factor", MetaValue::F32(factor)),
        ]
    };
    // (values set or added, what the message must name). The fixture has 2 blocks, 4 heads of
    // 16 (2 kv heads), hidden 64, feed-forward 160, 320 tokens.
    let cases: Vec<(Vec<(&str, MetaValue)>, &str)> = vec![
        // Fewer blocks than the file holds (the rest would be ignored), or more.
        (
            vec![("llama.block_count", MetaValue::U32(1))],
            "llama.block_count",
        ),
        (
            vec![("llama.block_count", MetaValue::U32(3))],
            "llama.block_count",
        ),
        (
            vec![("llama.block_count", MetaValue::U32(0))],
            "llama.block_count",
        ),
        (
            vec![("llama.context_length", MetaValue::U32(0))],
            "llama.context_length",
        ),
        (linear(0.0), "llama.rope.scaling.factor"),
        (linear(-2.0), "llama.rope.scaling.factor"),
        (linear(f32::NAN), "llama.rope.scaling.factor"),
        (linear(f32::INFINITY), "llama.rope.scaling.factor"),
        (
            vec![("llama.attention.head_count", MetaValue::U32(0))],
            "llama.attention.head_count",
        ),
        // 64 is not a multiple of 3 heads and there is no key_length.
        (
            vec![("llama.attention.head_count", MetaValue::U32(3))],
            "llama.attention.head_count",
        ),
        // 8 query heads of 16 = 128 rows, but attn_q has 64.
        (
            vec![
                ("llama.attention.head_count", MetaValue::U32(8)),
                ("llama.attention.key_length", MetaValue::U32(16)),
            ],
            "llama.attention.head_count",
        ),
        (
            vec![("llama.attention.head_count_kv", MetaValue::U32(0))],
            "llama.attention.head_count_kv",
        ),
        (
            vec![("llama.attention.head_count_kv", MetaValue::U32(3))],
            "llama.attention.head_count_kv",
        ),
        (
            vec![("llama.attention.head_count_kv", MetaValue::U32(1))],
            "llama.attention.head_count_kv",
        ),
        (
            vec![("llama.attention.key_length", MetaValue::U32(15))],
            "llama.attention.key_length",
        ),
        (
            vec![("llama.attention.key_length", MetaValue::U32(0))],
            "llama.attention.key_length",
        ),
        (
            vec![("llama.attention.value_length", MetaValue::U32(8))],
            "llama.attention.value_length",
        ),
        (
            vec![("llama.rope.dimension_count", MetaValue::U32(0))],
            "llama.rope.dimension_count",
        ),
        (
            vec![("llama.rope.dimension_count", MetaValue::U32(7))],
            "llama.rope.dimension_count",
        ),
        (
            vec![("llama.rope.dimension_count", MetaValue::U32(18))],
            "llama.rope.dimension_count",
        ),
        (
            vec![(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(0.0),
            )],
            "llama.attention.layer_norm_rms_epsilon",
        ),
        (
            vec![(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(-1e-5),
            )],
            "llama.attention.layer_norm_rms_epsilon",
        ),
        (
            vec![("llama.attention.layer_norm_rms_epsilon", inf.clone())],
            "llama.attention.layer_norm_rms_epsilon",
        ),
        (
            vec![("llama.rope.freq_base", MetaValue::F32(-10.0))],
            "llama.rope.freq_base",
        ),
        (vec![("llama.rope.freq_base", nan)], "llama.rope.freq_base"),
        (vec![("llama.rope.freq_base", inf)], "llama.rope.freq_base"),
        (
            vec![("llama.vocab_size", MetaValue::U32(0))],
            "llama.vocab_size",
        ),
        (
            vec![("llama.vocab_size", MetaValue::U32(321))],
            "llama.vocab_size",
        ),
        (
            vec![("llama.embedding_length", MetaValue::U32(0))],
            "llama.embedding_length",
        ),
        // 4 heads of 32: a whole head size, but not the embedding's width.
        (
            vec![
                ("llama.embedding_length", MetaValue::U32(128)),
                ("llama.attention.key_length", MetaValue::U32(16)),
            ],
            "llama.embedding_length",
        ),
        (
            vec![("llama.feed_forward_length", MetaValue::U32(0))],
            "llama.feed_forward_length",
        ),
        (
            vec![("llama.feed_forward_length", MetaValue::U32(128))],
            "llama.feed_forward_length",
        ),
    ];
    for (i, (values, needle)) in cases.into_iter().enumerate() {
        let mut spec = GgufSpec::llama();
        let what = format!("{values:?}");
        for (key, v) in values {
            match spec.meta.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = v,
                None => spec.meta.push((key.to_string(), v)),
            }
        }
        let p = tmp.write(&format!("c{i}.gguf"), &spec.bytes());
        let e = open_fails(&p);
        assert!(
            e.contains(s(&p)) && e.contains(needle),
            "{what}: {e:?} does not name {needle}"
        );
        assert!(!e.contains('\n'), "{what}: not one line: {e:?}");
    }
}

#[test]
fn gguf_token_list_must_match_the_embedding() {
    let tmp = TempDir::new("gguf-token-count");
    for extra in [-1i64, 1] {
        let mut spec = GgufSpec::llama();
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type"] {
            if let Some((_, MetaValue::Array(a))) = spec.meta.iter_mut().find(|(k, _)| k == key) {
                if extra < 0 {
                    a.pop();
                } else if key == "tokenizer.ggml.tokens" {
                    a.push(MetaValue::Str("<extra>".into()));
                } else {
                    a.push(MetaValue::I32(1));
                }
            }
        }
        let p = tmp.write(&format!("t{extra}.gguf"), &spec.bytes());
        let e = open_fails(&p);
        assert!(
            e.contains(s(&p)) && e.contains("tokenizer.ggml.tokens"),
            "{extra}: {e}"
        );
    }
}

/// A copy of HF fixture `name` in `tmp/dir` with `edit` applied to its config.json.
fn hf_with_config(
    tmp: &TempDir,
    name: &str,
    dir: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> std::path::PathBuf {
    let dst = tmp.join(dir);
    std::fs::create_dir_all(&dst).unwrap();
    copy_fixture(name, &dst, &[]);
    let mut cfg = read_json(&dst.join("config.json"));
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    dst
}

#[test]
fn hf_config_contradictions_name_the_field() {
    use serde_json::json;
    let tmp = TempDir::new("hf-contradictions");
    // (fixture, field path, new value, what the message must name). llama states head_dim,
    // qwen2 implies it; llama_rope3 and qwen3 tie their heads and hold no lm_head.
    let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
        (
            "llama",
            "num_hidden_layers",
            json!(1),
            "'num_hidden_layers'",
        ),
        (
            "llama",
            "num_hidden_layers",
            json!(3),
            "'num_hidden_layers'",
        ),
        (
            "llama",
            "max_position_embeddings",
            json!(0),
            "'max_position_embeddings'",
        ),
        (
            "llama_rope3",
            "rope_scaling.factor",
            json!(0.0),
            "'rope_scaling.factor'",
        ),
        (
            "llama_rope3",
            "rope_scaling.factor",
            json!(-8.0),
            "'rope_scaling.factor'",
        ),
        (
            "llama_rope3",
            "rope_scaling.low_freq_factor",
            json!(0),
            "'rope_scaling.low_freq_factor'",
        ),
        (
            "llama_rope3",
            "rope_scaling.high_freq_factor",
            json!(1.0),
            "'rope_scaling.high_freq_factor'",
        ),
        (
            "llama_rope3",
            "rope_scaling.original_max_position_embeddings",
            json!(0),
            "'rope_scaling.original_max_position_embeddings'",
        ),
        (
            "llama_rope3",
            "tie_word_embeddings",
            json!(false),
            "'tie_word_embeddings'",
        ),
        (
            "qwen3",
            "tie_word_embeddings",
            json!(false),
            "'tie_word_embeddings'",
        ),
        (
            "qwen2",
            "num_attention_heads",
            json!(0),
            "'num_attention_heads'",
        ),
        (
            "qwen2",
            "num_attention_heads",
            json!(3),
            "'num_attention_heads'",
        ),
        (
            "llama",
            "num_attention_heads",
            json!(8),
            "'num_attention_heads'",
        ),
        (
            "llama",
            "num_key_value_heads",
            json!(3),
            "'num_key_value_heads'",
        ),
        (
            "llama",
            "num_key_value_heads",
            json!(0),
            "'num_key_value_heads'",
        ),
        (
            "llama",
            "num_key_value_heads",
            json!("2"),
            "'num_key_value_heads'",
        ),
        ("llama", "head_dim", json!(15), "'head_dim'"),
        ("llama", "head_dim", json!(0), "'head_dim'"),
        ("llama", "rms_norm_eps", json!(0.0), "'rms_norm_eps'"),
        ("llama", "rms_norm_eps", json!(-1e-5), "'rms_norm_eps'"),
        ("llama", "rms_norm_eps", json!("1e-5"), "'rms_norm_eps'"),
        ("llama", "rope_theta", json!(0), "'rope_theta'"),
        ("llama", "rope_theta", json!(-10000.0), "'rope_theta'"),
        ("llama", "vocab_size", json!(0), "'vocab_size'"),
        ("llama", "vocab_size", json!(321), "'vocab_size'"),
        ("llama", "hidden_size", json!(0), "'hidden_size'"),
        (
            "llama",
            "intermediate_size",
            json!(0),
            "'intermediate_size'",
        ),
        (
            "llama",
            "intermediate_size",
            json!(128),
            "'intermediate_size'",
        ),
        (
            "llama",
            "partial_rotary_factor",
            json!(0.5),
            "'partial_rotary_factor'",
        ),
    ];
    for (i, (fixture_name, path, value, needle)) in cases.into_iter().enumerate() {
        let what = format!("{fixture_name} {path} = {value}");
        let dir = hf_with_config(&tmp, fixture_name, &format!("m{i}"), |cfg| {
            match path.split_once('.') {
                Some((outer, inner)) => {
                    cfg[outer][inner] = value;
                }
                None => {
                    cfg.insert(path.to_string(), value);
                }
            }
        });
        let e = open_fails(&dir);
        assert!(
            e.contains("config.json") && e.contains(needle),
            "{what}: {e:?} does not name {needle}"
        );
        assert!(!e.contains('\n'), "{what}: not one line: {e:?}");
    }
}

#[test]
fn hf_tokenizer_larger_than_the_embedding_is_refused() {
    let tmp = TempDir::new("hf-big-tokenizer");
    let dir = hf_with_config(&tmp, "llama", "m", |_| {});
    let tj_path = dir.join("tokenizer.json");
    let mut tj = read_json(&tj_path);
    // One added token past the 320 embedding rows.
    tj["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 320, "content": "<extra>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(&tj_path, tj.to_string()).unwrap();
    let model = ModelFile::open(&dir).unwrap();
    let e = match model.tokenizer() {
        Ok(_) => panic!("tokenizer accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("tokenizer.json") && e.contains("'vocab_size'") && e.contains("321"),
        "{e}"
    );
    fails_with(&gen_args(s(&dir)), &["tokenizer.json", "'vocab_size'"]);
}

#[test]
fn valid_fixtures_still_open() {
    for name in ["llama", "llama_rope3", "qwen2", "qwen3"] {
        let m = ModelFile::open(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        m.tokenizer().unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}
