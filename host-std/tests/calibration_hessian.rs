//! `vspec calibrate --hessian` and the GPTQ path of `vspec convert --imatrix`, end to end through
//! the real binary, plus the binary (version 2) stats file format through the library:
//!
//! 1. the file `calibrate --hessian` writes loads back, its layout is the documented one, Q/K/V
//!    share a matrix, each matrix's diagonal is the tensor's `mean_sq`, and each matrix equals
//!    `E[x xᵀ]` recomputed here from the model's own matmul inputs;
//! 2. calibration and GPTQ conversion are byte-identical across thread counts, and the converted
//!    file runs (`generate`, `perplexity`);
//! 3. damaged stats files fail `convert` cleanly, naming the file, leaving no output;
//! 4. `Calibration::save` / `load` round-trip a hand-built calibration exactly.
//!
//! The model is the tiny Hugging Face Llama fixture (tests/fixtures/hf/llama: hidden 64,
//! intermediate 160, 2 layers, vocab 320).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vspec_core::graph::Limits;
use vspec_host::quantize::calibrate::{Calibration, ChannelStats, SecondMoment};
use vspec_host::{Engine, ModelFile};

use common::*;

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Calibration chunking used throughout: 2 chunks of 16 tokens.
const CTX: usize = 16;
const CHUNKS: usize = 2;

/// `vspec calibrate` on the fixture over `text` (2 chunks of 16 tokens) into `out`.
fn calibrate(text: &Path, out: &Path, hessian: bool, threads: &str) {
    let ctx = CTX.to_string();
    let chunks = CHUNKS.to_string();
    let model = llama_dir();
    let mut args = vec![
        "calibrate",
        "-m",
        s(&model),
        "-f",
        s(text),
        "-o",
        s(out),
        "--ctx",
        &ctx,
        "--chunks",
        &chunks,
        "-t",
        threads,
    ];
    if hessian {
        args.push("--hessian");
    }
    let (_, stderr) = succeeds(&args);
    assert!(out.is_file(), "{} not written:\n{stderr}", out.display());
    let dir = out.parent().unwrap();
    let left: Vec<String> = entries(dir)
        .into_iter()
        .filter(|e| e.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "calibrate left temporary files: {left:?}");
}

/// A `--hessian` stats file of the fixture in `tmp`, with `-t 2`.
fn hessian_stats(tmp: &TempDir) -> PathBuf {
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let stats = tmp.join("stats.bin");
    calibrate(&text, &stats, true, "2");
    stats
}

/// `vspec convert -m fixture --bits BITS [--imatrix STATS] -t T -o out`, expected to succeed.
#[track_caller]
fn convert_ok(bits: &str, imatrix: Option<&Path>, threads: &str, out: &Path) -> Vec<u8> {
    let model = llama_dir();
    let mut args = vec!["convert", "-m", s(&model), "--bits", bits, "-t", threads];
    if let Some(p) = imatrix {
        args.extend_from_slice(&["--imatrix", s(p)]);
    }
    args.extend_from_slice(&["-o", s(out)]);
    let (_, stderr) = succeeds(&args);
    assert!(stderr.contains("wrote"), "{stderr}");
    assert!(out.is_file(), "{} not written", out.display());
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    let tmp_prefix = format!(".{name}.tmp-");
    for e in entries(out.parent().unwrap()) {
        assert!(!e.starts_with(&tmp_prefix), "temporary file {e} left");
    }
    std::fs::read(out).unwrap()
}

/// The parts of a version-2 stats file: (JSON header, offset of the matrices).
fn split_binary(bytes: &[u8]) -> (serde_json::Value, usize) {
    assert_eq!(&bytes[..8], b"VSPECCAL", "magic");
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[24..24 + json_len]).unwrap();
    (header, (24 + json_len).div_ceil(64) * 64)
}

/// A version-2 stats file from a header and the matrices' bytes, laid out as documented.
fn assemble_binary(version: u32, header: &[u8], matrices: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"VSPECCAL");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(header.len() as u64).to_le_bytes());
    b.extend_from_slice(header);
    b.resize(b.len().div_ceil(64) * 64, 0);
    b.extend_from_slice(matrices);
    b
}

/// `a` and `b` agree within `rel` of `scale` (plus a tiny absolute floor for exact zeros).
fn close(a: f64, b: f64, scale: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * scale.abs() + 1e-12
}

// ---------------------------------------------------------------------------------------------
// 1. What `calibrate --hessian` writes.
// ---------------------------------------------------------------------------------------------

/// Every matrix the graph multiplies by, for the 2-layer fixture.
fn fixture_matrices() -> Vec<String> {
    let mut v = vec!["output.weight".to_string()];
    for l in 0..2 {
        for t in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            v.push(format!("blk.{l}.{t}.weight"));
        }
    }
    v.sort();
    v
}

#[test]
fn hessian_file_loads_and_matches_mean_sq() {
    let tmp = TempDir::new("layout");
    let stats = hessian_stats(&tmp);
    let bytes = std::fs::read(&stats).unwrap();

    // Layout: magic, version 2, reserved 0, header length, header, zero padding, matrices.
    assert_eq!(&bytes[..8], b"VSPECCAL");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 0);
    let json_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let (header, data_start) = split_binary(&bytes);
    assert_eq!(data_start % 64, 0);
    assert!(
        bytes[24 + json_len..data_start].iter().all(|&b| b == 0),
        "padding is not zero"
    );
    assert_eq!(header["version"], 2, "{header}");
    let dims: Vec<usize> = header["hessian_dims"]
        .as_array()
        .expect("hessian_dims in the header")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let floats: usize = dims.iter().map(|n| n * (n + 1) / 2).sum();
    assert_eq!(bytes.len(), data_start + 4 * floats, "file length");

    let cal = Calibration::load(&stats).unwrap();
    assert_eq!(cal.version, 2);
    assert_eq!(cal.file, stats.display().to_string());
    assert_eq!(cal.tokens, (CTX * CHUNKS) as u64);
    assert_eq!(cal.hessian_dims, dims);
    assert_eq!(cal.hessians.len(), dims.len());
    for (m, &n) in cal.hessians.iter().zip(&dims) {
        assert_eq!(m.n, n);
        assert_eq!(m.upper.len(), n * (n + 1) / 2);
    }
    let names: Vec<String> = cal.tensors.keys().cloned().collect();
    assert_eq!(names, fixture_matrices(), "tensors in the stats file");

    // Every matrix has an input matrix of its width, and each stored matrix is used.
    let mut used = vec![false; cal.hessians.len()];
    for (name, t) in &cal.tensors {
        let h = t
            .hessian
            .unwrap_or_else(|| panic!("{name}: no hessian index"));
        assert!(h < cal.hessians.len(), "{name}: index {h}");
        assert_eq!(cal.hessians[h].n, t.mean_sq.len(), "{name}: width");
        assert_eq!(t.rows, (CTX * CHUNKS) as u64, "{name}: rows");
        used[h] = true;
    }
    assert!(used.iter().all(|&u| u), "an unused matrix: {used:?}");

    // Inputs shared: Q, K and V read the attention norm's output, gate and up the FFN norm's.
    // Per layer 4 distinct inputs (qkv, attn_output, gate/up, down), plus the output head.
    let idx = |n: &str| cal.tensors[n].hessian.unwrap();
    for l in 0..2 {
        let q = idx(&format!("blk.{l}.attn_q.weight"));
        assert_eq!(q, idx(&format!("blk.{l}.attn_k.weight")), "layer {l}: Q/K");
        assert_eq!(q, idx(&format!("blk.{l}.attn_v.weight")), "layer {l}: Q/V");
        let gate = idx(&format!("blk.{l}.ffn_gate.weight"));
        assert_eq!(gate, idx(&format!("blk.{l}.ffn_up.weight")), "layer {l}");
        let o = idx(&format!("blk.{l}.attn_output.weight"));
        let down = idx(&format!("blk.{l}.ffn_down.weight"));
        let mut distinct = vec![q, gate, o, down];
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "layer {l}: {q} {gate} {o} {down}");
    }
    assert_ne!(idx("blk.0.attn_q.weight"), idx("blk.1.attn_q.weight"));
    assert_eq!(cal.hessians.len(), 9, "{:?}", cal.hessian_dims);

    // Diagonal ≥ 0 and equal to mean_sq; |H_ij| ≤ sqrt(H_ii H_jj) (a PSD matrix's 2×2 minors).
    for (name, t) in &cal.tensors {
        let m = &cal.hessians[t.hessian.unwrap()];
        let n = m.n;
        let full = m.full();
        for i in 0..n {
            let d = full[i * n + i];
            assert!(d >= 0.0, "{name}: H[{i},{i}] = {d}");
            let ms = t.mean_sq[i] as f64;
            assert!(
                close(d, ms, ms, 1e-4),
                "{name}: H[{i},{i}] = {d}, mean_sq[{i}] = {ms}"
            );
        }
        for i in 0..n {
            for j in 0..n {
                let (hij, hii, hjj) = (full[i * n + j], full[i * n + i], full[j * n + j]);
                assert_eq!(hij, full[j * n + i], "{name}: not symmetric at ({i},{j})");
                assert!(
                    hij.abs() <= (hii * hjj).sqrt() * (1.0 + 1e-4) + 1e-12,
                    "{name}: |H[{i},{j}]| = {} > sqrt({hii} * {hjj})",
                    hij.abs()
                );
            }
        }
        // xᵀ H x ≥ 0 for a few fixed vectors.
        for seed in 1..=4u64 {
            let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let x: Vec<f64> = (0..n)
                .map(|_| {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
                })
                .collect();
            let mut q = 0f64;
            let mut scale = 0f64;
            for i in 0..n {
                for j in 0..n {
                    q += x[i] * full[i * n + j] * x[j];
                    scale += (x[i] * full[i * n + j] * x[j]).abs();
                }
            }
            assert!(q >= -1e-5 * scale, "{name}: xᵀHx = {q} (scale {scale})");
        }
    }

    // The diagonal-only file of the same run holds the same mean_sq, bit for bit.
    let json_stats = tmp.join("stats.json");
    calibrate(&tmp.join("cal.txt"), &json_stats, false, "2");
    let plain = Calibration::load(&json_stats).unwrap();
    assert_eq!(plain.version, 1);
    assert!(plain.hessians.is_empty() && plain.hessian_dims.is_empty());
    assert_eq!(plain.tokens, cal.tokens);
    assert_eq!(
        plain.tensors.keys().collect::<Vec<_>>(),
        cal.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &plain.tensors {
        let h = &cal.tensors[name];
        assert_eq!(t.hessian, None, "{name}");
        assert_eq!(t.rows, h.rows, "{name}");
        let a: Vec<u32> = t.mean_sq.iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = h.mean_sq.iter().map(|v| v.to_bits()).collect();
        assert_eq!(a, b, "{name}: mean_sq differs with --hessian");
    }
}

/// Each weight's stored matrix is `E[x xᵀ]` of that weight's own input, recomputed here in f64
/// from the matmul inputs the session shows an observer (same chunks as `calibrate`).
#[test]
fn hessian_matrices_equal_recomputed_second_moments() {
    let tmp = TempDir::new("recompute");
    let stats = hessian_stats(&tmp);
    let cal = Calibration::load(&stats).unwrap();

    let model = ModelFile::open(&llama_dir()).unwrap();
    let tokens = model.tokenizer().unwrap().encode(CAL_TEXT, true).unwrap();
    assert!(tokens.len() >= CTX * CHUNKS, "{} tokens", tokens.len());
    let lim = Limits {
        max_ctx: CTX,
        max_tokens: CTX,
        all_logits: true,
    };
    let mut engine = Engine::new(&model, lim, 1).unwrap();
    let mut sess = engine.session().unwrap();
    // Per weight: (rows, Σ x xᵀ as a full n × n matrix).
    let mut sums: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    for c in 0..CHUNKS {
        sess.reset();
        let mut observe = |name: &str, input: &str, x: &[f32], cols: usize| {
            inputs.insert(name.to_string(), input.to_string());
            let e = sums
                .entry(name.to_string())
                .or_insert_with(|| (0, vec![0f64; cols * cols]));
            for row in x.chunks_exact(cols) {
                for i in 0..cols {
                    for j in 0..cols {
                        e.1[i * cols + j] += row[i] as f64 * row[j] as f64;
                    }
                }
                e.0 += 1;
            }
        };
        sess.forward_observed(&tokens[c * CTX..(c + 1) * CTX], Some(&mut observe))
            .unwrap();
    }
    assert_eq!(
        sums.keys().collect::<Vec<_>>(),
        cal.tensors.keys().collect::<Vec<_>>()
    );
    // Weights that read the same activation share a matrix, and only those.
    for (a, ia) in &inputs {
        for (b, ib) in &inputs {
            assert_eq!(
                ia == ib,
                cal.tensors[a].hessian == cal.tensors[b].hessian,
                "{a} reads {ia}, {b} reads {ib}"
            );
        }
    }
    let mut worst = 0f64;
    for (name, (rows, sum)) in &sums {
        assert_eq!(*rows, (CTX * CHUNKS) as u64, "{name}");
        let stored = cal.hessians[cal.tensors[name].hessian.unwrap()].full();
        let n = cal.tensors[name].mean_sq.len();
        assert_eq!(stored.len(), n * n);
        let want: Vec<f64> = sum.iter().map(|v| v / *rows as f64).collect();
        for i in 0..n {
            for j in 0..n {
                let scale = (want[i * n + i] * want[j * n + j]).sqrt();
                let (a, b) = (stored[i * n + j], want[i * n + j]);
                worst = worst.max((a - b).abs() / scale.max(1e-30));
                assert!(
                    close(a, b, scale, 1e-4),
                    "{name}: H[{i},{j}] stored {a}, recomputed {b} (scale {scale})"
                );
            }
        }
    }
    eprintln!("stored vs recomputed E[x xᵀ]: worst relative difference {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// 2. Determinism, and the GPTQ-converted file runs.
// ---------------------------------------------------------------------------------------------

#[test]
fn hessian_calibration_and_gptq_convert_are_thread_count_independent() {
    let tmp = TempDir::new("determinism");
    let text = tmp.write("cal.txt", CAL_TEXT.as_bytes());
    let s1 = tmp.join("stats-t1.bin");
    let s2 = tmp.join("stats-t2.bin");
    calibrate(&text, &s1, true, "1");
    calibrate(&text, &s2, true, "2");
    assert!(
        std::fs::read(&s1).unwrap() == std::fs::read(&s2).unwrap(),
        "calibrate --hessian -t 1 and -t 2 differ"
    );

    let g1 = convert_ok("3", Some(&s2), "1", &tmp.join("gptq-t1.vspec"));
    let g2 = convert_ok("3", Some(&s2), "2", &tmp.join("gptq-t2.vspec"));
    assert!(
        g1 == g2,
        "convert --bits 3 --imatrix (GPTQ) -t 1 and -t 2 differ"
    );
    let again = convert_ok("3", Some(&s2), "2", &tmp.join("gptq-again.vspec"));
    assert!(g2 == again, "two identical GPTQ conversions differ");

    // The matrices change the result: against the diagonal-only stats and against none.
    let diag_stats = tmp.join("stats.json");
    calibrate(&text, &diag_stats, false, "2");
    let diag = convert_ok("3", Some(&diag_stats), "2", &tmp.join("diag.vspec"));
    let plain = convert_ok("3", None, "2", &tmp.join("plain.vspec"));
    assert!(g2 != diag, "--hessian stats made no difference to convert");
    assert!(g2 != plain, "--imatrix made no difference to convert");
    assert_eq!(g2.len(), diag.len(), "same formats, same size");

    let gptq = tmp.join("gptq-t2.vspec");
    let m = ModelFile::open(&gptq).unwrap();
    let meta = &m.vspec().unwrap().metadata;
    assert!(
        meta.get("imatrix")
            .is_some_and(|v| v.contains(&format!("{} tokens", CTX * CHUNKS))),
        "{meta:?}"
    );
    drop(m);

    // It runs: generate, and perplexity with a finite result.
    let (text_out, gen_err) = succeeds(&gen_args(s(&gptq)));
    assert!(!gen_err.contains("error"), "{gen_err}");
    eprintln!("GPTQ --bits 3: generated {text_out:?}");
    let mut ppls = Vec::new();
    for (label, model) in [
        ("gptq", &gptq),
        ("diag", &tmp.join("diag.vspec")),
        ("plain", &tmp.join("plain.vspec")),
    ] {
        let json = tmp.join(&format!("ppl-{label}.json"));
        succeeds(&[
            "perplexity",
            "-m",
            s(model),
            "-f",
            s(&text),
            "--ctx",
            "16",
            "--chunks",
            "2",
            "-t",
            "1",
            "--json",
            s(&json),
        ]);
        let ppl = read_json(&json)["ppl"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl > 1.0, "{label}: ppl {ppl}");
        ppls.push((label, ppl));
    }
    eprintln!("--bits 3 perplexity on the calibration text: {ppls:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Damaged stats files.
// ---------------------------------------------------------------------------------------------

/// `convert --bits 3 --imatrix bad -o tmp/out/out.vspec` fails naming `bad` (and `needles`), and
/// leaves the output directory empty. Returns stderr.
#[track_caller]
fn imatrix_rejected(tmp: &TempDir, bad: &Path, needles: &[&str]) -> String {
    let out_dir = tmp.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("out.vspec");
    let model = llama_dir();
    let mut want = vec![s(bad)];
    want.extend_from_slice(needles);
    let e = fails_with(
        &[
            "convert",
            "-m",
            s(&model),
            "--bits",
            "3",
            "--imatrix",
            s(bad),
            "-t",
            "2",
            "-o",
            s(&out),
        ],
        &want,
    );
    assert!(!out.exists(), "{} written", out.display());
    assert!(
        entries(&out_dir).is_empty(),
        "left in the output directory: {:?}",
        entries(&out_dir)
    );
    e
}

#[test]
fn damaged_hessian_files_are_rejected() {
    let tmp = TempDir::new("damaged");
    let stats = hessian_stats(&tmp);
    let good = std::fs::read(&stats).unwrap();
    let (header, data_start) = split_binary(&good);
    let json_len = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    let matrices = &good[data_start..];
    assert!(matrices.len() > 1000);
    // The intact file converts (so every failure below is the damage's doing).
    convert_ok("3", Some(&stats), "2", &tmp.join("ok.vspec"));
    std::fs::remove_file(tmp.join("ok.vspec")).unwrap();

    // Truncated: in the middle of the matrices, at their start, inside the header, inside the
    // fixed fields.
    for (name, cut) in [
        ("cut-matrices.bin", data_start + matrices.len() / 2),
        ("cut-last-byte.bin", good.len() - 1),
        ("cut-at-matrices.bin", data_start),
        ("cut-header.bin", 24 + json_len / 2),
        ("cut-fields.bin", 20),
    ] {
        let p = tmp.write(name, &good[..cut]);
        imatrix_rejected(&tmp, &p, &[]);
    }

    // Wrong version field (3, and 1: a binary file is version 2).
    for v in [3u32, 1] {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        let p = tmp.write(&format!("version{v}.bin"), &b);
        imatrix_rejected(&tmp, &p, &["version"]);
    }
    // The header's own version disagrees with the field.
    let mut h = header.clone();
    h["version"] = 1.into();
    let p = tmp.write(
        "header-version.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
    );
    imatrix_rejected(&tmp, &p, &["version"]);

    // Garbage JSON header of the same length.
    let mut b = good.clone();
    for x in &mut b[24..24 + json_len] {
        *x = b'#';
    }
    let p = tmp.write("garbage-header.bin", &b);
    imatrix_rejected(&tmp, &p, &[]);
    // Valid JSON, not a calibration header.
    let p = tmp.write(
        "wrong-json.bin",
        &assemble_binary(2, br#"{"hello": "world"}"#, matrices),
    );
    imatrix_rejected(&tmp, &p, &[]);
    // A header length past the end of the file.
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(good.len() as u64 + 1).to_le_bytes());
    let p = tmp.write("header-too-long.bin", &b);
    imatrix_rejected(&tmp, &p, &[]);
    let mut b = good.clone();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = tmp.write("header-len-max.bin", &b);
    imatrix_rejected(&tmp, &p, &[]);

    // Extra trailing bytes (one, and a whole padding block).
    for extra in [1usize, 64] {
        let mut b = good.clone();
        b.extend(std::iter::repeat_n(0u8, extra));
        let p = tmp.write(&format!("trailing{extra}.bin"), &b);
        imatrix_rejected(&tmp, &p, &[]);
    }

    // A NaN (and an infinity) in a matrix: the first value, one in the middle, the last.
    let n_floats = matrices.len() / 4;
    for (name, k, v) in [
        ("nan-first.bin", 0, f32::NAN),
        ("nan-middle.bin", n_floats / 2 + 1, f32::NAN),
        ("nan-last.bin", n_floats - 1, f32::NAN),
        ("inf.bin", n_floats / 3, f32::INFINITY),
    ] {
        let mut b = good.clone();
        let at = data_start + 4 * k;
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let p = tmp.write(name, &b);
        imatrix_rejected(&tmp, &p, &["non-finite"]);
    }

    // A tensor's index past the matrices (header rewritten, length and padding fixed).
    let n_mat = header["hessian_dims"].as_array().unwrap().len();
    for (name, idx) in [("index-past.bin", n_mat), ("index-huge.bin", 1_000_000)] {
        let mut h = header.clone();
        h["tensors"]["blk.1.ffn_up.weight"]["hessian"] = idx.into();
        let p = tmp.write(
            name,
            &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
        );
        imatrix_rejected(&tmp, &p, &["blk.1.ffn_up.weight"]);
    }
    // An index to a matrix of another width: ffn_down (160 wide) pointing at Q's (64).
    let mut h = header.clone();
    let q = h["tensors"]["blk.0.attn_q.weight"]["hessian"].clone();
    h["tensors"]["blk.0.ffn_down.weight"]["hessian"] = q;
    let p = tmp.write(
        "index-width.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
    );
    imatrix_rejected(&tmp, &p, &["blk.0.ffn_down.weight"]);

    // hessian_dims not matching the data: one fewer matrix (extra bytes), one more (truncated),
    // a width whose triangle overflows.
    let dims = header["hessian_dims"].as_array().unwrap().clone();
    let mut h = header.clone();
    let mut fewer = dims.clone();
    fewer.pop();
    h["hessian_dims"] = fewer.into();
    let p = tmp.write(
        "dims-fewer.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
    );
    imatrix_rejected(&tmp, &p, &[]);
    let mut h = header.clone();
    let mut more = dims.clone();
    more.push(64.into());
    h["hessian_dims"] = more.into();
    let p = tmp.write(
        "dims-more.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
    );
    imatrix_rejected(&tmp, &p, &[]);
    let mut h = header.clone();
    let mut huge = dims.clone();
    huge[0] = (u64::MAX / 2).into();
    h["hessian_dims"] = huge.into();
    let p = tmp.write(
        "dims-huge.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), matrices),
    );
    imatrix_rejected(&tmp, &p, &[]);

    // A JSON (version 1) file may not claim matrices.
    let mut h = header.clone();
    h["version"] = 1.into();
    let p = tmp.write("v1-with-dims.json", &serde_json::to_vec(&h).unwrap());
    imatrix_rejected(&tmp, &p, &[]);

    // Nothing but the inputs is left in the directory.
    let left: Vec<String> = tmp
        .entries()
        .into_iter()
        .filter(|e| e.contains("tmp") || e.ends_with(".vspec"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. save / load round trip.
// ---------------------------------------------------------------------------------------------

fn hand_built() -> Calibration {
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "blk.0.attn_q.weight".to_string(),
        ChannelStats {
            rows: 7,
            mean_sq: vec![1.5, 0.25, 3.0],
            hessian: Some(0),
        },
    );
    tensors.insert(
        "blk.0.attn_k.weight".to_string(),
        ChannelStats {
            rows: 7,
            mean_sq: vec![1.5, 0.25, 3.0],
            hessian: Some(0),
        },
    );
    tensors.insert(
        "blk.0.ffn_down.weight".to_string(),
        ChannelStats {
            rows: 7,
            mean_sq: vec![0.0, 1e-30],
            hessian: Some(1),
        },
    );
    tensors.insert(
        "output.weight".to_string(),
        ChannelStats {
            rows: 3,
            mean_sq: vec![2.0, 4.0, 8.0, 16.0],
            hessian: None,
        },
    );
    Calibration {
        version: 2,
        source: "some/model dir".to_string(),
        text: "cal \"text\".txt".to_string(),
        tokens: 7,
        tied_head: Some(false),
        rotation: None,
        tensors,
        hessian_dims: vec![3, 2],
        hessians: vec![
            SecondMoment {
                n: 3,
                // Row 0: (0,0) (0,1) (0,2); row 1: (1,1) (1,2); row 2: (2,2).
                upper: vec![1.5, -0.5, 0.1, 0.25, -0.0, 3.0],
            },
            SecondMoment {
                n: 2,
                upper: vec![0.0, f32::MIN_POSITIVE / 4.0, 1e-30],
            },
        ],
        file: String::new(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn save_load_round_trip() {
    let tmp = TempDir::new("round-trip");
    let c = hand_built();
    let p = tmp.join("hand.bin");
    c.save(&p).unwrap();
    assert_eq!(
        tmp.entries(),
        vec!["hand.bin".to_string()],
        "temporary left"
    );

    // The documented layout.
    let bytes = std::fs::read(&p).unwrap();
    let (header, data_start) = split_binary(&bytes);
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 0);
    assert_eq!(header["hessian_dims"], serde_json::json!([3, 2]));
    assert_eq!(header["tensors"]["blk.0.ffn_down.weight"]["hessian"], 1);
    assert!(
        header["tensors"]["output.weight"].get("hessian").is_none(),
        "{header}"
    );
    let mut want_data = Vec::new();
    for m in &c.hessians {
        for v in &m.upper {
            want_data.extend_from_slice(&v.to_le_bytes());
        }
    }
    assert_eq!(&bytes[data_start..], &want_data[..], "matrix bytes");

    let back = Calibration::load(&p).unwrap();
    assert_eq!(back.file, p.display().to_string());
    assert_eq!(back.version, c.version);
    assert_eq!(back.source, c.source);
    assert_eq!(back.text, c.text);
    assert_eq!(back.tokens, c.tokens);
    assert_eq!(back.hessian_dims, c.hessian_dims);
    assert_eq!(
        back.tensors.keys().collect::<Vec<_>>(),
        c.tensors.keys().collect::<Vec<_>>()
    );
    for (name, t) in &c.tensors {
        let b = &back.tensors[name];
        assert_eq!(b.rows, t.rows, "{name}");
        assert_eq!(b.hessian, t.hessian, "{name}");
        assert_eq!(bits(&b.mean_sq), bits(&t.mean_sq), "{name}");
    }
    assert_eq!(back.hessians.len(), c.hessians.len());
    for (a, b) in back.hessians.iter().zip(&c.hessians) {
        assert_eq!(a.n, b.n);
        assert_eq!(bits(&a.upper), bits(&b.upper), "matrix of width {}", a.n);
    }
    let mut expect = c.clone();
    expect.file = back.file.clone();
    assert_eq!(back, expect);

    // Saving what was loaded gives the same bytes; saving over an existing file replaces it.
    let p2 = tmp.join("again.bin");
    back.save(&p2).unwrap();
    assert_eq!(std::fs::read(&p2).unwrap(), bytes);
    let mut changed = c.clone();
    changed.tokens = 9;
    changed.save(&p2).unwrap();
    assert_eq!(Calibration::load(&p2).unwrap().tokens, 9);

    // The full matrix is the symmetric expansion of the triangle.
    let full = back.hessians[0].full();
    assert_eq!(
        full,
        vec![
            1.5,
            -0.5,
            0.1f32 as f64,
            -0.5,
            0.25,
            -0.0,
            0.1f32 as f64,
            -0.0,
            3.0
        ]
    );

    // Without matrices: a version-1 JSON file, which round-trips as well.
    let mut v1 = c.clone();
    v1.version = 1;
    v1.hessians.clear();
    v1.hessian_dims.clear();
    for t in v1.tensors.values_mut() {
        t.hessian = None;
    }
    let pj = tmp.join("plain.json");
    v1.save(&pj).unwrap();
    let text = std::fs::read_to_string(&pj).unwrap();
    assert!(text.starts_with('{'), "{text}");
    assert!(!text.contains("hessian"), "{text}");
    let back1 = Calibration::load(&pj).unwrap();
    let mut expect1 = v1.clone();
    expect1.file = pj.display().to_string();
    assert_eq!(back1, expect1);
    let mut left = tmp.entries();
    left.retain(|e| e.contains("tmp"));
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A stats file the loader accepts (finite, widths right) whose matrix is not positive
/// semi-definite, beyond what damping repairs: convert fails naming the file and the tensor, and
/// leaves nothing behind (the failure comes after the output was opened).
#[test]
fn indefinite_matrix_fails_convert_cleanly() {
    let tmp = TempDir::new("indefinite");
    let stats = hessian_stats(&tmp);
    let good = std::fs::read(&stats).unwrap();
    let (_, data_start) = split_binary(&good);
    let cal = Calibration::load(&stats).unwrap();
    // The matrix Q of layer 1 reads: diagonal 1, every other entry 100 (eigenvalue 1 − 100).
    let h = cal.tensors["blk.1.attn_q.weight"].hessian.unwrap();
    let before: usize = cal.hessians[..h].iter().map(|m| m.upper.len()).sum();
    let n = cal.hessians[h].n;
    let mut b = good.clone();
    let mut k = data_start + 4 * before;
    for i in 0..n {
        for j in i..n {
            let v: f32 = if i == j { 1.0 } else { 100.0 };
            b[k..k + 4].copy_from_slice(&v.to_le_bytes());
            k += 4;
        }
    }
    let p = tmp.write("indefinite.bin", &b);
    Calibration::load(&p).expect("the loader does not check definiteness");
    imatrix_rejected(&tmp, &p, &["blk.1.attn_"]);
}

/// A `hessian_dims` entry of `usize::MAX` that no tensor names: `n(n+1)/2` must not wrap (it once
/// did, making the matrix count as 0 floats); it is rejected as too large for the file.
#[test]
fn hessian_width_of_usize_max_is_rejected() {
    let tmp = TempDir::new("dims-overflow");
    let stats = hessian_stats(&tmp);
    let good = std::fs::read(&stats).unwrap();
    let (header, data_start) = split_binary(&good);
    let mut h = header.clone();
    let mut dims = header["hessian_dims"].as_array().unwrap().clone();
    dims.push(u64::MAX.into());
    h["hessian_dims"] = dims.into();
    let p = tmp.write(
        "dims-overflow.bin",
        &assemble_binary(2, &serde_json::to_vec(&h).unwrap(), &good[data_start..]),
    );
    imatrix_rejected(&tmp, &p, &[]);
}

/// Stats from a model with a tied head applied to one with a separate head (or the reverse) would
/// compensate `token_embd.weight` with the head's input matrix: refused, naming the file.
#[test]
fn stats_from_a_model_with_the_other_head_kind_are_rejected() {
    let tmp = TempDir::new("head-kind");
    let stats = hessian_stats(&tmp);
    let mut cal = Calibration::load(&stats).unwrap();
    let tied = cal.tied_head.expect("calibrate records the head kind");
    cal.tied_head = Some(!tied);
    let flipped = tmp.join("flipped.stats");
    cal.save(&flipped).unwrap();
    imatrix_rejected(&tmp, &flipped, &["output head"]);
    // Older files without the field are accepted.
    cal.tied_head = None;
    let old = tmp.join("old.stats");
    cal.save(&old).unwrap();
    let out = tmp.join("old.vspec");
    convert_ok("3", Some(&old), "2", &out);
}
