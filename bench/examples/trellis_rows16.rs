//! A measurement, not a kernel of the runtime: how fast one token's TQ3 matmul runs when each
//! sixteen-row group's trellis streams are interleaved byte by byte (the layout
//! docs/OPTIMIZATION.md proposes, "Why the trellis formats moved least"), against the shipped
//! row-major AVX-512 kernel on the same weights, with the outputs compared bit for bit.
//!
//!   cargo run --release -p vspec-bench --example trellis_rows16
//!
//! Layout per (16-row group, block of 64 weights): the sixteen rows' f16 scales (32 bytes), then
//! stream byte `p` of row `r` at `32 + 16·p + r` (the same 16 × 26 bytes as sixteen TQ3 blocks,
//! permuted). Weights `4k .. 4k + 4` of a row (quad `k`) lie in at most three stream bytes, so
//! per quad one masked 48-byte load, one `vpermb` (row `r`'s three bytes to dword `r`), one
//! `vpmultishiftqb` (the four 8-bit windows of each dword) and the 256-entry lookup give quad `k`
//! of all sixteen rows, and one `vpdpbusd` against the broadcast activation quad adds it to each
//! row's own lane: no reduction tree. `ROWS` (default 1536, a multiple of 16) × 576; `TOKENS`
//! (default 1, at most 32) tokens per step, each (group, block) then decoded once for all.

#[cfg(target_arch = "x86_64")]
mod proto {
    use core::arch::x86_64::*;
    use std::time::Instant;
    use vspec_bench::{random_weights, tier_table, Rng};
    use vspec_core::format::Format;
    use vspec_core::kernels::{MatMulKernel, SharedOut};
    use vspec_core::model::WeightView;
    use vspec_core::quant::act_q8::{BlockQ8Act, QK8};
    use vspec_core::quant::vspec::tq3;

    /// Bits each weight adds to the stream (TQ3).
    const K: usize = 3;
    /// Stream bytes of one block.
    const STREAM: usize = 8 * K;
    /// Bytes of one (group, block): sixteen scales, then the interleaved streams.
    const GROUP_BLOCK: usize = 32 + 16 * STREAM;

    /// Quad `k`'s first stream byte, and the `vpermb` index, `vpmultishiftqb` control and
    /// byte mask that turn the 48 bytes from there into its sixteen rows' states (dword `r` =
    /// row `r`). Weight `i`'s window is stream bits `3i − 5 .. 3i + 3`; quad 0's starts before
    /// the stream, so its dwords take a zero byte below the stream's first two.
    const fn quad_layout(k: usize) -> (usize, [u8; 64], [u8; 64], u64) {
        let start_bit = 12 * k as isize - 5;
        let (first, pad) = if start_bit < 0 {
            (0usize, 1usize)
        } else {
            ((start_bit / 8) as usize, 0)
        };
        let offset = (if pad == 1 {
            8 + start_bit
        } else {
            start_bit - 8 * first as isize
        }) as usize;
        let (mut index, mut control, mut mask) = ([0u8; 64], [0u8; 64], 0u64);
        let mut r = 0;
        while r < 16 {
            let mut j = 0;
            while j < 4 {
                let pos = 4 * r + j;
                if j >= pad && j - pad < 3 {
                    index[pos] = ((j - pad) * 16 + r) as u8;
                    mask |= 1 << pos;
                }
                control[pos] = (32 * (r % 2) + offset + 3 * j) as u8;
                j += 1;
            }
            r += 1;
        }
        (first, index, control, mask)
    }

    /// `codebook` in `vpdpbusd`'s unsigned form (`c + 128`).
    fn biased(codebook: &[i8; 256]) -> [u8; 256] {
        core::array::from_fn(|i| (codebook[i] as u8) ^ 0x80)
    }

    /// Bytes after the last (group, block) that the 64-byte loads of its last quads may read
    /// (a masked 48-byte load instead cost 13 %: 77.5 against 89.5 G weights/s).
    const PAD: usize = 64;

    /// Row-major TQ3 rows (`rows` × `blocks` blocks of 26 bytes) interleaved per sixteen rows,
    /// followed by [`PAD`] zero bytes.
    fn interleave(data: &[u8], rows: usize, blocks: usize) -> Vec<u8> {
        let mut out = vec![0u8; rows / 16 * blocks * GROUP_BLOCK + PAD];
        for row in 0..rows {
            let (g, r) = (row / 16, row % 16);
            for b in 0..blocks {
                let block = &data[(row * blocks + b) * tq3::BLOCK_BYTES..][..tq3::BLOCK_BYTES];
                let base = (g * blocks + b) * GROUP_BLOCK;
                out[base + 2 * r..base + 2 * r + 2].copy_from_slice(&block[..2]);
                for p in 0..STREAM {
                    out[base + 32 + 16 * p + r] = block[2 + p];
                }
            }
        }
        out
    }

    /// Quad `Q` (weights `4Q .. 4Q + 4`) of the sixteen rows of the (group, block) at `base`,
    /// dword `r` = row `r`, biased for `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VNNI and VBMI; `base` points at a whole (group, block)
    /// followed by at least 16 readable bytes (the next one, or [`PAD`]).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn decode_quad<const Q: usize>(base: *const u8, table: &[__m512i; 4]) -> __m512i {
        let (first, index, control, mask) = const { quad_layout(Q) };
        // SAFETY: the 64 loaded bytes start inside the (group, block) at `base` and end at
        // most 16 bytes past it (the last quad starts 48 bytes before its stream's end), which
        // the caller's contract makes readable; `index` and `control` are 64 readable bytes.
        let (v, index, control) = unsafe {
            (
                _mm512_loadu_si512(base.add(32 + 16 * first).cast()),
                _mm512_loadu_si512(index.as_ptr().cast()),
                _mm512_loadu_si512(control.as_ptr().cast()),
            )
        };
        let states =
            _mm512_multishift_epi64_epi8(control, _mm512_maskz_permutexvar_epi8(mask, index, v));
        let upper = _mm512_movepi8_mask(states);
        let low = _mm512_permutex2var_epi8(table[0], states, table[1]);
        let high = _mm512_permutex2var_epi8(table[2], states, table[3]);
        _mm512_mask_blend_epi8(upper, low, high)
    }

    /// Adds quad `Q` of one (group, block) at `base` times the activation quad `a` to the
    /// sums `s` (four per 32-weight chunk, so that no chain of `vpdpbusd` waits on itself).
    ///
    /// # Safety
    /// As [`decode_quad`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    #[inline]
    unsafe fn quad<const Q: usize>(
        base: *const u8,
        table: &[__m512i; 4],
        s: &mut [__m512i; 8],
        a: i32,
    ) {
        // SAFETY: this function's contract.
        let w = unsafe { decode_quad::<Q>(base, table) };
        let i = (Q / 8) * 4 + Q % 4;
        s[i] = _mm512_dpbusd_epi32(s[i], w, _mm512_set1_epi32(a));
    }

    /// One token's outputs of the interleaved rows: per row and chunk the exact integer sum,
    /// then the shipped kernels' float arithmetic (two chains, `sum += (d·d_a)·isum`).
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW, VNNI and VBMI; `data` holds `out.len() / 16 × blocks`
    /// (group, block)s and then [`PAD`] bytes; `acts` holds `2 × blocks` activation blocks.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    unsafe fn matmul(
        data: &[u8],
        blocks: usize,
        codebook: &[u8; 256],
        acts: &[BlockQ8Act],
        out: &mut [f32],
    ) {
        // SAFETY: each quarter of `codebook` is 64 readable bytes.
        let table: [__m512i; 4] = core::array::from_fn(|q| unsafe {
            _mm512_loadu_si512(codebook[64 * q..].as_ptr().cast())
        });
        for (g, out) in out.chunks_exact_mut(16).enumerate() {
            let (mut chain0, mut chain1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for b in 0..blocks {
                let offset = (g * blocks + b) * GROUP_BLOCK;
                assert!(offset + GROUP_BLOCK + PAD <= data.len());
                // In bounds (asserted), and derived from all of `data`, so that the last loads'
                // bytes past this (group, block) are covered too.
                let base = data[offset..].as_ptr();
                // SAFETY: the first 32 bytes at `base` are the sixteen scales (asserted above).
                let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(base.cast()) });
                let (a0, a1) = (&acts[2 * b], &acts[2 * b + 1]);
                let quad_of = |k: usize| act_quad(a0, a1, k);
                let mut s = [_mm512_setzero_si512(); 8];
                macro_rules! quads {
                    ($($k:literal)*) => {
                        // SAFETY: `base` is a whole (group, block) and PAD bytes follow
                        // (asserted above).
                        $( unsafe { quad::<$k>(base, &table, &mut s, quad_of($k)) }; )*
                    };
                }
                quads!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
                let sum4 = |s: &[__m512i]| {
                    _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]))
                };
                let s0 = _mm512_sub_epi32(sum4(&s[..4]), _mm512_set1_epi32(128 * a0.sum));
                let s1 = _mm512_sub_epi32(sum4(&s[4..]), _mm512_set1_epi32(128 * a1.sum));
                let scale = |da: f32| _mm512_mul_ps(d, _mm512_set1_ps(da));
                chain0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), scale(a0.d), chain0);
                chain1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), scale(a1.d), chain1);
            }
            let zero = _mm512_setzero_ps();
            let v = _mm512_add_ps(_mm512_add_ps(chain0, chain1), _mm512_add_ps(zero, zero));
            // SAFETY: `out` is 16 writable f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        }
    }

    /// Activation quad `k` (0..16) of the 64 weights whose blocks are `a0`, `a1`.
    fn act_quad(a0: &BlockQ8Act, a1: &BlockQ8Act, k: usize) -> i32 {
        let a = if k < 8 { a0 } else { a1 };
        let q = &a.qs[4 * (k % 8)..4 * (k % 8) + 4];
        i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
    }

    /// Most tokens [`matmul_tokens`] takes at once.
    const TILE: usize = 32;

    /// [`matmul`] for `tokens` (≤ [`TILE`]) tokens (`acts`: `tokens × 2 × blocks` blocks;
    /// `out`: `tokens × rows`): each (group, block) decoded once into its sixteen quads, then
    /// per token sixteen `vpdpbusd` and the same float arithmetic.
    ///
    /// # Safety
    /// As [`matmul`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
    unsafe fn matmul_tokens(
        data: &[u8],
        blocks: usize,
        codebook: &[u8; 256],
        acts: &[BlockQ8Act],
        tokens: usize,
        out: &mut [f32],
    ) {
        assert!(tokens <= TILE);
        let rows = out.len() / tokens;
        // SAFETY: each quarter of `codebook` is 64 readable bytes.
        let table: [__m512i; 4] = core::array::from_fn(|q| unsafe {
            _mm512_loadu_si512(codebook[64 * q..].as_ptr().cast())
        });
        let per_token = 2 * blocks;
        for g in 0..rows / 16 {
            let mut chains = [[_mm512_setzero_ps(); 2]; TILE];
            for b in 0..blocks {
                let offset = (g * blocks + b) * GROUP_BLOCK;
                assert!(offset + GROUP_BLOCK + PAD <= data.len());
                let base = data[offset..].as_ptr();
                // SAFETY: the first 32 bytes at `base` are the sixteen scales (asserted above).
                let d = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(base.cast()) });
                let mut w = [_mm512_setzero_si512(); 16];
                macro_rules! decode {
                    ($($k:literal)*) => {
                        // SAFETY: `base` is a whole (group, block) and PAD bytes follow
                        // (asserted above).
                        $( w[$k] = unsafe { decode_quad::<$k>(base, &table) }; )*
                    };
                }
                decode!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
                for (t, chains) in chains.iter_mut().enumerate().take(tokens) {
                    let (a0, a1) = (
                        &acts[t * per_token + 2 * b],
                        &acts[t * per_token + 2 * b + 1],
                    );
                    let mut s = [_mm512_setzero_si512(); 4];
                    for (k, w) in w.iter().enumerate() {
                        let i = (k / 8) * 2 + k % 2;
                        s[i] =
                            _mm512_dpbusd_epi32(s[i], *w, _mm512_set1_epi32(act_quad(a0, a1, k)));
                    }
                    let s0 = _mm512_sub_epi32(
                        _mm512_add_epi32(s[0], s[1]),
                        _mm512_set1_epi32(128 * a0.sum),
                    );
                    let s1 = _mm512_sub_epi32(
                        _mm512_add_epi32(s[2], s[3]),
                        _mm512_set1_epi32(128 * a1.sum),
                    );
                    let scale = |da: f32| _mm512_mul_ps(d, _mm512_set1_ps(da));
                    chains[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), scale(a0.d), chains[0]);
                    chains[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), scale(a1.d), chains[1]);
                }
            }
            let zero = _mm512_setzero_ps();
            for (t, chains) in chains.iter().enumerate().take(tokens) {
                let v = _mm512_add_ps(
                    _mm512_add_ps(chains[0], chains[1]),
                    _mm512_add_ps(zero, zero),
                );
                let dst = &mut out[t * rows + 16 * g..t * rows + 16 * g + 16];
                // SAFETY: `dst` is 16 writable f32.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
            }
        }
    }

    pub fn main() {
        use std::is_x86_feature_detected as has;
        let needed = [
            has!("avx512f"),
            has!("avx512bw"),
            has!("avx512vl"),
            has!("avx512vnni"),
            has!("avx512vbmi"),
            has!("avx2"),
            has!("fma"),
            has!("f16c"),
        ];
        let Some(table) = needed
            .iter()
            .all(|&h| h)
            .then(|| tier_table("avx512"))
            .flatten()
        else {
            println!("SKIPPED: this CPU lacks the AVX-512 tier (F, BW, VL, VNNI, VBMI)");
            return;
        };
        let rows: usize = std::env::var("ROWS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|r| r % 16 == 0 && *r > 0)
            .unwrap_or(1536);
        let cols = 576;
        let blocks = cols / tq3::BLOCK_ELEMS;
        let mut rng = Rng::new(7);
        let data = random_weights(Format::TQ3, rows, cols, &mut rng);
        let w = WeightView {
            format: Format::TQ3,
            rows,
            cols,
            row_bytes: Format::TQ3.row_bytes(cols, "w").expect("whole blocks"),
            data: &data,
            layout: vspec_core::model::Layout::RowMajor,
        };
        let tokens: usize = std::env::var("TOKENS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|t| (1..=TILE).contains(t))
            .unwrap_or(1);
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32()).collect();
        let mut acts = vec![BlockQ8Act::ZERO; tokens * cols / QK8];
        (table.quantize_q8.f)(&x, &mut acts);
        let interleaved = interleave(&data, rows, blocks);
        let codebook = biased(&tq3::CODEBOOK);
        let Some(MatMulKernel::Q8(shipped)) = table.matmul(Format::TQ3).map(|e| e.kernel) else {
            println!("SKIPPED: no 8-bit TQ3 kernel in this tier");
            return;
        };
        let (mut want, mut got) = (vec![0f32; tokens * rows], vec![0f32; tokens * rows]);
        let run_shipped = |out: &mut Vec<f32>| {
            let shared = SharedOut::new(out);
            // SAFETY: one call on this thread owns every row.
            unsafe { shipped(&w, std::hint::black_box(&acts), tokens, 0..rows, &shared) };
        };
        // SAFETY: the CPU has the features (checked above); the sizes are as `matmul` needs.
        let run_interleaved = |out: &mut Vec<f32>| unsafe {
            let acts = std::hint::black_box(&acts);
            if tokens == 1 {
                matmul(&interleaved, blocks, &codebook, acts, out)
            } else {
                matmul_tokens(&interleaved, blocks, &codebook, acts, tokens, out)
            }
        };
        run_shipped(&mut want);
        run_interleaved(&mut got);
        let differ = (0..tokens * rows)
            .filter(|&r| got[r].to_bits() != want[r].to_bits())
            .count();
        println!("{rows} x {cols} TQ3, {tokens} token(s): {differ} outputs differ in their bits");
        let (mut shipped_best, mut interleaved_best) = (f64::MAX, f64::MAX);
        for _ in 0..(3000 / tokens).max(100) {
            let t = Instant::now();
            run_shipped(&mut want);
            shipped_best = shipped_best.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            run_interleaved(&mut got);
            interleaved_best = interleaved_best.min(t.elapsed().as_secs_f64());
        }
        let rate = |s: f64| (tokens * rows * cols) as f64 / s / 1e9;
        println!(
            "shipped row-major kernel {:.2} G weights/s, interleaved rows {:.2} G weights/s (fastest run, alternating)",
            rate(shipped_best),
            rate(interleaved_best)
        );
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    proto::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("SKIPPED: x86-64 only");
}
