// Causal grouped-query attention over the KV cache (core/src/kernels/attention.rs is the
// reference), split along the cached positions ("flash-decoding"): `attn_partial` gives each
// (head, token, split) block a range of `split_len` positions and writes that range's running
// max m, sum of exponentials l and unnormalized output o; `attn_combine` merges the splits with
// the usual rescaling. One token (decode) gets ceil(max_ctx / split_len) splits so its launch is
// the same at every position (a captured graph replays it; splits past the context exit at
// once); prefill uses the same kernels with as many splits as its last token needs.
// q: [tokens, n_heads*hd]; kc, vc: one layer's cache rows of kv_width = n_kv_heads*hd;
// part: [tokens, n_heads, n_splits] records of (hd + 2) floats: m, l, o[hd].

#define ATT_THREADS 128
#define ATT_TILE 64
#define MAX_HD 512

// grid: (n_heads, tokens, n_splits); block: ATT_THREADS.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attn_partial(const float* q, const u8* kc, const u8* vc, int kv_type, const int* step,
                 int n_heads, int n_kv_heads, int hd, float scale, int split_len, float* part) {
    __shared__ float qs[MAX_HD];
    __shared__ float p[ATT_TILE];
    __shared__ float red[32];
    int h = blockIdx.x, t = blockIdx.y, s = blockIdx.z, n_splits = gridDim.z;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int kvh = h / (n_heads / n_kv_heads), kv_width = n_kv_heads * hd;
    int n_pos = step[0] + t + 1;
    int j0 = s * split_len, j1 = min(j0 + split_len, n_pos);
    float* rec = part + ((size_t)(t * n_heads + h) * n_splits + s) * (hd + 2);
    const float* qh = q + (size_t)t * n_heads * hd + (size_t)h * hd;
    for (int d = tid; d < hd; d += ATT_THREADS) qs[d] = qh[d];
    float m = NEG_INF, l = 0.0f;
    float o[MAX_HD / ATT_THREADS];
    for (int a = 0; a < MAX_HD / ATT_THREADS; ++a) o[a] = 0.0f;
    __syncthreads();
    for (int jt = j0; jt < j1; jt += ATT_TILE) {
        int jn = min(ATT_TILE, j1 - jt);
        // Scores: one warp per position, lanes over head_dim.
        for (int jj = warp; jj < jn; jj += ATT_THREADS / 32) {
            size_t base = (size_t)(jt + jj) * kv_width + (size_t)kvh * hd;
            float acc = 0.0f;
            for (int d = lane; d < hd; d += 32) acc += qs[d] * kv_load(kc, kv_type, base + d);
            acc = warp_sum(acc);
            if (lane == 0) p[jj] = acc * scale;
        }
        __syncthreads();
        float tmax = NEG_INF;
        for (int jj = tid; jj < jn; jj += ATT_THREADS) tmax = fmaxf(tmax, p[jj]);
        tmax = block_max(tmax, red);
        float m_new = fmaxf(m, tmax);
        float factor = expf(m - m_new);  // 0 on the first tile (m = -inf)
        __syncthreads();
        float psum = 0.0f;
        for (int jj = tid; jj < jn; jj += ATT_THREADS) {
            float e = expf(p[jj] - m_new);
            p[jj] = e;
            psum += e;
        }
        psum = block_sum(psum, red);
        l = l * factor + psum;
        m = m_new;
        __syncthreads();
        for (int a = 0; a * ATT_THREADS + tid < hd; ++a) {
            int d = a * ATT_THREADS + tid;
            float acc = o[a] * factor;
            for (int jj = 0; jj < jn; ++jj)
                acc += p[jj] * kv_load(vc, kv_type, (size_t)(jt + jj) * kv_width + (size_t)kvh * hd + d);
            o[a] = acc;
        }
        __syncthreads();
    }
    if (tid == 0) {
        rec[0] = m;
        rec[1] = l;
    }
    for (int a = 0; a * ATT_THREADS + tid < hd; ++a) rec[2 + a * ATT_THREADS + tid] = o[a];
}

// grid: (n_heads, tokens); block: ATT_THREADS. out: [tokens, n_heads*hd]. Only the splits that
// hold positions of token t are read: a decode step launches ceil(max_ctx / split_len) of them
// at every position, and at long max_ctx most are empty. Each split's weight exp(m_s - max) is
// computed once (by one thread, into shared memory, ATT_THREADS splits at a time), not per
// element. `act` (null for none): one token with `hd` a multiple of 32 also writes its output
// as the next matmul's 8-bit activations.
extern "C" __global__ void attn_combine(const float* part, float* out, const int* step,
                                        int n_heads, int hd, int n_splits, int split_len,
                                        u8* act) {
    __shared__ float red[32];
    __shared__ float weight[ATT_THREADS];
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int live = min(n_splits, (step[0] + t + split_len) / split_len);
    const float* recs = part + (size_t)(t * n_heads + h) * n_splits * (hd + 2);
    float mx = NEG_INF;
    for (int s = tid; s < live; s += ATT_THREADS) mx = fmaxf(mx, recs[(size_t)s * (hd + 2)]);
    mx = block_max(mx, red);
    __syncthreads();  // `red` is reused below
    float l = 0.0f;
    for (int s = tid; s < live; s += ATT_THREADS) {
        const float* r = recs + (size_t)s * (hd + 2);
        if (r[1] > 0.0f) l += r[1] * expf(r[0] - mx);
    }
    float inv = 1.0f / block_sum(l, red);
    float acc[MAX_HD / ATT_THREADS];
    for (int a = 0; a < MAX_HD / ATT_THREADS; ++a) acc[a] = 0.0f;
    for (int s0 = 0; s0 < live; s0 += ATT_THREADS) {
        __syncthreads();  // the previous chunk's weights are read
        int s = s0 + tid;
        const float* r = recs + (size_t)s * (hd + 2);
        weight[tid] = s < live && r[1] > 0.0f ? expf(r[0] - mx) : 0.0f;
        __syncthreads();
        int n = min(ATT_THREADS, live - s0);
        for (int a = 0; a * ATT_THREADS + tid < hd; ++a) {
            const float* o = recs + (size_t)s0 * (hd + 2) + 2 + a * ATT_THREADS + tid;
            float sum = acc[a];
            for (int j = 0; j < n; ++j) sum += weight[j] * o[(size_t)j * (hd + 2)];
            acc[a] = sum;
        }
    }
    for (int a = 0; a * ATT_THREADS + tid < hd; ++a) {
        int d = a * ATT_THREADS + tid;
        float v = acc[a] * inv;
        out[(size_t)t * n_heads * hd + (size_t)h * hd + d] = v;
        if (act) quantize_block32(v, act, n_heads * hd, (h * hd + d) >> 5);
    }
}
