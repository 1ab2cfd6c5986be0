//! Error-compensated quantization (the GPTQ idea: Frantar et al., 2022) over any block format.
//!
//! Plain quantization rounds every weight on its own, so the errors of a row add up in its dot
//! product with the activations. With the input second-moment matrix `H = E[x xᵀ]` of a matmul,
//! the output error of a row `w` quantized to `q` is `(w − q)ᵀ H (w − q)`, and once column `i` is
//! fixed, the best change of the columns after it is `−(wᵢ − qᵢ)/Uᵢᵢ · U[i, i+1..]`, where `U` is
//! the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`). Walking the columns in order and feeding each
//! error forward this way lets the later weights absorb what the earlier ones lost.
//!
//! Our formats choose a scale and min per block, so the walk goes block by block: the block's
//! parameters come from the weighted search of [`super::search`] on the block's current values,
//! with `1/Uᵢᵢ²` (the cost of an error on column `i` after compensation) as importance; then the
//! columns of the block are walked in order, the errors fed forward inside the block and, at its
//! end, to every later column. In the VQ formats and NQ3 each element is rounded when its turn
//! comes (for the block's scale and min), as GPTQ does; a trellis block (TQ) is planned by Viterbi
//! runs over its remaining columns, a few symbols committed per run ([`TrellisWalk`]); in the
//! ggml formats the search's quants stay fixed. A second pass refits the block on the values the
//! walk actually reached, and the pass with the lower compensated error `Σ ((wᵢ − x̂ᵢ)/Uᵢᵢ)²` is
//! kept, so it never makes a block worse.
//!
//! Rows are independent given `U`, so callers can quantize them in parallel and get the same
//! bytes for any thread count.

use super::gguf::f16_at;
use super::search::Codebook;
use super::vspec::trellis;
use super::{dequantize_row, quantize_row};
use crate::error::{Error, Result};
use crate::format::Format;
use alloc::{format, vec, vec::Vec};

/// The upper Cholesky factor `U` of a damped `H⁻¹`, row-major `n × n` (the lower triangle is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct InverseFactor {
    n: usize,
    u: Vec<f32>,
}

impl InverseFactor {
    /// Columns (the matmul's input width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row `i` of `U`, all `n` entries.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.u[i * self.n..(i + 1) * self.n]
    }
}

/// `Σ aᵢbᵢ` with four independent partial sums (so the compiler can vectorize it; the order is
/// fixed, so the result is deterministic).
fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ aᵢbᵢ` in f32 with eight independent partial sums (vectorizable, fixed order).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// In-place lower Cholesky `A = L Lᵀ` of a row-major `n × n` symmetric matrix (only the lower
/// triangle is read; the upper is zeroed). `false` when `A` is not positive definite.
fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let dot = dot_f64(&a[ri..ri + j], &a[rj..rj + j]);
            let s = a[ri + j] - dot;
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return false;
                }
                a[ri + i] = libm::sqrt(s);
            } else {
                a[ri + j] = s / a[rj + j];
            }
        }
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    true
}

/// The inverse of a lower-triangular `L` (row-major `n × n`), row by row: row `i` of `L⁻¹` is
/// `(eᵢ − Σₖ₍ₖ<ᵢ₎ Lᵢₖ · row k of L⁻¹) / Lᵢᵢ`, contiguous updates only.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                for (r, &xk) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *r -= lik * xk;
                }
            }
        }
        let inv = 1.0 / l[i * n + i];
        row[..=i].iter_mut().for_each(|v| *v *= inv);
    }
    x
}

/// `U` with `UᵀU = (H + λ·μ·I)⁻¹` for a symmetric `n × n` second-moment matrix `h` (row-major,
/// full), `μ` the mean of the positive diagonal entries. Columns that never saw a nonzero input
/// (`Hᵢᵢ = 0`) get `Hᵢᵢ = μ` first, so they stay independent and on the same scale. When `H` is not positive definite even after damping (rounding in a
/// rank-deficient matrix), the damping is raised tenfold, twice at most, before giving up.
///
/// Uses the reversal identity: with `P` the reversal permutation and `PHP = L'L'ᵀ`,
/// `U = P L'⁻¹ P` is upper triangular and `UᵀU = H⁻¹`, so one Cholesky and one triangular
/// inverse suffice.
pub fn inverse_factor(h: &[f64], n: usize, damp: f64) -> Result<InverseFactor> {
    const WHAT: &str = "hessian";
    if n == 0 || h.len() != n * n {
        return Err(Error::invalid(
            WHAT,
            format!("{} entries is not a {n} × {n} matrix", h.len()),
        ));
    }
    if let Some(v) = h.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(WHAT, format!("entry {v} is not finite")));
    }
    let live: Vec<f64> = (0..n).map(|i| h[i * n + i]).filter(|&d| d > 0.0).collect();
    let mean_diag = if live.is_empty() {
        1.0
    } else {
        live.iter().sum::<f64>() / live.len() as f64
    };
    let mut lambda = damp.max(1e-6) * mean_diag;
    for _ in 0..3 {
        // A = P H P, damped.
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
            let d = &mut a[i * n + i];
            if *d <= 0.0 {
                *d = mean_diag;
            }
            *d += lambda;
        }
        if cholesky_lower(&mut a, n) {
            let linv = invert_lower(&a, n);
            let mut u = vec![0f32; n * n];
            for i in 0..n {
                for j in i..n {
                    u[i * n + j] = linv[(n - 1 - i) * n + (n - 1 - j)] as f32;
                }
            }
            return Ok(InverseFactor { n, u });
        }
        lambda *= 10.0;
    }
    Err(Error::invalid(
        WHAT,
        "the matrix is not positive definite even with damping",
    ))
}

/// Reusable buffers for [`quantize_row_gptq`] (one per thread).
#[derive(Debug, Default)]
pub struct GptqScratch {
    target: Vec<f32>,
    reached: Vec<f32>,
    work: Vec<f32>,
    decoded: Vec<f32>,
    errs: Vec<f32>,
    best_errs: Vec<f32>,
    importance: Vec<f32>,
    block: Vec<u8>,
    quants: Vec<u8>,
}

/// Stores `d`, `m` and the quants as one block (`vqN::pack`).
type AffinePack = fn(f32, f32, &[u8], &mut [u8]);

/// Formats whose block is `x̂ = d·q + m` with `d`, `m` as f16 at bytes 0 and 2: once the search
/// has chosen them, each element can be rounded in turn, after the errors before it were fed
/// forward (the walk of GPTQ proper). `(qmax, pack)`.
fn affine_walk(format: Format) -> Option<(u8, AffinePack)> {
    use super::vspec::{vq2, vq3, vq4};
    match format {
        Format::VQ2 => Some((3, vq2::pack)),
        Format::VQ3 => Some((7, vq3::pack)),
        Format::VQ4 => Some((15, vq4::pack)),
        _ => None,
    }
}

/// Stores `d` and the indices as one block (`nq3::pack`).
type CodebookPack = fn(f32, &[u8], &mut [u8]);

/// Formats whose block is `x̂ = d·levels[q]` with `d` as f16 at byte 0: rounded element by
/// element like [`affine_walk`]'s. `(codebook, pack)`.
fn codebook_walk(format: Format) -> Option<(Codebook, CodebookPack)> {
    use super::vspec::nq3;
    match format {
        Format::NQ3 => Some((nq3::CODEBOOK, nq3::pack)),
        _ => None,
    }
}

/// Symbols a trellis walk commits per Viterbi run (see [`TrellisWalk`]).
const TRELLIS_COMMIT: usize = 8;

/// [`trellis::viterbi_from`] for one `K`.
type TrellisViterbi = fn(&[i8; trellis::STATES], usize, &[f32], &[f32], f32, &mut [u8]) -> f32;

/// A trellis format (`tqN`): its codebook, and [`trellis`]'s pack, encoder and state step for
/// its bits per weight.
#[derive(Clone, Copy)]
struct TrellisCode {
    codebook: &'static [i8; trellis::STATES],
    pack: CodebookPack,
    viterbi_from: TrellisViterbi,
    next_state: fn(usize, u8) -> usize,
}

fn trellis_code(format: Format) -> Option<TrellisCode> {
    use super::vspec::{tq2, tq3, tq4};
    fn code<const K: usize>(codebook: &'static [i8; trellis::STATES]) -> TrellisCode {
        TrellisCode {
            codebook,
            pack: trellis::pack::<K>,
            viterbi_from: trellis::viterbi_from::<K>,
            next_state: trellis::next_state::<K>,
        }
    }
    Some(match format {
        Format::TQ2 => code::<{ tq2::K }>(&tq2::CODEBOOK),
        Format::TQ3 => code::<{ tq3::K }>(&tq3::CODEBOOK),
        Format::TQ4 => code::<{ tq4::K }>(&tq4::CODEBOOK),
        _ => return None,
    })
}

/// GPTQ's walk for a trellis block, whose symbols cannot be chosen one at a time: a Viterbi run
/// over the columns not yet fixed (their current values, `1/Uᵢᵢ²` as weights, continuing from the
/// state reached) plans the rest of the block, its first [`TRELLIS_COMMIT`] symbols are kept, their
/// errors are fed forward to the later columns, and the next run plans again from there. So the
/// later columns of a block still absorb the earlier ones' errors, as in the scalar walks, at the
/// price of one Viterbi run per [`TRELLIS_COMMIT`] columns.
struct TrellisWalk<'a> {
    code: TrellisCode,
    u: &'a InverseFactor,
    c0: usize,
    importance: &'a [f32],
    d: f32,
}

impl TrellisWalk<'_> {
    /// Like [`walk_block`]: returns `Σ eᵢ²`, the symbols in `sym`, `eᵢ` in `errs`, the reached
    /// values in `reached`.
    fn walk(
        &self,
        start: &[f32],
        sym: &mut [u8],
        work: &mut [f32],
        reached: &mut [f32],
        errs: &mut [f32],
    ) -> f64 {
        let (u, c0, d, len) = (self.u, self.c0, self.d, start.len());
        work.copy_from_slice(start);
        let code = &self.code;
        let mut plan = [0u8; trellis::BLOCK_ELEMS];
        let (mut loss, mut state, mut first) = (0f64, 0usize, 0usize);
        while first < len {
            let (x, w) = (&work[first..], &self.importance[first..]);
            (code.viterbi_from)(code.codebook, state, x, w, d, &mut plan[..len - first]);
            let end = (first + TRELLIS_COMMIT).min(len);
            for i in first..end {
                sym[i] = plan[i - first];
                state = (code.next_state)(state, sym[i]);
                let row = u.row(c0 + i);
                reached[i] = work[i];
                let e = (work[i] - d * code.codebook[state] as f32) / row[c0 + i];
                errs[i] = e;
                loss += (e as f64) * (e as f64);
                for (wj, &uij) in work[i + 1..].iter_mut().zip(&row[c0 + i + 1..c0 + len]) {
                    *wj -= e * uij;
                }
            }
            first = end;
        }
        loss
    }
}

/// Walks one block's columns `c0..c0 + len` in order, starting from `start`: `pick(i, value)`
/// returns the decoded value column `i` gets, given the value it reached after the errors before
/// it were fed forward. Returns the compensated loss `Σ eᵢ²`, leaving `eᵢ = (reachedᵢ − x̂ᵢ)/Uᵢᵢ`
/// in `errs` and the reached values in `reached`.
fn walk_block(
    u: &InverseFactor,
    c0: usize,
    start: &[f32],
    mut pick: impl FnMut(usize, f32) -> f32,
    work: &mut [f32],
    reached: &mut [f32],
    errs: &mut [f32],
) -> f64 {
    let len = start.len();
    work.copy_from_slice(start);
    let mut loss = 0f64;
    for i in 0..len {
        let row = u.row(c0 + i);
        reached[i] = work[i];
        let e = (work[i] - pick(i, work[i])) / row[c0 + i];
        errs[i] = e;
        loss += (e as f64) * (e as f64);
        for (wj, &uij) in work[i + 1..].iter_mut().zip(&row[c0 + i + 1..c0 + len]) {
            *wj -= e * uij;
        }
    }
    loss
}

/// Quantizes one row `w` (used as scratch: the compensation updates it in place) into `out`
/// (`format.row_bytes(w.len())` bytes), feeding each block's error forward through `u`.
///
/// Errors: `u` of another width, and everything [`quantize_row`] rejects (formats it cannot
/// produce, rows that are not whole blocks, non-finite weights).
pub fn quantize_row_gptq(
    format: Format,
    w: &mut [f32],
    u: &InverseFactor,
    out: &mut [u8],
    s: &mut GptqScratch,
) -> Result<()> {
    const WHAT: &str = "quantize_row_gptq";
    let n = w.len();
    if u.n != n {
        return Err(Error::invalid(
            WHAT,
            format!("the row has {n} weights but the Hessian is {0} × {0}", u.n),
        ));
    }
    let (be, bb) = (format.block_elems(), format.block_bytes());
    let need = format.row_bytes(n, WHAT)?;
    if out.len() != need {
        return Err(Error::invalid(
            WHAT,
            format!("the output holds {} bytes, the row needs {need}", out.len()),
        ));
    }
    for buf in [
        &mut s.target,
        &mut s.reached,
        &mut s.work,
        &mut s.decoded,
        &mut s.errs,
        &mut s.best_errs,
        &mut s.importance,
    ] {
        buf.resize(be, 0.0);
    }
    s.block.resize(bb, 0);
    s.quants.resize(be, 0);
    for (b, dst) in out.chunks_exact_mut(bb).enumerate() {
        let c0 = b * be;
        for (i, imp) in s.importance.iter_mut().enumerate() {
            let d = u.row(c0 + i)[c0 + i];
            *imp = 1.0 / (d * d);
        }
        s.target.copy_from_slice(&w[c0..c0 + be]);
        let mut best = f64::INFINITY;
        for _pass in 0..2 {
            quantize_row(format, &s.target, Some(&s.importance), &mut s.block)?;
            let loss = if let Some((qmax, pack)) = affine_walk(format) {
                // Round each element when its turn comes, for the block's d and m.
                let (d, m) = (f16_at(&s.block, 0), f16_at(&s.block, 2));
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                let quants = &mut s.quants[..be];
                let loss = walk_block(
                    u,
                    c0,
                    &w[c0..c0 + be],
                    |i, v| {
                        // Clamp, then round half up by truncation (the value is >= 0); NaN gives 0.
                        quants[i] = (((v - m) * id).clamp(0.0, qmax as f32) + 0.5) as u8;
                        d * quants[i] as f32 + m
                    },
                    &mut s.work,
                    &mut s.reached,
                    &mut s.errs,
                );
                pack(d, m, quants, &mut s.block);
                loss
            } else if let Some((cb, pack)) = codebook_walk(format) {
                // Round each element to its nearest level when its turn comes, for the block's d.
                let d = f16_at(&s.block, 0);
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let quants = &mut s.quants[..be];
                let loss = walk_block(
                    u,
                    c0,
                    &w[c0..c0 + be],
                    |i, v| {
                        quants[i] = (cb.nearest)(v * id) as u8;
                        d * cb.levels[quants[i] as usize] as f32
                    },
                    &mut s.work,
                    &mut s.reached,
                    &mut s.errs,
                );
                pack(d, quants, &mut s.block);
                loss
            } else if let Some(code) = trellis_code(format) {
                // Plan and commit a few symbols at a time, for the block's d.
                let walker = TrellisWalk {
                    code,
                    u,
                    c0,
                    importance: &s.importance,
                    d: f16_at(&s.block, 0),
                };
                let quants = &mut s.quants[..be];
                let loss = walker.walk(
                    &w[c0..c0 + be],
                    quants,
                    &mut s.work,
                    &mut s.reached,
                    &mut s.errs,
                );
                (code.pack)(walker.d, quants, &mut s.block);
                loss
            } else {
                dequantize_row(format, &s.block, &mut s.decoded)?;
                let decoded = &s.decoded;
                walk_block(
                    u,
                    c0,
                    &w[c0..c0 + be],
                    |i, _| decoded[i],
                    &mut s.work,
                    &mut s.reached,
                    &mut s.errs,
                )
            };
            if loss < best {
                best = loss;
                dst.copy_from_slice(&s.block);
                s.best_errs.copy_from_slice(&s.errs);
            }
            // Refit on what the walk reached; a non-finite value (an overflowing update) stops.
            if s.reached.iter().any(|v| !v.is_finite()) {
                break;
            }
            s.target.copy_from_slice(&s.reached);
        }
        if !best.is_finite() {
            return Err(Error::invalid(
                WHAT,
                format!("block {b}: the compensated error is not finite"),
            ));
        }
        // Feed the block's errors to every later column.
        let (_, later) = w.split_at_mut(c0 + be);
        for (i, &e) in s.best_errs.iter().enumerate() {
            if e != 0.0 {
                let row = &u.row(c0 + i)[c0 + be..];
                for (wj, &uij) in later.iter_mut().zip(row) {
                    *wj -= e * uij;
                }
            }
        }
        if let Some(v) = later.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                WHAT,
                format!("block {b}: compensation produced a non-finite weight ({v})"),
            ));
        }
    }
    Ok(())
}

/// The input second-moment matrix of one matmul, full and row-major, with the per-block column
/// sums the scale refit needs (computed once per tensor).
#[derive(Debug, Clone)]
pub struct BlockMoments {
    n: usize,
    block: usize,
    h: Vec<f32>,
    /// `E[i][c] = Σ_{j ∈ block c} H_ij`, `n × blocks`.
    col_sums: Vec<f64>,
}

impl BlockMoments {
    /// From a full symmetric `n × n` matrix and the format's block width.
    pub fn new(h: &[f64], n: usize, block: usize) -> Result<BlockMoments> {
        if n == 0 || block == 0 || !n.is_multiple_of(block) || h.len() != n * n {
            return Err(Error::invalid(
                "hessian",
                format!("{} entries for width {n} in blocks of {block}", h.len()),
            ));
        }
        let nb = n / block;
        let mut col_sums = vec![0f64; n * nb];
        for i in 0..n {
            for c in 0..nb {
                col_sums[i * nb + c] = h[i * n + c * block..i * n + (c + 1) * block].iter().sum();
            }
        }
        Ok(BlockMoments {
            n,
            block,
            h: h.iter().map(|&v| v as f32).collect(),
            col_sums,
        })
    }

    /// `(a − b)ᵀ H (a − b)`: each row's dot in f32 (vectorizable), the total in f64.
    fn error(&self, a: &[f32], b: &[f32], diff: &mut [f32]) -> f64 {
        for ((d, &x), &y) in diff.iter_mut().zip(a).zip(b) {
            *d = x - y;
        }
        let n = self.n;
        (0..n)
            .map(|i| diff[i] as f64 * dot_f32(&self.h[i * n..(i + 1) * n], diff) as f64)
            .sum()
    }
}

/// Solves the symmetric positive definite `a x = b` (`p × p`, row-major) in place into `b` by
/// Cholesky; `false` when `a` is not positive definite.
fn solve_spd(a: &mut [f64], b: &mut [f64], p: usize) -> bool {
    if !cholesky_lower(a, p) {
        return false;
    }
    for i in 0..p {
        let s = b[i] - dot_f64(&a[i * p..i * p + i], &b[..i]);
        b[i] = s / a[i * p + i];
    }
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| a[k * p + i] * b[k]).sum();
        b[i] = (b[i] - s) / a[i * p + i];
    }
    true
}

/// Checks that a quantized row `out` of `w` matches `moments`, and decodes it.
fn decode_refit_row(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &[u8],
) -> Result<Vec<f32>> {
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    if moments.n != n || moments.block != be || out.len() != n / be * bb {
        return Err(Error::invalid(
            "refit_row_scales",
            format!("a row of {n} does not match the moments ({})", moments.n),
        ));
    }
    let mut xq = vec![0f32; n];
    dequantize_row(format, out, &mut xq)?;
    Ok(xq)
}

/// Replaces `out` (which decodes to `xq`) by `refit` when `refit` decodes finite and has the
/// lower output error against `w`; returns whether it did.
fn keep_if_better(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    xq: &[f32],
    refit: &[u8],
    out: &mut [u8],
) -> Result<bool> {
    let mut xr = vec![0f32; w.len()];
    dequantize_row(format, refit, &mut xr)?;
    if xr.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut diff = vec![0f32; w.len()];
    let before = moments.error(w, xq, &mut diff);
    let after = moments.error(w, &xr, &mut diff);
    if after < before {
        out.copy_from_slice(refit);
        return Ok(true);
    }
    Ok(false)
}

/// Refits every block's scale and min of a quantized VQ row jointly, quants fixed, to minimise
/// the true output error `(w − x̂)ᵀ H (w − x̂)` of the original row `w` (the walk chose quants and
/// scales block by block; this sees the whole row at once). Keeps the new scales only when, after
/// rounding them to f16, the error is lower. Returns whether the row changed. NQ3 and the TQ
/// formats get one gain per block instead ([`refit_row_gains`]); other formats are left as
/// they are.
pub fn refit_row_scales(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &mut [u8],
) -> Result<bool> {
    if matches!(
        format,
        Format::NQ3 | Format::TQ2 | Format::TQ3 | Format::TQ4
    ) {
        return refit_row_gains(format, w, moments, out);
    }
    let Some((qmax, pack)) = affine_walk(format) else {
        return Ok(false);
    };
    let xq = decode_refit_row(format, w, moments, out)?;
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    let nb = n / be;
    // Recover the quants (x̂ = d·q + m exactly, so rounding finds q).
    let mut q = vec![0f32; n];
    for (b, blk) in out.chunks_exact(bb).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        for i in b * be..(b + 1) * be {
            q[i] = if d != 0.0 {
                libm::roundf((xq[i] - m) / d).clamp(0.0, qmax as f32)
            } else {
                0.0
            };
        }
    }
    // G[i][c] = Σ_{j ∈ c} H_ij q_j, and H w.
    let mut g = vec![0f64; n * nb];
    let mut hw = vec![0f64; n];
    for i in 0..n {
        let row = &moments.h[i * n..(i + 1) * n];
        let mut total = 0f64;
        for c in 0..nb {
            let r = c * be..(c + 1) * be;
            g[i * nb + c] = dot_f32(&row[r.clone()], &q[r.clone()]) as f64;
            total += dot_f32(&row[r.clone()], &w[r]) as f64;
        }
        hw[i] = total;
    }
    // Unknowns (d_b, m_b) at 2b, 2b + 1.
    let p = 2 * nb;
    let mut a = vec![0f64; p * p];
    let mut rhs = vec![0f64; p];
    for b in 0..nb {
        for i in b * be..(b + 1) * be {
            let qi = q[i] as f64;
            for c in 0..nb {
                let (gic, eic) = (g[i * nb + c], moments.col_sums[i * nb + c]);
                a[(2 * b) * p + 2 * c] += qi * gic;
                a[(2 * b) * p + 2 * c + 1] += qi * eic;
                a[(2 * b + 1) * p + 2 * c] += gic;
                a[(2 * b + 1) * p + 2 * c + 1] += eic;
            }
            rhs[2 * b] += qi * hw[i];
            rhs[2 * b + 1] += hw[i];
        }
    }
    // Solve for the change from the walked (d, m), so that the small ridge (which keeps
    // directions the calibration never excited solvable) pulls toward them, not toward 0: a
    // block whose inputs never fired keeps its scales.
    let theta0: Vec<f64> = out
        .chunks_exact(bb)
        .flat_map(|blk| [f16_at(blk, 0) as f64, f16_at(blk, 2) as f64])
        .collect();
    for (k, r) in rhs.iter_mut().enumerate() {
        *r -= dot_f64(&a[k * p..(k + 1) * p], &theta0);
    }
    let trace: f64 = (0..p).map(|k| a[k * p + k]).sum();
    let ridge = 1e-7 * trace / p as f64 + f64::MIN_POSITIVE;
    (0..p).for_each(|k| a[k * p + k] += ridge);
    if !solve_spd(&mut a, &mut rhs, p) || rhs.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut refit = vec![0u8; out.len()];
    let mut qb = [0u8; super::search::MAX_GROUP];
    for (b, blk) in refit.chunks_exact_mut(bb).enumerate() {
        let d = (theta0[2 * b] + rhs[2 * b]) as f32;
        let m = (theta0[2 * b + 1] + rhs[2 * b + 1]) as f32;
        for (k, qk) in qb[..be].iter_mut().enumerate() {
            *qk = q[b * be + k] as u8;
        }
        pack(d, m, &qb[..be], blk);
    }
    keep_if_better(format, w, moments, &xq, &refit, out)
}

/// Ridge of the per-block gain refit, relative to each block's own diagonal term.
const GAIN_RIDGE: f64 = 1e-2;

/// [`refit_row_scales`] for the formats whose block decodes to `d · level` (NQ3, TQ2–TQ4):
/// one gain per block, `x̂_b → α_b · x̂_b`, fitted jointly over the row with the levels fixed,
/// then `d_b · α_b` is stored in place of `d_b`.
fn refit_row_gains(
    format: Format,
    w: &[f32],
    moments: &BlockMoments,
    out: &mut [u8],
) -> Result<bool> {
    let xq = decode_refit_row(format, w, moments, out)?;
    let (n, be, bb) = (w.len(), format.block_elems(), format.block_bytes());
    let nb = n / be;
    // G[i][c] = Σ_{j ∈ c} H_ij x̂_j, and H w.
    let mut g = vec![0f64; n * nb];
    let mut hw = vec![0f64; n];
    for i in 0..n {
        let row = &moments.h[i * n..(i + 1) * n];
        for c in 0..nb {
            let r = c * be..(c + 1) * be;
            g[i * nb + c] = dot_f32(&row[r.clone()], &xq[r]) as f64;
        }
        hw[i] = dot_f32(row, w) as f64;
    }
    let mut a = vec![0f64; nb * nb];
    let mut rhs = vec![0f64; nb];
    for b in 0..nb {
        for i in b * be..(b + 1) * be {
            let xi = xq[i] as f64;
            for c in 0..nb {
                a[b * nb + c] += xi * g[i * nb + c];
            }
            rhs[b] += xi * hw[i];
        }
    }
    // Solve for the change from α = 1 with a ridge pulling toward it, relative to each block's
    // own term: a block whose inputs barely fired in calibration has a tiny `A[b][b]`, and
    // without it its gain would fit the sampling noise of the cross terms (sign flips and 20×
    // gains were seen on synthetic data).
    for k in 0..nb {
        let s: f64 = a[k * nb..(k + 1) * nb].iter().sum();
        rhs[k] -= s;
    }
    let trace: f64 = (0..nb).map(|k| a[k * nb + k]).sum();
    let floor = 1e-7 * trace / nb as f64 + f64::MIN_POSITIVE;
    (0..nb).for_each(|k| a[k * nb + k] += GAIN_RIDGE * a[k * nb + k] + floor);
    if !solve_spd(&mut a, &mut rhs, nb) || rhs.iter().any(|v| !v.is_finite()) {
        return Ok(false);
    }
    let mut refit = out.to_vec();
    for (blk, delta) in refit.chunks_exact_mut(bb).zip(&rhs) {
        // A gain outside [1/2, 2] is more likely noise than a better fit: keep that block.
        let gain = 1.0 + *delta as f32;
        if (0.5..=2.0).contains(&gain) {
            let d = f16_at(blk, 0);
            super::gguf::put_f16(blk, 0, super::search::round_f16(d * gain));
        }
    }
    keep_if_better(format, w, moments, &xq, &refit, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [-1, 1).
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `H = XᵀX / t` for `t` correlated random rows of width `n`.
    fn second_moment(n: usize, t: usize, seed: &mut u64) -> (Vec<f64>, Vec<f32>) {
        let mut xs = vec![0f32; t * n];
        for r in 0..t {
            let common = lcg(seed);
            for c in 0..n {
                // Channels share a component and have very different scales.
                let scale = 0.2 + (c % 7) as f32;
                xs[r * n + c] = scale * (0.7 * common + lcg(seed));
            }
        }
        let mut h = vec![0f64; n * n];
        for r in 0..t {
            let x = &xs[r * n..(r + 1) * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += (x[i] * x[j]) as f64 / t as f64;
                }
            }
        }
        (h, xs)
    }

    #[test]
    fn factor_inverts_the_damped_matrix() {
        let mut seed = 7;
        for n in [1, 2, 5, 64, 130] {
            let (h, _) = second_moment(n, 3 * n + 4, &mut seed);
            let damp = 0.01;
            let f = inverse_factor(&h, n, damp).unwrap();
            let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
            // (UᵀU)(H + λI) = I.
            for i in 0..n {
                for j in 0..n {
                    let mut v = 0f64;
                    for k in 0..n {
                        let hinv_ik: f64 = (0..n)
                            .map(|m| f.u[m * n + i] as f64 * f.u[m * n + k] as f64)
                            .sum();
                        let hkj = h[k * n + j] + if k == j { damp * mean } else { 0.0 };
                        v += hinv_ik * hkj;
                    }
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 2e-3, "n={n} ({i},{j}): {v}");
                }
                for j in 0..i {
                    assert_eq!(f.u[i * n + j], 0.0);
                }
            }
            if n > 10 {
                break; // the O(n⁴) check above is slow beyond small sizes
            }
        }
    }

    #[test]
    fn dead_channels_and_bad_input() {
        // A zero matrix (every channel dead) still factors: it becomes the identity.
        let f = inverse_factor(&[0.0; 9], 3, 0.01).unwrap();
        assert!((f.u[0] - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert!(inverse_factor(&[1.0; 8], 3, 0.01).is_err());
        assert!(inverse_factor(&[f64::NAN; 4], 2, 0.01).is_err());
        // Indefinite beyond what damping fixes.
        assert!(inverse_factor(&[1.0, 100.0, 100.0, 1.0], 2, 0.01).is_err());
    }

    /// `Σₜ (x·(w − ŵ))²` over the calibration rows.
    fn output_error(xs: &[f32], n: usize, w: &[f32], q: &[f32]) -> f64 {
        xs.chunks_exact(n)
            .map(|x| {
                let d: f64 = x
                    .iter()
                    .zip(w.iter().zip(q))
                    .map(|(&a, (&b, &c))| a as f64 * (b as f64 - c as f64))
                    .sum();
                d * d
            })
            .sum()
    }

    #[test]
    fn compensation_lowers_output_error_for_every_format() {
        let n = 192;
        let mut seed = 11;
        let (h, xs) = second_moment(n, 600, &mut seed);
        let f = inverse_factor(&h, n, 0.01).unwrap();
        let mut s = GptqScratch::default();
        for format in [
            Format::VQ2,
            Format::VQ3,
            Format::VQ4,
            Format::Q4_0,
            Format::Q4_1,
            Format::Q5_1,
            Format::Q8_0,
            Format::IQ4_NL,
            Format::NQ3,
            Format::TQ2,
            Format::TQ3,
            Format::TQ4,
        ] {
            let (mut plain_err, mut gptq_err) = (0f64, 0f64);
            for _row in 0..8 {
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
                let bytes = format.row_bytes(n, "t").unwrap();
                let imp: Vec<f32> = (0..n).map(|i| h[i * n + i] as f32).collect();
                let mut plain = vec![0u8; bytes];
                quantize_row(format, &w, Some(&imp), &mut plain).unwrap();
                let mut gptq = vec![0u8; bytes];
                let mut work = w.clone();
                quantize_row_gptq(format, &mut work, &f, &mut gptq, &mut s).unwrap();
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                dequantize_row(format, &plain, &mut a).unwrap();
                dequantize_row(format, &gptq, &mut b).unwrap();
                plain_err += output_error(&xs, n, &w, &a);
                gptq_err += output_error(&xs, n, &w, &b);
            }
            assert!(
                gptq_err < plain_err,
                "{}: compensated {gptq_err} vs plain {plain_err}",
                format.name()
            );
        }
    }

    #[test]
    fn scale_refit_never_raises_the_output_error() {
        let n = 192;
        let mut seed = 5;
        let (h, xs) = second_moment(n, 500, &mut seed);
        let f = inverse_factor(&h, n, 0.03).unwrap();
        let mut s = GptqScratch::default();
        for format in [
            Format::VQ2,
            Format::VQ3,
            Format::VQ4,
            Format::NQ3,
            Format::TQ3,
            Format::Q4_1,
        ] {
            let m = BlockMoments::new(&h, n, format.block_elems()).unwrap();
            let (mut before, mut after, mut changed) = (0f64, 0f64, 0);
            for _row in 0..6 {
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
                let mut bytes = vec![0u8; format.row_bytes(n, "t").unwrap()];
                quantize_row_gptq(format, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
                let mut x = vec![0f32; n];
                dequantize_row(format, &bytes, &mut x).unwrap();
                before += output_error(&xs, n, &w, &x);
                changed += refit_row_scales(format, &w, &m, &mut bytes).unwrap() as usize;
                dequantize_row(format, &bytes, &mut x).unwrap();
                after += output_error(&xs, n, &w, &x);
            }
            assert!(
                after <= before * (1.0 + 1e-6),
                "{}: {after} > {before}",
                format.name()
            );
            if format == Format::Q4_1 {
                assert_eq!(changed, 0, "only VQ, NQ3 and TQ rows are refitted");
            } else {
                assert!(changed > 0, "{}: no row improved", format.name());
            }
        }
        assert!(BlockMoments::new(&[0.0; 4], 2, 64).is_err());
    }

    #[test]
    fn scale_refit_keeps_blocks_whose_inputs_never_fired() {
        let n = 128;
        let mut seed = 9;
        let (mut h, _) = second_moment(n, 300, &mut seed);
        for i in 0..n {
            for j in 0..n {
                if i >= 64 || j >= 64 {
                    h[i * n + j] = 0.0;
                }
            }
        }
        let f = inverse_factor(&h, n, 0.01).unwrap();
        let m = BlockMoments::new(&h, n, 64).unwrap();
        let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
        let mut bytes = vec![0u8; Format::VQ4.row_bytes(n, "t").unwrap()];
        let mut s = GptqScratch::default();
        quantize_row_gptq(Format::VQ4, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
        let mut before = vec![0f32; n];
        dequantize_row(Format::VQ4, &bytes, &mut before).unwrap();
        refit_row_scales(Format::VQ4, &w, &m, &mut bytes).unwrap();
        let mut after = vec![0f32; n];
        dequantize_row(Format::VQ4, &bytes, &mut after).unwrap();
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let (b, a) = (rms(&before[64..]), rms(&after[64..]));
        assert!((a - b).abs() <= 0.01 * b, "dead block rms {b} -> {a}");
    }

    #[test]
    fn gain_refit_stays_bounded_where_inputs_barely_fired() {
        // Block 1's inputs are a thousand times weaker: its gain must not chase sampling noise.
        let n = 192;
        let mut seed = 21;
        let (mut h, _) = second_moment(n, 600, &mut seed);
        for i in 0..n {
            for j in 0..n {
                let weak = |c: usize| if (64..128).contains(&c) { 1e-3 } else { 1.0 };
                h[i * n + j] *= weak(i) * weak(j);
            }
        }
        let f = inverse_factor(&h, n, 0.01).unwrap();
        let m = BlockMoments::new(&h, n, 64).unwrap();
        let mut s = GptqScratch::default();
        for format in [Format::TQ3, Format::NQ3] {
            for _row in 0..8 {
                let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 0.05).collect();
                let mut bytes = vec![0u8; format.row_bytes(n, "t").unwrap()];
                quantize_row_gptq(format, &mut w.clone(), &f, &mut bytes, &mut s).unwrap();
                let bb = format.block_bytes();
                let before: Vec<f32> = (0..3).map(|b| f16_at(&bytes, b * bb)).collect();
                refit_row_scales(format, &w, &m, &mut bytes).unwrap();
                for (b, &d0) in before.iter().enumerate() {
                    let ratio = f16_at(&bytes, b * bb) / d0;
                    assert!((0.49..=2.01).contains(&ratio), "block {b}: gain {ratio}");
                }
            }
        }
    }

    #[test]
    fn rejects_mismatched_sizes() {
        let f = inverse_factor(&[1.0, 0.0, 0.0, 1.0], 2, 0.01).unwrap();
        let mut s = GptqScratch::default();
        let mut w = vec![0.5f32; 64];
        let mut out = vec![0u8; Format::VQ4.block_bytes()];
        assert!(quantize_row_gptq(Format::VQ4, &mut w, &f, &mut out, &mut s).is_err());
    }
}
