//! The whole CUDA session path run on the host: the device layout and its contents (what the
//! session uploads), the launch list of every step (what the session enqueues, the decode step
//! being the one it captures as a graph) and the unchanged `.cu` kernels under the emulator of
//! `vspec_tests::cuda_host`, on the random fixtures; logits compared with the CPU session's at
//! every step (prefill chunks and decode), both with an f16 KV cache.
//!
//! This is the closest a machine without a GPU gets to `CudaSession::forward`: everything but
//! the cudarc calls (allocation, copies, launches, graph capture) and the GPU itself.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_cuda::kernels;
use vspec_cuda::launch::{Arg, GemvActivations, Launcher};
use vspec_host::{Engine, ModelFile};
use vspec_tests::cuda_host::{compile, params};
use vspec_tests::synth::{self, Shape};
use vspec_tests::{fixtures, rel_max_abs};

/// The fake device address of the allocation's first byte (the harness maps it to its buffer).
const BASE: u64 = 1 << 40;
/// Logits within this of the CPU's (max-abs relative): same f16 cache, f32 arithmetic in another
/// order. Measured worst over the fixtures: printed by the test.
const TOL: f64 = 1e-3;
/// 8-bit activations against the f32 reference (as the CPU fast path: `fast_path.rs`).
const TOL_INT8: f64 = 0.08;

const MAIN: &str = r#"
struct AnyPtr {
    u8* p;
    template <class T> operator T*() const { return (T*)p; }
};
static u8* g_mem;
static u64 g_base;
static void rd(void* p, size_t n) { if (n && fread(p, 1, n, stdin) != n) abort(); }
template <class T> static T get() { T v; rd(&v, sizeof v); return v; }
static void dispatch(const char* name, dim3_ grid, unsigned block, const u64* raw, const char* kinds);
int main() {
    u64 total = get<u64>();
    g_base = get<u64>();
    std::vector<u8> mem(total + 256);
    g_mem = mem.data() + (256 - ((uintptr_t)mem.data() & 255)) % 256;
    for (;;) {
        char op = get<char>();
        if (op == 'W') {
            u64 at = get<u64>(), n = get<u64>();
            rd(g_mem + at, n);
        } else if (op == 'R') {
            u64 at = get<u64>(), n = get<u64>();
            fwrite(g_mem + at, 1, n, stdout);
            fflush(stdout);
        } else if (op == 'L') {
            u32 len = get<u32>();
            std::vector<char> name(len + 1, 0);
            rd(name.data(), len);
            dim3_ grid = {get<u32>(), get<u32>(), get<u32>()};
            u32 block = get<u32>(), n = get<u32>();
            std::vector<u64> raw(n);
            std::vector<char> kinds(n + 1, 0);
            for (u32 i = 0; i < n; ++i) { kinds[i] = get<char>(); raw[i] = get<u64>(); }
            dispatch(name.data(), grid, block, raw.data(), kinds.data());
        } else {
            return 0;
        }
    }
}
static AnyPtr P(u64 v) { return AnyPtr{v ? g_mem + (v - g_base) : (u8*)0}; }
static int I(u64 v) { return (int)(u32)v; }
static float F(u64 v) { float f; u32 b = (u32)v; memcpy(&f, &b, 4); return f; }
"#;

/// `dispatch`: one `launch` call per kernel, arguments converted by the kinds in the sources.
fn dispatcher() -> String {
    let prog = kernels::program();
    let mut s = String::from(
        "static void dispatch(const char* name, dim3_ grid, unsigned block, const u64* a, const char*) {\n",
    );
    for k in kernels::kernel_names() {
        let args: Vec<String> = params(&prog, &k)
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}(a[{i}])", c.to_ascii_uppercase()))
            .collect();
        s.push_str(&format!(
            "  if (!strcmp(name, \"{k}\")) {{ launch({k}, grid, block, {}); return; }}\n",
            args.join(", ")
        ));
    }
    s.push_str("  abort();\n}\n");
    s
}

struct Harness {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
}

impl Harness {
    fn w(&mut self, b: &[u8]) {
        self.stdin.write_all(b).unwrap();
    }
    fn write(&mut self, at: usize, bytes: &[u8]) {
        self.w(b"W");
        self.w(&(at as u64).to_le_bytes());
        self.w(&(bytes.len() as u64).to_le_bytes());
        self.w(bytes);
    }
    fn read_f32(&mut self, at: usize, n: usize) -> Vec<f32> {
        self.w(b"R");
        self.w(&(at as u64).to_le_bytes());
        self.w(&(n as u64 * 4).to_le_bytes());
        self.stdin.flush().unwrap();
        let mut buf = vec![0u8; n * 4];
        self.stdout.read_exact(&mut buf).unwrap();
        buf.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    fn launch(&mut self, l: &vspec_cuda::launch::Launch) {
        self.w(b"L");
        self.w(&(l.kernel.len() as u32).to_le_bytes());
        self.w(l.kernel.as_bytes());
        for v in [l.grid.0, l.grid.1, l.grid.2, l.block, l.args.len() as u32] {
            self.w(&v.to_le_bytes());
        }
        for a in &l.args {
            let (k, v) = match *a {
                Arg::Ptr(p) => (b'p', p),
                Arg::I32(i) => (b'i', i as u32 as u64),
                Arg::F32(f) => (b'f', f.to_bits() as u64),
            };
            self.w(&[k]);
            self.w(&v.to_le_bytes());
        }
    }
}

/// The emulated device, compiled once for both tests.
fn exe() -> Option<std::path::PathBuf> {
    static EXE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        compile(
            env!("CARGO_TARGET_TMPDIR"),
            "model",
            &[],
            &format!("{MAIN}\n{}", dispatcher()),
        )
    })
    .clone()
}

/// Runs `model` through the emulated session (8-bit activation GEMVs if `int8`) and the CPU
/// scalar session side by side; every step's logits within `tol`. Returns the worst error.
fn through_the_session_path(
    exe: &std::path::Path,
    model: &ModelFile,
    name: &str,
    int8: bool,
    tol: f64,
) -> f64 {
    let lim = Limits {
        max_ctx: 160,
        max_tokens: 8,
        all_logits: true,
    };
    let mut engine = Engine::build(model, lim, KvType::F16, 1, KernelTable::scalar()).unwrap();
    let mut cpu = engine.session().unwrap();
    let (graph, weights) = model.bind_kv(lim, KvType::F16).unwrap();
    let plan = Plan::new(&graph).unwrap();
    let layout = vspec_cuda::layout::layout(&graph, &plan).unwrap();
    let contents = vspec_cuda::layout::contents(&graph, &layout, &weights).unwrap();
    let mut launcher = Launcher::new(&graph, &plan, layout.clone(), BASE).unwrap();
    launcher.set_gemv_activations(if int8 {
        GemvActivations::Int8
    } else {
        GemvActivations::F32
    });
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut h = Harness {
        child,
        stdin,
        stdout,
    };
    h.w(&(layout.total as u64).to_le_bytes());
    h.w(&BASE.to_le_bytes());
    for (at, bytes, _) in &contents {
        h.write(*at, bytes);
    }
    let vocab = model.config.vocab;
    let ids: Vec<u32> = (0..22u32).map(|i| (i * 53 + 7) % vocab as u32).collect();
    // Prefill 8 + 8 + 3 tokens (GEMM, several rows per step), then 3 single tokens (GEMV, the
    // decode launch list with its fixed split count). Attention with several non-empty
    // splits is covered by `cuda_kernels_host.rs`.
    let mut steps: Vec<&[u32]> = ids[..16].chunks(8).collect();
    steps.push(&ids[16..19]);
    steps.extend(ids[19..].chunks(1));
    let (mut pos, mut worst) = (0usize, 0f64);
    for step in steps {
        let n = step.len();
        let mut block = vec![0u8; 8 + 4 * n];
        block[..4].copy_from_slice(&(pos as i32).to_le_bytes());
        for (i, t) in step.iter().enumerate() {
            block[8 + 4 * i..12 + 4 * i].copy_from_slice(&t.to_le_bytes());
        }
        h.write(layout.step.start, &block);
        for l in launcher.step(n, pos).unwrap() {
            h.launch(&l);
        }
        let out = graph.output;
        let got = h.read_f32(
            layout.arena.start + plan.arena.offsets[out],
            graph.tensors[out].activation_len(n),
        );
        let want = cpu.forward(step).unwrap();
        for (t, (g, c)) in got
            .chunks_exact(vocab)
            .zip(want.chunks_exact(vocab))
            .enumerate()
        {
            let e = rel_max_abs(g, c);
            worst = worst.max(e);
            assert!(e <= tol, "{name} pos {pos} token {t}: rel max-abs {e:.2e}");
        }
        pos += n;
    }
    h.w(b"Q");
    drop(h.stdin);
    assert!(h.child.wait().unwrap().success());
    println!("{name}: {pos} positions through the emulated session, worst rel max-abs {worst:.1e}");
    worst
}

#[test]
fn fixtures_through_the_session_path_match_the_cpu_session() {
    let Some(exe) = exe() else { return };
    for name in ["llama", "qwen2", "qwen3"] {
        let model = ModelFile::open(&fixtures().join("hf").join(name)).unwrap();
        through_the_session_path(&exe, &model, name, false, TOL);
    }
}

/// Small random models in every `--bits` tier's formats (TQ2/3/4; VQ3/VQ4; VQ4 and Q5_1; Q8_0):
/// the formats without an 8-bit activation GEMV with f32 activations within [`TOL`] of the CPU
/// scalar session, the others with the 8-bit activation GEMVs (the default) within
/// [`TOL_INT8`], the tolerance the CPU's own fast path is held to (`fast_path.rs`). (The
/// emulator takes about a minute per run, so each tier runs in one mode.)
#[test]
fn quantized_tiers_through_the_session_path_match_the_cpu_session() {
    let Some(exe) = exe() else { return };
    let dir = std::env::temp_dir().join(format!("vspec-cuda-host-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (bits, int8) in [(2, false), (3, true), (4, true), (8, true)] {
        let path = dir.join(format!("tiny-{bits}.vspec"));
        synth::write(&path, Shape::Tiny, None, bits, 11).unwrap();
        let model = ModelFile::open(&path).unwrap();
        let (name, tol) = match int8 {
            true => (format!("tiny --bits {bits}, 8-bit activations"), TOL_INT8),
            false => (format!("tiny --bits {bits}"), TOL),
        };
        through_the_session_path(&exe, &model, &name, int8, tol);
    }
    std::fs::remove_dir_all(&dir).ok();
}
