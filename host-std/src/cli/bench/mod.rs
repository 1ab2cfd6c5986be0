//! `vspec bench`: prompt-processing and generation speed with llama-bench's protocol, the
//! machine's memory read bandwidth, and the decode roofline that bandwidth implies.
//!
//! Protocol, per model file and thread count:
//! * `ppN`: N synthetic tokens evaluated in steps of the batch size, logits of the last token
//!   only, from an empty cache (a fresh session) each repetition. One untimed warm-up step first.
//! * `tgN`: N tokens decoded one at a time from an empty cache, each repetition in a fresh
//!   session. The fed tokens are a fixed pseudo-random sequence, not sampled (as llama-bench
//!   does), so the timing holds the forward passes only. A few untimed decode steps warm up first.
//! * `ppN @ dD`, `tgN @ dD` (`-d D`, llama-bench's depth): the same after D tokens already sit
//!   in the cache: each repetition's fresh session first evaluates D synthetic tokens in steps
//!   of the batch size, untimed, then times the test, whose tokens attend to all of them.
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

mod peer;
mod plots;
mod report;
mod report_dir;
mod roofline;
mod sweep;

use report::*;
use roofline::*;

/// `vspec bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model files, comma separated or repeated (.gguf, .vspec or a Hugging Face directory).
    /// Default: SmolLM2-135M-Instruct, fetched once.
    #[arg(short = 'm', long = "model", value_delimiter = ',')]
    pub models: Vec<PathBuf>,
    /// Prompt tokens of the prompt-processing test, comma separated for several (0 skips it).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Tokens of the generation test, comma separated for several (0 skips it). Each step is
    /// fed the next id of a fixed pseudo-random sequence (no sampling), so only the forward
    /// passes are timed.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
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
    /// Tokens already in the KV cache when each test starts, comma separated (llama-bench's
    /// depth): every repetition first evaluates that many tokens, untimed, then times the test
    /// after them (`pp512 @ d2048`). 0 = an empty cache.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub depths: Vec<usize>,
    #[command(flatten)]
    pub kv: super::KvArgs,
    /// Buffer for the memory-bandwidth measurement, in MiB; 0 skips it and the roofline. It must
    /// be far larger than the caches.
    #[arg(long = "bw-mib", default_value_t = 1024)]
    pub bw_mib: usize,
    /// Print a JSON array (one object per test, with the raw samples) instead of tables.
    #[arg(long = "json")]
    pub json: bool,
    /// Also write a report into this directory (created if missing): report.md and SVG plots of
    /// speed against context length and file size, and of the planned memory. Adds the context
    /// sweep of --ctx to the measurements.
    #[arg(long = "report", value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Context lengths of the report's sweep, comma separated. At each: a prompt of that many
    /// tokens from an empty cache (prefill speed), then -n tokens decoded after it (decode speed
    /// at that depth).
    #[arg(
        long = "ctx",
        value_delimiter = ',',
        default_value = "128,256,512,1024,2048,4096",
        requires = "report"
    )]
    pub ctx: Vec<usize>,
    /// llama.cpp's numbers to plot beside ours: the JSON that bench/llamacpp_side_by_side.sh
    /// writes (target/side-by-side/peer.json).
    #[arg(long = "peer", value_name = "FILE.json", requires = "report")]
    pub peer: Option<PathBuf>,
}

impl BenchArgs {
    /// The prompt length of the report's standard-test text (the report takes one, checked).
    fn report_prompt(&self) -> usize {
        self.n_prompt.first().copied().unwrap_or(0)
    }

    /// Tokens the report's sweep decodes at each context length (the report takes one -n).
    fn report_gen(&self) -> usize {
        self.n_gen.first().copied().unwrap_or(0)
    }
}

/// Untimed decode steps before the generation test's repetitions: enough to fault in the
/// weights and wake the worker threads.
const GEN_WARMUP_TOKENS: usize = 4;
/// Passes over the bandwidth buffer per thread count; the best one counts (the others lost time
/// to whatever else ran).
const BANDWIDTH_PASSES: usize = 3;
/// Seed of the synthetic token sequence.
const TOKEN_SEED: u64 = 0x5eed_1234_abcd_0001;
/// Seed of the tokens that fill the cache to a test's depth (bench/llamacpp_bench.py uses the
/// same).
const DEPTH_SEED: u64 = TOKEN_SEED ^ 0x00de_9700_0000_00d0;

/// What a test times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestKind {
    /// Prompt processing.
    Prompt,
    /// Generation, one token per step.
    Gen,
}

/// One benchmark: which test, after how many cached tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Test {
    kind: TestKind,
    /// Tokens timed.
    n: usize,
    /// Tokens in the cache before the timed ones (untimed).
    depth: usize,
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`, `tg128 @ d2048`.
    fn name(self) -> String {
        let kind = match self.kind {
            TestKind::Prompt => "pp",
            TestKind::Gen => "tg",
        };
        if self.depth == 0 {
            format!("{kind}{}", self.n)
        } else {
            format!("{kind}{} @ d{}", self.n, self.depth)
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
        let n = self.test.n as f64;
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
    if a.n_prompt.iter().chain(&a.n_gen).all(|&n| n == 0) {
        bail!("-p/--n-prompt 0 and -n/--n-gen 0 leave nothing to measure");
    }
    if a.batch_size == 0 {
        bail!("-b/--batch-size must be positive");
    }
    if a.threads.is_empty() {
        bail!("-t/--threads needs at least one thread count");
    }
    if a.depths.is_empty() {
        bail!("-d/--n-depth needs at least one depth");
    }
    // Resolve "0 = one per core" and refuse absurd counts before anything slow starts.
    let report_plan = a
        .report
        .as_deref()
        .map(|dir| report_dir::ReportPlan::prepare(dir, a))
        .transpose()?;
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
            for &depth in &a.depths {
                for &n in a.n_prompt.iter().filter(|&&n| n > 0) {
                    let m = bench_prompt(model, a, n, t, depth)?;
                    report_progress(&infos[mi], t, &m);
                    results.push(Measurement { model: mi, ..m });
                }
                for &n in a.n_gen.iter().filter(|&&n| n > 0) {
                    let m = bench_gen(model, a, n, t, depth)?;
                    report_progress(&infos[mi], t, &m);
                    results.push(Measurement { model: mi, ..m });
                }
            }
        }
    }
    if let Some(plan) = &report_plan {
        let sweep = sweep::measure(&files, &infos, a, &threads)?;
        let memory = sweep::planned_memory(&files, a)?;
        let input = report_dir::ReportInput {
            infos: &infos,
            results: &results,
            bandwidth: &bandwidth,
            backend,
            args: a,
            sweep: &sweep,
            memory: &memory,
        };
        plan.write(&input)?;
    }
    let text = if a.json {
        let json = to_json(&infos, &results, &bandwidth, backend, a.batch_size, a.kv.kv);
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
    let (graph, _) = model.bind_weights()?;
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
    let features = crate::detect::detect();
    if features.avx512() {
        "CPU AVX-512"
    } else if features.avx2_fma() {
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

/// Session limits for a test of `n` tokens in steps of `step` after `depth` cached ones (the
/// depth is filled in steps of the batch size).
fn test_limits(a: &BenchArgs, n: usize, step: usize, depth: usize) -> Result<Limits> {
    let max_ctx = depth
        .checked_add(n)
        .ok_or_else(|| anyhow!("-d {depth} with {n} test tokens overflows"))?;
    Ok(Limits {
        max_ctx,
        max_tokens: step.max(a.batch_size.min(depth)),
        all_logits: false,
    })
}

/// Fills a fresh session's cache with `depth` tokens (untimed), as llama-bench does before a
/// test at that depth.
fn fill_to_depth(sess: &mut vspec_core::exec::Session<'_>, depth_tokens: &[u32]) -> Result<()> {
    if !depth_tokens.is_empty() {
        crate::generate::prefill(sess, depth_tokens)?;
    }
    Ok(())
}

fn bench_prompt(
    model: &ModelFile,
    a: &BenchArgs,
    n: usize,
    threads: usize,
    depth: usize,
) -> Result<Measurement> {
    let limits = test_limits(a, n, a.batch_size.min(n), depth)?;
    let mut engine = Engine::with_kv(model, limits, a.kv.kv, threads)?;
    let tokens = synthetic_tokens(n, model.config.vocab, TOKEN_SEED);
    let filler = synthetic_tokens(depth, model.config.vocab, DEPTH_SEED);
    {
        // Warm-up: one step, untimed, so the first repetition does not pay for page faults.
        let mut sess = engine.session()?;
        crate::generate::prefill(&mut sess, &tokens[..a.batch_size.min(n)])?;
    }
    let mut samples_ns = Vec::with_capacity(a.repetitions);
    for _ in 0..a.repetitions {
        let mut sess = engine.session()?;
        fill_to_depth(&mut sess, &filler)?;
        let t0 = Instant::now();
        crate::generate::prefill(&mut sess, &tokens)?;
        samples_ns.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(Measurement {
        model: 0,
        threads: engine.threads(),
        test: Test {
            kind: TestKind::Prompt,
            n,
            depth,
        },
        samples_ns,
        decode_bytes_per_token: None,
    })
}

fn bench_gen(
    model: &ModelFile,
    a: &BenchArgs,
    n: usize,
    threads: usize,
    depth: usize,
) -> Result<Measurement> {
    let limits = test_limits(a, n, 1, depth)?;
    let mut engine = Engine::with_kv(model, limits, a.kv.kv, threads)?;
    let traffic = DecodeTraffic::of_graph(&engine.graph)
        .map_err(|e| anyhow!("{}: {e}", model.path.display()))?;
    let tokens = synthetic_tokens(n, model.config.vocab, TOKEN_SEED ^ 0x9e37_79b9);
    {
        let mut sess = engine.session()?;
        for &t in tokens.iter().take(GEN_WARMUP_TOKENS) {
            sess.forward(&[t]).map_err(|e| anyhow!("{e}"))?;
        }
    }
    let filler = synthetic_tokens(depth, model.config.vocab, DEPTH_SEED);
    let mut samples_ns = Vec::with_capacity(a.repetitions);
    for _ in 0..a.repetitions {
        let mut sess = engine.session()?;
        fill_to_depth(&mut sess, &filler)?;
        let t0 = Instant::now();
        for &t in &tokens {
            sess.forward(&[t]).map_err(|e| anyhow!("{e}"))?;
        }
        samples_ns.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(Measurement {
        model: 0,
        threads: engine.threads(),
        test: Test {
            kind: TestKind::Gen,
            n,
            depth,
        },
        samples_ns,
        decode_bytes_per_token: Some(traffic.bytes_per_token(depth as f64 + mean_decode_ctx(n))),
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
        // K and V, 2 layers, 16 values each, in the graph's KV type.
        assert_eq!(tiny_graph().kv_type, vspec_core::kv::KvType::F32);
        assert_eq!(t.kv_bytes_per_position, 2 * 2 * 16 * 4);
        let mut g = tiny_graph();
        g.kv_type = vspec_core::kv::KvType::F16;
        let t = DecodeTraffic::of_graph(&g).unwrap();
        assert_eq!(t.kv_bytes_per_position, 2 * 2 * 16 * 2);
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
