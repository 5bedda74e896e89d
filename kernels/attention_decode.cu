// Causal grouped-query attention over the KV cache, flash-decoding style (split-K over keys),
// for any head_dim <= 128 and any number of query rows (decode: rows = 1; also the generic
// prefill path).
//
// Layout: q f32 [rows, n_heads * hd]; k, v f32 caches [max_seq, n_kv_heads * hd]; query row r
// sits at position pos0 + r and attends to keys 0 ..= pos0 + r. Query head h uses KV head
// h / group (group = n_heads / n_kv_heads).
//
// attn_split: grid (splits, n_kv_heads * gchunks, rows), block 256 = 8 warps, where
// gchunks = ceil(group / 8). A block handles one KV head, up to 8 of its query heads (so each
// key and value row is read once for the whole group) and the keys [s * chunk, (s+1) * chunk)
// of split s. Warp w takes keys w, w + 8, ... (two per iteration, both loaded before use);
// lane l holds dims l, l+32, l+64, l+96. Each warp
// keeps an online softmax (running max m, sum l, accumulator) in the exp2 domain; the 8 warps
// merge through shared memory and the block writes one partial (m, l, acc[hd]) per query head
// and split to part_ml / part_acc ([rows, n_heads, splits, 2] and [.., hd]). Splits that start
// past the row's last key write m = -inf, l = 0.
//
// attn_combine: grid (rows * n_heads), block 128: merges the splits of one (row, head) and
// writes out[r, h*hd + d] = acc / l.
#include "common.cuh"

#define ATT_WARPS 8
#define ATT_G 8
#define ATT_D 4  // dims per lane: head_dim <= 128

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32)
    attn_split(const float* __restrict__ q, const float* __restrict__ kc,
               const float* __restrict__ vc, float* __restrict__ part_ml,
               float* __restrict__ part_acc, int pos0, int n_heads, int n_kv_heads, int hd,
               int chunk, int splits, float scale_log2) {
    __shared__ float sm[ATT_WARPS][ATT_G];
    __shared__ float sl[ATT_WARPS][ATT_G];
    __shared__ float sacc[ATT_WARPS][ATT_G][128];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int s = blockIdx.x;
    const int group = n_heads / n_kv_heads;
    const int gchunks = (group + ATT_G - 1) / ATT_G;
    const int kvh = blockIdx.y / gchunks;
    const int h0 = kvh * group + (blockIdx.y % gchunks) * ATT_G;
    const int G = min(ATT_G, kvh * group + group - h0);
    const int r = blockIdx.z;
    const int len = pos0 + r + 1;
    const int start = s * chunk;
    const int end = min(len, start + chunk);
    const int kv_dim = n_kv_heads * hd;
    const int q_dim = n_heads * hd;

    float qv[ATT_G][ATT_D], acc[ATT_G][ATT_D], m[ATT_G], l[ATT_G];
#pragma unroll
    for (int j = 0; j < ATT_G; j++) {
        m[j] = NEG_INF;
        l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_D; i++) {
            const int d = lane + 32 * i;
            acc[j][i] = 0.0f;
            qv[j][i] = (j < G && d < hd) ? q[(size_t)r * q_dim + (size_t)(h0 + j) * hd + d] * scale_log2
                                         : 0.0f;
        }
    }

    // One key: scores for the G query heads, then the online-softmax update.
    auto process = [&](const float* kx, const float* vx) {
#pragma unroll
        for (int j = 0; j < ATT_G; j++) {
            if (j < G) {
                float sc = 0.0f;
#pragma unroll
                for (int i = 0; i < ATT_D; i++) sc = fmaf(qv[j][i], kx[i], sc);
                sc = warp_sum(sc);
                const float mn = fmaxf(m[j], sc);
                const float corr = exp2f(m[j] - mn);
                const float p = exp2f(sc - mn);
                l[j] = l[j] * corr + p;
#pragma unroll
                for (int i = 0; i < ATT_D; i++) acc[j][i] = fmaf(acc[j][i], corr, p * vx[i]);
                m[j] = mn;
            }
        }
    };
    // Two keys per iteration (t and t + 8): both rows' loads are in flight before either is used.
    for (int t = start + warp; t < end; t += 2 * ATT_WARPS) {
        const bool two = t + ATT_WARPS < end;  // warp-uniform
        const float* kr0 = kc + (size_t)t * kv_dim + (size_t)kvh * hd;
        const float* vr0 = vc + (size_t)t * kv_dim + (size_t)kvh * hd;
        const size_t step = (size_t)ATT_WARPS * kv_dim;
        float kx0[ATT_D], vx0[ATT_D], kx1[ATT_D], vx1[ATT_D];
#pragma unroll
        for (int i = 0; i < ATT_D; i++) {
            const int d = lane + 32 * i;
            kx0[i] = d < hd ? kr0[d] : 0.0f;
            vx0[i] = d < hd ? vr0[d] : 0.0f;
            kx1[i] = (two && d < hd) ? kr0[step + d] : 0.0f;
            vx1[i] = (two && d < hd) ? vr0[step + d] : 0.0f;
        }
        process(kx0, vx0);
        if (two) process(kx1, vx1);
    }

#pragma unroll
    for (int j = 0; j < ATT_G; j++) {
        if (lane == 0) {
            sm[warp][j] = m[j];
            sl[warp][j] = l[j];
        }
#pragma unroll
        for (int i = 0; i < ATT_D; i++) {
            const int d = lane + 32 * i;
            if (d < 128) sacc[warp][j][d] = acc[j][i];
        }
    }
    __syncthreads();

    // Merge the warps: thread tid handles (j, d) pairs.
    for (int e = threadIdx.x; e < G * hd; e += blockDim.x) {
        const int j = e / hd, d = e % hd;
        float M = NEG_INF;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w][j]);
        float L = 0.0f, A = 0.0f;
        if (M != NEG_INF) {
#pragma unroll
            for (int w = 0; w < ATT_WARPS; w++) {
                const float f = exp2f(sm[w][j] - M);
                L += sl[w][j] * f;
                A += sacc[w][j][d] * f;
            }
        }
        const size_t idx = ((size_t)r * n_heads + h0 + j) * splits + s;
        part_acc[idx * hd + d] = A;
        if (d == 0) {
            part_ml[idx * 2] = M;
            part_ml[idx * 2 + 1] = L;
        }
    }
}

extern "C" __global__ void attn_combine(const float* __restrict__ part_ml,
                                        const float* __restrict__ part_acc,
                                        float* __restrict__ out, int n_heads, int hd,
                                        int splits) {
    const int rh = blockIdx.x;  // r * n_heads + h
    const size_t base = (size_t)rh * splits;
    float M = NEG_INF;
    for (int s = 0; s < splits; s++) M = fmaxf(M, part_ml[(base + s) * 2]);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float L = 0.0f, A = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float ms = part_ml[(base + s) * 2];
            if (ms == NEG_INF) continue;
            const float f = exp2f(ms - M);
            L += part_ml[(base + s) * 2 + 1] * f;
            A += part_acc[(base + s) * hd + d] * f;
        }
        out[(size_t)rh * hd + d] = A / L;
    }
}
