//! FP16 products on a panel layout: one kernel for every input row count (decode, speculative
//! verification, batched steps, prefill), so every count gives each row the same bits.
//!
//! **Layout** (written once, at upload, by [`F16Panels::pack`]): the `[out, in]` weights are
//! cut into panels of [`PANEL`] consecutive outputs; inside a panel the weights are K-major,
//! sixteen outputs per K position:
//!
//! `data[(p * in + k) * 16 + l] = w[16 p + l, k]` (zero for outputs past `out`).
//!
//! One K position of a panel is one 32-byte load widened to sixteen f32 lanes (`vcvtph2ps`),
//! one lane per output, so a product needs no horizontal sums and stores whole output vectors.
//!
//! **Arithmetic.** Each output accumulates in f32 FMAs over K in increasing order, alternating
//! between [`PHASES`] accumulators (even K positions into the first, odd into the second:
//! two FMA chains in flight for a single input row), which are added once at the end. The
//! kernels for 1 to [`ROWS`] input rows, the two-panel kernels and the portable fallback all
//! do exactly this per (output, row), so a product's bits do not depend on how many rows it carries.
//!
//! **Work split.** Tasks take contiguous runs of panels ([`super::worker_pool::stream_chunk`]:
//! about four per thread), so each thread streams one sequential run of weights; inside a task,
//! every panel is applied to the input rows [`ROWS`] at a time while it sits in L1/L2; from
//! three rows on (but for seven and eight), tasks take pairs of adjacent panels, applied up to
//! [`PAIR_ROWS`] rows at a time.

use super::gemm_tile::{par_filled, SharedOut};
use super::prefetch::NextPanels;
use crate::{Error, Result};
use half::f16;
use std::sync::Arc;

/// Outputs per panel: one 16-lane f32 vector.
pub const PANEL: usize = 16;
/// Accumulators per (output, input row), taking alternate K positions.
pub const PHASES: usize = 2;
/// Input rows per kernel call (2 x ROWS accumulators of the 32 zmm registers).
pub const ROWS: usize = 8;
/// Input rows per call of the two-panel kernel (4 x PAIR_ROWS accumulators: at 7 rows the
/// compiler's register allocation shuffles them between registers every step).
pub const PAIR_ROWS: usize = 6;
/// Products of this many input rows or more take two panels per kernel call, so that each
/// broadcast input feeds two FMAs (with one panel the broadcast loads, one per FMA, bound the
/// kernel), except at more than [`PAIR_ROWS`] and at most [`ROWS`] rows: there one call of the
/// one-panel kernel carries every row, and measured faster than two calls of the two-panel
/// one. One and two rows (decode) keep one panel per call: they stream weights, one stream
/// per task, as their prefetch distance was measured for.
const PAIR_MIN_ROWS: usize = 3;

/// FP16 weights in the panel layout (see the module docs).
#[derive(Clone, Debug)]
pub struct F16Panels {
    data: Arc<Vec<f16>>,
    out: usize,
    inp: usize,
}

impl F16Panels {
    /// Packs row-major `[out, in]` FP16 weights given as little-endian bytes.
    pub fn pack(bytes: &[u8], out: usize, inp: usize) -> Result<Self> {
        let need = out
            .checked_mul(inp)
            .and_then(|n| n.checked_mul(2))
            .ok_or_else(|| Error::invalid(format!("a {out} x {inp} FP16 matrix is too large")))?;
        if bytes.len() != need {
            return Err(Error::invalid(format!(
                "a {out} x {inp} FP16 matrix needs {need} bytes, got {}",
                bytes.len()
            )));
        }
        let panels = out.div_ceil(PANEL);
        let len = panels
            .checked_mul(PANEL * inp)
            .ok_or_else(|| Error::OutOfMemory(format!("FP16 panels for a {out} x {inp} matrix")))?;
        // Panels are independent; inside one, K runs outermost so the writes are sequential
        // while the sixteen rows are read as sixteen sequential streams.
        let data = par_filled(
            len,
            PANEL * inp,
            f16::ZERO,
            "FP16 panel values",
            |p, panel| {
                let lanes = PANEL.min(out - p * PANEL);
                let rows = &bytes[2 * p * PANEL * inp..2 * (p * PANEL + lanes) * inp];
                for (k, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                    for (l, d) in dst[..lanes].iter_mut().enumerate() {
                        let i = 2 * (l * inp + k);
                        *d = f16::from_le_bytes([rows[i], rows[i + 1]]);
                    }
                }
            },
        )?;
        Ok(F16Panels {
            data: Arc::new(data),
            out,
            inp,
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Weight row `o` widened to f32 into `dst` (`in` elements): an embedding lookup.
    pub fn row_into(&self, o: usize, dst: &mut [f32]) {
        let (p, l) = (o / PANEL, o % PANEL);
        let panel = &self.data[p * PANEL * self.inp..(p + 1) * PANEL * self.inp];
        for (k, d) in dst[..self.inp].iter_mut().enumerate() {
            *d = panel[k * PANEL + l].to_f32();
        }
    }

    /// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows, parallel over runs of
    /// panels.
    ///
    /// # Panics
    /// When `x` or `out` is shorter than its shape (the backend checks lengths first).
    pub fn matmul(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        Self::matmul_many(&mut [(self, out)], x, rows)
    }

    /// Several products of one input (`out_i = x w_i^T`, each as [`F16Panels::matmul`]) as one
    /// parallel job over the panels of all of them.
    ///
    /// # Panics
    /// When `x` or an output is shorter than its shape.
    pub fn matmul_many(products: &mut [(&F16Panels, &mut [f32])], x: &[f32], rows: usize) {
        Self::matmul_many_with(products, x, rows, super::simd::avx512f())
    }

    /// [`F16Panels::matmul_many`] on the AVX-512 kernels (`simd`, which the CPU must have) or
    /// the portable one.
    fn matmul_many_with(
        products: &mut [(&F16Panels, &mut [f32])],
        x: &[f32],
        rows: usize,
        simd: bool,
    ) {
        for (m, out) in products.iter() {
            let (n_out, n_in) = (m.out, m.inp);
            assert!(
                x.len() >= rows * n_in && out.len() >= rows * n_out,
                "F16Panels::matmul: slices shorter than [{n_out}, {n_in}] x {rows}"
            );
        }
        if rows == 0 {
            return;
        }
        if simd && rows >= PAIR_MIN_ROWS && !(PAIR_ROWS < rows && rows <= ROWS) {
            super::gemm_tile::for_each_product_panel(
                products,
                |m| m.out.div_ceil(2 * PANEL),
                |m, q, dst| m.pair_rows(q, x, rows, dst),
            );
            return;
        }
        super::gemm_tile::for_each_product_panel(
            products,
            |m| m.out.div_ceil(PANEL),
            |m, p, dst| m.panel_rows(p, x, rows, dst, simd),
        );
    }

    /// Panels `2q` and `2q + 1` against every input row, in the fewest calls of the two-panel
    /// kernel that carry at most [`PAIR_ROWS`] rows each, their row counts as even as can be;
    /// a last panel without a partner goes through [`F16Panels::panel_rows`]. The CPU must
    /// have AVX-512F and F16C.
    fn pair_rows(&self, q: usize, x: &[f32], rows: usize, dst: SharedOut) {
        let (n_out, n_in) = (self.out, self.inp);
        let p = 2 * q;
        if p + 1 >= n_out.div_ceil(PANEL) {
            return self.panel_rows(p, x, rows, dst, true);
        }
        let w = &self.data[p * PANEL * n_in..(p + 2) * PANEL * n_in];
        // The first panel of a pair is whole: another follows it.
        let lanes = PANEL.min(n_out - (p + 1) * PANEL);
        let calls = rows.div_ceil(PAIR_ROWS);
        for (c, (r, n)) in super::gemm_tile::even_row_calls(rows, PAIR_ROWS).enumerate() {
            let share = (c, calls);
            let xs = &x[r * n_in..(r + n) * n_in];
            let op = dst.get().wrapping_add(r * n_out + p * PANEL);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this task alone writes outputs `16p .. 16p + 16 + lanes` of rows
            // `r .. r + n`, all inside `out` (asserted by `matmul`); `w` is both panels and
            // `xs` holds `n` rows of `n_in`; the caller checked the CPU.
            unsafe {
                match n {
                    6 => tile_pair_avx512::<6>(w, n_in, xs, op, n_out, lanes, share),
                    5 => tile_pair_avx512::<5>(w, n_in, xs, op, n_out, lanes, share),
                    4 => tile_pair_avx512::<4>(w, n_in, xs, op, n_out, lanes, share),
                    3 => tile_pair_avx512::<3>(w, n_in, xs, op, n_out, lanes, share),
                    2 => tile_pair_avx512::<2>(w, n_in, xs, op, n_out, lanes, share),
                    _ => tile_pair_avx512::<1>(w, n_in, xs, op, n_out, lanes, share),
                }
            }
        }
    }

    /// Panel `p` against every input row, [`ROWS`] rows per kernel call.
    fn panel_rows(&self, p: usize, x: &[f32], rows: usize, dst: SharedOut, simd: bool) {
        let (n_out, n_in) = (self.out, self.inp);
        let w = &self.data[p * PANEL * n_in..(p + 1) * PANEL * n_in];
        let lanes = PANEL.min(n_out - p * PANEL);
        let mut r = 0;
        while r < rows {
            let n = ROWS.min(rows - r);
            let xs = &x[r * n_in..(r + n) * n_in];
            let op = dst.get().wrapping_add(r * n_out + p * PANEL);
            // SAFETY: this task alone writes outputs `16p .. 16p + lanes` of rows `r .. r + n`,
            // all inside `out` (asserted by `matmul`); `w` is the whole panel and `xs` holds
            // `n` rows of `n_in`.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    match n {
                        8 => tile_avx512::<8>(w, n_in, xs, op, n_out, lanes),
                        7 => tile_avx512::<7>(w, n_in, xs, op, n_out, lanes),
                        6 => tile_avx512::<6>(w, n_in, xs, op, n_out, lanes),
                        5 => tile_avx512::<5>(w, n_in, xs, op, n_out, lanes),
                        4 => tile_avx512::<4>(w, n_in, xs, op, n_out, lanes),
                        3 => tile_avx512::<3>(w, n_in, xs, op, n_out, lanes),
                        2 => tile_avx512::<2>(w, n_in, xs, op, n_out, lanes),
                        _ => tile_avx512::<1>(w, n_in, xs, op, n_out, lanes),
                    }
                    r += n;
                    continue;
                }
                let _ = simd;
                tile_portable(w, n_in, xs, n, op, n_out, lanes);
            }
            r += n;
        }
    }
}

/// The panel's products with `n` input rows in portable code: per (output, row) the same FMAs
/// in the same order as [`tile_avx512`] (`f32::mul_add` is a fused multiply-add).
///
/// # Safety
/// `op + r * out_stride + l` must be writable for `r < n`, `l < lanes`.
unsafe fn tile_portable(
    w: &[f16],
    n_in: usize,
    xs: &[f32],
    n: usize,
    op: *mut f32,
    out_stride: usize,
    lanes: usize,
) {
    for r in 0..n {
        let x = &xs[r * n_in..(r + 1) * n_in];
        for l in 0..lanes {
            let mut acc = [0.0f32; PHASES];
            for (k, &xk) in x.iter().enumerate() {
                let a = &mut acc[k % PHASES];
                *a = w[k * PANEL + l].to_f32().mul_add(xk, *a);
            }
            *op.add(r * out_stride + l) = acc[0] + acc[1];
        }
    }
}

/// How far ahead of the weight loads the panel kernel prefetches into L2, in 32-byte K
/// positions (8 KiB): the hardware prefetcher alone left one streaming core well short of its
/// share of the host's read bandwidth, and prefetching into L1 (2 KiB ahead) filled the core's
/// miss buffers instead.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 256;

/// The panel's products with `R` input rows: per K position one 32-byte weight load widened
/// to sixteen lanes and `R` FMAs with broadcast inputs into the position's phase accumulators;
/// then each row's two phases added and stored (masked to `lanes` outputs). Weights are
/// prefetched [`PREFETCH_AHEAD`] positions ahead, past the panel's end too (a prefetch never
/// faults; the next panel is usually the same thread's next one).
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `w` holds `16 * n_in` halves, `xs` `R * n_in` floats;
/// `op + r * out_stride + l` must be writable for `r < R`, `l < lanes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn tile_avx512<const R: usize>(
    w: &[f16],
    n_in: usize,
    xs: &[f32],
    op: *mut f32,
    out_stride: usize,
    lanes: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= PANEL * n_in && xs.len() >= R * n_in);
    let wp = w.as_ptr() as *const __m256i;
    let xp = xs.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); PHASES]; R];
    let mut k = 0;
    while k + PHASES <= n_in {
        _mm_prefetch::<_MM_HINT_T1>(wp.wrapping_add(k + PREFETCH_AHEAD) as *const i8);
        for ph in 0..PHASES {
            let wv = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(k + ph)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(r * n_in + k + ph));
                acc[ph] = _mm512_fmadd_ps(wv, xv, acc[ph]);
            }
        }
        k += PHASES;
    }
    if k < n_in {
        let wv = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(k)));
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_fmadd_ps(wv, _mm512_set1_ps(*xp.add(r * n_in + k)), acc[0]);
        }
    }
    let mask = if lanes >= PANEL {
        0xffff
    } else {
        (1u16 << lanes) - 1
    };
    for (r, acc) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(op.add(r * out_stride), mask, _mm512_add_ps(acc[0], acc[1]));
    }
}

/// [`tile_avx512`] for two adjacent panels at once (`w` holds both, `32 * n_in` halves): per K
/// position two weight loads widened to sixteen lanes each, and per row one broadcast input
/// feeding both panels' FMAs. Every output gets exactly [`tile_avx512`]'s FMAs in its order
/// (phases by K parity, added at the end), so the bits are the one-panel kernel's. The first
/// panel's sixteen outputs are stored whole, the second's masked to `lanes`. Call `share.0` of
/// the `share.1` that apply this pair prefetches its part of the next pair, a step per two K
/// positions ([`NextPanels`]).
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `w` holds `32 * n_in` halves, `xs` `R * n_in` floats;
/// `op + r * out_stride + l` must be writable for `r < R`, `l < 16 + lanes`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn tile_pair_avx512<const R: usize>(
    w: &[f16],
    n_in: usize,
    xs: &[f32],
    op: *mut f32,
    out_stride: usize,
    lanes: usize,
    share: (usize, usize),
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= 2 * PANEL * n_in && xs.len() >= R * n_in);
    let wa = w.as_ptr() as *const __m256i;
    let wb = wa.add(n_in);
    let xp = xs.as_ptr();
    let mut a = [[_mm512_setzero_ps(); PHASES]; R];
    let mut b = [[_mm512_setzero_ps(); PHASES]; R];
    let mut next = NextPanels::new(
        wa.wrapping_add(2 * n_in).cast(),
        n_in * 32,
        n_in / PHASES,
        share,
        true,
    );
    let mut k = 0;
    while k + PHASES <= n_in {
        next.step();
        for ph in 0..PHASES {
            let va = _mm512_cvtph_ps(_mm256_loadu_si256(wa.add(k + ph)));
            let vb = _mm512_cvtph_ps(_mm256_loadu_si256(wb.add(k + ph)));
            for r in 0..R {
                let xv = _mm512_set1_ps(*xp.add(r * n_in + k + ph));
                a[r][ph] = _mm512_fmadd_ps(va, xv, a[r][ph]);
                b[r][ph] = _mm512_fmadd_ps(vb, xv, b[r][ph]);
            }
        }
        k += PHASES;
    }
    if k < n_in {
        let va = _mm512_cvtph_ps(_mm256_loadu_si256(wa.add(k)));
        let vb = _mm512_cvtph_ps(_mm256_loadu_si256(wb.add(k)));
        for r in 0..R {
            let xv = _mm512_set1_ps(*xp.add(r * n_in + k));
            a[r][0] = _mm512_fmadd_ps(va, xv, a[r][0]);
            b[r][0] = _mm512_fmadd_ps(vb, xv, b[r][0]);
        }
    }
    let mask = if lanes >= PANEL {
        0xffff
    } else {
        (1u16 << lanes) - 1
    };
    for r in 0..R {
        let o = op.add(r * out_stride);
        _mm512_storeu_ps(o, _mm512_add_ps(a[r][0], a[r][1]));
        _mm512_mask_storeu_ps(o.add(PANEL), mask, _mm512_add_ps(b[r][0], b[r][1]));
    }
}

#[cfg(test)]
#[path = "f16panel_tests.rs"]
mod tests;
