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
/// scale `d` (0 for an all-zero block, whose codes are then 0).
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        // `as` truncates toward zero (one instruction, where `round` is a library call).
        *o = (v * inv + 0.5f32.copysign(v)).clamp(-127.0, 127.0) as i8;
    }
    d
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
}
