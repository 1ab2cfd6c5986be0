//! The CUDA session's host side without a GPU: the launches of real graphs (the random fixtures
//! and, when present, SmolLM2) checked against the kernel sources.
//!
//! - every launch names a kernel the program defines, and its arguments have the kinds (pointer,
//!   `int`, `float`) and count of that kernel's parameter list in `cuda-shell/kernels/*.cu`;
//! - grids and blocks are within CUDA's limits;
//! - every address lies inside the one allocation of the device layout;
//! - a one-token step launches exactly the same kernels with the same arguments at every
//!   position, which is what lets the session replay one captured CUDA graph.

use vspec_core::graph::Limits;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_cuda::kernels;
use vspec_cuda::launch::{Arg, Launch, Launcher};
use vspec_host::ModelFile;
use vspec_tests::cuda_host::params;
use vspec_tests::fixtures;

/// An address such as the driver hands out, so offsets are checked against a nonzero base.
const BASE: u64 = 0x7f12_3400_0000;

fn check(name: &str, model: &ModelFile, lim: Limits) {
    let prog = kernels::program();
    let known = kernels::kernel_names();
    let (graph, _) = model.bind_kv(lim, KvType::F16).unwrap();
    let plan = Plan::new(&graph).unwrap();
    let layout = vspec_cuda::layout::layout(&graph, &plan).unwrap();
    let total = layout.total as u64;
    let launcher = Launcher::new(&graph, &plan, layout, BASE).unwrap();
    let check_launch = |l: &Launch, what: &str| {
        assert!(
            known.contains(&l.kernel),
            "{what}: unknown kernel {}",
            l.kernel
        );
        let want = params(&prog, &l.kernel);
        let have: Vec<char> = l
            .args
            .iter()
            .map(|a| match a {
                Arg::Ptr(_) => 'p',
                Arg::I32(_) => 'i',
                Arg::F32(_) => 'f',
            })
            .collect();
        assert_eq!(have, want, "{what}: arguments of {}", l.kernel);
        let (x, y, z) = l.grid;
        assert!(
            x >= 1 && y >= 1 && z >= 1,
            "{what}: empty grid {:?}",
            l.grid
        );
        assert!(y <= 65535 && z <= 65535, "{what}: grid {:?}", l.grid);
        assert!(
            l.block.is_multiple_of(32) && l.block <= 1024,
            "{what}: block {}",
            l.block
        );
        for a in &l.args {
            if let Arg::Ptr(p) = *a {
                assert!(
                    p == 0 || (BASE..BASE + total).contains(&p),
                    "{what}: {} gets an address outside the allocation",
                    l.kernel
                );
            }
        }
    };
    let mut launches = 0;
    for (n, pos) in [(1, 0), (lim.max_tokens, 0), (3, 5), (1, lim.max_ctx - 1)] {
        let step = launcher.step(n, pos).unwrap();
        for l in &step {
            check_launch(l, &format!("{name} n={n} pos={pos}"));
        }
        launches += step.len();
    }
    assert_eq!(
        launcher.step(1, 0).unwrap(),
        launcher.step(1, lim.max_ctx - 1).unwrap(),
        "{name}: the one-token step must not depend on the position (captured graph)"
    );
    println!("{name}: {launches} launches checked");
}

#[test]
fn fixture_launches_match_the_kernel_sources() {
    for name in ["llama", "llama_rope3", "qwen2", "qwen3"] {
        let model = ModelFile::open(&fixtures().join("hf").join(name)).unwrap();
        for all_logits in [false, true] {
            let lim = Limits {
                max_ctx: 300,
                max_tokens: 16,
                all_logits,
            };
            check(name, &model, lim);
        }
    }
}

/// The fusions happen where the graph allows them: a decode step of the qwen3 fixture (q/k head
/// norms, two layers) launches every residual add with the norm after it, and each head norm
/// with its RoPE, so no plain rope, head_rms_norm or add is left but the last add (before the
/// output's row pick, not a norm).
#[test]
fn a_qwen3_decode_step_launches_its_fused_kernels() {
    let model = ModelFile::open(&fixtures().join("hf").join("qwen3")).unwrap();
    let lim = Limits {
        max_ctx: 300,
        max_tokens: 16,
        all_logits: false,
    };
    let (graph, _weights) = model.bind_kv(lim, KvType::F16).unwrap();
    let plan = Plan::new(&graph).unwrap();
    let layout = vspec_cuda::layout::layout(&graph, &plan).unwrap();
    let launcher = Launcher::new(&graph, &plan, layout, BASE).unwrap();
    let step = launcher.step(1, 7).unwrap();
    let count = |k: &str| step.iter().filter(|l| l.kernel == k).count();
    let layers = model.config.n_layers;
    assert_eq!(
        count("head_rms_norm_rope"),
        2 * layers,
        "{:?}",
        kinds(&step)
    );
    assert_eq!(count("rope") + count("head_rms_norm"), 0);
    assert_eq!(count("add_rms_norm"), 2 * layers - 1);
    assert_eq!(count("add"), 1);
}

fn kinds(step: &[vspec_cuda::launch::Launch]) -> Vec<&str> {
    step.iter().map(|l| l.kernel.as_str()).collect()
}

#[test]
fn smollm2_launches_match_the_kernel_sources() {
    let Some(path) = vspec_tests::smollm2_gguf() else {
        return;
    };
    let model = ModelFile::open(&path).unwrap();
    let lim = Limits {
        max_ctx: 2048,
        max_tokens: 512,
        all_logits: false,
    };
    check("SmolLM2", &model, lim);
}

#[test]
fn the_parser_reads_a_known_signature() {
    let prog = kernels::program();
    assert_eq!(params(&prog, "last_row"), vec!['p', 'p', 'i', 'i']);
    assert_eq!(
        params(&prog, "gemm_q4_0"),
        vec!['p', 'p', 'p', 'p', 'i', 'p', 'i', 'i', 'i', 'i']
    );
}
