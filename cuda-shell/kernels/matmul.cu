// Matmuls `y[t, r] = sum_c x[t, c] * w[r, c] (+ bias[r])` for every format, weights dequantized
// in registers by the format's `dq` (formats_*.cu), never to a dequantized copy in memory.
// x: [tokens, cols] f32; w: rows of `row_bytes`; y: [tokens, rows] f32. `bias` (0 when absent) is
// a vector weight in `bias_fmt` (a FormatId), decoded by `dq_any`.
//
// Decode (one token) uses the GEMV: one warp per output row, lanes over the columns. Prefill uses
// the tiled GEMM: 64 rows x 64 tokens per block of 256 threads, 32 columns per step staged in
// shared memory. Neither uses tensor cores yet; both are correctness-first.

// Element i of a row of any format; for vectors (norms, biases, embedding rows), where a switch
// per element costs nothing next to the matmuls.
__device__ __forceinline__ float dq_any(int fmt, const u8* row, int i, const i8* lut) {
    switch (fmt) {
        case 0: return F_f32::dq(row, i, lut);
        case 1: return F_f16::dq(row, i, lut);
        case 2: return F_bf16::dq(row, i, lut);
        case 3: return F_q8_0::dq(row, i, lut);
        case 4: return F_q4_0::dq(row, i, lut);
        case 5: return F_q4_1::dq(row, i, lut);
        case 6: return F_q4_k::dq(row, i, lut);
        case 7: return F_q6_k::dq(row, i, lut);
        case 8: return F_vq2::dq(row, i, lut);
        case 9: return F_vq3::dq(row, i, lut);
        case 10: return F_vq4::dq(row, i, lut);
        case 11: return F_nq3::dq(row, i, lut);
        case 12: return F_tq2::dq(row, i, lut);
        case 13: return F_tq3::dq(row, i, lut);
        case 14: return F_tq4::dq(row, i, lut);
        case 15: return F_q5_0::dq(row, i, lut);
        case 16: return F_q5_1::dq(row, i, lut);
        default: return 0.0f;  // the host checks formats before launching
    }
}

#define GEMV_WARPS 4

// The end of every GEMV: the warp's partial sums added, then (split > 1) the sums of the warps
// sharing the row, in warp order, the bias, the store. Every thread of the block calls it.
__device__ __forceinline__ void gemv_store(float acc, int split, const i8* lut, const u8* bias,
                                           int bias_fmt, float* y, int rows, int r, int t) {
    __shared__ float partial[GEMV_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, first = warp - warp % split;
    acc = warp_sum(acc);
    if (split > 1) {
        if (lane == 0) partial[warp] = acc;
        __syncthreads();
        acc = partial[first];
        for (int i = 1; i < split; ++i) acc += partial[first + i];
    }
    if (lane == 0 && warp == first && r < rows) {
        if (bias) acc += dq_any(bias_fmt, bias, r, lut);
        y[(size_t)t * rows + r] = acc;
    }
}

template <class F>
__device__ __forceinline__ void gemv(const float* x, const u8* w, const i8* lut, const u8* bias,
                                     int bias_fmt, float* y, int rows, int cols, int row_bytes,
                                     int split) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * (GEMV_WARPS / split) + warp / split, part = warp % split;
    int t = blockIdx.y;
    int live_cols = r < rows ? cols : 0;
    const u8* wr = w + (size_t)(r < rows ? r : 0) * row_bytes;
    const float* xt = x + (size_t)t * cols;
    float acc = 0.0f;
#pragma unroll 4
    for (int c = lane + 32 * part; c < live_cols; c += 32 * split)
        acc += F::dq(wr, c, lut) * xt[c];
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

#define TM 64
#define TN 64
#define TK 32

template <class F>
__device__ __forceinline__ void gemm(const float* x, const u8* w, const i8* lut, const u8* bias,
                                     int bias_fmt, float* y, int rows, int cols, int row_bytes,
                                     int tokens) {
    __shared__ float ws[TM][TK + 1];
    __shared__ float xs[TN][TK + 1];
    int r0 = blockIdx.x * TM, t0 = blockIdx.y * TN;
    int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < cols; k0 += TK) {
        for (int e = tid; e < TM * TK; e += 256) {
            int rr = e / TK, kk = e % TK;
            int r = r0 + rr, c = k0 + kk;
            ws[rr][kk] = (r < rows && c < cols) ? F::dq(w + (size_t)r * row_bytes, c, lut) : 0.0f;
            int t = t0 + rr;
            xs[rr][kk] = (t < tokens && c < cols) ? x[(size_t)t * cols + c] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < TK; ++kk) {
            float wv[4], xv[4];
            for (int a = 0; a < 4; ++a) wv[a] = ws[tx + 16 * a][kk];
            for (int b = 0; b < 4; ++b) xv[b] = xs[ty + 16 * b][kk];
            for (int a = 0; a < 4; ++a)
                for (int b = 0; b < 4; ++b) acc[a][b] += wv[a] * xv[b];
        }
        __syncthreads();
    }
    for (int a = 0; a < 4; ++a) {
        int r = r0 + tx + 16 * a;
        if (r >= rows) continue;
        float bv = bias ? dq_any(bias_fmt, bias, r, lut) : 0.0f;
        for (int b = 0; b < 4; ++b) {
            int t = t0 + ty + 16 * b;
            if (t < tokens) y[(size_t)t * rows + r] = acc[a][b] + bv;
        }
    }
}

// One GEMV (grid: rows / (GEMV_WARPS / split) x tokens, GEMV_WARPS * 32 threads) and one GEMM (grid:
// rows / TM x tokens / TN, 256 threads) per format: `gemv_<fmt>`, `gemm_<fmt>`. Formats with a
// GEMV of their own (gemv_packed.cu) stamp only the GEMM.
#define VSPEC_MATMUL(NAME, F)                                                                   \
    extern "C" __global__ void gemv_##NAME(const float* x, const u8* w, const i8* lut,         \
                                           const u8* bias, int bias_fmt, float* y, int rows,   \
                                           int cols, int row_bytes, int split) {               \
        gemv<F>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, split);                   \
    }                                                                                          \
    VSPEC_GEMM(NAME, F)
#define VSPEC_GEMM(NAME, F)                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                          \
        gemm_##NAME(const float* x, const u8* w, const i8* lut, const u8* bias, int bias_fmt,  \
                    float* y, int rows, int cols, int row_bytes, int tokens) {                 \
        gemm<F>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, tokens);                  \
    }

VSPEC_MATMUL(f32, F_f32)
VSPEC_MATMUL(f16, F_f16)
VSPEC_MATMUL(bf16, F_bf16)
VSPEC_GEMM(q8_0, F_q8_0)
VSPEC_GEMM(q4_0, F_q4_0)
VSPEC_GEMM(q4_1, F_q4_1)
VSPEC_GEMM(q4_k, F_q4_k)
VSPEC_GEMM(q6_k, F_q6_k)
VSPEC_GEMM(vq2, F_vq2)
VSPEC_GEMM(vq3, F_vq3)
VSPEC_GEMM(vq4, F_vq4)
VSPEC_MATMUL(nq3, F_nq3)
VSPEC_GEMM(tq2, F_tq2)
VSPEC_GEMM(tq3, F_tq3)
VSPEC_GEMM(tq4, F_tq4)
VSPEC_GEMM(q5_0, F_q5_0)
VSPEC_GEMM(q5_1, F_q5_1)

// Decodes `n` elements of a row into f32 (the GPU tests compare each decoder with the CPU's).
extern "C" __global__ void dequant_row(int fmt, const u8* row, const i8* lut, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = dq_any(fmt, row, i, lut);
}
