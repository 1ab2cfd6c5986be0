//! `vspec bench --report DIR` on the tiny Hugging Face Llama fixture at a tiny setting (two
//! context lengths, one repetition, a few tokens): the files exist, the SVGs are whole documents
//! naming the expected series, report.md links every chart and states the machine and the
//! command, a peer file adds llama.cpp's points, and bad flags fail before anything is written.
//! The speeds of a model this small mean nothing; only the report's shape is checked.

mod common;

use common::*;
use std::path::Path;

const CHARTS: [&str; 5] = [
    "ctx-decode.svg",
    "ctx-prefill.svg",
    "size-decode.svg",
    "size-prefill.svg",
    "memory.svg",
];

/// `bench -m MODEL --report DIR` at the tiny setting (the flags `extra` leaves out), plus
/// `extra`.
fn report_args<'a>(model: &'a str, dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["bench", "-m", model, "--report", dir];
    for (flag, value) in [
        ("--ctx", "128,256"),
        ("-r", "1"),
        ("-p", "16"),
        ("-n", "4"),
        ("-b", "8"),
        ("-t", "1"),
        ("--bw-mib", "8"),
    ] {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, value]);
        }
    }
    v.extend_from_slice(extra);
    v
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A whole SVG document whose text elements are balanced and hold every one of `names`.
fn check_svg(name: &str, svg: &str, names: &[&str]) {
    assert!(
        svg.starts_with("<svg"),
        "{name}: {}",
        &svg[..svg.len().min(80)]
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{name}");
    assert!(
        svg.contains("xmlns=\"http://www.w3.org/2000/svg\""),
        "{name}"
    );
    assert_eq!(
        svg.matches("<text").count(),
        svg.matches("</text>").count(),
        "{name}: unbalanced <text>"
    );
    // Markup only where markup belongs: a raw '&' or '<' inside text would break the XML.
    for (i, _) in svg.match_indices('&') {
        let rest = &svg[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "{name}: raw & at {i}"
        );
    }
    for n in names {
        assert!(svg.contains(n), "{name} lacks '{n}'");
    }
}

#[test]
fn report_writes_linked_charts_with_the_series() {
    let model_dir = llama_dir();
    let model = s(&model_dir);
    let out = TempDir::new("report");
    let dir = out.join("nested/report");
    let peer = out.write(
        "peer.json",
        br#"{"rounds": 3, "cpu": "Test CPU", "cores": 2, "llama_cpp_python": "0.3.36",
            "results": [
              {"engine": "llama.cpp", "file": "/x/smollm2-Q4_0.gguf", "bytes": 96000000,
               "threads": 1, "test": "tg128", "tok_s": 100.0, "rounds": 3},
              {"engine": "llama.cpp", "file": "/x/smollm2-Q4_0.gguf", "bytes": 96000000,
               "threads": 1, "test": "pp512", "tok_s": 500.0, "rounds": 3},
              {"engine": "llama.cpp", "file": "/x/smollm2-Q4_0.gguf", "bytes": 96000000,
               "threads": 1, "test": "tg128 @ d2048", "tok_s": 60.0, "rounds": 3},
              {"engine": "llama.cpp", "file": "/x/smollm2-Q4_0.gguf", "bytes": 96000000,
               "threads": 1, "test": "pp512 @ d2048", "tok_s": 250.0, "rounds": 3},
              {"engine": "vspec", "file": "/x/sitting.vspec", "bytes": 50000000,
               "threads": 1, "test": "tg128 @ d2048", "tok_s": 90.0, "rounds": 3}
            ]}"#,
    );
    // The same model twice stands for a comma list of files.
    let list = format!("{model},{model}");
    let (stdout, stderr) = succeeds(&report_args(&list, s(&dir), &["--peer", s(&peer)]));
    // The usual table still goes to stdout.
    assert!(stdout.contains("| model "), "{stdout}");
    assert!(stderr.contains("report written to"), "{stderr}");

    let mut expected: Vec<String> = CHARTS.iter().map(|s| s.to_string()).collect();
    expected.push("report.md".into());
    expected.sort();
    assert_eq!(entries(&dir), expected, "no .part files left behind");

    let series = "llama, 1 thread";
    // The peer's decode at depth 2048 joins the decode-against-context chart; its tests at a
    // depth stay off the file-size charts.
    check_svg(
        "ctx-decode.svg",
        &read(&dir, "ctx-decode.svg"),
        &[
            series,
            "128",
            "256",
            "llama.cpp smollm2-Q4_0.gguf tg128, 1 thread (side by side)",
        ],
    );
    // This run's curves stand for vspec: its side-by-side entries at a depth are not repeated.
    assert!(!read(&dir, "ctx-decode.svg").contains("sitting.vspec"));
    assert!(!read(&dir, "size-decode.svg").contains("@ d2048"));
    assert!(!read(&dir, "size-prefill.svg").contains("@ d2048"));
    check_svg("ctx-prefill.svg", &read(&dir, "ctx-prefill.svg"), &[series]);
    check_svg(
        "size-decode.svg",
        &read(&dir, "size-decode.svg"),
        &[
            "vspec tg4, 1 thread (this run)",
            "llama.cpp tg128, 1 thread (side by side)",
            "smollm2-Q4_0.gguf",
        ],
    );
    check_svg(
        "size-prefill.svg",
        &read(&dir, "size-prefill.svg"),
        &[
            "vspec pp16, 1 thread (this run)",
            "llama.cpp pp512, 1 thread",
        ],
    );
    check_svg(
        "memory.svg",
        &read(&dir, "memory.svg"),
        &[
            "weights",
            "activation arena",
            "KV cache",
            "llama",
            "256-token",
        ],
    );

    let md = read(&dir, "report.md");
    // Table cells are padded; compare with single spaces.
    let flat = md.split_whitespace().collect::<Vec<_>>().join(" ");
    for chart in CHARTS {
        assert!(
            md.contains(&format!("]({chart})")),
            "report.md links {chart}:\n{md}"
        );
    }
    for needle in [
        "## Machine",
        "- CPU: ",
        "cores",
        "memory read bandwidth (measured, 8 MiB buffer",
        "GB/s",
        "--report",
        "--ctx 128,256",
        "1 repetition",
        "| llama | 1 | 128 |",
        "| llama | 1 | 256 |",
        "tg4 @ dC t/s",
        "llama.cpp",
        "Test CPU",
        "| smollm2-Q4_0.gguf |",
        "## Planned memory",
        "## Standard tests",
        "| pp16 |",
        "Hollow markers: the side-by-side run's decode tests at a depth",
    ] {
        assert!(flat.contains(needle), "report.md lacks '{needle}':\n{md}");
    }
    // The plan table: both files at both lengths, KV cache doubling with the context.
    let plan_rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| llama |") && l.ends_with("MiB |"))
        .collect();
    assert_eq!(plan_rows.len(), 4, "{md}");
}

#[test]
fn report_without_peer_says_it_shows_vspec_only() {
    let model_dir = llama_dir();
    let out = TempDir::new("report-alone");
    let dir = out.join("r");
    succeeds(&report_args(s(&model_dir), s(&dir), &["-n", "0"]));
    let md = read(&dir, "report.md");
    assert!(md.contains("No llama.cpp results were given"), "{md}");
    assert!(md.contains("Decode was not measured"), "{md}");
    // The charts are still whole documents; an empty one says so.
    let decode = read(&dir, "ctx-decode.svg");
    check_svg("ctx-decode.svg", &decode, &["no data"]);
    check_svg(
        "size-prefill.svg",
        &read(&dir, "size-prefill.svg"),
        &["vspec pp16, 1 thread (this run)"],
    );
}

#[test]
fn bad_report_flags_fail_before_writing() {
    let model_dir = llama_dir();
    let model = s(&model_dir);
    let out = TempDir::new("report-bad");
    let dir = out.join("r");
    let d = s(&dir);
    fails_with(&report_args(model, d, &["--ctx", "0"]), &["--ctx"]);
    let missing = out.join("missing.json");
    fails_with(
        &report_args(model, d, &["--peer", s(&missing)]),
        &["--peer", "missing.json"],
    );
    let bad = out.write(
        "bad.json",
        br#"{"results": [{"engine": "llama.cpp", "file": "a.gguf", "bytes": 1, "threads": 1,
            "test": "tg128", "tok_s": -3}]}"#,
    );
    fails_with(
        &report_args(model, d, &["--peer", s(&bad)]),
        &["bad.json", "results[0]", "tok_s"],
    );
    assert!(!dir.exists(), "nothing written after a bad flag");
    // --ctx and --peer mean nothing without --report.
    fails_with(&["bench", "-m", model, "--ctx", "128"], &["--report"]);
    // A file where the directory should be.
    let file = out.write("taken", b"x");
    fails_with(&report_args(model, s(&file), &[]), &["--report", "taken"]);
}
