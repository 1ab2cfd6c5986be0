//! The KV cache types, the bounded attention scratch and the context shift, on the tiny
//! transformers fixtures (and SmolLM2 for the plan when it is present).

use vspec_core::graph::Limits;
use vspec_core::kernels::KernelTable;
use vspec_core::kv::KvType;
use vspec_core::plan::Plan;
use vspec_host::{Engine, ModelFile};
use vspec_tests::{fixtures, rel_max_abs, smollm2_gguf};

fn tiny(name: &str) -> ModelFile {
    ModelFile::open(&fixtures().join("hf").join(name)).unwrap()
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Runs `toks` in steps of the engine's batch; returns the logits of the last token.
fn last_logits(engine: &mut Engine<'_>, toks: &[u32]) -> Vec<f32> {
    let step = engine.graph.limits.max_tokens;
    let mut sess = engine.session().unwrap();
    let mut last = Vec::new();
    for chunk in toks.chunks(step) {
        // Graphs here keep the last token's logits only.
        last = sess.forward(chunk).unwrap().to_vec();
    }
    last
}

/// The arena holds activations for one step and the attention's per-chunk states of a decoded
/// token (`attn_partials`, a few bytes per cached position, to split it across threads by
/// positions); nothing else in it depends on the context.
#[test]
fn arena_grows_with_the_context_only_by_the_attention_partials() {
    let mut models = vec![(String::from("tiny llama"), tiny("llama"))];
    if let Some(p) = smollm2_gguf() {
        models.push(("SmolLM2".into(), ModelFile::open(&p).unwrap()));
    }
    for (name, model) in &models {
        let mut arenas = Vec::new();
        for ctx in [512usize, 4096, 32768, 262144] {
            let lim = Limits {
                max_ctx: ctx,
                max_tokens: 512,
                all_logits: false,
            };
            let (graph, _) = model.bind_kv(lim, KvType::F16).unwrap();
            let plan = Plan::new(&graph).unwrap();
            let partials = graph
                .tensors
                .iter()
                .find(|t| t.name.ends_with("attn_partials"))
                .expect("the attention's partials scratch")
                .cols
                * 4;
            println!(
                "{name}: ctx {ctx}: arena {} B (partials {partials} B), KV (f16) {} B",
                plan.arena_bytes, plan.kv_bytes
            );
            assert_eq!(
                plan.kv_bytes,
                ctx * 2 * graph.kv_layers * graph.kv_width * 2
            );
            // A few bytes per cached position: less than an eighth of one layer's f16 cache.
            assert!(
                partials * 8 < plan.kv_bytes / graph.kv_layers,
                "{name}: partials {partials} B"
            );
            arenas.push((plan.arena_bytes, partials));
        }
        // The partials may get a place of their own (aligned to 64 bytes) but nothing else may
        // grow: at most the smallest context's arena plus this context's partials.
        let base = arenas[0].0;
        for &(arena, partials) in &arenas {
            assert!(
                arena >= base && arena <= base + partials.next_multiple_of(64),
                "{name}: the arena grows with the context beyond the partials: {arenas:?}"
            );
        }
    }
}

#[test]
fn kv_types_plan_their_bytes() {
    let model = tiny("qwen3");
    let lim = Limits {
        max_ctx: 256,
        max_tokens: 32,
        all_logits: false,
    };
    let bytes: Vec<usize> = KvType::ALL
        .iter()
        .map(|&t| {
            let (g, _) = model.bind_kv(lim, t).unwrap();
            Plan::new(&g).unwrap().kv_bytes
        })
        .collect();
    let (g, _) = model.bind(lim).unwrap();
    let values = 2 * g.kv_layers * 256 * g.kv_width;
    assert_eq!(bytes, vec![values * 4, values * 2, values / 32 * 34]);
    // head_dim 16 cannot hold Q8_0 blocks of 32: a clear error, not a wrong cache.
    let err = tiny("llama").bind_kv(lim, KvType::Q8_0).err().unwrap();
    assert!(format!("{err:#}").contains("head_dim"), "{err:#}");
}

/// f16 and Q8_0 caches against the f32 cache on the same tokens, for every fixture model and
/// step sizes 1 and 7 (measured: f16 ≤ 2e-3, q8_0 ≤ 2e-2 relative max-abs on these models).
#[test]
fn smaller_kv_types_stay_close_to_f32() {
    for name in ["llama", "qwen2", "qwen3"] {
        let model = tiny(name);
        let toks = tokens(50, model.config.vocab);
        for step in [1usize, 7] {
            let lim = Limits {
                max_ctx: 64,
                max_tokens: step,
                all_logits: false,
            };
            let mut f32_engine = Engine::with_kv(&model, lim, KvType::F32, 2).unwrap();
            let exact = last_logits(&mut f32_engine, &toks);
            for (kv, tol) in [(KvType::F16, 5e-3), (KvType::Q8_0, 5e-2)] {
                if kv.check_head_dim(model.config.head_dim).is_err() {
                    continue;
                }
                let mut e = Engine::with_kv(&model, lim, kv, 2).unwrap();
                let got = last_logits(&mut e, &toks);
                let err = rel_max_abs(&got, &exact);
                println!("{name} step {step} {kv}: {err:.2e}");
                assert!(err <= tol, "{name} {kv} step {step}: {err:.3e} > {tol}");
            }
        }
    }
}

/// The blocked online-softmax attention of the selected tier against the scalar reference's
/// exact three-pass softmax at 4096 positions (everything else scalar, so only attention
/// differs), f32 cache (the other types are compared kernel by kernel in `kernels_simd.rs`).
/// Measured: 2.2e-6 relative max-abs (f16 2.1e-6, q8_0 9.2e-6).
#[test]
fn blocked_attention_matches_the_exact_softmax_at_ctx_4096() {
    let model = tiny("qwen3");
    let selected = vspec_host::detect::kernel_table();
    if selected.attention.name == KernelTable::scalar().attention.name {
        println!("SKIPPED: only the scalar attention on this CPU");
        return;
    }
    let toks = tokens(4096, model.config.vocab);
    let lim = Limits {
        max_ctx: 4096,
        max_tokens: 512,
        all_logits: false,
    };
    let kv = KvType::F32;
    let mut exact = Engine::build(&model, lim, kv, 2, KernelTable::scalar()).unwrap();
    let mut mixed = KernelTable::scalar();
    mixed.attention = selected.attention;
    let mut blocked = Engine::build(&model, lim, kv, 2, mixed).unwrap();
    let a = last_logits(&mut exact, &toks);
    let b = last_logits(&mut blocked, &toks);
    let err = rel_max_abs(&b, &a);
    println!("ctx 4096 {kv}: blocked vs exact {err:.2e}");
    assert!(err <= 1e-4, "{kv}: {err:.3e}");
}

/// After a context shift, the session continues as a fresh one fed only the kept tokens: the
/// cached keys were turned back by the dropped positions. With one layer, a token's key and
/// value depend on the token and its position only, so this holds up to rounding (with more
/// layers the kept tokens' values still carry what they saw of the dropped ones, as in
/// llama.cpp's context shift).
#[test]
fn context_shift_equals_evaluating_the_kept_tokens() {
    for name in ["llama", "qwen3"] {
        let mut model = tiny(name);
        model.config.n_layers = 1;
        let toks = tokens(40, model.config.vocab);
        let lim = Limits {
            max_ctx: 64,
            max_tokens: 16,
            all_logits: false,
        };
        let (keep, discard) = (3usize, 20usize);
        for (kv, tol) in [
            (KvType::F32, 1e-4),
            (KvType::F16, 5e-3),
            (KvType::Q8_0, 5e-2),
        ] {
            if kv.check_head_dim(model.config.head_dim).is_err() {
                continue;
            }
            let mut e = Engine::with_kv(&model, lim, kv, 1).unwrap();
            let shifted = {
                let mut sess = e.session().unwrap();
                for chunk in toks.chunks(16) {
                    sess.forward(chunk).unwrap();
                }
                sess.shift_context(keep, discard).unwrap();
                assert_eq!(sess.pos(), toks.len() - discard);
                sess.forward(&[5]).unwrap().to_vec()
            };
            let mut kept: Vec<u32> = toks[..keep].to_vec();
            kept.extend_from_slice(&toks[keep + discard..]);
            kept.push(5);
            let mut fresh = Engine::with_kv(&model, lim, kv, 1).unwrap();
            let want = last_logits(&mut fresh, &kept);
            let err = rel_max_abs(&shifted, &want);
            println!("{name} {kv}: shifted vs fresh {err:.2e}");
            assert!(err <= tol, "{name} {kv}: {err:.3e}");
            let mut sess = e.session().unwrap();
            sess.forward(&toks[..10]).unwrap();
            assert!(sess.shift_context(5, 6).is_err(), "shift past the end");
        }
    }
}
