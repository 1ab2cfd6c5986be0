// RMSNorm over rows, and per-head RMSNorm (Qwen3's q/k norms); core/src/kernels/norm.rs is the
// reference: y = x * (1 / sqrt(mean(x²) + eps)) * w. The sum of squares is a tree here, a
// running sum on the CPU: equal within float rounding, not bit for bit.

// 1 / sqrt(mean(x²) + eps) over the `n` values of `xr`, as a block-stride sum then a block tree
// (every thread of the block calls it and gets the result). `red`: 32 floats of shared memory.
__device__ __forceinline__ float inv_rms(const float* xr, int n, float eps, float* red) {
    float ss = 0.0f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)n + eps);
}

// grid: rows; block: 256, or 1024 for long rows (a decode step's one row is one block, so
// its threads are all the parallelism there is). x, y: [rows, cols]; w: a vector weight in `wfmt`.
// `act` (null for none): a one-row norm (grid 1, `cols` a multiple of 32) also writes its output
// as a one-token matmul's 8-bit activations (gemv_q8.cu), in place of a quantize_act launch.
extern "C" __global__ void rms_norm(const float* x, const u8* w, int wfmt, float eps, float* y,
                                    int cols, u8* act) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    float inv = inv_rms(xr, cols, eps, red);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = xr[c] * inv * dq_any(wfmt, w, c, 0);
        yr[c] = v;
        if (act) quantize_block32(v, act, cols, c >> 5);
    }
}

// The residual add and the norm after it in one launch: s = a + b is written to `sum` (the
// residual stream the next add reads), then y = rms_norm(s) as rms_norm computes it (the same
// sums in the same order: the same bits as the two launches). Grid, block and `act` as rms_norm.
extern "C" __global__ void add_rms_norm(const float* a, const float* b, float* sum, const u8* w,
                                        int wfmt, float eps, float* y, int cols, u8* act) {
    __shared__ float red[32];
    size_t row = (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = a[row + c] + b[row + c];
        sum[row + c] = v;
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = sum[row + c] * inv * dq_any(wfmt, w, c, 0);  // this thread's own store
        y[row + c] = v;
        if (act) quantize_block32(v, act, cols, c >> 5);
    }
}

// grid: heads (all rows); block: 128 (head_dim <= 512). w: head_dim values in `wfmt`.
extern "C" __global__ void head_rms_norm(const float* x, const u8* w, int wfmt, float eps,
                                         float* y, int head_dim) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * head_dim;
    float* yr = y + (size_t)blockIdx.x * head_dim;
    float inv = inv_rms(xr, head_dim, eps, red);
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x)
        yr[c] = xr[c] * inv * dq_any(wfmt, w, c, 0);
}
