// One-token matmuls on 8-bit activations, the CPU fast path's arithmetic
// (core/src/quant/act_q8.rs): the input vector is quantized once per step into blocks of 32,
// `a[i] ≈ d * q[i]` with `d = max|a| / 127`, `q[i] = round(a[i] / d)` in -127..=127, and each
// weight block's `Σ w·a` becomes `d_w · Σ_b d_b · Σ q_w·q_a` (+ `m_w · Σ_b d_b · Σ q_a` for formats
// with a min), the inner sums four products per `dp4a`. The f32 GEMVs (gemv_packed.cu) spend
// about four instructions per weight converting and multiplying, which leaves the 4-bit formats
// compute-bound at a third of the memory bandwidth on an H200; here it is about one.
//
// Activation layout (`act`, written by quantize_act for a row of `cols`): q[cols] (i8), then
// d[cols / 32] (f32), then sum[cols / 32] (i32, Σ q of the block). One token only (decode).
// Same grid, block and `split` as the f32 GEMVs.

// Block `b` of 32 activations, lane i holding activation 32b + i, into `act` (a row of `cols`).
// Every lane of the warp calls it. The kernels that produce a one-token matmul's input (RMSNorm,
// SwiGLU, attention's combine) call it on the values they write when the launcher passes them
// the scratch, which saves quantize_act's launch.
__device__ __forceinline__ void quantize_block32(float v, u8* act, int cols, int b) {
    int lane = threadIdx.x & 31;
    // fmaxf skips NaN, as the CPU's f32::max does.
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    float r = roundf(v * id);
    // The CPU's `as i8` then `.max(-127)`: NaN to 0, saturate, keep -128 out.
    int q = r != r ? 0 : (int)fminf(fmaxf(r, -127.0f), 127.0f);
    act[b * 32 + lane] = (u8)(q & 255);
    float s = warp_sum((float)q);  // |s| <= 4064: exact in f32
    if (lane == 0) {
        ((float*)(act + cols))[b] = d;
        ((int*)(act + cols))[(cols >> 5) + b] = (int)s;
    }
}

// grid: ceil(cols / 256); block: 256 (a warp per block of 32). x: cols floats.
extern "C" __global__ void quantize_act(const float* x, u8* act, int cols) {
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= (cols >> 5)) return;  // whole warps: the shuffles stay full
    quantize_block32(x[b * 32 + (threadIdx.x & 31)], act, cols, b);
}

#define GEMVQ_KERNEL(NAME)                                                                      \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                              \
        gemvq_##NAME(const u8* act, const u8* w, const i8* lut, const u8* bias, int bias_fmt,  \
                     float* y, int rows, int cols, int row_bytes, int split)

// As GEMV_ROW (gemv_packed.cu), with the activation's quants `aq`, scales `ad` and sums `as`.
#define GEMVQ_ROW                                                                               \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;                                      \
    int r = blockIdx.x * (GEMV_WARPS / split) + warp / split, part = warp % split;             \
    int live_cols = r < rows ? cols : 0;                                                        \
    const u8* wr = w + (size_t)(r < rows ? r : 0) * row_bytes;                                 \
    const u8* aq = act;                                                                         \
    const float* ad = (const float*)(act + cols);                                               \
    const int* as = (const int*)(act + cols) + (cols >> 5);                                     \
    float acc = 0.0f

__device__ __forceinline__ uint2 ld_u2(const u8* p) { return *(const uint2*)p; }

// Eight nibbles of `q` as two words of bytes: low nibbles, high nibbles.
__device__ __forceinline__ u32 lo_nibbles(u32 q) { return q & 0x0F0F0F0Fu; }
__device__ __forceinline__ u32 hi_nibbles(u32 q) { return (q >> 4) & 0x0F0F0F0Fu; }

// ---- 32-weight blocks: four lanes per block (lane k: quant bytes 4k..4k+4, weights 4k.. and
// 16 + 4k.. for the nibble formats, 8k..8k+8 for Q8_0), eight blocks per warp step; the block's
// activation sum (for a min or an offset) is taken once, by lane k = 0.

// Q4_0: (q - 8) d.
GEMVQ_KERNEL(q4_0) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 18;
        u32 q = ld_w16x2(blk + 2 + 4 * k);
        const u8* a = aq + b * 32 + 4 * k;
        int s = dot4_i8(lo_nibbles(q), ld_w32(a), dot4_i8(hi_nibbles(q), ld_w32(a + 16), 0));
        if (k == 0) s -= 8 * as[b];
        acc += f16_lo(ld_w16(blk)) * (ad[b] * (float)s);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// Q4_1: d q + m.
GEMVQ_KERNEL(q4_1) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 20;
        u32 h = ld_w32(blk), q = ld_w32(blk + 4 + 4 * k);
        const u8* a = aq + b * 32 + 4 * k;
        int s = dot4_i8(lo_nibbles(q), ld_w32(a), dot4_i8(hi_nibbles(q), ld_w32(a + 16), 0));
        float da = ad[b];
        acc += f16_lo(h) * (da * (float)s);
        if (k == 0) acc += f16_hi(h) * (da * (float)as[b]);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// Q5_0: (q - 16) d, fifth bits as in gemv_q5_0.
GEMVQ_KERNEL(q5_0) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 22;
        u32 qh = ld_w16x2(blk + 2), q = ld_w16x2(blk + 6 + 4 * k);
        u32 ql = lo_nibbles(q) | fifth_bits((qh >> (4 * k)) & 15);
        u32 qu = hi_nibbles(q) | fifth_bits((qh >> (16 + 4 * k)) & 15);
        const u8* a = aq + b * 32 + 4 * k;
        int s = dot4_i8(ql, ld_w32(a), dot4_i8(qu, ld_w32(a + 16), 0));
        if (k == 0) s -= 16 * as[b];
        acc += f16_lo(ld_w16(blk)) * (ad[b] * (float)s);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// Q5_1: d q + m. Two lanes per block (its 24 bytes keep the quants 8-byte aligned), lane k:
// quant bytes 8k..8k+8, weights 8k.. (low nibbles) and 16 + 8k.. (high), as 8-byte loads;
// sixteen blocks per warp step.
GEMVQ_KERNEL(q5_1) {
    GEMVQ_ROW;
    int k = lane & 1;
#pragma unroll 4
    for (int b = (lane >> 1) + 16 * part; b < (live_cols >> 5); b += 16 * split) {
        const u8* blk = wr + b * 24;
        u32 h = ld_w32(blk), qh = ld_w32(blk + 4) >> (8 * k);
        uint2 q = ld_u2(blk + 8 + 8 * k);
        uint2 alo = ld_u2(aq + b * 32 + 8 * k), ahi = ld_u2(aq + b * 32 + 16 + 8 * k);
        int s = dot4_i8(lo_nibbles(q.x) | fifth_bits(qh & 15), alo.x,
                        dot4_i8(lo_nibbles(q.y) | fifth_bits((qh >> 4) & 15), alo.y, 0));
        s = dot4_i8(hi_nibbles(q.x) | fifth_bits((qh >> 16) & 15), ahi.x,
                    dot4_i8(hi_nibbles(q.y) | fifth_bits((qh >> 20) & 15), ahi.y, s));
        float da = ad[b];
        acc += f16_lo(h) * (da * (float)s);
        if (k == 0) acc += f16_hi(h) * (da * (float)as[b]);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// Q8_0: q d, signed bytes as they are.
GEMVQ_KERNEL(q8_0) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 34;
        const u8* a = aq + b * 32 + 8 * k;
        int s = dot4_i8(ld_w16x2(blk + 2 + 8 * k), ld_w32(a),
                        dot4_i8(ld_w16x2(blk + 6 + 8 * k), ld_w32(a + 4), 0));
        acc += f16_lo(ld_w16(blk)) * (ad[b] * (float)s);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// ---- VQ4: 64-weight blocks of 36 bytes (f16 d, f16 m, byte j: weight j low nibble, j + 32
// high), two activation blocks each. Four lanes per block, lane k: bytes 8k..8k+8 (weights
// 8k..8k+8 of activation block 2b, 32 + 8k.. of 2b + 1); eight blocks per warp step. The
// activations, the two blocks' scales and sums are 8-byte loads (a 64-column row keeps them
// 8-byte aligned).
GEMVQ_KERNEL(vq4) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 6); b += 8 * split) {
        const u8* blk = wr + b * 36;
        u32 h = ld_w32(blk), q0 = ld_w32(blk + 4 + 8 * k), q1 = ld_w32(blk + 8 + 8 * k);
        uint2 alo = ld_u2(aq + b * 64 + 8 * k), ahi = ld_u2(aq + b * 64 + 32 + 8 * k);
        int lo = dot4_i8(lo_nibbles(q0), alo.x, dot4_i8(lo_nibbles(q1), alo.y, 0));
        int hi = dot4_i8(hi_nibbles(q0), ahi.x, dot4_i8(hi_nibbles(q1), ahi.y, 0));
        float2 d = ld_f2(ad + 2 * b);
        acc += f16_lo(h) * (d.x * (float)lo + d.y * (float)hi);
        if (k == 0) {
            uint2 sums = ld_u2((const u8*)(as + 2 * b));
            acc += f16_hi(h) * (d.x * (float)(int)sums.x + d.y * (float)(int)sums.y);
        }
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// ---- VQ2 and VQ3: 64-weight blocks, byte i of the low bits holding weights i, i + 16, i + 32,
// i + 48 (two bits each). Four lanes per block, lane k: low-bit bytes 4k..4k+4, that is weights
// 4k.. + 16g for g < 4, at 16g + 4k of the block's 64 activations (blocks 2b and 2b + 1).
// Eight blocks per warp step. Value d q + m.

// The lane's Σ q·a over activation block 2b (g = 0, 1) and 2b + 1 (g = 2, 3): q the 2-bit
// fields g of `lo` with VQ3's third bits `hi(g)` (at bit 2 of each byte; 0 for VQ2).
template <class Hi>
__device__ __forceinline__ int2 dot_crumbs_q8(u32 lo, Hi hi, const u8* a, int k) {
    int s[4];
#pragma unroll
    for (int g = 0; g < 4; ++g)
        s[g] = dot4_i8(((lo >> (2 * g)) & 0x03030303u) | hi(g), ld_w32(a + 16 * g + 4 * k), 0);
    int2 r;
    r.x = s[0] + s[1];
    r.y = s[2] + s[3];
    return r;
}

// The block's d·Σ_b d_b·Σ q·a + m·Σ_b d_b·Σ a, the min term taken by lane k = 0.
__device__ __forceinline__ float crumbs_block(u32 h, int2 s, const float* ad, const int* as,
                                              int b, int k) {
    float2 d = ld_f2(ad + 2 * b);
    float v = f16_lo(h) * (d.x * (float)s.x + d.y * (float)s.y);
    if (k == 0) v += f16_hi(h) * (d.x * (float)as[2 * b] + d.y * (float)as[2 * b + 1]);
    return v;
}

struct NoThirdBits {
    __device__ __forceinline__ u32 operator()(int) const { return 0; }
};

// VQ3's third bits of the lane's weights 4k + i + 16g (i < 4): bit (k / 2) + 2g of byte
// 4 (k % 2) + i of qh, that is of the 32-bit word `w` = qh word k % 2, moved to bit 2.
struct ThirdBits {
    u32 w;
    int k;
    __device__ __forceinline__ u32 operator()(int g) const {
        return ((w >> ((k >> 1) + 2 * g)) & 0x01010101u) << 2;
    }
};

// VQ2: 20 bytes, f16 d, f16 m, qs[16].
GEMVQ_KERNEL(vq2) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 6); b += 8 * split) {
        const u8* blk = wr + b * 20;
        u32 h = ld_w32(blk), lo = ld_w32(blk + 4 + 4 * k);
        int2 s = dot_crumbs_q8(lo, NoThirdBits(), aq + b * 64, k);
        acc += crumbs_block(h, s, ad, as, b, k);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// VQ3: 28 bytes, f16 d, f16 m, ql[16] (as VQ2), qh[8] (bit j / 8 of byte j % 8: weight j's
// third bit).
GEMVQ_KERNEL(vq3) {
    GEMVQ_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 6); b += 8 * split) {
        const u8* blk = wr + b * 28;
        u32 h = ld_w32(blk), lo = ld_w32(blk + 4 + 4 * k);
        ThirdBits hi;
        hi.w = ld_w32(blk + 20 + 4 * (k & 1));
        hi.k = k;
        int2 s = dot_crumbs_q8(lo, hi, aq + b * 64, k);
        acc += crumbs_block(h, s, ad, as, b, k);
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// ---- 256-weight super-blocks, one per warp step; every sub-block of 32 weights is one
// activation block (8b + s).

// Q4_K (layout as gemv_q4_k): lane p = l / 8, k = l % 8 takes quant bytes 4k..4k+4 of group p:
// weights 4k.. of sub-blocks 2p (low nibbles) and 2p + 1 (high). Value d sc q - dmin m.
GEMVQ_KERNEL(q4_k) {
    GEMVQ_ROW;
    int p = lane >> 3, k = lane & 7;
    for (int b = part; b < (live_cols >> 8); b += split) {
        const u8* blk = wr + b * 144;
        u32 h = ld_w32(blk), q = ld_w32(blk + 16 + 32 * p + 4 * k);
        int s0 = 2 * p, s1 = 2 * p + 1, sc0, m0, sc1, m1;
        q4_k_scale_min(blk + 4, s0, &sc0, &m0);
        q4_k_scale_min(blk + 4, s1, &sc1, &m1);
        int a0 = 8 * b + s0, a1 = 8 * b + s1;
        int i0 = dot4_i8(lo_nibbles(q), ld_w32(aq + 32 * a0 + 4 * k), 0);
        int i1 = dot4_i8(hi_nibbles(q), ld_w32(aq + 32 * a1 + 4 * k), 0);
        float d0 = ad[a0], d1 = ad[a1];
        acc += f16_lo(h) * ((float)sc0 * (d0 * (float)i0) + (float)sc1 * (d1 * (float)i1));
        if (k == 0)
            acc -= f16_hi(h) * ((float)m0 * (d0 * (float)as[a0]) + (float)m1 * (d1 * (float)as[a1]));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}

// Q6_K (layout as gemv_q6_k): weight 128n + 32c + l is low nibble c / 2 of ql[64n + 32(c % 2) +
// l], bits 2c.. of qh[32n + l], minus 32, scale scales[8n + 2c + l / 16]. Lane 16n + 8c0 + l/4
// takes weights l..l+4 of groups c0 and c0 + 2 (the same ql and qh bytes); the -32 is taken
// back with each group's sum of four activations.
GEMVQ_KERNEL(q6_k) {
    GEMVQ_ROW;
    int n = lane >> 4, c0 = (lane >> 3) & 1, l = 4 * (lane & 7);
    for (int b = part; b < (live_cols >> 8); b += split) {
        const u8* blk = wr + b * 210;
        u32 ql = ld_w16x2(blk + 64 * n + 32 * c0 + l), qh = ld_w16x2(blk + 128 + 32 * n + l);
        u32 q0 = lo_nibbles(ql) | (((qh >> (2 * c0)) & 0x03030303u) << 4);
        u32 q2 = hi_nibbles(ql) | (((qh >> (2 * c0 + 4)) & 0x03030303u) << 4);
        const i8* scales = (const i8*)(blk + 192 + 8 * n + (l >> 4));
        int a0 = 8 * b + 4 * n + c0, a2 = a0 + 2;
        u32 x0 = ld_w32(aq + 32 * a0 + l), x2 = ld_w32(aq + 32 * a2 + l);
        int i0 = dot4_i8(q0, x0, 0) - 32 * dot4_i8(0x01010101u, x0, 0);
        int i2 = dot4_i8(q2, x2, 0) - 32 * dot4_i8(0x01010101u, x2, 0);
        acc += f16_lo(ld_w16(blk + 208)) * ((float)scales[2 * c0] * (ad[a0] * (float)i0) +
                                            (float)scales[2 * c0 + 4] * (ad[a2] * (float)i2));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, 0);
}
