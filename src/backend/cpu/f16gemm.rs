//! Blocked multi-row product on FP16 weights (prefill), AVX-512F + F16C:
//! `out[r, o] = sum_k w[o, k] * x[r, k]` with `w` `[n_out, n_in]` row-major FP16, `x`
//! `[rows, n_in]` and `out` `[rows, n_out]` row-major f32.
//!
//! The one-row kernels of [`super::f16mat`] widen every weight once per input row, so a
//! prefill spends its time in `vcvtph2ps`. Here each weight is widened once per call:
//!
//! - **Work split.** One rayon task per panel of `PANEL_OUTS` outputs; tasks write disjoint
//!   output columns.
//! - **Panel.** Per K block of `KC` positions the task widens its 32 weight rows to f32 and
//!   transposes them (16 x 16 in registers) into a thread-local panel of `KC` lines of 32
//!   outputs (`panel[2k + h]` = outputs `16h .. 16h + 16` at position `k`; 32 KiB, so it
//!   stays in L1/L2 while every input row passes over it). Outputs past `n_out` are zero.
//! - **Micro-kernel.** `MR` input rows x 32 outputs in 16 zmm accumulators: per K position,
//!   two panel loads and one broadcast input per row feed `2 * MR` FMAs; no horizontal sums
//!   and no K tail (the loop runs over single positions). The first K block starts from zero,
//!   later ones add to the tile already in `out`.
//!
//! All arithmetic is f32 FMA in increasing K order per output, so each result is within
//! `n_in * 2^-24 * sum |w x|` of the exact product.

#[cfg(target_arch = "x86_64")]
use super::gemm_tile::{out_masks, transpose16, Line};
use super::gemm_tile::{SharedOut, PANEL_OUTS};
use half::f16;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
#[cfg(target_arch = "x86_64")]
use std::cell::Cell;

/// Fewest input rows [`super::f16mat::f16_matmul_on`] sends here (see
/// `gemm_tile::BLOCKED_MIN_ROWS`: fewer rows stay bit-identical to one-row products).
pub const MIN_ROWS: usize = super::gemm_tile::BLOCKED_MIN_ROWS;

/// Input rows per micro-kernel call (16 accumulators of the 32 zmm registers).
const MR: usize = 8;

/// K positions per panel (`KC` x 32 f32 = 32 KiB).
const KC: usize = 256;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Per-thread panel, taken out for one task (no rayon work runs while it is out).
    static PANEL: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// True when this CPU runs the blocked FP16 product (AVX-512F and F16C).
pub fn available() -> bool {
    super::simd::avx512f()
}

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows, parallel over panels of
/// outputs. Returns false (nothing written) when the CPU lacks AVX-512F.
///
/// # Panics
/// When a slice is shorter than its shape (the backend checks lengths before calling).
pub fn f16_gemm(
    w: &[f16],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    if !available() {
        return false;
    }
    assert!(
        w.len() >= n_out * n_in && x.len() >= rows * n_in && out.len() >= rows * n_out,
        "f16_gemm: slices shorter than [{n_out}, {n_in}] x {rows}"
    );
    if rows == 0 || n_out == 0 {
        return true;
    }
    if n_in == 0 {
        out[..rows * n_out].fill(0.0);
        return true;
    }
    let dst = SharedOut::new(out);
    (0..n_out.div_ceil(PANEL_OUTS))
        .into_par_iter()
        .for_each(|b| panel_task(w, n_out, n_in, x, rows, dst, b));
    true
}

/// Outputs `32 b .. 32 b + 32` of every input row: one panel per K block, then every block
/// of `MR` input rows over it.
#[cfg(target_arch = "x86_64")]
fn panel_task(
    w: &[f16],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    rows: usize,
    dst: SharedOut,
    b: usize,
) {
    let mut panel = PANEL.take();
    panel.resize(2 * KC, Line::default());
    let o0 = b * PANEL_OUTS;
    let n = PANEL_OUTS.min(n_out - o0);
    let masks = out_masks(n);
    for k0 in (0..n_in).step_by(KC) {
        let kc = KC.min(n_in - k0);
        // SAFETY: `available()` was checked by the caller; `w` holds rows `o0 .. o0 + n` and
        // `x` rows `0 .. rows` (asserted there); the panel holds `2 * KC` lines; this task
        // alone writes output columns `o0 .. o0 + n` (masked), of rows below `rows`.
        unsafe {
            pack(w, n_in, o0, n, k0, kc, &mut panel);
            let mut r = 0;
            while r < rows {
                let mr = MR.min(rows - r);
                let xp = x.as_ptr().add(r * n_in + k0);
                let op = dst.get().wrapping_add(r * n_out + o0);
                let p = panel.as_ptr() as *const f32;
                match mr {
                    8 => tile::<8>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    7 => tile::<7>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    6 => tile::<6>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    5 => tile::<5>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    4 => tile::<4>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    3 => tile::<3>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    2 => tile::<2>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                    _ => tile::<1>(p, kc, xp, n_in, op, n_out, masks, k0 > 0),
                }
                r += mr;
            }
        }
    }
    PANEL.set(panel);
}

#[cfg(not(target_arch = "x86_64"))]
fn panel_task(_: &[f16], _: usize, _: usize, _: &[f32], _: usize, _: SharedOut, _: usize) {
    unreachable!("AVX-512 is never detected off x86_64")
}

/// Widens weight rows `o0 .. o0 + n` (n <= 32) at K positions `k0 .. k0 + kc` into `panel`
/// (line `2k + h`: outputs `16h .. 16h + 16` at position `k0 + k`; zero past `n`): full
/// 16 x 16 tiles through the register transpose, the ragged rest one weight at a time.
///
/// # Safety
/// AVX-512F + F16C; `w` holds rows `o0 .. o0 + n` of `n_in`, `k0 + kc <= n_in`,
/// `panel.len() >= 2 * kc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn pack(
    w: &[f16],
    n_in: usize,
    o0: usize,
    n: usize,
    k0: usize,
    kc: usize,
    panel: &mut [Line],
) {
    debug_assert!(w.len() >= (o0 + n) * n_in && k0 + kc <= n_in && panel.len() >= 2 * kc);
    let pf = panel.as_mut_ptr() as *mut f32;
    for h in 0..2 {
        let rows_h = n.saturating_sub(16 * h).min(16);
        let ob = o0 + 16 * h;
        let mut k = 0;
        if rows_h == 16 {
            // Whole 64-byte lines first, each row's line read once: rows a power-of-two
            // apart share an L1 set, so a second pass over the same lines would miss.
            while k + 32 <= kc {
                let mut raw = [_mm512_setzero_si512(); 16];
                for (i, ri) in raw.iter_mut().enumerate() {
                    let at = (ob + i) * n_in + k0 + k;
                    // The same row's next K block, or past the last one the next panel's
                    // first (usually this thread's next task): 32 rows are too many streams
                    // for the hardware prefetchers.
                    let next = if k0 + KC < n_in {
                        at + KC
                    } else {
                        at + 32 * n_in - k0
                    };
                    _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(next) as *const i8);
                    *ri = _mm512_loadu_si512(w.as_ptr().add(at) as *const _);
                }
                for half in 0..2 {
                    let mut v = [_mm512_setzero_ps(); 16];
                    for (vi, ri) in v.iter_mut().zip(&raw) {
                        let hv = if half == 0 {
                            _mm512_castsi512_si256(*ri)
                        } else {
                            _mm512_extracti64x4_epi64::<1>(*ri)
                        };
                        *vi = _mm512_cvtph_ps(hv);
                    }
                    transpose16(&mut v);
                    for (c, vc) in v.iter().enumerate() {
                        _mm512_store_ps(pf.add(32 * (k + 16 * half + c) + 16 * h), *vc);
                    }
                }
                k += 32;
            }
            if k + 16 <= kc {
                let mut v = [_mm512_setzero_ps(); 16];
                for (i, vi) in v.iter_mut().enumerate() {
                    let src = w.as_ptr().add((ob + i) * n_in + k0 + k) as *const __m256i;
                    *vi = _mm512_cvtph_ps(_mm256_loadu_si256(src));
                }
                transpose16(&mut v);
                for (c, vc) in v.iter().enumerate() {
                    _mm512_store_ps(pf.add(32 * (k + c) + 16 * h), *vc);
                }
                k += 16;
            }
        }
        for kk in k..kc {
            for i in 0..16 {
                let v = if i < rows_h {
                    w[(ob + i) * n_in + k0 + kk].to_f32()
                } else {
                    0.0
                };
                *pf.add(32 * kk + 16 * h + i) = v;
            }
        }
    }
}

/// `R` input rows x 32 outputs over `kc` panel lines: `out[r, j] (+)= sum_k panel[k][j] *
/// x[r, k]`, rows `ldx` apart in `x` and `ldo` apart in `out`; lanes outside `masks` are
/// neither read nor written. `accumulate` adds to the tile in `out` (later K blocks).
///
/// # Safety
/// AVX-512F; `panel` holds `32 * kc` aligned f32, `x` rows `0 .. R` of `kc` values, and the
/// masked lanes of `out`'s rows `0 .. R` are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    panel: *const f32,
    kc: usize,
    x: *const f32,
    ldx: usize,
    out: *mut f32,
    ldo: usize,
    masks: [u16; 2],
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if accumulate {
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_maskz_loadu_ps(masks[0], out.wrapping_add(r * ldo));
            a[1] = _mm512_maskz_loadu_ps(masks[1], out.wrapping_add(r * ldo + 16));
        }
    }
    for k in 0..kc {
        let w0 = _mm512_load_ps(panel.add(32 * k));
        let w1 = _mm512_load_ps(panel.add(32 * k + 16));
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*x.add(r * ldx + k));
            a[0] = _mm512_fmadd_ps(w0, xv, a[0]);
            a[1] = _mm512_fmadd_ps(w1, xv, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.wrapping_add(r * ldo), masks[0], a[0]);
        _mm512_mask_storeu_ps(out.wrapping_add(r * ldo + 16), masks[1], a[1]);
    }
}

#[cfg(test)]
#[path = "f16gemm_tests.rs"]
mod tests;
