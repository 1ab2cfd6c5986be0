//! Design invariants on a real graph: no allocation per decoded token, the same logits for any
//! thread count, and a plan that is deterministic, overlap-free and between its bounds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use vspec_core::graph::Limits;
use vspec_core::plan;
use vspec_core::plan::lifetime;
use vspec_core::plan::Plan;
use vspec_host::{Engine, ModelFile};
use vspec_tests::fixtures;

struct Counting;

thread_local! {
    // Per thread: the test harness allocates on its own threads while a test runs.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn tiny(name: &str) -> ModelFile {
    ModelFile::open(&fixtures().join("hf").join(name)).unwrap()
}

#[test]
fn decoding_a_token_allocates_nothing() {
    for name in ["llama", "qwen2", "qwen3"] {
        let model = tiny(name);
        let lim = Limits {
            max_ctx: 64,
            max_tokens: 16,
            all_logits: false,
        };
        let mut engine = Engine::new(&model, lim, 1).unwrap();
        let mut sess = engine.session().unwrap();
        sess.forward(&[1, 2, 3, 4, 5]).unwrap();
        let probe = allocs();
        let counted = std::hint::black_box(vec![0u8; 16]);
        assert!(
            allocs() > probe && counted.len() == 16,
            "the counting allocator is not counting"
        );
        let before = allocs();
        for t in 0..20u32 {
            sess.forward(&[t + 7]).unwrap();
        }
        sess.forward(&[9, 8, 7]).unwrap();
        let after = allocs();
        assert_eq!(
            after - before,
            0,
            "{name}: forward allocated {} times",
            after - before
        );
    }
}

#[test]
fn logits_are_identical_for_any_thread_count() {
    let model = tiny("qwen2");
    let tokens: Vec<u32> = (0..30).map(|i| (i * 37 % 300) as u32).collect();
    let lim = Limits {
        max_ctx: 64,
        max_tokens: 32,
        all_logits: true,
    };
    let mut reference = None;
    for threads in [1, 2, 3, 4] {
        let mut engine = Engine::new(&model, lim, threads).unwrap();
        let mut sess = engine.session().unwrap();
        let bits: Vec<u32> = sess
            .forward(&tokens)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        match &reference {
            None => reference = Some(bits),
            Some(r) => assert!(r == &bits, "{threads} threads changed the logits"),
        }
    }
}

/// Decoding past several chunks of the attention fold (`ATTN_CHUNK` positions), where a
/// one-token step is split by positions over threads: each step's logits are the same bits for
/// any thread count and any way the prompt was cut into steps.
#[test]
fn decoding_deep_in_the_cache_is_identical_for_any_threads_and_steps() {
    use vspec_core::kernels::attention::ATTN_CHUNK;
    let model = tiny("llama");
    let prompt_len = 2 * ATTN_CHUNK + 37;
    let prompt: Vec<u32> = (0..prompt_len).map(|i| (i * 37 % 300) as u32).collect();
    let lim = Limits {
        max_ctx: 3 * ATTN_CHUNK + 8,
        max_tokens: 64,
        all_logits: false,
    };
    let mut reference: Option<Vec<Vec<u32>>> = None;
    for (threads, step) in [(1, 64), (2, 64), (3, 17), (4, 1), (2, 5)] {
        let mut engine = Engine::new(&model, lim, threads).unwrap();
        let mut sess = engine.session().unwrap();
        for part in prompt.chunks(step) {
            sess.forward(part).unwrap();
        }
        let decoded: Vec<Vec<u32>> = (0..ATTN_CHUNK as u32 / 4)
            .map(|t| {
                let logits = sess.forward(&[t * 11 % 300]).unwrap();
                logits.iter().map(|x| x.to_bits()).collect()
            })
            .collect();
        match &reference {
            None => reference = Some(decoded),
            Some(r) => assert!(
                r == &decoded,
                "{threads} threads, prompt in steps of {step}: the decoded logits changed"
            ),
        }
    }
}

#[test]
fn plan_of_a_real_graph_is_tight_deterministic_and_overlap_free() {
    for name in ["llama", "qwen3"] {
        let model = tiny(name);
        for all_logits in [false, true] {
            let lim = Limits {
                max_ctx: 128,
                max_tokens: 32,
                all_logits,
            };
            let (graph, _) = model.bind(lim).unwrap();
            let bufs = lifetime::buffers(&graph);
            let p1 = Plan::new(&graph).unwrap();
            let p2 = Plan::new(&graph).unwrap();
            assert_eq!(p1, p2, "plan is not deterministic");
            plan::validate(&bufs, &p1.arena).unwrap();
            let linear = plan::linear::plan(&bufs);
            let f32_arena = p1.f32_arena_bytes();
            assert!(f32_arena >= p1.peak_live_bytes);
            assert!(f32_arena <= linear.arena_bytes);
            // The greedy planner should reuse memory well on a transformer's short lifetimes.
            assert!(
                (f32_arena as f64) < 1.25 * p1.peak_live_bytes as f64,
                "{name}: arena {} vs peak live {}",
                f32_arena,
                p1.peak_live_bytes
            );
            // The 8-bit activation scratch follows, aligned, sized for the widest matmul input.
            assert!(p1.act_q8.start >= f32_arena && p1.act_q8.start.is_multiple_of(64));
            assert_eq!(p1.act_q8.end, p1.arena_bytes);
            // KV cache: layers × (k, v) × positions × kv width × f32.
            let c = &model.config;
            assert_eq!(
                p1.kv_bytes,
                c.n_layers * 2 * 128 * c.n_kv_heads * c.head_dim * 4
            );
        }
    }
}

#[test]
fn session_rejects_small_buffers_and_overlong_steps() {
    let model = tiny("llama");
    let lim = Limits {
        max_ctx: 8,
        max_tokens: 4,
        all_logits: false,
    };
    let mut engine = Engine::new(&model, lim, 1).unwrap();
    let mut sess = engine.session().unwrap();
    assert!(
        sess.forward(&[1, 2, 3, 4, 5]).is_err(),
        "step over max_tokens"
    );
    sess.forward(&[1, 2, 3, 4]).unwrap();
    sess.forward(&[1, 2, 3, 4]).unwrap();
    let e = sess.forward(&[1]).unwrap_err().to_string();
    assert!(e.contains("context"), "{e}");
    assert!(sess.forward(&[]).is_err());
    sess.reset();
    assert!(sess
        .forward(&[100_000])
        .unwrap_err()
        .to_string()
        .contains("vocabulary"));
}

#[test]
fn truncating_the_cache_and_continuing_equals_a_fresh_run() {
    // What `vspec chat` does between turns: keep the shared prefix, overwrite the rest.
    let model = tiny("qwen3");
    let lim = Limits {
        max_ctx: 64,
        max_tokens: 16,
        all_logits: false,
    };
    let prefix: Vec<u32> = (1..=12).collect();
    let old_turn: Vec<u32> = vec![40, 41, 42, 43, 44];
    let new_turn: Vec<u32> = vec![50, 51, 52];
    let mut engine = Engine::new(&model, lim, 2).unwrap();
    let mut sess = engine.session().unwrap();
    sess.forward(&prefix).unwrap();
    sess.forward(&old_turn).unwrap();
    sess.truncate(prefix.len());
    assert_eq!(sess.pos(), prefix.len());
    let reused: Vec<u32> = sess
        .forward(&new_turn)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();

    let mut fresh_engine = Engine::new(&model, lim, 1).unwrap();
    let mut fresh = fresh_engine.session().unwrap();
    let all: Vec<u32> = prefix.iter().chain(&new_turn).copied().collect();
    let want: Vec<u32> = fresh
        .forward(&all)
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect();
    assert!(
        reused == want,
        "continuing after truncate differs from a fresh run"
    );
}

#[test]
fn malformed_graphs_are_errors_not_panics() {
    let model = tiny("llama");
    let lim = Limits {
        max_ctx: 16,
        max_tokens: 4,
        all_logits: false,
    };
    let (graph, _) = model.bind(lim).unwrap();
    let mut g = graph.clone();
    g.ops[3].inputs.push(10_000);
    assert!(Plan::new(&g)
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    let mut g = graph.clone();
    let x = g.ops[2].inputs[0];
    g.ops[2].inputs.extend([x, x, x]);
    assert!(Plan::new(&g)
        .unwrap_err()
        .to_string()
        .contains("too many inputs"));
    let mut g = graph.clone();
    g.ops.swap(1, 2);
    assert!(Plan::new(&g)
        .unwrap_err()
        .to_string()
        .contains("no earlier op"));
    let mut g = graph;
    g.ops[1].outputs.clear();
    assert!(Plan::new(&g).is_err());
}
