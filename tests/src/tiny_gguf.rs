//! Tiny random Llama models written as GGUF by the core's own writer: no tokenizer, weights from
//! a seeded generator, matrices in a chosen format. Used where a test needs a model whose shape it
//! chooses (the load-heap bound over many shapes, the no_std example's embedded model).

use vspec_core::gguf::{GgufWriter, MetaValue};
use vspec_core::Format;

/// The shape and storage of a tiny random Llama.
#[derive(Clone, Copy, Debug)]
pub struct TinyLlama {
    /// Hidden size (a multiple of 32 when `matrix_format` is a 32-weight block format).
    pub d_model: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads (`d_model / n_heads` is the head size).
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Vocabulary (embedding rows).
    pub vocab: usize,
    /// `llama.context_length`.
    pub train_ctx: usize,
    /// Output head tied to the embedding (no `output.weight`).
    pub tied: bool,
    /// Format of every 2-D tensor; vectors stay F32.
    pub matrix_format: Format,
    /// Seed of the weights.
    pub seed: u64,
    /// Adds `tokenizer.ggml.tokens` (one made-up string per token): header metadata that the
    /// graph does not see, for the heap bound's header part.
    pub token_list: bool,
}

impl TinyLlama {
    /// The default tiny model: 2 layers of width 64, GQA 4:2, Q8_0 matrices, 256 tokens.
    pub fn small() -> TinyLlama {
        TinyLlama {
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            d_ff: 96,
            vocab: 256,
            train_ctx: 256,
            tied: false,
            matrix_format: Format::Q8_0,
            seed: 1,
            token_list: false,
        }
    }

    /// The GGUF file's bytes.
    pub fn gguf(&self) -> Vec<u8> {
        let d = self.d_model as u64;
        let head_dim = self.d_model / self.n_heads;
        let kv = (self.n_kv_heads * head_dim) as u64;
        let ff = self.d_ff as u64;
        let mut shapes: Vec<(String, Vec<u64>)> =
            vec![("token_embd.weight".into(), vec![d, self.vocab as u64])];
        for l in 0..self.n_layers {
            let b = |s: &str| format!("blk.{l}.{s}");
            shapes.extend([
                (b("attn_norm.weight"), vec![d]),
                (b("attn_q.weight"), vec![d, d]),
                (b("attn_k.weight"), vec![d, kv]),
                (b("attn_v.weight"), vec![d, kv]),
                (b("attn_output.weight"), vec![d, d]),
                (b("ffn_norm.weight"), vec![d]),
                (b("ffn_gate.weight"), vec![d, ff]),
                (b("ffn_up.weight"), vec![d, ff]),
                (b("ffn_down.weight"), vec![ff, d]),
            ]);
        }
        shapes.push(("output_norm.weight".into(), vec![d]));
        if !self.tied {
            shapes.push(("output.weight".into(), vec![d, self.vocab as u64]));
        }
        let mut rng = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let stored: Vec<(Format, Vec<u8>)> = shapes
            .iter()
            .map(|(name, dims)| {
                let n: u64 = dims.iter().product();
                // Norm weights near 1, matrices small and centred: activations stay in range
                // through the layers, so greedy choices are not near-ties.
                let is_norm = dims.len() == 1;
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let u = uniform(&mut rng);
                        if is_norm {
                            1.0 + 0.2 * u
                        } else {
                            0.5 * u
                        }
                    })
                    .collect();
                if is_norm || self.matrix_format == Format::F32 {
                    let bytes = x.iter().flat_map(|v| v.to_le_bytes()).collect();
                    return (Format::F32, bytes);
                }
                let cols = dims[0] as usize;
                let row_bytes = self.matrix_format.row_bytes(cols, name).unwrap();
                let mut q = vec![0u8; row_bytes * (n as usize / cols)];
                for (row, out) in x.chunks_exact(cols).zip(q.chunks_exact_mut(row_bytes)) {
                    vspec_core::quant::quantize_row(self.matrix_format, row, None, out).unwrap();
                }
                (self.matrix_format, q)
            })
            .collect();
        let u32v = |v: usize| MetaValue::U32(v as u32);
        let mut w = GgufWriter::new();
        w.add_meta("general.architecture", MetaValue::Str("llama".into()));
        w.add_meta("general.name", MetaValue::Str("tiny-random-llama".into()));
        w.add_meta("llama.block_count", u32v(self.n_layers));
        w.add_meta("llama.context_length", u32v(self.train_ctx));
        w.add_meta("llama.embedding_length", u32v(self.d_model));
        w.add_meta("llama.feed_forward_length", u32v(self.d_ff));
        w.add_meta("llama.attention.head_count", u32v(self.n_heads));
        w.add_meta("llama.attention.head_count_kv", u32v(self.n_kv_heads));
        w.add_meta(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        );
        w.add_meta("llama.rope.freq_base", MetaValue::F32(10000.0));
        if self.token_list {
            let tokens = (0..self.vocab)
                .map(|i| MetaValue::Str(format!("tok{i}")))
                .collect();
            w.add_meta("tokenizer.ggml.tokens", MetaValue::Array(tokens));
        }
        for ((name, dims), (format, data)) in shapes.iter().zip(&stored) {
            w.add_tensor(name.clone(), dims, *format, data).unwrap();
        }
        w.finish().unwrap()
    }
}

/// Uniform in [-1, 1) from a xorshift64 state.
fn uniform(s: &mut u64) -> f32 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    ((*s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}
