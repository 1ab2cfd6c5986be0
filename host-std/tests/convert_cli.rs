//! `vspec calibrate` and `vspec convert` end to end, through the real binary (and the library
//! for logits): round trips at every `--bits` tier, determinism across runs and thread counts,
//! lossless Q4_0 → Q4_1 transcoding and Q4_1 copying, and clean failures on bad recipes, flags,
//! output paths, calibration files and damaged `.vspec` files.
//!
//! Every failure case checks: non-zero exit that is not a panic (101), no "panicked", a message
//! naming the file / pattern / tensor / line at fault, and nothing left in the output directory
//! (neither the output file nor a `.{name}.tmp-*` temporary).
//!
//! The model is the tiny Hugging Face Llama fixture (tests/fixtures/hf/llama: hidden 64,
//! intermediate 160). Its `ffn_down` rows have 160 weights, not a multiple of the VQ formats'
//! 64: the built-in `--bits` recipes fall back to Q8_0 there, an explicit recipe is an error.

mod common;

use std::path::{Path, PathBuf};

use vspec_core::format::Format;
use vspec_core::gguf::GgufWriter;
use vspec_core::graph::Limits;
use vspec_host::{Engine, ModelFile};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers (the shared ones are in common/mod.rs).
// ---------------------------------------------------------------------------------------------

/// Neither `dir/name` nor a temporary `.{name}.tmp-*` exists in `dir`.
#[track_caller]
fn no_output(dir: &Path, name: &str) {
    let tmp_prefix = format!(".{name}.tmp-");
    for e in entries(dir) {
        assert!(e != name, "{name} was written in {}", dir.display());
        assert!(
            !e.starts_with(&tmp_prefix),
            "temporary file {e} left in {}",
            dir.display()
        );
    }
}

/// `vspec convert -m model ARGS -o dir/name -t 2`, expected to fail with `needles`, leaving nothing.
#[track_caller]
fn convert_fails(model: &Path, extra: &[&str], dir: &Path, name: &str, needles: &[&str]) -> String {
    let out = dir.join(name);
    let mut args = vec!["convert", "-m", s(model), "-t", "2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(&out)]);
    let e = fails_with(&args, needles);
    no_output(dir, name);
    e
}

/// `vspec convert -m model ARGS -o out`, expected to succeed; returns stderr.
#[track_caller]
fn convert_ok(model: &Path, extra: &[&str], out: &Path) -> String {
    let mut args = vec!["convert", "-m", s(model)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(out)]);
    let (_, stderr) = succeeds(&args);
    assert!(out.is_file(), "{} not written", out.display());
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let tmp_prefix = format!(".{name}.tmp-");
    for e in entries(out.parent().unwrap()) {
        assert!(!e.starts_with(&tmp_prefix), "temporary file {e} left");
    }
    stderr
}

/// The logits of a fixed short token sequence, all positions, one thread.
fn logits(model: &ModelFile) -> Vec<f32> {
    let tok = model.tokenizer().unwrap();
    let ids = tok
        .encode("Hello world, the quick brown fox.", true)
        .unwrap();
    assert!(ids.len() >= 4, "{} tokens", ids.len());
    let lim = Limits {
        max_ctx: 64,
        max_tokens: ids.len(),
        all_logits: true,
    };
    // The scalar references: lossless transcodes must give bit-identical logits there (the SIMD
    // tier's 8-bit paths sum Q4_0's and Q4_1's min terms differently).
    let scalar = vspec_core::kernels::KernelTable::scalar();
    let mut e = Engine::with_kernels(model, lim, 1, scalar).unwrap();
    let mut sess = e.session().unwrap();
    let l = sess.forward(&ids).unwrap().to_vec();
    assert_eq!(l.len(), ids.len() * model.config.vocab);
    assert!(l.iter().all(|v| v.is_finite()));
    l
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// A tiny GGUF built from the Hugging Face Llama fixture (`GgufSpec::llama`, common/mod.rs),
// written with the matrices stored in a chosen format.
// ---------------------------------------------------------------------------------------------

impl GgufSpec {
    /// The GGUF file with every matrix (2-D tensor) quantized row by row to `matrix_format`
    /// (F32 keeps the floats); vectors stay F32.
    fn bytes_with(&self, matrix_format: Format) -> Vec<u8> {
        // (format, bytes) per tensor first: the writer borrows the data until it finishes.
        let stored: Vec<(Format, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(_, dims, data)| {
                if dims.len() != 2 || matrix_format == Format::F32 {
                    return (Format::F32, data.clone());
                }
                let cols = dims[0] as usize;
                let floats: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                let row_bytes = matrix_format.row_bytes(cols, "test").unwrap();
                let mut q = vec![0u8; row_bytes * dims[1] as usize];
                for (x, o) in floats.chunks_exact(cols).zip(q.chunks_exact_mut(row_bytes)) {
                    vspec_core::quant::quantize_row(matrix_format, x, None, o).unwrap();
                }
                (matrix_format, q)
            })
            .collect();
        let mut w = GgufWriter::new();
        for (k, v) in &self.meta {
            w.add_meta(k.clone(), v.clone());
        }
        for ((name, dims, _), (format, data)) in self.tensors.iter().zip(&stored) {
            w.add_tensor(name.clone(), dims, *format, data).unwrap();
        }
        w.finish().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips at every --bits tier.
// ---------------------------------------------------------------------------------------------

/// The rows of `inspect`'s tensor table: (name, format).
fn inspected_tensors(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .skip_while(|l| !l.contains("tensors used by the graph"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap_or("").to_string();
            (name, it.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Formats listed by `inspect` in its tensor table.
fn inspected_formats(stdout: &str) -> Vec<String> {
    let mut v: Vec<String> = inspected_tensors(stdout).into_iter().map(|t| t.1).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn bits_round_trip_inspect_generate_and_size_order() {
    let tmp = TempDir::new("bits");
    let model = llama_dir();
    let mut sizes = Vec::new();
    for (bits, must, must_not) in [
        (
            2u32,
            &["TQ2", "TQ3", "TQ4", "Q8_0", "F32"][..],
            &["Q5_1", "VQ2", "VQ3", "VQ4", "NQ3"][..],
        ),
        (3, &["VQ3", "VQ4", "Q8_0", "F32"], &["VQ2"]),
        (4, &["VQ4", "Q5_1", "Q8_0", "F32"], &["VQ2", "VQ3"]),
        (8, &["Q8_0", "F32"], &["VQ2", "VQ3", "VQ4"]),
    ] {
        let out = tmp.join(&format!("tiny-{bits}.vspec"));
        let b = bits.to_string();
        let stderr = convert_ok(&model, &["--bits", &b, "-t", "2"], &out);
        assert!(stderr.contains("wrote"), "{stderr}");
        // ffn_down's rows (160) do not fit VQ blocks: the built-in recipe falls back to Q8_0.
        // (--bits 4, 3 and 2 name VQ4 / VQ4 / TQ3 for it and fall back; 8 names Q8_0 itself.)
        if bits != 8 {
            assert!(
                stderr.contains("ffn_down.weight: rows of 160") && stderr.contains("using Q8_0"),
                "--bits {bits}: no fallback warning:\n{stderr}"
            );
        }
        let (stdout, _) = succeeds(&["inspect", "-m", s(&out)]);
        assert!(stdout.contains("vspec v2"), "{stdout}");
        assert!(stdout.contains("(verified)"), "{stdout}");
        assert!(
            stdout.contains("recipe = default = "),
            "recipe metadata missing:\n{stdout}"
        );
        let formats = inspected_formats(&stdout);
        eprintln!(
            "--bits {bits}: formats {formats:?}, {} bytes",
            std::fs::metadata(&out).unwrap().len()
        );
        for f in must {
            assert!(
                formats.iter().any(|x| x == f),
                "--bits {bits}: no {f} in {formats:?}\n{stdout}"
            );
        }
        for f in must_not {
            assert!(
                !formats.iter().any(|x| x == f),
                "--bits {bits}: {f} in {formats:?}\n{stdout}"
            );
        }
        // Every ffn_down is Q8_0 (fallback or Q8_0 recipe).
        let downs: Vec<_> = inspected_tensors(&stdout)
            .into_iter()
            .filter(|t| t.0.ends_with("ffn_down.weight"))
            .collect();
        assert_eq!(downs.len(), 2, "{stdout}");
        for (name, f) in downs {
            assert_eq!(f, "Q8_0", "--bits {bits}: {name}");
        }
        let (text, gen_err) = succeeds(&gen_args(s(&out)));
        eprintln!("--bits {bits}: generated {text:?}");
        assert!(!gen_err.contains("error"), "{gen_err}");
        sizes.push((bits, std::fs::metadata(&out).unwrap().len()));
    }
    for w in sizes.windows(2) {
        assert!(
            w[0].1 < w[1].1,
            "file sizes not increasing with bits: {sizes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Calibration, --imatrix, determinism.
// ---------------------------------------------------------------------------------------------

#[test]
fn calibrate_then_convert_with_imatrix_is_deterministic() {
    let tmp = TempDir::new("imatrix");
    let model = llama_dir();
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let stats = tmp.join("stats.json");
    succeeds(&[
        "calibrate",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "-o",
        s(&stats),
        "--ctx",
        "16",
        "--chunks",
        "2",
        "-t",
        "2",
    ]);
    assert!(stats.is_file());
    assert!(
        !tmp.entries().iter().any(|e| e.contains("tmp-")),
        "calibrate left a temporary file: {:?}",
        tmp.entries()
    );
    let cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(cal["version"], 1);
    assert_eq!(cal["tokens"], 32, "2 chunks of 16 tokens");
    let q = &cal["tensors"]["blk.0.attn_q.weight"];
    assert_eq!(q["mean_sq"].as_array().unwrap().len(), 64, "{q}");
    let down = &cal["tensors"]["blk.1.ffn_down.weight"];
    assert_eq!(down["mean_sq"].as_array().unwrap().len(), 160);

    // Calibration is thread-count independent too.
    let stats1 = tmp.join("stats1.json");
    succeeds(&[
        "calibrate",
        "-m",
        s(&model),
        "-f",
        s(&text),
        "-o",
        s(&stats1),
        "--ctx",
        "16",
        "--chunks",
        "2",
        "-t",
        "1",
    ]);
    assert_eq!(
        std::fs::read(&stats).unwrap(),
        std::fs::read(&stats1).unwrap(),
        "calibrate -t 1 and -t 2 differ"
    );

    let conv = |name: &str, threads: &str, imatrix: bool| -> Vec<u8> {
        let out = tmp.join(name);
        let mut extra = vec!["--bits", "4", "-t", threads];
        if imatrix {
            extra.extend_from_slice(&["--imatrix", s(&stats)]);
        }
        convert_ok(&model, &extra, &out);
        std::fs::read(&out).unwrap()
    };
    let a = conv("a.vspec", "2", true);
    let b = conv("b.vspec", "2", true);
    let c = conv("c.vspec", "1", true);
    assert!(a == b, "two identical conversions differ");
    assert!(a == c, "-t 1 and -t 2 conversions differ");
    let plain1 = conv("p1.vspec", "1", false);
    let plain2 = conv("p2.vspec", "2", false);
    assert!(
        plain1 == plain2,
        "-t 1 and -t 2 conversions (no imatrix) differ"
    );
    assert!(a != plain1, "--imatrix made no difference at all");

    let m = ModelFile::open(&tmp.join("a.vspec")).unwrap();
    let meta = &m.vspec().unwrap().metadata;
    assert!(
        meta.get("imatrix").is_some_and(|v| v.contains("32 tokens")),
        "{meta:?}"
    );
    let (text_out, _) = succeeds(&gen_args(s(&tmp.join("a.vspec"))));
    eprintln!("imatrix VQ4: {text_out:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Lossless paths.
// ---------------------------------------------------------------------------------------------

/// Decoded rows of every matrix of `m`, by name.
fn decoded_matrices(m: &ModelFile) -> Vec<(String, Vec<f32>)> {
    let (graph, views) = m
        .bind(Limits {
            max_ctx: 1,
            max_tokens: 1,
            all_logits: false,
        })
        .unwrap();
    let mut out = Vec::new();
    for (id, t) in graph.tensors.iter().enumerate() {
        let Some(w) = views[id] else { continue };
        if w.rows < 2 {
            continue;
        }
        let mut all = vec![0f32; w.rows * w.cols];
        for (r, dst) in all.chunks_exact_mut(w.cols).enumerate() {
            vspec_core::quant::dequantize_row(w.format, w.row(r), dst).unwrap();
        }
        out.push((t.name.clone(), all));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[test]
fn q4_0_to_q4_1_is_lossless() {
    let tmp = TempDir::new("q4_0");
    let gguf = tmp.write(
        "tiny-q4_0.gguf",
        &GgufSpec::llama().bytes_with(Format::Q4_0),
    );
    let recipe = tmp.write("r.txt", b"default = Q4_1\n");
    let out = tmp.join("tiny-q4_1.vspec");
    let stderr = convert_ok(&gguf, &["--recipe", s(&recipe), "-t", "2"], &out);
    eprintln!("{stderr}");

    let src = ModelFile::open(&gguf).unwrap();
    let dst = ModelFile::open(&out).unwrap();
    // Every matrix is Q4_1 now and decodes to the same numbers.
    let hdr = dst.vspec().unwrap();
    let mut matrices = 0;
    for t in &hdr.tensors {
        if t.dims.len() == 2 {
            assert_eq!(t.format, Format::Q4_1, "{}", t.name);
            matrices += 1;
        } else {
            assert_eq!(t.format, Format::F32, "{}", t.name);
        }
    }
    assert!(matrices >= 9, "{matrices} matrices");
    let (a, b) = (decoded_matrices(&src), decoded_matrices(&dst));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        // == rather than bits: only the sign of a zero may differ (see transcode_q4_0_to_q4_1).
        let bad = va.iter().zip(vb).position(|(x, y)| x != y);
        assert!(
            bad.is_none(),
            "{na}: weight {bad:?} differs after transcoding"
        );
    }
    assert!(
        stderr.contains(&format!("{matrices} lossless")) || stderr.contains("lossless"),
        "{stderr}"
    );
    let (la, lb) = (logits(&src), logits(&dst));
    let max_diff = la
        .iter()
        .zip(&lb)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("Q4_0 GGUF vs Q4_1 vspec logits: max abs diff {max_diff:e}");
    assert!(
        bits_of(&la) == bits_of(&lb),
        "Q4_0 → Q4_1 logits are not bit-identical (max abs diff {max_diff:e})"
    );
}

#[test]
fn q4_1_to_q4_1_is_a_byte_copy() {
    let tmp = TempDir::new("q4_1");
    let gguf = tmp.write(
        "tiny-q4_1.gguf",
        &GgufSpec::llama().bytes_with(Format::Q4_1),
    );
    let recipe = tmp.write("r.txt", b"# copy\ndefault = Q4_1\n");
    let out = tmp.join("copy.vspec");
    convert_ok(&gguf, &["--recipe", s(&recipe), "-t", "2"], &out);
    let src = ModelFile::open(&gguf).unwrap();
    let dst = ModelFile::open(&out).unwrap();
    for t in &dst.vspec().unwrap().tensors {
        let a = src.raw_tensor(&t.name).unwrap().unwrap();
        let b = dst.raw_tensor(&t.name).unwrap().unwrap();
        assert_eq!(a.format, b.format, "{}", t.name);
        assert_eq!(a.dims, b.dims, "{}", t.name);
        assert!(a.data == b.data, "{}: bytes differ", t.name);
    }
    assert!(
        bits_of(&logits(&src)) == bits_of(&logits(&dst)),
        "logits differ"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input.
// ---------------------------------------------------------------------------------------------

#[test]
fn recipe_pattern_matching_nothing() {
    let tmp = TempDir::new("pattern");
    let r = tmp.write("r.txt", b"default = Q8_0\n# comment\nblk.99.* = VQ4\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["blk.99.*", "r.txt:3", "matches no tensor"],
    );
}

#[test]
fn recipe_unknown_format() {
    let tmp = TempDir::new("unknown-format");
    let r = tmp.write("r.txt", b"default = Q9_X\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["Q9_X", "r.txt:1", "unknown format"],
    );
    // A known format Vspec cannot produce.
    let r = tmp.write("r2.txt", b"default = Q8_0\n*.attn_q.weight = Q4_K\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["Q4_K", "r2.txt:2"],
    );
    // A line without '='.
    let r = tmp.write("r3.txt", b"default = Q8_0\nblk.0.attn_q.weight VQ4\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["r3.txt:2"],
    );
}

#[test]
fn recipe_without_default() {
    let tmp = TempDir::new("no-default");
    let r = tmp.write("r.txt", b"*.attn_v.weight = Q8_0\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["r.txt", "default"],
    );
    let empty = tmp.write("empty.txt", b"");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&empty)],
        tmp.path(),
        "out.vspec",
        &["empty.txt", "default"],
    );
}

#[test]
fn recipe_missing_file() {
    let tmp = TempDir::new("no-recipe");
    let r = tmp.join("nope.txt");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["nope.txt"],
    );
}

#[test]
fn recipe_vq4_on_rows_of_160() {
    let tmp = TempDir::new("rows160");
    // As default.
    let r = tmp.write("r.txt", b"default = VQ4\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["ffn_down.weight", "VQ4", "multiple of 64", "160"],
    );
    // As an override: the message names the rule's line.
    let r = tmp.write("r2.txt", b"default = Q8_0\n\n*.ffn_down.weight = VQ3\n");
    convert_fails(
        &llama_dir(),
        &["--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &[
            "ffn_down.weight",
            "VQ3",
            "r2.txt:3",
            "multiple of 64",
            "160",
        ],
    );
}

#[test]
fn bad_bits_and_flag_conflicts() {
    let tmp = TempDir::new("bits-bad");
    let model = llama_dir();
    for b in ["5", "0", "16", "1"] {
        convert_fails(
            &model,
            &["--bits", b],
            tmp.path(),
            "out.vspec",
            &["--bits", b],
        );
    }
    convert_fails(
        &model,
        &["--bits", "four"],
        tmp.path(),
        "out.vspec",
        &["--bits"],
    );
    let r = tmp.write("r.txt", b"default = Q8_0\n");
    let e = convert_fails(
        &model,
        &["--bits", "4", "--recipe", s(&r)],
        tmp.path(),
        "out.vspec",
        &["--bits", "--recipe"],
    );
    assert!(e.contains("cannot be used with"), "{e}");
    // Neither.
    convert_fails(&model, &[], tmp.path(), "out.vspec", &["--bits"]);
    let out = vspec(&[
        "convert",
        "-m",
        s(&model),
        "--bits",
        "4",
        "--recipe",
        s(&r),
        "-o",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn output_directory_does_not_exist() {
    let tmp = TempDir::new("no-dir");
    let missing = tmp.join("missing");
    let out = missing.join("out.vspec");
    fails_with(
        &[
            "convert",
            "-m",
            s(&llama_dir()),
            "--bits",
            "8",
            "-t",
            "2",
            "-o",
            s(&out),
        ],
        &[s(&out), s(&missing)],
    );
    assert!(!missing.exists(), "the missing directory was created");
    assert!(tmp.entries().is_empty(), "{:?}", tmp.entries());
}

#[test]
fn output_path_is_an_existing_directory() {
    let tmp = TempDir::new("out-is-dir");
    let out = tmp.join("out.vspec");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"keep").unwrap();
    fails_with(
        &[
            "convert",
            "-m",
            s(&llama_dir()),
            "--bits",
            "8",
            "-t",
            "2",
            "-o",
            s(&out),
        ],
        &[s(&out)],
    );
    assert!(out.is_dir(), "the directory was replaced");
    assert_eq!(entries(&out), vec!["keep.txt".to_string()]);
    assert_eq!(
        tmp.entries(),
        vec!["out.vspec".to_string()],
        "temporary file left"
    );
}

#[test]
fn failed_convert_keeps_existing_output() {
    let tmp = TempDir::new("keep-existing");
    let out = tmp.write("out.vspec", b"previous contents");
    let r = tmp.write("r.txt", b"default = VQ4\n");
    fails_with(
        &[
            "convert",
            "-m",
            s(&llama_dir()),
            "--recipe",
            s(&r),
            "-o",
            s(&out),
        ],
        &["ffn_down.weight"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous contents");
    assert_eq!(
        tmp.entries(),
        vec!["out.vspec".to_string(), "r.txt".to_string()]
    );
}

/// A valid `.vspec` (--bits 8) for the damage tests.
fn valid_vspec(tmp: &TempDir) -> (PathBuf, Vec<u8>) {
    let p = tmp.join("good.vspec");
    convert_ok(&llama_dir(), &["--bits", "8", "-t", "2"], &p);
    let bytes = std::fs::read(&p).unwrap();
    (p, bytes)
}

#[test]
fn corrupt_vspec_fails_checksum() {
    let tmp = TempDir::new("corrupt");
    let (_, bytes) = valid_vspec(&tmp);
    let data_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let data_len = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), data_offset + data_len + 16);
    for (i, pos) in [
        data_offset,
        data_offset + data_len / 2,
        data_offset + data_len - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        let p = tmp.write(&format!("bad{i}.vspec"), &bad);
        fails_with(&gen_args(s(&p)), &[s(&p), "checksum"]);
        fails_with(&["inspect", "-m", s(&p)], &[s(&p), "checksum"]);
    }
    // A flipped byte in the stored checksum itself.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 12] ^= 0x80;
    let p = tmp.write("badsum.vspec", &bad);
    fails_with(&gen_args(s(&p)), &[s(&p), "checksum"]);
    // Converting from a corrupt file fails too, and writes nothing.
    let mut bad = bytes.clone();
    bad[data_offset + 7] ^= 0x10;
    let p = tmp.write("bad-src.vspec", &bad);
    convert_fails(&p, &["--bits", "4"], tmp.path(), "out.vspec", &["checksum"]);
}

#[test]
fn truncated_vspec_is_an_error() {
    let tmp = TempDir::new("truncated");
    let (_, bytes) = valid_vspec(&tmp);
    let data_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let n = bytes.len();
    for cut in [
        8,
        20,
        40,
        100,
        data_offset - 1,
        data_offset,
        data_offset + 1000,
        n - 16,
        n - 8,
        n - 1,
    ] {
        let p = tmp.write(&format!("cut{cut}.vspec"), &bytes[..cut]);
        fails_with(&gen_args(s(&p)), &[s(&p)]);
        fails_with(&["inspect", "-m", s(&p)], &[s(&p)]);
    }
    // Cuts shorter than the magic are not recognised as .vspec at all; they fail as GGUF.
    for cut in [0, 3] {
        let p = tmp.write(&format!("cut{cut}.vspec"), &bytes[..cut]);
        fails_with(&gen_args(s(&p)), &[s(&p)]);
    }
}

#[test]
fn imatrix_invalid_json() {
    let tmp = TempDir::new("imatrix-json");
    let bad = tmp.write("stats.json", b"{\"version\": 1, \"tensors\": ");
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&bad)],
        tmp.path(),
        "out.vspec",
        &["stats.json", "calibration"],
    );
    let missing = tmp.join("nope.json");
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&missing)],
        tmp.path(),
        "out.vspec",
        &["nope.json"],
    );
    let v2 = tmp.write(
        "v2.json",
        br#"{"version": 2, "source": "m", "text": "t", "tokens": 1, "tensors": {}}"#,
    );
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&v2)],
        tmp.path(),
        "out.vspec",
        &["v2.json", "version 2"],
    );
    let neg = tmp.write(
        "neg.json",
        br#"{"version": 1, "source": "m", "text": "t", "tokens": 1,
            "tensors": {"blk.0.attn_q.weight": {"rows": 1, "mean_sq": [-1.0]}}}"#,
    );
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&neg)],
        tmp.path(),
        "out.vspec",
        &["neg.json", "blk.0.attn_q.weight"],
    );
}

#[test]
fn imatrix_channel_count_mismatch() {
    let tmp = TempDir::new("imatrix-channels");
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let stats = tmp.join("stats.json");
    succeeds(&[
        "calibrate",
        "-m",
        s(&llama_dir()),
        "-f",
        s(&text),
        "-o",
        s(&stats),
        "--ctx",
        "16",
        "--chunks",
        "1",
        "-t",
        "2",
    ]);
    let mut cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let ms = cal["tensors"]["blk.1.ffn_down.weight"]["mean_sq"]
        .as_array_mut()
        .unwrap();
    assert_eq!(ms.len(), 160);
    ms.truncate(64);
    let bad = tmp.write("bad.json", serde_json::to_string(&cal).unwrap().as_bytes());
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&bad)],
        tmp.path(),
        "out.vspec",
        &["blk.1.ffn_down.weight", "64", "160"],
    );
}

/// The channel-count error should also name the stats file given to --imatrix; today it names
/// the calibration's `source` field (the model it was measured on), which reads as if the model
/// directory were the calibration file.
#[test]
fn imatrix_channel_count_mismatch_names_the_stats_file() {
    let tmp = TempDir::new("imatrix-channels-file");
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let stats = tmp.join("stats.json");
    succeeds(&[
        "calibrate",
        "-m",
        s(&llama_dir()),
        "-f",
        s(&text),
        "-o",
        s(&stats),
        "--ctx",
        "16",
        "--chunks",
        "1",
        "-t",
        "2",
    ]);
    let mut cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    cal["tensors"]["blk.0.attn_q.weight"]["mean_sq"]
        .as_array_mut()
        .unwrap()
        .truncate(32);
    let bad = tmp.write("bad.json", serde_json::to_string(&cal).unwrap().as_bytes());
    convert_fails(
        &llama_dir(),
        &["--bits", "4", "--imatrix", s(&bad)],
        tmp.path(),
        "out.vspec",
        &["bad.json", "blk.0.attn_q.weight"],
    );
}

#[test]
fn calibrate_bad_input() {
    let tmp = TempDir::new("calibrate-bad");
    let model = llama_dir();
    // Missing text file.
    let missing = tmp.join("none.txt");
    let stats = tmp.join("stats.json");
    fails_with(
        &[
            "calibrate",
            "-m",
            s(&model),
            "-f",
            s(&missing),
            "-o",
            s(&stats),
        ],
        &["none.txt"],
    );
    // Too short a text.
    let short = tmp.write("short.txt", b"");
    fails_with(
        &[
            "calibrate",
            "-m",
            s(&model),
            "-f",
            s(&short),
            "-o",
            s(&stats),
        ],
        &["short.txt"],
    );
    // Unwritable output.
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let out = tmp.join("missing").join("stats.json");
    fails_with(
        &[
            "calibrate",
            "-m",
            s(&model),
            "-f",
            s(&text),
            "-o",
            s(&out),
            "--ctx",
            "16",
            "--chunks",
            "1",
        ],
        &[s(&out)],
    );
    assert!(!stats.exists());
    let mut left = tmp.entries();
    left.retain(|e| e != "cal.txt" && e != "short.txt");
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn convert_calibrates_on_the_built_in_text_unless_told_not_to() {
    let tmp = TempDir::new("builtin-cal");
    let model = llama_dir();
    let (auto, off) = (tmp.path().join("auto.vspec"), tmp.path().join("off.vspec"));
    let stderr = convert_ok(&model, &["--bits", "3", "-t", "2"], &auto);
    assert!(stderr.contains("built-in text"), "{stderr}");
    convert_ok(&model, &["--bits", "3", "--no-calibration"], &off);
    let meta = |p: &Path| {
        ModelFile::open(p)
            .unwrap()
            .vspec()
            .unwrap()
            .metadata
            .clone()
    };
    let (ma, mo) = (meta(&auto), meta(&off));
    assert!(
        ma.get("imatrix")
            .is_some_and(|v| v.contains("built-in text")),
        "{ma:?}"
    );
    assert!(!mo.contains_key("imatrix"), "{mo:?}");
    assert_ne!(std::fs::read(&auto).unwrap(), std::fs::read(&off).unwrap());
    // Both run.
    logits(&ModelFile::open(&auto).unwrap());
    logits(&ModelFile::open(&off).unwrap());
    // The built-in calibration is deterministic across thread counts.
    let auto1 = tmp.path().join("auto1.vspec");
    convert_ok(&model, &["--bits", "3", "-t", "1"], &auto1);
    assert_eq!(
        std::fs::read(&auto).unwrap(),
        std::fs::read(&auto1).unwrap()
    );
    // A recipe with nothing to fit in a packed low-bit format (Q8_0 only) does not calibrate.
    let r = tmp.write("r.txt", b"default = Q8_0\n");
    let stderr = convert_ok(&model, &["--recipe", s(&r)], &tmp.path().join("q8.vspec"));
    assert!(!stderr.contains("calibrating"), "{stderr}");
    // --no-calibration and --imatrix contradict each other.
    let cal = tmp.write("cal.json", b"{}");
    let out = vspec(&[
        "convert",
        "-m",
        s(&model),
        "--bits",
        "3",
        "--no-calibration",
        "--imatrix",
        s(&cal),
        "-o",
        s(&tmp.path().join("x.vspec")),
    ]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    no_output(tmp.path(), "x.vspec");
}

/// A process id no process can have: above the kernel's limit (Linux), or the largest u32.
fn impossible_pid() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(u64::from(u32::MAX), |max| max + 1)
}

#[test]
fn convert_removes_temporaries_of_dead_writers_only() {
    let tmp = TempDir::new("stale-temps");
    let dead = impossible_pid();
    let alive = std::process::id();
    // Left by writers that were killed: this one's process is gone, as is the older name's.
    let stale = [
        format!(".out.vspec.tmp-{dead}-0"),
        format!(".out.vspec.tmp-{dead}"),
    ];
    // This test process is alive: its file may still be being written.
    let live = format!(".out.vspec.tmp-{alive}-0");
    // Temporaries of another target, and names that only look alike, are not ours to judge.
    let unrelated = [
        format!(".other.vspec.tmp-{dead}-0"),
        format!(".out.vspec.tmp-{dead}-x"),
    ];
    for name in stale.iter().chain([&live]).chain(&unrelated) {
        tmp.write(name, b"partial");
    }
    let out = tmp.join("out.vspec");
    succeeds(&[
        "convert",
        "-m",
        s(&llama_dir()),
        "--bits",
        "8",
        "-t",
        "2",
        "-o",
        s(&out),
    ]);
    let mut expect: Vec<String> = [live, "out.vspec".into()]
        .into_iter()
        .chain(unrelated)
        .collect();
    if !cfg!(target_os = "linux") {
        // Without /proc nothing can be told dead: every file stays.
        expect.extend(stale);
    }
    expect.sort();
    assert_eq!(tmp.entries(), expect);
}
