//! The CUDA op kernels run on the host by the emulator of `vspec_tests::cuda_host` (the `.cu`
//! files unchanged, one OS thread per CUDA thread) and compared with f32 references written
//! here: GEMV and tiled GEMM for every device format (against the scalar decoder and an f64 dot),
//! RMSNorm, RoPE (both layouts), SiLU·mul, and attention through the f16/f32 KV cache with one
//! and several splits. Without a GPU this is the only execution these kernels get; it checks
//! their indexing and arithmetic, not the GPU (memory model, timing, PTX).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use vspec_core::format::Format;
use vspec_core::quant::act_q8::BlockQ8Act;
use vspec_cuda::kernels;
use vspec_tests::encode::{decode, dot_f64, encode, through_q8, values};

const MAIN: &str = r#"
static std::vector<u8> blob() {
    u64 n;
    if (fread(&n, 8, 1, stdin) != 1) abort();
    std::vector<u8> b(n);
    if (n && fread(b.data(), 1, n, stdin) != n) abort();
    return b;
}
static std::vector<float> fblob() {
    std::vector<u8> b = blob();
    std::vector<float> f(b.size() / 4);
    memcpy(f.data(), b.data(), b.size());
    return f;
}
static void put(const std::vector<float>& v) { fwrite(v.data(), 4, v.size(), stdout); }
static void matmul(const char* fmt, const u8* w, const i8* lut, const float* x, float* y,
                   int rows, int cols, int row_bytes, int tokens, int gemv);
static void matmulq(const char* fmt, const u8* w, const i8* lut, const u8* act, float* y,
                    int rows, int cols, int row_bytes, int split);
static std::vector<u8> quantize(const std::vector<float>& x) {
    int cols = (int)x.size();
    std::vector<u8> act((size_t)cols + cols / 32 * 8);
    launch(quantize_act, {(unsigned)((cols + 255) / 256), 1, 1}, 256, x.data(), act.data(), cols);
    return act;
}
int main(int argc, char** argv) {
    const char* op = argv[1];
    if (!strcmp(op, "matmul")) {
        int rows = atoi(argv[3]), cols = atoi(argv[4]), tokens = atoi(argv[5]);
        int row_bytes = atoi(argv[6]), gemv = atoi(argv[7]);
        std::vector<u8> w = blob(), lut = blob();
        std::vector<float> x = fblob(), y((size_t)rows * tokens);
        matmul(argv[2], w.data(), (const i8*)lut.data(), x.data(), y.data(), rows, cols,
               row_bytes, tokens, gemv);
        put(y);
    } else if (!strcmp(op, "quantize")) {
        std::vector<u8> act = quantize(fblob());
        fwrite(act.data(), 1, act.size(), stdout);
    } else if (!strcmp(op, "matmulq")) {
        int rows = atoi(argv[3]), cols = atoi(argv[4]), row_bytes = atoi(argv[5]);
        int split = atoi(argv[6]);
        std::vector<u8> w = blob(), lut = blob();
        std::vector<float> x = fblob(), y(rows);
        std::vector<u8> act = quantize(x);
        matmulq(argv[2], w.data(), (const i8*)lut.data(), act.data(), y.data(), rows, cols,
                row_bytes, split);
        put(y);
    } else if (!strcmp(op, "rms_norm")) {
        int rows = atoi(argv[2]), cols = atoi(argv[3]), block = atoi(argv[5]);
        float eps = atof(argv[4]);
        bool fuse = argc > 6 && atoi(argv[6]);
        std::vector<float> x = fblob(), w = fblob(), y(x.size());
        std::vector<u8> act((size_t)cols + cols / 32 * 8);
        launch(rms_norm, {(unsigned)rows, 1, 1}, (unsigned)block, x.data(), (const u8*)w.data(), 0, eps,
               y.data(), cols, fuse ? act.data() : (u8*)0);
        put(y);
        if (fuse) fwrite(act.data(), 1, act.size(), stdout);
    } else if (!strcmp(op, "add_rms_norm")) {
        int rows = atoi(argv[2]), cols = atoi(argv[3]), block = atoi(argv[5]);
        float eps = atof(argv[4]);
        std::vector<float> a = fblob(), b = fblob(), w = fblob(), sum(a.size()), y(a.size());
        launch(add_rms_norm, {(unsigned)rows, 1, 1}, (unsigned)block, a.data(), b.data(),
               sum.data(), (const u8*)w.data(), 0, eps, y.data(), cols, (u8*)0);
        put(sum);
        put(y);
    } else if (!strcmp(op, "head_norm_rope")) {
        // The fused launch and the two it replaces; both outputs.
        int tokens = atoi(argv[2]), width = atoi(argv[3]), hd = atoi(argv[4]);
        int layout = atoi(argv[5]), pos0 = atoi(argv[6]);
        std::vector<float> x = fblob(), w = fblob(), f = fblob();
        std::vector<float> fused(x.size()), normed(x.size()), twice(x.size());
        int step[2] = {pos0, 0};
        unsigned heads = (unsigned)(tokens * width / hd);
        launch(head_rms_norm_rope, {heads, 1, 1}, 128, x.data(), (const u8*)w.data(), 0, 1e-6f,
               fused.data(), hd, step, width, layout, f.data(), (int)f.size());
        launch(head_rms_norm, {heads, 1, 1}, 128, x.data(), (const u8*)w.data(), 0, 1e-6f,
               normed.data(), hd);
        launch(rope, {(unsigned)tokens, 2, 1}, 64, normed.data(), twice.data(), step, width, hd,
               layout, f.data(), (int)f.size());
        put(fused);
        put(twice);
    } else if (!strcmp(op, "rope")) {
        int tokens = atoi(argv[2]), width = atoi(argv[3]), hd = atoi(argv[4]);
        int layout = atoi(argv[5]), pos0 = atoi(argv[6]), blocks = atoi(argv[7]);
        std::vector<float> x = fblob(), f = fblob(), y(x.size());
        int step[2] = {pos0, 0};
        launch(rope, {(unsigned)tokens, (unsigned)blocks, 1}, 64, x.data(), y.data(), step, width, hd,
               layout, f.data(), (int)f.size());
        put(y);
    } else if (!strcmp(op, "swiglu")) {
        bool fuse = argc > 2 && atoi(argv[2]);
        std::vector<float> g = fblob(), u = fblob(), y(g.size());
        std::vector<u8> act(g.size() + g.size() / 32 * 8);
        launch(swiglu, {2, 1, 1}, 64, g.data(), u.data(), y.data(), (int)g.size(),
               fuse ? act.data() : (u8*)0);
        put(y);
        if (fuse) fwrite(act.data(), 1, act.size(), stdout);
    } else if (!strcmp(op, "attention")) {
        int nh = atoi(argv[2]), nkv = atoi(argv[3]), hd = atoi(argv[4]), tokens = atoi(argv[5]);
        int pos0 = atoi(argv[6]), kv_type = atoi(argv[7]), split_len = atoi(argv[8]);
        int splits = atoi(argv[9]), max_ctx = atoi(argv[10]);
        float scale = atof(argv[11]);
        bool fuse = argc > 12 && atoi(argv[12]);
        int kvw = nkv * hd, esz = kv_type == 1 ? 2 : 4;
        std::vector<float> kold = fblob(), vold = fblob(), knew = fblob(), vnew = fblob(), q = fblob();
        std::vector<u8> kc((size_t)max_ctx * kvw * esz), vc((size_t)max_ctx * kvw * esz);
        for (int i = 0; i < pos0 * kvw; ++i) {
            if (kv_type == 1) {
                ((u16*)kc.data())[i] = f32_to_f16(kold[i]);
                ((u16*)vc.data())[i] = f32_to_f16(vold[i]);
            } else {
                ((float*)kc.data())[i] = kold[i];
                ((float*)vc.data())[i] = vold[i];
            }
        }
        int step[2] = {pos0, 0};
        launch(kv_store, {(unsigned)tokens, 1, 1}, 256, knew.data(), vnew.data(), kc.data(),
               vc.data(), step, kvw, kv_type);
        std::vector<float> part((size_t)tokens * nh * splits * (hd + 2)), out((size_t)tokens * nh * hd);
        launch(attn_partial, {(unsigned)nh, (unsigned)tokens, (unsigned)splits}, 128, q.data(),
               kc.data(), vc.data(), kv_type, step, nh, nkv, hd, scale, split_len, part.data());
        std::vector<u8> act(out.size() + out.size() / 32 * 8);
        launch(attn_combine, {(unsigned)nh, (unsigned)tokens, 1}, 128, part.data(), out.data(),
               step, nh, hd, splits, split_len, fuse ? act.data() : (u8*)0);
        put(out);
        if (fuse) fwrite(act.data(), 1, act.size(), stdout);
    } else {
        return 3;
    }
    return 0;
}
"#;

/// The emulated program, compiled once per test process.
fn exe() -> Option<&'static PathBuf> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| {
        let mut dispatch = String::from(
            "static void matmul(const char* fmt, const u8* w, const i8* lut, const float* x, \
             float* y, int rows, int cols, int row_bytes, int tokens, int gemv) {\n",
        );
        for f in kernels::device_formats() {
            let n = kernels::format_id(f).unwrap().name;
            dispatch.push_str(&format!(
                "  if (!strcmp(fmt, \"{n}\")) {{ if (gemv) launch(gemv_{n}, {{(unsigned)((rows + 4 / gemv - 1) / (4 / gemv)), \
                 (unsigned)tokens, 1}}, 128, x, w, lut, (const u8*)0, 0, y, rows, cols, row_bytes, gemv); \
                 else launch(gemm_{n}, {{(unsigned)((rows + 63) / 64), (unsigned)((tokens + 63) / 64), 1}}, \
                 256, x, w, lut, (const u8*)0, 0, y, rows, cols, row_bytes, tokens); return; }}\n"
            ));
        }
        dispatch.push_str("  abort();\n}\n");
        dispatch.push_str(
            "static void matmulq(const char* fmt, const u8* w, const i8* lut, const u8* act, \
             float* y, int rows, int cols, int row_bytes, int split) {\n",
        );
        for f in kernels::device_formats().filter(|&f| kernels::has_int8_gemv(f)) {
            let n = kernels::format_id(f).unwrap().name;
            dispatch.push_str(&format!(
                "  if (!strcmp(fmt, \"{n}\")) {{ launch(gemvq_{n}, {{(unsigned)((rows + 4 / split - 1) / (4 / split)), 1, 1}}, \
                 128, act, w, lut, (const u8*)0, 0, y, rows, cols, row_bytes, split); return; }}\n"
            ));
        }
        dispatch.push_str("  abort();\n}\n");
        vspec_tests::cuda_host::compile(env!("CARGO_TARGET_TMPDIR"), "kernels", &[], &format!("{MAIN}\n{dispatch}"))
    })
    .as_ref()
}

/// Runs `exe args` with length-prefixed `blobs` on stdin; returns the f32s it prints.
fn run(args: &[String], blobs: &[&[u8]]) -> Vec<f32> {
    let mut child = Command::new(exe().unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for b in blobs {
        stdin.write_all(&(b.len() as u64).to_le_bytes()).unwrap();
        stdin.write_all(b).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "harness {args:?} failed: {:?}",
        out.status
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn args(v: &[&dyn std::fmt::Display]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

/// `max |a - b| / max |b|`.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    vspec_tests::rel_max_abs(a, b)
}

#[test]
fn gemv_and_gemm_match_an_f64_reference_for_every_format() {
    if exe().is_none() {
        return;
    }
    let (rows, cols) = (70, 512);
    for format in kernels::device_formats() {
        let spec = format.spec();
        let name = kernels::format_id(format).unwrap().name;
        let mut w = Vec::new();
        let mut wf = vec![0f32; rows * cols];
        for r in 0..rows {
            let row = encode(format, &values(cols, (r * 31 + format as usize) as u64));
            for (b, o) in row
                .chunks_exact(spec.block_bytes)
                .zip(wf[r * cols..(r + 1) * cols].chunks_exact_mut(spec.block_elems))
            {
                (spec.decode)(b, o);
            }
            w.extend(row);
        }
        let row_bytes = w.len() / rows;
        let lut: Vec<u8> = kernels::codebook(format)
            .map(|c| c.iter().map(|&v| v as u8).collect())
            .unwrap_or_else(|| vec![0; 256]);
        // `gemv`: 0 runs the GEMM, else the GEMV with that many warps per row.
        for (tokens, gemv) in [(1, 1), (1, 2), (1, 4), (1, 0), (3, 1), (3, 4), (67, 0)] {
            let x = values(tokens * cols, 99);
            let want: Vec<f32> = (0..tokens)
                .flat_map(|t| {
                    let (x, wf) = (&x, &wf);
                    (0..rows).map(move |r| {
                        (0..cols)
                            .map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64)
                            .sum::<f64>() as f32
                    })
                })
                .collect();
            let got = run(
                &args(&[&"matmul", &name, &rows, &cols, &tokens, &row_bytes, &gemv]),
                &[&w, &lut, &bytes(&x)],
            );
            let e = rel(&got, &want);
            assert!(
                e < 1e-5,
                "{format:?} {} tokens={tokens}: rel max-abs {e:.2e}",
                if gemv > 0 { "gemv" } else { "gemm" }
            );
        }
        println!(
            "{format:?}: gemv (1, 2, 4 warps per row) and gemm within 1e-5 of the f64 reference"
        );
    }
}

/// The device's activation quantization against the CPU's `BlockQ8Act`, byte for byte: random
/// blocks, a block of zeros, one with NaN and infinities, one of ±f32::MAX, an odd block count.
#[test]
fn quantize_act_equals_the_cpu_blocks() {
    if exe().is_none() {
        return;
    }
    let mut x = values(32 * 9, 41);
    x[32..64].fill(0.0);
    x[64] = f32::NAN;
    x[65] = f32::INFINITY;
    x[66] = f32::NEG_INFINITY;
    for (i, v) in x[96..128].iter_mut().enumerate() {
        *v = if i % 2 == 0 { f32::MAX } else { -f32::MAX };
    }
    x[128..160].iter_mut().for_each(|v| *v *= 1e-30);
    let got: Vec<u8> = run(&args(&[&"quantize"]), &[&bytes(&x)])
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let nb = x.len() / 32;
    assert_eq!(got.len(), x.len() + 8 * nb);
    for (b, xs) in x.chunks_exact(32).enumerate() {
        let want = BlockQ8Act::quantize(xs);
        let q: Vec<i8> = got[32 * b..32 * b + 32].iter().map(|&v| v as i8).collect();
        assert_eq!(q, want.qs, "block {b}: quants");
        let at = x.len() + 4 * b;
        let d = f32::from_le_bytes(got[at..at + 4].try_into().unwrap());
        assert_eq!(d.to_bits(), want.d.to_bits(), "block {b}: scale");
        let at = x.len() + 4 * (nb + b);
        let sum = i32::from_le_bytes(got[at..at + 4].try_into().unwrap());
        assert_eq!(sum, want.sum, "block {b}: sum");
    }
}

/// The 8-bit activation GEMVs, with one, two and four warps per row, against an f64 dot of the
/// scalar decoder's weights and the CPU's dequantized 8-bit activations: only the arithmetic's
/// rounding differs.
#[test]
fn int8_gemv_matches_an_f64_reference_on_quantized_activations() {
    if exe().is_none() {
        return;
    }
    let (rows, cols) = (70, 1280);
    let x = values(cols, 77);
    let xq = through_q8(&x);
    let mut tested = 0;
    for format in kernels::device_formats().filter(|&f| kernels::has_int8_gemv(f)) {
        let name = kernels::format_id(format).unwrap().name;
        let mut w = Vec::new();
        let mut want = Vec::new();
        for r in 0..rows {
            let row = encode(format, &values(cols, (r * 17 + format as usize) as u64));
            want.push(dot_f64(&decode(format, &row), &xq));
            w.extend(row);
        }
        let row_bytes = w.len() / rows;
        for split in [1, 2, 4] {
            let got = run(
                &args(&[&"matmulq", &name, &rows, &cols, &row_bytes, &split]),
                &[&w, &[0u8; 256], &bytes(&x)],
            );
            let e = rel(&got, &want);
            assert!(
                e < 1e-5,
                "{format:?} int8 gemv, split {split}: rel max-abs {e:.2e}"
            );
        }
        println!("{format:?}: int8 gemv (1, 2, 4 warps per row) within 1e-5");
        tested += 1;
    }
    assert!(tested >= 10);
}

#[test]
fn rms_norm_rope_and_swiglu_match_the_cpu_references() {
    if exe().is_none() {
        return;
    }
    let (rows, cols) = (3, 576);
    let x = values(rows * cols, 5);
    let w = values(cols, 6);
    let mut want = vec![0f32; rows * cols];
    for (xs, ys) in x.chunks_exact(cols).zip(want.chunks_exact_mut(cols)) {
        vspec_core::kernels::norm::rms_norm_row(xs, &w, 1e-5, ys);
    }
    for block in [256, 1024] {
        let got = run(
            &args(&[&"rms_norm", &rows, &cols, &1e-5f32, &block]),
            &[&bytes(&x), &bytes(&w)],
        );
        let e = rel(&got, &want);
        assert!(e < 1e-6, "rms_norm, {block} threads: {e:.2e}");
    }
    // The residual add and the norm in one launch: the sum exact, the norm the same.
    let b = values(rows * cols, 4);
    let a: Vec<f32> = x.iter().zip(&b).map(|(x, b)| x - b).collect();
    let sum: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a + b).collect();
    let mut want_y = vec![0f32; rows * cols];
    for (xs, ys) in sum.chunks_exact(cols).zip(want_y.chunks_exact_mut(cols)) {
        vspec_core::kernels::norm::rms_norm_row(xs, &w, 1e-5, ys);
    }
    let got = run(
        &args(&[&"add_rms_norm", &rows, &cols, &1e-5f32, &256]),
        &[&bytes(&a), &bytes(&b), &bytes(&w)],
    );
    assert_eq!(got[..rows * cols], sum[..], "add_rms_norm: the sum");
    let e = rel(&got[rows * cols..], &want_y);
    assert!(e < 1e-6, "add_rms_norm: {e:.2e}");
    // One row writing the next matmul's 8-bit activations too.
    let got = run(
        &args(&[&"rms_norm", &1, &cols, &1e-5f32, &1024, &1]),
        &[&bytes(&x[..cols]), &bytes(&w)],
    );
    let got = fused_output(got, cols, "rms_norm");
    assert!(rel(&got, &want[..cols]) < 1e-6);

    for (layout, lid) in [
        (vspec_core::graph::RopeLayout::Interleaved, 0),
        (vspec_core::graph::RopeLayout::Neox, 1),
    ] {
        // head_dim 64 with 24 rotated pairs (partial rotary), 3 heads, 4 tokens from position 37.
        let (tokens, hd, width, pos0) = (4, 64, 192, 37);
        let x = values(tokens * width, 7);
        let f: Vec<f32> = (0..24).map(|i| 10000f32.powf(-(i as f32) / 24.0)).collect();
        let mut want = vec![0f32; tokens * width];
        for t in 0..tokens {
            let r = t * width..(t + 1) * width;
            vspec_core::kernels::rope::rope_row(
                &x[r.clone()],
                &mut want[r],
                pos0 + t,
                hd,
                layout,
                &f,
            );
        }
        // Qwen3's head norm then RoPE as one launch: the two launches' bits.
        let w = values(hd, 21);
        let got = run(
            &args(&[&"head_norm_rope", &tokens, &width, &hd, &lid, &pos0]),
            &[&bytes(&x), &bytes(&w), &bytes(&f)],
        );
        let (fused, twice) = got.split_at(tokens * width);
        assert!(
            fused
                .iter()
                .zip(twice)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "head_rms_norm_rope {layout:?}: not the bits of head_rms_norm then rope"
        );
        let mut normed = vec![0f32; tokens * width];
        for (xs, ys) in x.chunks_exact(hd).zip(normed.chunks_exact_mut(hd)) {
            vspec_core::kernels::norm::rms_norm_row(xs, &w, 1e-6, ys);
        }
        let mut want_fused = vec![0f32; tokens * width];
        for t in 0..tokens {
            let r = t * width..(t + 1) * width;
            let (src, dst) = (&normed[r.clone()], &mut want_fused[r]);
            vspec_core::kernels::rope::rope_row(src, dst, pos0 + t, hd, layout, &f);
        }
        let e = rel(fused, &want_fused);
        assert!(e < 1e-5, "head_rms_norm_rope {layout:?}: {e:.2e}");
        // One block of 64 threads per token (a grid-stride loop), two, and one per 64 elements.
        for blocks in [1, 2, width / 64] {
            let got = run(
                &args(&[&"rope", &tokens, &width, &hd, &lid, &pos0, &blocks]),
                &[&bytes(&x), &bytes(&f)],
            );
            let e = rel(&got, &want);
            assert!(
                e < 1e-5,
                "rope {layout:?}, {blocks} blocks per token: {e:.2e}"
            );
        }
    }

    let (g, u) = (values(300, 8), values(300, 9));
    let got = run(&args(&[&"swiglu"]), &[&bytes(&g), &bytes(&u)]);
    let mut want = vec![0f32; 300];
    vspec_core::kernels::activation::swiglu(&g, &u, &mut want);
    assert!(rel(&got, &want) < 1e-6, "swiglu {:.2e}", rel(&got, &want));
    let got = run(
        &args(&[&"swiglu", &1]),
        &[&bytes(&g[..288]), &bytes(&u[..288])],
    );
    let got = fused_output(got, 288, "swiglu");
    assert!(rel(&got, &want[..288]) < 1e-6);
}

/// The 8-bit activation bytes (gemv_q8.cu's layout) the CPU's `BlockQ8Act` makes of `y`.
fn cpu_act_bytes(y: &[f32]) -> Vec<u8> {
    let blocks: Vec<BlockQ8Act> = y.chunks_exact(32).map(BlockQ8Act::quantize).collect();
    let mut v: Vec<u8> = blocks.iter().flat_map(|b| b.qs.map(|q| q as u8)).collect();
    v.extend(blocks.iter().flat_map(|b| b.d.to_le_bytes()));
    v.extend(blocks.iter().flat_map(|b| b.sum.to_le_bytes()));
    v
}

/// A fused kernel's output: `n` values, then the 8-bit activation bytes it wrote, which must be
/// the CPU's quantization of exactly those values. Returns the values.
fn fused_output(got: Vec<f32>, n: usize, what: &str) -> Vec<f32> {
    let act: Vec<u8> = got[n..].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        act,
        cpu_act_bytes(&got[..n]),
        "{what}: its 8-bit activations"
    );
    got[..n].to_vec()
}

/// Causal GQA attention in f64 over keys and values as the cache holds them.
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nh: usize,
    nkv: usize,
    hd: usize,
    tokens: usize,
    pos0: usize,
    scale: f32,
) -> Vec<f32> {
    let kvw = nkv * hd;
    let mut out = vec![0f32; tokens * nh * hd];
    for t in 0..tokens {
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let qh = &q[t * nh * hd + h * hd..][..hd];
            let n = pos0 + t + 1;
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    let kj = &k[j * kvw + kvh * hd..][..hd];
                    qh.iter()
                        .zip(kj)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for d in 0..hd {
                let o: f64 = (0..n)
                    .map(|j| (s[j] - m).exp() / sum * v[j * kvw + kvh * hd + d] as f64)
                    .sum();
                out[t * nh * hd + h * hd + d] = o as f32;
            }
        }
    }
    out
}

#[test]
fn attention_through_the_kv_cache_matches_an_f64_reference() {
    if exe().is_none() {
        return;
    }
    let (nh, nkv, hd, max_ctx) = (6, 2, 64, 400);
    let kvw = nkv * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // (tokens, pos0, kv type, split_len, splits): decode with the fixed split count (most
    // splits empty), decode past several splits, prefill with one and with several splits.
    for (tokens, pos0, kv_type, split_len, splits) in [
        (1, 0, 1, 128, 4),
        (1, 300, 1, 128, 4),
        (1, 300, 0, 128, 4),
        (5, 0, 0, 128, 1),
        (7, 250, 1, 128, 3),
    ] {
        let round = |v: Vec<f32>| -> Vec<f32> {
            if kv_type == 1 {
                v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
            } else {
                v
            }
        };
        let kold = values(pos0.max(1) * kvw, 11);
        let vold = values(pos0.max(1) * kvw, 12);
        let knew = values(tokens * kvw, 13);
        let vnew = values(tokens * kvw, 14);
        let q = values(tokens * nh * hd, 15);
        let k_all = round([&kold[..pos0 * kvw], &knew[..]].concat());
        let v_all = round([&vold[..pos0 * kvw], &vnew[..]].concat());
        let want = attention_ref(&q, &k_all, &v_all, nh, nkv, hd, tokens, pos0, scale);
        // One token also writes the o projection's 8-bit activations.
        let fuse = tokens == 1 && hd % 32 == 0;
        let got = run(
            &args(&[
                &"attention",
                &nh,
                &nkv,
                &hd,
                &tokens,
                &pos0,
                &kv_type,
                &split_len,
                &splits,
                &max_ctx,
                &scale,
                &u8::from(fuse),
            ]),
            &[
                &bytes(&kold),
                &bytes(&vold),
                &bytes(&knew),
                &bytes(&vnew),
                &bytes(&q),
            ],
        );
        let got = match fuse {
            true => fused_output(got, want.len(), "attention"),
            false => got,
        };
        let e = rel(&got, &want);
        assert!(
            e < 1e-5,
            "attention tokens={tokens} pos0={pos0} kv={kv_type} splits={splits}: {e:.2e}"
        );
        println!("attention tokens={tokens} pos0={pos0} kv={kv_type} splits={splits}: {e:.1e}");
    }
}

#[test]
fn every_device_format_is_exercised() {
    // The matmul test walks `device_formats`; the issue's formats must all be in it.
    for f in [
        Format::VQ2,
        Format::VQ3,
        Format::VQ4,
        Format::NQ3,
        Format::TQ2,
        Format::TQ3,
        Format::TQ4,
        Format::Q8_0,
        Format::Q4_0,
        Format::Q4_1,
        Format::Q4_K,
        Format::Q6_K,
    ] {
        assert!(kernels::device_formats().any(|d| d == f), "{f:?}");
    }
}
