//! A `#![no_std]`, `#![no_main]` program that runs a model with `vspec-core` alone: the model is
//! compiled in (`include_bytes!`), every heap byte comes from one `static` buffer whose size the
//! build computed from the model's plan, and the greedy tokens go to stdout through the `write`
//! system call. No libc, no std, no start files: `rt.rs` and `mem.rs` are the whole runtime.
//!
//! Build-time inputs (read by `build.rs`): `VSPEC_NOSTD_MODEL` (a GGUF file), the prompt
//! `VSPEC_NOSTD_PROMPT` (token ids, comma-separated) and `VSPEC_NOSTD_STEPS` (tokens to generate).
//! Exit codes: 0 done, 2 the core returned an error (printed), 3 the heap ran out, 101 a panic.
#![no_std]
#![no_main]
// Our own `memcpy` & co. live here (src/mem.rs): LLVM must not turn their loops into calls.
#![no_builtins]

extern crate alloc;

mod mem;
mod rt;
// `heap_bytes` and `Loaded::header` serve build.rs and the heap test, which share this file.
#[allow(dead_code)]
mod run;

use core::fmt::Write;
use vspec_core::graph::Limits;

// HEAP_BYTES (the static heap; PLANNED_HEAP_BYTES unless overridden), LOAD_HEAP_BYTES,
// ARENA_BYTES, KV_BYTES, MAX_CTX, MAX_TOKENS, PROMPT, STEPS: written by build.rs from the plan.
include!(concat!(env!("OUT_DIR"), "/plan.rs"));

/// Bytes with the alignment of a cache line: GGUF aligns tensor data to 32 bytes from the start
/// of the file, and the f32 kernels read weights as `f32` slices, so the file's first byte must
/// be at least 4-byte aligned (`include_bytes!` alone only promises 1).
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.gguf")));

/// Called by `rt`'s `_start`; the return value is the exit code.
fn main() -> i32 {
    let limits = Limits {
        max_ctx: MAX_CTX,
        max_tokens: MAX_TOKENS,
        all_logits: false,
    };
    let mut out = rt::Fd(1);
    let mut err = rt::Fd(2);
    let result = run::load(&MODEL.0, limits).and_then(|model| {
        let mut first = true;
        run::generate(&model, PROMPT, STEPS, &mut |token| {
            let sep = if first { "" } else { " " };
            first = false;
            // stdout closed is not worth a different exit code: the test reads it.
            let _ = write!(out, "{sep}{token}");
        })
    });
    let _ = writeln!(out);
    let _ = writeln!(
        err,
        "heap: used {} of {HEAP_BYTES} bytes (planned {PLANNED_HEAP_BYTES}: load bound \
         {LOAD_HEAP_BYTES} + arena {ARENA_BYTES} \
         + KV cache {KV_BYTES} + alignment)",
        rt::heap_used()
    );
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            2
        }
    }
}
