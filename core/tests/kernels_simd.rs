//! Every kernel of every tier against the scalar references (H15). One macro stamps the same
//! suite on each tier's table: every matmul entry (each weight format and activation kind) on
//! random weights, odd row counts, several row lengths, 1..37 tokens and edge values; every op
//! (activation quantizer, RMSNorm, head norm, SwiGLU, add, RoPE, attention, embedding) on odd
//! sizes and edge values; and bit-identical results for any row split and any number of tokens
//! per step. A tier the CPU lacks prints SKIPPED, or fails under `VSPEC_REQUIRE_ISA=<tier>`.

use vspec_core::format::Format;
use vspec_core::graph::RopeLayout;
use vspec_core::kernels::attention::{
    chunk_slots, fold_partials, partials_len, AttnShape, AttnSpan, ATTN_CHUNK, SCORE_BLOCK,
};
use vspec_core::kernels::{ActKind, CpuFeatures, KernelTable, MatMulKernel, SharedOut};
use vspec_core::kv::{store_row, KvRows, KvType};
use vspec_core::model::WeightView;
use vspec_core::quant::act_q8::{BlockQ8Act, QK8};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random bytes (every fifth block one repeated byte) with finite, moderate f16 scales; floats
/// get random finite values.
fn weights(format: Format, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    match format {
        Format::F32 => (0..rows * cols)
            .flat_map(|_| rng.f32().to_le_bytes())
            .collect(),
        Format::F16 | Format::BF16 => (0..rows * cols)
            .flat_map(|_| ((rng.next() as u16) & 0x3bff).to_le_bytes())
            .collect(),
        _ => {
            let n = format.tensor_bytes(cols, rows, "w").unwrap();
            let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            // f16 scales/mins sit in the first or last four bytes of a block depending on the
            // format; giving those high bytes a moderate exponent keeps every decode finite.
            for (k, b) in v.chunks_exact_mut(format.block_bytes()).enumerate() {
                // Every fifth block all one byte: extreme quants, scales and mins (all bits
                // set or clear, or the sign bit alone).
                if k % 5 == 4 {
                    b.fill([0x00, 0xFF, 0x80, 0x7F][(k / 5) % 4]);
                }
                let n = b.len();
                for i in [1, 3, n - 1, n - 3] {
                    b[i] = 0x2c + (rng.next() % 4) as u8;
                }
            }
            v
        }
    }
}

/// Runs one matmul entry over all rows, as calls over the row ranges cut at `splits`.
fn run(
    table: &KernelTable,
    w: &WeightView<'_>,
    x: &[f32],
    tokens: usize,
    act: ActKind,
    splits: &[usize],
) -> Vec<f32> {
    let entry = table.matmul_for(w.format, act).unwrap();
    let mut out = vec![f32::NAN; tokens * w.rows];
    let xq = quantize(table, x);
    let shared = SharedOut::new(&mut out);
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&w.rows)) {
        let rows = start..end.min(w.rows);
        // SAFETY: the calls run one after another on this thread.
        unsafe {
            match entry.kernel {
                MatMulKernel::F32(f) => f(w, x, tokens, rows, &shared),
                MatMulKernel::Q8(f) => f(w, &xq, tokens, rows, &shared),
            }
        }
        start = end.min(w.rows);
    }
    out
}

fn quantize(table: &KernelTable, x: &[f32]) -> Vec<BlockQ8Act> {
    let mut q = vec![BlockQ8Act::ZERO; x.len() / QK8];
    (table.quantize_q8.f)(&x[..q.len() * QK8], &mut q);
    q
}

fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

/// Byte offset, within a block, of the f16 super-scale of the mins of formats whose weights are
/// `scale part + min part` (Q4_1 and Q5_1 `d·q + m`, the VQ formats, the k-quants'
/// `d·sc·q − dmin·m`).
fn min_scale_offset(format: Format) -> Option<usize> {
    match format {
        Format::Q4_1 | Format::Q5_1 | Format::VQ2 | Format::VQ3 | Format::VQ4 => Some(2),
        Format::Q4_K | Format::Q5_K => Some(2),
        Format::Q2_K => Some(82),
        _ => None,
    }
}

/// Per weight, the magnitude the float error of a matmul scales with. A kernel that reads 8-bit
/// activations sums the scale parts and the min parts of a format with mins separately (in
/// integers, then scaled), so its rounding error scales with `|scale part| + |min part|`, which
/// exceeds `|w|` where the two cancel; the dequantized `w` is itself only that exact. Elsewhere
/// it is `|w|`.
fn term_magnitudes(format: Format, act: ActKind, data: &[u8], dense: &[f32]) -> Vec<f64> {
    let Some(off) = min_scale_offset(format).filter(|_| act == ActKind::Q8) else {
        return dense.iter().map(|&v| (v as f64).abs()).collect();
    };
    let mut no_min = data.to_vec();
    for b in no_min.chunks_exact_mut(format.block_bytes()) {
        b[off..off + 2].fill(0);
    }
    let mut scale_part = vec![0f32; dense.len()];
    vspec_core::quant::dequantize_row(format, &no_min, &mut scale_part).unwrap();
    dense
        .iter()
        .zip(&scale_part)
        .map(|(&w, &s)| (s as f64).abs() + (w as f64 - s as f64).abs())
        .collect()
}

/// Every matmul entry of `table` against the scalar f32 reference: f32 entries on `x`, 8-bit
/// entries on the activations their quantizer produced (decoded back to f32), so the only
/// difference left is the order of the float sums, bounded by `tol · Σ|w·x|` (with
/// [`term_magnitudes`] for `|w|`).
fn check_matmuls(table: &KernelTable, tier: &str) {
    let scalar = KernelTable::scalar();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for format in Format::ALL {
        for act in ActKind::ALL {
            if table.matmul_for(format, act).is_none() {
                continue;
            }
            let be = format.block_elems();
            let unit = if act == ActKind::Q8 { be.max(QK8) } else { be };
            // 67 blocks: rows longer than one decoded segment of the AVX-512 prefill path.
            for &blocks in &[1usize, 2, 3, 5, 9, 67] {
                if blocks == 67 && unit > 64 {
                    // 256-weight super-blocks have long rows already; 17k columns would only
                    // test f32 summation error.
                    continue;
                }
                let cols = if unit == 1 {
                    [1, 7, 33, 100, 257][blocks % 5]
                } else {
                    unit * blocks
                };
                // 21 rows: a whole sixteen-row group of the AVX-512 prefill path and a part.
                for &rows in &[1usize, 3, 4, 5, 9, 21] {
                    let data = weights(format, rows, cols, &mut rng);
                    let w = WeightView {
                        format,
                        rows,
                        cols,
                        row_bytes: format.row_bytes(cols, "w").unwrap(),
                        data: &data,
                        layout: vspec_core::model::Layout::RowMajor,
                    };
                    // 13 and 37 tokens: whole token tiles decoded once per segment, a tile
                    // boundary (32), and tokens left over after groups of four.
                    for &tokens in &[1usize, 2, 3, 4, 5, 7, 13, 37] {
                        let mut x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
                        if tokens == 7 && cols >= 3 {
                            x[0] = 0.0;
                            x[1] = if act == ActKind::Q8 { 1e6 } else { 1e30 };
                            x[2] = -1e-30;
                        }
                        let got = run(table, &w, &x, tokens, act, &[]);
                        let x_ref: Vec<f32> = match act {
                            ActKind::F32 => x.clone(),
                            ActKind::Q8 => {
                                let q = quantize(table, &x);
                                assert_eq!(
                                    q,
                                    quantize(&scalar, &x),
                                    "{tier}: quantizer differs from the reference"
                                );
                                let mut d = vec![0f32; x.len()];
                                for (b, o) in q.iter().zip(d.chunks_exact_mut(QK8)) {
                                    b.dequantize(o);
                                }
                                d
                            }
                        };
                        let want = run(&scalar, &w, &x_ref, tokens, ActKind::F32, &[]);
                        let mut dense = vec![0f32; rows * cols];
                        vspec_core::quant::dequantize_row(format, &data, &mut dense).unwrap();
                        let magnitude = term_magnitudes(format, act, &data, &dense);
                        let tol = match act {
                            ActKind::F32 => 1e-6,
                            ActKind::Q8 => 2e-6,
                        };
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            let (t, r) = (i / rows, i % rows);
                            let abs_sum: f64 = (0..cols)
                                .map(|c| {
                                    magnitude[r * cols + c] * (x_ref[t * cols + c] as f64).abs()
                                })
                                .sum();
                            assert!(
                                ((a - b).abs() as f64) <= tol * abs_sum + 1e-30,
                                "{tier} {format:?} {act:?} rows {rows} cols {cols} tokens {tokens} elem {i}: {a} vs {b}"
                            );
                        }
                        // Any row split, and one token at a time, give the same bits.
                        let split = run(table, &w, &x, tokens, act, &[1, 2, 6]);
                        assert_bits_eq(
                            &split,
                            &got,
                            &format!("{tier} {format:?} {act:?}: row split"),
                        );
                        for t in 0..tokens {
                            let one = run(table, &w, &x[t * cols..(t + 1) * cols], 1, act, &[]);
                            assert_bits_eq(
                                &one,
                                &got[t * rows..(t + 1) * rows],
                                &format!("{tier} {format:?} {act:?}: token count"),
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "{tier}: only {checked} combinations checked");
}

fn close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let ok = (a - b).abs() <= rel * b.abs().max(1e-6) || (a.is_nan() && b.is_nan());
        assert!(ok, "{what}: element {i}: {a} vs {b}");
    }
}

/// Within `rel` of the largest reference magnitude (outputs that are sums with cancellation).
fn close_scaled(got: &[f32], want: &[f32], rel: f32, what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= rel * scale,
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

fn edge_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    let edges = [0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0, 1e-3];
    (0..n)
        .map(|i| {
            if i % 5 == 4 {
                edges[(i / 5) % edges.len()]
            } else {
                4.0 * rng.f32()
            }
        })
        .collect()
}

/// Every non-matmul op of `table` against the scalar references.
fn check_ops(table: &KernelTable, tier: &str) {
    let s = KernelTable::scalar();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for n in [0usize, 1, 7, 8, 9, 31, 64, 100, 256, 288, 1537] {
        let a = edge_values(&mut rng, n);
        let b = edge_values(&mut rng, n);
        let (mut y, mut z) = (vec![0f32; n], vec![0f32; n]);
        (table.swiglu.f)(&a, &b, &mut y);
        (s.swiglu.f)(&a, &b, &mut z);
        for (i, (g, w)) in y.iter().zip(&z).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs() + 1e-30,
                "{tier} swiglu n {n} elem {i}: {g} vs {w}"
            );
        }
        (table.add.f)(&a, &b, &mut y);
        (s.add.f)(&a, &b, &mut z);
        assert_bits_eq(&y, &z, &format!("{tier} add n {n}"));
        // The quantizer is bit-identical to the reference, including NaN and infinities.
        let mut q = edge_values(&mut rng, n.next_multiple_of(QK8));
        if q.len() >= 64 {
            q[3] = f32::NAN;
            q[40] = f32::INFINITY;
        }
        assert_eq!(
            quantize(table, &q),
            quantize(&s, &q),
            "{tier} quantize_q8 n {n}"
        );
        // Rows into the KV cache: the reference's bytes on every tier, special values included
        // (NaN payloads, infinities, f16 overflow and its rounding edge, f16 subnormals, ties).
        let mut row = edge_values(&mut rng, n);
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_1234),
            f32::from_bits(0xff80_0001),
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65519.0,
            65520.0,
            -65520.0,
            6e-8,
            2.980_232_2e-8,
            1e-5,
            -0.0,
            1e-30,
            0.333_333_34,
        ];
        for (r, &v) in row.iter_mut().step_by(3).zip(&specials) {
            *r = v;
        }
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            if kv_type == KvType::Q8_0 && !n.is_multiple_of(QK8) {
                continue;
            }
            let bytes = kv_type.row_bytes(n);
            let (mut got, mut want) = (vec![0u8; bytes], vec![0u8; bytes]);
            (table.kv_store.f)(kv_type, &row, &mut got);
            (s.kv_store.f)(kv_type, &row, &mut want);
            assert_eq!(got, want, "{tier} kv_store {kv_type} n {n}");
        }
    }
    for (cols, format) in [
        (1usize, Format::F32),
        (7, Format::F32),
        (33, Format::F16),
        (576, Format::F32),
        (576, Format::BF16),
    ] {
        for rows in [1usize, 3] {
            let x = edge_values(&mut rng, rows * cols);
            let data = weights(format, 1, cols, &mut rng);
            let w = WeightView {
                format,
                rows: 1,
                cols,
                row_bytes: format.row_bytes(cols, "w").unwrap(),
                data: &data,
                layout: vspec_core::model::Layout::RowMajor,
            };
            let (mut y, mut z) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
            (table.rms_norm.f)(&x, &w, 1e-5, &mut y);
            (s.rms_norm.f)(&x, &w, 1e-5, &mut z);
            close(&y, &z, 1e-5, &format!("{tier} rms_norm {cols}"));
            let mut wf = vec![0f32; cols];
            (table.embed.f)(&w, 0, &mut y[..cols]);
            (s.embed.f)(&w, 0, &mut wf);
            assert_bits_eq(&y[..cols], &wf, &format!("{tier} embed {cols}"));
            (table.head_rms_norm.f)(&x, &wf, 1e-6, cols, &mut y);
            (s.head_rms_norm.f)(&x, &wf, 1e-6, cols, &mut z);
            close(&y, &z, 1e-5, &format!("{tier} head_rms_norm {cols}"));
        }
    }
    // Head sizes with and without a tail past the vectors, partial rotary (fewer frequencies
    // than head_dim / 2), and positions up to a million (angles the kernels reduce by π/2).
    for (head_dim, layout, half) in [
        (8usize, RopeLayout::Neox, 4usize),
        (64, RopeLayout::Interleaved, 32),
        (12, RopeLayout::Neox, 6),
        (64, RopeLayout::Neox, 16),
        (128, RopeLayout::Interleaved, 64),
        (20, RopeLayout::Interleaved, 10),
        (6, RopeLayout::Interleaved, 3),
        // Past the attention kernels' head limit: the optimized tier hands it to the reference.
        (1100, RopeLayout::Neox, 550),
    ] {
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-(i as f32) / half as f32))
            .collect();
        let mut x = edge_values(&mut rng, 3 * head_dim);
        // The first head turns (1, 0) pairs, so its outputs are the cosines and sines.
        let (ia, ib) = match layout {
            RopeLayout::Neox => (0, half),
            RopeLayout::Interleaved => (0, 1),
        };
        for i in 0..half {
            let (a, b) = match layout {
                RopeLayout::Neox => (ia + i, ib + i),
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            (x[a], x[b]) = (1.0, 0.0);
        }
        for pos in [0usize, 1, 17, 4095, 65_537, 262_143, 1_000_003] {
            let (mut y, mut z) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            (table.rope.f)(&x, &mut y, pos, head_dim, layout, &inv_freq);
            (s.rope.f)(&x, &mut z, pos, head_dim, layout, &inv_freq);
            let what = format!("{tier} rope {head_dim} {layout:?} {half} at {pos}");
            for (yh, zh) in y.chunks_exact(head_dim).zip(z.chunks_exact(head_dim)) {
                close_scaled(yh, zh, 1e-6, &what);
            }
            // Sines and cosines within about an ulp of libm's.
            for (a, b) in y[..head_dim].iter().zip(&z[..head_dim]) {
                assert!((a - b).abs() <= 1.2e-7, "{what}: {a} vs {b}");
            }
            // Elements past the rotated ones pass through.
            for (h, (yh, xh)) in y
                .chunks_exact(head_dim)
                .zip(x.chunks_exact(head_dim))
                .enumerate()
            {
                assert_bits_eq(
                    &yh[2 * half..],
                    &xh[2 * half..],
                    &format!("{what} head {h}"),
                );
            }
        }
    }
    check_attention(table, &s, tier, &mut rng);
}

/// Attention on every KV type, over contexts shorter and longer than one score block (the
/// optimized kernels' online softmax crosses block boundaries; the reference does not block),
/// against the scalar reference on the same cached bits, and bit-identical for any head split.
fn check_attention(table: &KernelTable, s: &KernelTable, tier: &str, rng: &mut Rng) {
    for (head_dim, n_heads, n_kv_heads, tokens, pos0) in [
        (8usize, 4usize, 2usize, 1usize, 0usize),
        (64, 4, 1, 3, 9),
        (12, 3, 3, 5, 2),
        (64, 2, 2, 1, 40),
        (32, 6, 2, 2, SCORE_BLOCK - 1),
        (64, 9, 3, 4, 3 * SCORE_BLOCK + 5),
        (64, 9, 3, 9, SCORE_BLOCK - 4),
        (20, 4, 1, 6, 0),
        // More tokens than one tile holds (32 query rows: 10 tokens for groups of 3, 4 for 8).
        (64, 9, 3, 13, 5),
        (16, 8, 1, 9, 7),
        // Across chunks of the fold: one token (a decode step) and a step straddling one.
        (64, 9, 3, 1, 2 * ATTN_CHUNK + 7),
        (32, 4, 2, 5, ATTN_CHUNK - 2),
        (16, 2, 1, 1, ATTN_CHUNK),
        // Tiles of 8 rows or more (the AVX-512 tier's 16-lane leaves) with heads of one 8-wide
        // chunk, 16 + 8, 64 + 16 and 64 + 32 elements.
        (8, 8, 1, 2, 0),
        (24, 4, 1, 3, 5),
        (80, 6, 2, 4, ATTN_CHUNK + 40),
        (96, 8, 2, 3, 20),
        // One token whose heads' chunk outputs do not all fit the kernel's stack (16 heads of
        // 512): that call walks tile by tile, its split-off last head chunk by chunk through
        // every tile, and both give the same bits.
        (512, 16, 2, 1, ATTN_CHUNK + 5),
    ] {
        let positions = pos0 + tokens + 3;
        let kv_width = n_kv_heads * head_dim;
        let q: Vec<f32> = (0..tokens * n_heads * head_dim)
            .map(|_| rng.f32())
            .collect();
        // Keys with a drift so later blocks raise the running maximum.
        let kf: Vec<f32> = (0..positions * kv_width)
            .map(|i| 2.0 * rng.f32() + (i / kv_width) as f32 * 0.01)
            .collect();
        let vf: Vec<f32> = (0..positions * kv_width).map(|_| rng.f32()).collect();
        let shape = AttnShape {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            tokens,
            pos0,
            span: AttnSpan::Whole,
            partial_slots: chunk_slots(positions),
        };
        let partials_len = partials_len(n_heads, head_dim, positions).unwrap();
        for kv_type in KvType::ALL {
            if kv_type.check_head_dim(head_dim).is_err() {
                continue;
            }
            let row_bytes = kv_type.row_bytes(kv_width);
            // u32 storage keeps the bytes aligned for the f32 and f16 views.
            let mut kw = vec![0u32; (positions * row_bytes).div_ceil(4)];
            let mut vw = vec![0u32; (positions * row_bytes).div_ceil(4)];
            let (kb, vb): (&mut [u8], &mut [u8]) = (
                &mut bytemuck::cast_slice_mut(&mut kw)[..positions * row_bytes],
                &mut bytemuck::cast_slice_mut(&mut vw)[..positions * row_bytes],
            );
            for p in 0..positions {
                let (src, dst) = (
                    p * kv_width..(p + 1) * kv_width,
                    p * row_bytes..(p + 1) * row_bytes,
                );
                store_row(kv_type, &kf[src.clone()], &mut kb[dst.clone()]);
                store_row(kv_type, &vf[src], &mut vb[dst]);
            }
            let (kr, vr) = (kv_view(kv_type, kb), kv_view(kv_type, vb));
            let attend = |t: &KernelTable, split: usize| {
                let mut scores = vec![0f32; partials_len];
                let mut out = vec![0f32; tokens * n_heads * head_dim];
                let (sc, o) = (SharedOut::new(&mut scores), SharedOut::new(&mut out));
                attend_alone(t, &shape, &q, kr, vr, 0..split, &sc, &o);
                attend_alone(t, &shape, &q, kr, vr, split..n_heads, &sc, &o);
                out
            };
            let got = attend(table, 1);
            close_scaled(
                &got,
                &attend(s, n_heads),
                1e-5,
                &format!("{tier} attention {kv_type} hd {head_dim} pos0 {pos0}"),
            );
            assert_bits_eq(
                &attend(table, n_heads - 1),
                &got,
                &format!("{tier} attention {kv_type} split"),
            );
            // One token at a time (as decoding does, or as the session splits a step's tokens
            // across threads) gives the same bits as the whole step.
            let q_width = n_heads * head_dim;
            let mut scores = vec![0f32; partials_len];
            let mut alone = vec![0f32; tokens * q_width];
            let (sc, o) = (SharedOut::new(&mut scores), SharedOut::new(&mut alone));
            for t in 0..tokens {
                let rows = t * q_width..(t + 1) * q_width;
                let (q_t, o_t) = (&q[rows.clone()], o.sub(rows));
                attend_alone(table, &shape.token(t), q_t, kr, vr, 0..n_heads, &sc, &o_t);
            }
            assert_bits_eq(
                &alone,
                &got,
                &format!("{tier} attention {kv_type} token by token"),
            );
            // Every optimized tier's kernel folds by chunks, so the session may split a decoded
            // token by positions; the scalar reference never is.
            assert_eq!(table.attention_folds_chunks, tier != "scalar", "{tier}");
            if table.attention_folds_chunks {
                check_chunk_split(table, &shape, &q, kr, vr, &got, partials_len);
            }
        }
    }
}

/// One attention call of `table` on this thread.
#[allow(clippy::too_many_arguments)]
fn attend_alone(
    table: &KernelTable,
    shape: &AttnShape,
    q: &[f32],
    kr: KvRows<'_>,
    vr: KvRows<'_>,
    heads: std::ops::Range<usize>,
    partials: &SharedOut<'_>,
    out: &SharedOut<'_>,
) {
    // SAFETY: the callers make their calls one after another on one thread.
    unsafe { (table.attention.f)(shape, q, kr, vr, heads, partials, out) }
}

/// Each token alone, split by positions as the session splits a decode step over threads: every
/// (chunk, GQA group) in its own call, the chunks in reverse order, then the states folded:
/// the same bits as the whole step.
fn check_chunk_split(
    table: &KernelTable,
    shape: &AttnShape,
    q: &[f32],
    kr: KvRows<'_>,
    vr: KvRows<'_>,
    whole: &[f32],
    partials_len: usize,
) {
    let q_width = shape.n_heads * shape.head_dim;
    let group = shape.n_heads / shape.n_kv_heads;
    let mut partials = vec![f32::NAN; partials_len];
    for t in 0..shape.tokens {
        let n_chunks = (shape.pos0 + t + 1).div_ceil(ATTN_CHUNK);
        let rows = t * q_width..(t + 1) * q_width;
        let sc = SharedOut::new(&mut partials);
        let (alone, mut none) = (shape.token(t), [0f32; 0]);
        for c in (0..n_chunks).rev() {
            for g in 0..shape.n_kv_heads {
                let heads = g * group..(g + 1) * group;
                let (q_t, o) = (&q[rows.clone()], SharedOut::new(&mut none));
                attend_alone(table, &alone.chunk(c), q_t, kr, vr, heads, &sc, &o);
            }
        }
        let mut out = vec![0f32; q_width];
        fold_partials(&alone, n_chunks, &partials, &mut out);
        assert_bits_eq(
            &out,
            &whole[rows],
            &format!("attention split by {n_chunks} chunks, pos {}", alone.pos0),
        );
    }
}

/// Cached bytes seen as rows of `kv_type` (4-byte aligned by the caller).
fn kv_view(kv_type: KvType, b: &[u8]) -> KvRows<'_> {
    match kv_type {
        KvType::F32 => KvRows::F32(bytemuck::cast_slice(b)),
        KvType::F16 => KvRows::F16(bytemuck::cast_slice(b)),
        KvType::Q8_0 => KvRows::Q8_0(b),
    }
}

/// Whether `VSPEC_REQUIRE_ISA` (a comma list of tiers) names `tier`.
fn required(tier: &str) -> bool {
    std::env::var("VSPEC_REQUIRE_ISA").is_ok_and(|v| v.split(',').any(|t| t.trim() == tier))
}

/// The AVX2 tier, when this CPU has it.
fn avx2_table() -> Option<KernelTable> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        // SAFETY: all three features were just detected on this CPU.
        let (t, log) = KernelTable::select(&unsafe { CpuFeatures::assume_detected(true) });
        assert!(log.contains("avx2"), "{log}");
        return Some(t);
    }
    if required("avx2") {
        panic!("VSPEC_REQUIRE_ISA names avx2 but this CPU lacks AVX2/FMA/F16C");
    }
    println!("SKIPPED(avx2): this CPU lacks AVX2/FMA/F16C");
    None
}

/// The AVX-512 tier, when this CPU has it, as installed for a CPU that issues 512-bit operations
/// in two halves (`split_512`: one-token steps on `q8::split512`) or not.
fn avx512_table(split_512: bool) -> Option<KernelTable> {
    #[cfg(target_arch = "x86_64")]
    if avx2_table().is_some()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vbmi")
    {
        // SAFETY: the AVX2 tier's features and all five AVX-512 ones were just detected.
        let features = unsafe { CpuFeatures::assume_detected(true).assume_avx512() };
        let (t, log) = KernelTable::select(&features.with_split_512(split_512));
        assert!(log.contains("avx512"), "{log}");
        assert_eq!(log.contains("_split"), split_512, "{log}");
        return Some(t);
    }
    if required("avx512") {
        panic!("VSPEC_REQUIRE_ISA names avx512 but this CPU lacks AVX-512 F/BW/VL/VNNI/VBMI");
    }
    println!("SKIPPED(avx512): this CPU lacks AVX-512 F/BW/VL/VNNI/VBMI");
    None
}

/// Stamps the suite on one tier.
macro_rules! tier_suite {
    ($tier:ident, $table:expr) => {
        mod $tier {
            use super::*;

            #[test]
            fn matmul_entries_match_the_scalar_reference() {
                if let Some(t) = $table {
                    check_matmuls(&t, stringify!($tier));
                }
            }

            #[test]
            fn ops_match_the_scalar_reference() {
                if let Some(t) = $table {
                    check_ops(&t, stringify!($tier));
                }
            }

            #[test]
            fn every_format_has_a_matmul_kernel() {
                if let Some(t) = $table {
                    t.check_formats(Format::ALL).unwrap();
                }
            }
        }
    };
}

tier_suite!(scalar, Some(KernelTable::scalar()));
tier_suite!(avx2, avx2_table());
tier_suite!(avx512, avx512_table(false));
tier_suite!(avx512_split, avx512_table(true));

#[test]
fn avx2_tier_reads_8_bit_activations_where_it_has_a_kernel() {
    let Some(t) = avx2_table() else { return };
    for f in [
        Format::Q4_0,
        Format::Q4_1,
        Format::Q8_0,
        Format::VQ4,
        Format::VQ3,
        Format::TQ3,
        Format::Q2_K,
        Format::Q3_K,
        Format::Q4_K,
        Format::Q5_K,
        Format::Q6_K,
        Format::IQ4_XS,
    ] {
        assert_eq!(t.matmul(f).unwrap().consumes(), ActKind::Q8, "{f:?}");
    }
    assert_eq!(t.matmul(Format::F32).unwrap().consumes(), ActKind::F32);
}

/// Where a table reads the trellis formats interleaved per sixteen rows (`KernelTable::rows16`),
/// the interleaved weights give the row-major ones' bits for any token count and row split,
/// and the embedding lookup of an interleaved row decodes the row-major row.
#[test]
fn interleaved_trellis_rows_match_the_row_major_kernels() {
    let mut rng = Rng(0x1616_0016_1600_1616);
    for (name, table) in [
        ("avx512", avx512_table(false)),
        ("avx512_split", avx512_table(true)),
        ("avx2", avx2_table()),
        ("scalar", Some(KernelTable::scalar())),
    ] {
        let Some(table) = table else { continue };
        for format in [Format::TQ2, Format::TQ3, Format::TQ4] {
            let k = vspec_core::quant::vspec::trellis::stream_bits(format).unwrap();
            // The AVX-512 tiers (split or not) read the interleaved layout.
            let reads = name.starts_with("avx512");
            assert_eq!(table.rows16(format), reads, "{name} {format:?}");
            if !reads {
                continue;
            }
            for (rows, cols) in [(16usize, 64usize), (48, 192), (32, 576)] {
                let data = weights(format, rows, cols, &mut rng);
                let interleaved =
                    vspec_core::quant::vspec::trellis::interleave_rows16(k, rows, cols / 64, &data)
                        .unwrap();
                let view = |data, layout| WeightView {
                    format,
                    rows,
                    cols,
                    row_bytes: format.row_bytes(cols, "w").unwrap(),
                    data,
                    layout,
                };
                let row_major = view(&data[..], vspec_core::model::Layout::RowMajor);
                let rows16 = view(&interleaved[..], vspec_core::model::Layout::Rows16);
                for tokens in [1usize, 2, 3, 5, 8, 13, 37] {
                    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
                    let want = run(&table, &row_major, &x, tokens, ActKind::Q8, &[]);
                    let what = format!("{name} {format:?} {rows}x{cols} tokens {tokens}");
                    let got = run(&table, &rows16, &x, tokens, ActKind::Q8, &[]);
                    assert_bits_eq(&got, &want, &what);
                    let split = run(&table, &rows16, &x, tokens, ActKind::Q8, &[16]);
                    assert_bits_eq(&split, &want, &format!("{what}, split at row 16"));
                }
                for r in [0, rows / 2 + 1, rows - 1] {
                    let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
                    (table.embed.f)(&row_major, r, &mut a);
                    (table.embed.f)(&rows16, r, &mut b);
                    assert_bits_eq(&b, &a, &format!("{name} {format:?} embedding row {r}"));
                }
            }
        }
    }
}
