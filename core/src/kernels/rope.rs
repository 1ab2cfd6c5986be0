//! Rotary position embedding.
//!
//! For head element pair `(a, b)` of frequency `i` at position `p`, with `θ = p · inv_freq[i]`:
//! `a' = a cos θ − b sin θ`, `b' = a sin θ + b cos θ`. The pair is `(2i, 2i+1)` in the interleaved
//! layout and `(i, i + rope_dim/2)` in the NeoX layout. Elements past `rope_dim` pass through.

use crate::graph::RopeLayout;

/// Rotates every head of one row `x` (`n_heads × head_dim`) for position `pos` into `y`.
pub fn rope_row(
    x: &[f32],
    y: &mut [f32],
    pos: usize,
    head_dim: usize,
    layout: RopeLayout,
    inv_freq: &[f32],
) {
    let half = inv_freq.len();
    y.copy_from_slice(x);
    // Every head of the row turns by the same angles: one sine and cosine per frequency.
    for (i, &f) in inv_freq.iter().enumerate() {
        let theta = pos as f32 * f;
        let (s, c) = (libm::sinf(theta), libm::cosf(theta));
        let (ia, ib) = match layout {
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            RopeLayout::Neox => (i, i + half),
        };
        for head in y.chunks_exact_mut(head_dim) {
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

/// Turns one head `x` (`head_dim` values, already rotated for some position) by `delta`
/// positions, which may be negative: a context shift re-encodes cached keys this way.
pub fn rotate_head(x: &mut [f32], delta: f32, layout: RopeLayout, inv_freq: &[f32]) {
    let half = inv_freq.len();
    for (i, &f) in inv_freq.iter().enumerate() {
        let theta = delta * f;
        let (s, c) = (libm::sinf(theta), libm::cosf(theta));
        let (ia, ib) = match layout {
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            RopeLayout::Neox => (i, i + half),
        };
        let (a, b) = (x[ia], x[ib]);
        x[ia] = a * c - b * s;
        x[ib] = a * s + b * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let x: [f32; 8] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut y = [0f32; 8];
        rope_row(&x, &mut y, 0, 4, RopeLayout::Neox, &[1.0, 0.01]);
        assert_eq!(x, y);
        rope_row(&x, &mut y, 7, 4, RopeLayout::Interleaved, &[1.0, 0.01]);
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }

    #[test]
    fn turning_back_by_a_delta_gives_the_earlier_position() {
        let x: [f32; 8] = [1.0, -2.0, 3.0, 0.5, 5.0, 6.0, -7.0, 8.0];
        let inv_freq = [1.0, 0.1];
        for layout in [RopeLayout::Neox, RopeLayout::Interleaved] {
            let (mut at_30, mut at_10) = ([0f32; 8], [0f32; 8]);
            rope_row(&x, &mut at_30, 30, 4, layout, &inv_freq);
            rope_row(&x, &mut at_10, 10, 4, layout, &inv_freq);
            for head in at_30.chunks_exact_mut(4) {
                rotate_head(head, -20.0, layout, &inv_freq);
            }
            for (a, b) in at_30.iter().zip(&at_10) {
                assert!((a - b).abs() < 1e-4, "{layout:?}: {a} vs {b}");
            }
        }
    }
}
