// Rotary position embedding, in place.
// Layout: x f32 [rows, n_heads, head_dim]; row r is at position pos0 + r.
// Pair i of a head (0 <= i < head_dim/2) is (2i, 2i+1) when interleaved != 0 (llama2.c) and
// (i, i + head_dim/2) otherwise (Hugging Face rotate-half); its angle is
// pos * theta^(-2i/head_dim), as in the CPU reference.
// Launch: 1-D grid over rows * n_heads * (head_dim/2) pairs, block 256; one thread per pair.
// Bounds: the global pair index is guarded by the total pair count.
#include "common.cuh"

extern "C" __global__ void rope_f32(float* __restrict__ x, int rows, int n_heads, int head_dim,
                                    int pos0, float theta, int interleaved) {
    const int half = head_dim / 2;
    const size_t total = (size_t)rows * n_heads * half;
    const size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= total) return;
    const int i = (int)(gid % half);
    const size_t head = gid / half;  // row * n_heads + h
    const int r = (int)(head / n_heads);
    const float freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    const float a = (float)(pos0 + r) * freq;
    float s, c;
    sincosf(a, &s, &c);
    float* h = x + head * head_dim;
    const int j = interleaved ? 2 * i : i;
    const int k = interleaved ? 2 * i + 1 : i + half;
    const float x0 = h[j], x1 = h[k];
    h[j] = x0 * c - x1 * s;
    h[k] = x0 * s + x1 * c;
}
