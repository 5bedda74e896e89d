//! Activations quantized to int8 for the integer (VNNI) products of [`super::qgemv_vnni`].
//!
//! **Blocks.** Each input row is cut into blocks of [`QBLOCK`] consecutive K values; block `b`
//! has one f32 scale `d_b = max|x| / 127` and codes `xq_k = round(x_k / d_b)` in
//! `[-127, 127]` (llama.cpp's Q8_0 rule, rounding half away from zero), so `x_k ≈ d_b * xq_k` with an error of at most
//! `d_b / 2`. A weight word (4 INT8, 8 INT4 or 16 INT2 codes, aligned in K) never straddles a
//! block, so each word of a weight row sees one block scale.
//!
//! **Layout for one matrix.** The codes are permuted once per call into the order the weight
//! bytes present them (as `qgemv::permute_input` does for f32), in 64-byte chunks of
//! a weight row (16 words, one AVX-512 vector): for chunk `c`, sub-position `t` (0..8/BITS) and
//! byte `p` (0..64), `xq[(c * nsub + t) * 64 + p]` is the code at the K index of sub-position
//! `t` of byte `p % 4` of word `16 c + p / 4`, or 0 past the row's real width. Per word
//! `w = 16 c + l` the tables hold the block scale `dw[w]`, and (INT8 only) `corr[w] = -128 *
//! sum of the word's four codes`, which cancels the `+128` that makes signed INT8 weights
//! unsigned for `vpdpbusd` (u8 x s8); (INT4/INT2 only) `xsum[w] = sum of the word's codes`
//! (exact in f32), for the zero-point term `z_g * xsum[w]` taken off each word's integer sum.

use super::qgemv::code_of_slot;
use crate::quant::Packed;

/// K values per activation block (one f32 scale each).
pub const QBLOCK: usize = 32;

/// Bytes (and so int8 lanes) per weight chunk: one 512-bit vector, 16 words.
pub const CHUNK: usize = 64;

/// Quantizes one block of at most [`QBLOCK`] values into `q` (same length) and returns its
/// scale `d` (0 for an all-zero block, whose codes are then 0). Whole blocks of finite values
/// take an AVX-512 BW path where the CPU has it, with the same bits.
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_block_summed(x, q).0
}

/// [`quantize_block`], also returning the sum of the block's codes (exact in `i32`).
#[inline]
pub fn quantize_block_summed(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if x.len() == QBLOCK && q.len() == QBLOCK && avx512bw() {
        let (mut d, mut sum) = ([0.0f32], [0i32]);
        // SAFETY: the CPU has AVX-512 F/BW; both slices hold one whole block.
        unsafe { quantize_blocks_avx512(x, q, &mut d, &mut sum) };
        return (d[0], sum[0]);
    }
    let d = quantize_block_scalar(x, q);
    (d, q.iter().map(|&v| i32::from(v)).sum())
}

/// Quantizes `x` block by block ([`quantize_block`]'s rule): the codes into `q` (as long as
/// `x`), each block's scale into `d` and the sum of its codes into `sums` (one per block,
/// `x.len().div_ceil(QBLOCK)` each). Where the CPU has AVX-512 BW, the whole blocks are done
/// sixteen at a time (vector divisions for their scales), with the same bits.
///
/// # Panics
/// When `q`, `d` or `sums` is shorter than that.
pub fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
    let n = x.len().div_ceil(QBLOCK);
    assert!(q.len() >= x.len() && d.len() >= n && sums.len() >= n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512bw() {
        done = x.len() / QBLOCK;
        // SAFETY: the CPU has AVX-512 F/BW; `done` whole blocks of `x` and `q`, and `done`
        // scales and sums, are in bounds (asserted above).
        unsafe { quantize_blocks_avx512(x, q, &mut d[..done], &mut sums[..done]) };
    }
    for b in done..n {
        let end = ((b + 1) * QBLOCK).min(x.len());
        (d[b], sums[b]) = quantize_block_summed(&x[b * QBLOCK..end], &mut q[b * QBLOCK..end]);
    }
}

/// [`quantize_block`]'s rule in portable code: the definition the SIMD path matches.
fn quantize_block_scalar(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (d, inv) = scale_of(amax);
    for (o, &v) in q.iter_mut().zip(x) {
        // `as` truncates toward zero (one instruction, where `round` is a library call).
        *o = (v * inv + 0.5f32.copysign(v)).clamp(-127.0, 127.0) as i8;
    }
    d
}

/// The block scale `d = amax / 127` and its inverse (0 for an all-zero block).
fn scale_of(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// True when the CPU has AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
fn avx512bw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

/// The first `d.len()` whole blocks of `x` for [`quantize_blocks`] (and for one block,
/// [`quantize_block_summed`]), sixteen at a time: each block's largest magnitude, then the
/// sixteen scales and inverses in two vector divisions (IEEE division, so the scalar rule's
/// bits; one division chain per block was what bound a block-at-a-time loop), then each
/// block's codes by the scalar rule's operations in its order (an unfused multiply and add of
/// the signed half, truncation, a clamp to +-127) and their sum. A block with a NaN, an
/// infinity or an overflowing inverse takes the portable rule.
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `x` and `q` must hold `d.len()` whole blocks, `sums`
/// as many values as `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_blocks_avx512(x: &[f32], q: &mut [i8], d: &mut [f32], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    let n = d.len();
    debug_assert!(x.len() >= n * QBLOCK && q.len() >= n * QBLOCK && sums.len() >= n);
    let sign = _mm512_set1_epi32(i32::MIN);
    let half = _mm512_set1_epi32(0.5f32.to_bits() as i32);
    let (lim_hi, lim_lo) = (_mm512_set1_epi32(127), _mm512_set1_epi32(-127));
    let mut b0 = 0;
    while b0 < n {
        let m = 16.min(n - b0);
        let (mut amax, mut nan) = ([0.0f32; 16], 0u32);
        for (i, a) in amax.iter_mut().enumerate().take(m) {
            let p = x.as_ptr().add((b0 + i) * QBLOCK);
            let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            *a = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            // `max` drops a NaN lane, so NaNs are looked for apart.
            nan |= u32::from(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(lo, hi) != 0) << i;
        }
        let va = _mm512_loadu_ps(amax.as_ptr());
        let vd = _mm512_div_ps(va, _mm512_set1_ps(127.0));
        let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(vd, _mm512_setzero_ps());
        let vinv = _mm512_maskz_div_ps(positive, _mm512_set1_ps(1.0), vd);
        let (mut dd, mut inv) = ([0.0f32; 16], [0.0f32; 16]);
        _mm512_storeu_ps(dd.as_mut_ptr(), vd);
        _mm512_storeu_ps(inv.as_mut_ptr(), vinv);
        for i in 0..m {
            let b = b0 + i;
            let (xb, qb) = (
                &x[b * QBLOCK..(b + 1) * QBLOCK],
                &mut q[b * QBLOCK..(b + 1) * QBLOCK],
            );
            if nan >> i & 1 == 1 || !(amax[i] < f32::INFINITY && inv[i] < f32::INFINITY) {
                d[b] = quantize_block_scalar(xb, qb);
                sums[b] = qb.iter().map(|&v| i32::from(v)).sum();
                continue;
            }
            let vinv = _mm512_set1_ps(inv[i]);
            let code = |v: __m512| {
                let signed_half = _mm512_castsi512_ps(_mm512_or_si512(
                    _mm512_and_si512(_mm512_castps_si512(v), sign),
                    half,
                ));
                let y = _mm512_add_ps(_mm512_mul_ps(v, vinv), signed_half);
                _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(y), lim_hi), lim_lo)
            };
            let (c_lo, c_hi) = (
                code(_mm512_loadu_ps(xb.as_ptr())),
                code(_mm512_loadu_ps(xb.as_ptr().add(16))),
            );
            _mm_storeu_si128(qb.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(c_lo));
            _mm_storeu_si128(
                qb.as_mut_ptr().add(16) as *mut __m128i,
                _mm512_cvtepi32_epi8(c_hi),
            );
            d[b] = dd[i];
            sums[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(c_lo, c_hi));
        }
        b0 += m;
    }
}

/// Quantizes a whole row block by block into `q` and `d` (one scale per [`QBLOCK`]).
pub fn quantize_row(x: &[f32], q: &mut Vec<i8>, d: &mut Vec<f32>) {
    q.clear();
    q.resize(x.len(), 0);
    d.clear();
    for (xb, qb) in x.chunks(QBLOCK).zip(q.chunks_mut(QBLOCK)) {
        d.push(quantize_block(xb, qb));
    }
}

/// Several input rows quantized and permuted for one packed matrix (module docs).
#[derive(Debug, Default)]
pub struct QuantizedInput {
    /// Input rows held.
    pub rows: usize,
    /// 64-byte chunks per weight row.
    pub chunks: usize,
    /// Sub-positions per byte (`8 / BITS`).
    pub nsub: usize,
    /// Permuted codes, `[rows][chunks * nsub * 64]`.
    pub xq: Vec<i8>,
    /// Block scale per weight word, `[rows][chunks * 16]` (0 past the real width).
    pub dw: Vec<f32>,
    /// INT8: `-128 * sum of the word's codes`, `[rows][chunks * 16]`; empty otherwise.
    pub corr: Vec<i32>,
    /// INT4/INT2: sum of each word's codes, `[rows][chunks * 16]`; empty for INT8.
    pub xsum: Vec<f32>,
    /// K index of every permuted byte (`u32::MAX` past the real width), kept for reuse.
    kmap: Vec<u32>,
    /// One row's codes and block scales before the permutation, kept for reuse.
    row_q: Vec<i8>,
    row_d: Vec<f32>,
}

impl QuantizedInput {
    /// Quantizes `rows` rows of `x` (`[rows, in]`) for the matrix `m`, reusing the buffers.
    pub fn fill<const BITS: u32>(&mut self, m: &Packed<BITS>, x: &[f32], rows: usize) {
        let (_, n_in) = m.dims();
        let nsub = (8 / BITS) as usize;
        let per_word = (32 / BITS) as usize;
        let words = m.row_words();
        let chunks = words.div_ceil(16);
        self.rows = rows;
        self.chunks = chunks;
        self.nsub = nsub;
        // K index of every permuted byte (u32::MAX past the row's real width).
        let per_row = chunks * nsub * CHUNK;
        let mut kmap = std::mem::take(&mut self.kmap);
        kmap.clear();
        kmap.resize(per_row, u32::MAX);
        for c in 0..chunks {
            for t in 0..nsub {
                for p in 0..CHUNK {
                    let word = 16 * c + p / 4;
                    let k = word * per_word + code_of_slot(BITS, nsub * (p % 4) + t);
                    if k < n_in {
                        kmap[(c * nsub + t) * CHUNK + p] = k as u32;
                    }
                }
            }
        }
        self.xq.clear();
        self.xq.resize(rows * per_row, 0);
        self.dw.clear();
        self.dw.resize(rows * chunks * 16, 0.0);
        self.corr.clear();
        self.xsum.clear();
        if BITS == 8 {
            self.corr.resize(rows * chunks * 16, 0);
        } else {
            self.xsum.resize(rows * chunks * 16, 0.0);
        }
        let (mut q, mut d) = (
            std::mem::take(&mut self.row_q),
            std::mem::take(&mut self.row_d),
        );
        for r in 0..rows {
            quantize_row(&x[r * n_in..(r + 1) * n_in], &mut q, &mut d);
            let xq = &mut self.xq[r * per_row..(r + 1) * per_row];
            for (o, &k) in xq.iter_mut().zip(&kmap) {
                if k != u32::MAX {
                    *o = q[k as usize];
                }
            }
            for w in 0..words.min(n_in.div_ceil(per_word)) {
                let k0 = w * per_word;
                self.dw[r * chunks * 16 + w] = d[k0 / QBLOCK];
                let s: i32 = q[k0..(k0 + per_word).min(n_in)]
                    .iter()
                    .map(|&v| v as i32)
                    .sum();
                if BITS == 8 {
                    self.corr[r * chunks * 16 + w] = -128 * s;
                } else {
                    self.xsum[r * chunks * 16 + w] = s as f32;
                }
            }
        }
        (self.kmap, self.row_q, self.row_d) = (kmap, q, d);
    }

    /// Row `i`'s permuted codes.
    pub fn xq_row(&self, i: usize) -> &[i8] {
        let n = self.chunks * self.nsub * CHUNK;
        &self.xq[i * n..(i + 1) * n]
    }

    /// Row `i`'s per-word block scales.
    pub fn dw_row(&self, i: usize) -> &[f32] {
        &self.dw[i * self.chunks * 16..(i + 1) * self.chunks * 16]
    }

    /// Row `i`'s per-word INT8 corrections (empty for INT4/INT2).
    pub fn corr_row(&self, i: usize) -> &[i32] {
        if self.corr.is_empty() {
            &[]
        } else {
            &self.corr[i * self.chunks * 16..(i + 1) * self.chunks * 16]
        }
    }

    /// Row `i`'s per-word code sums (empty for INT8).
    pub fn xsum_row(&self, i: usize) -> &[f32] {
        if self.xsum.is_empty() {
            &[]
        } else {
            &self.xsum[i * self.chunks * 16..(i + 1) * self.chunks * 16]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_codes_round_to_nearest_within_half_a_step() {
        let x: Vec<f32> = (0..45)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.13)
            .collect();
        let (mut q, mut d) = (Vec::new(), Vec::new());
        quantize_row(&x, &mut q, &mut d);
        assert_eq!(d.len(), 2);
        for (k, (&v, &c)) in x.iter().zip(&q).enumerate() {
            let s = d[k / QBLOCK];
            assert!((v - s * c as f32).abs() <= s / 2.0 * 1.0001, "k {k}");
        }
        // The largest magnitude of each block maps to +-127.
        assert_eq!(q[..32].iter().map(|v| v.unsigned_abs()).max(), Some(127));
        let mut z = [1i8; 4];
        assert_eq!(quantize_block(&[0.0; 4], &mut z), 0.0);
        assert_eq!(z, [0; 4]);
    }

    /// Whole blocks (the SIMD path where the CPU has it) give the portable rule's bits: ties
    /// at half a step, signed zeros, values at and past +-127 steps, tiny and huge scales,
    /// and the blocks the SIMD path hands back (NaN, infinity, a scale whose inverse
    /// overflows).
    #[test]
    fn whole_blocks_match_the_portable_rule_bit_for_bit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut blocks: Vec<[f32; QBLOCK]> = Vec::new();
        for scale in [1e-40f32, 1e-30, 1e-3, 1.0, 7.5, 1e30, f32::MAX] {
            for _ in 0..40 {
                let mut b = [0.0f32; QBLOCK];
                for v in b.iter_mut() {
                    *v = ((next() % 2001) as f32 - 1000.0) / 1000.0 * scale;
                }
                blocks.push(b);
            }
        }
        // Exact ties: amax 127 makes the step 1, so k + 0.5 sits halfway between codes.
        let mut ties = [0.0f32; QBLOCK];
        for (i, v) in ties.iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        ties[31] = 127.0;
        blocks.push(ties);
        let mut zeros = [0.0f32; QBLOCK];
        zeros[3] = -0.0;
        blocks.push(zeros);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut b = [1.0f32; QBLOCK];
            b[7] = bad;
            blocks.push(b);
        }
        for b in &blocks {
            let (mut fast, mut slow) = ([0i8; QBLOCK], [0i8; QBLOCK]);
            let (d_fast, sum) = quantize_block_summed(b, &mut fast);
            let d_slow = quantize_block_scalar(b, &mut slow);
            assert_eq!(d_fast.to_bits(), d_slow.to_bits(), "scale of {b:?}");
            assert_eq!(fast, slow, "codes of {b:?}");
            assert_eq!(sum, slow.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        // The same blocks as one row (more than sixteen, so several vector batches, and a
        // partial block at the end) through `quantize_blocks`.
        let mut row: Vec<f32> = blocks.iter().flatten().copied().collect();
        row.extend([0.25f32, -3.0, 1.5]);
        let n = row.len().div_ceil(QBLOCK);
        let (mut q, mut d, mut sums) = (vec![0i8; row.len()], vec![0.0f32; n], vec![0i32; n]);
        quantize_blocks(&row, &mut q, &mut d, &mut sums);
        for (b, xb) in row.chunks(QBLOCK).enumerate() {
            let mut slow = vec![0i8; xb.len()];
            let d_slow = quantize_block_scalar(xb, &mut slow);
            assert_eq!(d[b].to_bits(), d_slow.to_bits(), "row block {b}");
            assert_eq!(
                &q[b * QBLOCK..b * QBLOCK + xb.len()],
                &slow[..],
                "row block {b}"
            );
            assert_eq!(sums[b], slow.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
    }
}
