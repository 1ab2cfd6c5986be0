//! SmolLM2-135M-Instruct through the whole low-bit path on the real model: `calibrate` with input
//! matrices on *Persuasion*, `convert --bits 3` (error compensation, scale refit, the built-in
//! recipe), then perplexity on *Emma* against the exact f32 execution of the same weights (which
//! `smollm2_perplexity` ties to llama.cpp).
//!
//! The bound is a quality floor, not a snapshot: the README measures +11.4 % over 20 × 512
//! tokens with 60 calibration chunks; this test uses fewer of both to stay fast. Compensation
//! with a wrong index or sign, or a recipe that lost its VQ4 lifts, lands far above it (the
//! data-free conversion of the same recipe drifts +85 %).

use vspec_core::graph::Limits;
use vspec_host::perplexity::perplexity;
use vspec_host::quantize::calibrate::calibrate;
use vspec_host::quantize::convert::{convert, Calibrate};
use vspec_host::quantize::recipe::Recipe;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, smollm2_gguf};

const CTX: usize = 512;

fn ppl(model: &ModelFile, text: &str, chunks: usize) -> f64 {
    let lim = Limits {
        max_ctx: CTX,
        max_tokens: CTX,
        all_logits: true,
    };
    let mut engine = Engine::new(model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    let tok = model.tokenizer().unwrap();
    perplexity(&mut sess, &tok, text, CTX, Some(chunks), |_, _| {})
        .unwrap()
        .ppl
}

#[test]
fn bits3_with_input_matrices_keeps_quality() {
    let Some(path) = smollm2_gguf() else { return };
    let model = ModelFile::open(&path).unwrap();
    let read = |name: &str| std::fs::read_to_string(fixtures().join("text").join(name)).unwrap();
    let (cal_text, eval_text) = (read("persuasion.txt"), read("emma.txt"));

    let t0 = std::time::Instant::now();
    let cal = calibrate(
        &model,
        &cal_text,
        "persuasion.txt",
        CTX,
        Some(8),
        2,
        true,
        false,
    )
    .unwrap();
    assert!(cal.hessians.len() > 4 * model.config.n_layers);
    let c = &model.config;
    let recipe = Recipe::for_bits(3, c.n_layers, c.tied_embeddings).unwrap();
    let dir = std::env::temp_dir().join(format!("vspec-smollm2-quantize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("b3.vspec");
    let report = convert(&model, &out, &recipe, Calibrate::File(&cal), 2, false).unwrap();
    let bytes = std::fs::metadata(&out).unwrap().len();
    let quantized = ModelFile::open(&out).unwrap();

    let chunks = 4;
    let (base, q) = (
        ppl(&model, &eval_text, chunks),
        ppl(&quantized, &eval_text, chunks),
    );
    let drift = q / base - 1.0;
    println!(
        "--bits 3: {bytes} bytes, {:.3} bpw of tensor data; PPL {base:.4} -> {q:.4} ({:+.2} %) \
         over {chunks} x {CTX}, calibration 8 x {CTX}; {:.0} s",
        report.bpw(),
        drift * 100.0,
        t0.elapsed().as_secs_f64()
    );
    drop(quantized);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(bytes <= 70_000_000, "{bytes} bytes");
    assert!(drift < 0.20, "PPL drift {:.2} %", drift * 100.0);
}
