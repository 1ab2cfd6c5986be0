//! The `vspec` command line. Flags are named like llama.cpp's where they mean the same.

mod bench;
mod device;
pub use device::DeviceArg;
mod inspect;
use inspect::emit;
mod plan;
mod quant;
mod run;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use vspec_core::kv::KvType;
use vspec_core::sample::SamplerConfig;

/// Vspec: low-bit LLM inference with a statically planned memory budget.
#[derive(Debug, Parser)]
#[command(name = "vspec", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt; text streams to stdout, timings go to stderr.
    Generate(GenerateArgs),
    /// Interactive chat with the model's own chat template; the KV cache is kept across turns.
    Chat(ChatArgs),
    /// Perplexity of a text file with llama-perplexity's protocol.
    Perplexity(PerplexityArgs),
    /// Show metadata, tensors with formats and sizes, and the memory plan.
    Inspect(InspectArgs),
    /// Print the graph IR (and its memory plan) as JSON.
    Ir(IrArgs),
    /// The memory a model needs (weights, arena, KV cache, overhead, per layer) from its headers
    /// alone; with --budget, whether it fits and what would.
    Plan(plan::PlanArgs),
    /// Measure per-channel activation statistics over a text, for importance-weighted quantization.
    Calibrate(CalibrateArgs),
    /// Convert a GGUF file or Hugging Face directory into a packed .vspec file.
    Convert(ConvertArgs),
    /// Prompt and generation speed with llama-bench's protocol, plus the decode roofline.
    Bench(bench::BenchArgs),
    /// Download the default model (SmolLM2-135M-Instruct) into the cache and print its path.
    Fetch,
}

/// Model selection and runtime shape, shared by every command.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model: a .gguf file or a Hugging Face directory. Default: SmolLM2-135M-Instruct, fetched once.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Threads (0 = one per core).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
    /// Context size in tokens (0 = the model's training context, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Maximum tokens per forward step while processing a prompt.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Where to run: cpu, cuda or cuda:N (CUDA runs `generate`; other commands say so).
    #[arg(long = "device", default_value = "cpu", value_parser = device::parse_device)]
    pub device: DeviceArg,
}

/// The KV cache's element type, for the commands that run a model.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// KV cache element type: f16 (default, as llama.cpp), q8_0 (blocks of 32 along head_dim,
    /// 8.5 bits) or f32 (exact).
    #[arg(long = "kv", default_value = "f16", value_parser = parse_kv_type)]
    pub kv: KvType,
}

/// Parses `--kv`.
fn parse_kv_type(s: &str) -> std::result::Result<KvType, String> {
    KvType::parse(s).ok_or_else(|| format!("unknown KV type '{s}' (f32, f16 or q8_0)"))
}

/// Sampling flags.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens of history the repetition penalty looks at.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed; the same seed and inputs give the same text on every machine.
    #[arg(short = 's', long = "seed", default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampler configuration, validated.
    pub fn config(&self) -> Result<SamplerConfig> {
        let c = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        };
        c.validate().map_err(|e| anyhow::anyhow!("sampling: {e}"))?;
        Ok(c)
    }
}

/// `vspec generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    #[command(flatten)]
    /// KV cache type.
    pub kv: KvArgs,
    #[command(flatten)]
    /// Sampling.
    pub sampling: SamplingArgs,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt", default_value = "Once upon a time")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long = "chat-template")]
    pub use_chat_template: bool,
    /// When the context is full, drop the oldest half (after BOS) and go on instead of stopping
    /// with an error.
    #[arg(long = "ctx-shift")]
    pub ctx_shift: bool,
}

/// `vspec chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    #[command(flatten)]
    /// KV cache type.
    pub kv: KvArgs,
    #[command(flatten)]
    /// Sampling.
    pub sampling: SamplingArgs,
    /// System prompt.
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Maximum tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    pub n_predict: usize,
    /// When the context is full, drop the oldest half after the system prompt (within a reply),
    /// and the oldest turns (between replies), instead of stopping with an error.
    #[arg(long = "ctx-shift")]
    pub ctx_shift: bool,
}

/// `vspec perplexity`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    #[command(flatten)]
    /// KV cache type.
    pub kv: KvArgs,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Chunks to score (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Also write the result as JSON to this file.
    #[arg(long = "json")]
    pub json: Option<PathBuf>,
    /// Write this model's log-probabilities at every scored position to FILE, as the baseline
    /// for a later `--kl` run.
    #[arg(long = "kl-base", value_name = "FILE", conflicts_with = "kl")]
    pub kl_base: Option<PathBuf>,
    /// Compare with a baseline written by `--kl-base`: mean KL divergence, same-top-token %.
    #[arg(long = "kl", value_name = "FILE")]
    pub kl: Option<PathBuf>,
}

/// `vspec calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    /// Calibration text.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Output statistics file (JSON).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Tokens per chunk.
    #[arg(long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Chunks to run (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Also store each distinct matmul input's second-moment matrix `E[x xᵀ]` (a binary stats
    /// file of n(n+1)/2 floats per input: 202 MB for SmolLM2-135M), so that `convert` can feed
    /// each weight's error forward to the columns after it.
    #[arg(long = "hessian")]
    pub hessian: bool,
    /// Measure the model with its residual stream rotated, as `convert --rotate` will quantize it
    /// (statistics of a rotated model only fit a rotated conversion, and the other way round).
    #[arg(long = "rotate")]
    pub rotate: bool,
}

/// `vspec convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    /// Quality tier with the built-in recipe: 2, 3, 4 or 8 bits.
    #[arg(
        long = "bits",
        conflicts_with = "recipe",
        required_unless_present_any = ["recipe", "budget"]
    )]
    pub bits: Option<u32>,
    /// Recipe file: `default = FORMAT` plus `pattern = FORMAT` overrides.
    #[arg(long = "recipe")]
    pub recipe: Option<PathBuf>,
    /// Calibration statistics from `vspec calibrate` (best with `--hessian`), to weigh and
    /// compensate quantization errors. Without it, convert calibrates on a built-in English text.
    #[arg(long = "imatrix")]
    pub imatrix: Option<PathBuf>,
    /// Do not calibrate: fit every block on its own with uniform weights (data-free and fast,
    /// but much worse at 3 and 2 bits).
    #[arg(long = "no-calibration", conflicts_with = "imatrix")]
    pub no_calibration: bool,
    /// Rotate the residual stream by a fixed orthogonal matrix before quantizing (spreads the
    /// activation outliers; see the README). Default: as the `--imatrix` stats were measured,
    /// else on for a calibrated `--bits 2` only.
    #[arg(long = "rotate", conflicts_with = "no_rotate")]
    pub rotate: bool,
    /// Do not rotate (a `.vspec` input that is already rotated stays in its basis either way).
    #[arg(long = "no-rotate")]
    pub no_rotate: bool,
    /// Choose each matrix's format so that the model fits this many bytes (B, KB, MB, GB, KiB,
    /// MiB, GiB) with the least estimated KLD: the weights alone, or with `--ctx` what `vspec
    /// plan --budget` counts (weights + arena + KV cache + fixed overhead).
    #[arg(long = "budget", value_name = "BYTES", conflicts_with_all = ["bits", "recipe"])]
    pub budget: Option<String>,
    /// With --budget: the context (tokens) whose arena and KV cache the budget must also hold.
    #[arg(long = "ctx", requires = "budget")]
    pub budget_ctx: Option<usize>,
    /// With --budget --ctx: the KV cache type planned for (f16 by default, as `vspec plan`).
    #[arg(long = "kv", requires = "budget_ctx", value_parser = parse_kv_type)]
    pub budget_kv: Option<KvType>,
    /// Output .vspec file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

/// `vspec inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    /// Print every metadata array in full.
    #[arg(long)]
    pub full: bool,
}

/// `vspec ir`.
#[derive(Debug, Args)]
pub struct IrArgs {
    #[command(flatten)]
    /// Model and runtime.
    pub model: ModelArgs,
    /// Also print the memory plan.
    #[arg(long)]
    pub plan: bool,
    /// Plan for logits of every token (as perplexity does).
    #[arg(long)]
    pub all_logits: bool,
}

/// Resolves `-m` or fetches the default model.
pub fn model_path(m: &ModelArgs) -> Result<PathBuf> {
    match &m.model {
        Some(p) => Ok(p.clone()),
        None => crate::fetch::default_model(true),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => run::generate(&a),
        Command::Chat(a) => {
            a.model.device.require_cpu("chat")?;
            run::chat(&a)
        }
        Command::Perplexity(a) => {
            a.model.device.require_cpu("perplexity")?;
            run::perplexity(&a)
        }
        Command::Inspect(a) => {
            a.model.device.require_cpu("inspect")?;
            inspect::inspect(&a)
        }
        Command::Calibrate(a) => {
            a.model.device.require_cpu("calibrate")?;
            quant::calibrate(&a)
        }
        Command::Convert(a) => {
            a.model.device.require_cpu("convert")?;
            quant::convert(&a)
        }
        Command::Ir(a) => {
            a.model.device.require_cpu("ir")?;
            inspect::ir(&a)
        }
        Command::Plan(a) => plan::plan(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Fetch => {
            let p = crate::fetch::default_model(true)?;
            println!("{}", p.display());
            Ok(())
        }
    }
}
