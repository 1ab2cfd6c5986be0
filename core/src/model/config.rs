//! Model hyper-parameters, read from GGUF metadata (`config/gguf.rs`) or a Hugging Face
//! `config.json` (`config/hf.rs`), or stored as they are in a `.vspec` header.
//!
//! Missing required fields are errors naming the key; optional ones fall back to the defaults the
//! reference implementation uses (documented on each field). Every source runs the same checks —
//! [`ModelConfig::check_values`] (ranges and consistency between values) and
//! [`ModelConfig::check_tensors`] (agreement with the tensors the file holds) — under the names
//! its own file uses ([`FieldNames`]), so a message names the key the user will find there:
//! `llama.attention.head_count` in a GGUF, `num_attention_heads` in a `config.json`, `n_heads` in
//! a `.vspec` header.

mod gguf;
mod hf;

use crate::error::{Error, Result};
use crate::graph::RopeLayout;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Supported model families (all Llama-shaped decoders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, Mistral-style dense models.
    Llama,
    /// Qwen2 / Qwen2.5: biases on q, k, v.
    Qwen2,
    /// Qwen3 dense: per-head RMSNorm on q and k, no biases.
    Qwen3,
}

impl Arch {
    /// The GGUF `general.architecture` string.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// How rotary frequencies are stretched for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear {
        /// Stretch factor.
        factor: f32,
    },
    /// Llama 3.1 "llama3" rule: low frequencies divided by `factor`, high kept, smooth between.
    Llama3 {
        /// Stretch factor for low frequencies.
        factor: f32,
        /// Wavelengths longer than `original_max_positions / low_freq_factor` are stretched.
        low_freq_factor: f32,
        /// Wavelengths shorter than `original_max_positions / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// The context length the model was pre-trained with.
        original_max_positions: f32,
    },
    /// Per-frequency divisors stored in the model file (GGUF `rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

/// Everything the graph builder needs to know about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Family.
    pub arch: Arch,
    /// Decoder layers.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Elements per head (Qwen3 sets it apart from `d_model / n_heads`).
    pub head_dim: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
    /// Context length the model was trained for.
    pub train_ctx: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Rotated elements per head (usually `head_dim`).
    pub rope_dim: usize,
    /// RoPE pair layout, fixed by where the weights came from.
    pub rope_layout: RopeLayout,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Output head shares the embedding table.
    pub tied_embeddings: bool,
    /// q, k, v projections carry biases.
    pub qkv_bias: bool,
    /// The attention output projection carries a bias.
    pub o_bias: bool,
    /// Per-head RMSNorm on q and k (Qwen3).
    pub qk_norm: bool,
    /// The head reads `rmsnorm(x)` through a `d_model × d_model` matrix first (tensor
    /// `output_mix.weight`). `vspec convert --rotate` sets it on tied models: the residual stream
    /// is stored in a rotated basis, and the final norm's gain, which no longer acts per channel
    /// there, becomes this matrix so the head can stay tied to the embedding table.
    #[serde(default)]
    pub output_mix: bool,
}

/// Largest count or width a config may declare (layers, heads, widths, vocabulary): far above any
/// real model, low enough that products of two of them cannot overflow.
pub const MAX_CONFIG_DIM: usize = 1 << 24;

/// What each config value is called in the file it came from, so that a message names the key the
/// user will find there. Each entry is the whole field part of a message
/// (`metadata key 'llama.block_count'`, `config.json field 'num_hidden_layers'`, `n_layers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    /// [`ModelConfig::n_layers`].
    pub n_layers: String,
    /// [`ModelConfig::d_model`].
    pub d_model: String,
    /// [`ModelConfig::n_heads`].
    pub n_heads: String,
    /// [`ModelConfig::n_kv_heads`].
    pub n_kv_heads: String,
    /// [`ModelConfig::head_dim`].
    pub head_dim: String,
    /// [`ModelConfig::d_ff`].
    pub d_ff: String,
    /// [`ModelConfig::vocab`].
    pub vocab: String,
    /// [`ModelConfig::train_ctx`].
    pub train_ctx: String,
    /// [`ModelConfig::norm_eps`].
    pub norm_eps: String,
    /// [`ModelConfig::rope_theta`].
    pub rope_theta: String,
    /// [`ModelConfig::rope_dim`].
    pub rope_dim: String,
    /// Where [`ModelConfig::rope_scaling`] comes from; its parameters are `{rope_scaling}.factor`
    /// and so on (the GGUF names are the same shape: `llama.rope.scaling.factor`).
    pub rope_scaling: String,
    /// [`ModelConfig::tied_embeddings`].
    pub tied_embeddings: String,
}

impl FieldNames {
    /// The `.vspec` header's names: the config's own field names, as serde writes them.
    pub fn vspec() -> FieldNames {
        FieldNames {
            n_layers: "n_layers".into(),
            d_model: "d_model".into(),
            n_heads: "n_heads".into(),
            n_kv_heads: "n_kv_heads".into(),
            head_dim: "head_dim".into(),
            d_ff: "d_ff".into(),
            vocab: "vocab".into(),
            train_ctx: "train_ctx".into(),
            norm_eps: "norm_eps".into(),
            rope_theta: "rope_theta".into(),
            rope_dim: "rope_dim".into(),
            rope_scaling: "rope_scaling".into(),
            tied_embeddings: "tied_embeddings".into(),
        }
    }

    /// The message field for parameter `param` of the RoPE scaling (`factor`, ...).
    fn rope_param(&self, param: &str) -> String {
        // "metadata key 'llama.rope.scaling'" and "factor" give
        // "metadata key 'llama.rope.scaling.factor'".
        match self.rope_scaling.strip_suffix('\'') {
            Some(quoted) => format!("{quoted}.{param}'"),
            None => format!("{}.{param}", self.rope_scaling),
        }
    }
}

/// The tensors a model file holds, as the config checks see them: GGUF names (a Hugging Face
/// checkpoint's names translated) with dims in GGUF order (`dims[0]` is the row length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorShapes {
    dims: BTreeMap<String, Vec<u64>>,
}

impl TensorShapes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records tensor `gguf_name` with `dims` (GGUF order).
    pub fn insert(&mut self, gguf_name: impl Into<String>, dims: Vec<u64>) {
        self.dims.insert(gguf_name.into(), dims);
    }

    /// Whether tensor `gguf_name` is present.
    pub fn contains(&self, gguf_name: &str) -> bool {
        self.dims.contains_key(gguf_name)
    }

    /// The rows of a 2-D tensor (`dims[1]`) and its row length (`dims[0]`), when it is present and
    /// 2-D; other shapes are left to the weight binder, which names the expected shape.
    fn matrix(&self, gguf_name: &str) -> Option<(u64, u64)> {
        match self.dims.get(gguf_name)?.as_slice() {
            [cols, rows] => Some((*rows, *cols)),
            _ => None,
        }
    }

    /// Number of decoder blocks that have at least one tensor: one more than the highest `N` of
    /// a `blk.N.` name, 0 when there are none.
    fn blocks_present(&self) -> usize {
        self.dims
            .keys()
            .filter_map(|name| {
                let rest = name.strip_prefix("blk.")?;
                let (index, _) = rest.split_once('.')?;
                index.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |highest| highest.saturating_add(1))
    }
}

impl<S: Into<String>> FromIterator<(S, Vec<u64>)> for TensorShapes {
    fn from_iter<I: IntoIterator<Item = (S, Vec<u64>)>>(iter: I) -> Self {
        let mut shapes = TensorShapes::new();
        for (name, dims) in iter {
            shapes.insert(name, dims);
        }
        shapes
    }
}

/// `Err(Error::Invalid)` naming `field`.
fn invalid<T>(field: &str, reason: String) -> Result<T> {
    Err(Error::invalid(field.to_string(), reason))
}

/// Whether `x` is a usable positive finite parameter (not 0, negative, NaN or infinite).
fn positive_finite(x: f32) -> bool {
    x.is_finite() && x > 0.0
}

impl ModelConfig {
    /// Checks the numbers fit together, so the builder and kernels can rely on them; errors name
    /// the `.vspec` header's fields. See [`ModelConfig::check_values`].
    pub fn validate(&self) -> Result<()> {
        self.check_values(&FieldNames::vspec())
    }

    /// Checks every value's range and the values' consistency with each other, naming fields as
    /// `names` says: counts and widths 1 to [`MAX_CONFIG_DIM`], a positive context length, kv
    /// heads dividing query heads, an even head size, a RoPE width that is even, positive and
    /// within the head, positive finite epsilon, RoPE base and scaling parameters.
    pub fn check_values(&self, names: &FieldNames) -> Result<()> {
        for (field, v) in [
            (&names.n_layers, self.n_layers),
            (&names.d_model, self.d_model),
            (&names.n_heads, self.n_heads),
            (&names.n_kv_heads, self.n_kv_heads),
            (&names.head_dim, self.head_dim),
            (&names.d_ff, self.d_ff),
            (&names.vocab, self.vocab),
        ] {
            if v == 0 || v > MAX_CONFIG_DIM {
                return invalid(
                    field,
                    format!("{v} is out of range (1 to {MAX_CONFIG_DIM})"),
                );
            }
        }
        if self.train_ctx == 0 {
            return invalid(&names.train_ctx, "the context length is 0".into());
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return invalid(
                &names.n_kv_heads,
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return invalid(
                &names.head_dim,
                format!("head size {} is odd; RoPE rotates pairs", self.head_dim),
            );
        }
        if self.rope_dim == 0 || !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim {
            return invalid(
                &names.rope_dim,
                format!(
                    "{} (head_dim {}) must be even, positive and ≤ head_dim",
                    self.rope_dim, self.head_dim
                ),
            );
        }
        if !positive_finite(self.norm_eps) {
            return invalid(
                &names.norm_eps,
                format!("{} (must be positive and finite)", self.norm_eps),
            );
        }
        if !positive_finite(self.rope_theta) {
            return invalid(
                &names.rope_theta,
                format!("{} (must be positive and finite)", self.rope_theta),
            );
        }
        self.check_rope_scaling(names)
    }

    /// Every RoPE scaling parameter is positive and finite (frequencies are divided by them),
    /// llama3's band is not empty, and a per-frequency table has one factor per rotated pair.
    fn check_rope_scaling(&self, names: &FieldNames) -> Result<()> {
        let params: Vec<(&str, f32)> = match &self.rope_scaling {
            RopeScaling::None => Vec::new(),
            RopeScaling::Linear { factor } => alloc::vec![("factor", *factor)],
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => {
                if positive_finite(*low_freq_factor) && high_freq_factor <= low_freq_factor {
                    return invalid(
                        &names.rope_param("high_freq_factor"),
                        format!(
                            "{high_freq_factor} is not above low_freq_factor {low_freq_factor}"
                        ),
                    );
                }
                alloc::vec![
                    ("factor", *factor),
                    ("low_freq_factor", *low_freq_factor),
                    ("high_freq_factor", *high_freq_factor),
                    ("original_max_position_embeddings", *original_max_positions),
                ]
            }
            RopeScaling::FreqFactors(factors) => {
                let field = "tensor 'rope_freqs.weight'";
                if factors.len() != self.rope_dim / 2 {
                    return invalid(
                        field,
                        format!("{} factors for rope_dim {}", factors.len(), self.rope_dim),
                    );
                }
                if let Some((i, f)) = factors
                    .iter()
                    .enumerate()
                    .find(|(_, f)| !positive_finite(**f))
                {
                    return invalid(
                        field,
                        format!("factor {i} is {f} (must be positive and finite)"),
                    );
                }
                Vec::new()
            }
        };
        for (param, value) in params {
            if !positive_finite(value) {
                return invalid(
                    &names.rope_param(param),
                    format!("{value} (must be positive and finite)"),
                );
            }
        }
        Ok(())
    }

    /// Checks the config against the tensors the file holds, naming fields as `names` says: the
    /// block count matches the `blk.N` tensors present (blocks beyond it would be ignored, blocks
    /// short of it missing), the embedding table is `vocab` rows of `d_model`, an untied model has
    /// an output head of `vocab` rows, and block 0's q, k and up projections have the rows the head
    /// counts and feed-forward width imply. Tensors absent or not 2-D are left to the weight
    /// binder, which names the tensor and the shape it expects.
    pub fn check_tensors(&self, tensors: &TensorShapes, names: &FieldNames) -> Result<()> {
        let blocks = tensors.blocks_present();
        if blocks > self.n_layers {
            return invalid(
                &names.n_layers,
                format!(
                    "{} blocks, but the file holds tensors for {blocks} (up to 'blk.{}.')",
                    self.n_layers,
                    blocks - 1
                ),
            );
        }
        if blocks < self.n_layers {
            return invalid(
                &names.n_layers,
                format!(
                    "{} blocks, but the file holds tensors for only {blocks} (none named \
                     'blk.{blocks}.')",
                    self.n_layers
                ),
            );
        }
        if let Some((rows, cols)) = tensors.matrix("token_embd.weight") {
            if rows != self.vocab as u64 {
                return invalid(
                    &names.vocab,
                    format!(
                        "{} tokens, but the embedding table, tensor 'token_embd.weight', has \
                         {rows} rows",
                        self.vocab
                    ),
                );
            }
            if cols != self.d_model as u64 {
                return invalid(
                    &names.d_model,
                    format!(
                        "{}, but the embedding table, tensor 'token_embd.weight', has rows of \
                         {cols}",
                        self.d_model
                    ),
                );
            }
        }
        if !self.tied_embeddings {
            match tensors.matrix("output.weight") {
                Some((rows, _)) if rows != self.vocab as u64 => {
                    return invalid(
                        &names.vocab,
                        format!(
                        "{} tokens, but the output head, tensor 'output.weight', has {rows} rows",
                        self.vocab
                    ),
                    )
                }
                None if !tensors.contains("output.weight") => {
                    return invalid(
                        &names.tied_embeddings,
                        "the head is not tied to the embedding table, but there is no output head \
                         tensor"
                            .into(),
                    )
                }
                _ => {}
            }
        }
        let projections = [
            ("blk.0.attn_q.weight", self.n_heads, &names.n_heads, "heads"),
            (
                "blk.0.attn_k.weight",
                self.n_kv_heads,
                &names.n_kv_heads,
                "kv heads",
            ),
        ];
        for (tensor, heads, field, what) in projections {
            let want = (heads * self.head_dim) as u64;
            match tensors.matrix(tensor) {
                Some((rows, _)) if rows != want => {
                    return invalid(
                        field,
                        format!(
                            "{heads} {what} of {} = {want} rows, but tensor '{tensor}' has {rows}",
                            self.head_dim
                        ),
                    )
                }
                _ => {}
            }
        }
        match tensors.matrix("blk.0.ffn_up.weight") {
            Some((rows, _)) if rows != self.d_ff as u64 => invalid(
                &names.d_ff,
                format!(
                    "{}, but tensor 'blk.0.ffn_up.weight' has {rows} rows",
                    self.d_ff
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Inverse rotary frequencies (`rope_dim / 2` values) with scaling applied, computed in f32 as
    /// Hugging Face does: `1 / theta^(2i/d)`.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.rope_dim;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / libm::powf(self.rope_theta, (2 * i) as f32 / d as f32))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(ff) => base.iter().zip(ff).map(|(f, s)| f / s).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => {
                let low_wavelen = original_max_positions / low_freq_factor;
                let high_wavelen = original_max_positions / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * core::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_positions / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// A short description for logs: `llama, 30 layers, d=576, 9/3 heads × 64, ff=1536`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} layers, d={}, {}/{} heads x {}, ff={}, vocab={}",
            self.arch.gguf_name(),
            self.n_layers,
            self.d_model,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.d_ff,
            self.vocab
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consistent config: 2 blocks, 4 heads of 16 (2 kv), width 64, ff 160, 320 tokens, untied.
    fn tiny() -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            n_layers: 2,
            d_model: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            d_ff: 160,
            vocab: 320,
            train_ctx: 128,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_dim: 16,
            rope_layout: RopeLayout::Neox,
            rope_scaling: RopeScaling::None,
            tied_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            qk_norm: false,
            output_mix: false,
        }
    }

    fn tensors(blocks: usize) -> TensorShapes {
        let mut t = TensorShapes::new();
        t.insert("token_embd.weight", alloc::vec![64, 320]);
        t.insert("output.weight", alloc::vec![64, 320]);
        for b in 0..blocks {
            t.insert(format!("blk.{b}.attn_q.weight"), alloc::vec![64, 64]);
            t.insert(format!("blk.{b}.attn_k.weight"), alloc::vec![64, 32]);
            t.insert(format!("blk.{b}.ffn_up.weight"), alloc::vec![64, 160]);
        }
        t
    }

    /// The field an error names.
    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn valid_config_passes() {
        let c = tiny();
        c.validate().unwrap();
        c.check_tensors(&tensors(2), &FieldNames::vspec()).unwrap();
    }

    /// A change to a valid config and the field its error must name.
    type Mutation = (fn(&mut ModelConfig), &'static str);

    #[test]
    fn each_bad_value_names_its_vspec_field() {
        let cases: [Mutation; 14] = [
            (|c| c.n_layers = 0, "n_layers"),
            (|c| c.train_ctx = 0, "train_ctx"),
            (|c| c.n_kv_heads = 3, "n_kv_heads"),
            (|c| c.head_dim = 15, "head_dim"),
            (|c| c.rope_dim = 0, "rope_dim"),
            (|c| c.norm_eps = 0.0, "norm_eps"),
            (|c| c.norm_eps = f32::NAN, "norm_eps"),
            (|c| c.rope_theta = f32::INFINITY, "rope_theta"),
            (
                |c| c.rope_scaling = RopeScaling::Linear { factor: -1.0 },
                "rope_scaling.factor",
            ),
            (
                |c| {
                    c.rope_scaling = RopeScaling::Llama3 {
                        factor: 8.0,
                        low_freq_factor: 4.0,
                        high_freq_factor: 1.0,
                        original_max_positions: 64.0,
                    }
                },
                "rope_scaling.high_freq_factor",
            ),
            (
                |c| {
                    c.rope_scaling = RopeScaling::Llama3 {
                        factor: 8.0,
                        low_freq_factor: 1.0,
                        high_freq_factor: 4.0,
                        original_max_positions: f32::NAN,
                    }
                },
                "rope_scaling.original_max_position_embeddings",
            ),
            (
                |c| c.rope_scaling = RopeScaling::FreqFactors(alloc::vec![1.0; 7]),
                "tensor 'rope_freqs.weight'",
            ),
            (
                |c| {
                    let mut f = alloc::vec![1.0; 8];
                    f[3] = 0.0;
                    c.rope_scaling = RopeScaling::FreqFactors(f);
                },
                "tensor 'rope_freqs.weight'",
            ),
            (|c| c.vocab = 1 << 25, "vocab"),
        ];
        for (change, field) in cases {
            let mut c = tiny();
            change(&mut c);
            assert_eq!(field_of(c.validate()), field);
        }
    }

    #[test]
    fn tensors_that_contradict_the_config_name_its_field() {
        let names = FieldNames::vspec();
        let check = |c: &ModelConfig, t: &TensorShapes| field_of(c.check_tensors(t, &names));
        assert_eq!(check(&tiny(), &tensors(3)), "n_layers");
        assert_eq!(check(&tiny(), &tensors(1)), "n_layers");
        let mut no_head = tensors(2);
        no_head.dims.remove("output.weight");
        assert_eq!(check(&tiny(), &no_head), "tied_embeddings");
        let mut c = tiny();
        c.vocab = 321;
        assert_eq!(check(&c, &tensors(2)), "vocab");
        let mut c = tiny();
        c.d_model = 128;
        assert_eq!(check(&c, &tensors(2)), "d_model");
        let mut c = tiny();
        c.n_heads = 8;
        assert_eq!(check(&c, &tensors(2)), "n_heads");
        let mut c = tiny();
        c.n_kv_heads = 4;
        assert_eq!(check(&c, &tensors(2)), "n_kv_heads");
        let mut c = tiny();
        c.d_ff = 128;
        assert_eq!(check(&c, &tensors(2)), "d_ff");
        // A tied model needs no head; the untied head's rows must be the vocabulary.
        let mut c = tiny();
        c.tied_embeddings = true;
        c.check_tensors(&no_head, &names).unwrap();
        let mut short_head = tensors(2);
        short_head.insert("output.weight", alloc::vec![64, 319]);
        assert_eq!(check(&tiny(), &short_head), "vocab");
    }

    #[test]
    fn blocks_present_reads_only_block_indices() {
        let t: TensorShapes = [
            ("blk.0.attn_q.weight", alloc::vec![1u64]),
            ("blk.11.ffn_up.weight", alloc::vec![1]),
            ("blk.x.ffn_up.weight", alloc::vec![1]),
            ("output.weight", alloc::vec![1]),
        ]
        .into_iter()
        .collect();
        assert_eq!(t.blocks_present(), 12);
        assert_eq!(TensorShapes::new().blocks_present(), 0);
    }
}
