// Embedding gather: out[r, :] = f32(table[tokens[r], :]).
// Layout: table is f16 bits [vocab, dim] row-major; tokens u32 [rows]; out f32 [rows, dim].
// Launch: grid (rows), block 256; each thread strides over the row's `dim` columns.
// Bounds: token ids are validated on the host; columns are guarded by `dim`.
#include "common.cuh"

extern "C" __global__ void embed_f16(const half_bits* __restrict__ table,
                                     const unsigned* __restrict__ tokens,
                                     float* __restrict__ out, int dim) {
    const int r = blockIdx.x;
    const size_t src = (size_t)tokens[r] * dim;
    const size_t dst = (size_t)r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[dst + i] = h2f(table[src + i]);
}
