//! Helpers shared by the CLI integration tests (`cli_bad_input.rs`, `convert_cli.rs`,
//! `calibration_hessian.rs`): temp
//! dirs, running the `vspec` binary and checking its failures, and a tiny GGUF built in memory
//! from the Hugging Face Llama fixture (tests/fixtures/hf/llama).
//!
//! Each test crate uses a different subset, hence `allow(dead_code)`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use vspec_core::format::Format;
use vspec_core::gguf::MetaValue;

// ---------------------------------------------------------------------------------------------
// Temp dirs, running the binary, checking the failure.
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // "vspec-cli-bad-input-…", "vspec-convert-cli-…": named after the test crate.
        let p = std::env::temp_dir().join(format!(
            "vspec-{}-{}-{}-{tag}-{nanos}",
            env!("CARGO_CRATE_NAME").replace('_', "-"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Names of the directory's entries, sorted.
    pub fn entries(&self) -> Vec<String> {
        entries(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hf")
        .join(name)
}

pub fn vspec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vspec"))
        .args(args)
        // No network, no default-model fetch: every call passes -m.
        .env("VSPEC_LOG", "warn")
        // Files as stored, whatever the CPU: these tests are about files (tests/expand.rs
        // covers the rewrite some CPUs' sessions make).
        .env("VSPEC_EXPAND", "0")
        .output()
        .expect("running the vspec binary")
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// The tiny Hugging Face Llama fixture (hidden 64, intermediate 160, 2 layers, vocab 320).
pub fn llama_dir() -> PathBuf {
    fixture("llama")
}

/// Runs `vspec args`, asserts success (and no panic message), returns (stdout, stderr).
#[track_caller]
pub fn succeeds(args: &[&str]) -> (String, String) {
    let out = vspec(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "vspec {args:?} failed: {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "vspec {args:?}: {stderr}");
    (stdout, stderr)
}

/// A calibration text of a few dozen tokens for the tiny model.
pub const CAL_TEXT: &str = "The quick brown fox jumps over the lazy dog. Hello world, this is a \
    short calibration text for the tiny model. One two three four five six seven eight nine ten. \
    <|im_start|>user What is the capital of France?<|im_end|> Paris is the capital of France.";

/// Runs `vspec args` and checks it fails cleanly with every string of `needles` on stderr
/// (a clap usage error, exit code 2, passes too). Returns stderr.
#[track_caller]
pub fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let out = vspec(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!(
        "vspec {args:?}\nstatus: {:?}\nstderr:\n{stderr}",
        out.status
    );
    let code = out.status.code();
    assert!(!out.status.success(), "expected failure: {ctx}");
    assert_ne!(code, Some(101), "exit code 101 means a panic: {ctx}");
    assert!(code.is_some(), "killed by a signal: {ctx}");
    assert!(!stderr.contains("panicked"), "panicked: {ctx}");
    assert!(stderr.contains("error:"), "no error line: {ctx}");
    // Shown with --nocapture: the message each bad input gets.
    eprintln!(
        "--- vspec {:?}\n{}",
        &args[..args.len().min(3)],
        stderr.trim_end()
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr does not mention {n:?}: {ctx}");
    }
    stderr
}

/// `generate` with small, fast settings on `model`.
pub fn gen_args(model: &str) -> Vec<&str> {
    vec![
        "generate", "-m", model, "-p", "Hello", "-n", "4", "--temp", "0", "-t", "1",
    ]
}

// ---------------------------------------------------------------------------------------------
// A tiny GGUF built from the Hugging Face Llama fixture.
// ---------------------------------------------------------------------------------------------

/// A GGUF under construction: metadata and tensors that tests may change before writing.
pub struct GgufSpec {
    pub meta: Vec<(String, MetaValue)>,
    /// (GGUF name, dims in ggml order, F32 data as bytes).
    pub tensors: Vec<(String, Vec<u64>, Vec<u8>)>,
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// convert_hf_to_gguf's `permute` of q/k rows: per head, `w.reshape(n_head, 2, hd/2, cols)
/// .swapaxes(1, 2)`, so rotate-half pairs (i, i + hd/2) become adjacent rows (2i, 2i + 1).
pub fn permute_rows(data: &[u8], rows: usize, cols: usize, n_head: usize) -> Vec<u8> {
    let row_bytes = cols * 4;
    assert_eq!(data.len(), rows * row_bytes);
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0u8; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for sft in 0..2 {
                let src = h * hd + sft * half + i;
                let dst = h * hd + 2 * i + sft;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

impl GgufSpec {
    /// The llama fixture as a GGUF: F32 tensors (q/k permuted), llama metadata, gpt2 tokenizer.
    pub fn llama() -> GgufSpec {
        let dir = fixture("llama");
        let cfg = read_json(&dir.join("config.json"));
        let u = |k: &str| cfg[k].as_u64().unwrap_or_else(|| panic!("config.json {k}")) as u32;
        let n_head = u("num_attention_heads") as usize;
        let n_kv = u("num_key_value_heads") as usize;

        let st = std::fs::read(dir.join("model.safetensors")).unwrap();
        let header = vspec_core::safetensors::parse_header(&st).unwrap();
        let mut tensors = Vec::new();
        for t in &header.tensors {
            let Some(name) = vspec_core::model::names::hf_to_gguf(&t.name) else {
                continue;
            };
            assert_eq!(
                t.dtype.format(),
                Some(Format::F32),
                "{}: fixture is F32",
                t.name
            );
            let mut data = header.tensor_data(&st, t).unwrap().to_vec();
            let dims: Vec<u64> = t.shape.iter().rev().copied().collect();
            if name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight") {
                let heads = if name.ends_with("attn_q.weight") {
                    n_head
                } else {
                    n_kv
                };
                data = permute_rows(&data, t.shape[0] as usize, t.shape[1] as usize, heads);
            }
            tensors.push((name, dims, data));
        }

        let mut meta: Vec<(String, MetaValue)> = vec![
            (
                "general.architecture".into(),
                MetaValue::Str("llama".into()),
            ),
            (
                "general.name".into(),
                MetaValue::Str("tiny-llama-fixture".into()),
            ),
            (
                "llama.block_count".into(),
                MetaValue::U32(u("num_hidden_layers")),
            ),
            (
                "llama.context_length".into(),
                MetaValue::U32(u("max_position_embeddings")),
            ),
            (
                "llama.embedding_length".into(),
                MetaValue::U32(u("hidden_size")),
            ),
            (
                "llama.feed_forward_length".into(),
                MetaValue::U32(u("intermediate_size")),
            ),
            (
                "llama.attention.head_count".into(),
                MetaValue::U32(n_head as u32),
            ),
            (
                "llama.attention.head_count_kv".into(),
                MetaValue::U32(n_kv as u32),
            ),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                MetaValue::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
            ),
            (
                "llama.rope.freq_base".into(),
                MetaValue::F32(cfg["rope_theta"].as_f64().unwrap() as f32),
            ),
        ];

        // Tokenizer: byte-level BPE from tokenizer.json, specials from tokenizer_config.json.
        let tj = read_json(&dir.join("tokenizer.json"));
        let tc = read_json(&dir.join("tokenizer_config.json"));
        let vocab = tj["model"]["vocab"].as_object().unwrap();
        let mut tokens = vec![String::new(); vocab.len()];
        for (tok, id) in vocab {
            tokens[id.as_u64().unwrap() as usize] = tok.clone();
        }
        let mut types = vec![1i32; tokens.len()];
        for a in tj["added_tokens"].as_array().unwrap() {
            let id = a["id"].as_u64().unwrap() as usize;
            tokens[id] = a["content"].as_str().unwrap().to_string();
            types[id] = if a["special"].as_bool() == Some(true) {
                3
            } else {
                4
            };
        }
        let merges: Vec<MetaValue> = tj["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => MetaValue::Str(s.clone()),
                serde_json::Value::Array(p) => MetaValue::Str(format!(
                    "{} {}",
                    p[0].as_str().unwrap(),
                    p[1].as_str().unwrap()
                )),
                other => panic!("merge {other:?}"),
            })
            .collect();
        let id_of = |key: &str| {
            let text = tc[key].as_str().unwrap();
            tokens.iter().position(|t| t == text).unwrap() as u32
        };
        let (bos, eos) = (id_of("bos_token"), id_of("eos_token"));
        meta.extend([
            ("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into())),
            ("tokenizer.ggml.pre".into(), MetaValue::Str("gpt2".into())),
            (
                "tokenizer.ggml.tokens".into(),
                MetaValue::Array(tokens.into_iter().map(MetaValue::Str).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
            ),
            ("tokenizer.ggml.merges".into(), MetaValue::Array(merges)),
            ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(bos)),
            ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(eos)),
            (
                "tokenizer.ggml.add_bos_token".into(),
                MetaValue::Bool(tc["add_bos_token"].as_bool().unwrap_or(false)),
            ),
        ]);
        GgufSpec { meta, tensors }
    }
}
