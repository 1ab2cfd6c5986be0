//! `vspec plan`: the numbers from headers alone, JSON with `total_bytes`, and budgets.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/qwen3")
}

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vspec"))
        .arg("plan")
        .arg("-m")
        .arg(tiny())
        .args(args)
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = plan(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_totals_add_up_for_every_kv_type() {
    let mut kv_bytes = Vec::new();
    for kv in ["f32", "f16", "q8_0"] {
        let v = json(&["--ctx", "256", "--batch", "32", "--kv", kv, "--json"]);
        let n = |k: &str| v[k].as_u64().unwrap();
        assert_eq!(
            n("planned_bytes"),
            n("weight_bytes") + n("arena_bytes") + n("kv_bytes")
        );
        assert_eq!(n("total_bytes"), n("planned_bytes") + n("overhead_bytes"));
        let layers = v["layers"].as_array().unwrap();
        let sum = |k: &str| layers.iter().map(|l| l[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("weight_bytes"), n("weight_bytes"));
        assert_eq!(sum("kv_bytes"), n("kv_bytes"));
        assert_eq!(v["kv_type"], kv);
        kv_bytes.push(n("kv_bytes"));
    }
    // qwen3 fixture: 2 layers x 2 kv heads x head_dim 32 = 64 values per row, K and V, 256 rows.
    let values = 2 * 2 * 256 * 64;
    assert_eq!(kv_bytes, vec![values * 4, values * 2, values / 32 * 34]);
}

#[test]
fn a_budget_that_is_missed_says_by_how_much_and_what_fits() {
    let fits = plan(&["--ctx", "128", "--budget", "1GiB"]);
    assert!(fits.status.success());
    assert!(String::from_utf8_lossy(&fits.stdout).contains("fits the budget"));

    let v = json(&["--ctx", "4096", "--kv", "f32", "--json"]);
    let total = v["total_bytes"].as_u64().unwrap();
    let budget = total - 1000;
    let out = plan(&[
        "--ctx",
        "4096",
        "--kv",
        "f32",
        "--budget",
        &budget.to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over by") && err.contains("(1000 bytes)"),
        "{err}"
    );
    assert!(err.contains("fits with ctx up to"), "{err}");
    assert!(
        err.contains("--kv f16") && err.contains("--kv q8_0"),
        "{err}"
    );

    let tiny_budget = plan(&["--budget", "1KB"]);
    assert!(!tiny_budget.status.success());
    assert!(String::from_utf8_lossy(&tiny_budget.stderr).contains("no context fits"));

    for bad in ["12 parsecs", "MiB", "-5MB"] {
        let out = plan(&["--budget", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error:"),
            "{bad}"
        );
    }
    let out = plan(&["--kv", "q4"]);
    assert!(!out.status.success());
}

fn generate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vspec"))
        .args(["generate", "-m"])
        .arg(tiny())
        .args(["-c", "16", "-n", "40", "--temp", "0", "-p", "hello world"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_full_context_is_an_error_unless_shifting() {
    let out = generate(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is full") && err.contains("--ctx-shift"),
        "{err}"
    );
    for kv in ["f32", "f16", "q8_0"] {
        let out = generate(&["--ctx-shift", "--kv", kv]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kv}: {err}");
        assert!(err.contains("generation: 39 tokens"), "{kv}: {err}");
    }
}
