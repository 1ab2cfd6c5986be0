// The KV cache (core/src/kv.rs layout): per layer, K rows then V rows, `max_ctx` rows each of
// `width` values in the cache type: 0 = f32, 1 = f16 (round to nearest even, as `store_row`).
// Q8_0 caches are not supported on the device (the session refuses them).

__device__ __forceinline__ float kv_load(const u8* cache, int kv_type, size_t idx) {
    return kv_type == 1 ? f16_to_f32(((const u16*)cache)[idx]) : ((const float*)cache)[idx];
}

// grid: tokens; block: 256. Stores k, v ([tokens, width]) at rows pos0 + t, pos0 = step[0].
extern "C" __global__ void kv_store(const float* k, const float* v, u8* kc, u8* vc,
                                    const int* step, int width, int kv_type) {
    int t = blockIdx.x;
    size_t row = (size_t)(step[0] + t) * width;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        float kv = k[(size_t)t * width + e], vv = v[(size_t)t * width + e];
        if (kv_type == 1) {
            ((u16*)kc)[row + e] = f32_to_f16(kv);
            ((u16*)vc)[row + e] = f32_to_f16(vv);
        } else {
            ((float*)kc)[row + e] = kv;
            ((float*)vc)[row + e] = vv;
        }
    }
}
