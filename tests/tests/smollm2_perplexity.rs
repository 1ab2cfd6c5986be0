//! `vspec perplexity` on SmolLM2-135M-Instruct (Q4_1, executed exactly in f32) against llama.cpp's
//! llama-perplexity protocol run by llama-cpp-python on the F32 GGUF made from the same weights
//! (tests/fixtures/smollm2/perplexity.json): within 1 %.

use serde_json::Value;
use vspec_core::graph::Limits;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, smollm2_gguf};

#[test]
fn perplexity_within_one_percent_of_llama_cpp() {
    let Some(path) = smollm2_gguf() else { return };
    let refs: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2").join("perplexity.json")).unwrap(),
    )
    .unwrap();
    let r = &refs["ci"];
    let ctx = r["ctx"].as_u64().unwrap() as usize;
    let chunks = r["chunks"].as_u64().unwrap() as usize;
    let want = r["ppl"].as_f64().unwrap();
    let text_file = fixtures()
        .join("text")
        .join(r["text_file"].as_str().unwrap());
    let text = std::fs::read_to_string(text_file).unwrap();

    let model = ModelFile::open(&path).unwrap();
    let tok = model.tokenizer().unwrap();
    assert_eq!(
        tok.encode(&text, true).unwrap().len() as u64,
        r["n_tokens_total"].as_u64().unwrap(),
        "token count"
    );
    let lim = Limits {
        max_ctx: ctx,
        max_tokens: ctx,
        all_logits: true,
    };
    let mut engine = Engine::new(&model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    let got =
        vspec_host::perplexity::perplexity(&mut sess, &tok, &text, ctx, Some(chunks), |_, _| {})
            .unwrap();
    let drift = (got.ppl - want).abs() / want;
    println!(
        "PPL over {chunks} x {ctx}: vspec {:.4} +/- {:.4}, llama.cpp {want:.4} ({:.3} %)",
        got.ppl,
        got.ppl_err,
        drift * 100.0
    );
    assert_eq!(got.chunks, chunks);
    assert!(
        drift < 0.01,
        "PPL {} vs llama.cpp {want}: {:.3} % apart",
        got.ppl,
        drift * 100.0
    );
}
