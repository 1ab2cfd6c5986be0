//! Rotating a model's residual stream before quantizing it (`vspec convert --rotate`).
//!
//! Activations of small Llama models have a few channels hundreds of times larger than the rest,
//! which makes the weights that read them hard to quantize at 2–3 bits. Multiplying the residual
//! stream by an orthogonal matrix `Q` spreads every channel over all of them; the network computes
//! the same function when each weight is rotated to match, and the rotated weights have no
//! outlier columns left to protect. (The idea is the one of QuaRot and QuIP#: incoherence through
//! orthogonal transforms; only the weight side is done here, offline, with no runtime cost.)
//!
//! With `x' = x·Q` for the residual stream (row vectors, weights stored `[out, in]`, `y = x·Wᵀ`):
//! - RMSNorm commutes with `Q` once its gain `g` is folded into the weights that read it:
//!   `rmsnorm(x')·(W·diag(g)·Q)ᵀ = (rmsnorm(x)⊙g)·Wᵀ`, so q, k, v, gate, up (and an untied head)
//!   become `W·diag(g)·Q` and every norm gain becomes ones;
//! - what writes to the stream (embedding rows, attention output, down projection, their biases)
//!   is multiplied by `Q` on its output side: `E·Q`, `Qᵀ·W`, `b·Q`;
//! - each value head is also turned by an orthogonal `R` (`head_dim` square): `v` rows by `Rᵀ`,
//!   the matching columns of the attention output by `R`; attention weights are untouched, so
//!   the heads' outputs come out turned by `R` and the output projection turns them back;
//! - a tied head cannot take the final norm's gain (the embedding table must stay `E·Q`), so the
//!   graph gets `output_mix.weight = Qᵀ·diag(g)·Q` between the final norm and the head.
//!
//! `Q` is `S·(H ⊗ C)`: a Sylvester–Hadamard matrix of the largest power of two dividing the width,
//! a DCT-II matrix of the odd rest, and fixed pseudo-random row signs `S`. Every entry of it has
//! magnitude at most `√(2/n)`, which is what spreads the outliers.

use crate::model::{ModelFile, OwnedTensor};
use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use vspec_core::format::Format;
use vspec_core::graph::Role;
use vspec_core::model::names::layer;
use vspec_core::quant;

/// The seed of the row signs: part of what a rotated file means, recorded with it.
const SIGN_SEED: u64 = 0x005e_ed0f_0a7e;

/// What `--rotate` did, for the file's metadata and the stats file's header.
pub const ROTATION_NAME: &str = "hadamard-dct-v1";

/// The rotation `model`'s weights are in: [`ROTATION_NAME`] when [`rotate`] made it, or what a
/// rotated `.vspec` file records.
pub fn rotation_of(model: &ModelFile) -> Option<String> {
    if !model.overrides.is_empty() {
        return Some(ROTATION_NAME.to_string());
    }
    model
        .vspec()
        .and_then(|v| v.metadata.get("rotation").cloned())
}

/// A square orthogonal matrix, row-major.
#[derive(Debug, Clone)]
pub struct Orthogonal {
    /// Side.
    pub n: usize,
    /// `n × n` entries, row-major.
    pub m: Vec<f64>,
}

impl Orthogonal {
    /// `S·(H ⊗ C)` for width `n` (see the module documentation).
    pub fn new(n: usize, seed: u64) -> Orthogonal {
        let pow2 = 1usize << n.trailing_zeros();
        let odd = n / pow2;
        let h = hadamard(pow2);
        let c = dct(odd);
        let mut state = seed;
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            let sign = if splitmix(&mut state) >> 63 == 0 {
                1.0
            } else {
                -1.0
            };
            let (hi, ci) = (i / odd, i % odd);
            for j in 0..n {
                let (hj, cj) = (j / odd, j % odd);
                m[i * n + j] = sign * h[hi * pow2 + hj] * c[ci * odd + cj];
            }
        }
        Orthogonal { n, m }
    }

    #[inline]
    fn at(&self, i: usize, j: usize) -> f64 {
        self.m[i * self.n + j]
    }
}

/// SplitMix64: a fixed, portable sign sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The orthonormal Sylvester–Hadamard matrix of side `n` (a power of two).
fn hadamard(n: usize) -> Vec<f64> {
    let scale = 1.0 / (n as f64).sqrt();
    (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if (i & j).count_ones() % 2 == 0 {
                scale
            } else {
                -scale
            }
        })
        .collect()
}

/// The orthonormal DCT-II matrix of side `n` (the identity for `n = 1`).
fn dct(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for k in 0..n {
        let scale = if k == 0 {
            (1.0 / n as f64).sqrt()
        } else {
            (2.0 / n as f64).sqrt()
        };
        for i in 0..n {
            let angle = std::f64::consts::PI * (i as f64 + 0.5) * k as f64 / n as f64;
            // Row i, column k: rows are samples, columns frequencies.
            m[i * n + k] = scale * angle.cos();
        }
    }
    m
}

/// A weight as f32 rows.
struct Dense {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
}

impl Dense {
    fn row(&self, r: usize) -> &[f32] {
        &self.w[r * self.cols..(r + 1) * self.cols]
    }
}

/// `W·diag(g)·Q` (`g` = None: ones), row by row.
fn rotate_inputs(w: &Dense, gain: Option<&[f32]>, q: &Orthogonal) -> Vec<f32> {
    let n = w.cols;
    let mut out = vec![0f32; w.rows * n];
    out.par_chunks_mut(n).enumerate().for_each(|(r, dst)| {
        let src = w.row(r);
        let mut acc = vec![0f64; n];
        for (i, &x) in src.iter().enumerate() {
            let x = x as f64 * gain.map_or(1.0, |g| g[i] as f64);
            if x != 0.0 {
                for (a, &qij) in acc.iter_mut().zip(&q.m[i * n..(i + 1) * n]) {
                    *a += x * qij;
                }
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    });
    out
}

/// `Qᵀ·W` (mixes rows; `W` has `Q.n` rows).
fn rotate_outputs(w: &Dense, q: &Orthogonal) -> Vec<f32> {
    let (n, cols) = (q.n, w.cols);
    let mut out = vec![0f32; n * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(j, dst)| {
        let mut acc = vec![0f64; cols];
        for i in 0..n {
            let qij = q.at(i, j);
            for (a, &x) in acc.iter_mut().zip(w.row(i)) {
                *a += qij * x as f64;
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    });
    out
}

/// `v·Q` for a row vector.
fn rotate_vector(v: &[f32], q: &Orthogonal) -> Vec<f32> {
    (0..q.n)
        .map(|j| {
            v.iter()
                .enumerate()
                .map(|(i, &x)| x as f64 * q.at(i, j))
                .sum::<f64>() as f32
        })
        .collect()
}

/// Each head's block of `R.n` rows replaced by `Rᵀ·block` (value projections).
fn rotate_head_rows(w: &Dense, r: &Orthogonal) -> Vec<f32> {
    let (n, cols) = (r.n, w.cols);
    let mut out = vec![0f32; w.w.len()];
    let mut acc = vec![0f64; cols];
    for (k, dst) in out.chunks_exact_mut(cols).enumerate() {
        let (head, j) = (k / n, k % n);
        acc.fill(0.0);
        for i in 0..n {
            let rij = r.at(i, j);
            for (a, &x) in acc.iter_mut().zip(w.row(head * n + i)) {
                *a += rij * x as f64;
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    }
    out
}

/// Each run of `R.n` columns multiplied by `R` (the output projection's input side).
fn rotate_head_cols(w: &mut [f32], cols: usize, r: &Orthogonal) {
    let n = r.n;
    let mut tmp = vec![0f64; n];
    for row in w.chunks_exact_mut(cols) {
        for block in row.chunks_exact_mut(n) {
            for (j, t) in tmp.iter_mut().enumerate() {
                *t = (0..n).map(|i| block[i] as f64 * r.at(i, j)).sum();
            }
            for (b, t) in block.iter_mut().zip(&tmp) {
                *b = *t as f32;
            }
        }
    }
}

fn owned(rows: usize, cols: usize, w: Vec<f32>) -> OwnedTensor {
    let dims = if rows == 1 {
        vec![cols as u64]
    } else {
        vec![cols as u64, rows as u64]
    };
    OwnedTensor {
        format: Format::F32,
        dims,
        data: bytemuck::cast_slice(&w).to_vec(),
    }
}

/// `model` with its residual stream rotated: every weight becomes an f32 tensor held in memory
/// (4 bytes per weight), the config gains an output mix when the head is tied.
pub fn rotate(model: ModelFile) -> Result<ModelFile> {
    let src = model.path.display().to_string();
    if model.config.output_mix || rotation_of(&model).is_some() {
        bail!("{src}: the model is already rotated");
    }
    let cfg = model.config.clone();
    let (d, hd) = (cfg.d_model, cfg.head_dim);
    let mut dense: HashMap<String, Dense> = HashMap::new();
    {
        let (graph, views) = model.bind_weights()?;
        for (id, t) in graph.tensors.iter().enumerate() {
            if t.role != Role::Weight {
                continue;
            }
            let v = views[id].ok_or_else(|| anyhow!("{src}: tensor '{}' is not bound", t.name))?;
            let mut w = vec![0f32; v.rows * v.cols];
            for (r, dst) in w.chunks_exact_mut(v.cols).enumerate() {
                quant::dequantize_row(v.format, v.row(r), dst)
                    .map_err(|e| anyhow!("{src}: tensor '{}' row {r}: {e}", t.name))?;
            }
            dense.insert(
                t.name.clone(),
                Dense {
                    rows: v.rows,
                    cols: v.cols,
                    w,
                },
            );
        }
    }
    let q = Orthogonal::new(d, SIGN_SEED);
    let r = Orthogonal::new(hd, SIGN_SEED ^ 1);
    let take = |dense: &mut HashMap<String, Dense>, name: &str| {
        dense
            .remove(name)
            .ok_or_else(|| anyhow!("{src}: tensor '{name}' is missing"))
    };
    let mut out: HashMap<String, OwnedTensor> = HashMap::new();
    let ones = vec![1f32; d];
    let embd = take(&mut dense, "token_embd.weight")?;
    let out_gain = take(&mut dense, "output_norm.weight")?.w;
    if cfg.tied_embeddings {
        // output_mix = Qᵀ·diag(g)·Q, symmetric.
        let mut mix = vec![0f32; d * d];
        mix.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            for (j, m) in row.iter_mut().enumerate() {
                *m = (0..d)
                    .map(|k| q.at(k, i) * out_gain[k] as f64 * q.at(k, j))
                    .sum::<f64>() as f32;
            }
        });
        out.insert("output_mix.weight".into(), owned(d, d, mix));
    } else {
        let head = take(&mut dense, "output.weight")?;
        let w = rotate_inputs(&head, Some(&out_gain), &q);
        out.insert("output.weight".into(), owned(head.rows, d, w));
    }
    out.insert(
        "token_embd.weight".into(),
        owned(embd.rows, d, rotate_inputs(&embd, None, &q)),
    );
    drop(embd);
    out.insert("output_norm.weight".into(), owned(1, d, ones.clone()));
    for l in 0..cfg.n_layers {
        let name = |s: &str| layer(l, s);
        let g_attn = take(&mut dense, &name("attn_norm.weight"))?.w;
        let g_ffn = take(&mut dense, &name("ffn_norm.weight"))?.w;
        for (w, gain) in [
            ("attn_q", &g_attn),
            ("attn_k", &g_attn),
            ("attn_v", &g_attn),
            ("ffn_gate", &g_ffn),
            ("ffn_up", &g_ffn),
        ] {
            let key = name(&format!("{w}.weight"));
            let t = take(&mut dense, &key)?;
            let mut rotated = Dense {
                rows: t.rows,
                cols: d,
                w: rotate_inputs(&t, Some(gain), &q),
            };
            if w == "attn_v" {
                rotated.w = rotate_head_rows(&rotated, &r);
            }
            out.insert(key, owned(t.rows, d, rotated.w));
        }
        if cfg.qkv_bias {
            let key = name("attn_v.bias");
            let b = take(&mut dense, &key)?.w;
            let turned: Vec<f32> = b
                .chunks_exact(hd)
                .flat_map(|h| rotate_vector(h, &r))
                .collect();
            out.insert(key, owned(1, b.len(), turned));
        }
        let mut wo = take(&mut dense, &name("attn_output.weight"))?;
        rotate_head_cols(&mut wo.w, wo.cols, &r);
        out.insert(
            name("attn_output.weight"),
            owned(d, wo.cols, rotate_outputs(&wo, &q)),
        );
        if cfg.o_bias {
            let key = name("attn_output.bias");
            let b = take(&mut dense, &key)?.w;
            out.insert(key, owned(1, d, rotate_vector(&b, &q)));
        }
        let down = take(&mut dense, &name("ffn_down.weight"))?;
        out.insert(
            name("ffn_down.weight"),
            owned(d, down.cols, rotate_outputs(&down, &q)),
        );
        out.insert(name("attn_norm.weight"), owned(1, d, ones.clone()));
        out.insert(name("ffn_norm.weight"), owned(1, d, ones.clone()));
    }
    // What is left (q/k biases, Qwen3's per-head q/k norms) reads or writes nothing rotated.
    for (key, t) in dense {
        out.insert(key, owned(t.rows, t.cols, t.w));
    }
    let mut model = model;
    model.config.output_mix = cfg.tied_embeddings;
    model.overrides = out;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_orthogonal(q: &Orthogonal) {
        let n = q.n;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| q.at(k, i) * q.at(k, j)).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "n={n} ({i},{j}): {dot}");
            }
        }
    }

    #[test]
    fn rotations_are_orthogonal_and_spread() {
        for n in [1, 2, 3, 8, 12, 64, 96, 576] {
            let q = Orthogonal::new(n, SIGN_SEED);
            assert_orthogonal(&q);
            let bound = (2.0 / n as f64).sqrt().min(1.0) + 1e-12;
            assert!(q.m.iter().all(|x| x.abs() <= bound), "n={n}");
        }
    }
}
