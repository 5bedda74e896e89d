// Causal grouped-query prefill attention with tensor cores, FlashAttention-2 style, for head
// dims 64 and 128 (other head dims use attn_split in attention_decode.cu).
//
// Layout: q f32 [rows, n_heads * D] (row r at position pos0 + r); k, v f32 caches
// [max_seq, n_kv_heads * D], keys 0 .. pos0 + rows - 1 valid; out f32 [rows, n_heads * D].
// Query head h uses KV head h / (n_heads / n_kv_heads). Row r attends to keys 0 ..= pos0 + r.
//
// Launch: grid (ceil(rows / BM), n_heads), block 32 * WARPS with BM = 16 * WARPS query rows
// (flash_attn_d{64,128} and _np: WARPS 8; the _bm64 variants: WARPS 4); warp w owns rows
// m0 + 16w .. m0 + 16w + 15. Q (scaled by log2(e)/sqrt(D), rounded to f16) is staged through
// shared memory once and kept as mma A fragments in registers. For each block of 64 keys:
// K is stored [key][D + 8] and V transposed [D][64 + 8] (f16, padded: conflict-free fragment
// loads; in the default kernels the next tile is prefetched into registers during the mma
// work, the _np and _bm64 variants load it after); S = Q K^T by mma.sync.m16n8k16 (fp32 accumulate); causal mask; online softmax in
// the exp2 domain with per-row running max and sum (each row's 64 scores live in the 4 lanes
// of a quad); P is re-packed from the S accumulators straight into A fragments and
// O += P V by mma. Finally O / l is stored. Rows past `rows` and keys past pos0 + rows are
// zero-filled on load and never stored.
#include "common.cuh"

#define FA_BN 64

__device__ __forceinline__ void fa_mma(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D, int WARPS, bool PREFETCH>
__device__ __forceinline__ void flash_body(const float* __restrict__ q,
                                           const float* __restrict__ kc,
                                           const float* __restrict__ vc, float* __restrict__ out,
                                           int rows, int pos0, int n_heads, int n_kv_heads,
                                           float scale_log2, half_bits* ks, half_bits* vt) {
    constexpr int LDK = D + 8;
    constexpr int LDV = FA_BN + 8;
    constexpr int KSTEPS = D / 16;
    constexpr int DT = D / 8;
    constexpr int C4 = D / 4;  // float4 per row
    constexpr int BM = 16 * WARPS;  // query rows per block
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int h = blockIdx.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const int m0 = blockIdx.x * BM;
    const size_t q_dim = (size_t)n_heads * D, kv_dim = (size_t)n_kv_heads * D;
    const int kv_len = pos0 + rows;

    // Q tile -> shared (through the K buffer, 64 rows at a time) -> A fragments.
    unsigned qf[KSTEPS][4];
    for (int hb = 0; hb < BM; hb += FA_BN) {
        for (int idx = threadIdx.x; idx < FA_BN * C4; idx += blockDim.x) {
            const int row = idx / C4, c = (idx % C4) * 4;
            const int gr = m0 + hb + row;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (gr < rows)
                v = *reinterpret_cast<const float4*>(q + (size_t)gr * q_dim + (size_t)h * D + c);
            *reinterpret_cast<uint2*>(ks + row * LDK + c) =
                make_uint2(pack_h2(v.x * scale_log2, v.y * scale_log2),
                           pack_h2(v.z * scale_log2, v.w * scale_log2));
        }
        __syncthreads();
        if (warp * 16 >= hb && warp * 16 < hb + FA_BN) {
            const half_bits* base = ks + (warp * 16 - hb + g) * LDK + 2 * t4;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; kk++) {
                const half_bits* p0 = base + kk * 16;
                const half_bits* p1 = p0 + 8 * LDK;
                qf[kk][0] = *reinterpret_cast<const unsigned*>(p0);
                qf[kk][1] = *reinterpret_cast<const unsigned*>(p1);
                qf[kk][2] = *reinterpret_cast<const unsigned*>(p0 + 8);
                qf[kk][3] = *reinterpret_cast<const unsigned*>(p1 + 8);
            }
        }
        __syncthreads();
    }

    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_a = NEG_INF, m_b = NEG_INF, l_a = 0.0f, l_b = 0.0f;
    const int row_a = m0 + warp * 16 + g, row_b = row_a + 8;
    const int lim_a = pos0 + row_a, lim_b = pos0 + row_b;  // last key each row may see
    const int n_end = pos0 + min(m0 + BM, rows);            // keys this block needs

    // K/V tile staging: fetch() loads a 64-key tile into registers, stash() rounds it to f16
    // into shared memory. With 8 warps the next tile is fetched before the current one is
    // multiplied, so its global loads overlap the mma work.
    constexpr int KI = FA_BN * C4 / (32 * WARPS);        // float4 of K per thread
    constexpr int VI = (FA_BN / 2) * C4 / (32 * WARPS);  // key pairs of V per thread
    float4 kr[KI], va[VI], vb[VI];
    auto fetch = [&](int n0) {
        // K: consecutive threads read consecutive 16-byte chunks of one key row (coalesced).
#pragma unroll
        for (int it = 0; it < KI; it++) {
            const int idx = threadIdx.x + it * 32 * WARPS;
            const int key = idx / C4, c = (idx % C4) * 4;
            const int gk = n0 + key;
            kr[it] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (gk < kv_len)
                kr[it] = *reinterpret_cast<const float4*>(kc + (size_t)gk * kv_dim + (size_t)kvh * D + c);
        }
        // V: a lane takes keys (2kp, 2kp+1) x 4 dims; within a warp 16 key pairs x 2 adjacent
        // 16-byte column chunks, so every 32-byte sector read is used in full.
#pragma unroll
        for (int it = 0; it < VI; it++) {
            const int idx = threadIdx.x + it * 32 * WARPS;
            const int wi = idx >> 5, ln = idx & 31;
            const int k0 = 2 * ((wi & 1) * 16 + (ln & 15));
            const int c = ((wi >> 1) * 2 + (ln >> 4)) * 4;
            const size_t off = (size_t)(n0 + k0) * kv_dim + (size_t)kvh * D + c;
            va[it] = make_float4(0.f, 0.f, 0.f, 0.f);
            vb[it] = va[it];
            if (n0 + k0 < kv_len) va[it] = *reinterpret_cast<const float4*>(vc + off);
            if (n0 + k0 + 1 < kv_len) vb[it] = *reinterpret_cast<const float4*>(vc + off + kv_dim);
        }
    };
    auto stash = [&]() {
#pragma unroll
        for (int it = 0; it < KI; it++) {
            const int idx = threadIdx.x + it * 32 * WARPS;
            const int key = idx / C4, c = (idx % C4) * 4;
            *reinterpret_cast<uint2*>(ks + key * LDK + c) =
                make_uint2(pack_h2(kr[it].x, kr[it].y), pack_h2(kr[it].z, kr[it].w));
        }
        // V transposed to [d][key] with packed key pairs: conflict-free 32-bit stores.
#pragma unroll
        for (int it = 0; it < VI; it++) {
            const int idx = threadIdx.x + it * 32 * WARPS;
            const int wi = idx >> 5, ln = idx & 31;
            const int k0 = 2 * ((wi & 1) * 16 + (ln & 15));
            const int c = ((wi >> 1) * 2 + (ln >> 4)) * 4;
            unsigned* dst = reinterpret_cast<unsigned*>(vt + c * LDV + k0);
            dst[0] = pack_h2(va[it].x, vb[it].x);
            dst[LDV / 2] = pack_h2(va[it].y, vb[it].y);
            dst[LDV] = pack_h2(va[it].z, vb[it].z);
            dst[3 * LDV / 2] = pack_h2(va[it].w, vb[it].w);
        }
    };
    // Without prefetch: load and store item by item (few registers live).
    auto direct = [&](int n0) {
        for (int idx = threadIdx.x; idx < FA_BN * C4; idx += 32 * WARPS) {
            const int key = idx / C4, c = (idx % C4) * 4;
            const int gk = n0 + key;
            float4 k4 = make_float4(0.f, 0.f, 0.f, 0.f);
            if (gk < kv_len)
                k4 = *reinterpret_cast<const float4*>(kc + (size_t)gk * kv_dim + (size_t)kvh * D + c);
            *reinterpret_cast<uint2*>(ks + key * LDK + c) =
                make_uint2(pack_h2(k4.x, k4.y), pack_h2(k4.z, k4.w));
        }
        for (int idx = threadIdx.x; idx < (FA_BN / 2) * C4; idx += 32 * WARPS) {
            const int wi = idx >> 5, ln = idx & 31;
            const int k0 = 2 * ((wi & 1) * 16 + (ln & 15));
            const int c = ((wi >> 1) * 2 + (ln >> 4)) * 4;
            const size_t off = (size_t)(n0 + k0) * kv_dim + (size_t)kvh * D + c;
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
            if (n0 + k0 < kv_len) a = *reinterpret_cast<const float4*>(vc + off);
            if (n0 + k0 + 1 < kv_len) b = *reinterpret_cast<const float4*>(vc + off + kv_dim);
            unsigned* dst = reinterpret_cast<unsigned*>(vt + c * LDV + k0);
            dst[0] = pack_h2(a.x, b.x);
            dst[LDV / 2] = pack_h2(a.y, b.y);
            dst[LDV] = pack_h2(a.z, b.z);
            dst[3 * LDV / 2] = pack_h2(a.w, b.w);
        }
    };
    if (PREFETCH && n_end > 0) {
        fetch(0);
        stash();
        __syncthreads();
    }

    for (int n0 = 0; n0 < n_end; n0 += FA_BN) {
        const bool more = n0 + FA_BN < n_end;
        if (!PREFETCH) {
            direct(n0);
            __syncthreads();
        } else if (more) {
            fetch(n0 + FA_BN);
        }

        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                const half_bits* p = ks + (nt * 8 + g) * LDK + kk * 16 + 2 * t4;
                fa_mma(s[nt], qf[kk], *reinterpret_cast<const unsigned*>(p),
                       *reinterpret_cast<const unsigned*>(p + 8));
            }
        }
        // Causal mask (also masks keys >= kv_len for every valid row).
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            const int key = n0 + nt * 8 + 2 * t4;
            if (key > lim_a) s[nt][0] = NEG_INF;
            if (key + 1 > lim_a) s[nt][1] = NEG_INF;
            if (key > lim_b) s[nt][2] = NEG_INF;
            if (key + 1 > lim_b) s[nt][3] = NEG_INF;
        }
        float mx_a = NEG_INF, mx_b = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
            mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float mu_a = mn_a == NEG_INF ? 0.0f : mn_a;
        const float mu_b = mn_b == NEG_INF ? 0.0f : mn_b;
        const float corr_a = exp2f(m_a - mu_a), corr_b = exp2f(m_b - mu_b);
        float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            s[nt][0] = exp2f(s[nt][0] - mu_a);
            s[nt][1] = exp2f(s[nt][1] - mu_a);
            s[nt][2] = exp2f(s[nt][2] - mu_b);
            s[nt][3] = exp2f(s[nt][3] - mu_b);
            sum_a += s[nt][0] + s[nt][1];
            sum_b += s[nt][2] + s[nt][3];
        }
        l_a = l_a * corr_a + sum_a;
        l_b = l_b * corr_b + sum_b;
        m_a = mn_a;
        m_b = mn_b;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            o[dt][0] *= corr_a;
            o[dt][1] *= corr_a;
            o[dt][2] *= corr_b;
            o[dt][3] *= corr_b;
        }
#pragma unroll
        for (int j = 0; j < FA_BN / 16; j++) {
            unsigned a[4];
            a[0] = pack_h2(s[2 * j][0], s[2 * j][1]);
            a[1] = pack_h2(s[2 * j][2], s[2 * j][3]);
            a[2] = pack_h2(s[2 * j + 1][0], s[2 * j + 1][1]);
            a[3] = pack_h2(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                const half_bits* p = vt + (dt * 8 + g) * LDV + j * 16 + 2 * t4;
                fa_mma(o[dt], a, *reinterpret_cast<const unsigned*>(p),
                       *reinterpret_cast<const unsigned*>(p + 8));
            }
        }
        __syncthreads();
        if (PREFETCH && more) {
            stash();
            __syncthreads();
        }
    }

    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
        const int d = dt * 8 + 2 * t4;
        if (row_a < rows) {
            float* p = out + (size_t)row_a * q_dim + (size_t)h * D + d;
            p[0] = o[dt][0] * inv_a;
            p[1] = o[dt][1] * inv_a;
        }
        if (row_b < rows) {
            float* p = out + (size_t)row_b * q_dim + (size_t)h * D + d;
            p[0] = o[dt][2] * inv_b;
            p[1] = o[dt][3] * inv_b;
        }
    }
}

#define FA_KERNEL(NAME, D, WARPS, PF)                                                         \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                 \
        NAME(const float* __restrict__ q, const float* __restrict__ kc,                        \
             const float* __restrict__ vc, float* __restrict__ out, int rows, int pos0,        \
             int n_heads, int n_kv_heads, float scale_log2) {                                  \
        __shared__ __align__(16) half_bits ks[FA_BN * (D + 8)];                                \
        __shared__ __align__(16) half_bits vt[D * (FA_BN + 8)];                                \
        flash_body<D, WARPS, PF>(q, kc, vc, out, rows, pos0, n_heads, n_kv_heads, scale_log2, ks,  \
                             vt);                                                              \
    }

/// Default: 128 query rows per block (8 warps), next K/V tile prefetched into registers.
FA_KERNEL(flash_attn_d64, 64, 8, true)
FA_KERNEL(flash_attn_d128, 128, 8, true)
/// Variant: 64 query rows per block (4 warps), no prefetch.
FA_KERNEL(flash_attn_d64_bm64, 64, 4, false)
FA_KERNEL(flash_attn_d128_bm64, 128, 4, false)
/// Variant: 128 query rows per block, no prefetch.
FA_KERNEL(flash_attn_d64_np, 64, 8, false)
FA_KERNEL(flash_attn_d128_np, 128, 8, false)
