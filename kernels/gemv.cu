// FP16-weight GEMV for decode: out[o] = sum_k W[o, k] * x[k], fp32 accumulation.
// Layout: W f16 bits [N, K] row-major; x f32 [K]; out f32 [N].
//
// gemv_f16_vec (K % 8 == 0, W and x 16-byte aligned): memory-bound streaming kernel.
//   Launch: grid (ceil(N / 16)), block 128 = 4 warps; each warp owns GEMV_ROWS = 4 consecutive
//   rows. Lane l reads 16-byte chunks l, l+32, ... of each of its rows (coalesced 512 bytes per
//   warp per row), two chunks per row in flight per iteration (8 independent 16-byte weight
//   loads per lane), bypassing L1 for the weights; x is read through the cache as float4.
//   A warp-shuffle reduction finishes each row. Rows past N are clamped for loading and
//   never stored.
// gemv_f16_scalar (any K): one warp per row, lanes stride over K. Launch: grid
//   (ceil(N / 4)), block 128.
#include "common.cuh"

#define GEMV_ROWS 4
#define GEMV_WARPS 4

__device__ __forceinline__ uint4 ld_stream16(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b, float acc) {
    acc = fmaf(lo_h2f(w.x), a.x, acc);
    acc = fmaf(hi_h2f(w.x), a.y, acc);
    acc = fmaf(lo_h2f(w.y), a.z, acc);
    acc = fmaf(hi_h2f(w.y), a.w, acc);
    acc = fmaf(lo_h2f(w.z), b.x, acc);
    acc = fmaf(hi_h2f(w.z), b.y, acc);
    acc = fmaf(lo_h2f(w.w), b.z, acc);
    acc = fmaf(hi_h2f(w.w), b.w, acc);
    return acc;
}

extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_f16_vec(const half_bits* __restrict__ w, const float* __restrict__ x,
                 float* __restrict__ out, int n, int k) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (row0 >= n) return;
    const int kv = k >> 3;  // 16-byte chunks per row
    const uint4* rows[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int row = min(row0 + r, n - 1);
        rows[r] = reinterpret_cast<const uint4*>(w + (size_t)row * k);
    }
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float acc[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) acc[r] = 0.0f;

    int c = lane;
    for (; c + 32 < kv; c += 64) {
        uint4 w0[GEMV_ROWS], w1[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            w0[r] = ld_stream16(rows[r] + c);
            w1[r] = ld_stream16(rows[r] + c + 32);
        }
        const float4 xa = x4[2 * c], xb = x4[2 * c + 1];
        const float4 xc = x4[2 * (c + 32)], xd = x4[2 * (c + 32) + 1];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            acc[r] = dot8(w0[r], xa, xb, acc[r]);
            acc[r] = dot8(w1[r], xc, xd, acc[r]);
        }
    }
    if (c < kv) {
        uint4 w0[GEMV_ROWS];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) w0[r] = ld_stream16(rows[r] + c);
        const float4 xa = x4[2 * c], xb = x4[2 * c + 1];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) acc[r] = dot8(w0[r], xa, xb, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const float s = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < n) out[row0 + r] = s;
    }
}

extern "C" __global__ void __launch_bounds__(128)
    gemv_f16_scalar(const half_bits* __restrict__ w, const float* __restrict__ x,
                    float* __restrict__ out, int n, int k) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= n) return;
    const half_bits* wr = w + (size_t)row * k;
    float acc = 0.0f;
    for (int i = lane; i < k; i += 32) acc = fmaf(h2f(wr[i]), x[i], acc);
    acc = warp_sum(acc);
    if (lane == 0) out[row] = acc;
}
