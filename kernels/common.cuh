// Shared device helpers for every AgentCompress kernel.
//
// No CUDA headers are included: half values travel as raw `unsigned short` bits and are
// converted with inline PTX, so the sources compile under NVRTC with no include path and
// behave the same on sm_80 and sm_90.
#pragma once

typedef unsigned short half_bits;

/// f16 bits -> f32 (exact).
__device__ __forceinline__ float h2f(half_bits h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

/// f32 -> f16 bits, round to nearest even.
__device__ __forceinline__ half_bits f2h(float f) {
    half_bits h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

/// Two f32 -> one packed f16x2 word (`lo` in the low half), round to nearest even.
__device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/// Low f16 of a packed word -> f32.
__device__ __forceinline__ float lo_h2f(unsigned w) { return h2f((half_bits)(w & 0xffffu)); }
/// High f16 of a packed word -> f32.
__device__ __forceinline__ float hi_h2f(unsigned w) { return h2f((half_bits)(w >> 16)); }

/// Sum over the 32 lanes of a warp (every lane gets the result).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/// Max over the 32 lanes of a warp (every lane gets the result).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/// Sum over a whole block of at most 1024 threads (blockDim.x a multiple of 32).
/// `scratch` must hold 32 floats; every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

/// Quiet NaN, used to mark "no value" in debug paths.
__device__ __forceinline__ float nan_f32() { return __int_as_float(0x7fc00000); }

/// Negative infinity (no math headers under NVRTC).
#define NEG_INF __int_as_float(0xff800000)
