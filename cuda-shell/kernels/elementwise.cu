// SiLU·mul, residual add, embedding lookup, last-row copy (core/src/kernels/activation.rs and the
// session's Embed/LastRow arms). grid-stride loops over `n` elements.

// `act` (null for none): with `n` a multiple of 32, also the output as a one-token matmul's
// 8-bit activations (gemv_q8.cu), in place of a quantize_act launch.
extern "C" __global__ void swiglu(const float* gate, const float* up, float* y, int n, u8* act) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float g = gate[i];
        float v = g / (1.0f + expf(-g)) * up[i];
        y[i] = v;
        if (act) quantize_block32(v, act, n, i >> 5);
    }
}

extern "C" __global__ void add(const float* a, const float* b, float* y, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

// grid: tokens; block: 256. Token ids come from device memory (the host checked them against
// the vocabulary before the copy). table: rows of `row_bytes` in `fmt`; y: [tokens, cols].
extern "C" __global__ void embed(const u32* tokens, const u8* table, int fmt, const i8* lut,
                                 int row_bytes, float* y, int cols) {
    int t = blockIdx.x;
    const u8* row = table + (size_t)tokens[t] * row_bytes;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[(size_t)t * cols + c] = dq_any(fmt, row, c, lut);
}

// y[0..d] = x[(tokens - 1) * d ..]: the last token's row (generation keeps only its logits).
extern "C" __global__ void last_row(const float* x, float* y, int d, int tokens) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < d; i += gridDim.x * blockDim.x)
        y[i] = x[(size_t)(tokens - 1) * d + i];
}
