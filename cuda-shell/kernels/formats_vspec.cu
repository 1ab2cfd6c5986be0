// Decoders of Vspec's own formats (core/src/quant/vspec/*.rs), 64-weight blocks, same contract
// as formats_gguf.cu. `lut` is the trellis format's 256-entry i8 codebook, uploaded from the
// format's `CODEBOOK` (the host passes the one matching the weight's format).

// VQ2 (vq2.rs): 20 bytes: f16 d, f16 m, qs[16]; element j is bits 2(j/16).. of byte 4 + j % 16.
struct F_vq2 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 6) * 20;
        int j = i & 63;
        int q = (b[4 + (j & 15)] >> (2 * (j >> 4))) & 3;
        return __fadd_rn(__fmul_rn(ld_f16(b), (float)q), ld_f16(b + 2));
    }
};

// VQ3 (vq3.rs): 28 bytes: f16 d, f16 m, ql[16] (low 2 bits as VQ2), qh[8] (bit j / 8 of
// byte 20 + j % 8).
struct F_vq3 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 6) * 28;
        int j = i & 63;
        int lo = (b[4 + (j & 15)] >> (2 * (j >> 4))) & 3;
        int hi = (b[20 + (j & 7)] >> (j >> 3)) & 1;
        return __fadd_rn(__fmul_rn(ld_f16(b), (float)(lo | (hi << 2))), ld_f16(b + 2));
    }
};

// VQ4 (vq4.rs): 36 bytes: f16 d, f16 m, qs[32]; element j is nibble j / 32 of byte 4 + j % 32.
struct F_vq4 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 6) * 36;
        int j = i & 63;
        int q = (b[4 + (j & 31)] >> (4 * (j >> 5))) & 15;
        return __fadd_rn(__fmul_rn(ld_f16(b), (float)q), ld_f16(b + 2));
    }
};

// NQ3 (nq3.rs): 26 bytes: f16 d, ql[16] at 2, qh[8] at 18 (VQ3's bits two bytes earlier).
// Value d * LEVELS[q].
__constant__ i8 NQ3_LEVELS[8] = {-127, -77, -42, -14, 14, 42, 77, 127};

struct F_nq3 {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8*) {
        const u8* b = row + (i >> 6) * 26;
        int j = i & 63;
        int lo = (b[2 + (j & 15)] >> (2 * (j >> 4))) & 3;
        int hi = (b[18 + (j & 7)] >> (j >> 3)) & 1;
        return __fmul_rn(ld_f16(b), (float)NQ3_LEVELS[lo | (hi << 2)]);
    }
};

// TQ2/TQ3/TQ4 (tq*.rs, trellis.rs): 2 + 8K bytes: f16 d, a 64K-bit little-endian stream. Weight
// j's state is the 8-bit window of the stream ending at bit K(j+1) (zeros before the stream);
// value d * lut[state]. Random access: one 16-bit window per weight.
template <int K>
struct F_tq {
    static __device__ __forceinline__ float dq(const u8* row, int i, const i8* lut) {
        const int bytes = 2 + 8 * K;
        const u8* b = row + (i >> 6) * bytes;
        const u8* qs = b + 2;
        int j = i & 63, end = K * j + K, state;
        if (end < 8) {
            state = (qs[0] << (8 - end)) & 0xFF;
        } else {
            int pos = end - 8, byte = pos >> 3, shift = pos & 7;
            int lo = qs[byte];
            int hi = byte + 1 < 8 * K ? qs[byte + 1] : 0;
            state = ((lo | (hi << 8)) >> shift) & 0xFF;
        }
        return __fmul_rn(ld_f16(b), (float)lut[state]);
    }
};
typedef F_tq<2> F_tq2;
typedef F_tq<3> F_tq3;
typedef F_tq<4> F_tq4;
