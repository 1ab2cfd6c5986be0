// Rotary embedding (core/src/kernels/rope.rs): pairs (2i, 2i+1) (interleaved, layout 0) or
// (i, i + half) (neox, layout 1) of each head turned by (pos0 + t) * inv_freq[i]; elements past
// the 2·half rotated ones are copied. pos0 is read from device memory (`step[0]`) so a captured
// decode graph replays at any position.
// grid: (tokens, element blocks); block: 256. x, y: [tokens, width]. One token's width is spread
// over gridDim.y blocks (a single block would run a 4096-wide decode step on one SM).
extern "C" __global__ void rope(const float* x, float* y, const int* step, int width,
                                int head_dim, int layout, const float* inv_freq, int half) {
    int t = blockIdx.x;
    float pos = (float)(step[0] + t);
    const float* xr = x + (size_t)t * width;
    float* yr = y + (size_t)t * width;
    int stride = gridDim.y * blockDim.x;
    for (int e = blockIdx.y * blockDim.x + threadIdx.x; e < width; e += stride) {
        int c = e % head_dim, base = e - c;
        int i, ia, ib;
        if (layout == 0) {
            i = c >> 1;
            ia = 2 * i;
            ib = 2 * i + 1;
        } else {
            i = c < half ? c : c - half;
            ia = i;
            ib = i + half;
        }
        if (i >= half || (layout == 1 && c >= 2 * half)) {
            yr[e] = xr[e];
            continue;
        }
        float s, co;
        sincosf(pos * inv_freq[i], &s, &co);
        float a = xr[base + ia], b = xr[base + ib];
        yr[e] = c == ia ? a * co - b * s : a * s + b * co;
    }
}
