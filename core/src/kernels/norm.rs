//! RMSNorm over rows, and over each head's slice of a row (Qwen3's q/k norm).

/// `1 / sqrt(mean(x²) + eps)`, summed in order.
#[inline]
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut ss = 0f32;
    for &v in x {
        ss += v * v;
    }
    1.0 / libm::sqrtf(ss / x.len() as f32 + eps)
}

/// `y = x / sqrt(mean(x²) + eps) * w` for one row; `w` already decoded to f32.
#[inline]
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let inv = inv_rms(x, eps);
    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
        *y = x * inv * w;
    }
}

/// RMSNorm of each row of `x` (`rows × w.cols`) with the one-row weight `w` in any format: each
/// row is normalized with unit weight, then scaled tile by tile (no heap copy of `w`).
pub fn rms_norm_rows(x: &[f32], w: &crate::model::WeightView<'_>, eps: f32, y: &mut [f32]) {
    let d = w.cols;
    for (xs, ys) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let inv = inv_rms(xs, eps);
        super::for_each_tile(w, 0, |c0, tile| {
            for (i, &wv) in tile.iter().enumerate() {
                ys[c0 + i] = xs[c0 + i] * inv * wv;
            }
        });
    }
}

/// RMSNorm of each `head_dim` slice of `x` (`rows × width`), with the same `w` (`head_dim`).
pub fn head_rms_norm(x: &[f32], w: &[f32], eps: f32, head_dim: usize, y: &mut [f32]) {
    for (xs, ys) in x.chunks_exact(head_dim).zip(y.chunks_exact_mut(head_dim)) {
        rms_norm_row(xs, w, eps, ys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rows_keep_their_scale() {
        let x = [1.0f32, -1.0, 1.0, -1.0];
        let mut y = [0f32; 4];
        rms_norm_row(&x, &[2.0; 4], 0.0, &mut y);
        assert_eq!(y, [2.0, -2.0, 2.0, -2.0]);
    }

    #[test]
    fn zero_row_stays_finite() {
        let mut y = [1f32; 3];
        rms_norm_row(&[0.0; 3], &[1.0; 3], 1e-6, &mut y);
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
