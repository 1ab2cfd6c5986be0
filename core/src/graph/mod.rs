//! The graph IR: tensors with shapes, formats and roles, and ops in topological order.
//!
//! Activations are 2-D `[rows, cols]` row-major f32, where `rows` is either the number of tokens
//! of the current step (bounded by [`Limits::max_tokens`]) or one. Weights are `[rows, cols]` in a
//! [`Format`]; a matmul computes `y[t, r] = sum_c x[t, c] * w[r, c]`, as GGUF and Hugging Face store
//! linear layers (`dims = [cols, rows]` in GGUF order).

use crate::format::Format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Index of a tensor in [`Graph::tensors`].
pub type TensorId = usize;

/// What a session must support; the plan is sized for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum positions held in the KV cache (prompt + generated).
    pub max_ctx: usize,
    /// Maximum tokens in one `forward` call (prefill chunk size).
    pub max_tokens: usize,
    /// Whether logits are produced for every token of a step (perplexity) or only the last
    /// (generation). Sizes the logits buffer: `max_tokens × vocab` or `1 × vocab`.
    pub all_logits: bool,
}

impl Limits {
    /// Checks that a step of `tokens` tokens at position `pos` fits: not empty, at most
    /// `max_tokens`, and ending within `max_ctx`. Every executor runs this before a step.
    pub fn check_step(&self, pos: usize, tokens: usize) -> crate::Result<()> {
        if tokens == 0 {
            return Err(crate::Error::invalid("tokens", "empty step"));
        }
        if tokens > self.max_tokens {
            return Err(crate::Error::LimitExceeded {
                what: "tokens per step",
                limit: self.max_tokens,
                requested: tokens,
            });
        }
        if pos + tokens > self.max_ctx {
            return Err(crate::Error::LimitExceeded {
                what: "context length",
                limit: self.max_ctx,
                requested: pos + tokens,
            });
        }
        Ok(())
    }
}

/// How many rows an activation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rows {
    /// One row per token of the current step.
    Tokens,
    /// A single row (the last token, for generation).
    One,
}

/// What a tensor is for; decides where its bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Read-only model weight, bound from the model file.
    Weight,
    /// Intermediate value in the planned arena.
    Activation,
    /// Graph output (logits), in the arena and live until the step ends.
    Output,
}

/// One tensor of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Name; weights use GGUF's canonical names (`blk.0.attn_q.weight`).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Rows of an activation (weights: ignored, see `weight_rows`).
    pub rows: Rows,
    /// Row length.
    pub cols: usize,
    /// Rows of a weight (output features); 1 for vectors such as norms and biases.
    pub weight_rows: usize,
    /// Storage format of a weight; activations are f32. Filled when weights are bound.
    pub format: Option<Format>,
}

impl Tensor {
    /// Number of f32 elements of an activation at `tokens` tokens.
    pub fn activation_len(&self, tokens: usize) -> usize {
        match self.rows {
            Rows::Tokens => tokens * self.cols,
            Rows::One => self.cols,
        }
    }
}

/// Rotary embedding pair layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeLayout {
    /// Pairs are adjacent elements `(2i, 2i+1)` (GGUF Llama, whose q/k rows were permuted).
    Interleaved,
    /// Pairs are `(i, i + head_dim/2)` ("rotate_half": Hugging Face, GGUF Qwen2/Qwen3).
    Neox,
}

/// An operation. Inputs and outputs are tensor ids; see each variant for their order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpKind {
    /// `[table] -> [x]`: rows of the embedding table for the step's token ids.
    Embed,
    /// `[x, weight] -> [y]`: y = x / sqrt(mean(x²) + eps) * weight, per row.
    RmsNorm {
        /// Epsilon inside the square root.
        eps: f32,
    },
    /// `[x, weight] -> [y]`, or `[x, weight, bias] -> [y]`: y = x·Wᵀ (+ bias).
    MatMul,
    /// `[x, weight] -> [y]`: RMSNorm over each head's `head_dim` slice (Qwen3 q/k norm).
    HeadRmsNorm {
        /// Epsilon.
        eps: f32,
        /// Elements per head.
        head_dim: usize,
    },
    /// `[x] -> [y]`: rotary position embedding of each head at the token's absolute position.
    Rope {
        /// Elements per head.
        head_dim: usize,
        /// Pair layout.
        layout: RopeLayout,
        /// Inverse frequencies, `head_dim / 2` values, scaling already applied.
        inv_freq: Vec<f32>,
    },
    /// `[q, k, v] -> [y, partials]`: appends k, v to the layer's KV cache at the step's positions, then
    /// causal softmax attention of every query head over all cached positions up to its own.
    /// `partials` is planned scratch for a one-token step split across threads by positions:
    /// each head's softmax state per chunk of [`crate::kernels::attention::ATTN_CHUNK`] cached
    /// positions (`n_heads × chunk_slots(max_ctx) × (head_dim + 2)` f32). The cache's element
    /// type is [`Graph::kv_type`].
    Attention {
        /// Layer index (selects the KV cache slot).
        layer: usize,
        /// Query heads.
        n_heads: usize,
        /// Key/value heads (GQA when fewer than `n_heads`).
        n_kv_heads: usize,
        /// Elements per head.
        head_dim: usize,
        /// Score scale, usually `1/sqrt(head_dim)`.
        scale: f32,
    },
    /// `[gate, up] -> [y]`: y = silu(gate) * up.
    SwiGlu,
    /// `[a, b] -> [y]`: y = a + b.
    Add,
    /// `[x] -> [y]`: the last row of x (generation needs logits of the last token only).
    LastRow,
}

/// One op with its operands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// Input tensor ids.
    pub inputs: Vec<TensorId>,
    /// Output tensor ids: the result first, then any planned scratch the op needs.
    pub outputs: Vec<TensorId>,
}

/// The model as a list of tensors and ops in topological order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// All tensors.
    pub tensors: Vec<Tensor>,
    /// Ops in execution order.
    pub ops: Vec<Op>,
    /// The logits tensor.
    pub output: TensorId,
    /// KV cache geometry: layers, and elements per position per K or V (`n_kv_heads * head_dim`).
    pub kv_layers: usize,
    /// Elements per position in one layer's K (and V) cache.
    pub kv_width: usize,
    /// Element type of the KV cache.
    #[serde(default = "exact_kv")]
    pub kv_type: crate::kv::KvType,
    /// The limits the graph was built for.
    pub limits: Limits,
}

impl Graph {
    /// Checks what the planner and executor rely on: every operand id names a tensor, outputs
    /// are activations produced once, and no op has more operands than the executor borrows
    /// (3 activation inputs, 2 weights, 2 outputs). Graphs from our builders always pass; this
    /// keeps a hand-made or deserialized graph from causing a panic.
    pub fn validate(&self) -> crate::Result<()> {
        let n = self.tensors.len();
        let bad = |i: usize, why: &str| {
            Err(crate::Error::invalid(
                "graph",
                alloc::format!("op {i}: {why}"),
            ))
        };
        let mut produced = alloc::vec![false; n];
        if self.output >= n {
            return Err(crate::Error::invalid(
                "graph",
                "output tensor id out of range",
            ));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.inputs.iter().chain(&op.outputs).any(|&t| t >= n) {
                return bad(i, "operand id out of range");
            }
            let weights = op
                .inputs
                .iter()
                .filter(|&&t| self.tensors[t].role == Role::Weight)
                .count();
            if weights > 2 || op.inputs.len() - weights > 3 {
                return bad(i, "too many inputs");
            }
            if op.outputs.is_empty() || op.outputs.len() > 2 {
                return bad(i, "needs one or two outputs");
            }
            for &o in &op.outputs {
                if self.tensors[o].role == Role::Weight || produced[o] {
                    return bad(i, "writes a weight or a tensor another op wrote");
                }
                produced[o] = true;
            }
            for &t in &op.inputs {
                if self.tensors[t].role != Role::Weight && !produced[t] {
                    return bad(i, "reads an activation no earlier op wrote");
                }
            }
        }
        Ok(())
    }

    /// Ids of weight tensors, in order.
    pub fn weight_ids(&self) -> impl Iterator<Item = TensorId> + '_ {
        (0..self.tensors.len()).filter(|&i| self.tensors[i].role == Role::Weight)
    }
}

/// Incremental construction of a [`Graph`].
#[derive(Debug, Default)]
pub struct GraphBuilder {
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
}

impl GraphBuilder {
    /// A new empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a weight `[rows, cols]` named `name`.
    pub fn weight(&mut self, name: impl Into<String>, rows: usize, cols: usize) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            role: Role::Weight,
            rows: Rows::One,
            cols,
            weight_rows: rows,
            format: None,
        });
        self.tensors.len() - 1
    }

    /// Adds an op producing a new activation `[rows, cols]` named `name`.
    pub fn op(
        &mut self,
        kind: OpKind,
        inputs: &[TensorId],
        name: impl Into<String>,
        rows: Rows,
        cols: usize,
    ) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            role: Role::Activation,
            rows,
            cols,
            weight_rows: 0,
            format: None,
        });
        let out = self.tensors.len() - 1;
        self.ops.push(Op {
            kind,
            inputs: inputs.to_vec(),
            outputs: alloc::vec![out],
        });
        out
    }

    /// Adds a scratch tensor of `cols` f32 (one row) as a second output of the last op, so the
    /// planner places it like any activation instead of the kernel allocating.
    pub fn scratch_for_last_op(&mut self, name: impl Into<String>, cols: usize) -> TensorId {
        self.tensors.push(Tensor {
            name: name.into(),
            role: Role::Activation,
            rows: Rows::One,
            cols,
            weight_rows: 0,
            format: None,
        });
        let id = self.tensors.len() - 1;
        if let Some(op) = self.ops.last_mut() {
            op.outputs.push(id);
        }
        id
    }

    /// Finishes the graph with `output` as its logits tensor.
    pub fn finish(
        mut self,
        output: TensorId,
        kv_layers: usize,
        kv_width: usize,
        limits: Limits,
    ) -> Graph {
        self.tensors[output].role = Role::Output;
        Graph {
            tensors: self.tensors,
            ops: self.ops,
            output,
            kv_layers,
            kv_width,
            kv_type: crate::kv::KvType::F32,
            limits,
        }
    }
}

/// The KV type of a serialized graph that names none: f32, what every graph had before.
fn exact_kv() -> crate::kv::KvType {
    crate::kv::KvType::F32
}
