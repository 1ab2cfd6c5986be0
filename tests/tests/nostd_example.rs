//! The `#![no_std]`, `#![no_main]` example (`examples/nostd`) builds, runs, and prints the host's
//! greedy tokens: cargo builds it (its own workspace, `panic = "abort"`, linked with no libc and
//! no start files) around a tiny random model written here, the binary runs, and its tokens are
//! compared with the host engine's on the same model, prompt and kernels (the scalar references:
//! the example has no CPU-feature detection). Its executable must be static with no
//! interpreter and no dynamic section. Then its heap is made one byte smaller than the run used:
//! it must stop with "out of heap" (exit code 3), and at exactly that size it must finish.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_core::sample::{Sampler, SamplerConfig};
use vspec_host::{Engine, ModelFile};
use vspec_tests::tiny_gguf::TinyLlama;

const PROMPT: [u32; 5] = [3, 14, 15, 92, 65];
const STEPS: usize = 24;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the example for `model`, its heap `heap` bytes when given (else the plan's number);
/// returns the executable.
fn build(model: &Path, heap: Option<usize>) -> PathBuf {
    let root = repo();
    let target = root.join("target").join("nostd");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--offline", "--manifest-path"])
        .arg(root.join("examples/nostd/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env("VSPEC_NOSTD_MODEL", model)
        .env(
            "VSPEC_NOSTD_PROMPT",
            PROMPT.map(|t| t.to_string()).join(","),
        )
        .env("VSPEC_NOSTD_STEPS", STEPS.to_string())
        .env_remove("VSPEC_NOSTD_HEAP_BYTES");
    if let Some(h) = heap {
        cmd.env("VSPEC_NOSTD_HEAP_BYTES", h.to_string());
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building examples/nostd failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("release").join("vspec-nostd")
}

fn run(exe: &Path) -> (Output, String, String) {
    let out = Command::new(exe).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The host's greedy tokens: `vspec-host`'s engine with the scalar kernel table on one thread,
/// the same limits as the example's build (context prompt + steps, one step per prompt).
fn host_tokens(model: &Path) -> Vec<u32> {
    let file = ModelFile::open(model).unwrap();
    let limits = Limits {
        max_ctx: PROMPT.len() + STEPS,
        max_tokens: PROMPT.len(),
        all_logits: false,
    };
    let mut engine = Engine::with_kernels(&file, limits, 1, KernelTable::scalar()).unwrap();
    let mut session = engine.session().unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy(), file.config.vocab).unwrap();
    let mut tokens = Vec::new();
    let mut next = sampler.sample(session.forward(&PROMPT).unwrap(), &[]);
    for _ in 0..STEPS {
        tokens.push(next);
        if tokens.len() < STEPS {
            next = sampler.sample(session.forward(&[next]).unwrap(), &[]);
        }
    }
    tokens
}

/// Reads the ELF64 program headers of `exe`: true when one has type `kind`.
fn has_segment(exe: &[u8], kind: u32) -> bool {
    assert_eq!(&exe[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(exe[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([exe[o], exe[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(exe[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(exe[o..o + 4].try_into().unwrap()) == kind
    })
}

/// `heap: used N of M bytes ...`: N.
fn heap_used(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("heap: used "))
        .unwrap_or_else(|| panic!("no heap line in:\n{stderr}"));
    line["heap: used ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_no_std_example_prints_the_hosts_greedy_tokens_from_its_planned_heap() {
    let start = std::time::Instant::now();
    let dir = repo().join("target").join("nostd");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, TinyLlama::small().gguf()).unwrap();

    let exe = build(&model, None);
    let (out, stdout, stderr) = run(&exe);
    assert!(out.status.success(), "the example failed: {stderr}");
    let tokens: Vec<u32> = stdout
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let host = host_tokens(&model);
    assert_eq!(tokens, host, "no_std example and host disagree");
    let distinct: std::collections::BTreeSet<_> = host.iter().collect();
    assert!(
        distinct.len() > 4,
        "a degenerate continuation proves little: {host:?}"
    );
    eprintln!("no_std example: {stdout}{stderr}");

    // Static, no libc: no program interpreter (PT_INTERP = 3), no dynamic section (PT_DYNAMIC = 2).
    let bytes = std::fs::read(&exe).unwrap();
    assert!(
        !has_segment(&bytes, 3),
        "the example asks for a dynamic loader"
    );
    assert!(!has_segment(&bytes, 2), "the example has a dynamic section");

    // The heap the run used, one byte less (out of heap, exit code 3), and exactly it.
    let used = heap_used(&stderr);
    let exe = build(&model, Some(used - 1));
    let (out, _, stderr) = run(&exe);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("out of heap"), "{stderr}");
    let exe = build(&model, Some(used));
    let (out, stdout, stderr) = run(&exe);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.split_whitespace().count(), STEPS);
    eprintln!(
        "heap {used} bytes is enough and {} is not; test took {:.1} s",
        used - 1,
        start.elapsed().as_secs_f64()
    );
}

/// `name@version` of every package in a Cargo.lock.
fn locked(path: &Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = std::collections::BTreeSet::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.insert(format!("{n}@{}", v.trim_matches('"')));
        }
    }
    out
}

/// The example's lock pins the workspace's versions of the core's dependencies, so its offline
/// build finds them in the registry cache the workspace's build filled.
#[test]
fn the_examples_lock_agrees_with_the_workspace() {
    let root = repo();
    let workspace = locked(&root.join("Cargo.lock"));
    let example = locked(&root.join("examples/nostd/Cargo.lock"));
    assert!(
        example.iter().any(|p| p.starts_with("serde@")),
        "the example's lock was not read: {example:?}"
    );
    let stale: Vec<_> = example
        .into_iter()
        .filter(|p| !p.starts_with("vspec-") && !workspace.contains(p))
        .collect();
    assert!(
        stale.is_empty(),
        "examples/nostd/Cargo.lock pins {stale:?}, not in the workspace's Cargo.lock: copy \
         Cargo.lock to examples/nostd/ and build the example once to prune it"
    );
}
