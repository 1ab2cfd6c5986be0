//! SmolLM2-135M-Instruct through the whole low-bit path on the real model: `calibrate` with input
//! matrices on *Persuasion*, `convert --bits 3` (error compensation, scale refit, the built-in
//! recipe) and `--bits 2` (the same on the rotated model, trellis codes), then perplexity on
//! *Emma* against the exact f32 execution of the same weights (which `smollm2_perplexity` ties to
//! llama.cpp).
//!
//! The bounds are quality floors, not snapshots: the README measures both tiers over 20 × 512
//! tokens with 60 calibration chunks; these tests use fewer of both to stay fast. Compensation
//! with a wrong index or sign, a rotation that breaks the network's function, or a recipe that
//! lost its lifts, lands far above them (the data-free conversion of the 3-bit recipe drifts
//! +85 %).

use vspec_core::graph::Limits;
use vspec_host::perplexity::perplexity;
use vspec_host::quantize::calibrate::calibrate;
use vspec_host::quantize::convert::{convert, Calibrate};
use vspec_host::quantize::recipe::Recipe;
use vspec_host::quantize::rotate::rotate;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, smollm2_gguf};

const CTX: usize = 512;

/// `--bits 2` drift allowed over 4 chunks with 8 calibration chunks: measured +25.9 % (54.91 MB,
/// TQ3/TQ2/TQ4); the NQ3/VQ2 recipe before it drifted +48.2 % here, and the unrotated VQ3/VQ2
/// one +87 % even with 60 chunks and 20 to score.
const BITS2_DRIFT_BOUND: f64 = 0.40;

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

#[test]
fn bits2_rotated_fits_55_mb_and_keeps_quality() {
    let Some(path) = smollm2_gguf() else { return };
    let original = ModelFile::open(&path).unwrap();
    let read = |name: &str| std::fs::read_to_string(fixtures().join("text").join(name)).unwrap();
    let (cal_text, eval_text) = (read("persuasion.txt"), read("emma.txt"));
    let chunks = 4;
    let base = ppl(&original, &eval_text, chunks);

    let t0 = std::time::Instant::now();
    let model = rotate(original).unwrap();
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
    assert!(cal.rotation.is_some());
    let c = &model.config;
    let recipe = Recipe::for_bits(2, c.n_layers, c.tied_embeddings).unwrap();
    let dir = std::env::temp_dir().join(format!("vspec-smollm2-bits2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("b2.vspec");
    let report = convert(&model, &out, &recipe, Calibrate::File(&cal), 2, false).unwrap();
    drop(model);
    let bytes = std::fs::metadata(&out).unwrap().len();
    let quantized = ModelFile::open(&out).unwrap();
    let q = ppl(&quantized, &eval_text, chunks);
    let drift = q / base - 1.0;
    println!(
        "--bits 2 (rotated): {bytes} bytes, {:.3} bpw of tensor data; PPL {base:.4} -> {q:.4} \
         ({:+.2} %) over {chunks} x {CTX}, calibration 8 x {CTX}; {:.0} s",
        report.bpw(),
        drift * 100.0,
        t0.elapsed().as_secs_f64()
    );
    drop(quantized);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(bytes <= 55_000_000, "{bytes} bytes");
    assert!(
        drift < BITS2_DRIFT_BOUND,
        "PPL drift {:.2} %",
        drift * 100.0
    );
}
