// Kernels of a bidirectional transformer encoder (the complexity controller's, see
// src/controller/device.rs): layer norm with bias, GELU, unmasked multi-head attention over a
// short sequence, and the mean over rows. fp32 activations and arithmetic throughout.
#include "common.cuh"

/// Max over a whole block of at most 1024 threads (blockDim.x a multiple of 32), as
/// `block_sum`. `scratch` must hold 32 floats; every thread gets the result.
__device__ __forceinline__ float block_max_enc(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}

/// Layer norm: out[r, i] = (x[r, i] - mean_r) / sqrt(var_r + eps) * g[i] + b[i], population
/// variance computed in a second pass over the row (as the CPU oracle).
/// Layout: x, out f32 [rows, dim] row-major (distinct buffers); g, b f32 [dim].
/// Launch: grid (rows), block 256 (a multiple of 32, at most 1024); each block owns one row.
/// Bounds: columns guarded by `dim`; any dim >= 1 works.
extern "C" __global__ void layernorm_f32(const float* __restrict__ x, const float* __restrict__ g,
                                         const float* __restrict__ b, float* __restrict__ out,
                                         int dim, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += x[base + i];
    const float mean = block_sum(s, scratch) / (float)dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float d = x[base + i] - mean;
        ss += d * d;
    }
    const float var = block_sum(ss, scratch) / (float)dim;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[base + i] = (x[base + i] - mean) * inv * g[i] + b[i];
}

/// GELU in place, tanh approximation: x = 0.5 x (1 + tanh(0.7978846 (x + 0.044715 x^3))).
/// Layout: x f32 [n]. Launch: 1-D grid-stride loop, block 256, any grid size.
/// Bounds: indices guarded by `n`.
extern "C" __global__ void gelu_f32(float* __restrict__ x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        const float u = 0.7978846f * (v + 0.044715f * v * v * v);
        x[i] = 0.5f * v * (1.0f + tanhf(u));
    }
}

/// Unmasked multi-head attention: query row i, head h attends to every key row t < n_k:
/// out[i, h] = sum_t softmax_t(scale * q[i, h] . k[t, h]) v[t, h].
/// Layout: q, out f32 [n_q, heads * hd]; k, v f32 [n_k, heads * hd], all row-major, head h in
/// columns h*hd .. (h+1)*hd.
/// Launch: grid (n_q, heads), block 128 (a multiple of 32, at most 1024), dynamic shared
/// memory (hd + n_k) floats: the query head, then the n_k scores. Each warp scores keys
/// warp, warp + nwarps, ...; the block then takes the max and the sum, and each thread owns
/// output columns threadIdx.x, threadIdx.x + blockDim.x, ...
/// Bounds: n_k >= 1 and hd >= 1; the host checks (hd + n_k) * 4 bytes fits shared memory.
extern "C" __global__ void attention_full_f32(const float* __restrict__ q,
                                              const float* __restrict__ k,
                                              const float* __restrict__ v,
                                              float* __restrict__ out, int n_k, int heads,
                                              int hd, float scale) {
    extern __shared__ float sm[];
    __shared__ float scratch[32];
    float* qs = sm;
    float* s = sm + hd;
    const size_t width = (size_t)heads * hd;
    const size_t col = (size_t)blockIdx.y * hd;
    const size_t qrow = (size_t)blockIdx.x * width + col;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[qrow + d];
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int t = warp; t < n_k; t += nwarps) {
        const float* kr = k + (size_t)t * width + col;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32) acc += qs[d] * kr[d];
        acc = warp_sum(acc);
        if (lane == 0) s[t] = acc * scale;
    }
    __syncthreads();
    float m = NEG_INF;
    for (int t = threadIdx.x; t < n_k; t += blockDim.x) m = fmaxf(m, s[t]);
    m = block_max_enc(m, scratch);
    float z = 0.0f;
    for (int t = threadIdx.x; t < n_k; t += blockDim.x) {
        const float e = expf(s[t] - m);
        s[t] = e;
        z += e;
    }
    // block_sum synchronises the block, so every s[t] written above is visible below.
    z = block_sum(z, scratch);
    const float inv = 1.0f / z;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t < n_k; ++t) acc += s[t] * v[(size_t)t * width + col + d];
        out[qrow + d] = acc * inv;
    }
}

/// Mean over rows: out[c] = (sum_r x[r, c]) / rows.
/// Layout: x f32 [rows, width] row-major; out f32 [width].
/// Launch: grid (ceil(width / 256)), block 256; thread c sums column c in row order.
/// Bounds: columns guarded by `width`; rows >= 1 (checked by the host).
extern "C" __global__ void mean_rows_f32(const float* __restrict__ x, float* __restrict__ out,
                                         int rows, int width) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= width) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; ++r) acc += x[(size_t)r * width + c];
    out[c] = acc / (float)rows;
}
