//! The other engines' numbers a report plots beside ours: the JSON that
//! `bench/llamacpp_side_by_side.sh` writes (`bench/llamacpp_bench.py summary`).
//!
//! Shape (extra fields are ignored):
//! ```json
//! { "rounds": 5, "cpu": "…", "cores": 2, "llama_cpp_python": "0.3.36",
//!   "results": [ { "engine": "llama.cpp", "file": "smollm2-Q4_0.gguf", "bytes": 91700000,
//!                  "threads": 2, "test": "tg128", "tok_s": 106.3 }, … ] }
//! ```
//! `tok_s` is the median of the rounds, each engine measured in alternation on the same machine.

use super::*;
use serde::Deserialize;

/// One median measurement of the side-by-side run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct PeerResult {
    /// `llama.cpp` or `vspec`.
    pub(super) engine: String,
    /// File name (or path) of the model.
    pub(super) file: String,
    /// File size in bytes.
    pub(super) bytes: u64,
    pub(super) threads: usize,
    /// `ppN` or `tgN`, with ` @ dD` after tests at a depth, as `vspec bench` names its tests.
    pub(super) test: String,
    pub(super) tok_s: f64,
}

/// The side-by-side run as a whole.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct PeerRun {
    /// Alternating rounds behind each median.
    #[serde(default)]
    pub(super) rounds: Option<u64>,
    /// The machine it ran on, as the script saw it.
    #[serde(default)]
    pub(super) cpu: Option<String>,
    #[serde(default)]
    pub(super) cores: Option<u64>,
    /// llama-cpp-python's version (llama.cpp itself is vendored in it).
    #[serde(default)]
    pub(super) llama_cpp_python: Option<String>,
    pub(super) results: Vec<PeerResult>,
}

impl PeerResult {
    /// `pp` or `tg`.
    pub(super) fn kind(&self) -> &str {
        &self.test[..2]
    }

    /// Tokens in the cache before the test (0 without ` @ dD`).
    pub(super) fn depth(&self) -> usize {
        parse_test(&self.test).map_or(0, |(_, depth)| depth)
    }

    /// The file's name without its directories.
    pub(super) fn file_name(&self) -> &str {
        self.file.rsplit(['/', '\\']).next().unwrap_or(&self.file)
    }
}

/// Reads and checks the peer file; every error names the file and, where it can, the entry.
pub(super) fn load(path: &Path) -> Result<PeerRun> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("--peer {}: cannot read it: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow!("--peer {}: {e}", path.display()))
}

/// `(N, D)` of a test named `ppN`, `tgN`, `ppN @ dD` or `tgN @ dD`.
fn parse_test(test: &str) -> Option<(usize, usize)> {
    let (head, depth) = match test.split_once(" @ d") {
        Some((head, d)) => (head, d),
        None => (test, "0"),
    };
    let number = |t: &str| {
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse::<usize>().ok()
        } else {
            None
        }
    };
    let n = head
        .strip_prefix("pp")
        .or_else(|| head.strip_prefix("tg"))
        .and_then(number)?;
    Some((n, number(depth)?))
}

pub(super) fn parse(text: &str) -> Result<PeerRun> {
    let run: PeerRun = serde_json::from_str(text).map_err(|e| {
        anyhow!("not the JSON bench/llamacpp_side_by_side.sh writes ({{\"results\": [...]}}): {e}")
    })?;
    if run.results.is_empty() {
        bail!("'results' holds no measurements");
    }
    for (i, r) in run.results.iter().enumerate() {
        let what = format!("results[{i}] ({} on {})", r.engine, r.file);
        if parse_test(&r.test).is_none() {
            bail!(
                "{what}: 'test' is '{}', not ppN or tgN (with ' @ dD' after them at a depth)",
                r.test
            );
        }
        if !(r.tok_s.is_finite() && r.tok_s > 0.0) {
            bail!("{what}: 'tok_s' is {}, not a positive speed", r.tok_s);
        }
        if r.threads == 0 {
            bail!("{what}: 'threads' is 0");
        }
        if r.engine.trim().is_empty() {
            bail!("results[{i}]: 'engine' is empty");
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"rounds": 3, "cpu": "Some CPU", "cores": 2, "extra": 1,
        "results": [
          {"engine": "llama.cpp", "file": "/w/smollm2-Q4_0.gguf", "bytes": 1000, "threads": 2,
           "test": "tg128", "tok_s": 100.5, "rounds": 3},
          {"engine": "vspec", "file": "a.vspec", "bytes": 800, "threads": 1,
           "test": "pp512", "tok_s": 50},
          {"engine": "llama.cpp", "file": "q.gguf", "bytes": 900, "threads": 2,
           "test": "tg128 @ d2048", "tok_s": 70}
        ]}"#;

    #[test]
    fn reads_the_script_output() {
        let run = parse(GOOD).unwrap();
        assert_eq!(run.rounds, Some(3));
        assert_eq!(run.results.len(), 3);
        assert_eq!(run.results[0].file_name(), "smollm2-Q4_0.gguf");
        assert_eq!(run.results[0].kind(), "tg");
        assert_eq!(run.results[1].kind(), "pp");
        assert_eq!(run.results[1].tok_s, 50.0);
        assert_eq!(run.results[0].depth(), 0);
        assert_eq!(run.results[2].kind(), "tg");
        assert_eq!(run.results[2].depth(), 2048);
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (GOOD.replace("\"tg128\"", "\"xx1\""), "results[0]"),
            (GOOD.replace("\"pp512\"", "\"pp\""), "'test'"),
            (GOOD.replace("@ d2048", "@ d"), "'test'"),
            (GOOD.replace("@ d2048", "@ dx1"), "'test'"),
            (GOOD.replace("100.5", "-1"), "'tok_s'"),
            (
                GOOD.replace("\"threads\": 1", "\"threads\": 0"),
                "'threads'",
            ),
            (GOOD.replace("\"bytes\": 800,", ""), "bytes"),
            (r#"{"results": []}"#.to_string(), "no measurements"),
            ("[1, 2]".to_string(), "results"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
