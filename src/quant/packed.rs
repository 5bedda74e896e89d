//! The packed INT8 / INT4 / INT2 weight formats: one generic container, [`Packed<BITS>`].
//!
//! # Layout (the one place it is documented)
//!
//! A matrix is `[out, in]` row-major (one row per output feature, `in` = the reduction dim K).
//! Every row is cut into `n_groups = ceil(in / group)` groups of `group` consecutive-in-K
//! weights; each group has one FP16 scale `s` and (INT4/INT2 only) one FP16 zero point `z`:
//!
//! * INT8: symmetric, signed two's-complement codes `q` in `[-127, 127]`, `w ≈ q * s`
//!   (no zero point). `group` is any multiple of 16, or `in` itself ("per output channel").
//! * INT4: asymmetric, unsigned codes `q` in `[0, 15]`, `w ≈ (q - z) * s`; `group` is a
//!   multiple of 32 (32/64/128; default 128).
//! * INT2: asymmetric, unsigned codes `q` in `[0, 3]`, `w ≈ (q - z) * s`; `group` is a
//!   multiple of 32 (32/64; default 64).
//!
//! For INT8 and INT4, `s` and `z` are stored as FP16; `z` is a real number (not necessarily
//! an integer), so error-minimising quantizers may move it freely. INT2 stores them in the
//! compact code form below. Per-group parameters are row-major `[out, n_groups]`: those of
//! row `r`, group `g` are at index `r * n_groups + g`.
//!
//! **INT2 parameters.** Two FP16 values per group of 64 would cost 0.5 bits per weight, a
//! quarter of the 2-bit payload; the format instead stores, per row, one FP16 super-scale
//! `S_r` (the row's largest group scale) and, per group, a u8 scale code `c` and a 4-bit zero
//! code `zc`, decoded as
//!
//! ```text
//! s = f16(S_r * 2^(-c / 32))      c in 0..=255, zc in 0..=15
//! z = zc / 4                      (z in [0, 3.75], in units of the quantisation step)
//! ```
//!
//! Why: group scales within a row vary over a few octaves at most, and the quantisation
//! error of a 2-bit group is ~29% of its step, so a log grid of 32 steps per octave (1.1%
//! maximum relative error) over 8 octaves loses nothing measurable, while smaller scales
//! (groups of near-zero weights) clamp to `c = 255`. An asymmetric 2-bit group's zero lies
//! in `[0, 3]` (the range of the four levels); a step of 0.25 keeps the offset error at most
//! an eighth of a step, well under the rounding error, and represents 1.5 (the zero of a
//! symmetric group) exactly, which a step of 0.2 over `[0, 3]` did not: measured on
//! stories260K, GPTQ's INT2 KL is 1.82 with quarter steps against 1.92 with fifths. Stored: scale codes `[out, n_groups]`
//! u8, zero codes two per byte `[out, ceil(n_groups / 2)]` (even group in the low nibble,
//! an unused last high nibble is 0), super-scales `[out]` FP16: at group 64 that is
//! (128 + 8 + 4) / 64 = 2.1875 bits per weight plus 16 bits per row (2.19 at Llama-2-7B
//! shape), against 2.5 with FP16 pairs. `2^(-c/32)` is built from correctly rounded square
//! roots and products, so every host decodes the same bits. In memory a [`Packed<2>`] keeps
//! the codes ([`Packed::int2_params`], the source of truth) *and* their decoded FP16 scales
//! and zeros, which the CPU kernels and the CUDA upload consume exactly as for INT4. The
//! quantizers snap `(s, z)` to this grid before choosing codes, so the codes are optimal
//! for the parameters actually stored (`super::int2_params` is the codec).
//!
//! **Codes** are packed into little-endian `u32` words, `32 / BITS` codes per word (4 INT8,
//! 8 INT4, 16 INT2), covering consecutive K. Inside a word the codes are *interleaved*: the
//! even-indexed codes of the word fill the low 16 bits and the odd-indexed ones the high 16
//! bits, each half in increasing order. Code `j` of a word (`j = k % (32/BITS)`) sits at slot
//! `(j % 2) * (16 / BITS) + j / 2`, i.e. at bit `BITS * slot`:
//!
//! ```text
//! INT4 word, nibble slots 7..0 (bit 31 on the left):  k7 k5 k3 k1 | k6 k4 k2 k0
//! INT2 word, 2-bit slots 15..0:  k15 k13 .. k3 k1 | k14 k12 .. k2 k0
//! INT8 word, byte slots 3..0:    k3 k1 | k2 k0
//! ```
//!
//! Why: a GPU converts two codes to two halves with one mask and one OR. For INT4,
//! `(w >> 4*i) & 0x000f000f` (i = 0..3) yields the pair `(k_{2i}, k_{2i+1})` in the low bits of
//! both 16-bit halves; OR-ing `0x64006400` makes the halves `1024 + q` exactly (FP16's mantissa
//! step is 1 in [1024, 2048)), and one `__hsub2` with `1024 + z` (or an `__hfma2` with the
//! scale) gives `(q - z)` for two weights at once, in K order; the four shifts (or masks
//! `0x000f000f << 4i` with a multiply by `1/16^i`) cover the eight codes with a `lop3` each.
//! This is the FasterTransformer/AWQ "0,2,4,6,1,3,5,7" nibble order. INT2 is the same trick
//! with `(w >> 2*i) & 0x00030003`, i = 0..7. INT8 uses `(w >> 8*i) & 0x00ff00ff`, i = 0..1,
//! after `w ^ 0x80808080` turns two's complement into offset binary (`1024 + 128 + q`).
//!
//! **Rows** are padded so each row starts 16-byte aligned: the row stride is
//! `round_up(n_groups * group * BITS / 8, 16)` bytes. A thread's 16-byte load (`uint4`) of a
//! row therefore returns 32 INT4 (64 INT2, 16 INT8) consecutive-in-K weights of that row, and
//! never straddles two rows. Since INT4/INT2 groups are multiples of 32 codes, a 16-byte INT4
//! load lies inside one group (an INT2 load covers one group of 64 or two of 32).
//!
//! **Partial last group**: when `in` is not a multiple of `group` (stories260K's 172), the last
//! group is padded with zero *weights* up to `group` (and the row up to the 16-byte stride);
//! padded slots hold the code that encodes 0.0 under that group's scale and zero (INT8: 0;
//! INT4/INT2: `clamp(round(z))`). The scale and zero of a partial group are fitted on its real
//! weights only. Kernels must still read no activation at `k >= in` (bound the loop, or feed
//! zeros): the padding codes need not dequantize to exactly zero.

use super::int2_params::{param_byte_len, Int2Params};
use crate::{Error, Result};
use half::f16;
use std::sync::Arc;

/// Bytes one row occupies, padded to 16 bytes.
pub fn row_stride_bytes(bits: u32, inp: usize, group: usize) -> usize {
    let n_groups = inp.div_ceil(group.max(1));
    (n_groups * group * bits as usize / 8).div_ceil(16) * 16
}

/// Bytes a packed `[out, inp]` matrix occupies as stored: codes plus FP16 scales (INT8),
/// FP16 scales and zeros (INT4), or the compact INT2 parameters (u8 scale codes, 4-bit zero
/// codes, one FP16 super-scale per row).
pub fn packed_byte_len(bits: u32, out: usize, inp: usize, group: usize) -> usize {
    let n_groups = inp.div_ceil(group.max(1));
    let params = match bits {
        8 => out * n_groups * 2,
        2 => param_byte_len(out, n_groups),
        _ => out * n_groups * 4,
    };
    out * row_stride_bytes(bits, inp, group) + params
}

/// Slot (in units of `BITS`) of code `j` inside its word; see the module docs.
#[inline(always)]
pub const fn slot(bits: u32, j: usize) -> usize {
    let half = (16 / bits) as usize;
    (j % 2) * half + j / 2
}

/// A packed `[out, in]` matrix of `BITS`-bit codes with per-group FP16 scales (and zeros).
/// Cloning is cheap: the buffers are shared.
#[derive(Clone, Debug)]
pub struct Packed<const BITS: u32> {
    out: usize,
    inp: usize,
    group: usize,
    words: Arc<Vec<u32>>,
    scales: Arc<Vec<f16>>,
    zeros: Arc<Vec<f16>>,
    /// INT2 only: the compact parameters `scales`/`zeros` are the decode of.
    int2: Option<Arc<Int2Params>>,
}

/// INT8 symmetric weights.
pub type Int8Matrix = Packed<8>;
/// INT4 asymmetric group-wise weights.
pub type Int4Matrix = Packed<4>;
/// INT2 asymmetric group-wise weights.
pub type Int2Matrix = Packed<2>;

impl<const BITS: u32> Packed<BITS> {
    /// Codes per `u32` word.
    pub const PER_WORD: usize = (32 / BITS) as usize;
    /// Largest unsigned code (`2^BITS - 1`); INT8 codes are signed in `[-127, 127]`.
    pub const MAX_CODE: u32 = (1u32 << BITS) - 1;
    /// Whether the format carries zero points.
    pub const HAS_ZEROS: bool = BITS < 8;

    /// Checks that `group` is legal for this format and `in`, naming the problem.
    pub fn check_group(inp: usize, group: usize) -> Result<()> {
        let ok = match BITS {
            8 => group == inp || (group > 0 && group % 16 == 0),
            4 | 2 => group > 0 && group % 32 == 0,
            _ => false,
        };
        if !ok || inp == 0 {
            let rule = if BITS == 8 {
                "a multiple of 16 or the whole row"
            } else {
                "a multiple of 32 (32, 64, 128)"
            };
            return Err(Error::invalid(format!(
                "INT{BITS} group size {group} for rows of {inp} is not {rule}"
            )));
        }
        Ok(())
    }

    /// Packs codes (`[out, in]` row-major, INT8 codes as `i32` in `[-127, 127]`, others in
    /// `[0, MAX_CODE]`) with per-group scales and zeros (`[out, n_groups]`; zeros empty for
    /// INT8). `pad_codes[r * n_groups + n_groups - 1]` is the code written into the padding of
    /// row `r`'s last group (see the module docs). For INT2 the scales and zeros must lie on
    /// the compact grid (each row's largest scale as its super-scale) and are encoded
    /// losslessly; quantizers use [`Packed::pack_int2`] with the codes directly.
    pub fn pack(
        out: usize,
        inp: usize,
        group: usize,
        codes: &[i32],
        scales: Vec<f16>,
        zeros: Vec<f16>,
    ) -> Result<Self> {
        Self::check_param_lens(out, inp, group, scales.len(), zeros.len())?;
        let int2 = Self::int2_from_decoded(inp, group, &scales, &zeros)?;
        let words = Self::pack_words(out, inp, group, codes, &zeros)?;
        Ok(Self::assemble(out, inp, group, words, scales, zeros, int2))
    }

    /// Packs INT2 codes (`[out, in]`, each in `[0, 3]`) with their compact group parameters
    /// (see "INT2 parameters" in the module docs); the FP16 scales and zeros kept beside them
    /// are exactly `params.decode()`. An error for any other `BITS`.
    pub fn pack_int2(
        out: usize,
        inp: usize,
        group: usize,
        codes: &[i32],
        params: Int2Params,
    ) -> Result<Self> {
        let (scales, zeros) = Self::decode_int2(out, inp, group, &params)?;
        let words = Self::pack_words(out, inp, group, codes, &zeros)?;
        Ok(Self::assemble(
            out,
            inp,
            group,
            words,
            scales,
            zeros,
            Some(params),
        ))
    }

    /// Rebuilds a matrix from stored parts (codes already packed), checking every length.
    /// INT2 scales and zeros must lie on the compact grid, as for [`Packed::pack`].
    pub fn from_parts(
        out: usize,
        inp: usize,
        group: usize,
        words: Vec<u32>,
        scales: Vec<f16>,
        zeros: Vec<f16>,
    ) -> Result<Self> {
        Self::check_param_lens(out, inp, group, scales.len(), zeros.len())?;
        Self::check_words(out, inp, group, words.len())?;
        let int2 = Self::int2_from_decoded(inp, group, &scales, &zeros)?;
        Ok(Self::assemble(out, inp, group, words, scales, zeros, int2))
    }

    /// Rebuilds an INT2 matrix from its packed code words and compact parameters (what the
    /// store holds). An error for any other `BITS`.
    pub fn from_int2_parts(
        out: usize,
        inp: usize,
        group: usize,
        words: Vec<u32>,
        params: Int2Params,
    ) -> Result<Self> {
        let (scales, zeros) = Self::decode_int2(out, inp, group, &params)?;
        Self::check_words(out, inp, group, words.len())?;
        Ok(Self::assemble(
            out,
            inp,
            group,
            words,
            scales,
            zeros,
            Some(params),
        ))
    }

    fn assemble(
        out: usize,
        inp: usize,
        group: usize,
        words: Vec<u32>,
        scales: Vec<f16>,
        zeros: Vec<f16>,
        int2: Option<Int2Params>,
    ) -> Self {
        Packed {
            out,
            inp,
            group,
            words: Arc::new(words),
            scales: Arc::new(scales),
            zeros: Arc::new(zeros),
            int2: int2.map(Arc::new),
        }
    }

    /// Checks the group and the scale/zero counts of an `[out, inp]` matrix.
    fn check_param_lens(
        out: usize,
        inp: usize,
        group: usize,
        n_scales: usize,
        n_zeros: usize,
    ) -> Result<()> {
        Self::check_group(inp, group)?;
        let ng = inp.div_ceil(group);
        let want_zeros = if Self::HAS_ZEROS { out * ng } else { 0 };
        if n_scales != out * ng || n_zeros != want_zeros {
            return Err(Error::invalid(format!(
                "INT{BITS} [{out}, {inp}] group {group} needs {} scales and {} zeros; got {n_scales}, {n_zeros}",
                out * ng,
                want_zeros,
            )));
        }
        Ok(())
    }

    fn check_words(out: usize, inp: usize, group: usize, n_words: usize) -> Result<()> {
        let want = out * row_stride_bytes(BITS, inp, group) / 4;
        if n_words != want {
            return Err(Error::invalid(format!(
                "INT{BITS} [{out}, {inp}] group {group} needs {want} code words; got {n_words}"
            )));
        }
        Ok(())
    }

    /// The compact INT2 form of decoded scales and zeros (`None` for INT8/INT4).
    fn int2_from_decoded(
        inp: usize,
        group: usize,
        scales: &[f16],
        zeros: &[f16],
    ) -> Result<Option<Int2Params>> {
        if BITS != 2 {
            return Ok(None);
        }
        Int2Params::from_decoded(inp.div_ceil(group), scales, zeros).map(Some)
    }

    /// Checks that compact parameters fit an `[out, inp]` INT2 matrix and decodes them.
    fn decode_int2(
        out: usize,
        inp: usize,
        group: usize,
        params: &Int2Params,
    ) -> Result<(Vec<f16>, Vec<f16>)> {
        if BITS != 2 {
            return Err(Error::invalid(format!(
                "compact INT2 parameters given for an INT{BITS} matrix"
            )));
        }
        Self::check_group(inp, group)?;
        let ng = inp.div_ceil(group);
        if params.rows() != out || params.n_groups() != ng {
            return Err(Error::invalid(format!(
                "INT2 [{out}, {inp}] group {group} needs parameters for {out} rows x {ng} groups; got {} x {}",
                params.rows(),
                params.n_groups()
            )));
        }
        Ok(params.decode())
    }

    /// Packs checked codes into row-padded words (the padding code comes from `zeros`).
    fn pack_words(
        out: usize,
        inp: usize,
        group: usize,
        codes: &[i32],
        zeros: &[f16],
    ) -> Result<Vec<u32>> {
        let ng = inp.div_ceil(group);
        if codes.len() != out * inp {
            return Err(Error::invalid(format!(
                "INT{BITS} pack of [{out}, {inp}] group {group}: got {} codes",
                codes.len()
            )));
        }
        let (lo, hi) = if BITS == 8 {
            (-127, 127)
        } else {
            (0, Self::MAX_CODE as i32)
        };
        if let Some(bad) = codes.iter().find(|&&c| c < lo || c > hi) {
            return Err(Error::invalid(format!(
                "INT{BITS} code {bad} outside [{lo}, {hi}]"
            )));
        }
        let row_words = row_stride_bytes(BITS, inp, group) / 4;
        let mask = Self::MAX_CODE;
        let mut words = vec![0u32; out * row_words];
        for r in 0..out {
            let row = &mut words[r * row_words..(r + 1) * row_words];
            let pad = if Self::HAS_ZEROS {
                let gi = r * ng + ng - 1;
                (zeros[gi].to_f32().round() as i32).clamp(lo, hi)
            } else {
                0
            };
            for k in 0..ng * group {
                let c = if k < inp { codes[r * inp + k] } else { pad };
                let (w, j) = (k / Self::PER_WORD, k % Self::PER_WORD);
                row[w] |= ((c as u32) & mask) << (BITS as usize * slot(BITS, j));
            }
        }
        Ok(words)
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Weights per group (equal to `in` for per-channel INT8).
    pub fn group_size(&self) -> usize {
        self.group
    }

    /// Groups per row (`ceil(in / group)`).
    pub fn n_groups(&self) -> usize {
        self.inp.div_ceil(self.group)
    }

    /// `u32` words per row (the 16-byte-aligned row stride / 4).
    pub fn row_words(&self) -> usize {
        row_stride_bytes(BITS, self.inp, self.group) / 4
    }

    /// The packed code words, `[out, row_words]`.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// The packed codes as bytes, `[out, row_stride_bytes]`, without a copy (the words are
    /// little-endian in memory on the little-endian hosts this crate targets).
    #[cfg(target_endian = "little")]
    pub fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words)
    }

    /// The packed codes as little-endian bytes, `[out, row_stride_bytes]` (a copy).
    pub fn packed_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Per-group scales, `[out, n_groups]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// Per-group zero points, `[out, n_groups]` (empty for INT8, which is symmetric).
    pub fn zeros(&self) -> &[f16] {
        &self.zeros
    }

    /// INT2 only: the compact parameters (the source of truth of [`Packed::scales`] and
    /// [`Packed::zeros`], which are their decode); `None` for INT8/INT4.
    pub fn int2_params(&self) -> Option<&Int2Params> {
        self.int2.as_deref()
    }

    /// Bytes of codes plus parameters as stored ([`packed_byte_len`]): FP16 scales (and zeros)
    /// for INT8/INT4, the compact codes for INT2.
    pub fn byte_len(&self) -> usize {
        packed_byte_len(BITS, self.out, self.inp, self.group)
    }

    /// Code `k` of row `r` (signed for INT8); `k` may index the padding.
    #[inline]
    pub fn code(&self, r: usize, k: usize) -> i32 {
        let w = self.words[r * self.row_words() + k / Self::PER_WORD];
        let c = (w >> (BITS as usize * slot(BITS, k % Self::PER_WORD))) & Self::MAX_CODE;
        if BITS == 8 {
            c as u8 as i8 as i32
        } else {
            c as i32
        }
    }

    /// `(scale, zero)` of row `r`, group `g` (zero is 0 for INT8).
    #[inline]
    pub fn params(&self, r: usize, g: usize) -> (f32, f32) {
        let i = r * self.n_groups() + g;
        let z = if Self::HAS_ZEROS {
            self.zeros[i].to_f32()
        } else {
            0.0
        };
        (self.scales[i].to_f32(), z)
    }

    /// Reference dequantisation of the whole matrix to f32 `[out, in]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.out * self.inp);
        for r in 0..self.out {
            for k in 0..self.inp {
                let (s, z) = self.params(r, k / self.group);
                v.push((self.code(r, k) as f32 - z) * s);
            }
        }
        v
    }

    /// `sum_k w[r, k] * x[k]` on the packed data: per group, `s * (sum q*x - z * sum x)`,
    /// decoding one word at a time into registers (no dequantised copy of the matrix).
    pub fn row_dot(&self, r: usize, x: &[f32]) -> f32 {
        let ng = self.n_groups();
        let rw = self.row_words();
        let row = &self.words[r * rw..(r + 1) * rw];
        let params = r * ng;
        let mut total = 0.0f32;
        for g in 0..ng {
            let k0 = g * self.group;
            let k1 = (k0 + self.group).min(self.inp);
            let mut qx = [0.0f32; 4];
            let mut sx = 0.0f32;
            let mut k = k0;
            while k < k1 {
                let n = Self::PER_WORD.min(k1 - k);
                let codes = decode_word::<BITS>(row[k / Self::PER_WORD]);
                let xs = &x[k..k + n];
                for (j, &xv) in xs.iter().enumerate() {
                    qx[j & 3] += codes[j] * xv;
                }
                if Self::HAS_ZEROS {
                    sx += xs.iter().sum::<f32>();
                }
                k += n;
            }
            let s = self.scales[params + g].to_f32();
            let q = (qx[0] + qx[1]) + (qx[2] + qx[3]);
            total += if Self::HAS_ZEROS {
                s * (q - self.zeros[params + g].to_f32() * sx)
            } else {
                s * q
            };
        }
        total
    }
}

impl<const BITS: u32> Packed<BITS> {
    /// Writes row `r` dequantised into `dst` (`in` values): one row at a time, never the
    /// whole matrix.
    pub fn dequantize_row_into(&self, r: usize, dst: &mut [f32]) {
        let rw = self.row_words();
        let row = &self.words[r * rw..(r + 1) * rw];
        for (g, chunk) in dst[..self.inp].chunks_mut(self.group).enumerate() {
            let (s, z) = self.params(r, g);
            let k0 = g * self.group;
            for (w, out) in chunk.chunks_mut(Self::PER_WORD).enumerate() {
                let codes = decode_word::<BITS>(row[(k0 / Self::PER_WORD) + w]);
                for (o, &c) in out.iter_mut().zip(&codes) {
                    *o = (c - z) * s;
                }
            }
        }
    }
}

/// The codes of one word in K order, as f32 (signed for INT8). Only the first `32 / BITS`
/// entries are meaningful.
#[inline(always)]
pub fn decode_word<const BITS: u32>(w: u32) -> [f32; 16] {
    let per = (32 / BITS) as usize;
    let mask = (1u32 << BITS) - 1;
    let mut out = [0.0f32; 16];
    for (j, o) in out.iter_mut().enumerate().take(per) {
        let c = (w >> (BITS as usize * slot(BITS, j))) & mask;
        *o = if BITS == 8 {
            c as u8 as i8 as f32
        } else {
            c as f32
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_nibble_order_matches_the_documented_interleave() {
        // Codes 0..7 in K order must land as nibbles k7 k5 k3 k1 | k6 k4 k2 k0.
        let codes: Vec<i32> = (0..32).map(|k| k % 8).collect();
        let m = Int4Matrix::pack(1, 32, 32, &codes, vec![f16::ONE], vec![f16::ZERO]).unwrap();
        assert_eq!(m.words()[0], 0x7531_6420);
        // The magic-number pair extraction yields (k0, k1), (k2, k3), ...
        for i in 0..4 {
            let pair = (m.words()[0] >> (4 * i)) & 0x000f_000f;
            assert_eq!(pair, (2 * i as u32) | ((2 * i as u32 + 1) << 16));
        }
        assert_eq!(m.row_words(), 4);
        assert_eq!(m.bytes(), &m.packed_bytes()[..]);
        assert_eq!(m.bytes()[..4], [0x20, 0x64, 0x31, 0x75]);
    }

    #[test]
    fn int2_and_int8_interleave_and_row_padding() {
        let codes: Vec<i32> = (0..40).map(|k| k % 4).collect();
        let m = Int2Matrix::pack(1, 40, 32, &codes, vec![f16::ONE; 2], vec![f16::ZERO; 2]).unwrap();
        // Row of 2 groups of 32 INT2 = 16 bytes exactly.
        assert_eq!(m.row_words(), 4);
        for i in 0..8 {
            let pair = (m.words()[0] >> (2 * i)) & 0x0003_0003;
            assert_eq!(
                pair,
                ((2 * i as u32) % 4) | (((2 * i as u32 + 1) % 4) << 16)
            );
        }
        let c8: Vec<i32> = vec![1, -2, 3, -4, 5];
        let m8 = Int8Matrix::pack(1, 5, 5, &c8, vec![f16::ONE], vec![]).unwrap();
        assert_eq!(m8.words()[0] & 0x00ff_00ff, 1 | (0xfe << 16));
        assert_eq!(m8.row_words(), 4, "5 bytes pad to a 16-byte row");
        assert_eq!(m8.dequantize(), vec![1., -2., 3., -4., 5.]);
        let mut row = vec![0.0; 40];
        m.dequantize_row_into(0, &mut row);
        assert_eq!(row, m.dequantize());
    }

    #[test]
    fn int2_keeps_its_codes_and_reports_the_compact_size() {
        use crate::quant::int2_params::{decode_scale, decode_zero};
        // 2 rows of 172 at group 64: 3 groups, the last one partial.
        let (out, inp, g) = (2, 172, 64);
        let codes: Vec<i32> = (0..out * inp).map(|k| (k * 7 % 4) as i32).collect();
        let sup = vec![f16::from_f32(0.02), f16::from_f32(3.5)];
        let params = Int2Params::new(
            3,
            sup.clone(),
            vec![0, 40, 255, 7, 0, 31],
            vec![0, 15, 6, 1, 2, 3],
        )
        .unwrap();
        let m = Int2Matrix::pack_int2(out, inp, g, &codes, params.clone()).unwrap();
        assert_eq!(m.int2_params(), Some(&params));
        assert_eq!(m.scales()[1], decode_scale(sup[0], 40));
        assert_eq!(m.zeros()[4], decode_zero(2));
        assert_eq!(
            m.params(1, 2),
            (decode_scale(sup[1], 31).to_f32(), decode_zero(3).to_f32())
        );
        // Codes 48 bytes per row, then 3 scale codes + 2 zero bytes + 2 super-scale bytes.
        assert_eq!(m.byte_len(), out * (48 + 3 + 2 + 2));
        assert_eq!(packed_byte_len(2, out, inp, g), m.byte_len());
        // The padding of the partial group holds the code nearest to the zero (1.5 -> 2).
        assert_eq!(m.code(0, 191), 2);
        let back =
            Int2Matrix::from_int2_parts(out, inp, g, m.words().to_vec(), params.clone()).unwrap();
        assert_eq!(back.dequantize(), m.dequantize());
        // The FP16 entry point re-derives the same codes from decoded values.
        let same = Int2Matrix::from_parts(
            out,
            inp,
            g,
            m.words().to_vec(),
            m.scales().to_vec(),
            m.zeros().to_vec(),
        )
        .unwrap();
        assert_eq!(same.int2_params(), Some(&params));
        assert!(Int4Matrix::pack_int2(out, inp, g, &codes, params.clone()).is_err());
        let e = Int2Matrix::pack_int2(out, 128, g, &codes[..256], params).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs parameters for 2 rows x 2 groups"),
            "{e}"
        );
    }

    #[test]
    fn bad_groups_and_lengths_are_named() {
        let e = Int4Matrix::check_group(64, 48).unwrap_err().to_string();
        assert!(e.contains("INT4 group size 48"), "{e}");
        assert!(Int8Matrix::check_group(172, 172).is_ok());
        let e = Int2Matrix::pack(1, 64, 64, &[0; 63], vec![f16::ONE], vec![f16::ZERO])
            .unwrap_err()
            .to_string();
        assert!(e.contains("63 codes"), "{e}");
        assert!(Int2Matrix::pack(1, 32, 32, &[4; 32], vec![f16::ONE], vec![f16::ZERO]).is_err());
    }
}
