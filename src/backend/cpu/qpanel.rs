//! Packed INT8/INT4/INT2 products on a panel layout for AVX512-VNNI: one kernel for every
//! input row count (decode, speculative verification, batched steps, prefill), so every count
//! gives each row the same bits, and no horizontal sums: each vector lane is one output.
//!
//! **Layout** (written once, at upload, by [`QPanels::pack`] from a [`Packed`] matrix): the
//! outputs are cut into panels of [`PANEL`]; K into blocks of [`QBLOCK`] (the activation block
//! of [`super::act_quant`]), padded with zero codes (INT8: the code 0) past `in`. Per panel
//! and block there are `BITS` 64-byte lines (8 INT8, 4 INT4, 2 INT2); in line `u`, the 32-bit
//! lane `l` (output `16 p + l`), byte `j` (0..4) and sub-position `t` (0..8/BITS: bits
//! `BITS * t ..`) hold the code of
//!
//! `k = 32 b + 4 (u * 8/BITS + t) + j`,
//!
//! so that one sub-position of one line is sixteen outputs' codes at four consecutive K: the
//! operand of one `vpdpbusd` against the four activation codes at those K broadcast to every
//! lane. INT8 codes are stored as `q + 128` (unsigned, as `vpdpbusd` wants its first operand);
//! INT4/INT2 codes are unsigned already. Lines are `[panel][block][u]`. Group scales (and
//! INT4/INT2 zero points) are FP16 `[panel][group][16]`, one vector per group.
//!
//! **Arithmetic.** The activations are quantized per row in blocks of 32 by the rule of
//! [`super::act_quant::quantize_block`] (scale `d_b`, codes `xq`). Per (output, row, block) the
//! integer sum `isum_b = sum_k code_k * xq_k` is exact (INT8 starts it at `-128 * sum xq_b`,
//! which cancels the stored `+128`); per group, `gacc = sum_b f32(isum_b) * d_b` (FMAs in block
//! order), then INT4/INT2 take `z_g * XS_g` off it, with `XS_g = sum_b d_b * f32(sum xq_b)`
//! computed once per row, and the output accumulates `acc += gacc * s_g` in group order. The
//! kernels for 1 to [`ROWS`] input rows, the two-panel kernels and the portable fallback all
//! do exactly this per (output, row), so a product's bits do not depend on how many rows it carries.
//!
//! **Work split.** Tasks take contiguous runs of panels ([`super::worker_pool::stream_chunk`]),
//! so each thread streams one sequential run of weights; inside a task every panel is applied
//! to the input rows [`ROWS`] at a time while it sits in L1. INT8 products of three rows or
//! more take pairs of adjacent panels instead, applied up to [`PAIR_ROWS`] rows at a time.

use super::act_quant::{quantize_blocks, QBLOCK};
use super::gemm_tile::{par_filled, Line, SharedOut};
use super::prefetch::NextPanels;
use crate::quant::Packed;
use crate::{Error, Result};
use half::f16;
use std::cell::Cell;
use std::sync::Arc;

/// Outputs per panel: sixteen 32-bit lanes.
pub const PANEL: usize = 16;
/// Input rows per kernel call.
pub const ROWS: usize = 8;
/// Input rows per call of the two-panel kernel.
pub const PAIR_ROWS: usize = 6;
/// INT8 products of this many input rows or more (on VNNI, without AMX) take two panels per
/// kernel call, so that each broadcast input quad feeds two `vpdpbusd`; decode's one and two
/// rows keep one panel per call (one weight stream per task, as their prefetch distance was
/// measured for). INT4 and INT2 keep one panel per call at every row count: their codes are
/// unpacked once per call, and with the fewer rows a two-panel call carries that work grew by
/// as much as the shared broadcasts saved (measured no faster at 16 rows, slower on the
/// classifier).
const PAIR_MIN_ROWS: usize = 3;
/// Input rows per AMX kernel call (a tile's rows).
const AMX_ROWS: usize = 16;
/// Products of at least this many rows run on AMX tiles when they are enabled
/// ([`super::amx::enabled`]).
const AMX_MIN_ROWS: usize = 16;

/// How far ahead of its loads the VNNI kernel prefetches into L2, in 64-byte lines (8 KiB):
/// the hardware prefetcher alone left one streaming core short of its share of the read
/// bandwidth, and prefetching into L1 (2 KiB ahead) filled the core's miss buffers instead.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 128;

/// A packed matrix in the panel layout (see the module docs). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct QPanels<const BITS: u32> {
    lines: Arc<Vec<Line>>,
    scales: Arc<Vec<f16>>,
    zeros: Arc<Vec<f16>>,
    out: usize,
    inp: usize,
    /// Activation blocks per row (`ceil(in / 32)`).
    blocks: usize,
    /// Blocks per weight group (all of them for one group per row).
    group_blocks: usize,
    /// Weight groups per row.
    groups: usize,
}

impl<const BITS: u32> QPanels<BITS> {
    /// Sub-positions per byte.
    const NSUB: usize = (8 / BITS) as usize;
    /// Codes per packed word (and per line word).
    const PER_WORD: usize = (32 / BITS) as usize;

    /// The line word that holds the codes of one [`Packed`] word: both cover the same
    /// `32 / BITS` consecutive K (word `w` of a row is line `w % BITS` of block `w / BITS`),
    /// so only the order inside the word changes, from the packed slot of code `c` to byte
    /// `c % 4`, sub-position `c / 4`; INT8 codes become `q + 128`.
    #[inline(always)]
    fn relay_word(w: u32) -> u32 {
        let max = (1u32 << BITS) - 1;
        let mut out = 0u32;
        for c in 0..Self::PER_WORD {
            let code = (w >> (BITS as usize * crate::quant::packed::slot(BITS, c))) & max;
            out |= code << (8 * (c % 4) + BITS as usize * (c / 4));
        }
        if BITS == 8 {
            out ^ 0x8080_8080
        } else {
            out
        }
    }

    /// True when `m` can take this layout: its groups are whole activation blocks (a multiple
    /// of 32 weights) or span the row.
    pub fn supports(m: &Packed<BITS>) -> bool {
        let (_, inp) = m.dims();
        let g = m.group_size();
        g > 0 && (g % QBLOCK == 0 || g >= inp)
    }

    /// Re-lays out `m` (fails with a typed error when its groups do not fit, see
    /// [`QPanels::supports`], or when the copy cannot be allocated).
    pub fn pack(m: &Packed<BITS>) -> Result<Self> {
        if !Self::supports(m) {
            return Err(Error::Unsupported(format!(
                "INT{BITS} groups of {} weights are not whole blocks of {QBLOCK}",
                m.group_size()
            )));
        }
        let (out, inp) = m.dims();
        let blocks = inp.div_ceil(QBLOCK);
        let (group_blocks, groups) = if m.group_size() >= inp {
            (blocks.max(1), 1)
        } else {
            (m.group_size() / QBLOCK, m.n_groups())
        };
        let panels = out.div_ceil(PANEL);
        let pad: u8 = if BITS == 8 { 0x80 } else { 0 };
        let pad_word = u32::from_ne_bytes([pad; 4]);
        let panel_lines = blocks * BITS as usize;
        let panel_params = groups * PANEL;
        let (src_groups, src_scales, src_zeros) = (m.n_groups(), m.scales(), m.zeros());
        let (words, row_words) = (m.words(), m.row_words());
        // Words whose codes all lie below `in` map one to one onto a line word (see
        // `relay_word`); the codes of the last, partial block go one by one.
        let whole_words = inp / Self::PER_WORD;
        // Panels are independent: each task lays out its own lines.
        let lines = par_filled(
            panels * panel_lines,
            panel_lines,
            Line([pad_word; 16]),
            "64-byte panel lines",
            |p, lines| {
                for l in 0..PANEL.min(out - p * PANEL) {
                    let o = p * PANEL + l;
                    let row = &words[o * row_words..(o + 1) * row_words];
                    for (w, &src) in row[..whole_words].iter().enumerate() {
                        lines[w].0[l] = Self::relay_word(src);
                    }
                    for k in whole_words * Self::PER_WORD..inp {
                        let code = (m.code(o, k) + if BITS == 8 { 128 } else { 0 }) as u8;
                        let (b, quad) = (k / QBLOCK, (k % QBLOCK) / 4);
                        let (u, t) = (quad / Self::NSUB, quad % Self::NSUB);
                        let word = &mut lines[b * BITS as usize + u].0[l];
                        let shift = 8 * (k % 4) + BITS as usize * t;
                        let mask = ((1u32 << BITS) - 1) << shift;
                        *word = (*word & !mask) | ((code as u32) << shift);
                    }
                }
            },
        )?;
        // Parameters `[panel][group][16]` from `[out][group]`.
        let params = |src: &[f16], what: &str| {
            par_filled(
                panels * panel_params,
                panel_params,
                f16::ZERO,
                what,
                |p, dst| {
                    for l in 0..PANEL.min(out - p * PANEL) {
                        let o = p * PANEL + l;
                        for g in 0..groups {
                            dst[g * PANEL + l] = src[o * src_groups + g];
                        }
                    }
                },
            )
        };
        let scales = params(src_scales, "FP16 panel scales")?;
        let zeros = if BITS == 8 {
            Vec::new()
        } else {
            params(src_zeros, "FP16 panel zero points")?
        };
        Ok(QPanels {
            lines: Arc::new(lines),
            scales: Arc::new(scales),
            zeros: Arc::new(zeros),
            out,
            inp,
            blocks,
            group_blocks,
            groups,
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The code of output `o` at K position `k < in` as stored (INT8: `q + 128`), read back
    /// from the layout.
    pub fn stored_code(&self, o: usize, k: usize) -> u8 {
        let (p, l, b) = (o / PANEL, o % PANEL, k / QBLOCK);
        let quad = (k % QBLOCK) / 4;
        let (u, t) = (quad / Self::NSUB, quad % Self::NSUB);
        let word = self.lines[(p * self.blocks + b) * BITS as usize + u].0[l];
        let byte = (word >> (8 * (k % 4))) as u8;
        let mask = if BITS == 8 { 0xff } else { (1u8 << BITS) - 1 };
        (byte >> (BITS as usize * t)) & mask
    }

    /// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows on int8 activations,
    /// parallel over runs of panels, with the VNNI kernels when the CPU has them.
    ///
    /// # Panics
    /// When `x` or `out` is shorter than its shape (the backend checks lengths first).
    pub fn matmul(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let done = Self::matmul_many(&mut [(self, out)], x, rows);
        debug_assert!(done, "one matrix always quantizes its input alike");
    }

    /// Several products of one input (`out_i = x w_i^T`, each as [`QPanels::matmul`]) as one
    /// parallel job over the panels of all of them, on one quantization of `x`. Returns false
    /// (nothing written) when the matrices differ in width or group size, so that one
    /// quantization would not serve them all.
    ///
    /// # Panics
    /// When `x` or an output is shorter than its shape.
    pub fn matmul_many(
        products: &mut [(&QPanels<BITS>, &mut [f32])],
        x: &[f32],
        rows: usize,
    ) -> bool {
        let simd = super::qgemv_vnni::available();
        Self::matmul_many_with(products, x, rows, simd, simd && super::amx::enabled())
    }

    /// [`QPanels::matmul_many`] on the VNNI kernels (`simd`, which the CPU must have), with
    /// AMX tiles for [`AMX_MIN_ROWS`] rows or more (`amx`, which the CPU must have too), or
    /// on the portable kernel.
    fn matmul_many_with(
        products: &mut [(&QPanels<BITS>, &mut [f32])],
        x: &[f32],
        rows: usize,
        simd: bool,
        amx: bool,
    ) -> bool {
        let Some(first) = products.first().map(|(m, _)| *m) else {
            return true;
        };
        for (m, out) in products.iter() {
            let (n_out, n_in) = (m.out, m.inp);
            assert!(
                x.len() >= rows * n_in && out.len() >= rows * n_out,
                "QPanels::matmul: slices shorter than [{n_out}, {n_in}] x {rows}"
            );
            if (m.inp, m.group_blocks, m.groups) != (first.inp, first.group_blocks, first.groups) {
                return false;
            }
        }
        if rows == 0 {
            return true;
        }
        let mut act = SCRATCH.take();
        act.fill(first, x, rows);
        let amx = amx && rows >= AMX_MIN_ROWS;
        {
            let act = &act;
            if BITS == 8 && simd && !amx && rows >= PAIR_MIN_ROWS {
                super::gemm_tile::for_each_product_panel(
                    products,
                    |m| m.out.div_ceil(2 * PANEL),
                    |m, q, dst| m.pair_rows(q, act, rows, dst),
                );
            } else {
                super::gemm_tile::for_each_product_panel(
                    products,
                    |m| m.out.div_ceil(PANEL),
                    |m, p, dst| m.panel_rows(p, act, rows, dst, simd, amx),
                );
            }
        }
        SCRATCH.set(act);
        true
    }

    /// Panels `2q` and `2q + 1` against every input row, in the fewest calls of the two-panel
    /// kernel that carry at most [`PAIR_ROWS`] rows each, their row counts as even as can be;
    /// a last panel without a partner goes through [`QPanels::panel_rows`]. The CPU must have
    /// VNNI.
    fn pair_rows(&self, q: usize, act: &ActBlocks, rows: usize, dst: SharedOut) {
        let n_out = self.out;
        let p = 2 * q;
        if p + 1 >= n_out.div_ceil(PANEL) {
            return self.panel_rows(p, act, rows, dst, true, false);
        }
        // The first panel of a pair is whole: another follows it.
        let lanes = PANEL.min(n_out - (p + 1) * PANEL);
        let calls = rows.div_ceil(PAIR_ROWS);
        for (c, (r, n)) in super::gemm_tile::even_row_calls(rows, PAIR_ROWS).enumerate() {
            let share = (c, calls);
            let op = dst.get().wrapping_add(r * n_out + p * PANEL);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this task alone writes outputs `16p .. 16p + 16 + lanes` of rows
            // `r .. r + n`, all inside `out` (asserted by `matmul`); `act` was filled for this
            // matrix with `rows` rows; the caller checked the CPU.
            unsafe {
                match n {
                    6 => self.tile_vnni_pair::<6>(p, act, r, op, n_out, lanes, share),
                    5 => self.tile_vnni_pair::<5>(p, act, r, op, n_out, lanes, share),
                    4 => self.tile_vnni_pair::<4>(p, act, r, op, n_out, lanes, share),
                    3 => self.tile_vnni_pair::<3>(p, act, r, op, n_out, lanes, share),
                    2 => self.tile_vnni_pair::<2>(p, act, r, op, n_out, lanes, share),
                    _ => self.tile_vnni_pair::<1>(p, act, r, op, n_out, lanes, share),
                }
            }
        }
    }

    /// Panel `p` against every input row, [`ROWS`] rows per kernel call (`AMX_ROWS` with
    /// `amx`).
    fn panel_rows(
        &self,
        p: usize,
        act: &ActBlocks,
        rows: usize,
        dst: SharedOut,
        simd: bool,
        amx: bool,
    ) {
        let n_out = self.out;
        let lanes = PANEL.min(n_out - p * PANEL);
        let mut r = 0;
        #[cfg(target_arch = "x86_64")]
        if amx {
            while r < rows {
                let n = AMX_ROWS.min(rows - r);
                let op = dst.get().wrapping_add(r * n_out + p * PANEL);
                // SAFETY: as below; `amx` is only set when the CPU has AMX-INT8 and VNNI and
                // the process may use the tiles.
                unsafe { self.tile_amx(p, act, r, n, op, n_out, lanes) };
                r += n;
            }
            return;
        }
        let _ = amx;
        let calls = rows.div_ceil(ROWS);
        while r < rows {
            let n = ROWS.min(rows - r);
            let share = (r / ROWS, calls);
            let op = dst.get().wrapping_add(r * n_out + p * PANEL);
            // SAFETY: this task alone writes outputs `16p .. 16p + lanes` of rows `r .. r + n`,
            // all inside `out` (asserted by `matmul`); `act` was filled for this matrix with
            // `rows` rows.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    match n {
                        8 => self.tile_vnni::<8>(p, act, r, op, n_out, lanes, share),
                        7 => self.tile_vnni::<7>(p, act, r, op, n_out, lanes, share),
                        6 => self.tile_vnni::<6>(p, act, r, op, n_out, lanes, share),
                        5 => self.tile_vnni::<5>(p, act, r, op, n_out, lanes, share),
                        4 => self.tile_vnni::<4>(p, act, r, op, n_out, lanes, share),
                        3 => self.tile_vnni::<3>(p, act, r, op, n_out, lanes, share),
                        2 => self.tile_vnni::<2>(p, act, r, op, n_out, lanes, share),
                        _ => self.tile_vnni::<1>(p, act, r, op, n_out, lanes, share),
                    }
                    r += n;
                    continue;
                }
                let _ = simd;
                self.tile_portable(p, act, r, n, op, n_out, lanes);
            }
            r += n;
        }
    }

    /// The panel's products with input rows `r0 .. r0 + m` (`m <= 16`) on AMX tiles: per
    /// block one tile product of the rows' codes against the block's eight lines (INT4/INT2
    /// lines first unpacked to one code per byte, the layout of INT8's), stored and then, per
    /// row, the same convert and FMA as [`QPanels::tile_vnni`] on the same exact integer sum,
    /// so every output has the VNNI kernel's bits.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW, F16C and AMX-INT8, with the tile permission
    /// ([`super::amx::supported`]); `op + r * out_stride + l` must be writable for `r < m`,
    /// `l < lanes`; `act` must hold rows `r0 .. r0 + m` for this matrix.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_amx(
        &self,
        p: usize,
        act: &ActBlocks,
        r0: usize,
        m: usize,
        op: *mut f32,
        out_stride: usize,
        lanes: usize,
    ) {
        use std::arch::x86_64::*;
        #[repr(C, align(64))]
        struct Tile<T>(T);
        let m = m.min(AMX_ROWS);
        let nsub = Self::NSUB;
        let code_mask = _mm512_set1_epi8(if BITS == 8 { -1 } else { (1i8 << BITS) - 1 });
        let lines = self.lines.as_ptr().add(p * self.blocks * BITS as usize);
        let xq = act.xq.as_ptr().add(r0 * act.stride);
        let mut unpacked = Tile([[[0u8; 64]; 8]; 2]);
        let mut sums = Tile([[[0i32; PANEL]; AMX_ROWS]; 2]);
        let mut weights = [std::ptr::null::<u8>(); 2];
        let mut acc = [_mm512_setzero_ps(); AMX_ROWS];
        super::amx::configure(m);
        for g in 0..self.groups {
            let mut gacc = [_mm512_setzero_ps(); AMX_ROWS];
            let range = self.group_range(g);
            let mut b = range.start;
            while b < range.end {
                let pair = b + 1 < range.end;
                for (j, slot) in unpacked.0.iter_mut().enumerate().take(1 + pair as usize) {
                    let block = lines.add((b + j) * BITS as usize);
                    weights[j] = if BITS == 8 {
                        block as *const u8
                    } else {
                        for u in 0..BITS as usize {
                            let mut shifted = _mm512_load_si512(block.add(u) as *const _);
                            for t in 0..nsub {
                                let codes = _mm512_and_si512(shifted, code_mask);
                                shifted = _mm512_srli_epi16::<BITS>(shifted);
                                _mm512_store_si512(
                                    slot[u * nsub + t].as_mut_ptr() as *mut _,
                                    codes,
                                );
                            }
                        }
                        slot.as_ptr() as *const u8
                    };
                }
                if pair {
                    super::amx::block_pair_product(
                        xq.add(b * QBLOCK),
                        xq.add((b + 1) * QBLOCK),
                        act.stride,
                        weights[0],
                        weights[1],
                        sums.0[0].as_mut_ptr() as *mut i32,
                        sums.0[1].as_mut_ptr() as *mut i32,
                    );
                } else {
                    super::amx::block_product(
                        xq.add(b * QBLOCK),
                        act.stride,
                        weights[0],
                        sums.0[0].as_mut_ptr() as *mut i32,
                    );
                }
                for (j, bsums) in sums.0.iter().enumerate().take(1 + pair as usize) {
                    for (r, ga) in gacc.iter_mut().enumerate().take(m) {
                        let mut total = _mm512_load_si512(bsums[r].as_ptr() as *const _);
                        if BITS == 8 {
                            total =
                                _mm512_add_epi32(_mm512_set1_epi32(act.corr(r0 + r, b + j)), total);
                        }
                        let d = _mm512_set1_ps(act.d(r0 + r, b + j));
                        *ga = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), d, *ga);
                    }
                }
                b += 1 + pair as usize;
            }
            let i = (p * self.groups + g) * PANEL;
            let s = _mm512_cvtph_ps(_mm256_loadu_si256(self.scales.as_ptr().add(i) as *const _));
            if BITS != 8 {
                let z = _mm512_cvtph_ps(_mm256_loadu_si256(self.zeros.as_ptr().add(i) as *const _));
                for (r, ga) in gacc.iter_mut().enumerate().take(m) {
                    *ga = _mm512_fnmadd_ps(z, _mm512_set1_ps(act.xsg(r0 + r, g)), *ga);
                }
            }
            for (a, ga) in acc.iter_mut().zip(&gacc).take(m) {
                *a = _mm512_fmadd_ps(*ga, s, *a);
            }
        }
        super::amx::release();
        let mask = if lanes >= PANEL {
            0xffff
        } else {
            (1u16 << lanes) - 1
        };
        for (r, a) in acc.iter().enumerate().take(m) {
            _mm512_mask_storeu_ps(op.add(r * out_stride), mask, *a);
        }
    }

    /// The blocks of group `g`.
    fn group_range(&self, g: usize) -> std::ops::Range<usize> {
        g * self.group_blocks..((g + 1) * self.group_blocks).min(self.blocks)
    }

    /// The panel's products with input rows `r0 .. r0 + n` in portable code: per (output,
    /// row) the same operations in the same order as [`QPanels::tile_vnni`] (the integer sums
    /// are exact; `f32::mul_add` is a fused multiply-add).
    ///
    /// # Safety
    /// `op + r * out_stride + l` must be writable for `r < n`, `l < lanes`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_portable(
        &self,
        p: usize,
        act: &ActBlocks,
        r0: usize,
        n: usize,
        op: *mut f32,
        out_stride: usize,
        lanes: usize,
    ) {
        let mask = if BITS == 8 { 0xff } else { (1i32 << BITS) - 1 };
        for r in 0..n {
            let row = r0 + r;
            for l in 0..lanes {
                let mut acc = 0.0f32;
                for g in 0..self.groups {
                    let mut gacc = 0.0f32;
                    for b in self.group_range(g) {
                        let mut isum = if BITS == 8 { act.corr(row, b) } else { 0 };
                        for u in 0..BITS as usize {
                            let word = self.lines[(p * self.blocks + b) * BITS as usize + u].0[l];
                            for t in 0..Self::NSUB {
                                let quad = act.quad(row, b * QBLOCK + 4 * (u * Self::NSUB + t));
                                for (j, &xq) in quad.iter().enumerate() {
                                    let code = (word >> (8 * j + BITS as usize * t)) as i32 & mask;
                                    isum += code * xq as i32;
                                }
                            }
                        }
                        gacc = (isum as f32).mul_add(act.d(row, b), gacc);
                    }
                    let i = (p * self.groups + g) * PANEL + l;
                    if BITS != 8 {
                        gacc = (-self.zeros[i].to_f32()).mul_add(act.xsg(row, g), gacc);
                    }
                    acc = gacc.mul_add(self.scales[i].to_f32(), acc);
                }
                *op.add(r * out_stride + l) = acc;
            }
        }
    }

    /// The panel's products with `R` input rows from `r0`: per block and line, the line's
    /// sub-positions unpacked to bytes once and `vpdpbusd`-ed into each row's integer sums
    /// (two or four independent chains for one or two rows, added exactly at the block's
    /// end, so the latency of one chain does not bound a decode product); then per row and
    /// block one convert and one FMA, per group the zero-point term and the scale. One- and
    /// two-row calls (decode) prefetch [`PREFETCH_AHEAD`] lines ahead, past the panel's end
    /// too (a prefetch never faults); calls of more rows, call `share.0` of the `share.1` that
    /// apply this panel, prefetch their part of the next panel, a step per block
    /// ([`NextPanels`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW and VNNI and F16C; `op + r * out_stride + l` must be
    /// writable for `r < R`, `l < lanes`; `act` must hold rows `r0 .. r0 + R` for this matrix.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_vnni<const R: usize>(
        &self,
        p: usize,
        act: &ActBlocks,
        r0: usize,
        op: *mut f32,
        out_stride: usize,
        lanes: usize,
        share: (usize, usize),
    ) {
        use std::arch::x86_64::*;
        let chains = if R == 1 {
            4
        } else if R == 2 {
            2
        } else {
            1
        };
        let nsub = Self::NSUB;
        let code_mask = _mm512_set1_epi8(if BITS == 8 { -1 } else { (1i8 << BITS) - 1 });
        let per_panel = self.blocks * BITS as usize;
        let lines = self.lines.as_ptr().add(p * per_panel);
        let mut next = NextPanels::new(
            lines.wrapping_add(per_panel).cast(),
            per_panel * 64,
            self.blocks,
            share,
            false,
        );
        let stride = act.stride;
        let xq = act.xq.as_ptr().add(r0 * stride);
        // Unchecked reads of the rows' block scales, INT8 starts and `XS_g` (the caller
        // guarantees rows `r0 .. r0 + R`): a bounds check per row splits the block's rows into
        // separate branches, and the compiler then ran each row's integer chain to its end
        // before starting the next row's, instead of interleaving the rows' independent chains.
        let (blocks, groups) = (act.blocks, act.groups);
        let d_at = act.d.as_ptr().add(r0 * blocks);
        let corr_at = act.corr.as_ptr().wrapping_add(r0 * blocks);
        let xsg_at = act.xsg.as_ptr().wrapping_add(r0 * groups);
        let mut acc = [_mm512_setzero_ps(); R];
        for g in 0..self.groups {
            let mut gacc = [_mm512_setzero_ps(); R];
            for b in self.group_range(g) {
                if R > 2 {
                    next.step();
                }
                let mut isum = [[_mm512_setzero_si512(); 4]; R];
                if BITS == 8 {
                    for (r, s) in isum.iter_mut().enumerate() {
                        s[0] = _mm512_set1_epi32(*corr_at.add(r * blocks + b));
                    }
                }
                let mut step = 0;
                for u in 0..BITS as usize {
                    let line = b * BITS as usize + u;
                    if R <= 2 {
                        _mm_prefetch::<_MM_HINT_T1>(
                            lines.wrapping_add(line + PREFETCH_AHEAD) as *const i8
                        );
                    }
                    let v = _mm512_load_si512(lines.add(line) as *const _);
                    let mut shifted = v;
                    for t in 0..nsub {
                        let codes = if BITS == 8 {
                            v
                        } else {
                            let c = _mm512_and_si512(shifted, code_mask);
                            shifted = _mm512_srli_epi16::<BITS>(shifted);
                            c
                        };
                        let k = b * QBLOCK + 4 * (u * nsub + t);
                        let c = step % chains;
                        for (r, s) in isum.iter_mut().enumerate() {
                            let quad = (xq.add(r * stride + k) as *const i32).read_unaligned();
                            s[c] = _mm512_dpbusd_epi32(s[c], codes, _mm512_set1_epi32(quad));
                        }
                        step += 1;
                    }
                }
                for (r, (s, ga)) in isum.iter().zip(gacc.iter_mut()).enumerate() {
                    let mut total = s[0];
                    for s in &s[1..chains] {
                        total = _mm512_add_epi32(total, *s);
                    }
                    let d = _mm512_set1_ps(*d_at.add(r * blocks + b));
                    *ga = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), d, *ga);
                }
            }
            let i = (p * self.groups + g) * PANEL;
            let s = _mm512_cvtph_ps(_mm256_loadu_si256(self.scales.as_ptr().add(i) as *const _));
            if BITS != 8 {
                let z = _mm512_cvtph_ps(_mm256_loadu_si256(self.zeros.as_ptr().add(i) as *const _));
                for (r, ga) in gacc.iter_mut().enumerate() {
                    *ga = _mm512_fnmadd_ps(z, _mm512_set1_ps(*xsg_at.add(r * groups + g)), *ga);
                }
            }
            for (a, ga) in acc.iter_mut().zip(&gacc) {
                *a = _mm512_fmadd_ps(*ga, s, *a);
            }
        }
        let mask = if lanes >= PANEL {
            0xffff
        } else {
            (1u16 << lanes) - 1
        };
        for (r, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(op.add(r * out_stride), mask, *a);
        }
    }
}

impl<const BITS: u32> QPanels<BITS> {
    /// [`QPanels::tile_vnni`] for panels `p` and `p + 1` at once: per line the two panels'
    /// codes, and per row one broadcast quad feeding both panels' `vpdpbusd`. Each output gets
    /// exactly the one-panel kernel's operations in its order (one integer chain per block,
    /// whose sum is exact however the one-panel kernel splits it; then the same convert, FMAs
    /// and zero-point term), so the bits are the same. The first panel's sixteen outputs are
    /// stored whole, the second's masked to `lanes`. Call `share.0` of the `share.1` that apply
    /// this pair prefetches its part of the next pair, a step per block ([`NextPanels`]).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW and VNNI and F16C; panel `p + 1` must exist;
    /// `op + r * out_stride + l` must be writable for `r < R`, `l < 16 + lanes`; `act` must hold
    /// rows `r0 .. r0 + R` for this matrix.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_vnni_pair<const R: usize>(
        &self,
        p: usize,
        act: &ActBlocks,
        r0: usize,
        op: *mut f32,
        out_stride: usize,
        lanes: usize,
        share: (usize, usize),
    ) {
        use std::arch::x86_64::*;
        let nsub = Self::NSUB;
        let code_mask = _mm512_set1_epi8(if BITS == 8 { -1 } else { (1i8 << BITS) - 1 });
        let per_panel = self.blocks * BITS as usize;
        let la = self.lines.as_ptr().add(p * per_panel);
        let lb = la.add(per_panel);
        let mut next = NextPanels::new(
            la.wrapping_add(2 * per_panel).cast(),
            per_panel * 64,
            self.blocks,
            share,
            true,
        );
        let stride = act.stride;
        let xq = act.xq.as_ptr().add(r0 * stride);
        // Unchecked reads, as in `tile_vnni`.
        let (blocks, groups) = (act.blocks, act.groups);
        let d_at = act.d.as_ptr().add(r0 * blocks);
        let corr_at = act.corr.as_ptr().wrapping_add(r0 * blocks);
        let xsg_at = act.xsg.as_ptr().wrapping_add(r0 * groups);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for g in 0..self.groups {
            let mut gacc = [[_mm512_setzero_ps(); 2]; R];
            for b in self.group_range(g) {
                next.step();
                let mut isum = [[_mm512_setzero_si512(); 2]; R];
                if BITS == 8 {
                    for (r, s) in isum.iter_mut().enumerate() {
                        let c = _mm512_set1_epi32(*corr_at.add(r * blocks + b));
                        *s = [c, c];
                    }
                }
                for u in 0..BITS as usize {
                    let line = b * BITS as usize + u;
                    let va = _mm512_load_si512(la.add(line) as *const _);
                    let vb = _mm512_load_si512(lb.add(line) as *const _);
                    let (mut sa, mut sb) = (va, vb);
                    for t in 0..nsub {
                        let (ca, cb) = if BITS == 8 {
                            (va, vb)
                        } else {
                            let c = (
                                _mm512_and_si512(sa, code_mask),
                                _mm512_and_si512(sb, code_mask),
                            );
                            sa = _mm512_srli_epi16::<BITS>(sa);
                            sb = _mm512_srli_epi16::<BITS>(sb);
                            c
                        };
                        let k = b * QBLOCK + 4 * (u * nsub + t);
                        for (r, s) in isum.iter_mut().enumerate() {
                            let quad = (xq.add(r * stride + k) as *const i32).read_unaligned();
                            let qv = _mm512_set1_epi32(quad);
                            s[0] = _mm512_dpbusd_epi32(s[0], ca, qv);
                            s[1] = _mm512_dpbusd_epi32(s[1], cb, qv);
                        }
                    }
                }
                for (r, (s, ga)) in isum.iter().zip(gacc.iter_mut()).enumerate() {
                    let d = _mm512_set1_ps(*d_at.add(r * blocks + b));
                    ga[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[0]), d, ga[0]);
                    ga[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[1]), d, ga[1]);
                }
            }
            let ia = (p * self.groups + g) * PANEL;
            let ib = ia + self.groups * PANEL;
            let scale = |i: usize| {
                _mm512_cvtph_ps(_mm256_loadu_si256(self.scales.as_ptr().add(i) as *const _))
            };
            let (s_a, s_b) = (scale(ia), scale(ib));
            if BITS != 8 {
                let zero = |i: usize| {
                    _mm512_cvtph_ps(_mm256_loadu_si256(self.zeros.as_ptr().add(i) as *const _))
                };
                let (z_a, z_b) = (zero(ia), zero(ib));
                for (r, ga) in gacc.iter_mut().enumerate() {
                    let xs = _mm512_set1_ps(*xsg_at.add(r * groups + g));
                    ga[0] = _mm512_fnmadd_ps(z_a, xs, ga[0]);
                    ga[1] = _mm512_fnmadd_ps(z_b, xs, ga[1]);
                }
            }
            for (a, ga) in acc.iter_mut().zip(&gacc) {
                a[0] = _mm512_fmadd_ps(ga[0], s_a, a[0]);
                a[1] = _mm512_fmadd_ps(ga[1], s_b, a[1]);
            }
        }
        let mask = if lanes >= PANEL {
            0xffff
        } else {
            (1u16 << lanes) - 1
        };
        for (r, a) in acc.iter().enumerate() {
            let o = op.add(r * out_stride);
            _mm512_storeu_ps(o, a[0]);
            _mm512_mask_storeu_ps(o.add(PANEL), mask, a[1]);
        }
    }
}

/// The input rows of one product, quantized for a [`QPanels`] matrix: codes in natural K
/// order padded to whole blocks, and per row the block scales, INT8's integer starts and
/// INT4/INT2's per-group sums `XS_g` (module docs).
#[derive(Debug, Default)]
struct ActBlocks {
    /// Codes per row (`blocks * 32`).
    stride: usize,
    blocks: usize,
    groups: usize,
    /// Codes, `[rows][stride]`, zero past `in`.
    xq: Vec<i8>,
    /// Block scales, `[rows][blocks]`.
    d: Vec<f32>,
    /// `-128 * sum of the block's codes`, `[rows][blocks]` (INT8 only).
    corr: Vec<i32>,
    /// `sum_b d_b * f32(sum of block b's codes)` over each group's blocks, `[rows][groups]`
    /// (INT4/INT2 only).
    xsg: Vec<f32>,
    /// One row's block code sums, kept for reuse.
    sums: Vec<i32>,
}

thread_local! {
    /// Per-thread quantized input, taken out for the duration of one product (a `Cell`, not
    /// a `RefCell`: a worker that steals another product while this one runs finds an empty
    /// default instead of a held borrow).
    static SCRATCH: Cell<ActBlocks> = Cell::new(ActBlocks::default());
}

impl ActBlocks {
    /// Quantizes `rows` rows of `x` (`[rows, in]`) for `m`, reusing the buffers.
    fn fill<const BITS: u32>(&mut self, m: &QPanels<BITS>, x: &[f32], rows: usize) {
        let n_in = m.inp;
        self.blocks = m.blocks;
        self.groups = m.groups;
        self.stride = m.blocks * QBLOCK;
        self.xq.clear();
        self.xq.resize(rows * self.stride, 0);
        self.d.clear();
        self.d.resize(rows * m.blocks, 0.0);
        self.corr.clear();
        self.xsg.clear();
        let mut sums = std::mem::take(&mut self.sums);
        sums.clear();
        sums.resize(m.blocks, 0);
        for r in 0..rows {
            let xr = &x[r * n_in..(r + 1) * n_in];
            let qr = &mut self.xq[r * self.stride..(r + 1) * self.stride];
            let dr = &mut self.d[r * m.blocks..(r + 1) * m.blocks];
            quantize_blocks(xr, qr, dr, &mut sums);
            if BITS == 8 {
                self.corr.extend(sums.iter().map(|s| -128 * s));
            } else {
                for g in 0..m.groups {
                    let xs = m
                        .group_range(g)
                        .map(|b| self.d[r * m.blocks + b] * sums[b] as f32)
                        .fold(0.0f32, |a, v| a + v);
                    self.xsg.push(xs);
                }
            }
        }
        self.sums = sums;
    }

    /// The four codes of row `r` at K positions `k .. k + 4`.
    fn quad(&self, r: usize, k: usize) -> &[i8] {
        &self.xq[r * self.stride + k..r * self.stride + k + 4]
    }

    /// Scale of block `b` of row `r`.
    fn d(&self, r: usize, b: usize) -> f32 {
        self.d[r * self.blocks + b]
    }

    /// INT8's integer start of block `b` of row `r`.
    fn corr(&self, r: usize, b: usize) -> i32 {
        self.corr[r * self.blocks + b]
    }

    /// `XS_g` of row `r`.
    fn xsg(&self, r: usize, g: usize) -> f32 {
        self.xsg[r * self.groups + g]
    }
}

#[cfg(test)]
#[path = "qpanel_tests.rs"]
mod tests;
