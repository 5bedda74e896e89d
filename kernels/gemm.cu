// FP16 tensor-core GEMM for prefill: out[m, o] = sum_k x[m, k] * W[o, k].
// Layout: x f32 [M, K] row-major (rounded to f16 on the way into shared memory); W f16 bits
// [N, K] row-major (so W is the "col" B operand of mma: K contiguous per output column);
// out f32 [M, N] row-major. fp32 accumulation.
// Launch: grid (ceil(N / 128), ceil(M / 128)), block 256 = 8 warps in a 2 (M) x 4 (N) grid,
// each warp computing a 64 x 32 sub-tile with mma.sync.m16n8k16 (4 x 4 fragments).
// Tiles: BM = BN = 128, BK = 32, double-buffered in static shared memory (40 KiB) with rows
// padded to 40 halves (80 bytes), which makes the 32-bit fragment loads bank-conflict free.
// The next K tile is loaded into registers while the current one is multiplied.
// Bounds: rows past M, columns past N and k past K load as zero and are never stored.
// `vec` (K % 8 == 0 and 16-byte aligned bases) enables 16-byte global loads; otherwise every
// element is loaded and bounds-checked individually.
#include "common.cuh"

#define BM 128
#define BN 128
#define BK 32
#define LDS (BK + 8)

__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

struct TileRegs {
    float4 a[4];  // 4 x 4 f32 of x
    uint4 b[2];   // 2 x 8 f16 of W
};

__device__ __forceinline__ void load_tile(TileRegs& t, const float* __restrict__ x,
                                          const half_bits* __restrict__ w, int m0, int n0, int k0,
                                          int M, int N, int K, bool vec) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < 4; p++) {
        const int idx = p * 256 + tid;
        const int row = idx >> 3, col = k0 + (idx & 7) * 4;
        const int gm = m0 + row;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (gm < M) {
            const float* src = x + (size_t)gm * K + col;
            if (vec) {
                if (col < K) v = *reinterpret_cast<const float4*>(src);
            } else {
                if (col < K) v.x = src[0];
                if (col + 1 < K) v.y = src[1];
                if (col + 2 < K) v.z = src[2];
                if (col + 3 < K) v.w = src[3];
            }
        }
        t.a[p] = v;
    }
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int idx = p * 256 + tid;
        const int row = idx >> 2, col = k0 + (idx & 3) * 8;
        const int gn = n0 + row;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (gn < N) {
            const half_bits* src = w + (size_t)gn * K + col;
            if (vec) {
                if (col < K) v = *reinterpret_cast<const uint4*>(src);
            } else {
                unsigned h[8];
#pragma unroll
                for (int e = 0; e < 8; e++) h[e] = col + e < K ? (unsigned)src[e] : 0u;
                v = make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                               h[6] | (h[7] << 16));
            }
        }
        t.b[p] = v;
    }
}

__device__ __forceinline__ void store_tile(const TileRegs& t, half_bits* as, half_bits* bs) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < 4; p++) {
        const int idx = p * 256 + tid;
        const int row = idx >> 3, col = (idx & 7) * 4;
        uint2 h = make_uint2(pack_h2(t.a[p].x, t.a[p].y), pack_h2(t.a[p].z, t.a[p].w));
        *reinterpret_cast<uint2*>(as + row * LDS + col) = h;
    }
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int idx = p * 256 + tid;
        const int row = idx >> 2, col = (idx & 3) * 8;
        *reinterpret_cast<uint4*>(bs + row * LDS + col) = t.b[p];
    }
}

extern "C" __global__ void __launch_bounds__(256)
    gemm_f16(const float* __restrict__ x, const half_bits* __restrict__ w,
             float* __restrict__ out, int M, int N, int K, int vec) {
    __shared__ __align__(16) half_bits As[2][BM * LDS];
    __shared__ __align__(16) half_bits Bs[2][BN * LDS];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int g = lane >> 2, t4 = lane & 3;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int ktiles = (K + BK - 1) / BK;
    TileRegs regs;
    load_tile(regs, x, w, m0, n0, 0, M, N, K, vec != 0);
    store_tile(regs, As[0], Bs[0]);
    __syncthreads();

    for (int kt = 0; kt < ktiles; kt++) {
        const int cur = kt & 1;
        const bool more = kt + 1 < ktiles;
        if (more) load_tile(regs, x, w, m0, n0, (kt + 1) * BK, M, N, K, vec != 0);
        const half_bits* as = As[cur];
        const half_bits* bs = Bs[cur];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                const int r = wm * 64 + mt * 16 + g;
                const half_bits* p0 = as + r * LDS + kk + 2 * t4;
                const half_bits* p1 = p0 + 8 * LDS;
                af[mt][0] = *reinterpret_cast<const unsigned*>(p0);
                af[mt][1] = *reinterpret_cast<const unsigned*>(p1);
                af[mt][2] = *reinterpret_cast<const unsigned*>(p0 + 8);
                af[mt][3] = *reinterpret_cast<const unsigned*>(p1 + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const int c = wn * 32 + nt * 8 + g;
                const half_bits* p = bs + c * LDS + kk + 2 * t4;
                bf[nt][0] = *reinterpret_cast<const unsigned*>(p);
                bf[nt][1] = *reinterpret_cast<const unsigned*>(p + 8);
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    mma16816(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0],
                             bf[nt][1]);
        }
        if (more) store_tile(regs, As[cur ^ 1], Bs[cur ^ 1]);
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < 4; mt++) {
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int row = m0 + wm * 64 + mt * 16 + g;
            const int col = n0 + wn * 32 + nt * 8 + 2 * t4;
            if (row < M) {
                if (col < N) out[(size_t)row * N + col] = acc[mt][nt][0];
                if (col + 1 < N) out[(size_t)row * N + col + 1] = acc[mt][nt][1];
            }
            if (row + 8 < M) {
                if (col < N) out[(size_t)(row + 8) * N + col] = acc[mt][nt][2];
                if (col + 1 < N) out[(size_t)(row + 8) * N + col + 1] = acc[mt][nt][3];
            }
        }
    }
}
