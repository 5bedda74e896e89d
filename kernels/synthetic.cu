// Fills a device FP16 tensor with the crate's synthetic generator (src/model/synthetic.rs):
// element i of stream `stream` under `seed` is lo + (hi - lo) * u, u = (mix(...) >> 40) / 2^24,
// bit-identical to synthetic_value on the host, so large benchmark models need no host copy.
// Launch: 1-D grid-stride over n elements, block 256.
#include "common.cuh"

__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

extern "C" __global__ void fill_synthetic_f16(half_bits* __restrict__ out, size_t n,
                                              unsigned long long seed, unsigned long long stream,
                                              float lo, float hi) {
    const unsigned long long sm = mix64(stream * 0xD6E8FEB86659FD93ull);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const unsigned long long h = mix64(seed ^ sm ^ ((unsigned long long)i * 0xA0761D6478BD642Full));
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        out[i] = f2h(__fadd_rn(lo, __fmul_rn(hi - lo, u)));  // no FMA: match the host bits
    }
}
