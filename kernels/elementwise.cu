// Elementwise kernels over f32 activations.
// Launch (all): 1-D grid-stride loops, block 256, any grid size; indices guarded by `n`.
#include "common.cuh"

/// out[i] = silu(gate[i]) * up[i] over n elements (silu(x) = x / (1 + exp(-x))).
extern "C" __global__ void swiglu_f32(const float* __restrict__ gate, const float* __restrict__ up,
                                      float* __restrict__ out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/// x[i] += y[i] over n elements (residual add).
extern "C" __global__ void add_f32(float* __restrict__ x, const float* __restrict__ y, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

/// x[r, c] += bias[c] for an x of [rows, width] row-major (n = rows * width).
extern "C" __global__ void add_bias_f32(float* __restrict__ x, const float* __restrict__ bias,
                                        size_t n, int width) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += bias[i % width];
}

/// Fills n f32 elements with `value` (used to poison outputs in the checks).
extern "C" __global__ void fill_f32(float* __restrict__ x, size_t n, float value) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = value;
}
