// One-token matmuls of their own for the formats where the generic GEMV (matmul.cu: one element
// per lane per step through the format's `dq`) leaves most of the memory bandwidth unused: each
// lane reads a whole 32-bit word of quants and eight activations as two float4 loads, decodes
// the eight weights in registers, and sums per block `d * sum(q * x) + m * sum(x)`. Same grid
// and parameters as the generic GEMV; the sums are reassociated (within the tests' tolerance of
// the CPU path, not bit-equal to the generic kernel).
//
// Alignment: rows of these formats are whole 4-byte multiples (36- and 24-byte blocks) and the
// weights region starts 256-byte aligned, so every u32 load below is aligned; activation rows
// are `cols` floats with `cols` a multiple of the block, so every float4 load is 16-byte aligned.

// Exact small integer `q` (< 2^23) as a float without an I2F: the bits of 2^23 + q, minus 2^23.
__device__ __forceinline__ float small_int_f(u32 q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

__device__ __forceinline__ float dot4(float a, float b, float c, float d, float4 x) {
    return a * x.x + b * x.y + c * x.z + d * x.w;
}

__device__ __forceinline__ float sum4(float4 x) { return (x.x + x.y) + (x.z + x.w); }

__device__ __forceinline__ float header_f16(u32 h, int half) {
    return f16_to_f32((u16)(half ? h >> 16 : h & 0xFFFFu));
}

// VQ4: 36-byte blocks of 64 (f16 d, f16 m, 32 bytes: byte j holds weight j low, j + 32 high).
// Eight lanes per block, lane k of a block its bytes 4k..4k+4 (weights 4k.. and 32 + 4k..);
// four blocks per warp step.
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_vq4(const float* x, const u8* w, const i8* lut, const u8* bias, int bias_fmt, float* y,
             int rows, int cols, int row_bytes) {
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    int t = blockIdx.y;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const u8* wr = w + (size_t)r * row_bytes;
    const float* xt = x + (size_t)t * cols;
    int k = lane & 7;
    float acc = 0.0f;
#pragma unroll 4
    for (int b = lane >> 3; b < (cols >> 6); b += 4) {
        const u8* blk = wr + b * 36;
        u32 h = *(const u32*)blk;
        u32 q = *(const u32*)(blk + 4 + 4 * k);
        float4 lo = *(const float4*)(xt + b * 64 + 4 * k);
        float4 hi = *(const float4*)(xt + b * 64 + 32 + 4 * k);
        float sq = dot4(small_int_f(q & 15), small_int_f((q >> 8) & 15),
                        small_int_f((q >> 16) & 15), small_int_f(q >> 24 & 15), lo) +
                   dot4(small_int_f((q >> 4) & 15), small_int_f((q >> 12) & 15),
                        small_int_f((q >> 20) & 15), small_int_f(q >> 28), hi);
        acc += header_f16(h, 0) * sq + header_f16(h, 1) * (sum4(lo) + sum4(hi));
    }
    gemv_store(acc, lane, lut, bias, bias_fmt, y, rows, r, t);
}

// Q5_1: 24-byte blocks of 32 (f16 d, f16 m, u32 fifth bits, 16 bytes: byte j holds weight j
// low, j + 16 high). Four lanes per block, lane k its bytes 4k..4k+4 (weights 4k.. and
// 16 + 4k..); eight blocks per warp step.
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_q5_1(const float* x, const u8* w, const i8* lut, const u8* bias, int bias_fmt, float* y,
              int rows, int cols, int row_bytes) {
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    int t = blockIdx.y;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const u8* wr = w + (size_t)r * row_bytes;
    const float* xt = x + (size_t)t * cols;
    int k = lane & 3;
    float acc = 0.0f;
#pragma unroll 4
    for (int b = lane >> 2; b < (cols >> 5); b += 8) {
        const u8* blk = wr + b * 24;
        u32 h = *(const u32*)blk;
        u32 qh = *(const u32*)(blk + 4);
        u32 q = *(const u32*)(blk + 8 + 4 * k);
        // Fifth bits of weights 4k..4k+4 and 16 + 4k.., moved to bit 4 of each byte lane.
        u32 lo5 = (qh >> (4 * k)) & 15, hi5 = (qh >> (16 + 4 * k)) & 15;
        u32 ql = (q & 0x0F0F0F0Fu) | ((lo5 & 1) << 4) | ((lo5 & 2) << 11) | ((lo5 & 4) << 18) |
                 ((lo5 & 8) << 25);
        u32 qu = ((q >> 4) & 0x0F0F0F0Fu) | ((hi5 & 1) << 4) | ((hi5 & 2) << 11) |
                 ((hi5 & 4) << 18) | ((hi5 & 8) << 25);
        float4 lo = *(const float4*)(xt + b * 32 + 4 * k);
        float4 hi = *(const float4*)(xt + b * 32 + 16 + 4 * k);
        float sq = dot4(small_int_f(ql & 31), small_int_f((ql >> 8) & 31),
                        small_int_f((ql >> 16) & 31), small_int_f(ql >> 24), lo) +
                   dot4(small_int_f(qu & 31), small_int_f((qu >> 8) & 31),
                        small_int_f((qu >> 16) & 31), small_int_f(qu >> 24), hi);
        acc += header_f16(h, 0) * sq + header_f16(h, 1) * (sum4(lo) + sum4(hi));
    }
    gemv_store(acc, lane, lut, bias, bias_fmt, y, rows, r, t);
}
