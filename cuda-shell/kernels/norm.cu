// RMSNorm over rows, and per-head RMSNorm (Qwen3's q/k norms); core/src/kernels/norm.rs is the
// reference: y = x * (1 / sqrt(mean(x²) + eps)) * w. The sum of squares is a tree here, a
// running sum on the CPU: equal within float rounding, not bit for bit.

// grid: rows; block: 256. x, y: [rows, cols]; w: a vector weight in `wfmt`.
extern "C" __global__ void rms_norm(const float* x, const u8* w, int wfmt, float eps, float* y,
                                    int cols) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        yr[c] = xr[c] * inv * dq_any(wfmt, w, c, 0);
}

// grid: heads (all rows); block: 128 (head_dim <= 512). w: head_dim values in `wfmt`.
extern "C" __global__ void head_rms_norm(const float* x, const u8* w, int wfmt, float eps,
                                         float* y, int head_dim) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * head_dim;
    float* yr = y + (size_t)blockIdx.x * head_dim;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)head_dim + eps);
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x)
        yr[c] = xr[c] * inv * dq_any(wfmt, w, c, 0);
}
