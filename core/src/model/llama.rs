//! Graph builder for the Llama family (Llama, SmolLM2, Qwen2, Qwen3).
//!
//! Per layer (x is the residual stream, `[tokens, d_model]`):
//! ```text
//! h = rmsnorm(x) ; q,k,v = h·Wq,k,v (+bias) ; [qwen3: per-head rmsnorm q,k] ; rope(q,k)
//! x += attention(q,k,v)·Wo ; h = rmsnorm(x) ; x += (silu(h·Wgate) * h·Wup)·Wdown
//! ```
//! then `logits = rmsnorm(x)·Wout` (Wout = the embedding table when tied), with `rmsnorm(x)·Wmix`
//! in its place when the config has an output mix (rotated tied models, see `ModelConfig`).

use super::config::ModelConfig;
use super::names::layer;
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, Limits, OpKind, Rows};
use crate::kernels::attention::partials_len;
use crate::kv::KvType;

/// Builds the inference graph of `cfg` for `limits` with an f32 KV cache (the exact reference).
pub fn build_graph(cfg: &ModelConfig, limits: Limits) -> Result<Graph> {
    build_graph_kv(cfg, limits, KvType::F32)
}

/// Builds the inference graph of `cfg` for `limits` with a KV cache of `kv_type`.
pub fn build_graph_kv(cfg: &ModelConfig, limits: Limits, kv_type: KvType) -> Result<Graph> {
    cfg.validate()?;
    kv_type.check_head_dim(cfg.head_dim)?;
    if limits.max_ctx == 0 || limits.max_tokens == 0 {
        return Err(Error::invalid(
            "limits",
            "max_ctx and max_tokens must be positive",
        ));
    }
    if limits.max_tokens > limits.max_ctx {
        return Err(Error::invalid("limits", "max_tokens exceeds max_ctx"));
    }
    // Each head's chunk states for a one-token step split by positions (kernels/attention.rs).
    let partials = partials_len(cfg.n_heads, cfg.head_dim, limits.max_ctx)
        .ok_or_else(|| Error::invalid("limits", "attention scratch size overflows"))?;
    let d = cfg.d_model;
    let q_width = cfg.n_heads * cfg.head_dim;
    let kv_width = cfg.n_kv_heads * cfg.head_dim;
    let inv_freq = cfg.rope_inv_freq();
    let mut g = GraphBuilder::new();
    let t = Rows::Tokens;

    let embd = g.weight("token_embd.weight", cfg.vocab, d);
    let mut x = g.op(OpKind::Embed, &[embd], "inp_embd", t, d);
    for l in 0..cfg.n_layers {
        let name = |s: &str| layer(l, s);
        let w_norm = g.weight(name("attn_norm.weight"), 1, d);
        let h = g.op(
            OpKind::RmsNorm { eps: cfg.norm_eps },
            &[x, w_norm],
            name("attn_in"),
            t,
            d,
        );
        let proj = |g: &mut GraphBuilder, what: &str, rows: usize, bias: bool| {
            let w = g.weight(name(&alloc::format!("{what}.weight")), rows, d);
            let mut ins = alloc::vec![h, w];
            if bias {
                ins.push(g.weight(name(&alloc::format!("{what}.bias")), 1, rows));
            }
            g.op(OpKind::MatMul, &ins, name(what), t, rows)
        };
        let mut q = proj(&mut g, "attn_q", q_width, cfg.qkv_bias);
        let mut k = proj(&mut g, "attn_k", kv_width, cfg.qkv_bias);
        let v = proj(&mut g, "attn_v", kv_width, cfg.qkv_bias);
        if cfg.qk_norm {
            let hd = cfg.head_dim;
            let wq = g.weight(name("attn_q_norm.weight"), 1, hd);
            let wk = g.weight(name("attn_k_norm.weight"), 1, hd);
            let kind = OpKind::HeadRmsNorm {
                eps: cfg.norm_eps,
                head_dim: hd,
            };
            q = g.op(kind.clone(), &[q, wq], name("q_normed"), t, q_width);
            k = g.op(kind, &[k, wk], name("k_normed"), t, kv_width);
        }
        let rope = OpKind::Rope {
            head_dim: cfg.head_dim,
            layout: cfg.rope_layout,
            inv_freq: inv_freq.clone(),
        };
        q = g.op(rope.clone(), &[q], name("q_rope"), t, q_width);
        k = g.op(rope, &[k], name("k_rope"), t, kv_width);
        let attn = OpKind::Attention {
            layer: l,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / libm::sqrtf(cfg.head_dim as f32),
        };
        let a = g.op(attn, &[q, k, v], name("attn"), t, q_width);
        g.scratch_for_last_op(name("attn_partials"), partials);
        let w_o = g.weight(name("attn_output.weight"), d, q_width);
        let mut o_ins = alloc::vec![a, w_o];
        if cfg.o_bias {
            o_ins.push(g.weight(name("attn_output.bias"), 1, d));
        }
        let o = g.op(OpKind::MatMul, &o_ins, name("attn_out"), t, d);
        x = g.op(OpKind::Add, &[x, o], name("attn_resid"), t, d);

        let w_fnorm = g.weight(name("ffn_norm.weight"), 1, d);
        let h2 = g.op(
            OpKind::RmsNorm { eps: cfg.norm_eps },
            &[x, w_fnorm],
            name("ffn_in"),
            t,
            d,
        );
        let w_gate = g.weight(name("ffn_gate.weight"), cfg.d_ff, d);
        let w_up = g.weight(name("ffn_up.weight"), cfg.d_ff, d);
        let w_down = g.weight(name("ffn_down.weight"), d, cfg.d_ff);
        let gate = g.op(OpKind::MatMul, &[h2, w_gate], name("ffn_gate"), t, cfg.d_ff);
        let up = g.op(OpKind::MatMul, &[h2, w_up], name("ffn_up"), t, cfg.d_ff);
        let act = g.op(OpKind::SwiGlu, &[gate, up], name("ffn_act"), t, cfg.d_ff);
        let down = g.op(OpKind::MatMul, &[act, w_down], name("ffn_down"), t, d);
        x = g.op(OpKind::Add, &[x, down], name("ffn_resid"), t, d);
    }
    let rows = if limits.all_logits {
        Rows::Tokens
    } else {
        x = g.op(OpKind::LastRow, &[x], "last_row", Rows::One, d);
        Rows::One
    };
    let w_out_norm = g.weight("output_norm.weight", 1, d);
    let mut xn = g.op(
        OpKind::RmsNorm { eps: cfg.norm_eps },
        &[x, w_out_norm],
        "result_norm",
        rows,
        d,
    );
    if cfg.output_mix {
        let w_mix = g.weight("output_mix.weight", d, d);
        xn = g.op(OpKind::MatMul, &[xn, w_mix], "result_mix", rows, d);
    }
    let w_out = if cfg.tied_embeddings {
        embd
    } else {
        g.weight("output.weight", cfg.vocab, d)
    };
    let logits = g.op(OpKind::MatMul, &[xn, w_out], "logits", rows, cfg.vocab);
    let mut graph = g.finish(logits, cfg.n_layers, kv_width, limits);
    graph.kv_type = kv_type;
    Ok(graph)
}
