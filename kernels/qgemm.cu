// Weight-only quantized tensor-core GEMM for prefill (M > 8):
//   out[m, o] = sum_k x[m, k] * W[o, k],  W packed INT8 / INT4 / INT2 (src/quant/packed.rs).
//
// Same tiling as the FP16 kernels/gemm.cu (BM = BN = 128, BK = 32, 256 threads = 8 warps in a
// 2 (M) x 4 (N) grid, each warp a 64 x 32 sub-tile of mma.sync.m16n8k16 with f32 accumulators,
// or, for skinny M (qgemm_s_*: M <= 32), BM = 32 with 16 x 32 warp sub-tiles,
// double-buffered static shared memory with rows padded to 40 halves), except that the B tile
// is dequantized from the packed codes on its way into shared memory:
//   thread t loads the 16 codes k0 + 16 (t & 1) .. + 16 of row n0 + (t >> 1) (INT8: one
//   16-byte load, INT4: 8 bytes, INT2: 4 bytes; always inside one group since groups are
//   multiples of 32, or 16 for INT8, or the whole row) plus the group's f16 scale and zero, and
//   when storing to shared memory turns them into 16 f16 weights (q - z) * s with the
//   magic-number conversion (qcommon.cuh).
// Layout: x f32 [M, K] row-major (rounded to f16 into shared memory); `codes` u32 words
//   [N, row_words]; scales / zeros f16 [N, ng]; out f32 [M, N].
// Launch: grid (ceil(N / 128), ceil(M / BM)), block 256 (BM = 128 for qgemm_b*, 32 for
// qgemm_s_b*).
// Bounds: x rows past M and k past K load as zero; W rows past N and code chunks starting at
//   k >= K load as zero (a chunk starting below K lies inside the padded row); outputs past M
//   or N are never stored. `vec` (K % 4 == 0) enables 16-byte x loads.
#include "qcommon.cuh"

#define QBN 128
#define QBK 32
#define QLDS (QBK + 8)

__device__ __forceinline__ void qmma16816(float* c, unsigned a0, unsigned a1, unsigned a2,
                                          unsigned a3, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// AP = BM / 32: float4 loads of x per thread per tile (BM rows x 32 k).
template <int AP> struct QTileRegs {
    float4 a[AP];   // AP x 4 f32 of x
    uint4 b;        // up to 4 code words (16 codes)
    half_bits s, z; // the group's scale and zero
};

template <int BITS, int AP>
__device__ __forceinline__ void qload_tile(QTileRegs<AP>& t, const float* __restrict__ x,
                                           const unsigned* __restrict__ codes,
                                           const half_bits* __restrict__ scales,
                                           const half_bits* __restrict__ zeros, int m0, int n0,
                                           int k0, int M, int N, int K, int row_words, int ng,
                                           int group, bool vec) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < AP; p++) {
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
    const int gn = n0 + (tid >> 1), k = k0 + (tid & 1) * 16;
    t.b = make_uint4(0u, 0u, 0u, 0u);
    t.s = 0;
    t.z = 0;
    if (gn < N && k < K) {
        const unsigned* src = codes + (size_t)gn * row_words + k / QFmt<BITS>::PER_WORD;
        if (BITS == 8) {
            t.b = *reinterpret_cast<const uint4*>(src);
        } else if (BITS == 4) {
            const uint2 v = *reinterpret_cast<const uint2*>(src);
            t.b.x = v.x;
            t.b.y = v.y;
        } else {
            t.b.x = *src;
        }
        const size_t pi = (size_t)gn * ng + k / group;
        t.s = scales[pi];
        if (BITS != 8) t.z = zeros[pi];
    }
}

template <int BITS, int AP>
__device__ __forceinline__ void qstore_tile(const QTileRegs<AP>& t, half_bits* as,
                                            half_bits* bs) {
    typedef QFmt<BITS> F;
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < AP; p++) {
        const int idx = p * 256 + tid;
        const int row = idx >> 3, col = (idx & 7) * 4;
        uint2 h = make_uint2(pack_h2(t.a[p].x, t.a[p].y), pack_h2(t.a[p].z, t.a[p].w));
        *reinterpret_cast<uint2*>(as + row * QLDS + col) = h;
    }
    unsigned s2, nz2;
    group_params<BITS>(t.s, t.z, s2, nz2);
    unsigned wd[8];
    constexpr int NW = 16 / F::PER_WORD;  // words holding this thread's 16 codes
#pragma unroll
    for (int wi = 0; wi < NW; wi++) {
        const unsigned w =
            (wi == 0 ? t.b.x : wi == 1 ? t.b.y : wi == 2 ? t.b.z : t.b.w) ^ F::FLIP;
#pragma unroll
        for (int i = 0; i < F::PAIRS; i++)
            wd[wi * F::PAIRS + i] = dequant_pair<BITS>(code_pair<BITS>(w, i), s2, nz2);
    }
    half_bits* dst = bs + (tid >> 1) * QLDS + (tid & 1) * 16;
    *reinterpret_cast<uint4*>(dst) = make_uint4(wd[0], wd[1], wd[2], wd[3]);
    *reinterpret_cast<uint4*>(dst + 8) = make_uint4(wd[4], wd[5], wd[6], wd[7]);
}

// MW: m16 tiles per warp along M (4: BM = 128, warp tile 64 x 32; 1: BM = 32, warp tile
// 16 x 32, for skinny M).
template <int BITS, int MW>
__device__ __forceinline__ void qgemm_body(const float* __restrict__ x,
                                           const unsigned* __restrict__ codes,
                                           const half_bits* __restrict__ scales,
                                           const half_bits* __restrict__ zeros,
                                           float* __restrict__ out, int M, int N, int K,
                                           int row_words, int ng, int group, int vec) {
    constexpr int BM = 32 * MW, AP = BM / 32;
    __shared__ __align__(16) half_bits As[2][BM * QLDS];
    __shared__ __align__(16) half_bits Bs[2][QBN * QLDS];
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * QBN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp >> 2, wn = warp & 3;
    const int g = lane >> 2, t4 = lane & 3;

    float acc[MW][4][4];
#pragma unroll
    for (int i = 0; i < MW; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int ktiles = (K + QBK - 1) / QBK;
    QTileRegs<AP> regs;
    qload_tile<BITS, AP>(regs, x, codes, scales, zeros, m0, n0, 0, M, N, K, row_words, ng, group,
                     vec != 0);
    qstore_tile<BITS, AP>(regs, As[0], Bs[0]);
    __syncthreads();

    for (int kt = 0; kt < ktiles; kt++) {
        const int cur = kt & 1;
        const bool more = kt + 1 < ktiles;
        if (more)
            qload_tile<BITS, AP>(regs, x, codes, scales, zeros, m0, n0, (kt + 1) * QBK, M, N, K,
                             row_words, ng, group, vec != 0);
        const half_bits* as = As[cur];
        const half_bits* bs = Bs[cur];
#pragma unroll
        for (int kk = 0; kk < QBK; kk += 16) {
            unsigned af[MW][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < MW; mt++) {
                const int r = wm * (16 * MW) + mt * 16 + g;
                const half_bits* p0 = as + r * QLDS + kk + 2 * t4;
                const half_bits* p1 = p0 + 8 * QLDS;
                af[mt][0] = *reinterpret_cast<const unsigned*>(p0);
                af[mt][1] = *reinterpret_cast<const unsigned*>(p1);
                af[mt][2] = *reinterpret_cast<const unsigned*>(p0 + 8);
                af[mt][3] = *reinterpret_cast<const unsigned*>(p1 + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                const int cc = wn * 32 + nt * 8 + g;
                const half_bits* p = bs + cc * QLDS + kk + 2 * t4;
                bf[nt][0] = *reinterpret_cast<const unsigned*>(p);
                bf[nt][1] = *reinterpret_cast<const unsigned*>(p + 8);
            }
#pragma unroll
            for (int mt = 0; mt < MW; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    qmma16816(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3],
                              bf[nt][0], bf[nt][1]);
        }
        if (more) qstore_tile<BITS, AP>(regs, As[cur ^ 1], Bs[cur ^ 1]);
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < MW; mt++) {
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int row = m0 + wm * (16 * MW) + mt * 16 + g;
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

#define QGEMM_KERNEL(NAME, BITS, MW)                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const float* __restrict__ x, const unsigned* __restrict__ codes,          \
                      const half_bits* __restrict__ scales, const half_bits* __restrict__ zeros, \
                      float* __restrict__ out, int M, int N, int K, int row_words, int ng,      \
                      int group, int vec) {                                                     \
        qgemm_body<BITS, MW>(x, codes, scales, zeros, out, M, N, K, row_words, ng, group, vec);     \
    }

QGEMM_KERNEL(qgemm_b8, 8, 4)
QGEMM_KERNEL(qgemm_b4, 4, 4)
QGEMM_KERNEL(qgemm_b2, 2, 4)
QGEMM_KERNEL(qgemm_s_b8, 8, 1)
QGEMM_KERNEL(qgemm_s_b4, 4, 1)
QGEMM_KERNEL(qgemm_s_b2, 2, 1)
