//! Memory read bandwidth and the decode roofline it implies.

use super::*;

/// What decoding one token must read from memory at least: every weight the step touches (all
/// matrices including the output head, the norms, and one row of the embedding table) and the
/// keys and values of every cached position it attends to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct DecodeTraffic {
    /// Weight bytes read per decoded token.
    pub(super) weight_bytes: u64,
    /// KV cache bytes per attended position, all layers, K and V, in the graph's KV type.
    pub(super) kv_bytes_per_position: u64,
}

impl DecodeTraffic {
    /// The traffic of a one-token step of `graph` (weights bound, so their formats are known).
    pub(super) fn of_graph(graph: &Graph) -> vspec_core::Result<DecodeTraffic> {
        let mut weight_bytes = 0u64;
        for op in &graph.ops {
            for &id in &op.inputs {
                let t = &graph.tensors[id];
                if t.role != Role::Weight {
                    continue;
                }
                let format = t.format.ok_or_else(|| {
                    vspec_core::Error::invalid(format!("tensor '{}'", t.name), "format unknown")
                })?;
                // A lookup reads one row of the table; every other op reads the whole weight
                // (a tied table is read whole again as the output head).
                let bytes = if matches!(op.kind, OpKind::Embed) {
                    format.row_bytes(t.cols, &t.name)?
                } else {
                    format.tensor_bytes(t.cols, t.weight_rows, &t.name)?
                };
                weight_bytes += bytes as u64;
            }
        }
        Ok(DecodeTraffic {
            weight_bytes,
            kv_bytes_per_position: 2
                * graph.kv_layers as u64
                * graph.kv_type.row_bytes(graph.kv_width) as u64,
        })
    }

    /// Bytes read per token when each token attends to `mean_ctx` cached positions on average.
    pub(super) fn bytes_per_token(&self, mean_ctx: f64) -> f64 {
        self.weight_bytes as f64 + self.kv_bytes_per_position as f64 * mean_ctx
    }
}

/// Positions attended on average while decoding `n_gen` tokens from an empty cache: the token
/// at position i attends to positions 0..=i.
pub(super) fn mean_decode_ctx(n_gen: usize) -> f64 {
    (n_gen as f64 + 1.0) / 2.0
}

/// The most tokens per second a decode can reach when each token reads `bytes_per_token` bytes
/// from memory at `bandwidth` bytes per second (0 when either is not positive).
pub(super) fn roofline_tok_s(bytes_per_token: f64, bandwidth: f64) -> f64 {
    if bytes_per_token > 0.0 && bandwidth > 0.0 {
        bandwidth / bytes_per_token
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Memory bandwidth.
// ---------------------------------------------------------------------------------------------

/// Read bandwidth (bytes/s) per thread count, best of [`BANDWIDTH_PASSES`] over a buffer of
/// `mib` MiB; empty when `mib` is 0.
pub(super) fn measure_bandwidths(mib: usize, threads: &[usize]) -> Result<Vec<(usize, f64)>> {
    if mib == 0 {
        return Ok(Vec::new());
    }
    let words = mib
        .checked_mul(1 << 20)
        .map(|b| b / 8)
        .ok_or_else(|| anyhow!("--bw-mib {mib} is too large"))?;
    let mut buffer: Vec<u64> = Vec::new();
    buffer
        .try_reserve_exact(words)
        .map_err(|_| anyhow!("--bw-mib {mib}: cannot allocate {mib} MiB (lower it)"))?;
    // Written, not zeroed: untouched zero pages all map one physical page and read from cache.
    buffer.extend((0..words as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut out = Vec::new();
    for &t in threads {
        if out.iter().any(|&(done, _)| done == t) {
            continue;
        }
        let bw = read_bandwidth(&buffer, t, BANDWIDTH_PASSES);
        eprintln!(
            "[vspec] memory read bandwidth, {mib} MiB, {}: {:.2} GB/s",
            threads_text(t),
            bw / 1e9
        );
        out.push((t, bw));
    }
    Ok(out)
}

/// Bytes per second of `threads` threads each summing one contiguous share of `buffer`, best of
/// `passes`.
pub(super) fn read_bandwidth(buffer: &[u64], threads: usize, passes: usize) -> f64 {
    let threads = threads.max(1);
    let share = buffer.len().div_ceil(threads).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(share)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    (std::mem::size_of_val(buffer) as f64) / best.max(1e-9)
}

/// Wrapping sum (wrapping adds are associative, so the compiler may vectorize the reduction).
pub(super) fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |s, &w| s.wrapping_add(w))
}

pub(super) fn bandwidth_for(bandwidth: &[(usize, f64)], threads: usize) -> Option<f64> {
    bandwidth
        .iter()
        .find(|&&(t, _)| t == threads)
        .map(|&(_, b)| b)
}
