// Decoders of the plain and GGUF formats, one per format, each a struct with
// `dq(row, i, lut)`: element `i` of the row starting at `row`, in f32, with the scalar decoder's
// rounding order (core/src/quant/gguf/*.rs; `__fmul_rn`/`__fadd_rn` stop the compiler from
// fusing `d * q + m` into one FMA, which would round once where the CPU rounds twice). `lut` is
// unused here (the trellis formats' codebook). Format ids match `vspec_cuda::kernels::FormatId`.

struct F_f32 {  // 4 bytes per weight; rows start 4-byte aligned (upload layout)
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        return ((const float*)row)[i];
    }
};

struct F_f16 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        return f16_to_f32(((const u16*)row)[i]);
    }
};

struct F_bf16 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        return bf16_to_f32(((const u16*)row)[i]);
    }
};

// Q8_0 (q8_0.rs): 34-byte blocks of 32: f16 d, 32 × i8. Value q * d.
struct F_q8_0 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 5) * 34;
        return __fmul_rn((float)(i8)b[2 + (i & 31)], ld_f16(b));
    }
};

// Q4_0 (q4_0.rs): 18-byte blocks of 32: f16 d, 16 bytes of nibbles; element j < 16 is the low
// nibble of byte 2 + j, j >= 16 the high nibble of byte 2 + j - 16. Value (q - 8) * d.
struct F_q4_0 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 5) * 18;
        int j = i & 31;
        int q = (b[2 + (j & 15)] >> ((j >> 4) * 4)) & 15;
        return __fmul_rn((float)(q - 8), ld_f16(b));
    }
};

// Q4_1 (q4_1.rs): 20-byte blocks of 32: f16 d, f16 m, nibbles as Q4_0. Value d * q + m.
struct F_q4_1 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 5) * 20;
        int j = i & 31;
        int q = (b[4 + (j & 15)] >> ((j >> 4) * 4)) & 15;
        return __fadd_rn(__fmul_rn(ld_f16(b), (float)q), ld_f16(b + 2));
    }
};

// Q5_0 (q5_0.rs): 22-byte blocks of 32: f16 d, u32 qh (bit j = bit 4 of element j), 16 bytes
// of low nibbles laid out as Q4_0's. Value (q - 16) * d.
struct F_q5_0 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 5) * 22;
        int j = i & 31;
        int lo = (b[6 + (j & 15)] >> ((j >> 4) * 4)) & 15;
        int hi = (b[2 + (j >> 3)] >> (j & 7)) & 1;
        return __fmul_rn((float)((lo | (hi << 4)) - 16), ld_f16(b));
    }
};

// Q5_1 (q5_1.rs): 24-byte blocks of 32: f16 d, f16 m, u32 qh, nibbles as Q5_0. Value d * q + m.
struct F_q5_1 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 5) * 24;
        int j = i & 31;
        int lo = (b[8 + (j & 15)] >> ((j >> 4) * 4)) & 15;
        int hi = (b[4 + (j >> 3)] >> (j & 7)) & 1;
        return __fadd_rn(__fmul_rn(ld_f16(b), (float)(lo | (hi << 4))), ld_f16(b + 2));
    }
};

// Q4_K (q4_k.rs): 144-byte super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins (ggml get_scale_min_k4), 128 bytes of nibbles. Sub-block s = j / 32; the quant is nibble
// s % 2 of byte 16 + 32 * (s / 2) + j % 32. Value (d * sc) * q - dmin * m.
struct F_q4_k {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 8) * 144;
        int j = i & 255, s = j >> 5;
        const u8* p = b + 4;
        int sc, m;
        if (s < 4) {
            sc = p[s] & 63;
            m = p[s + 4] & 63;
        } else {
            sc = (p[s + 4] & 15) | ((p[s - 4] >> 6) << 4);
            m = (p[s + 4] >> 4) | ((p[s] >> 6) << 4);
        }
        float dl = __fmul_rn(ld_f16(b), (float)sc);
        float ml = __fmul_rn(ld_f16(b + 2), (float)m);
        int q = (b[16 + 32 * (s >> 1) + (j & 31)] >> (4 * (s & 1))) & 15;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    }
};

// Q6_K (q6_k.rs): 210-byte super-blocks of 256: ql[128], qh[64], i8 scales[16], f16 d at 208.
// With n = j / 128, k = (j % 128) / 32, l = j % 32: low nibble k / 2 of ql[64n + 32(k % 2) + l],
// high bits 2k..2k+2 of qh[32n + l], minus 32. Value (d * scales[j / 16]) * q.
struct F_q6_k {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 8) * 210;
        int j = i & 255, n = j >> 7, k = (j & 127) >> 5, l = j & 31;
        int lo = (b[64 * n + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
        int hi = (b[128 + 32 * n + l] >> (2 * k)) & 3;
        int q = (lo | (hi << 4)) - 32;
        float dl = __fmul_rn(ld_f16(b + 208), (float)(i8)b[192 + (j >> 4)]);
        return __fmul_rn(dl, (float)q);
    }
};
