// FP16-weight GEMV for decode: out[o] = sum_k W[o, k] * x[k], fp32 accumulation.
// Layout: W f16 bits [N, K] row-major; x f32 [K]; out f32 [N].
//
// gemv_f16_vec and its variants gemv_f16_r{ROWS}u{UNROLL} (K % 8 == 0, W and x 16-byte
//   aligned): memory-bound streaming kernels. Launch: grid (ceil(N / (4 * ROWS))), block 128 =
//   4 warps; each warp owns ROWS consecutive rows. Lane l reads 16-byte chunks l, l+32, ... of
//   each of its rows (coalesced 512 bytes per warp per row), UNROLL chunks per row in flight
//   (ROWS * UNROLL independent 16-byte weight loads per lane), bypassing L1 for the weights;
//   x is read through the cache as float4. A warp-shuffle reduction finishes each row. Rows
//   past N are clamped for loading and never stored. The default is ROWS 1, UNROLL 8.
// gemv_f16_scalar (any K): one warp per row, lanes stride over K. Launch: grid
//   (ceil(N / 4)), block 128.
#include "common.cuh"

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

template <int ROWS, int UNROLL>
__device__ __forceinline__ void gemv_vec_body(const half_bits* __restrict__ w,
                                              const float* __restrict__ x,
                                              float* __restrict__ out, int n, int k) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * ROWS;
    if (row0 >= n) return;
    const int kv = k >> 3;  // 16-byte chunks per row
    const uint4* rows[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const int row = min(row0 + r, n - 1);
        rows[r] = reinterpret_cast<const uint4*>(w + (size_t)row * k);
    }
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;

    int c = lane;
    // Full groups: UNROLL chunks per row, ROWS * UNROLL independent 16-byte loads in flight.
    for (; c + 32 * (UNROLL - 1) < kv; c += 32 * UNROLL) {
        uint4 wv[UNROLL][ROWS];
#pragma unroll
        for (int u = 0; u < UNROLL; u++)
#pragma unroll
            for (int r = 0; r < ROWS; r++) wv[u][r] = ld_stream16(rows[r] + c + 32 * u);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) {
            const int cc = c + 32 * u;
            const float4 xa = x4[2 * cc], xb = x4[2 * cc + 1];
#pragma unroll
            for (int r = 0; r < ROWS; r++) acc[r] = dot8(wv[u][r], xa, xb, acc[r]);
        }
    }
    // Tail: fewer than UNROLL chunks left for this lane.
    for (; c < kv; c += 32) {
        const float4 xa = x4[2 * c], xb = x4[2 * c + 1];
#pragma unroll
        for (int r = 0; r < ROWS; r++) acc[r] = dot8(ld_stream16(rows[r] + c), xa, xb, acc[r]);
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        const float s = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < n) out[row0 + r] = s;
    }
}

/// The default decode GEMV: 1 row per warp, 8 chunks per row in flight (grid ceil(N / 4)).
/// Chosen from the variants by H100 run 1 (docs/gpu-runs/2026-11-27-h100-run1): 88-99% of
/// copy bandwidth at 70B layer shapes, at or ahead of cuBLAS at each.
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_f16_vec(const half_bits* __restrict__ w, const float* __restrict__ x,
                 float* __restrict__ out, int n, int k) {
    gemv_vec_body<1, 8>(w, x, out, n, k);
}

/// Variant: 4 rows per warp, 2 chunks per row in flight (grid ceil(N / 16)); the first default.
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_f16_r4u2(const half_bits* __restrict__ w, const float* __restrict__ x,
                  float* __restrict__ out, int n, int k) {
    gemv_vec_body<4, 2>(w, x, out, n, k);
}

/// Variant: 2 rows per warp, 4 chunks per row in flight (grid ceil(N / 8)).
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_f16_r2u4(const half_bits* __restrict__ w, const float* __restrict__ x,
                  float* __restrict__ out, int n, int k) {
    gemv_vec_body<2, 4>(w, x, out, n, k);
}

/// Variant: 8 rows per warp, 1 chunk per row in flight (grid ceil(N / 32)).
extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_f16_r8u1(const half_bits* __restrict__ w, const float* __restrict__ x,
                  float* __restrict__ out, int n, int k) {
    gemv_vec_body<8, 1>(w, x, out, n, k);
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
