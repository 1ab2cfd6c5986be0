//! `vspec convert --budget` end to end on the tiny Hugging Face Llama fixture (hidden 64,
//! intermediate 160: its `ffn_down` rows of 160 fit only the 32-weight formats, the other
//! matrices every candidate): the written file fits the budget by `vspec plan`'s count and runs,
//! more bytes never raise the summed sensitivity, the choice does not depend on the thread
//! count, a budget below the cheapest mix is refused with the smallest that works (and leaves no
//! file), and `--ctx` adds the arena, KV cache and fixed overhead exactly as `vspec plan` does.

mod common;

use std::path::Path;

use common::*;
use vspec_core::kv::KvType;
use vspec_host::expand::Expansion;
use vspec_host::memory::{plan_file, PlanRequest};
use vspec_host::ModelFile;

/// The `N` of "the smallest that works is X MB (N bytes)".
/// A plan of the weights as the file stores them (budgets count those; some CPUs' sessions hold
/// trellis matrices rewritten, which `VSPEC_EXPAND=0` turns off: tests/expand.rs).
fn stored() -> PlanRequest {
    PlanRequest {
        expansion: Some(Expansion::Never),
        ..PlanRequest::default()
    }
}

fn smallest_in(stderr: &str) -> u64 {
    let at = stderr
        .find("the smallest that works is ")
        .unwrap_or_else(|| panic!("no smallest budget in: {stderr}"));
    let rest = &stderr[at..];
    let open = rest.find('(').unwrap() + 1;
    let close = rest[open..].find(' ').unwrap() + open;
    rest[open..close].parse().unwrap()
}

/// The value printed after "summed sensitivity ".
fn sensitivity_in(stderr: &str) -> f64 {
    let at = stderr.find("summed sensitivity ").expect(stderr) + "summed sensitivity ".len();
    stderr[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `convert --budget BYTES EXTRA -o out`; returns stderr.
fn convert_budget(model: &Path, bytes: u64, extra: &[&str], out: &Path) -> String {
    let b = bytes.to_string();
    let mut args = vec!["convert", "-m", s(model), "--budget", &b];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(out)]);
    let (_, stderr) = succeeds(&args);
    assert!(out.is_file(), "{} not written", out.display());
    stderr
}

#[test]
fn budgets_fit_run_and_trade_bytes_for_sensitivity() {
    let tmp = TempDir::new("budget");
    let model = llama_dir();
    // The smallest budget, from the refusal of one byte less than anything could take.
    let e = fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--budget",
            "1KB",
            "-o",
            s(&tmp.join("no.vspec")),
        ],
        &[
            "cannot be met",
            "the smallest that works is",
            "cheapest format",
        ],
    );
    let least = smallest_in(&e);
    assert!(!tmp.join("no.vspec").exists());
    let e = fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--budget",
            &(least - 1).to_string(),
            "--no-calibration",
            "-o",
            s(&tmp.join("no.vspec")),
        ],
        &["cannot be met"],
    );
    assert_eq!(smallest_in(&e), least);
    assert_eq!(tmp.entries(), Vec::<String>::new(), "nothing is written");
    // From the cheapest mix to room for everything (Q8_0 is at most 3.8x the cheapest).
    let mut last = f64::INFINITY;
    let mut sizes = Vec::new();
    for (i, factor) in [1.0, 1.2, 1.5, 4.0].into_iter().enumerate() {
        let budget = (least as f64 * factor) as u64;
        let out = tmp.join(&format!("b{i}.vspec"));
        let stderr = convert_budget(&model, budget, &["--no-calibration", "-t", "2"], &out);
        assert!(stderr.contains("the budget's mix"), "{stderr}");
        let sens = sensitivity_in(&stderr);
        assert!(
            sens <= last,
            "budget {budget}: sensitivity {sens} after {last}"
        );
        last = sens;
        let plan = plan_file(&out, &stored()).unwrap();
        assert!(
            plan.plan.weight_bytes as u64 <= budget,
            "{} > {budget}",
            plan.plan.weight_bytes
        );
        sizes.push(plan.plan.weight_bytes);
        let (text, gen_err) = succeeds(&gen_args(s(&out)));
        assert!(!gen_err.contains("error"), "{gen_err}");
        eprintln!(
            "budget {budget}: weights {} B, sensitivity {sens}, text {text:?}",
            plan.plan.weight_bytes
        );
        if i == 0 {
            assert_eq!(plan.plan.weight_bytes as u64, least);
        }
        if i == 3 {
            // Room for everything: every matrix at the top candidate, almost no loss left.
            let m = ModelFile::open(&out).unwrap();
            let recipe = &m.vspec().unwrap().metadata["recipe"];
            assert!(recipe.lines().all(|l| l.ends_with("= Q8_0")), "{recipe}");
            assert!(sens < 1e-3, "{sens}");
        }
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    // The built-in calibration path (second moments weigh the error) and thread counts.
    let mid = (least as f64 * 1.3) as u64;
    let (a, b) = (tmp.join("t1.vspec"), tmp.join("t2.vspec"));
    let ea = convert_budget(&model, mid, &["-t", "1"], &a);
    assert!(ea.contains("built-in text"), "{ea}");
    convert_budget(&model, mid, &["-t", "2"], &b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let m = ModelFile::open(&a).unwrap();
    let meta = &m.vspec().unwrap().metadata;
    assert!(
        meta.get("recipe")
            .is_some_and(|r| r.contains("blk.0.attn_q.weight = ")),
        "{meta:?}"
    );
}

#[test]
fn ctx_counts_what_plan_counts() {
    let tmp = TempDir::new("budget-ctx");
    let model = llama_dir();
    let least = |extra: &[&str]| {
        let mut args = vec!["convert", "-m", s(&model), "--budget", "1KB"];
        args.extend_from_slice(extra);
        let out = tmp.join("no.vspec");
        args.extend_from_slice(&["-o", s(&out)]);
        smallest_in(&fails_with(&args, &["cannot be met"]))
    };
    let weights_only = least(&[]);
    let e = fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--budget",
            "1KB",
            "--ctx",
            "64",
            "--kv",
            "f32",
            "-o",
            s(&tmp.join("no.vspec")),
        ],
        &["f32 KV cache at ctx 64", "fixed overhead"],
    );
    let with_ctx = smallest_in(&e);
    // The difference is the plan's total minus its weights, for any file of this model.
    let p = plan_file(
        &model,
        &PlanRequest {
            ctx: 64,
            kv_type: KvType::F32,
            ..stored()
        },
    )
    .unwrap();
    assert_eq!(
        with_ctx - weights_only,
        (p.total_bytes - p.plan.weight_bytes) as u64
    );
    // A budget with room for a few more bits, checked with `vspec plan --budget` on the file.
    let budget = with_ctx + weights_only / 2;
    let out = tmp.join("ctx.vspec");
    let b = budget.to_string();
    let stderr = convert_budget(
        &model,
        budget,
        &["--ctx", "64", "--kv", "f32", "--no-calibration"],
        &out,
    );
    assert!(
        stderr.contains("weights, arena, KV cache, overhead"),
        "{stderr}"
    );
    succeeds(&[
        "plan",
        "-m",
        s(&out),
        "--ctx",
        "64",
        "--kv",
        "f32",
        "--budget",
        &b,
    ]);
    // One byte less than the file needs at that context: `plan` refuses it.
    let total = plan_file(
        &out,
        &PlanRequest {
            ctx: 64,
            kv_type: KvType::F32,
            ..stored()
        },
    )
    .unwrap()
    .total_bytes;
    let b1 = (total - 1).to_string();
    fails_with(
        &[
            "plan",
            "-m",
            s(&out),
            "--ctx",
            "64",
            "--kv",
            "f32",
            "--budget",
            &b1,
        ],
        &["over by"],
    );
}

#[test]
fn flag_conflicts_and_bad_budgets() {
    let tmp = TempDir::new("budget-flags");
    let model = llama_dir();
    let out = tmp.join("x.vspec");
    for (extra, needle) in [
        (&["--budget", "10MB", "--bits", "3"][..], "--bits"),
        (&["--budget", "10MB", "--recipe", "r.txt"], "--recipe"),
        (&["--bits", "3", "--ctx", "64"], "--budget"),
        (&["--budget", "10MB", "--kv", "f16"], "--ctx"),
        (&["--budget", "ten"], "not a byte count"),
        (&["--budget", "10 parsecs"], "unknown unit"),
    ] {
        let mut args = vec!["convert", "-m", s(&model)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", s(&out)]);
        fails_with(&args, &[needle]);
    }
    assert_eq!(tmp.entries(), Vec::<String>::new());
}
