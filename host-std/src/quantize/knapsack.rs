//! `vspec convert --budget`: one format per matrix so that the bytes fit a budget and the summed
//! sensitivity (`sensitivity.rs`) is as small as it can be made.
//!
//! This is a multiple-choice knapsack: every matrix must take exactly one of its candidate
//! formats, each with a size in bytes and a loss. The allocation:
//!
//! 1. Per matrix, keep the candidates on the lower convex hull of (bytes, loss): a candidate
//!    that costs more than another without losing less is never worth it, and one above the
//!    hull is beaten by mixing its neighbours across matrices.
//! 2. Start every matrix at its cheapest hull point. If that does not fit, the budget is refused
//!    with the smallest that works.
//! 3. Take upgrades (a matrix's next hull point) in order of loss saved per byte, best first;
//!    along a hull those ratios fall, so each matrix's upgrades come in order. An upgrade that
//!    no longer fits ends that matrix's climb; the walk goes on with the others, so small
//!    upgrades still fill what is left.
//!
//! 4. Improve by local search (one or two matrices changed at once, [`improve`]).
//!
//! Steps 1–3 are the classic greedy, optimal for the continuous relaxation up to one partly
//! taken upgrade, so at most one upgrade's loss from the true optimum; on random 5-matrix
//! instances it was exact in 120 of 200 cases, with step 4 in 162 (unit test, against
//! exhaustive search). Ties are broken by matrix order, so the result is a pure function of the
//! inputs.

use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use vspec_core::format::Format;

/// One candidate format for a matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The format.
    pub format: Format,
    /// The matrix's bytes in it.
    pub bytes: u64,
    /// Its sensitivity (estimated KLD contribution; only the ordering of sums matters).
    pub loss: f64,
}

/// What the allocation chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Index into each matrix's candidate list.
    pub picks: Vec<usize>,
    /// Bytes of the chosen formats.
    pub bytes: u64,
    /// Summed loss of the chosen formats.
    pub loss: f64,
}

/// The points of `opts` on the lower convex hull of (bytes, loss), cheapest first (indices).
fn hull(opts: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..opts.len()).collect();
    order.sort_by(|&a, &b| {
        opts[a]
            .bytes
            .cmp(&opts[b].bytes)
            .then(opts[a].loss.total_cmp(&opts[b].loss))
            .then(a.cmp(&b))
    });
    let mut h: Vec<usize> = Vec::new();
    for i in order {
        // Same size as the last kept point: that one loses no more (sorted by loss).
        if h.last().is_some_and(|&l| opts[l].bytes == opts[i].bytes) {
            continue;
        }
        // Not lower than the last kept point: dominated.
        if h.last().is_some_and(|&l| opts[i].loss >= opts[l].loss) {
            continue;
        }
        // Pop points that lie on or above the segment from their predecessor to `i`.
        while h.len() >= 2 {
            let (a, b) = (opts[h[h.len() - 2]], opts[h[h.len() - 1]]);
            let c = opts[i];
            let slope_ab = (a.loss - b.loss) / (b.bytes - a.bytes) as f64;
            let slope_bc = (b.loss - c.loss) / (c.bytes - b.bytes) as f64;
            if slope_bc >= slope_ab {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// One pending upgrade in the walk: matrix `m` from hull step `step` to `step + 1`.
#[derive(Debug, PartialEq)]
struct Step {
    ratio: f64,
    m: usize,
    step: usize,
}

impl Eq for Step {}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: the best ratio first, then the earlier matrix.
        self.ratio
            .total_cmp(&other.ratio)
            .then(other.m.cmp(&self.m))
    }
}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The smallest bytes any choice needs: every matrix at its cheapest candidate.
pub fn smallest(matrices: &[Vec<Candidate>]) -> u64 {
    matrices
        .iter()
        .map(|o| o.iter().map(|c| c.bytes).min().unwrap_or(0))
        .sum()
}

/// Chooses one candidate per matrix with at most `budget` bytes in all, minimising the summed
/// loss (module doc). Errors when even the cheapest choice exceeds the budget or a matrix has
/// no candidate.
pub fn allocate(matrices: &[Vec<Candidate>], budget: u64) -> Result<Allocation> {
    if let Some(i) = matrices.iter().position(|o| o.is_empty()) {
        bail!("matrix {i} has no candidate format");
    }
    let hulls: Vec<Vec<usize>> = matrices.iter().map(|o| hull(o)).collect();
    let mut at = vec![0usize; matrices.len()];
    let mut bytes: u64 = hulls.iter().zip(matrices).map(|(h, o)| o[h[0]].bytes).sum();
    if bytes > budget {
        bail!(
            "the cheapest formats need {bytes} bytes, {} more than the {budget} available",
            bytes - budget
        );
    }
    let next = |m: usize, step: usize| -> Option<Step> {
        let h = &hulls[m];
        let (a, b) = (matrices[m][*h.get(step)?], matrices[m][*h.get(step + 1)?]);
        Some(Step {
            ratio: (a.loss - b.loss) / (b.bytes - a.bytes) as f64,
            m,
            step,
        })
    };
    let mut heap: BinaryHeap<Step> = (0..matrices.len()).filter_map(|m| next(m, 0)).collect();
    while let Some(s) = heap.pop() {
        let h = &hulls[s.m];
        let extra = matrices[s.m][h[s.step + 1]].bytes - matrices[s.m][h[s.step]].bytes;
        if bytes + extra > budget {
            continue;
        }
        bytes += extra;
        at[s.m] = s.step + 1;
        if let Some(n) = next(s.m, s.step + 1) {
            heap.push(n);
        }
    }
    let mut picks: Vec<usize> = at.iter().zip(&hulls).map(|(&s, h)| h[s]).collect();
    improve(matrices, &mut picks, &mut bytes, budget);
    let loss = picks.iter().zip(matrices).map(|(&p, o)| o[p].loss).sum();
    Ok(Allocation { picks, bytes, loss })
}

/// Step 4: local search from the greedy's choice. Each round applies the move that saves the
/// most loss while fitting: one matrix to any of its candidates, or two matrices at once (one
/// up, one down, which is what the greedy cannot do once it has spent the bytes); it stops when
/// no move saves anything. Every move lowers the loss, so it ends; a round is
/// O((matrices · candidates)²), 4.5M pairs for SmolLM2's 211 matrices and 10 formats.
fn improve(matrices: &[Vec<Candidate>], picks: &mut [usize], bytes: &mut u64, budget: u64) {
    // (matrix, candidate, change of bytes, change of loss) of every single move.
    type Move = (usize, usize, i128, f64);
    loop {
        let moves: Vec<Move> = picks
            .iter()
            .enumerate()
            .flat_map(|(m, &p)| {
                let cur = matrices[m][p];
                matrices[m]
                    .iter()
                    .enumerate()
                    .filter(move |(c, _)| *c != p)
                    .map(move |(c, o)| {
                        (m, c, o.bytes as i128 - cur.bytes as i128, o.loss - cur.loss)
                    })
            })
            .collect();
        let room = budget as i128 - *bytes as i128;
        let mut best: (f64, Option<Move>, Option<Move>) = (0.0, None, None);
        for (i, a) in moves.iter().enumerate() {
            if a.2 <= room && a.3 < best.0 {
                best = (a.3, Some(*a), None);
            }
            for b in &moves[i + 1..] {
                if b.0 != a.0 && a.2 + b.2 <= room && a.3 + b.3 < best.0 {
                    best = (a.3 + b.3, Some(*a), Some(*b));
                }
            }
        }
        // Rounding noise is no improvement: demand a saving above the sums' last bits.
        let total: f64 = picks.iter().zip(matrices).map(|(&p, o)| o[p].loss).sum();
        if best.0 >= -1e-12 * total.max(1e-300) {
            return;
        }
        for (m, c, db, _) in [best.1, best.2].into_iter().flatten() {
            picks[m] = c;
            *bytes = (*bytes as i128 + db) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(bytes: u64, loss: f64) -> Candidate {
        Candidate {
            format: Format::Q8_0,
            bytes,
            loss,
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        // (12, 9.5) is dominated by (10, 9); (30, 3.5) lies above the segment from (20, 4) to
        // (40, 1) (it saves 0.05 per byte, the step after it 0.25); (40, 2) loses to (40, 1).
        let o = [
            opt(20, 4.0),
            opt(10, 9.0),
            opt(12, 9.5),
            opt(30, 3.5),
            opt(40, 1.0),
            opt(40, 2.0),
        ];
        assert_eq!(hull(&o), vec![1, 0, 4]);
    }

    /// Exhaustive search: the least loss within `budget`.
    fn brute(m: &[Vec<Candidate>], budget: u64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; m.len()];
        loop {
            let b: u64 = idx.iter().zip(m).map(|(&i, o)| o[i].bytes).sum();
            let l: f64 = idx.iter().zip(m).map(|(&i, o)| o[i].loss).sum();
            if b <= budget && best.is_none_or(|x| l < x) {
                best = Some(l);
            }
            let mut k = 0;
            loop {
                if k == m.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < m[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn close_to_exhaustive_search_and_deterministic() {
        // Formats shaped like ours: loss falls about 4x per extra bit, sizes per bit.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut exact, mut worst) = (0, 0f64);
        for _ in 0..200 {
            let n = 5;
            let m: Vec<Vec<Candidate>> = (0..n)
                .map(|_| {
                    let size = 100 + (rnd() * 900.0) as u64;
                    let gain = 0.1 + rnd() * 10.0;
                    [2.25, 2.5, 3.25, 3.5, 4.25, 4.5, 8.5]
                        .iter()
                        .map(|bits| {
                            let bytes = (size as f64 * bits) as u64;
                            opt(bytes, gain * 4f64.powf(-bits) * (0.8 + 0.4 * rnd()))
                        })
                        .collect()
                })
                .collect();
            let lo = smallest(&m);
            let hi: u64 = m
                .iter()
                .map(|o| o.iter().map(|c| c.bytes).max().unwrap())
                .sum();
            let budget = lo + ((hi - lo) as f64 * rnd()) as u64;
            let a = allocate(&m, budget).unwrap();
            assert!(a.bytes <= budget);
            assert_eq!(allocate(&m, budget).unwrap(), a);
            let best = brute(&m, budget).unwrap();
            assert!(a.loss >= best - 1e-12);
            // The continuous optimum is a lower bound and the greedy misses it by at most the
            // one upgrade it takes partly; so no more than one matrix's whole span is lost.
            let span = m
                .iter()
                .map(|o| {
                    let l = o.iter().map(|c| c.loss);
                    l.clone().fold(0f64, f64::max) - l.fold(f64::INFINITY, f64::min)
                })
                .fold(0f64, f64::max);
            assert!(
                a.loss - best <= span + 1e-12,
                "{} vs {best}, span {span}",
                a.loss
            );
            exact += (a.loss - best < 1e-12) as usize;
            worst = worst.max((a.loss - best) / best);
        }
        // Measured: 162 exact (120 without the local search). With 5 matrices one upgrade
        // weighs a lot; real models have hundreds of matrices.
        eprintln!("greedy: {exact} of 200 exact, worst {worst:.3} above the optimum");
        assert!(exact >= 150, "only {exact} of 200 exact");
    }

    #[test]
    fn too_small_a_budget_is_refused_and_the_whole_budget_takes_the_best() {
        let m = vec![
            vec![opt(10, 5.0), opt(20, 1.0)],
            vec![opt(30, 2.0), opt(60, 0.0)],
        ];
        assert_eq!(smallest(&m), 40);
        let e = allocate(&m, 39).unwrap_err().to_string();
        assert!(e.contains("40 bytes") && e.contains("1 more"), "{e}");
        assert_eq!(allocate(&m, 40).unwrap().picks, vec![0, 0]);
        // 0.4 per byte for the first matrix beats 0.067 for the second.
        assert_eq!(allocate(&m, 50).unwrap().picks, vec![1, 0]);
        assert_eq!(allocate(&m, 70).unwrap().picks, vec![1, 0]);
        let all = allocate(&m, 80).unwrap();
        assert_eq!((all.picks, all.bytes, all.loss), (vec![1, 1], 80, 1.0));
        assert!(allocate(&[vec![]], 10).is_err());
        // The first's upgrade does not fit, the second's smaller one does: the walk goes on.
        let m = vec![
            vec![opt(10, 5.0), opt(40, 0.0)],
            vec![opt(30, 2.0), opt(35, 1.5)],
        ];
        assert_eq!(allocate(&m, 45).unwrap().picks, vec![0, 1]);
    }
}
