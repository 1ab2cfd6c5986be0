//! `vspec bench`: prompt-processing and generation speed with llama-bench's protocol, the
//! machine's memory read bandwidth, and the decode roofline that bandwidth implies.
//!
//! Protocol, per model file and thread count:
//! * `ppN`: N synthetic tokens evaluated in steps of the batch size, logits of the last token
//!   only, from an empty cache (a fresh session) each repetition. One untimed warm-up step first.
//! * `tgN`: N tokens decoded one at a time from an empty cache, each repetition in a fresh
//!   session. The fed tokens are a fixed pseudo-random sequence, not sampled (as llama-bench
//!   does), so the timing holds the forward passes only. A few untimed decode steps warm up first.
//!
//! Token ids are synthetic (a fixed pseudo-random sequence inside the vocabulary), so no text or
//! tokenizer is involved and every engine and run sees the same ids.

use crate::model::{Engine, ModelFile};
use crate::parallel::ThreadPool;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vspec_core::graph::{Graph, Limits, OpKind, Role};
use vspec_core::kernels::Parallel;

/// `vspec bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model files, comma separated or repeated (.gguf, .vspec or a Hugging Face directory).
    /// Default: SmolLM2-135M-Instruct, fetched once.
    #[arg(short = 'm', long = "model", value_delimiter = ',')]
    pub models: Vec<PathBuf>,
    /// Prompt tokens of the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens of the generation test (0 skips it). Each step is fed the next id of a fixed
    /// pseudo-random sequence (no sampling), so only the forward passes are timed.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Timed repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Thread counts to test, comma separated (0 = one per core).
    #[arg(
        short = 't',
        long = "threads",
        value_delimiter = ',',
        default_value = "1,2"
    )]
    pub threads: Vec<usize>,
    /// Tokens per forward step of the prompt test.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Buffer for the memory-bandwidth measurement, in MiB; 0 skips it and the roofline. It must
    /// be far larger than the caches.
    #[arg(long = "bw-mib", default_value_t = 1024)]
    pub bw_mib: usize,
    /// Print a JSON array (one object per test, with the raw samples) instead of tables.
    #[arg(long = "json")]
    pub json: bool,
}

/// Untimed decode steps before the generation test's repetitions: enough to fault in the
/// weights and wake the worker threads.
const GEN_WARMUP_TOKENS: usize = 4;
/// Passes over the bandwidth buffer per thread count; the best one counts (the others lost time
/// to whatever else ran).
const BANDWIDTH_PASSES: usize = 3;
/// Seed of the synthetic token sequence.
const TOKEN_SEED: u64 = 0x5eed_1234_abcd_0001;

/// One benchmark: which test, on which model, with how many threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// Prompt processing of this many tokens.
    Prompt(usize),
    /// Generation of this many tokens.
    Gen(usize),
}

impl Test {
    fn name(self) -> String {
        match self {
            Test::Prompt(n) => format!("pp{n}"),
            Test::Gen(n) => format!("tg{n}"),
        }
    }

    fn tokens(self) -> usize {
        match self {
            Test::Prompt(n) | Test::Gen(n) => n,
        }
    }
}

/// What the table and the JSON say about a model file.
struct ModelInfo {
    /// File name as given, for the table.
    label: String,
    path: PathBuf,
    /// Architecture name (`llama`, `qwen2`, …).
    arch: String,
    /// Weight bytes as stored (what llama-bench calls the model size).
    weight_bytes: usize,
    /// Weight elements.
    params: u64,
}

/// The timings of one test, and its roofline for generation tests.
struct Measurement {
    model: usize,
    threads: usize,
    test: Test,
    samples_ns: Vec<u64>,
    /// Bytes one decoded token reads at the test's mean context (generation tests only).
    decode_bytes_per_token: Option<f64>,
}

impl Measurement {
    fn samples_tok_s(&self) -> Vec<f64> {
        let n = self.test.tokens() as f64;
        self.samples_ns
            .iter()
            .map(|&ns| n / (ns.max(1) as f64 * 1e-9))
            .collect()
    }
}

pub(super) fn bench(a: &BenchArgs) -> Result<()> {
    if a.repetitions == 0 {
        bail!("-r/--repetitions must be at least 1");
    }
    if a.n_prompt == 0 && a.n_gen == 0 {
        bail!("-p/--n-prompt 0 and -n/--n-gen 0 leave nothing to measure");
    }
    if a.batch_size == 0 {
        bail!("-b/--batch-size must be positive");
    }
    if a.threads.is_empty() {
        bail!("-t/--threads needs at least one thread count");
    }
    // Resolve "0 = one per core" and refuse absurd counts before anything slow starts.
    let threads: Vec<usize> = a
        .threads
        .iter()
        .map(|&t| ThreadPool::new(t).map(|p| p.threads()))
        .collect::<Result<_>>()?;
    let paths = if a.models.is_empty() {
        vec![crate::fetch::default_model(true)?]
    } else {
        a.models.clone()
    };
    let files: Vec<ModelFile> = paths
        .iter()
        .map(|p| ModelFile::open(p))
        .collect::<Result<_>>()?;
    let infos: Vec<ModelInfo> = files.iter().map(model_info).collect::<Result<_>>()?;

    let bandwidth = measure_bandwidths(a.bw_mib, &threads)?;
    let backend = backend_name();
    let mut results = Vec::new();
    for (mi, model) in files.iter().enumerate() {
        for &t in &threads {
            if a.n_prompt > 0 {
                let m = bench_prompt(model, a, t)?;
                report_progress(&infos[mi], t, &m);
                results.push(Measurement { model: mi, ..m });
            }
            if a.n_gen > 0 {
                let m = bench_gen(model, a, t)?;
                report_progress(&infos[mi], t, &m);
                results.push(Measurement { model: mi, ..m });
            }
        }
    }
    let text = if a.json {
        let json = to_json(&infos, &results, &bandwidth, backend, a.batch_size);
        serde_json::to_string_pretty(&json)? + "\n"
    } else {
        tables(&infos, &results, &bandwidth, backend, a.bw_mib)
    };
    // An error, not a panic, when stdout is a closed pipe.
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| anyhow!("cannot write the results to stdout: {e}"))
}

fn model_info(model: &ModelFile) -> Result<ModelInfo> {
    // The graph is only built to read the weights' shapes and formats; its limits do not matter.
    let (graph, _) = model.bind(Limits {
        max_ctx: 1,
        max_tokens: 1,
        all_logits: false,
    })?;
    let mut weight_bytes = 0usize;
    let mut params = 0u64;
    for t in graph.tensors.iter().filter(|t| t.role == Role::Weight) {
        params += (t.cols as u64) * (t.weight_rows as u64);
        if let Some(f) = t.format {
            weight_bytes += f
                .tensor_bytes(t.cols, t.weight_rows, &t.name)
                .map_err(|e| anyhow!("{}: {e}", model.path.display()))?;
        }
    }
    let label = model
        .path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| model.path.display().to_string());
    Ok(ModelInfo {
        label,
        path: model.path.clone(),
        arch: model.config.arch.gguf_name().to_string(),
        weight_bytes,
        params,
    })
}

fn backend_name() -> &'static str {
    if crate::detect::detect().avx2_fma() {
        "CPU AVX2"
    } else {
        "CPU scalar"
    }
}

fn report_progress(info: &ModelInfo, threads: usize, m: &Measurement) {
    let (mean, sd) = mean_sd(&m.samples_tok_s());
    eprintln!(
        "[vspec] {} | {} | {}: {mean:.2} ± {sd:.2} tok/s",
        info.label,
        threads_text(threads),
        m.test.name()
    );
}

fn threads_text(threads: usize) -> String {
    if threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{threads} threads")
    }
}

/// A fixed pseudo-random token sequence inside the vocabulary (xorshift64*): no text needed, and
/// every run and engine sees the same ids.
fn synthetic_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed | 1;
    let vocab = vocab.clamp(1, u32::MAX as usize) as u64;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % vocab) as u32
        })
        .collect()
}

fn bench_prompt(model: &ModelFile, a: &BenchArgs, threads: usize) -> Result<Measurement> {
    let n = a.n_prompt;
    let limits = Limits {
        max_ctx: n,
        max_tokens: a.batch_size.min(n),
        all_logits: false,
    };
    let mut engine = Engine::new(model, limits, threads)?;
    let tokens = synthetic_tokens(n, model.config.vocab, TOKEN_SEED);
    {
        // Warm-up: one step, untimed, so the first repetition does not pay for page faults.
        let mut sess = engine.session()?;
        crate::generate::prefill(&mut sess, &tokens[..limits.max_tokens])?;
    }
    let mut samples_ns = Vec::with_capacity(a.repetitions);
    for _ in 0..a.repetitions {
        let mut sess = engine.session()?;
        let t0 = Instant::now();
        crate::generate::prefill(&mut sess, &tokens)?;
        samples_ns.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(Measurement {
        model: 0,
        threads: engine.threads(),
        test: Test::Prompt(n),
        samples_ns,
        decode_bytes_per_token: None,
    })
}

fn bench_gen(model: &ModelFile, a: &BenchArgs, threads: usize) -> Result<Measurement> {
    let n = a.n_gen;
    let limits = Limits {
        max_ctx: n,
        max_tokens: 1,
        all_logits: false,
    };
    let mut engine = Engine::new(model, limits, threads)?;
    let traffic = DecodeTraffic::of_graph(&engine.graph)
        .map_err(|e| anyhow!("{}: {e}", model.path.display()))?;
    let tokens = synthetic_tokens(n, model.config.vocab, TOKEN_SEED ^ 0x9e37_79b9);
    {
        let mut sess = engine.session()?;
        for &t in tokens.iter().take(GEN_WARMUP_TOKENS) {
            sess.forward(&[t]).map_err(|e| anyhow!("{e}"))?;
        }
    }
    let mut samples_ns = Vec::with_capacity(a.repetitions);
    for _ in 0..a.repetitions {
        let mut sess = engine.session()?;
        let t0 = Instant::now();
        for &t in &tokens {
            sess.forward(&[t]).map_err(|e| anyhow!("{e}"))?;
        }
        samples_ns.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(Measurement {
        model: 0,
        threads: engine.threads(),
        test: Test::Gen(n),
        samples_ns,
        decode_bytes_per_token: Some(traffic.bytes_per_token(mean_decode_ctx(n))),
    })
}

/// Mean and sample standard deviation (0 for a single sample).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

// ---------------------------------------------------------------------------------------------
// Roofline.
// ---------------------------------------------------------------------------------------------

/// What decoding one token must read from memory at least: every weight the step touches (all
/// matrices including the output head, the norms, and one row of the embedding table) and the
/// keys and values of every cached position it attends to.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DecodeTraffic {
    /// Weight bytes read per decoded token.
    weight_bytes: u64,
    /// KV cache bytes per attended position, all layers, K and V (the cache is f32, see
    /// `Plan::kv_bytes`).
    kv_bytes_per_position: u64,
}

impl DecodeTraffic {
    /// The traffic of a one-token step of `graph` (weights bound, so their formats are known).
    fn of_graph(graph: &Graph) -> vspec_core::Result<DecodeTraffic> {
        let mut weight_bytes = 0u64;
        for op in &graph.ops {
            for &id in &op.inputs {
                let t = &graph.tensors[id];
                if t.role != Role::Weight {
                    continue;
                }
                let format = t.format.ok_or_else(|| {
                    vspec_core::Error::invalid(format!("tensor '{}'", t.name), "format unknown")
                })?;
                // A lookup reads one row of the table; every other op reads the whole weight
                // (a tied table is read whole again as the output head).
                let bytes = if matches!(op.kind, OpKind::Embed) {
                    format.row_bytes(t.cols, &t.name)?
                } else {
                    format.tensor_bytes(t.cols, t.weight_rows, &t.name)?
                };
                weight_bytes += bytes as u64;
            }
        }
        Ok(DecodeTraffic {
            weight_bytes,
            kv_bytes_per_position: 2 * graph.kv_layers as u64 * graph.kv_width as u64 * 4,
        })
    }

    /// Bytes read per token when each token attends to `mean_ctx` cached positions on average.
    fn bytes_per_token(&self, mean_ctx: f64) -> f64 {
        self.weight_bytes as f64 + self.kv_bytes_per_position as f64 * mean_ctx
    }
}

/// Positions attended on average while decoding `n_gen` tokens from an empty cache: the token
/// at position i attends to positions 0..=i.
fn mean_decode_ctx(n_gen: usize) -> f64 {
    (n_gen as f64 + 1.0) / 2.0
}

/// The most tokens per second a decode can reach when each token reads `bytes_per_token` bytes
/// from memory at `bandwidth` bytes per second (0 when either is not positive).
fn roofline_tok_s(bytes_per_token: f64, bandwidth: f64) -> f64 {
    if bytes_per_token > 0.0 && bandwidth > 0.0 {
        bandwidth / bytes_per_token
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Memory bandwidth.
// ---------------------------------------------------------------------------------------------

/// Read bandwidth (bytes/s) per thread count, best of [`BANDWIDTH_PASSES`] over a buffer of
/// `mib` MiB; empty when `mib` is 0.
fn measure_bandwidths(mib: usize, threads: &[usize]) -> Result<Vec<(usize, f64)>> {
    if mib == 0 {
        return Ok(Vec::new());
    }
    let words = mib
        .checked_mul(1 << 20)
        .map(|b| b / 8)
        .ok_or_else(|| anyhow!("--bw-mib {mib} is too large"))?;
    let mut buffer: Vec<u64> = Vec::new();
    buffer
        .try_reserve_exact(words)
        .map_err(|_| anyhow!("--bw-mib {mib}: cannot allocate {mib} MiB (lower it)"))?;
    // Written, not zeroed: untouched zero pages all map one physical page and read from cache.
    buffer.extend((0..words as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut out = Vec::new();
    for &t in threads {
        if out.iter().any(|&(done, _)| done == t) {
            continue;
        }
        let bw = read_bandwidth(&buffer, t, BANDWIDTH_PASSES);
        eprintln!(
            "[vspec] memory read bandwidth, {mib} MiB, {}: {:.2} GB/s",
            threads_text(t),
            bw / 1e9
        );
        out.push((t, bw));
    }
    Ok(out)
}

/// Bytes per second of `threads` threads each summing one contiguous share of `buffer`, best of
/// `passes`.
fn read_bandwidth(buffer: &[u64], threads: usize, passes: usize) -> f64 {
    let threads = threads.max(1);
    let share = buffer.len().div_ceil(threads).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(share)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    (std::mem::size_of_val(buffer) as f64) / best.max(1e-9)
}

/// Wrapping sum (wrapping adds are associative, so the compiler may vectorize the reduction).
fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |s, &w| s.wrapping_add(w))
}

fn bandwidth_for(bandwidth: &[(usize, f64)], threads: usize) -> Option<f64> {
    bandwidth
        .iter()
        .find(|&&(t, _)| t == threads)
        .map(|&(_, b)| b)
}

// ---------------------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------------------

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
}

fn params_text(params: u64) -> String {
    if params >= 1_000_000_000 {
        format!("{:.2} B", params as f64 / 1e9)
    } else if params >= 1_000_000 {
        format!("{:.2} M", params as f64 / 1e6)
    } else {
        format!("{:.2} K", params as f64 / 1e3)
    }
}

/// Appends a markdown table with padded columns to `out`; `right[i]` right-aligns column i.
fn push_table(out: &mut String, header: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&width)
            .zip(right)
            .map(|((c, &w), &r)| {
                if r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(
        width
            .iter()
            .zip(right)
            .map(|(&w, &r)| {
                if r {
                    format!("{}:", "-".repeat(w.saturating_sub(1).max(1)))
                } else {
                    "-".repeat(w.max(1))
                }
            })
            .collect(),
    );
    for r in rows {
        line(r.clone());
    }
}

/// The results table in llama-bench's shape, then the decode roofline table.
fn tables(
    infos: &[ModelInfo],
    results: &[Measurement],
    bandwidth: &[(usize, f64)],
    backend: &str,
    bw_mib: usize,
) -> String {
    let mut out = String::new();
    if !bandwidth.is_empty() {
        let parts: Vec<String> = bandwidth
            .iter()
            .map(|&(t, b)| format!("{}: {:.2} GB/s", threads_text(t), b / 1e9))
            .collect();
        let _ = writeln!(
            out,
            "memory read bandwidth ({bw_mib} MiB buffer, best of {BANDWIDTH_PASSES}): {}\n",
            parts.join(", ")
        );
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let info = &infos[m.model];
            let (mean, sd) = mean_sd(&m.samples_tok_s());
            vec![
                info.label.clone(),
                mib(info.weight_bytes as f64),
                params_text(info.params),
                backend.to_string(),
                m.threads.to_string(),
                m.test.name(),
                format!("{mean:.2} ± {sd:.2}"),
            ]
        })
        .collect();
    push_table(
        &mut out,
        &[
            "model", "size", "params", "backend", "threads", "test", "t/s",
        ],
        &[false, true, true, false, true, true, true],
        &rows,
    );
    let roof_rows: Vec<Vec<String>> = results
        .iter()
        .filter_map(|m| {
            let bytes = m.decode_bytes_per_token?;
            let bw = bandwidth_for(bandwidth, m.threads)?;
            let roof = roofline_tok_s(bytes, bw);
            let (mean, _) = mean_sd(&m.samples_tok_s());
            Some(vec![
                infos[m.model].label.clone(),
                m.threads.to_string(),
                m.test.name(),
                mib(bytes),
                format!("{:.2} GB/s", bw / 1e9),
                format!("{roof:.2}"),
                format!("{mean:.2}"),
                format!("{:.1} %", 100.0 * mean / roof.max(1e-12)),
            ])
        })
        .collect();
    if !roof_rows.is_empty() {
        let _ = writeln!(
            out,
            "\ndecode roofline: bytes read per token (weights + KV cache at the mean context) / \
             read bandwidth\n"
        );
        push_table(
            &mut out,
            &[
                "model",
                "threads",
                "test",
                "bytes/token",
                "bandwidth",
                "max t/s",
                "t/s",
                "% of max",
            ],
            &[false, true, true, true, true, true, true, true],
            &roof_rows,
        );
    }
    out
}

fn to_json(
    infos: &[ModelInfo],
    results: &[Measurement],
    bandwidth: &[(usize, f64)],
    backend: &str,
    batch_size: usize,
) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = results
        .iter()
        .map(|m| {
            let info = &infos[m.model];
            let samples_ts = m.samples_tok_s();
            let (mean, sd) = mean_sd(&samples_ts);
            let (n_prompt, n_gen) = match m.test {
                Test::Prompt(n) => (n, 0),
                Test::Gen(n) => (0, n),
            };
            let bw = bandwidth_for(bandwidth, m.threads);
            let roof = match (m.decode_bytes_per_token, bw) {
                (Some(bytes), Some(bw)) => Some(roofline_tok_s(bytes, bw)),
                _ => None,
            };
            serde_json::json!({
                "model_filename": path_text(&info.path),
                "model_type": info.arch,
                "model_size": info.weight_bytes,
                "model_n_params": info.params,
                "backends": backend,
                "n_threads": m.threads,
                "n_batch": batch_size,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "test": m.test.name(),
                "avg_ts": mean,
                "stddev_ts": sd,
                "samples_ns": m.samples_ns,
                "samples_ts": samples_ts,
                "read_bandwidth_bytes_per_s": bw,
                "decode_bytes_per_token": m.decode_bytes_per_token,
                "roofline_ts": roof,
                "roofline_pct": roof.map(|r| 100.0 * mean / r.max(1e-12)),
            })
        })
        .collect();
    serde_json::Value::Array(entries)
}

fn path_text(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vspec_core::format::Format;
    use vspec_core::graph::{GraphBuilder, Rows};

    /// Embedding 100 × 64 (Q8_0) tied as the head, one 32 × 64 Q4_0 matmul, one f32 norm;
    /// 2 KV layers of width 16.
    fn tiny_graph() -> Graph {
        let mut g = GraphBuilder::new();
        let embd = g.weight("token_embd.weight", 100, 64);
        let norm = g.weight("output_norm.weight", 1, 64);
        let w = g.weight("blk.0.ffn_up.weight", 32, 64);
        let x = g.op(OpKind::Embed, &[embd], "x", Rows::Tokens, 64);
        let _up = g.op(OpKind::MatMul, &[x, w], "up", Rows::Tokens, 32);
        let xn = g.op(
            OpKind::RmsNorm { eps: 1e-5 },
            &[x, norm],
            "xn",
            Rows::One,
            64,
        );
        let logits = g.op(OpKind::MatMul, &[xn, embd], "logits", Rows::One, 100);
        let mut graph = g.finish(
            logits,
            2,
            16,
            Limits {
                max_ctx: 8,
                max_tokens: 1,
                all_logits: false,
            },
        );
        graph.tensors[embd].format = Some(Format::Q8_0);
        graph.tensors[norm].format = Some(Format::F32);
        graph.tensors[w].format = Some(Format::Q4_0);
        graph
    }

    #[test]
    fn decode_traffic_counts_one_embedding_row_and_every_matrix() {
        let t = DecodeTraffic::of_graph(&tiny_graph()).unwrap();
        // Embedding row: 2 Q8_0 blocks of 34 B; head: 100 such rows; norm: 64 f32;
        // ffn_up: 32 rows of 2 Q4_0 blocks of 18 B.
        assert_eq!(t.weight_bytes, 68 + 100 * 68 + 64 * 4 + 32 * 2 * 18);
        // K and V, 2 layers, 16 f32 each.
        assert_eq!(t.kv_bytes_per_position, 2 * 2 * 16 * 4);
    }

    #[test]
    fn decode_traffic_needs_bound_formats() {
        let mut g = tiny_graph();
        g.tensors[0].format = None;
        let err = DecodeTraffic::of_graph(&g).unwrap_err().to_string();
        assert!(err.contains("token_embd.weight"), "{err}");
    }

    #[test]
    fn roofline_divides_bandwidth_by_bytes_per_token() {
        let t = DecodeTraffic {
            weight_bytes: 8_276,
            kv_bytes_per_position: 256,
        };
        // tg128 from an empty cache attends to 64.5 positions on average.
        assert_eq!(mean_decode_ctx(128), 64.5);
        assert_eq!(mean_decode_ctx(1), 1.0);
        let bytes = t.bytes_per_token(10.5);
        assert_eq!(bytes, 8_276.0 + 256.0 * 10.5);
        assert!((roofline_tok_s(bytes, bytes * 1000.0) - 1000.0).abs() < 1e-9);
        // 100 MB per token at 20 GB/s: 200 tok/s at most.
        assert!((roofline_tok_s(100e6, 20e9) - 200.0).abs() < 1e-9);
        assert_eq!(roofline_tok_s(0.0, 20e9), 0.0);
        assert_eq!(roofline_tok_s(100.0, 0.0), 0.0);
    }

    #[test]
    fn mean_sd_uses_the_sample_deviation() {
        assert_eq!(mean_sd(&[]), (0.0, 0.0));
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn synthetic_tokens_stay_in_the_vocabulary_and_repeat() {
        let a = synthetic_tokens(1000, 320, TOKEN_SEED);
        assert_eq!(a, synthetic_tokens(1000, 320, TOKEN_SEED));
        assert!(a.iter().all(|&t| t < 320));
        // Spread over the vocabulary, not stuck on a few ids.
        let mut seen = a.clone();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 250, "{}", seen.len());
        assert!(synthetic_tokens(5, 1, 7).iter().all(|&t| t == 0));
    }

    #[test]
    fn bandwidth_pass_reads_the_whole_buffer() {
        let buf: Vec<u64> = (0..10_001).collect();
        assert_eq!(sum_words(&buf), 10_000 * 10_001 / 2);
        for threads in [1, 3, 64] {
            assert!(read_bandwidth(&buf, threads, 1) > 0.0);
        }
    }
}
