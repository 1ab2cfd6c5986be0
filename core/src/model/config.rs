//! Model hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.
//!
//! Missing required fields are errors naming the key; optional ones fall back to the defaults the
//! reference implementation uses (documented on each field).

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::graph::RopeLayout;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

fn usize_of(v: u32) -> usize {
    v as usize
}

impl ModelConfig {
    /// Reads the config from GGUF metadata and the tensor list (which decides tied heads and biases).
    pub fn from_gguf(g: &Gguf) -> Result<ModelConfig> {
        let arch_name = g.architecture()?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => return Err(Error::UnsupportedArch(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_heads = usize_of(g.get_u32(&key("attention.head_count"))?);
        let d_model = usize_of(g.get_u32(&key("embedding_length"))?);
        let n_kv_heads = usize_of(
            g.get_u32_opt(&key("attention.head_count_kv"))?
                .unwrap_or(n_heads as u32),
        );
        let head_dim = match g.get_u32_opt(&key("attention.key_length"))? {
            Some(v) => usize_of(v),
            None => {
                if n_heads == 0 {
                    return Err(Error::invalid(key("attention.head_count"), "is zero"));
                }
                d_model / n_heads
            }
        };
        let vocab = match g.get_u32_opt(&key("vocab_size"))? {
            Some(v) => usize_of(v),
            None => match g.tensor("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => return Err(Error::missing("tensor 'token_embd.weight'")),
            },
        };
        let rope_scaling = match g.get_str_opt(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: g.get_f32(&key("rope.scaling.factor"))?,
            },
            Some(other) => {
                return Err(Error::invalid(
                    key("rope.scaling.type"),
                    format!("'{other}' is not supported (none, linear)"),
                ))
            }
        };
        let cfg = ModelConfig {
            arch,
            n_layers: usize_of(g.get_u32(&key("block_count"))?),
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: usize_of(g.get_u32(&key("feed_forward_length"))?),
            vocab,
            train_ctx: usize_of(g.get_u32(&key("context_length"))?),
            norm_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.get_f32_opt(&key("rope.freq_base"))?.unwrap_or(10000.0),
            rope_dim: usize_of(
                g.get_u32_opt(&key("rope.dimension_count"))?
                    .unwrap_or(head_dim as u32),
            ),
            // convert_hf_to_gguf permutes Llama's q/k rows so that pairs become adjacent; Qwen
            // files keep Hugging Face's rotate-half order.
            rope_layout: match arch {
                Arch::Llama => RopeLayout::Interleaved,
                Arch::Qwen2 | Arch::Qwen3 => RopeLayout::Neox,
            },
            rope_scaling,
            tied_embeddings: g.tensor("output.weight").is_none(),
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
            output_mix: g.tensor("output_mix.weight").is_some(),
            qk_norm: arch == Arch::Qwen3 || g.tensor("blk.0.attn_q_norm.weight").is_some(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (its text). `has_tensor` tells whether the checkpoint
    /// holds a tensor (by Hugging Face name), which decides biases when the config is silent.
    pub fn from_hf_json(text: &str, has_tensor: &dyn Fn(&str) -> bool) -> Result<ModelConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("config.json", format!("not valid JSON: {e}")))?;
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| v.get("model_type").and_then(Value::as_str))
            .ok_or_else(|| Error::missing("config.json field 'architectures'"))?;
        let arch = match arch_name {
            "LlamaForCausalLM" | "MistralForCausalLM" | "llama" | "mistral" => Arch::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            "Qwen3ForCausalLM" | "qwen3" => Arch::Qwen3,
            other => return Err(Error::UnsupportedArch(other.to_string())),
        };
        let req = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| Error::missing(format!("config.json field '{k}'")))
        };
        let opt_usize = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let opt_f32 = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        let n_heads = req("num_attention_heads")?;
        let d_model = req("hidden_size")?;
        if n_heads == 0 {
            return Err(Error::invalid(
                "config.json field 'num_attention_heads'",
                "is zero",
            ));
        }
        let head_dim = opt_usize("head_dim").unwrap_or(d_model / n_heads);
        if v.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err(Error::invalid(
                "config.json field 'mlp_bias'",
                "MLP biases are not supported",
            ));
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(Error::invalid(
                    "config.json field 'hidden_act'",
                    format!("'{act}' (only silu)"),
                ));
            }
        }
        if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err(Error::invalid(
                "config.json field 'use_sliding_window'",
                "sliding-window attention is not supported",
            ));
        }
        // transformers 5 writes `rope_parameters` (theta and scaling together) instead of
        // `rope_theta` + `rope_scaling`; older files have only the latter.
        let rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        let scaling_src = match v.get("rope_scaling") {
            Some(Value::Null) | None => rope_params,
            Some(other) => Some(other),
        };
        let rope_scaling = match scaling_src {
            None | Some(Value::Null) => RopeScaling::None,
            Some(rs) => {
                let ty = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let f = |k: &str| -> Result<f32> {
                    rs.get(k)
                        .and_then(Value::as_f64)
                        .map(|x| x as f32)
                        .ok_or_else(|| {
                            Error::missing(format!("config.json field 'rope_scaling.{k}'"))
                        })
                };
                match ty {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: f("factor")?,
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: f("factor")?,
                        low_freq_factor: f("low_freq_factor")?,
                        high_freq_factor: f("high_freq_factor")?,
                        original_max_positions: f("original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(Error::invalid(
                            "config.json field 'rope_scaling.rope_type'",
                            format!("'{other}' is not supported (default, linear, llama3)"),
                        ))
                    }
                }
            }
        };
        let attention_bias = v.get("attention_bias").and_then(Value::as_bool);
        let cfg = ModelConfig {
            arch,
            n_layers: req("num_hidden_layers")?,
            d_model,
            n_heads,
            n_kv_heads: opt_usize("num_key_value_heads").unwrap_or(n_heads),
            head_dim,
            d_ff: req("intermediate_size")?,
            vocab: req("vocab_size")?,
            train_ctx: opt_usize("max_position_embeddings").unwrap_or(2048),
            norm_eps: opt_f32("rms_norm_eps").unwrap_or(1e-6),
            rope_theta: opt_f32("rope_theta")
                .or_else(|| {
                    rope_params
                        .and_then(|p| p.get("rope_theta"))
                        .and_then(Value::as_f64)
                        .map(|x| x as f32)
                })
                .unwrap_or(10000.0),
            rope_dim: head_dim,
            rope_layout: RopeLayout::Neox,
            rope_scaling,
            // transformers' Llama/Qwen configs default to untied heads; a tied checkpoint may still
            // omit lm_head, which the loader treats as tied.
            tied_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || !has_tensor("lm_head.weight"),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                _ => {
                    attention_bias.unwrap_or(false)
                        || has_tensor("model.layers.0.self_attn.q_proj.bias")
                }
            },
            o_bias: arch == Arch::Llama
                && (attention_bias.unwrap_or(false)
                    || has_tensor("model.layers.0.self_attn.o_proj.bias")),
            qk_norm: arch == Arch::Qwen3,
            output_mix: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the numbers fit together, so the builder and kernels can rely on them.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::invalid(field.to_string(), reason));
        for (name, v) in [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("d_ff", self.d_ff),
            ("vocab", self.vocab),
        ] {
            if v == 0 || v > 1 << 24 {
                return bad(name, format!("{v} is out of range"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2)
            || !self.rope_dim.is_multiple_of(2)
            || self.rope_dim > self.head_dim
        {
            return bad(
                "rope_dim",
                format!(
                    "{} (head_dim {}) must be even and ≤ head_dim",
                    self.rope_dim, self.head_dim
                ),
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad("norm_eps", format!("{}", self.norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rope_theta", format!("{}", self.rope_theta));
        }
        if let RopeScaling::FreqFactors(f) = &self.rope_scaling {
            if f.len() != self.rope_dim / 2 {
                return bad(
                    "rope_freqs.weight",
                    format!("{} factors for rope_dim {}", f.len(), self.rope_dim),
                );
            }
        }
        Ok(())
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
