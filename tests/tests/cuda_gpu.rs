//! The CUDA backend against the CPU path, on a GPU. Without a usable device every test prints
//! `SKIPPED: no CUDA device (<reason>)`; `VSPEC_REQUIRE_CUDA=1` (set by `cuda-shell/check.sh`)
//! makes that a failure.
//!
//! 1. Every device decoder equals its scalar decoder bit for bit (f32 bits) on quantized
//!    random rows, for every format with device kernels.
//! 2. Every format's one-token GEMV, with one, two and four warps per row, within 1e-5 of an
//!    f64 dot over the scalar decoder's weights (and, on 8-bit activations, of the same dot over
//!    the CPU's quantized activations).
//! 3. End to end on the random fixtures (llama, llama_rope3, qwen2, qwen3), SmolLM2-shaped
//!    random models in every `--bits` tier's formats, and SmolLM2: prefill in
//!    steps of 16 then greedy decode; logits within [`TOL`] (max-abs relative) of the CPU
//!    scalar reference with the same f16 KV cache, the same greedy token off near-ties, and the
//!    captured decode graph bit-identical to op-by-op launches.
//!
//! Last run: an NVIDIA H200 on 2026-12-04 (driver 580.159.04, NVRTC 13.0), all passed except
//! SmolLM2 itself, skipped there (its file could not be carried to that machine); README, CUDA.

use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_cuda::launch::GemvActivations;
use vspec_cuda::probe::GemvVariant;
use vspec_cuda::{CudaSession, Device, Probe};
use vspec_host::{Engine, ModelFile};
use vspec_tests::encode::{decode, dot_f64, encode, through_q8, values};
use vspec_tests::synth::{self, Shape};
use vspec_tests::{fixtures, rel_max_abs, smollm2_gguf};

/// Largest max-abs relative logit difference from the CPU reference. Both sides use the same
/// weights, f32 activations and an f16 KV cache; they differ only in summation order and in
/// `expf`/`sincosf`/`sqrtf` rounding, so the bound is tight. Measured on an H200 (2026-12-04):
/// at most 3.19e-4 (llama_rope3; llama 1.31e-4, qwen3 1.38e-4, qwen2 2.10e-5, the SmolLM2-shaped
/// tiers 4.0e-5 to 7.5e-5), the f16 cache's rounding flips being the largest term (the host
/// emulator reaches 1.2e-4 on llama over 96 positions, `cuda_model_host.rs`). The bound keeps a
/// 6x margin over that for other GPUs' `expf` and longer runs.
const TOL: f64 = 2e-3;
/// Top-2 logit gap under which the two paths may choose differently.
const NEAR_TIE: f32 = 0.05;
/// With the 8-bit activation GEMVs (the session's default): the CPU fast path's own tolerance
/// and near-tie margin against the same scalar reference (`fast_path.rs`).
const TOL_INT8: f64 = 0.08;
const NEAR_TIE_INT8: f32 = 0.5;

/// Device 0, or `None` after printing why the test is skipped (a failure when required).
fn device_or_skip() -> Option<Device> {
    match Device::open(0) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(
                std::env::var("VSPEC_REQUIRE_CUDA").as_deref() != Ok("1"),
                "VSPEC_REQUIRE_CUDA=1 but there is no usable CUDA device: {e}"
            );
            println!("SKIPPED: no CUDA device ({e})");
            None
        }
    }
}

#[test]
fn device_decoders_equal_the_scalar_decoders() {
    let Some(dev) = device_or_skip() else { return };
    let probe = Probe::new(dev).unwrap();
    let n = 1024;
    for format in vspec_cuda::kernels::device_formats() {
        let x = values(n, format as u64 + 1);
        let row = encode(format, &x);
        let spec = format.spec();
        let mut cpu = vec![0f32; n];
        for (b, o) in row
            .chunks_exact(spec.block_bytes)
            .zip(cpu.chunks_exact_mut(spec.block_elems))
        {
            (spec.decode)(b, o);
        }
        let gpu = probe.dequantize(format, &row, n).unwrap();
        let diff = cpu
            .iter()
            .zip(&gpu)
            .position(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()));
        assert!(
            diff.is_none(),
            "{format:?}: element {} decodes to {} on the device, {} on the CPU",
            diff.unwrap_or(0),
            gpu[diff.unwrap_or(0)],
            cpu[diff.unwrap_or(0)]
        );
        println!("{format:?}: {n} weights bit-identical");
    }
}

/// Prefill `ids[..split]` in steps of 16, then feed `ids[split..]` one at a time; compares
/// every step's logits with the CPU's. Returns the worst relative error.
#[test]
fn every_gemv_split_matches_an_f64_reference() {
    let Some(dev) = device_or_skip() else { return };
    let probe = Probe::new(dev).unwrap();
    // 37 rows: the last block of four warps is partly past the end at every split.
    let (rows, cols) = (37, 1280);
    let x = values(cols, 99);
    // The activations as the 8-bit GEMVs see them (the CPU's quantization, dequantized).
    let xq = through_q8(&x);
    for format in vspec_cuda::kernels::device_formats() {
        let mut w = Vec::new();
        let mut want = Vec::new();
        let mut want_q8 = Vec::new();
        for r in 0..rows {
            let row = encode(format, &values(cols, (r * 31 + format as usize) as u64));
            let wf = decode(format, &row);
            want.push(dot_f64(&wf, &x));
            want_q8.push(dot_f64(&wf, &xq));
            w.extend(row);
        }
        for split in [1, 2, 4] {
            let got = probe
                .gemv(format, &w, &x, rows, GemvVariant { split, int8: false })
                .unwrap();
            let e = rel_max_abs(&got, &want);
            assert!(
                e < 1e-5,
                "{format:?}, {split} warps per row: rel max-abs {e:.2e}"
            );
            if vspec_cuda::kernels::has_int8_gemv(format) {
                let got = probe
                    .gemv(format, &w, &x, rows, GemvVariant { split, int8: true })
                    .unwrap();
                let e = rel_max_abs(&got, &want_q8);
                assert!(
                    e < 1e-5,
                    "{format:?} on 8-bit activations, split {split}: {e:.2e}"
                );
            }
        }
        println!("{format:?}: GEMV with 1, 2 and 4 warps per row within 1e-5");
    }
}

fn compare(model: &ModelFile, name: &str, ids: &[u32], split: usize, int8: bool) -> f64 {
    let (tol, near_tie) = if int8 {
        (TOL_INT8, NEAR_TIE_INT8)
    } else {
        (TOL, NEAR_TIE)
    };
    let lim = Limits {
        max_ctx: 128,
        max_tokens: 16,
        all_logits: true,
    };
    let kv = KvType::F16;
    let mut engine = Engine::build(model, lim, kv, 1, KernelTable::scalar()).unwrap();
    let mut cpu = engine.session().unwrap();
    let (graph, weights) = model.bind_kv(lim, kv).unwrap();
    let plan = Plan::new(&graph).unwrap();
    let mut gpu = CudaSession::new(Device::open(0).unwrap(), &graph, &plan, &weights).unwrap();
    let mut plain = CudaSession::new(Device::open(0).unwrap(), &graph, &plan, &weights).unwrap();
    plain.set_cuda_graph(false);
    let acts = if int8 {
        GemvActivations::Int8
    } else {
        GemvActivations::F32
    };
    gpu.set_gemv_activations(acts);
    plain.set_gemv_activations(acts);
    let vocab = model.config.vocab;
    let mut worst = 0f64;
    let steps: Vec<&[u32]> = ids[..split]
        .chunks(16)
        .chain(ids[split..].chunks(1))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let c = cpu.forward(step).unwrap().to_vec();
        let g = gpu.forward(step).unwrap().to_vec();
        let p = plain.forward(step).unwrap().to_vec();
        assert_eq!(c.len(), g.len());
        if step.len() == 1 {
            assert!(
                g.iter().zip(&p).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name} step {i}: the captured graph and op-by-op launches differ"
            );
        }
        for (t, (cr, gr)) in c.chunks_exact(vocab).zip(g.chunks_exact(vocab)).enumerate() {
            let e = rel_max_abs(gr, cr);
            worst = worst.max(e);
            assert!(
                e <= tol,
                "{name} step {i} token {t}: rel max-abs {e:.2e} > {tol:.0e}"
            );
            let (cb, gap) = argmax_gap(cr);
            let (gb, _) = argmax_gap(gr);
            assert!(
                cb == gb || gap < near_tie,
                "{name} step {i} token {t}: greedy {gb} on the device, {cb} on the CPU (gap {gap})"
            );
        }
    }
    println!(
        "{name}: {} steps, worst rel max-abs {worst:.2e}",
        steps.len()
    );
    worst
}

fn argmax_gap(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            second = best.1;
            best = (i, x);
        } else if x > second {
            second = x;
        }
    }
    (best.0, best.1 - second)
}

#[test]
fn fixtures_match_the_cpu_reference() {
    if device_or_skip().is_none() {
        return;
    }
    for name in ["llama", "llama_rope3", "qwen2", "qwen3"] {
        let model = ModelFile::open(&fixtures().join("hf").join(name)).unwrap();
        let vocab = model.config.vocab as u32;
        let ids: Vec<u32> = (0..48u32).map(|i| (i * 37 + 11) % vocab).collect();
        compare(&model, name, &ids, 40, false);
    }
}

#[test]
fn every_tier_matches_the_cpu_reference() {
    // SmolLM2-shaped (two layers) with random weights in exactly the formats each `--bits` tier
    // stores (TQ2/TQ3/TQ4, VQ3/VQ4, Q5_1, Q8_0): the device matmuls of every tier format,
    // end to end, which the f32 fixtures do not reach.
    if device_or_skip().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vspec-cuda-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for bits in [2, 3, 4, 8] {
        let path = dir.join(format!("smollm2-shaped-{bits}.vspec"));
        synth::write(&path, Shape::SmolLM2_135M, Some(2), bits, 7).unwrap();
        let model = ModelFile::open(&path).unwrap();
        let vocab = model.config.vocab as u32;
        let ids: Vec<u32> = (0..24u32).map(|i| (i * 7919 + 3) % vocab).collect();
        compare(
            &model,
            &format!("SmolLM2-shaped --bits {bits}"),
            &ids,
            16,
            false,
        );
        let name = format!("SmolLM2-shaped --bits {bits}, 8-bit activations");
        compare(&model, &name, &ids, 16, true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smollm2_matches_the_cpu_reference_and_greedy_tokens_agree() {
    if device_or_skip().is_none() {
        return;
    }
    let Some(path) = smollm2_gguf() else { return };
    let model = ModelFile::open(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let ids = tok
        .encode(
            "The capital of France is Paris. The capital of Italy is",
            true,
        )
        .unwrap();
    compare(&model, "SmolLM2", &ids, ids.len() - 4, false);
    compare(
        &model,
        "SmolLM2, 8-bit activations",
        &ids,
        ids.len() - 4,
        true,
    );
    // Greedy generation of 24 tokens: the same ids on both backends.
    let lim = Limits {
        max_ctx: 128,
        max_tokens: 16,
        all_logits: false,
    };
    let mut engine = Engine::build(&model, lim, KvType::F16, 1, KernelTable::scalar()).unwrap();
    let mut cpu = engine.session().unwrap();
    let (graph, weights) = model.bind_kv(lim, KvType::F16).unwrap();
    let plan = Plan::new(&graph).unwrap();
    let mut gpu = CudaSession::new(Device::open(0).unwrap(), &graph, &plan, &weights).unwrap();
    gpu.set_gemv_activations(GemvActivations::F32);
    let greedy = |s: &mut dyn vspec_core::exec::Executor| -> Vec<u32> {
        let mut next = argmax_gap(vspec_host::generate::prefill(s, &ids).unwrap()).0 as u32;
        let mut out = vec![next];
        for _ in 0..23 {
            next = argmax_gap(s.forward(&[next]).unwrap()).0 as u32;
            out.push(next);
        }
        out
    };
    let (c, g) = (greedy(&mut cpu), greedy(&mut gpu));
    println!("greedy: {:?}", tok.decode(&g));
    assert_eq!(c, g, "greedy tokens differ");
}

#[test]
fn every_device_format_has_an_encoder_for_the_decoder_test() {
    // Runs without a GPU: the decoder test above must not fail for want of test data.
    for format in vspec_cuda::kernels::device_formats() {
        let x = values(512, 7);
        let row = encode(format, &x);
        assert_eq!(
            row.len(),
            format.tensor_bytes(512, 1, "row").unwrap(),
            "{format:?}"
        );
    }
}
