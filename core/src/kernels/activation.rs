//! Element-wise activations.

/// `y = silu(gate) * up`, with silu(g) = g / (1 + e^(-g)).
pub fn swiglu(gate: &[f32], up: &[f32], y: &mut [f32]) {
    for ((y, &g), &u) in y.iter_mut().zip(gate).zip(up) {
        *y = g / (1.0 + libm::expf(-g)) * u;
    }
}

/// `y = a + b`.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = a + b;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn silu_values() {
        let mut y = [0f32; 3];
        super::swiglu(&[0.0, 1.0, -100.0], &[1.0, 2.0, 1.0], &mut y);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert!(y[2].abs() < 1e-30);
    }
}
