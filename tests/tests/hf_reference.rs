//! Tiny random Llama / Qwen2 / Qwen3 checkpoints saved by Hugging Face transformers, with
//! transformers' own logits (tests/fixtures/hf/make_fixtures.py): ours must match to 1e-4
//! relative (max-abs error over the reference's max-abs), at several step sizes.

use serde_json::Value;
use vspec_core::graph::Limits;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, rel_max_abs};

const TOL: f64 = 1e-4;

fn reference(name: &str) -> Value {
    let p = fixtures().join("hf").join(name).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Runs `tokens` in steps of `step` with all logits, compares every position.
fn check_logits(
    name: &str,
    model: &ModelFile,
    tokens: &[u32],
    want: &[Vec<f32>],
    step: usize,
    threads: usize,
) {
    let lim = Limits {
        max_ctx: 64,
        max_tokens: step,
        all_logits: true,
    };
    let mut engine = Engine::new(model, lim, threads).unwrap();
    let mut sess = engine.session().unwrap();
    let mut pos = 0;
    for chunk in tokens.chunks(step) {
        let logits = sess.forward(chunk).unwrap().to_vec();
        let vocab = logits.len() / chunk.len();
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let err = rel_max_abs(row, &want[pos + i]);
            assert!(
                err <= TOL,
                "{name}: position {} (step {step}, {threads} threads): rel error {err:.2e}",
                pos + i
            );
        }
        pos += chunk.len();
    }
}

fn check_model(name: &str) {
    let dir = fixtures().join("hf").join(name);
    let r = reference(name);
    let model = ModelFile::open(&dir).unwrap();
    let tok = model.tokenizer().unwrap();
    let prompt = r["prompt"].as_str().unwrap();
    let tokens = ids(&r["tokens"]);
    assert_eq!(
        tok.encode(prompt, false).unwrap(),
        tokens,
        "{name}: tokenization differs from transformers"
    );
    let logits = rows(&r["logits"]);
    for (step, threads) in [(64, 1), (5, 2), (1, 2)] {
        check_logits(name, &model, &tokens, &logits, step, threads);
    }
    check_logits(
        name,
        &model,
        &ids(&r["tokens2"]),
        &rows(&r["logits2"]),
        16,
        2,
    );

    // Greedy continuation through the generation path (last-token logits only).
    let lim = Limits {
        max_ctx: 64,
        max_tokens: 8,
        all_logits: false,
    };
    let mut engine = Engine::new(&model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    let mut history = Vec::new();
    let want = ids(&r["greedy"]);
    let mut got = Vec::new();
    let mut next = argmax(vspec_host::generate::prefill(&mut sess, &tokens).unwrap());
    history.extend_from_slice(&tokens);
    while got.len() < want.len() {
        got.push(next);
        next = argmax(sess.forward(&[next]).unwrap());
    }
    assert_eq!(
        got, want,
        "{name}: greedy continuation differs from transformers"
    );
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn llama_matches_transformers() {
    check_model("llama");
}

#[test]
fn llama3_rope_scaling_and_tied_head_match_transformers() {
    check_model("llama_rope3");
}

#[test]
fn qwen2_matches_transformers() {
    check_model("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_model("qwen3");
}

#[test]
fn chat_template_matches_transformers() {
    for name in ["llama", "qwen2", "qwen3"] {
        let r = reference(name);
        let model = ModelFile::open(&fixtures().join("hf").join(name)).unwrap();
        let tok = model.tokenizer().unwrap();
        let tmpl = vspec_host::chat::ChatTemplate::from_tokenizer(&tok).unwrap();
        let msgs: Vec<_> = r["chat_messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                vspec_host::chat::ChatMessage::new(
                    m["role"].as_str().unwrap(),
                    m["content"].as_str().unwrap(),
                )
            })
            .collect();
        let text = tmpl.render(&msgs, true).unwrap();
        assert_eq!(text, r["chat_text"].as_str().unwrap(), "{name}");
        assert_eq!(
            tok.encode(&text, false).unwrap(),
            ids(&r["chat_tokens"]),
            "{name}"
        );
    }
}
