//! Running the CUDA kernel sources on the host, for machines without a GPU: a C++ prelude that
//! stands in for `prelude.cu` (exact half conversions, `__fmul_rn` and friends as plain operations
//! with contraction off) and a small CUDA emulator (one OS thread per CUDA thread, blocks run one
//! after another, `__syncthreads` and warp shuffles as barriers), so the `.cu` files compile
//! unchanged with the system C++ compiler. It shows the kernels' arithmetic and indexing, not
//! anything about a GPU (memory model, timing, PTX).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Host replacements for `prelude.cu`, plus the emulator.
pub const HOST_PRELUDE: &str = r#"
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#define __device__
#define __forceinline__ inline
#define __constant__ static const
#define __global__
#define __shared__ static
#define __launch_bounds__(...)
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float bits_f32(u32 b) { float f; memcpy(&f, &b, 4); return f; }
static inline float __int_as_float(int b) { float f; memcpy(&f, &b, 4); return f; }
static inline float __uint_as_float(u32 b) { return bits_f32(b); }
static inline int min(int a, int b) { return a < b ? a : b; }
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
struct uint2 { u32 x, y; };
struct int2 { int x, y; };
#define NEG_INF __int_as_float(0xff800000)
// IEEE half to float, exact (what cvt.f32.f16 computes).
static inline float f16_to_f32(u16 h) {
    u32 sign = (u32)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        int ex = 113;
        while (!(m & 0x400u)) { m <<= 1; ex--; }
        return bits_f32(sign | ((u32)ex << 23) | ((m & 0x3ffu) << 13));
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}
static inline u16 f32_to_f16(float f) { _Float16 h = (_Float16)f; u16 b; memcpy(&b, &h, 2); return b; }
static inline float bf16_to_f32(u16 h) { return bits_f32((u32)h << 16); }
static inline u16 ld_u16(const u8* p) { return (u16)p[0] | (u16)((u16)p[1] << 8); }
static inline float ld_f16(const u8* p) { return f16_to_f32(ld_u16(p)); }
static inline int dot4_i8(u32 a, u32 b, int c) {
    for (int i = 0; i < 32; i += 8) c += (int)(signed char)(a >> i) * (int)(signed char)(b >> i);
    return c;
}

// ---- the emulator ----
struct dim3_ { unsigned x, y, z; };
static thread_local dim3_ threadIdx, blockIdx;
static dim3_ blockDim, gridDim;
static thread_local std::barrier<>* g_block_bar;
static thread_local std::barrier<>* g_warp_bar;
static thread_local float* g_slots;
static inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    unsigned t = threadIdx.x;
    g_slots[t] = v;
    g_warp_bar->arrive_and_wait();
    float r = g_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)o)];
    g_warp_bar->arrive_and_wait();
    return r;
}
template <class K, class... A>
static void launch(K k, dim3_ grid, unsigned block, A... args) {
    gridDim = grid;
    blockDim = {block, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                std::barrier<> bar(block);
                std::vector<std::unique_ptr<std::barrier<>>> warps;
                for (unsigned w = 0; w < block / 32; ++w) warps.emplace_back(new std::barrier<>(32));
                std::vector<float> slots(block);
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < block; ++t)
                    ts.emplace_back([&, t] {
                        threadIdx = {t, 0, 0};
                        blockIdx = {x, y, z};
                        g_block_bar = &bar;
                        g_warp_bar = warps[t / 32].get();
                        g_slots = slots.data();
                        k(args...);
                    });
                for (auto& t : ts) t.join();
            }
}
"#;

/// The kernel sources named by `files` (all but `prelude.cu` when empty), after the host prelude,
/// then `main`, compiled to the executable `dir/tag` (a test passes its `CARGO_TARGET_TMPDIR`, so
/// nothing accumulates elsewhere); `None` (after printing SKIPPED) when there is no C++ compiler.
pub fn compile(dir: &str, tag: &str, files: &[&str], extra: &str) -> Option<PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = String::from(HOST_PRELUDE);
    for (name, text) in vspec_cuda::kernels::SOURCES {
        let wanted = if files.is_empty() {
            name != "prelude.cu"
        } else {
            files.contains(&name)
        };
        if wanted {
            src.push_str(&format!("#line 1 \"{name}\"\n{text}\n"));
        }
    }
    src.push_str("#line 1 \"harness\"\n");
    src.push_str(extra);
    // Tests of one binary run in parallel and may compile the same `tag`: each call writes and
    // links under names of its own, then renames the finished executable into place (atomic), so
    // no test ever executes a file a linker is still writing (`ETXTBSY`) or half-written source.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "{tag}.{}.{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let cpp = dir.join(format!("{unique}.cpp"));
    std::fs::write(&cpp, src).unwrap();
    let linked = dir.join(&unique);
    let exe = dir.join(tag);
    let out = match Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-ffp-contract=off", "-pthread", "-o"])
        .arg(&linked)
        .arg(&cpp)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("SKIPPED: no C++ compiler ({cxx}: {e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "the CUDA sources do not compile as host C++ ({}):\n{}",
        cpp.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&linked, &exe).unwrap();
    std::fs::rename(&cpp, dir.join(format!("{tag}.cpp"))).unwrap();
    Some(exe)
}

/// The parameter kinds of `kernel` in the program text: `p`ointer, `i`nt, `f`loat.
pub fn params(prog: &str, kernel: &str) -> Vec<char> {
    let keys = if kernel.starts_with("gemv_") {
        vec!["gemv_##NAME(".to_string()]
    } else if kernel.starts_with("gemvq_") {
        vec!["gemvq_##NAME(".to_string()]
    } else if kernel.starts_with("gemm_") {
        vec!["gemm_##NAME(".to_string()]
    } else {
        vec![format!("void {kernel}("), format!("\n    {kernel}(")]
    };
    let start = keys
        .iter()
        .find_map(|k| prog.find(k.as_str()).map(|i| i + k.len()))
        .unwrap_or_else(|| panic!("kernel {kernel} not found in the sources"));
    let end = start + prog[start..].find(')').unwrap();
    prog[start..end]
        .split(',')
        .map(|p| {
            let p = p.replace('\\', " ");
            let p = p.trim();
            if p.contains('*') {
                'p'
            } else if p.starts_with("int ") {
                'i'
            } else if p.starts_with("float ") {
                'f'
            } else {
                panic!("{kernel}: parameter '{p}' of unknown kind")
            }
        })
        .collect()
}
