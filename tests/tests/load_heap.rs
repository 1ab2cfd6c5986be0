//! The plan's load-heap bound ([`LoadHeap`]) holds: a counting allocator that charges what a bump
//! allocator would (every allocation and every `realloc`'s new size, plus `align - 1` bytes of
//! padding) measures the no_std example's whole run — parse, config, graph, bind, plan, session,
//! prefill, greedy decoding, arena and KV cache included — on many model shapes and limits, and
//! the total stays within [`run::heap_bytes`] (what the example's static buffer gets) and is not
//! below half of it. One test in its own binary, so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use vspec_core::exec::Session;
use vspec_core::graph::Limits;
use vspec_core::kernels::{KernelTable, Serial};
use vspec_core::kv::KvType;
use vspec_core::model::{bind_weights, build_graph_kv, ModelConfig, RawTensor};
use vspec_core::plan::{LoadHeap, Plan};
use vspec_core::sample::{Sampler, SamplerConfig};
use vspec_core::Format;
use vspec_tests::tiny_gguf::TinyLlama;

extern crate alloc;
// The example's own load-and-generate code, so what is measured is what the binary runs.
#[path = "../../examples/nostd/src/run.rs"]
mod run;

struct BumpCharge;

/// Bytes a bump allocator would have handed out so far.
static CHARGED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only adds up sizes.
unsafe impl GlobalAlloc for BumpCharge {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CHARGED.fetch_add(l.size() + l.align() - 1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        CHARGED.fetch_add(n + l.align() - 1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: BumpCharge = BumpCharge;

fn charged() -> usize {
    CHARGED.load(Ordering::Relaxed)
}

/// Shapes: the example's model, depth, width, GQA ratios, tied heads, F32 and quantized matrices,
/// a vocabulary list in the header, and limits from one token to a long context.
fn cases() -> Vec<(TinyLlama, Limits)> {
    let base = TinyLlama::small();
    let lim = |max_ctx, max_tokens| Limits {
        max_ctx,
        max_tokens,
        all_logits: false,
    };
    let mut v = vec![(base, lim(24, 8))];
    for n_layers in [1, 3, 6, 12] {
        v.push((TinyLlama { n_layers, ..base }, lim(32, 8)));
    }
    for (d_model, n_heads, n_kv_heads, d_ff) in [
        (32, 2, 1, 64),
        (128, 8, 2, 352),
        (128, 4, 4, 256),
        (96, 3, 1, 160),
    ] {
        v.push((
            TinyLlama {
                d_model,
                n_heads,
                n_kv_heads,
                d_ff,
                ..base
            },
            lim(40, 16),
        ));
    }
    v.push((
        TinyLlama {
            tied: true,
            vocab: 1000,
            matrix_format: Format::F32,
            ..base
        },
        lim(16, 1),
    ));
    v.push((
        TinyLlama {
            token_list: true,
            vocab: 512,
            ..base
        },
        lim(64, 64),
    ));
    v.push((
        TinyLlama {
            n_layers: 4,
            token_list: true,
            tied: true,
            ..base
        },
        lim(512, 32),
    ));
    v
}

/// Each part of the bound against the same steps measured one by one (the steps of
/// `run::load` and `run::generate`, arena and KV cache aside): (part, measured, bound).
fn parts_measured(file: &[u8], limits: Limits) -> Vec<(&'static str, usize, usize)> {
    let mut marks = vec![charged()];
    let header = vspec_core::gguf::parse(file).unwrap();
    marks.push(charged());
    let config = ModelConfig::from_gguf(&header).unwrap();
    marks.push(charged());
    let mut graph = build_graph_kv(&config, limits, KvType::F32).unwrap();
    marks.push(charged());
    let lookup = |name: &str| {
        Ok(header.tensor(name).map(|t| RawTensor {
            format: t.format.unwrap(),
            dims: t.dims.clone(),
            data: header.tensor_data(file, t).unwrap(),
        }))
    };
    let weights = bind_weights(&mut graph, &lookup).unwrap();
    let plan = Plan::new(&graph).unwrap();
    marks.push(charged());
    // Arena and KV cache outside the count: they are the plan's own numbers.
    let mut arena = vec![0u32; plan.arena_bytes.div_ceil(4)];
    let mut kv = vec![0u32; plan.kv_bytes.div_ceil(4)];
    let before_session = charged();
    let kernels = KernelTable::scalar();
    let session = Session::new(
        &graph,
        &plan,
        &weights,
        bytemuck::cast_slice_mut(&mut arena),
        bytemuck::cast_slice_mut(&mut kv),
        &kernels,
        &Serial,
    )
    .unwrap();
    let sampler = Sampler::new(SamplerConfig::greedy(), config.vocab).unwrap();
    marks.push(charged() - before_session + marks[4]);
    drop((session, sampler));
    let bound = LoadHeap::new(&header, &graph);
    let names = ["header", "config", "graph", "bind+plan", "session"];
    let bounds = [
        bound.header,
        bound.config,
        bound.graph,
        bound.plan,
        bound.session,
    ];
    (0..5)
        .map(|i| (names[i], marks[i + 1] - marks[i], bounds[i]))
        .collect()
}

#[test]
fn a_core_only_run_stays_within_the_planned_heap() {
    let prompt = [1u32, 5, 9, 2, 7, 3, 11, 4, 6, 8];
    let mut worst = 0f64;
    let mut loosest = f64::INFINITY;
    for (i, (model, limits)) in cases().into_iter().enumerate() {
        let file = model.gguf();
        let steps = (limits.max_ctx - prompt.len().min(limits.max_ctx - 1)).min(12);
        let prompt = &prompt[..prompt.len().min(limits.max_ctx - steps)];
        let before = charged();
        let loaded = run::load(&file, limits).unwrap();
        let after_load = charged();
        let mut tokens = 0;
        run::generate(&loaded, prompt, steps, &mut |_| tokens += 1).unwrap();
        let measured = charged() - before;
        let loaded_part = after_load - before;
        assert_eq!(tokens, steps);

        let parts = LoadHeap::new(&loaded.header, &loaded.graph);
        for (part, got, max) in parts_measured(&file, limits) {
            eprintln!(
                "  {part}: {got} of {max} B ({:.0} %)",
                100.0 * got as f64 / max as f64
            );
            assert!(
                got <= max,
                "case {i}: {part} took {got} bytes, over its bound {max}"
            );
        }
        let bound = run::heap_bytes(&loaded);
        let ratio = measured as f64 / bound as f64;
        eprintln!(
            "case {i}: layers {} d {} vocab {} ctx {} batch {}: measured {measured} B (load \
             {loaded_part}) of bound {bound} B = {:.1} % (parts {parts:?}, arena {} + kv {})",
            model.n_layers,
            model.d_model,
            model.vocab,
            limits.max_ctx,
            limits.max_tokens,
            100.0 * ratio,
            loaded.plan.arena_bytes,
            loaded.plan.kv_bytes,
        );
        assert!(
            measured <= bound,
            "case {i}: the run took {measured} heap bytes, over the bound {bound}"
        );
        worst = worst.max(ratio);
        loosest = loosest.min(ratio);
        // The load-time part alone (arena and KV cache aside) must not be a blanket either.
        let load_only = measured - (loaded.plan.arena_bytes + loaded.plan.kv_bytes);
        let load_ratio = load_only as f64 / parts.total() as f64;
        eprintln!(
            "  load-time heap {load_only} B of {} B = {:.1} %",
            parts.total(),
            100.0 * load_ratio
        );
        assert!(
            load_ratio >= 0.5,
            "case {i}: the load-time bound {} is more than twice the {load_only} bytes measured",
            parts.total()
        );
    }
    eprintln!(
        "measured / bound: {:.1} % to {:.1} %",
        100.0 * loosest,
        100.0 * worst
    );
}
