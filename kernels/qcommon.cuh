// Device helpers shared by the quantized kernels (qgemv.cu, qgemm.cu): packed f16x2 arithmetic
// and the magic-number int -> half conversion of the packed INT8/INT4/INT2 codes.
//
// Packed layout (documented once in src/quant/packed.rs): codes in little-endian u32 words,
// 32/BITS codes per word covering consecutive K, interleaved so that
// `(w >> (BITS * i)) & PAIR_MASK` holds the pair (k_{2i}, k_{2i+1}) in the low bits of the
// two 16-bit halves. OR-ing 0x6400 makes each half exactly 1024 + code (FP16's mantissa step
// is 1 in [1024, 2048)); subtracting 1024 (INT8: 1024 + 128, after `w ^ 0x80808080` turned the
// signed bytes into offset binary) gives the code as an exact half.
#pragma once
#include "common.cuh"

/// f16x2 a - b (round to nearest).
__device__ __forceinline__ unsigned hsub2_u(unsigned a, unsigned b) {
    unsigned r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/// f16x2 a * b (round to nearest).
__device__ __forceinline__ unsigned hmul2_u(unsigned a, unsigned b) {
    unsigned r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

/// f16x2 a * b + c (one rounding).
__device__ __forceinline__ unsigned hfma2_u(unsigned a, unsigned b, unsigned c) {
    unsigned r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

/// Codes per u32 word.
template <int BITS> struct QFmt {
    static constexpr int PER_WORD = 32 / BITS;
    /// Code pairs per word.
    static constexpr int PAIRS = 16 / BITS;
    static constexpr unsigned MASK = (1u << BITS) - 1u;
    static constexpr unsigned PAIR_MASK = MASK | (MASK << 16);
    /// f16x2 bits of the offset to subtract after OR-ing 0x6400: 1024 (INT8: 1024 + 128).
    static constexpr unsigned SUB = BITS == 8 ? 0x64806480u : 0x64006400u;
    /// XOR applied to a word before decoding (two's complement -> offset binary for INT8).
    static constexpr unsigned FLIP = BITS == 8 ? 0x80808080u : 0u;
};

/// Pair `i` of word `w` (already XOR-ed with FLIP) as an exact f16x2 of the two codes (K order:
/// code 2i in the low half).
template <int BITS>
__device__ __forceinline__ unsigned code_pair(unsigned w, int i) {
    const unsigned v = ((w >> (BITS * i)) & QFmt<BITS>::PAIR_MASK) | 0x64006400u;
    return hsub2_u(v, QFmt<BITS>::SUB);
}

/// Broadcasts f16 bits into both halves.
__device__ __forceinline__ unsigned bcast_h2(half_bits h) { return (unsigned)h | ((unsigned)h << 16); }

/// Dequantizes an exact code pair `q2` with the group's broadcast scale `s2` and broadcast
/// `-z * s` (`nzs2`; unused for INT8, which is symmetric): `(q - z) * s` as f16x2.
template <int BITS>
__device__ __forceinline__ unsigned dequant_pair(unsigned q2, unsigned s2, unsigned nzs2) {
    if (BITS == 8) return hmul2_u(q2, s2);
    return hfma2_u(q2, s2, nzs2);
}

/// `(s2, nzs2)` of one group from its f16 scale and zero bits.
template <int BITS>
__device__ __forceinline__ void group_params(half_bits s, half_bits z, unsigned& s2,
                                             unsigned& nzs2) {
    s2 = bcast_h2(s);
    nzs2 = BITS == 8 ? 0u : bcast_h2(f2h(-h2f(z) * h2f(s)));
}
