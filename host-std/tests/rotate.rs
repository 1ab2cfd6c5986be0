//! `convert --rotate`: the rotated model computes the same function as the original (before any
//! quantization), for tied and separate heads, q/k/v biases and Qwen3's per-head norms; rotated
//! statistics only fit rotated conversions.

mod common;

use common::{fails_with, fixture, s, succeeds, TempDir, CAL_TEXT};
use vspec_core::graph::Limits;
use vspec_host::quantize::rotate::rotate;
use vspec_host::{Engine, ModelFile};

fn logits(model: &ModelFile, tokens: &[u32]) -> Vec<f32> {
    let lim = Limits {
        max_ctx: 64,
        max_tokens: 32,
        all_logits: true,
    };
    let mut engine = Engine::new(model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    sess.forward(tokens).unwrap().to_vec()
}

#[test]
fn rotated_models_compute_the_same_logits() {
    let tokens: Vec<u32> = (0..30).map(|i| (i * 37 % 300) as u32).collect();
    for name in ["llama", "llama_rope3", "qwen2", "qwen3"] {
        let original = ModelFile::open(&fixture(name)).unwrap();
        let tied = original.config.tied_embeddings;
        let want = logits(&original, &tokens);
        let rotated = rotate(original).unwrap();
        assert_eq!(rotated.config.output_mix, tied, "{name}");
        let got = logits(&rotated, &tokens);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = want
            .iter()
            .zip(&got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 2e-5 * scale.max(1.0),
            "{name}: logits moved by {worst} (largest {scale})"
        );
        // A rotated model cannot be rotated again.
        assert!(rotate(rotated).is_err(), "{name}");
    }
}

#[test]
fn rotated_conversion_runs_and_records_it() {
    let dir = TempDir::new("rotate");
    let text = dir.write("cal.txt", CAL_TEXT.repeat(4).as_bytes());
    let model = fixture("llama_rope3");
    let stats = dir.join("rot.cal");
    let plain = dir.join("plain.cal");
    succeeds(&[
        "calibrate",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "--ctx",
        "16",
        "--hessian",
        "--rotate",
        "-o",
        s(&stats),
    ]);
    succeeds(&[
        "calibrate",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "--ctx",
        "16",
        "--hessian",
        "-o",
        s(&plain),
    ]);
    let out = dir.join("rot.vspec");
    succeeds(&[
        "convert",
        "-m",
        s(&model),
        "--recipe",
        s(&dir.write("r.txt", b"default = Q4_1\n")),
        "--rotate",
        "--imatrix",
        s(&stats),
        "-o",
        s(&out),
    ]);
    let (info, _) = succeeds(&["inspect", "-m", s(&out)]);
    assert!(info.contains("rotation = hadamard-dct-v1"), "{info}");
    assert!(info.contains("output_mix.weight"), "{info}");
    succeeds(&[
        "generate",
        "-m",
        s(&out),
        "-p",
        "Hello",
        "-n",
        "4",
        "--temp",
        "0",
    ]);
    // Statistics from the other kind of model are refused before anything is written.
    let bad = dir.join("bad.vspec");
    fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--bits",
            "4",
            "--rotate",
            "--imatrix",
            s(&plain),
            "-o",
            s(&bad),
        ],
        &["unrotated", "--rotate"],
    );
    fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--bits",
            "4",
            "--no-rotate",
            "--imatrix",
            s(&stats),
            "-o",
            s(&bad),
        ],
        &["rotated (hadamard-dct-v1)", "--rotate"],
    );
    assert!(!bad.exists());
    // Without a flag the stats decide.
    let follows = dir.join("follows.vspec");
    let args = [
        "convert",
        "-m",
        s(&model),
        "--bits",
        "4",
        "--imatrix",
        s(&stats),
        "-o",
        s(&follows),
    ];
    succeeds(&args);
    let (info, _) = succeeds(&["inspect", "-m", s(&follows)]);
    assert!(info.contains("rotation = hadamard-dct-v1"), "{info}");
    // Requantizing a rotated file keeps its basis; only an explicit --rotate is refused.
    let again = dir.join("again.vspec");
    let args = [
        "convert",
        "-m",
        s(&out),
        "--bits",
        "2",
        "--no-calibration",
        "-o",
        s(&again),
    ];
    succeeds(&args);
    let (info, _) = succeeds(&["inspect", "-m", s(&again)]);
    assert!(info.contains("rotation = hadamard-dct-v1"), "{info}");
    // A rotated file is not rotated twice.
    fails_with(
        &[
            "convert",
            "-m",
            s(&out),
            "--bits",
            "4",
            "--rotate",
            "--no-calibration",
            "-o",
            s(&bad),
        ],
        &["already rotated"],
    );
}
