// Weight-only quantized GEMV / skinny GEMM for decode (M = 1..8 activation rows):
//   out[m, o] = sum_k x[m, k] * W[o, k],  W packed INT8 / INT4 / INT2 (src/quant/packed.rs).
//
// Layout: `codes` is the packed matrix exactly as the store holds it, viewed as 16-byte chunks:
//   row o has `chunks` = row_stride_bytes / 16 chunks, chunk c of row o at codes[o * chunks + c]
//   holds CPC = 128 / BITS consecutive-in-K codes (k = c * CPC ..). `scales` / `zeros` are f16
//   [N, ng] (zeros unused for INT8). `x16` is the activation converted to f16 by qx_to_f16:
//   [M, xs] with xs = chunks * CPC, zero past K, so the padding codes of a row (partial last
//   group, 16-byte row padding) meet zero activations and no activation at k >= K is read.
//   `out` is f32 [M, N] row-major.
//   `xsum` is f32 [M, xsb], xsb = xs / 32: the sum of each 32-element block of x16 (INT4 / INT2
//   only; qx_to_f16 writes it).
// Launch: grid (ceil(N / (4 * R)), S), block 128 = 4 warps; warp w of block b owns rows
//   (4b + w) * R .. + R (R = 4 for MT <= 2, else 2). Split-K: block column y of S takes chunks
//   y * 32 + lane, + 32 * S, ... of each of its rows (coalesced 512 bytes per warp per row),
//   U = 2 chunks per row per step, so each lane has 2 * R independent 16-byte weight loads in
//   flight (L1 bypassed); x is read through L1 (every warp of the SM reads the same few KB).
//   S = 1 stores the outputs; S > 1 (small grids, chosen in quant.rs) adds them with f32
//   atomics into an `out` that qx_to_f16 zeroed (S = 2 is still deterministic: 0 + a + b).
// Math INT8: per word, each code pair becomes an exact f16x2 with the magic number 0x6400, is
//   dequantized to q * s in f16x2, multiplied into an f16x2 partial sum with x, and every
//   word's partial sum is flushed into the f32 accumulators.
// Math INT4 / INT2 (group-sum): code pairs become exact f16x2 q without per-pair shifts
//   (code_pair_ns: mask in place + one exact fma; one shift per word), f16x2 products q * x
//   are flushed to f32 per word (at most 16 products per f16 partial) into a per-sub-block
//   sum, and each 32-code sub-block (inside one group) adds s * sum(q x) - z * s * sum(x) in
//   f32 once. A warp shuffle reduces each row; lane 0 writes (or adds) it.
// Bounds: rows past N are clamped for loading and never stored; rows m >= M of the MT-wide
//   tile are skipped; group indices are clamped to ng - 1 (INT2 chunks of 64 codes may cover
//   a second group that exists only as padding, where x and xsum are zero).
#include "qcommon.cuh"

#define QGEMV_WARPS 4

__device__ __forceinline__ uint4 ld_stream_q(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/// Accumulates one 16-byte chunk `c` of R rows into acc[R][MT].
template <int BITS, int MT, int R>
__device__ __forceinline__ void qgemv_chunk(const uint4 (&wv)[R], const int (&rows)[R], int c,
                                            const half_bits* __restrict__ scales,
                                            const half_bits* __restrict__ zeros,
                                            const half_bits* __restrict__ x16, int M, int ng,
                                            int group, int xs, float (&acc)[R][MT]) {
    typedef QFmt<BITS> F;
    constexpr int CPC = 128 / BITS;
    // Sub-blocks of at most 32 codes share one group (groups are multiples of 32; INT8
    // groups are multiples of 16 or the whole row, and an INT8 chunk is 16 codes).
    constexpr int SB = CPC < 32 ? CPC : 32;
    constexpr int NS = CPC / SB;
    constexpr int WPS = 4 / NS;  // words per sub-block
    const int k0 = c * CPC;
    unsigned s2[R][NS], nz2[R][NS];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int s = 0; s < NS; s++) {
            const int g = min((k0 + s * SB) / group, ng - 1);
            const size_t pi = (size_t)rows[r] * ng + g;
            group_params<BITS>(scales[pi], BITS == 8 ? (half_bits)0 : zeros[pi], s2[r][s],
                               nz2[r][s]);
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        // x of word j for every m: PER_WORD halves = PAIRS u32.
        unsigned xw[MT][F::PAIRS];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const unsigned* xp =
                reinterpret_cast<const unsigned*>(x16 + (size_t)m * xs + k0 + j * F::PER_WORD);
            if (m < M) {
                if (F::PAIRS == 2) {
                    const uint2 v = *reinterpret_cast<const uint2*>(xp);
                    xw[m][0] = v.x;
                    xw[m][1 % F::PAIRS] = v.y;
                } else {
#pragma unroll
                    for (int q = 0; q < F::PAIRS / 4; q++) {
                        const uint4 v = *reinterpret_cast<const uint4*>(xp + 4 * q);
                        xw[m][(4 * q + 0) % F::PAIRS] = v.x;
                        xw[m][(4 * q + 1) % F::PAIRS] = v.y;
                        xw[m][(4 * q + 2) % F::PAIRS] = v.z;
                        xw[m][(4 * q + 3) % F::PAIRS] = v.w;
                    }
                }
            } else {
#pragma unroll
                for (int q = 0; q < F::PAIRS; q++) xw[m][q] = 0u;
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const unsigned w = (j == 0 ? wv[r].x : j == 1 ? wv[r].y : j == 2 ? wv[r].z : wv[r].w) ^
                               F::FLIP;
            unsigned wd[F::PAIRS];
#pragma unroll
            for (int i = 0; i < F::PAIRS; i++)
                wd[i] = dequant_pair<BITS>(code_pair<BITS>(w, i), s2[r][j / WPS], nz2[r][j / WPS]);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                unsigned h = 0u;
#pragma unroll
                for (int i = 0; i < F::PAIRS; i++) h = hfma2_u(wd[i], xw[m][i], h);
                acc[r][m] += lo_h2f(h) + hi_h2f(h);
            }
        }
    }
}

/// Exact f16x2 codes of pair `i` of an INT4 / INT2 word without a shift for the low pairs: pair
/// i sits at bit p = BITS * i of each half; while p + BITS <= 10 it is masked in place
/// (`1024 + q * 2^p` after OR-ing 0x6400, one lop3) and `v * 2^-p - 2^(10-p)` (one fma with
/// power-of-two constants, exact) gives q; the remaining pairs come from `wh = w >> (BITS * IP)`
/// (one shift per word).
template <int BITS>
__device__ __forceinline__ unsigned code_pair_ns(unsigned w, unsigned wh, int i) {
    constexpr int IP = (10 - BITS) / BITS + 1;  // pairs decoded in place (INT2: 5, INT4: 2)
    const int j = i < IP ? i : i - IP;
    const unsigned src = i < IP ? w : wh;
    const int p = BITS * j;
    const unsigned v = (src & (QFmt<BITS>::PAIR_MASK << p)) | 0x6400u * 0x10001u;
    const unsigned mul = (unsigned)((15 - p) << 10) * 0x10001u;
    const unsigned add = (0x8000u | (unsigned)((25 - p) << 10)) * 0x10001u;
    return hfma2_u(v, mul, add);
}

/// INT4 / INT2 version of qgemv_chunk with the per-group sum trick: per 32-code sub-block (one
/// group: INT4 / INT2 groups are multiples of 32) it accumulates sum(q * x) (f16x2 products of
/// exact codes, flushed to f32 per word) and applies the group once in f32:
/// `s * sum(q x) - z * s * sum(x)`, with sum(x) of the sub-block precomputed by qx_to_f16
/// (`xsum[m * xsb + k / 32]`). The dequantising fma leaves the inner loop.
template <int BITS, int MT, int R>
__device__ __forceinline__ void qgemv_chunk_gs(const uint4 (&wv)[R], const int (&rows)[R], int c,
                                               const half_bits* __restrict__ scales,
                                               const half_bits* __restrict__ zeros,
                                               const half_bits* __restrict__ x16,
                                               const float* __restrict__ xsum, int M, int ng,
                                               int group, int xs, int xsb,
                                               float (&acc)[R][MT]) {
    typedef QFmt<BITS> F;
    constexpr int CPC = 128 / BITS;
    // Sub-blocks of 32 codes per chunk (INT4: 1, INT2: 2). INT8 never takes this path, but the
    // plain `if` in qgemv_step instantiates it anyway: keep its constants well defined.
    constexpr int NS = CPC >= 32 ? CPC / 32 : 1;
    constexpr int WPS = 4 / NS;   // words per sub-block
    constexpr int IP = (10 - BITS) / BITS + 1;
    const int k0 = c * CPC;
#pragma unroll
    for (int s = 0; s < NS; s++) {
        float sf[R], nzf[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int g = min((k0 + s * 32) / group, ng - 1);
            const size_t pi = (size_t)rows[r] * ng + g;
            sf[r] = h2f(scales[pi]);
            nzf[r] = -h2f(zeros[pi]) * sf[r];
        }
        float gq[R][MT];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) gq[r][m] = 0.0f;
#pragma unroll
        for (int jj = 0; jj < WPS; jj++) {
            const int j = s * WPS + jj;
            unsigned xw[MT][F::PAIRS];
#pragma unroll
            for (int m = 0; m < MT; m++) {
                const unsigned* xp = reinterpret_cast<const unsigned*>(
                    x16 + (size_t)m * xs + k0 + j * F::PER_WORD);
                if (m < M) {
#pragma unroll
                    for (int q = 0; q < F::PAIRS / 4; q++) {
                        const uint4 v = *reinterpret_cast<const uint4*>(xp + 4 * q);
                        xw[m][4 * q + 0] = v.x;
                        xw[m][4 * q + 1] = v.y;
                        xw[m][4 * q + 2] = v.z;
                        xw[m][4 * q + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int q = 0; q < F::PAIRS; q++) xw[m][q] = 0u;
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                const unsigned w = j == 0 ? wv[r].x : j == 1 ? wv[r].y : j == 2 ? wv[r].z : wv[r].w;
                const unsigned wh = w >> (BITS * IP);
                unsigned qd[F::PAIRS];
#pragma unroll
                for (int i = 0; i < F::PAIRS; i++) qd[i] = code_pair_ns<BITS>(w, wh, i);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    unsigned h = 0u;
#pragma unroll
                    for (int i = 0; i < F::PAIRS; i++) h = hfma2_u(qd[i], xw[m][i], h);
                    gq[r][m] += lo_h2f(h) + hi_h2f(h);
                }
            }
        }
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const float xsm = m < M ? xsum[(size_t)m * xsb + c * NS + s] : 0.0f;
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][m] += fmaf(sf[r], gq[r][m], nzf[r] * xsm);
        }
    }
}

/// One chunk of R rows: the group-sum path for INT4 / INT2, the per-pair dequant for INT8.
template <int BITS, int MT, int R>
__device__ __forceinline__ void qgemv_step(const uint4 (&wv)[R], const int (&rows)[R], int c,
                                           const half_bits* __restrict__ scales,
                                           const half_bits* __restrict__ zeros,
                                           const half_bits* __restrict__ x16,
                                           const float* __restrict__ xsum, int M, int ng,
                                           int group, int xs, int xsb, float (&acc)[R][MT]) {
    if (BITS == 8)
        qgemv_chunk<BITS, MT, R>(wv, rows, c, scales, zeros, x16, M, ng, group, xs, acc);
    else
        qgemv_chunk_gs<BITS, MT, R>(wv, rows, c, scales, zeros, x16, xsum, M, ng, group, xs, xsb,
                                    acc);
}

template <int BITS, int MT, int R>
__device__ __forceinline__ void qgemv_body(const uint4* __restrict__ codes,
                                           const half_bits* __restrict__ scales,
                                           const half_bits* __restrict__ zeros,
                                           const half_bits* __restrict__ x16,
                                           const float* __restrict__ xsum,
                                           float* __restrict__ out, int N, int M, int chunks,
                                           int ng, int group, int xs, int xsb) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = (blockIdx.x * QGEMV_WARPS + warp) * R;
    if (row0 >= N) return;
    int rows[R];
    const uint4* rp[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        rows[r] = min(row0 + r, N - 1);
        rp[r] = codes + (size_t)rows[r] * chunks;
    }
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;

    // Split-K: block column y = blockIdx.y of S = gridDim.y takes chunks y * 32 + lane,
    // + 32 * S, ...; with S > 1 the partial sums are added atomically into a zeroed `out`.
    const int S = gridDim.y;
    const int stride = 32 * S;
    int c = blockIdx.y * 32 + lane;
    for (; c + stride < chunks; c += 2 * stride) {
        uint4 w0[R], w1[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            w0[r] = ld_stream_q(rp[r] + c);
            w1[r] = ld_stream_q(rp[r] + c + stride);
        }
        qgemv_step<BITS, MT, R>(w0, rows, c, scales, zeros, x16, xsum, M, ng, group, xs, xsb, acc);
        qgemv_step<BITS, MT, R>(w1, rows, c + stride, scales, zeros, x16, xsum, M, ng, group, xs,
                                xsb, acc);
    }
    if (c < chunks) {
        uint4 w0[R];
#pragma unroll
        for (int r = 0; r < R; r++) w0[r] = ld_stream_q(rp[r] + c);
        qgemv_step<BITS, MT, R>(w0, rows, c, scales, zeros, x16, xsum, M, ng, group, xs, xsb, acc);
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int m = 0; m < MT; m++) {
            const float s = warp_sum(acc[r][m]);
            if (lane == 0 && row0 + r < N && m < M) {
                float* o = out + (size_t)m * N + row0 + r;
                if (S == 1)
                    *o = s;
                else
                    atomicAdd(o, s);
            }
        }
    }
}

#define QGEMV_KERNEL(BITS, MT, R)                                                              \
    extern "C" __global__ void __launch_bounds__(QGEMV_WARPS * 32)                             \
        qgemv_b##BITS##_m##MT(const uint4* __restrict__ codes,                                 \
                              const half_bits* __restrict__ scales,                            \
                              const half_bits* __restrict__ zeros,                             \
                              const half_bits* __restrict__ x16,                               \
                              const float* __restrict__ xsum, float* __restrict__ out, int N,  \
                              int M, int chunks, int ng, int group, int xs, int xsb) {         \
        qgemv_body<BITS, MT, R>(codes, scales, zeros, x16, xsum, out, N, M, chunks, ng, group,   \
                                xs, xsb);                                                      \
    }

QGEMV_KERNEL(8, 1, 4)
QGEMV_KERNEL(8, 2, 4)
QGEMV_KERNEL(8, 4, 2)
QGEMV_KERNEL(8, 8, 2)
QGEMV_KERNEL(4, 1, 4)
QGEMV_KERNEL(4, 2, 4)
QGEMV_KERNEL(4, 4, 2)
QGEMV_KERNEL(4, 8, 2)
QGEMV_KERNEL(2, 1, 4)
QGEMV_KERNEL(2, 2, 4)
QGEMV_KERNEL(2, 4, 2)
QGEMV_KERNEL(2, 8, 2)

// Activations f32 [M, K] -> f16 [M, xs] (xs >= K), zero for k >= K (the padding the packed
// rows carry); also xsum[m, b] = sum of the f16-rounded x16[m, 32b .. 32b + 32) (as f32) for
// b < xsb = xs / 32 (the group-sum path of INT4 / INT2), and, when zero_out != 0, zeroes
// out[m, 0 .. N) for the split-K GEMV. Launch: grid (ceil(xs / 256), M), block 256 (whole warps
// reach the shuffle; each warp covers one 32-element sub-block).
extern "C" __global__ void __launch_bounds__(256)
    qx_to_f16(const float* __restrict__ x, half_bits* __restrict__ x16, float* __restrict__ xsum,
              float* __restrict__ out, int K, int xs, int xsb, int N, int zero_out) {
    const int k = blockIdx.x * 256 + threadIdx.x;
    const int m = blockIdx.y;
    const half_bits h = k < K ? f2h(x[(size_t)m * K + k]) : (half_bits)0;
    if (k < xs) x16[(size_t)m * xs + k] = h;
    const float t = warp_sum(h2f(h));
    const int b = k >> 5;
    if ((threadIdx.x & 31) == 0 && b < xsb) xsum[(size_t)m * xsb + b] = t;
    if (zero_out)
        for (int i = k; i < N; i += gridDim.x * 256) out[(size_t)m * N + i] = 0.0f;
}

// Fills n u32 words with a hash of (seed, index): benchmark weights, never zero-heavy.
// Launch: any 1-D grid of 256-thread blocks (grid-stride loop).
extern "C" __global__ void __launch_bounds__(256)
    qfill_words(unsigned* __restrict__ p, unsigned long long n, unsigned seed) {
    for (unsigned long long i = blockIdx.x * 256ull + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * 256ull) {
        unsigned h = (unsigned)i * 0x9e3779b9u ^ seed ^ (unsigned)(i >> 32) * 0x85ebca6bu;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        h *= 0x846ca68bu;
        h ^= h >> 16;
        p[i] = h;
    }
}

// Fills n f16 values uniformly in [lo, hi) from a hash of (seed, index). Launch as qfill_words.
extern "C" __global__ void __launch_bounds__(256)
    qfill_halves(half_bits* __restrict__ p, unsigned long long n, unsigned seed, float lo,
                 float hi) {
    for (unsigned long long i = blockIdx.x * 256ull + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * 256ull) {
        unsigned h = (unsigned)i * 0x9e3779b9u ^ seed;
        h ^= h >> 16;
        h *= 0x7feb352du;
        h ^= h >> 15;
        h *= 0x846ca68bu;
        h ^= h >> 16;
        p[i] = f2h(lo + (hi - lo) * (float)(h >> 8) * (1.0f / 16777216.0f));
    }
}
