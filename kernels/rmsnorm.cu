// RMSNorm: out[r, i] = w[i] * (x[r, i] / sqrt(mean_i(x[r, i]^2) + eps)), fp32 throughout.
// Layout: x, out f32 [rows, dim] row-major; w f32 [dim].
// Launch: grid (rows), block 256 (a multiple of 32, at most 1024); each block owns one row.
// Bounds: columns guarded by `dim`; any dim >= 1 works.
#include "common.cuh"

extern "C" __global__ void rmsnorm_f32(const float* __restrict__ x, const float* __restrict__ w,
                                       float* __restrict__ out, int dim, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = x[base + i];
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[base + i] = w[i] * (inv * x[base + i]);
}
