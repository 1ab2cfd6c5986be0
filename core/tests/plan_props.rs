//! Arena planner tests (STYLE H12): golden offsets worked out by hand, a property test over random
//! lifetimes against the validator, the lower bound and the linear oracle, determinism, and the
//! validator rejecting a bad plan.

use vspec_core::plan::{greedy, linear, peak_live_bytes, render_ascii, validate, ArenaLayout, Buf};

fn buf(size: usize, align: usize, live: core::ops::Range<u32>) -> Buf {
    Buf { size, align, live }
}

/// Plan with greedy, check it against everything, and return it.
fn checked_greedy(bufs: &[Buf]) -> ArenaLayout {
    let plan = greedy::plan(bufs);
    if let Err(e) = validate(bufs, &plan) {
        panic!("{e}\n{}", render_ascii(bufs, &plan));
    }
    plan
}

#[test]
fn golden_chain_reuses_dead_buffers() {
    let bufs = vec![
        buf(100, 1, 0..2), // 0
        buf(50, 1, 1..3),  // 1
        buf(100, 1, 2..4), // 2
        buf(30, 1, 3..5),  // 3
    ];
    // Order by (size desc, id asc): 0, 2, 1, 3.
    // 0: nothing placed → 0, bytes 0..100.
    // 2: live 2..4 does not meet 0 (0..2, half-open) → 0, bytes 0..100.
    // 1: live 1..3 meets 0 and 2, both at 0..100; no gap before them → after them at 100.
    // 3: live 3..5 meets only 2 (0..100); no gap before it → 100, bytes 100..130.
    // Arena = 150 = peak (steps 1 and 2 hold 150 bytes).
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 100, 0, 100],
            arena_bytes: 150
        }
    );
    assert_eq!(peak_live_bytes(&bufs), 150);
    assert_eq!(
        linear::plan(&bufs),
        ArenaLayout {
            offsets: vec![0, 100, 150, 250],
            arena_bytes: 280
        }
    );
}

#[test]
fn golden_gap_reuse() {
    let bufs = vec![
        buf(96, 1, 0..2), // 0: A
        buf(64, 1, 0..6), // 1: B
        buf(64, 1, 2..6), // 2: C
        buf(48, 1, 2..4), // 3: D
        buf(32, 1, 4..6), // 4: E
    ];
    // Order: A(96), B(64, id 1), C(64, id 2), D(48), E(32).
    // A → 0 (0..96).
    // B meets A → after it, 96 (96..160).
    // C (2..6) meets B only; gap 0..96 before B fits 64 → 0 (0..64).
    // D (2..4) meets C (0..64) and B (96..160); the gap 64..96 is 32 < 48 → after B, 160 (160..208).
    // E (4..6) meets C and B (not D: 2..4 ends at 4); gap 64..96 is exactly 32 → 64.
    // Arena 208; peak is B+C+D = 176 at steps 2..4.
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 96, 0, 160, 64],
            arena_bytes: 208
        }
    );
    assert_eq!(peak_live_bytes(&bufs), 176);
}

/// Four buffers whose two short-lived ones (live 0..1) leave two holes for a late buffer Q.
fn best_fit_case(q_align: usize) -> Vec<Buf> {
    vec![
        buf(64, 16, 0..1),      // P0
        buf(48, 16, 0..3),      // P1
        buf(40, 8, 0..1),       // P2
        buf(36, 4, 0..3),       // P3
        buf(20, q_align, 1..3), // Q, aligned size 32 for align 16 or 32
    ]
}

#[test]
fn golden_best_fit_picks_smallest_aligned_gap() {
    // Order: P0 (64), P1 (48), P2 (40), P3 (36), Q (32). P0..P3 all live at step 0, so they
    // stack: P0 0..64, P1 64..112, P2 112..152, P3 152..188 (arena 188).
    // Q (1..3) meets only P1 (64..112) and P3 (152..188). Gaps: 0..64 (64 bytes) and
    // 112..152 (40 bytes).
    // align 16: both gaps fit 32 bytes, the smaller one wins → 112.
    let bufs = best_fit_case(16);
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 64, 112, 152, 112],
            arena_bytes: 188
        }
    );
    // align 32: the second gap starts at 128 and leaves 24 < 32 bytes → only 0..64 fits → 0.
    let bufs = best_fit_case(32);
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 64, 112, 152, 0],
            arena_bytes: 188
        }
    );
}

#[test]
fn golden_zero_size_and_never_live() {
    let bufs = vec![
        buf(0, 64, 0..5), // zero size → offset 0, conflicts with nothing
        buf(10, 4, 3..3), // never live, 12 bytes reserved → placed first, at 0
        buf(8, 8, 0..5),  // meets nothing that has bytes and is live → 0
    ];
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 0, 0],
            arena_bytes: 12
        }
    );
    assert_eq!(peak_live_bytes(&bufs), 8);
    // Linear: 0 for the zero-size one, 0..12, then 16..24.
    assert_eq!(
        linear::plan(&bufs),
        ArenaLayout {
            offsets: vec![0, 0, 16],
            arena_bytes: 24
        }
    );
    assert_eq!(
        greedy::plan(&[]),
        ArenaLayout {
            offsets: vec![],
            arena_bytes: 0
        }
    );
}

#[test]
fn golden_mixed_alignment_falls_back_to_linear() {
    // All live together. Greedy order: 2 (5 B), 0 (4 B), 1 (1 B):
    // 2 → 0..5; 0 (align 4) → 8..12; 1 fits the gap 5..8 → 5. Arena 12.
    // Linear in id order: 0..4, 4..5, 5..10 → 10 < 12, so greedy returns the linear plan.
    let bufs = vec![buf(4, 4, 0..1), buf(1, 1, 0..1), buf(5, 1, 0..1)];
    let plan = checked_greedy(&bufs);
    assert_eq!(
        plan,
        ArenaLayout {
            offsets: vec![0, 4, 5],
            arena_bytes: 10
        }
    );
    assert_eq!(plan, linear::plan(&bufs));
}

#[test]
fn validator_rejects_overlapping_plan() {
    let bufs = vec![buf(64, 16, 0..3), buf(32, 16, 2..5), buf(32, 16, 3..6)];
    // 1 and 2 share bytes 16..48 while both live at steps 3..5.
    let bad = ArenaLayout {
        offsets: vec![0, 64, 80],
        arena_bytes: 112,
    };
    let err = validate(&bufs, &bad).unwrap_err().to_string();
    assert!(err.contains("plan buffers 1 and 2"), "{err}");
    assert!(err.contains("steps 3..5"), "{err}");
    // Reusing the bytes of 0 for 2 is fine: 0..3 and 3..6 do not meet.
    let good = ArenaLayout {
        offsets: vec![0, 64, 0],
        arena_bytes: 96,
    };
    validate(&bufs, &good).unwrap();
}

#[test]
fn plan_round_trips_through_json() {
    let bufs = best_fit_case(16);
    let plan = greedy::plan(&bufs);
    let text = serde_json::to_string(&(&bufs, &plan)).unwrap();
    let back: (Vec<Buf>, ArenaLayout) = serde_json::from_str(&text).unwrap();
    assert_eq!(back, (bufs, plan));
}

/// xorshift64*, enough for test inputs.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_case(rng: &mut XorShift) -> Vec<Buf> {
    let n = 1 + rng.below(40) as usize;
    let steps = 1 + rng.below(40) as u32;
    (0..n)
        .map(|_| {
            let size = match rng.below(10) {
                0 => 0,
                1..=3 => rng.below(64) as usize,
                _ => rng.below(8192) as usize,
            };
            let align = 1usize << rng.below(9); // 1 ..= 256
            let start = rng.below(u64::from(steps)) as u32;
            let len = match rng.below(20) {
                0 => 0, // never live
                _ => 1 + rng.below(u64::from(steps)) as u32,
            };
            buf(size, align, start..start + len)
        })
        .collect()
}

#[test]
fn random_plans_are_sound_bounded_and_deterministic() {
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let (mut usage_sum, mut vs_linear_sum, mut fallbacks) = (0.0f64, 0.0f64, 0);
    const CASES: usize = 2000;
    for case in 0..CASES {
        let bufs = random_case(&mut rng);
        let plan = greedy::plan(&bufs);
        let oracle = linear::plan(&bufs);
        let peak = peak_live_bytes(&bufs);
        let picture = || format!("case {case}\n{}", render_ascii(&bufs, &plan));
        if let Err(e) = validate(&bufs, &plan) {
            panic!("{e}\n{}", picture());
        }
        validate(&bufs, &oracle).unwrap_or_else(|e| panic!("linear: {e}\n{}", picture()));
        assert!(
            plan.arena_bytes >= peak,
            "below the lower bound {peak}\n{}",
            picture()
        );
        assert!(
            plan.arena_bytes <= oracle.arena_bytes,
            "worse than linear {}\n{}",
            oracle.arena_bytes,
            picture()
        );
        assert_eq!(
            plan,
            greedy::plan(&bufs),
            "not deterministic\n{}",
            picture()
        );
        if plan == oracle && peak < oracle.arena_bytes {
            fallbacks += 1;
        }
        if plan.arena_bytes > 0 {
            usage_sum += peak as f64 / plan.arena_bytes as f64;
            vs_linear_sum += plan.arena_bytes as f64 / oracle.arena_bytes as f64;
        } else {
            usage_sum += 1.0;
            vs_linear_sum += 1.0;
        }
    }
    let usage = usage_sum / CASES as f64;
    println!(
        "{CASES} random cases: average usage (peak live / arena) = {:.1}%, greedy / linear = \
         {:.1}%, plans identical to the linear one \
         with peak < arena (the fallback, or no reuse possible) = {fallbacks}",
        100.0 * usage,
        100.0 * vs_linear_sum / CASES as f64
    );
    assert!(usage > 0.8, "average usage {usage} is poor");
}
