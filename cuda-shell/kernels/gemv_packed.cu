// One-token matmuls of their own for the packed formats, where the generic GEMV (matmul.cu: one
// element per lane per step through the format's `dq`, each field read byte by byte) leaves
// most of the memory bandwidth unused: here each lane reads whole 16- or 32-bit words of quants
// and its activations as float2/float4 loads, decodes eight weights in registers, and sums per
// block (or sub-block) `scale * sum(q * x) + offset * sum(x)`. Same grid and parameters as the
// generic GEMV; the sums are reassociated (within the tests' tolerance of the CPU path, not bit
// for bit the generic kernel's).
//
// Alignment: every field read as a word sits at an offset its block size keeps aligned (blocks
// of 18, 26, 34 and 210 bytes are read in 16-bit words, of 20, 24, 28, 36 and 144 in 32-bit
// ones), rows are whole blocks and the weights region starts 256-byte aligned; activation rows
// are `cols` floats with `cols` a multiple of the block, so the vector loads are aligned too.

#define GEMV_KERNEL(NAME)                                                                       \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                              \
        gemv_##NAME(const float* x, const u8* w, const i8* lut, const u8* bias, int bias_fmt,  \
                    float* y, int rows, int cols, int row_bytes, int split)

// Exact small integer `q` (< 2^23) as a float without an I2F: the bits of 2^23 + q, minus 2^23.
__device__ __forceinline__ float small_int_f(u32 q) {
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;
}

// The four bytes of `q` (each an unsigned integer) dotted with `x`.
__device__ __forceinline__ float dot_bytes(u32 q, float4 x) {
    return small_int_f(q & 255) * x.x + small_int_f((q >> 8) & 255) * x.y +
           small_int_f((q >> 16) & 255) * x.z + small_int_f(q >> 24) * x.w;
}

__device__ __forceinline__ float sum4(float4 x) { return (x.x + x.y) + (x.z + x.w); }
__device__ __forceinline__ float4 ld_f4(const float* p) { return *(const float4*)p; }
__device__ __forceinline__ float2 ld_f2(const float* p) { return *(const float2*)p; }
__device__ __forceinline__ u32 ld_w32(const u8* p) { return *(const u32*)p; }
__device__ __forceinline__ u32 ld_w16(const u8* p) { return *(const u16*)p; }
// 32 bits at a 2-byte aligned address.
__device__ __forceinline__ u32 ld_w16x2(const u8* p) { return ld_w16(p) | (ld_w16(p + 2) << 16); }
__device__ __forceinline__ float f16_lo(u32 h) { return f16_to_f32((u16)(h & 0xFFFFu)); }
__device__ __forceinline__ float f16_hi(u32 h) { return f16_to_f32((u16)(h >> 16)); }

// The eight nibbles of `q` (low nibbles weights 0..4 with `lo`, high nibbles 0..4 with `hi`)
// dotted with the activations.
__device__ __forceinline__ float dot_nibbles(u32 q, float4 lo, float4 hi) {
    return dot_bytes(q & 0x0F0F0F0Fu, lo) + dot_bytes((q >> 4) & 0x0F0F0F0Fu, hi);
}

// Bits 0..4 of `b` moved to bit 4 of each byte lane (the fifth bits of Q5_0/Q5_1).
__device__ __forceinline__ u32 fifth_bits(u32 b) {
    return ((b & 1) << 4) | ((b & 2) << 11) | ((b & 4) << 18) | ((b & 8) << 25);
}

// `split` warps share a row (1, 2 or 4, dividing GEMV_WARPS): warp `part` of them takes every
// split-th step of the row's blocks, and gemv_store adds their sums. A row of 4096 columns is
// 16 warp steps for one warp, each a dependent round trip to memory at the start of the
// kernel; four warps per row take four each (and rows of 1024 give four times the warps to
// fill the GPU). Warps past the last row run no steps but still reach gemv_store's barrier.
#define GEMV_ROW                                                                                \
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;                                      \
    int r = blockIdx.x * (GEMV_WARPS / split) + warp / split, part = warp % split;             \
    int t = blockIdx.y;                                                                         \
    int live_cols = r < rows ? cols : 0;                                                        \
    const u8* wr = w + (size_t)(r < rows ? r : 0) * row_bytes;                                 \
    const float* xt = x + (size_t)t * cols;                                                     \
    float acc = 0.0f

// ---- 32-weight blocks: four lanes per block (lane k: quant bytes 4k..4k+4, weights 4k.. and
// 16 + 4k.. for the nibble formats, 8k..8k+8 for Q8_0), eight blocks per warp step.

// Q4_0: 18 bytes, f16 d, 16 bytes of nibbles. Value (q - 8) d.
GEMV_KERNEL(q4_0) {
    GEMV_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 18;
        u32 q = ld_w16x2(blk + 2 + 4 * k);
        float4 lo = ld_f4(xt + b * 32 + 4 * k), hi = ld_f4(xt + b * 32 + 16 + 4 * k);
        acc += f16_lo(ld_w16(blk)) * (dot_nibbles(q, lo, hi) - 8.0f * (sum4(lo) + sum4(hi)));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// Q4_1: 20 bytes, f16 d, f16 m, 16 bytes of nibbles. Value d q + m.
GEMV_KERNEL(q4_1) {
    GEMV_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 20;
        u32 h = ld_w32(blk), q = ld_w32(blk + 4 + 4 * k);
        float4 lo = ld_f4(xt + b * 32 + 4 * k), hi = ld_f4(xt + b * 32 + 16 + 4 * k);
        acc += f16_lo(h) * dot_nibbles(q, lo, hi) + f16_hi(h) * (sum4(lo) + sum4(hi));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// Q5_0: 22 bytes, f16 d, u32 fifth bits (bit j of weight j), 16 bytes of nibbles. (q - 16) d.
GEMV_KERNEL(q5_0) {
    GEMV_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 22;
        u32 qh = ld_w16x2(blk + 2), q = ld_w16x2(blk + 6 + 4 * k);
        u32 ql = (q & 0x0F0F0F0Fu) | fifth_bits((qh >> (4 * k)) & 15);
        u32 qu = ((q >> 4) & 0x0F0F0F0Fu) | fifth_bits((qh >> (16 + 4 * k)) & 15);
        float4 lo = ld_f4(xt + b * 32 + 4 * k), hi = ld_f4(xt + b * 32 + 16 + 4 * k);
        acc += f16_lo(ld_w16(blk)) *
               (dot_bytes(ql, lo) + dot_bytes(qu, hi) - 16.0f * (sum4(lo) + sum4(hi)));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// Q5_1: 24 bytes, f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles. Value d q + m.
GEMV_KERNEL(q5_1) {
    GEMV_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 24;
        u32 h = ld_w32(blk), qh = ld_w32(blk + 4), q = ld_w32(blk + 8 + 4 * k);
        u32 ql = (q & 0x0F0F0F0Fu) | fifth_bits((qh >> (4 * k)) & 15);
        u32 qu = ((q >> 4) & 0x0F0F0F0Fu) | fifth_bits((qh >> (16 + 4 * k)) & 15);
        float4 lo = ld_f4(xt + b * 32 + 4 * k), hi = ld_f4(xt + b * 32 + 16 + 4 * k);
        acc += f16_lo(h) * (dot_bytes(ql, lo) + dot_bytes(qu, hi)) +
               f16_hi(h) * (sum4(lo) + sum4(hi));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// Q8_0: 34 bytes, f16 d, 32 signed bytes. Value q d; the bytes are read with their sign bit
// flipped (q + 128, unsigned) and 128 sum(x) taken back.
GEMV_KERNEL(q8_0) {
    GEMV_ROW;
    int k = lane & 3;
#pragma unroll 4
    for (int b = (lane >> 2) + 8 * part; b < (live_cols >> 5); b += 8 * split) {
        const u8* blk = wr + b * 34;
        u32 q0 = ld_w16x2(blk + 2 + 8 * k) ^ 0x80808080u;
        u32 q1 = ld_w16x2(blk + 6 + 8 * k) ^ 0x80808080u;
        float4 a = ld_f4(xt + b * 32 + 8 * k), c = ld_f4(xt + b * 32 + 8 * k + 4);
        acc += f16_lo(ld_w16(blk)) *
               (dot_bytes(q0, a) + dot_bytes(q1, c) - 128.0f * (sum4(a) + sum4(c)));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// ---- 64-weight blocks: eight lanes per block, four blocks per warp step.

// VQ4: 36 bytes, f16 d, f16 m, 32 bytes (byte j: weight j low, j + 32 high). Lane k: bytes
// 4k..4k+4. Value d q + m.
GEMV_KERNEL(vq4) {
    GEMV_ROW;
    int k = lane & 7;
#pragma unroll 4
    for (int b = (lane >> 3) + 4 * part; b < (live_cols >> 6); b += 4 * split) {
        const u8* blk = wr + b * 36;
        u32 h = ld_w32(blk), q = ld_w32(blk + 4 + 4 * k);
        float4 lo = ld_f4(xt + b * 64 + 4 * k), hi = ld_f4(xt + b * 64 + 32 + 4 * k);
        acc += f16_lo(h) * dot_nibbles(q, lo, hi) + f16_hi(h) * (sum4(lo) + sum4(hi));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// VQ2 and VQ3 low bits: byte j % 16 holds weights j, j + 16, j + 32, j + 48 (two bits each).
// Lane k takes bytes 2k, 2k + 1: weights 2k + b + 16g for b < 2, g < 4.
__device__ __forceinline__ float dot_crumbs(u32 q2, u32 hi_bits, const float* xb, int k,
                                            float* sx) {
    float s = 0.0f, sxx = 0.0f;
#pragma unroll
    for (int g = 0; g < 4; ++g) {
        float2 xv = ld_f2(xb + 16 * g + 2 * k);
        u32 a = ((q2 >> (2 * g)) & 3) | (((hi_bits >> (2 * g)) & 1) << 2);
        u32 c = ((q2 >> (8 + 2 * g)) & 3) | (((hi_bits >> (8 + 2 * g)) & 1) << 2);
        s += small_int_f(a) * xv.x + small_int_f(c) * xv.y;
        sxx += xv.x + xv.y;
    }
    *sx = sxx;
    return s;
}

// VQ2: 20 bytes, f16 d, f16 m, qs[16]. Value d q + m.
GEMV_KERNEL(vq2) {
    GEMV_ROW;
    int k = lane & 7;
#pragma unroll 2
    for (int b = (lane >> 3) + 4 * part; b < (live_cols >> 6); b += 4 * split) {
        const u8* blk = wr + b * 20;
        u32 h = ld_w32(blk), q = ld_w16(blk + 4 + 2 * k);
        float sx;
        float sq = dot_crumbs(q, 0, xt + b * 64, k, &sx);
        acc += f16_lo(h) * sq + f16_hi(h) * sx;
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// VQ3: 28 bytes, f16 d, f16 m, ql[16] (low bits as VQ2), qh[8] (bit j / 8 of byte j % 8 is the
// third bit of weight j). For lane k, weight 2k + b + 16g's third bit is bit (2k + b) / 8 + 2g
// of byte (2k + b) % 8: gathered so that bit 2g (b = 0) and 8 + 2g (b = 1) hold it, as the low
// bits sit in `q`.
GEMV_KERNEL(vq3) {
    GEMV_ROW;
    int k = lane & 7;
#pragma unroll 2
    for (int b = (lane >> 3) + 4 * part; b < (live_cols >> 6); b += 4 * split) {
        const u8* blk = wr + b * 28;
        u32 h = ld_w32(blk), q = ld_w16(blk + 4 + 2 * k);
        u32 qh0 = ld_w32(blk + 20), qh1 = ld_w32(blk + 24);
        int j0 = 2 * k, j1 = 2 * k + 1;
        u32 byte0 = ((j0 & 7) < 4 ? qh0 >> (8 * (j0 & 3)) : qh1 >> (8 * (j0 & 3))) & 255;
        u32 byte1 = ((j1 & 7) < 4 ? qh0 >> (8 * (j1 & 3)) : qh1 >> (8 * (j1 & 3))) & 255;
        // Bits (j >> 3) + 2g of the byte, g = 0..4, to bits 2g.
        u32 e0 = byte0 >> (j0 >> 3), e1 = byte1 >> (j1 >> 3);
        u32 hb = (e0 & 0x55u) | ((e1 & 0x55u) << 8);
        float sx;
        float sq = dot_crumbs(q, hb, xt + b * 64, k, &sx);
        acc += f16_lo(h) * sq + f16_hi(h) * sx;
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// TQ2/TQ3/TQ4: 2 + 8K bytes, f16 d, a 64K-bit stream; weight j's state is the 8-bit window
// ending at bit K(j + 1). Lane k takes weights 8k..8k+8, whose windows lie in stream bytes
// Kk - 1 .. Kk + K (byte -1 reads as zero). The codebook is staged in shared memory as floats.
template <int K>
__device__ __forceinline__ void gemv_tq(const float* x, const u8* w, const i8* lut,
                                        const u8* bias, int bias_fmt, float* y, int rows,
                                        int cols, int row_bytes, int split) {
    __shared__ float book[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) book[i] = (float)lut[i];
    __syncthreads();
    GEMV_ROW;
    int k = lane & 7;
    const int bytes = 2 + 8 * K;
#pragma unroll 2
    for (int b = (lane >> 3) + 4 * part; b < (live_cols >> 6); b += 4 * split) {
        const u8* blk = wr + b * bytes;
        const u8* qs = blk + 2;
        u64 win = 0;
#pragma unroll
        for (int i = 0; i <= K; ++i) {
            int at = K * k - 1 + i;
            if (at >= 0) win |= (u64)qs[at] << (8 * i);
        }
        float4 a = ld_f4(xt + b * 64 + 8 * k), c = ld_f4(xt + b * 64 + 8 * k + 4);
        float s = book[(win >> K) & 255] * a.x + book[(win >> (2 * K)) & 255] * a.y +
                  book[(win >> (3 * K)) & 255] * a.z + book[(win >> (4 * K)) & 255] * a.w +
                  book[(win >> (5 * K)) & 255] * c.x + book[(win >> (6 * K)) & 255] * c.y +
                  book[(win >> (7 * K)) & 255] * c.z + book[(win >> (8 * K)) & 255] * c.w;
        acc += f16_lo(ld_w16(blk)) * s;
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

GEMV_KERNEL(tq2) { gemv_tq<2>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, split); }
GEMV_KERNEL(tq3) { gemv_tq<3>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, split); }
GEMV_KERNEL(tq4) { gemv_tq<4>(x, w, lut, bias, bias_fmt, y, rows, cols, row_bytes, split); }

// ---- 256-weight super-blocks: one per warp step.

// Q4_K's 6-bit scale and min of sub-block `s` (< 8) from its 12 packed bytes `sc`: sub-blocks
// 0..4 in the low six bits of bytes s and s + 4, 4..8 in the nibbles of byte s + 4 and the top
// two bits of bytes s - 4 and s.
__device__ __forceinline__ void q4_k_scale_min(const u8* sc, int s, int* scale, int* min) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *min = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
        *min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

// Q4_K: 144 bytes, f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
// (sub-block s: nibble s % 2 of bytes 16 + 32 (s / 2) ..). Lane l: p = l / 8 picks sub-blocks 2p
// (low nibbles) and 2p + 1 (high), k = l % 8 their weights 4k..4k+4. Value d sc q - dmin m.
GEMV_KERNEL(q4_k) {
    GEMV_ROW;
    int p = lane >> 3, k = lane & 7;
    for (int b = part; b < (live_cols >> 8); b += split) {
        const u8* blk = wr + b * 144;
        u32 h = ld_w32(blk), q = ld_w32(blk + 16 + 32 * p + 4 * k);
        int s0 = 2 * p, s1 = 2 * p + 1, sc0, m0, sc1, m1;
        q4_k_scale_min(blk + 4, s0, &sc0, &m0);
        q4_k_scale_min(blk + 4, s1, &sc1, &m1);
        float4 lo = ld_f4(xt + b * 256 + 64 * p + 4 * k);
        float4 hi = ld_f4(xt + b * 256 + 64 * p + 32 + 4 * k);
        float d = f16_lo(h), dmin = f16_hi(h);
        acc += d * ((float)sc0 * dot_bytes(q & 0x0F0F0F0Fu, lo) +
                    (float)sc1 * dot_bytes((q >> 4) & 0x0F0F0F0Fu, hi)) -
               dmin * ((float)m0 * sum4(lo) + (float)m1 * sum4(hi));
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}

// Q6_K: 210 bytes, ql[128], qh[64], i8 scales[16], f16 d at 208. Weight 128n + 32c + l (c < 4,
// l < 32): low nibble c / 2 of ql[64n + 32 (c % 2) + l], bits 2c.. of qh[32n + l], minus 32,
// scale scales[8n + 2c + l / 16]. Lane: n = lane / 16, l = 2 (lane % 16) + {0, 1}, every c.
GEMV_KERNEL(q6_k) {
    GEMV_ROW;
    int n = lane >> 4, l = 2 * (lane & 15);
    for (int b = part; b < (live_cols >> 8); b += split) {
        const u8* blk = wr + b * 210;
        u32 ql0 = ld_w16(blk + 64 * n + l), ql1 = ld_w16(blk + 64 * n + 32 + l);
        u32 qh = ld_w16(blk + 128 + 32 * n + l);
        const i8* scales = (const i8*)(blk + 192 + 8 * n + (l >> 4));
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            u32 lows = ((c & 1) ? ql1 : ql0) >> (4 * (c >> 1));
            u32 u0 = (lows & 15) | (((qh >> (2 * c)) & 3) << 4);
            u32 u1 = ((lows >> 8) & 15) | (((qh >> (8 + 2 * c)) & 3) << 4);
            float2 xv = ld_f2(xt + b * 256 + 128 * n + 32 * c + l);
            s += (float)scales[2 * c] *
                 (small_int_f(u0) * xv.x + small_int_f(u1) * xv.y - 32.0f * (xv.x + xv.y));
        }
        acc += f16_lo(ld_w16(blk + 208)) * s;
    }
    gemv_store(acc, split, lut, bias, bias_fmt, y, rows, r, t);
}
