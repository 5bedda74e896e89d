// Argmax of the first n f32 elements: the index of the largest, the first one on ties; NaN never
// wins unless every element is NaN (then 0), matching the CPU reference.
// Launch: grid (1), block 1024 (a power of two, at most 1024); strided scan then a tree
// reduction in shared memory. out: one u32.
#include "common.cuh"

__device__ __forceinline__ bool better(float v, unsigned i, float bv, unsigned bi) {
    if (v != v) return false;              // NaN never wins
    if (bv != bv) return true;             // anything beats NaN
    return v > bv || (v == bv && i < bi);  // first index on ties
}

extern "C" __global__ void argmax_f32(const float* __restrict__ x, size_t n,
                                      unsigned* __restrict__ out) {
    __shared__ float sv[1024];
    __shared__ unsigned si[1024];
    float bv = nan_f32();
    unsigned bi = 0xffffffffu;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = x[i];
        if (bi == 0xffffffffu || better(v, (unsigned)i, bv, bi)) {
            bv = v;
            bi = (unsigned)i;
        }
    }
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float ov = sv[threadIdx.x + s];
            const unsigned oi = si[threadIdx.x + s];
            const unsigned mi = si[threadIdx.x];
            if (oi != 0xffffffffu && (mi == 0xffffffffu || better(ov, oi, sv[threadIdx.x], mi))) {
                sv[threadIdx.x] = ov;
                si[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        unsigned r = si[0];
        if (r == 0xffffffffu) r = 0;
        // All-NaN input: the CPU reference returns the last index; match it.
        if (n > 0 && sv[0] != sv[0]) r = (unsigned)(n - 1);
        out[0] = r;
    }
}
