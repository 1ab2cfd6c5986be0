//! Embeds the model and sizes the heap from its plan.
//!
//! Reads `VSPEC_NOSTD_MODEL` (a GGUF file), `VSPEC_NOSTD_PROMPT` (token ids, comma-separated;
//! default `1,2,3,4`) and `VSPEC_NOSTD_STEPS` (tokens to generate; default 16); loads and plans
//! the model for a context of prompt + steps with the code the binary runs (`src/run.rs`), and
//! writes into `OUT_DIR` the model (`model.gguf`, for `include_bytes!`) and `plan.rs`, whose
//! `HEAP_BYTES` is the plan's number: the core's load-heap bound plus the arena and KV cache.
//! `VSPEC_NOSTD_HEAP_BYTES` replaces that number (a test makes the heap too small with it).
//!
//! It also links the binary as a static executable with no C start files and no libc.

extern crate alloc;

#[path = "src/run.rs"]
#[allow(dead_code)]
mod run;

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use vspec_core::graph::Limits;

fn main() {
    if let Err(e) = build() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}

fn build() -> Result<(), String> {
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let model = var("VSPEC_NOSTD_MODEL").ok_or(
        "set VSPEC_NOSTD_MODEL to a GGUF model file (the test `cargo test --release -p \
         vspec-tests --test nostd_example` writes a tiny one to target/nostd/tiny.gguf)",
    )?;
    println!("cargo:rerun-if-changed={model}");
    let bytes = std::fs::read(&model).map_err(|e| format!("{model}: {e}"))?;
    let prompt: Vec<u32> = var("VSPEC_NOSTD_PROMPT")
        .unwrap_or_else(|| "1,2,3,4".into())
        .split(',')
        .map(|t| t.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("VSPEC_NOSTD_PROMPT: {e}"))?;
    let steps: usize = var("VSPEC_NOSTD_STEPS")
        .map_or(Ok(16), |s| s.trim().parse())
        .map_err(|e| format!("VSPEC_NOSTD_STEPS: {e}"))?;
    if prompt.is_empty() || steps == 0 {
        return Err("the prompt and the number of steps must not be empty".into());
    }
    let limits = Limits {
        max_ctx: prompt.len() + steps,
        max_tokens: prompt.len(),
        all_logits: false,
    };
    let loaded = run::load(&bytes, limits).map_err(|e| format!("{model}: {e}"))?;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= loaded.config.vocab) {
        return Err(format!(
            "VSPEC_NOSTD_PROMPT: token {bad} is past the vocabulary ({})",
            loaded.config.vocab
        ));
    }
    let load = vspec_core::plan::LoadHeap::new(&loaded.header, &loaded.graph);
    let planned = run::heap_bytes(&loaded);
    let heap = match var("VSPEC_NOSTD_HEAP_BYTES") {
        Some(s) => s
            .trim()
            .parse()
            .map_err(|e| format!("VSPEC_NOSTD_HEAP_BYTES: {e}"))?,
        None => planned,
    };

    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    std::fs::write(out.join("model.gguf"), &bytes).map_err(|e| e.to_string())?;
    let mut src = String::new();
    let mut line = |name: &str, ty: &str, value: String| {
        let _ = writeln!(src, "const {name}: {ty} = {value};");
    };
    line("HEAP_BYTES", "usize", heap.to_string());
    line("PLANNED_HEAP_BYTES", "usize", planned.to_string());
    line("LOAD_HEAP_BYTES", "usize", load.total().to_string());
    line("ARENA_BYTES", "usize", loaded.plan.arena_bytes.to_string());
    line("KV_BYTES", "usize", loaded.plan.kv_bytes.to_string());
    line("MAX_CTX", "usize", limits.max_ctx.to_string());
    line("MAX_TOKENS", "usize", limits.max_tokens.to_string());
    line("PROMPT", "&[u32]", format!("&{prompt:?}"));
    line("STEPS", "usize", steps.to_string());
    std::fs::write(out.join("plan.rs"), src).map_err(|e| e.to_string())?;
    Ok(())
}
