//! Bit-exact golden values recorded before the kernel-contract refactor (issue 10): the scalar
//! reference kernels must keep producing exactly these bits, for every fixture model and every
//! weight format. Faster tiers are checked against the scalar references elsewhere (within a
//! stated tolerance); this test pins the references themselves.
//!
//! Each entry is an FNV-1a 64 hash of the little-endian f32 bits (or of the quantized bytes).
//! `VSPEC_RECORD_GOLDEN=1` rewrites `tests/fixtures/golden/golden.json` instead of checking; do
//! that only for a change that is meant to alter the reference numbers, and say why in the commit.

use std::collections::BTreeMap;
use vspec_core::format::Format;
use vspec_core::graph::Limits;
use vspec_core::kernels::{ActKind, KernelTable, MatMulKernel, SharedOut};
use vspec_core::model::WeightView;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, smollm2_gguf};

fn fnv64(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn hash_f32(v: &[f32]) -> String {
    fnv64(v.iter().flat_map(|x| x.to_le_bytes()))
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f32 {
        let s: f32 = (0..12)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        s - 6.0
    }
}

fn golden_path() -> std::path::PathBuf {
    fixtures().join("golden").join("golden.json")
}

fn scalar_table() -> KernelTable {
    KernelTable::scalar()
}

/// Logits of the HF fixtures (all positions) and of SmolLM2 when present, scalar kernels.
fn model_hashes(out: &mut BTreeMap<String, String>) {
    for name in ["llama", "llama_rope3", "qwen2", "qwen3"] {
        let dir = fixtures().join("hf").join(name);
        let model = ModelFile::open(&dir).unwrap();
        let text = "The quick brown fox jumps over the lazy dog. 1234 + 5678 = 6912!";
        let tokens = model.tokenizer().unwrap().encode(text, false).unwrap();
        let mut first: Option<String> = None;
        for (step, threads) in [(64, 1), (1, 2), (5, 2)] {
            let lim = Limits {
                max_ctx: 64,
                max_tokens: step,
                all_logits: true,
            };
            let mut engine = Engine::with_kernels(&model, lim, threads, scalar_table()).unwrap();
            let mut sess = engine.session().unwrap();
            let mut all = Vec::new();
            for chunk in tokens.chunks(step) {
                all.extend_from_slice(sess.forward(chunk).unwrap());
            }
            let h = hash_f32(&all);
            match &first {
                None => first = Some(h),
                Some(f) => assert_eq!(&h, f, "{name}: step {step}, {threads} threads"),
            }
        }
        out.insert(format!("logits/{name}/scalar"), first.unwrap());
    }
    if let Some(path) = smollm2_gguf() {
        let model = ModelFile::open(&path).unwrap();
        let text = "Vspec runs language models from packed weights. The capital of France is";
        let tokens = model.tokenizer().unwrap().encode(text, false).unwrap();
        let lim = Limits {
            max_ctx: 64,
            max_tokens: 64,
            all_logits: true,
        };
        let mut engine = Engine::with_kernels(&model, lim, 2, scalar_table()).unwrap();
        let mut sess = engine.session().unwrap();
        let all = sess.forward(&tokens).unwrap().to_vec();
        out.insert("logits/smollm2/scalar".into(), hash_f32(&all));
    }
}

/// Quantized bytes (formats the quantizer writes) and scalar matmul outputs for every format.
fn kernel_hashes(out: &mut BTreeMap<String, String>) {
    let (rows, cols) = (9usize, 768usize);
    for f in Format::ALL {
        let mut rng = SplitMix(0x5eed ^ f as u64);
        let vals: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 0.05).collect();
        let row_bytes = f.row_bytes(cols, "golden").unwrap();
        let mut data = vec![0u8; rows * row_bytes];
        if vspec_core::quant::can_quantize(f) {
            for r in 0..rows {
                vspec_core::quant::quantize_row(
                    f,
                    &vals[r * cols..(r + 1) * cols],
                    None,
                    &mut data[r * row_bytes..(r + 1) * row_bytes],
                )
                .unwrap();
            }
            out.insert(format!("quant/{}", f.name()), fnv64(data.iter().copied()));
        } else {
            // Random bytes with bits 6 and 2 of every byte clear: no f16 field is inf or NaN.
            for b in data.iter_mut() {
                *b = (rng.next() as u8) & 0xBB;
            }
        }
        let w = WeightView {
            format: f,
            rows,
            cols,
            row_bytes,
            data: &data,
            layout: vspec_core::model::Layout::RowMajor,
        };
        for tokens in [1usize, 3, 7] {
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.normal()).collect();
            let mut y = vec![0f32; tokens * rows];
            let table = scalar_table();
            let shared = SharedOut::new(&mut y);
            let MatMulKernel::F32(mm) = table.matmul_for(f, ActKind::F32).unwrap().kernel else {
                unreachable!("the scalar table's f32 entries read f32")
            };
            // SAFETY: one call on this thread owns every row.
            unsafe { mm(&w, &x, tokens, 0..rows, &shared) };
            out.insert(
                format!("matmul/{}/scalar/t{tokens}", f.name()),
                hash_f32(&y),
            );
        }
    }
}

#[test]
fn scalar_references_are_bit_identical_to_the_recorded_ones() {
    let mut got = BTreeMap::new();
    kernel_hashes(&mut got);
    model_hashes(&mut got);
    let path = golden_path();
    if std::env::var("VSPEC_RECORD_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut bad = Vec::new();
    for (k, v) in &got {
        match want.get(k) {
            Some(w) if w == v => {}
            Some(w) => bad.push(format!("{k}: recorded {w}, now {v}")),
            None => bad.push(format!("{k}: not recorded")),
        }
    }
    assert!(bad.is_empty(), "golden values changed:\n{}", bad.join("\n"));
}
