//! The GPTQ walk: each block's columns rounded in order, every error fed forward to the columns
//! after it through the inverse factor; element by element for the formats with a
//! [`GptqCode`] hook, a few trellis symbols per Viterbi run for the TQ formats, the search's quants
//! as they are for the others.

use super::{GptqCode, InverseFactor, TrellisCode};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::quant::gguf::f16_at;
use crate::quant::vspec::trellis;
use crate::quant::{dequantize_row, quantize_row};
use alloc::{format, vec::Vec};

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

/// Symbols a trellis walk commits per Viterbi run (see [`TrellisWalk`]).
const TRELLIS_COMMIT: usize = 8;

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
    if u.n() != n {
        return Err(Error::invalid(
            WHAT,
            format!(
                "the row has {n} weights but the Hessian is {0} × {0}",
                u.n()
            ),
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
    let hook = format.spec().gptq;
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
            let loss = match hook {
                Some(GptqCode::Affine { qmax, pack }) => {
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
                }
                Some(GptqCode::Codebook { codebook: cb, pack }) => {
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
                }
                Some(GptqCode::Trellis(code)) => {
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
                }
                None => {
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
                }
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

#[cfg(test)]
mod tests {
    use super::super::inverse_factor;
    use super::super::testutil::*;
    use super::*;
    use alloc::vec;

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
    fn rejects_mismatched_sizes() {
        let f = inverse_factor(&[1.0, 0.0, 0.0, 1.0], 2, 0.01).unwrap();
        let mut s = GptqScratch::default();
        let mut w = vec![0.5f32; 64];
        let mut out = vec![0u8; Format::VQ4.block_bytes()];
        assert!(quantize_row_gptq(Format::VQ4, &mut w, &f, &mut out, &mut s).is_err());
    }
}
