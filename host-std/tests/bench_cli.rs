//! `vspec bench` on the tiny Hugging Face Llama fixture: the JSON and table shapes, the
//! roofline fields, and clean errors for bad flags and missing files. The sizes are tiny, so
//! the speeds themselves mean nothing here; only the shape and the bookkeeping are checked.

mod common;

use common::*;

/// `bench -m model extra…`, with small defaults for the flags `extra` leaves out (16 prompt
/// tokens in steps of 8, 8 generated, 2 repetitions): quick on a busy CI machine.
fn bench_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["bench", "-m", model];
    for (flag, value) in [("-p", "16"), ("-n", "8"), ("-r", "2"), ("-b", "8")] {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, value]);
        }
    }
    v.extend_from_slice(extra);
    v
}

#[test]
fn json_has_one_entry_per_model_thread_count_and_test() {
    let dir = llama_dir();
    let model = s(&dir);
    // The same model twice stands for a comma list of files.
    let list = format!("{model},{model}");
    let (stdout, _) = succeeds(&bench_args(
        &list,
        &["-t", "1,2", "--bw-mib", "8", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    let entries = v.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 2 * 2 * 2, "{stdout}");
    let mut seen = Vec::new();
    for e in entries {
        let test = e["test"].as_str().unwrap();
        let threads = e["n_threads"].as_u64().unwrap();
        seen.push((test.to_string(), threads));
        assert_eq!(e["model_type"], "llama");
        assert_eq!(e["model_filename"].as_str().unwrap(), model);
        assert!(e["model_size"].as_u64().unwrap() > 0);
        // hidden 64, intermediate 160, 2 layers, vocab 320, untied head.
        assert!(e["model_n_params"].as_u64().unwrap() > 100_000);
        assert_eq!(e["samples_ns"].as_array().unwrap().len(), 2);
        let samples: Vec<f64> = e["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(samples.len(), 2);
        let mean = samples.iter().sum::<f64>() / 2.0;
        assert!((e["avg_ts"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean);
        assert!(e["read_bandwidth_bytes_per_s"].as_f64().unwrap() > 0.0);
        match test {
            "pp16" => {
                assert_eq!(e["n_prompt"], 16);
                assert_eq!(e["n_gen"], 0);
                assert!(e["roofline_ts"].is_null());
            }
            "tg8" => {
                assert_eq!(e["n_prompt"], 0);
                assert_eq!(e["n_gen"], 8);
                let bytes = e["decode_bytes_per_token"].as_f64().unwrap();
                // At least the weights minus the embedding table (all but one row unread).
                assert!(bytes > 0.5 * e["model_size"].as_f64().unwrap(), "{e}");
                let roof = e["roofline_ts"].as_f64().unwrap();
                let bw = e["read_bandwidth_bytes_per_s"].as_f64().unwrap();
                assert!((roof - bw / bytes).abs() <= 1e-9 * roof);
                let pct = e["roofline_pct"].as_f64().unwrap();
                assert!((pct - 100.0 * e["avg_ts"].as_f64().unwrap() / roof).abs() < 1e-6);
            }
            other => panic!("unexpected test {other}"),
        }
    }
    for t in [1, 2] {
        for name in ["pp16", "tg8"] {
            let n = seen.iter().filter(|(s, th)| s == name && *th == t).count();
            assert_eq!(n, 2, "{name} with {t} threads: {seen:?}");
        }
    }
}

#[test]
fn table_has_llama_bench_columns_and_a_roofline() {
    let dir = llama_dir();
    let (stdout, _) = succeeds(&bench_args(s(&dir), &["-t", "1", "--bw-mib", "8"]));
    assert!(stdout.contains("memory read bandwidth"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| model "))
        .expect("a table");
    let cols: Vec<&str> = header.split('|').map(str::trim).collect();
    assert_eq!(
        cols,
        ["", "model", "size", "params", "backend", "threads", "test", "t/s", ""]
    );
    assert!(stdout.contains(" pp16 |"), "{stdout}");
    assert!(stdout.contains(" tg8 |"), "{stdout}");
    assert!(stdout.contains("% of max"), "{stdout}");
    assert!(stdout.contains(" ± "), "{stdout}");
}

#[test]
fn zero_skips_a_test_and_the_bandwidth() {
    let dir = llama_dir();
    let (stdout, _) = succeeds(&bench_args(
        s(&dir),
        &["-n", "0", "-t", "1", "--bw-mib", "0", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["test"], "pp16");
    assert!(entries[0]["read_bandwidth_bytes_per_s"].is_null());
}

#[test]
fn depth_runs_each_test_after_that_many_cached_tokens() {
    let dir = llama_dir();
    let (stdout, _) = succeeds(&bench_args(
        s(&dir),
        &["-t", "1", "-d", "0,8", "--bw-mib", "8", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entries = v.as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["test"].as_str().unwrap())
        .collect();
    // llama-bench's names and order: per depth, the prompt test then the generation test.
    assert_eq!(names, ["pp16", "tg8", "pp16 @ d8", "tg8 @ d8"], "{stdout}");
    let depths: Vec<u64> = entries
        .iter()
        .map(|e| e["n_depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [0, 0, 8, 8]);
    // The decode at depth 8 reads 8 more cached positions per token than from an empty cache:
    // 2 layers × K and V × 32 values (2 KV heads of 16) × 2 bytes (the default f16 cache).
    let bytes = |e: &serde_json::Value| e["decode_bytes_per_token"].as_f64().unwrap();
    let extra = bytes(&entries[3]) - bytes(&entries[1]);
    assert!(
        (extra - 8.0 * 2.0 * 2.0 * 32.0 * 2.0).abs() < 1e-6,
        "{extra}"
    );
    fails_with(&bench_args(s(&dir), &["-d", "x"]), &["--n-depth"]);
    // A cache no machine can hold (4 PiB, past any x86-64 address space) is a message naming
    // the context, not an abort.
    fails_with(
        &bench_args(s(&dir), &["-n", "0", "-d", "17592186044416"]),
        &[
            "cannot allocate",
            "KV cache",
            "17592186044432-token context",
        ],
    );
}

#[test]
fn prompt_and_generation_lengths_take_lists() {
    let dir = llama_dir();
    let (stdout, _) = succeeds(&bench_args(
        s(&dir),
        &[
            "-p", "8,16", "-n", "0,4", "-t", "1", "--bw-mib", "0", "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["test"].as_str().unwrap())
        .collect();
    // As llama-bench: each prompt length, then each generation length; 0 skips.
    assert_eq!(names, ["pp8", "pp16", "tg4"], "{stdout}");
    let out = TempDir::new("bench-lists");
    let dir_arg = out.join("r");
    fails_with(
        &bench_args(
            s(&dir),
            &["-p", "8,16", "--report", dir_arg.to_str().unwrap()],
        ),
        &["--report takes one -p and one -n"],
    );
}

#[test]
fn bad_input_is_an_error_message() {
    let dir = llama_dir();
    let model = s(&dir);
    fails_with(&bench_args(model, &["-r", "0"]), &["-r/--repetitions"]);
    fails_with(&bench_args(model, &["-p", "0", "-n", "0"]), &["nothing"]);
    fails_with(&bench_args(model, &["-b", "0"]), &["-b/--batch-size"]);
    fails_with(&bench_args(model, &["-t", "1,x"]), &["--threads"]);
    fails_with(&bench_args(model, &["-t", "100000"]), &["-t/--threads"]);
    let missing = format!("{model},/nonexistent/vspec-bench-model.gguf");
    fails_with(
        &bench_args(&missing, &["-t", "1"]),
        &["/nonexistent/vspec-bench-model.gguf"],
    );
}
