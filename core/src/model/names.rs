//! Tensor names. The graph uses GGUF's names; Hugging Face checkpoints are mapped onto them.

use alloc::format;
use alloc::string::String;

/// The GGUF name for a Hugging Face Llama/Qwen tensor name, or `None` for tensors the graph does
/// not use (for example `rotary_emb.inv_freq` in old checkpoints).
pub fn hf_to_gguf(name: &str) -> Option<String> {
    let fixed = match name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let gguf = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{gguf}.{suffix}"))
}

/// Name of a per-layer tensor: `blk.{layer}.{what}`.
pub fn layer(layer: usize, what: &str) -> String {
    format!("blk.{layer}.{what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hf_names() {
        assert_eq!(
            hf_to_gguf("model.layers.3.self_attn.q_proj.bias").unwrap(),
            "blk.3.attn_q.bias"
        );
        assert_eq!(
            hf_to_gguf("model.layers.0.mlp.down_proj.weight").unwrap(),
            "blk.0.ffn_down.weight"
        );
        assert_eq!(hf_to_gguf("lm_head.weight").unwrap(), "output.weight");
        assert_eq!(
            hf_to_gguf("model.layers.0.self_attn.rotary_emb.inv_freq"),
            None
        );
        assert_eq!(hf_to_gguf("model.layers.x.mlp.up_proj.weight"), None);
    }
}
