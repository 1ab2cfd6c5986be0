// Rotary embedding (core/src/kernels/rope.rs): pairs (2i, 2i+1) (interleaved, layout 0) or
// (i, i + half) (neox, layout 1) of each head turned by (pos0 + t) * inv_freq[i]; elements past
// the 2·half rotated ones are copied. pos0 is read from device memory (`step[0]`) so a captured
// decode graph replays at any position.

// Element `c` of one head `xh` (head_dim values) at position `pos`, rotated.
__device__ __forceinline__ float rope_elem(const float* xh, int c, float pos, int layout,
                                           const float* inv_freq, int half) {
    int i, ia, ib;
    if (layout == 0) {
        i = c >> 1;
        ia = 2 * i;
        ib = 2 * i + 1;
    } else {
        i = c < half ? c : c - half;
        ia = i;
        ib = i + half;
    }
    if (i >= half || (layout == 1 && c >= 2 * half)) return xh[c];
    float s, co;
    sincosf(pos * inv_freq[i], &s, &co);
    float a = xh[ia], b = xh[ib];
    return c == ia ? a * co - b * s : a * s + b * co;
}

// grid: (tokens, element blocks); block: 256. x, y: [tokens, width]. One token's width is spread
// over gridDim.y blocks (a single block would run a 4096-wide decode step on one SM).
extern "C" __global__ void rope(const float* x, float* y, const int* step, int width,
                                int head_dim, int layout, const float* inv_freq, int half) {
    int t = blockIdx.x;
    float pos = (float)(step[0] + t);
    const float* xr = x + (size_t)t * width;
    float* yr = y + (size_t)t * width;
    int stride = gridDim.y * blockDim.x;
    for (int e = blockIdx.y * blockDim.x + threadIdx.x; e < width; e += stride) {
        int c = e % head_dim;
        yr[e] = rope_elem(xr + (e - c), c, pos, layout, inv_freq, half);
    }
}

// Qwen3's per-head RMSNorm of q or k and the RoPE after it in one launch: head_rms_norm's sums
// (the same block size, the same order), the normed head kept in shared memory, then rope's
// rotation of it: the same bits as the two launches, without the normed tensor in between.
// grid: heads (all rows); block: 128 (head_dim <= 512). x, y: [tokens, width]; w: head_dim
// values in `wfmt`.
extern "C" __global__ void head_rms_norm_rope(const float* x, const u8* w, int wfmt, float eps,
                                              float* y, int head_dim, const int* step,
                                              int width, int layout, const float* inv_freq,
                                              int half) {
    __shared__ float red[32];
    __shared__ float normed[512];
    const float* xr = x + (size_t)blockIdx.x * head_dim;
    float* yr = y + (size_t)blockIdx.x * head_dim;
    int t = (int)(((size_t)blockIdx.x * head_dim) / width);
    float inv = inv_rms(xr, head_dim, eps, red);
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x)
        normed[c] = xr[c] * inv * dq_any(wfmt, w, c, 0);
    __syncthreads();
    float pos = (float)(step[0] + t);
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x)
        yr[c] = rope_elem(normed, c, pos, layout, inv_freq, half);
}
