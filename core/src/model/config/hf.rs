//! [`ModelConfig::from_hf_json`]: the config from a Hugging Face `config.json`, checked against the
//! checkpoint's tensors, every message naming the JSON field.

use super::{Arch, FieldNames, ModelConfig, RopeScaling, TensorShapes};
use crate::error::{Error, Result};
use crate::graph::RopeLayout;
use alloc::format;
use alloc::string::{String, ToString};
use serde_json::Value;

/// The message field for `config.json` field `key`.
fn field(key: &str) -> String {
    format!("config.json field '{key}'")
}

/// Typed access to a JSON object's fields. A field that is present (and not `null`) but of the
/// wrong type is an error naming it, never silently replaced by a default.
#[derive(Clone, Copy)]
struct Fields<'v> {
    obj: &'v Value,
    /// Prefix for names in messages (`rope_scaling.`), empty at the top level.
    prefix: &'v str,
}

impl<'v> Fields<'v> {
    fn name(&self, key: &str) -> String {
        field(&format!("{}{key}", self.prefix))
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn typed<T>(&self, key: &str, what: &str, read: fn(&Value) -> Option<T>) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v).map(Some).ok_or_else(|| {
                Error::invalid(self.name(key), format!("expected {what}, found {v}"))
            }),
        }
    }

    fn count(&self, key: &str) -> Result<Option<usize>> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    fn required_count(&self, key: &str) -> Result<usize> {
        self.count(key)?
            .ok_or_else(|| Error::missing(self.name(key)))
    }

    fn float(&self, key: &str) -> Result<Option<f32>> {
        self.typed(key, "a number", |v| v.as_f64().map(|x| x as f32))
    }

    fn required_float(&self, key: &str) -> Result<f32> {
        self.float(key)?
            .ok_or_else(|| Error::missing(self.name(key)))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "true or false", Value::as_bool)
    }

    fn str(&self, key: &str) -> Result<Option<&'v str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                Error::invalid(self.name(key), format!("expected a string, found {v}"))
            }),
        }
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (its text). `tensors` are the checkpoint's tensors under
    /// their GGUF names; they decide biases when the config is silent, and the config is checked
    /// against them ([`ModelConfig::check_tensors`]).
    pub fn from_hf_json(text: &str, tensors: &TensorShapes) -> Result<ModelConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("config.json", format!("not valid JSON: {e}")))?;
        let top = Fields {
            obj: &v,
            prefix: "",
        };
        let arch = hf_arch(&v)?;
        check_unsupported_features(top)?;
        let n_heads = top.required_count("num_attention_heads")?;
        let d_model = top.required_count("hidden_size")?;
        let head_dim_field = top.count("head_dim")?;
        let head_dim = match head_dim_field {
            Some(hd) => hd,
            None => implied_head_dim(d_model, n_heads)?,
        };
        let rope = read_rope(top)?;
        let tie = top.bool("tie_word_embeddings")?;
        let has_head = tensors.contains("output.weight");
        if tie == Some(false) && !has_head {
            return Err(Error::invalid(
                field("tie_word_embeddings"),
                "false, but the checkpoint has no output head 'lm_head.weight'",
            ));
        }
        let attention_bias = top.bool("attention_bias")?.unwrap_or(false);
        let cfg = ModelConfig {
            arch,
            n_layers: top.required_count("num_hidden_layers")?,
            d_model,
            n_heads,
            n_kv_heads: top.count("num_key_value_heads")?.unwrap_or(n_heads),
            head_dim,
            d_ff: top.required_count("intermediate_size")?,
            vocab: top.required_count("vocab_size")?,
            train_ctx: top.count("max_position_embeddings")?.unwrap_or(2048),
            norm_eps: top.float("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: rope.theta,
            rope_dim: head_dim,
            rope_layout: RopeLayout::Neox,
            rope_scaling: rope.scaling,
            // transformers' Llama/Qwen configs default to untied heads; a tied checkpoint may still
            // omit lm_head (and the key), which the loader treats as tied.
            tied_embeddings: tie.unwrap_or(false) || !has_head,
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                _ => attention_bias || tensors.contains("blk.0.attn_q.bias"),
            },
            o_bias: arch == Arch::Llama
                && (attention_bias || tensors.contains("blk.0.attn_output.bias")),
            qk_norm: arch == Arch::Qwen3,
            output_mix: false,
        };
        let head_dim_name = match head_dim_field {
            Some(_) => field("head_dim"),
            None => String::from("head size (config.json hidden_size / num_attention_heads)"),
        };
        let names = FieldNames {
            n_layers: field("num_hidden_layers"),
            d_model: field("hidden_size"),
            n_heads: field("num_attention_heads"),
            n_kv_heads: field("num_key_value_heads"),
            head_dim: head_dim_name.clone(),
            d_ff: field("intermediate_size"),
            vocab: field("vocab_size"),
            train_ctx: field("max_position_embeddings"),
            norm_eps: field("rms_norm_eps"),
            rope_theta: rope.theta_name,
            // RoPE covers the whole head (partial rotary is refused above).
            rope_dim: head_dim_name,
            rope_scaling: field(rope.scaling_name),
            tied_embeddings: field("tie_word_embeddings"),
        };
        cfg.check_values(&names)?;
        cfg.check_tensors(tensors, &names)?;
        Ok(cfg)
    }
}

/// The family, from `architectures[0]` or else `model_type`.
fn hf_arch(v: &Value) -> Result<Arch> {
    let arch_name = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .or_else(|| v.get("model_type").and_then(Value::as_str))
        .ok_or_else(|| Error::missing(field("architectures")))?;
    Ok(match arch_name {
        "LlamaForCausalLM" | "MistralForCausalLM" | "llama" | "mistral" => Arch::Llama,
        "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
        "Qwen3ForCausalLM" | "qwen3" => Arch::Qwen3,
        other => return Err(Error::UnsupportedArch(other.to_string())),
    })
}

/// Features the graph does not implement, refused rather than ignored.
fn check_unsupported_features(top: Fields<'_>) -> Result<()> {
    if top.bool("mlp_bias")? == Some(true) {
        return Err(Error::invalid(
            field("mlp_bias"),
            "MLP biases are not supported",
        ));
    }
    if let Some(act) = top.str("hidden_act")? {
        if act != "silu" {
            return Err(Error::invalid(
                field("hidden_act"),
                format!("'{act}' (only silu)"),
            ));
        }
    }
    if top.bool("use_sliding_window")? == Some(true) {
        return Err(Error::invalid(
            field("use_sliding_window"),
            "sliding-window attention is not supported",
        ));
    }
    if let Some(f) = top.float("partial_rotary_factor")? {
        if f != 1.0 {
            return Err(Error::invalid(
                field("partial_rotary_factor"),
                format!("{f} (only RoPE over the whole head is supported)"),
            ));
        }
    }
    Ok(())
}

/// `hidden_size / num_attention_heads`, the head size when `head_dim` is absent.
fn implied_head_dim(d_model: usize, n_heads: usize) -> Result<usize> {
    if n_heads == 0 {
        return Err(Error::invalid(field("num_attention_heads"), "is zero"));
    }
    if !d_model.is_multiple_of(n_heads) {
        return Err(Error::invalid(
            field("num_attention_heads"),
            format!(
                "hidden_size {d_model} is not a multiple of {n_heads} query heads, so the head \
                 size is undefined (no head_dim)"
            ),
        ));
    }
    Ok(d_model / n_heads)
}

/// RoPE base and scaling, with the field names they were read from.
struct Rope {
    theta: f32,
    theta_name: String,
    scaling: RopeScaling,
    scaling_name: &'static str,
}

/// transformers 5 writes `rope_parameters` (theta and scaling together) instead of `rope_theta` +
/// `rope_scaling`; older files have only the latter. A non-null `rope_scaling` wins.
fn read_rope(top: Fields<'_>) -> Result<Rope> {
    let params = top.get("rope_parameters").filter(|p| p.is_object());
    let (theta, theta_name) = match (top.float("rope_theta")?, params) {
        (Some(t), _) => (t, field("rope_theta")),
        (None, Some(p)) => {
            let nested = Fields {
                obj: p,
                prefix: "rope_parameters.",
            };
            (
                nested.float("rope_theta")?.unwrap_or(10000.0),
                field("rope_parameters.rope_theta"),
            )
        }
        (None, None) => (10000.0, field("rope_theta")),
    };
    let (src, scaling_name) = match top.get("rope_scaling") {
        Some(s) => (Some(s), "rope_scaling"),
        None => (params, "rope_parameters"),
    };
    let scaling = match src {
        None => RopeScaling::None,
        Some(obj) => {
            let prefix = if scaling_name == "rope_scaling" {
                "rope_scaling."
            } else {
                "rope_parameters."
            };
            read_scaling(Fields { obj, prefix })?
        }
    };
    Ok(Rope {
        theta,
        theta_name,
        scaling,
        scaling_name,
    })
}

/// One RoPE scaling object (`rope_type` or `type`, then its parameters).
fn read_scaling(rs: Fields<'_>) -> Result<RopeScaling> {
    let ty = match rs.str("rope_type")? {
        Some(t) => t,
        None => rs.str("type")?.unwrap_or("default"),
    };
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: rs.required_float("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: rs.required_float("factor")?,
            low_freq_factor: rs.required_float("low_freq_factor")?,
            high_freq_factor: rs.required_float("high_freq_factor")?,
            original_max_positions: rs.required_float("original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::invalid(
                rs.name("rope_type"),
                format!("'{other}' is not supported (default, linear, llama3)"),
            ))
        }
    })
}
