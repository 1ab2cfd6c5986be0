//! SmolLM2-135M-Instruct against llama.cpp (tests/fixtures/smollm2, made by make_refs.py with
//! llama-cpp-python on an F32 GGUF written from the same Q4_1 weights we run).
//!
//! - our tokenizer gives llama.cpp's token ids;
//! - greedy continuations of every prompt equal llama.cpp's for 32 tokens, or where they part,
//!   our top-2 logit gap at that step is below NEAR_TIE (a tie that rounding may flip);
//! - until they part, the winning logits agree within LOGIT_TOL.
//!
//! Needs the model (`vspec fetch`); prints SKIPPED otherwise (CI sets VSPEC_REQUIRE_MODEL=1).

use serde_json::Value;
use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, smollm2_gguf};

/// Largest top-2 gap (in logits) at which a different greedy choice is accepted.
const NEAR_TIE: f32 = 0.05;
/// Largest difference from llama.cpp's winning logit before the sequences part.
const LOGIT_TOL: f32 = 0.02;

fn load(name: &str) -> Value {
    let p = fixtures().join("smollm2").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn top2(v: &[f32]) -> (usize, f32, f32) {
    let (mut b, mut s) = (0usize, usize::MAX);
    for i in 1..v.len() {
        if v[i] > v[b] {
            s = b;
            b = i;
        } else if s == usize::MAX || v[i] > v[s] {
            s = i;
        }
    }
    (b, v[b], v[s])
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let Some(path) = smollm2_gguf() else { return };
    let model = ModelFile::open(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let refs = load("tokenize.json");
    let cases = refs["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), want, "text {text:?}");
    }
}

#[test]
fn greedy_matches_llama_cpp() {
    let Some(path) = smollm2_gguf() else { return };
    let model = ModelFile::open(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    let refs = load("greedy.json");
    let lim = Limits {
        max_ctx: 256,
        max_tokens: 64,
        all_logits: false,
    };
    // The reference path (f32 activations, as llama.cpp ran the F32 GGUF); the SIMD tier's
    // 8-bit activations are checked against it in fast_path.rs.
    let mut engine = Engine::with_kernels(&model, lim, 2, KernelTable::scalar()).unwrap();
    let mut sess = engine.session().unwrap();
    let mut full_matches = 0;
    let results = refs["primary"]["results"].as_array().unwrap();
    for case in results {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        assert_eq!(
            tok.encode(case["prompt"].as_str().unwrap(), true).unwrap(),
            prompt,
            "{name}: prompt tokens"
        );
        let want = ids(&case["generated_ids"]);
        let steps = case["steps"].as_array().unwrap();
        sess.reset();
        let mut logits = vspec_host::generate::prefill(&mut sess, &prompt)
            .unwrap()
            .to_vec();
        let mut parted = None;
        for (i, &w) in want.iter().enumerate() {
            let (best, l1, l2) = top2(&logits);
            let ref_logit = steps[i]["top1_logit"].as_f64().unwrap() as f32;
            if best as u32 != w {
                assert!(
                    l1 - l2 < NEAR_TIE,
                    "{name}: step {i}: we pick {best}, llama.cpp {w}; our top-2 gap {} is no near-tie",
                    l1 - l2
                );
                let ours_for_theirs = logits[w as usize];
                assert!(
                    (l1 - ours_for_theirs).abs() < NEAR_TIE,
                    "{name}: step {i}: llama.cpp's pick is not our runner-up"
                );
                println!(
                    "{name}: parts at step {i} on a near-tie (gap {:.4})",
                    l1 - l2
                );
                parted = Some(i);
                break;
            }
            assert!(
                (l1 - ref_logit).abs() < LOGIT_TOL,
                "{name}: step {i}: winning logit {l1} vs llama.cpp {ref_logit}"
            );
            logits = sess.forward(&[w]).unwrap().to_vec();
        }
        if parted.is_none() {
            full_matches += 1;
        }
    }
    println!(
        "{full_matches}/{} prompts equal llama.cpp for all 32 tokens",
        results.len()
    );
}
