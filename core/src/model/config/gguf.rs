//! [`ModelConfig::from_gguf`]: the config from GGUF metadata (`{arch}.block_count`, ...), checked
//! against the file's tensors and tokenizer, every message naming the metadata key.

use super::{Arch, FieldNames, ModelConfig, RopeScaling, TensorShapes};
use crate::error::{Error, Result};
use crate::gguf::{Gguf, MetaValue};
use crate::graph::RopeLayout;
use alloc::format;
use alloc::string::{String, ToString};

/// The message field for metadata key `key`, as the GGUF getters name it.
fn meta_key(key: &str) -> String {
    format!("metadata key '{key}'")
}

fn usize_of(v: u32) -> usize {
    v as usize
}

impl ModelConfig {
    /// Reads the config from GGUF metadata and the tensor list (which decides tied heads and
    /// biases), then checks it: value ranges, agreement with the tensors present, and a token list
    /// (`tokenizer.ggml.tokens`, when present) of exactly as many tokens as the embedding has rows,
    /// which is llama.cpp's rule too.
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
        let head_dim_key = g.get_u32_opt(&key("attention.key_length"))?;
        let head_dim = match head_dim_key {
            Some(v) => usize_of(v),
            None => implied_head_dim(d_model, n_heads, &key)?,
        };
        if let Some(v) = g.get_u32_opt(&key("attention.value_length"))? {
            if usize_of(v) != head_dim {
                return Err(Error::invalid(
                    meta_key(&key("attention.value_length")),
                    format!(
                        "{v} differs from the key head size {head_dim}; only equal sizes are \
                         supported"
                    ),
                ));
            }
        }
        let vocab_key = g.get_u32_opt(&key("vocab_size"))?;
        let vocab = match vocab_key {
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
        let names = gguf_field_names(&key, head_dim_key.is_some(), vocab_key.is_some());
        cfg.check_values(&names)?;
        let shapes: TensorShapes = g
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dims.clone()))
            .collect();
        cfg.check_tensors(&shapes, &names)?;
        check_token_count(g, cfg.vocab)?;
        Ok(cfg)
    }
}

/// `embedding_length / head_count`, the head size when `attention.key_length` is absent; an error
/// naming the keys when it is not a whole number.
fn implied_head_dim(d_model: usize, n_heads: usize, key: &dyn Fn(&str) -> String) -> Result<usize> {
    if n_heads == 0 {
        return Err(Error::invalid(key("attention.head_count"), "is zero"));
    }
    if !d_model.is_multiple_of(n_heads) {
        return Err(Error::invalid(
            meta_key(&key("attention.head_count")),
            format!(
                "{} {d_model} is not a multiple of {n_heads} query heads, so the head size is \
                 undefined (no {})",
                key("embedding_length"),
                key("attention.key_length")
            ),
        ));
    }
    Ok(d_model / n_heads)
}

/// The GGUF keys of the config's fields. A head size or vocabulary the file does not state is
/// named by what it was derived from.
fn gguf_field_names(
    key: &dyn Fn(&str) -> String,
    has_head_dim_key: bool,
    has_vocab_key: bool,
) -> FieldNames {
    let k = |name: &str| meta_key(&key(name));
    FieldNames {
        n_layers: k("block_count"),
        d_model: k("embedding_length"),
        n_heads: k("attention.head_count"),
        n_kv_heads: k("attention.head_count_kv"),
        head_dim: if has_head_dim_key {
            k("attention.key_length")
        } else {
            format!(
                "head size ({} / {})",
                key("embedding_length"),
                key("attention.head_count")
            )
        },
        d_ff: k("feed_forward_length"),
        vocab: if has_vocab_key {
            k("vocab_size")
        } else {
            String::from("vocabulary (rows of tensor 'token_embd.weight')")
        },
        train_ctx: k("context_length"),
        norm_eps: k("attention.layer_norm_rms_epsilon"),
        rope_theta: k("rope.freq_base"),
        rope_dim: k("rope.dimension_count"),
        rope_scaling: k("rope.scaling"),
        // GGUF has no key for it: a missing `output.weight` is what makes a head tied.
        tied_embeddings: String::from("tensor 'output.weight'"),
    }
}

/// The token list, when the file has one, holds one token per embedding row.
fn check_token_count(g: &Gguf, vocab: usize) -> Result<()> {
    const TOKENS: &str = "tokenizer.ggml.tokens";
    let Some(MetaValue::Array(tokens)) = g.get(TOKENS) else {
        // Absent or malformed: the tokenizer loader names the problem when it is needed.
        return Ok(());
    };
    if tokens.len() != vocab {
        return Err(Error::invalid(
            meta_key(TOKENS),
            format!(
                "{} tokens, but the model's vocabulary (rows of 'token_embd.weight') is {vocab}",
                tokens.len()
            ),
        ));
    }
    Ok(())
}
