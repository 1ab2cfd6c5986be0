//! Trellis matrices rewritten as Q8_0 for CPUs that decode them slowly (`vspec_host::expand`):
//! the same logits as the packed weights, plans that count the rewritten bytes, the policy from
//! `VSPEC_EXPAND` (a bad value is a clean error), and the line `vspec` prints when it rewrites.
//!
//! The model is the tiny Hugging Face Llama fixture converted with `--bits 2` (TQ2, TQ3 and TQ4
//! matrices; `ffn_down` falls back to Q8_0). Also the same file's trellis rows held interleaved
//! per sixteen rows (`VSPEC_INTERLEAVE`) on the AVX-512 tiers.

mod common;

use std::path::Path;
use std::process::Command;

use vspec_bench::tier_table;
use vspec_core::format::Format;
use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_host::expand::{Expansion, Rewritten};
use vspec_host::{Engine, ModelFile};

use common::*;

const LIMITS: Limits = Limits {
    max_ctx: 64,
    max_tokens: 16,
    all_logits: true,
};

/// All positions' logits of a fixed text, and what the engine rewrote.
fn logits(model: &ModelFile, kernels: KernelTable, policy: Expansion) -> (Vec<f32>, Rewritten) {
    let ids = model
        .tokenizer()
        .unwrap()
        .encode("Hello world, the quick brown fox.", true)
        .unwrap();
    let mut engine = Engine::build_with(model, LIMITS, KvType::F32, 2, kernels, policy).unwrap();
    let rewritten = engine.rewritten().clone();
    let mut sess = engine.session().unwrap();
    let l = sess.forward(&ids[..ids.len().min(16)]).unwrap().to_vec();
    assert!(l.iter().all(|v| v.is_finite()));
    (l, rewritten)
}

/// Largest `|a − b|` over the largest `|b|`.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    err / scale.max(1e-30)
}

fn converted(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("tiny-2.vspec");
    let llama = llama_dir();
    succeeds(&[
        "convert",
        "-m",
        s(&llama),
        "--bits",
        "2",
        "--no-calibration",
        "-t",
        "2",
        "-o",
        s(&out),
    ]);
    out
}

/// Tier `tier`'s table where this CPU has it, else `None` after making sure the run does not
/// require it (`VSPEC_REQUIRE_ISA`, as CI sets) and printing what is SKIPPED.
fn required_tier(tier: &str, skipped: &str) -> Option<KernelTable> {
    if let Some(table) = tier_table(tier) {
        return Some(table);
    }
    let required = std::env::var("VSPEC_REQUIRE_ISA").unwrap_or_default();
    let family = tier.split('-').next().unwrap_or(tier);
    assert!(
        !required.split(',').any(|r| r == family),
        "VSPEC_REQUIRE_ISA={required} but this CPU lacks the {tier} tier"
    );
    println!("SKIPPED(no {tier}): {skipped}");
    None
}

#[test]
fn rewritten_trellis_matrices_give_the_same_logits_and_plans() {
    let tmp = TempDir::new("expand");
    let path = converted(tmp.path());
    let model = ModelFile::open(&path).unwrap();

    // Scalar references: they decode weights to f32 before every dot product, and the rewrite
    // decodes to the same f32 bits, so the logits are the same bits.
    let scalar = KernelTable::scalar();
    let (packed, none) = logits(&model, scalar.clone(), Expansion::Never);
    assert_eq!(none.tensors, 0);
    let (auto, none) = logits(&model, scalar.clone(), Expansion::Auto);
    assert_eq!(none.tensors, 0, "the scalar table asks for no rewrite");
    assert_eq!(auto, packed);
    let (q8, r) = logits(&model, scalar.clone(), Expansion::Always);
    println!("{r:?}");
    assert!(r.tensors >= 10, "{r:?}");
    for f in [Format::TQ2, Format::TQ3, Format::TQ4] {
        assert!(r.from.contains(&f), "{r:?}");
    }
    assert!(r.held_bytes > 2 * r.file_bytes, "{r:?}");
    assert!(r.note().unwrap().contains("VSPEC_EXPAND=0"));
    assert!(q8 == packed, "rel error {:.3e}", rel_err(&q8, &packed));

    // The plan counts the rewritten bytes, and an engine's plan is the same.
    let file_bytes = |policy| {
        let g = model
            .plan_graph_cpu(LIMITS, KvType::F32, &scalar, policy)
            .unwrap();
        Plan::new(&g).unwrap().weight_bytes
    };
    let grown = file_bytes(Expansion::Always) - file_bytes(Expansion::Never);
    assert_eq!(grown, r.held_bytes - r.file_bytes);
    let engine = Engine::build_with(
        &model,
        LIMITS,
        KvType::F32,
        1,
        scalar.clone(),
        Expansion::Always,
    )
    .unwrap();
    assert_eq!(engine.plan.weight_bytes, file_bytes(Expansion::Always));

    // The AVX2 tier asks for it; its logits match its packed kernels' (both quantize the same
    // activations and sum the same i8 weights per 32; measured bit-identical here, but the
    // kernels differ, so only a tolerance is promised).
    let Some(avx2) = required_tier("avx2", "the AVX2 tier's choice is not checked on this CPU")
    else {
        return;
    };
    let (fast, r) = logits(&model, avx2.clone(), Expansion::Auto);
    assert!(r.tensors >= 10, "{r:?}");
    let (slow, none) = logits(&model, avx2, Expansion::Never);
    assert_eq!(none.tensors, 0);
    let err = rel_err(&fast, &slow);
    println!("avx2: rewritten vs packed, rel error {err:.2e}");
    assert!(err < 1e-4, "rel error {err:.3e}");
}

/// The trellis matrices a VBMI table reads interleaved per sixteen rows give the bits of the
/// file's row order, on both AVX-512 tiers (split or not); `VSPEC_INTERLEAVE` is left at its
/// default, so what decides is the table.
#[test]
fn interleaved_trellis_rows_give_the_same_logits_on_both_avx512_tiers() {
    let tmp = TempDir::new("interleave");
    let path = converted(tmp.path());
    let model = ModelFile::open(&path).unwrap();
    for tier in ["avx512", "avx512-split"] {
        let Some(table) = required_tier(tier, "interleaved trellis rows are not checked here")
        else {
            return;
        };
        let mut row_major = table.clone();
        for f in [Format::TQ2, Format::TQ3, Format::TQ4] {
            assert!(table.rows16(f), "{tier}: {f:?} not read interleaved");
            row_major.set_rows16(f, false);
        }
        let held = |kernels: &KernelTable| {
            Engine::build_with(
                &model,
                LIMITS,
                KvType::F32,
                1,
                kernels.clone(),
                Expansion::Auto,
            )
            .unwrap()
            .interleaved()
        };
        assert!(held(&table) >= 4, "{tier}: too few interleaved weights");
        assert_eq!(held(&row_major), 0);
        let (interleaved, _) = logits(&model, table, Expansion::Auto);
        let (file_order, _) = logits(&model, row_major, Expansion::Auto);
        assert!(
            interleaved == file_order,
            "{tier}: rel error {:.3e}",
            rel_err(&interleaved, &file_order)
        );
    }
}

/// `vspec ARGS` with `VSPEC_EXPAND=value`: (success, stdout, stderr).
fn vspec_with(value: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vspec"))
        .args(args)
        .env("VSPEC_LOG", "warn")
        .env("VSPEC_EXPAND", value)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_cli_says_what_it_rewrote_and_plans_it() {
    let tmp = TempDir::new("expand-cli");
    let path = converted(tmp.path());
    let m = s(&path);
    let (ok, packed_text, stderr) = vspec_with("0", &gen_args(m));
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("run as Q8_0"), "{stderr}");
    let (ok, text, stderr) = vspec_with("1", &gen_args(m));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("run as Q8_0"), "{stderr}");
    assert_eq!(text, packed_text, "greedy text changed by the rewrite");

    let plan_weights = |value: &str| {
        let (ok, stdout, stderr) = vspec_with(value, &["plan", "-m", m, "--json"]);
        assert!(ok, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        (n("weight_bytes"), n("file_weight_bytes"))
    };
    let (kept, file) = plan_weights("off");
    assert_eq!(kept, file);
    let (grown, file2) = plan_weights("on");
    assert_eq!(file2, file);
    assert!(grown > file, "{grown} vs {file}");

    let (ok, _, stderr) = vspec_with("sometimes", &gen_args(m));
    assert!(!ok);
    assert!(stderr.contains("VSPEC_EXPAND='sometimes'"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
