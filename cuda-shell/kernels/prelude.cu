// Shared by every kernel file (the host concatenates prelude, formats, then the op files into
// one NVRTC program). NVRTC ships no libc or CUDA headers we can count on (the PyPI wheel has
// only nvrtc.h), so fixed-width types and half conversions are written here: the conversions
// are single PTX instructions, exact for every finite value, like the `half` crate on the CPU.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// -inf without <math.h>.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Round to nearest even, as `half::f16::from_f32` (the CPU KV cache's store).
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Little-endian loads from byte pointers: block fields sit at any even (or odd) offset.
__device__ __forceinline__ u16 ld_u16(const u8* p) { return (u16)p[0] | (u16)((u16)p[1] << 8); }
__device__ __forceinline__ float ld_f16(const u8* p) { return f16_to_f32(ld_u16(p)); }

// Σ of the four signed byte products of `a` and `b`, plus `c` (one `dp4a`, sm_61 and later).
__device__ __forceinline__ int dot4_i8(u32 a, u32 b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
