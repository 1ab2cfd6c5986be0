//! Models of a published shape with random weights, written as `.vspec` files in exactly the
//! formats `vspec convert --bits N` chooses for that shape ([`Recipe::for_bits`]).
//!
//! What they are for: speed on shapes whose weights cannot be fetched here (the CUDA check's
//! Qwen3-8B-shaped model; SmolLM2-shaped files for every tier on a machine that cannot carry the
//! real ones), and device-against-CPU comparisons in every tier's formats. Speed does not depend
//! on the weights' values: every format decodes every block the same way whatever it holds.
//!
//! Each matrix holds [`DISTINCT_ROWS`] different random rows, quantized once with the format's
//! own quantizer and repeated down the matrix (quantizing billions of weights would take the
//! check's whole budget). Every byte is still stored and streamed: repetition changes nothing a
//! kernel can see. Vectors (norm gains) are `1 ± 0.1·noise` in f32. The tokenizer is the tiny
//! one of the fixture of the same family (the header allows fewer tokenizer ids than embedding
//! rows), so these files are for running ids, not text.

use crate::encode::{encode, values};
use crate::fixtures;
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use vspec_core::format::Format;
use vspec_core::graph::{Limits, Role};
use vspec_core::kv::KvType;
use vspec_core::model::{build_graph_kv, ModelConfig};
use vspec_host::quantize::recipe::Recipe;
use vspec_host::vspecfile::VspecWriter;
use vspec_host::ModelFile;

/// Different rows per matrix before the pattern repeats.
pub const DISTINCT_ROWS: usize = 256;

/// A published model shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// SmolLM2-135M(-Instruct): Llama, 30 layers, 576 wide, 9 heads over 3 KV heads, tied head.
    SmolLM2_135M,
    /// Qwen3-8B: 36 layers, 4096 wide, 32 heads of 128 over 8 KV heads, 12288 feed-forward,
    /// 151936 ids, separate head, q/k norms.
    Qwen3_8B,
    /// A Qwen3-like model small enough for the CUDA emulator of the host tests: 2 layers, 128
    /// wide, 2 heads of 64 over 1 KV head, 256 feed-forward, the fixtures' 320 ids.
    Tiny,
}

impl Shape {
    /// Parses `smollm2-135m` or `qwen3-8b`.
    pub fn parse(s: &str) -> Result<Shape> {
        match s {
            "smollm2-135m" => Ok(Shape::SmolLM2_135M),
            "qwen3-8b" => Ok(Shape::Qwen3_8B),
            "tiny" => Ok(Shape::Tiny),
            _ => Err(anyhow!(
                "unknown shape '{s}' (smollm2-135m, qwen3-8b, tiny)"
            )),
        }
    }

    /// The fixture of the same family, whose config fields the shape does not set and whose
    /// tokenizer the file carries.
    fn fixture(self) -> &'static str {
        match self {
            Shape::SmolLM2_135M => "llama",
            Shape::Qwen3_8B | Shape::Tiny => "qwen3",
        }
    }

    /// The shape's config; `layers` overrides the number of layers (smaller test models).
    pub fn config(self, layers: Option<usize>) -> Result<ModelConfig> {
        let mut c = self.fixture_model()?.config.clone();
        let (n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab) = match self {
            Shape::SmolLM2_135M => (30, 576, 9, 3, 64, 1536, 49152),
            Shape::Qwen3_8B => (36, 4096, 32, 8, 128, 12288, 151936),
            Shape::Tiny => (2, 128, 2, 1, 64, 256, 320),
        };
        c.n_layers = layers.unwrap_or(n_layers);
        c.d_model = d_model;
        c.n_heads = n_heads;
        c.n_kv_heads = n_kv_heads;
        c.head_dim = head_dim;
        c.rope_dim = head_dim;
        c.d_ff = d_ff;
        c.vocab = vocab;
        match self {
            Shape::SmolLM2_135M => {
                c.train_ctx = 8192;
                c.rope_theta = 100_000.0;
                c.norm_eps = 1e-5;
                c.tied_embeddings = true;
            }
            Shape::Qwen3_8B | Shape::Tiny => {
                c.train_ctx = 40960;
                c.rope_theta = 1_000_000.0;
                c.norm_eps = 1e-6;
                c.tied_embeddings = false;
                c.qk_norm = true;
            }
        }
        Ok(c)
    }

    fn fixture_model(self) -> Result<ModelFile> {
        ModelFile::open(&fixtures().join("hf").join(self.fixture()))
    }
}

/// What [`write`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Weights (elements of every matrix and vector).
    pub params: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Tensors per format name.
    pub formats: BTreeMap<String, usize>,
}

/// Writes `shape` (with `layers` layers if given) at `path` in the formats of `--bits bits`,
/// random weights from `seed`. Nothing is left at `path` on error.
pub fn write(
    path: &Path,
    shape: Shape,
    layers: Option<usize>,
    bits: u32,
    seed: u64,
) -> Result<Written> {
    let config = shape.config(layers)?;
    let tokenizer = shape.fixture_model()?.tokenizer()?.to_parts()?;
    let recipe = Recipe::for_bits(bits, config.n_layers, config.tied_embeddings)?;
    let limits = Limits {
        max_ctx: 1,
        max_tokens: 1,
        all_logits: false,
    };
    let graph = build_graph_kv(&config, limits, KvType::F32).map_err(|e| anyhow!("{e}"))?;
    let mut meta = BTreeMap::new();
    meta.insert(
        "source".to_string(),
        format!("random weights (seed {seed}) in the shape {shape:?}"),
    );
    meta.insert("recipe".to_string(), recipe.to_text());
    let mut writer = VspecWriter::create(path, &config, &tokenizer, &meta)?;
    let mut report = Written::default();
    let mut seen = HashSet::new();
    for (i, t) in graph.tensors.iter().enumerate() {
        if t.role != Role::Weight || !seen.insert(t.name.as_str()) {
            continue;
        }
        let (format, dims, bytes) = if t.weight_rows == 1 {
            let gains: Vec<u8> = values(t.cols, seed ^ i as u64)
                .iter()
                .flat_map(|v| (1.0 + 0.1 * v.clamp(-2.0, 2.0)).to_le_bytes())
                .collect();
            (Format::F32, vec![t.cols as u64], gains)
        } else {
            let format = recipe.format_for(&t.name, t.cols)?;
            let bytes = random_matrix(format, t.weight_rows, t.cols, seed ^ ((i as u64) << 20))
                .with_context(|| format!("tensor '{}'", t.name))?;
            (format, vec![t.cols as u64, t.weight_rows as u64], bytes)
        };
        writer.add_tensor(&t.name, format, &dims, &bytes)?;
        report.params += (t.weight_rows * t.cols) as u64;
        report.tensor_bytes += bytes.len() as u64;
        *report.formats.entry(format.name().to_string()).or_default() += 1;
    }
    writer.finish()?;
    Ok(report)
}

/// `rows × cols` weights in `format`: [`DISTINCT_ROWS`] random rows (quantized on all cores)
/// repeated. Values of about 0.02 (`N(0, 1)`-like noise with outliers, scaled), the size of a
/// trained model's weights.
fn random_matrix(format: Format, rows: usize, cols: usize, seed: u64) -> Result<Vec<u8>> {
    let row_bytes = format
        .tensor_bytes(cols, 1, "row")
        .map_err(|e| anyhow!("{e}"))?;
    let distinct = rows.min(DISTINCT_ROWS);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pattern = vec![0u8; distinct * row_bytes];
    std::thread::scope(|s| {
        for (part, chunk) in pattern
            .chunks_mut(distinct.div_ceil(threads) * row_bytes)
            .enumerate()
        {
            s.spawn(move || {
                let first = part * distinct.div_ceil(threads);
                for (k, out) in chunk.chunks_exact_mut(row_bytes).enumerate() {
                    let x: Vec<f32> = values(cols, seed + (first + k) as u64)
                        .iter()
                        .map(|v| 0.02 * v)
                        .collect();
                    out.copy_from_slice(&encode(format, &x));
                }
            });
        }
    });
    let mut out = Vec::with_capacity(rows * row_bytes);
    while out.len() < rows * row_bytes {
        let take = pattern.len().min(rows * row_bytes - out.len());
        out.extend_from_slice(&pattern[..take]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_keep_the_fixture_family_and_set_the_published_sizes() {
        let q = Shape::Qwen3_8B.config(None).unwrap();
        assert!(q.qk_norm && !q.tied_embeddings);
        assert_eq!((q.n_layers, q.d_model, q.vocab), (36, 4096, 151936));
        let s = Shape::SmolLM2_135M.config(Some(2)).unwrap();
        assert_eq!((s.n_layers, s.d_ff, s.n_kv_heads), (2, 1536, 3));
    }
}
