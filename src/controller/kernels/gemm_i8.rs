//! INT8 matrix product `y[M, N] ≈ x[M, K] * W[N, K]^T + bias` for weights that stay fixed
//! across calls (the controller's token-wise linear maps), computed exactly in integers.
//!
//! Quantisation (symmetric, no zero points):
//! - weights once, at pack time, per output row `n`: `s_w[n] = max_k |W[n, k]| / 127` and
//!   `qw[n, k] = round(W[n, k] / s_w[n])` in `[-127, 127]`;
//! - activations per call, per row `m`: `s_x[m] = max_k |x[m, k]| / 127` and
//!   `qx[m, k] = round_ties_even(x[m, k] / s_x[m])` in `[-127, 127]`.
//!
//! The product: `y[m, n] = s_x[m] * s_w[n] * sum_k qx[m, k] * qw[n, k] + bias[n]`, then the
//! [`Epilogue`]. The integer sum is exact (`|sum| <= 127 * 127 * K`, far inside `i32` for any
//! K below 133,000), so every kernel gives the same bits.
//!
//! AVX512-VNNI's `vpdpbusd` multiplies *unsigned* by signed bytes, so activations are stored
//! shifted, `ux = qx + 128` in `[1, 255]`, and the kernel subtracts the shift's contribution
//! through a per-column correction computed at pack time:
//! `sum_k ux * qw = sum_k qx * qw + 128 * sum_k qw[n, k]`, so each accumulator starts at
//! `-128 * sum_k qw[n, k]`. Each `vpdpbusd` lane adds four `u8 * s8` products (at most
//! `4 * 255 * 127`, no saturation with the non-saturating form) to an `i32`.
//!
//! Layout: `K` is padded to a multiple of 4 (`kp`); panel `p` covers outputs `p*NR ..
//! p*NR+NR` and holds, for each group `g` of four `k`, `NR` columns of four bytes:
//! `data[p*kp*NR + g*4*NR + j*4 + t] = qw[p*NR + j, 4g + t]` (one 64-byte load feeds 16
//! columns). Padding (columns past `N`, `k` past `K`) is zero.

use super::gemm::{Epilogue, MR, NR};
use rayon::prelude::*;
use std::cell::Cell;

/// Groups of four `k` the VNNI kernel prefetches ahead (1 KiB of panel).
const PREFETCH_GROUPS: usize = 8;
/// `k` values per VNNI group (bytes per `i32` lane).
const KG: usize = 4;
/// Products smaller than this many multiply-adds run on the calling thread.
const PAR_MIN_MACS: usize = 1 << 19;

/// Which integer microkernel [`gemm_i8`] runs; picked once per process by [`I8Path::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Path {
    /// AVX-512F/BW with VNNI: 8 rows x 32 columns in 16 `zmm` `i32` accumulators, one
    /// `vpdpbusd` per 16 columns x 4 `k` per row.
    Vnni,
    /// Plain Rust over the same packed bytes (slow; the fallback and the test oracle's twin).
    Portable,
}

impl I8Path {
    /// The best path this CPU supports.
    pub fn detect() -> Self {
        if I8Path::Vnni.available() {
            I8Path::Vnni
        } else {
            I8Path::Portable
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            I8Path::Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            I8Path::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The path's name as benchmarks print it.
    pub fn name(self) -> &'static str {
        match self {
            I8Path::Vnni => "avx512-vnni",
            I8Path::Portable => "portable",
        }
    }
}

/// The path chosen for this process (detected once).
pub fn i8_path() -> I8Path {
    static PATH: std::sync::OnceLock<I8Path> = std::sync::OnceLock::new();
    *PATH.get_or_init(I8Path::detect)
}

/// A weight matrix `W[N, K]` quantised to int8 per output row and packed for [`gemm_i8`]
/// (layout in the module documentation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedMatrixI8 {
    data: Vec<i8>,
    /// Per-column dequantisation scale `s_w`, padded to whole panels with zeros.
    scale: Vec<f32>,
    /// Bias, padded with zeros.
    bias: Vec<f32>,
    /// `-128 * sum_k qw[n, k]` per column: where each accumulator starts.
    neg_corr: Vec<i32>,
    n: usize,
    k: usize,
    kp: usize,
}

impl PackedMatrixI8 {
    /// Quantises and packs row-major `w` (`[n, k]`) and an optional bias (`[n]`, zero when
    /// `None`).
    ///
    /// Panics if the slice lengths disagree with `n` and `k` (a programming error: callers
    /// hold matrices whose shapes were checked when they were built).
    pub fn pack(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "packed int8 matrix: weights are not [{n}, {k}]"
        );
        let kp = k.div_ceil(KG) * KG;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * kp * NR];
        let mut scale = vec![0.0f32; panels * NR];
        let mut neg_corr = vec![0i32; panels * NR];
        for o in 0..n {
            let row = &w[o * k..(o + 1) * k];
            let (q, s) = quantize_weight_row(row);
            scale[o] = s;
            neg_corr[o] = -128 * q.iter().map(|&v| v as i32).sum::<i32>();
            let (p, j) = (o / NR, o % NR);
            let panel = &mut data[p * kp * NR..(p + 1) * kp * NR];
            for (kk, &v) in q.iter().enumerate() {
                panel[(kk / KG) * KG * NR + j * KG + kk % KG] = v;
            }
        }
        let mut padded = vec![0.0f32; panels * NR];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "packed int8 matrix: bias is not [{n}]");
            padded[..n].copy_from_slice(b);
        }
        PackedMatrixI8 {
            data,
            scale,
            bias: padded,
            neg_corr,
            n,
            k,
            kp,
        }
    }

    /// Output features `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The quantised weight `qw[o, kk]` (for tests and diagnostics).
    pub fn code(&self, o: usize, kk: usize) -> i8 {
        let (p, j) = (o / NR, o % NR);
        self.data[p * self.kp * NR + (kk / KG) * KG * NR + j * KG + kk % KG]
    }

    /// The dequantisation scale `s_w[o]` of output row `o`.
    pub fn scale(&self, o: usize) -> f32 {
        self.scale[o]
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// Symmetric per-row weight quantisation: the codes and the scale (all zero for a zero row).
fn quantize_weight_row(row: &[f32]) -> (Vec<i8>, f32) {
    let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if !(max > 0.0 && max.is_finite()) {
        return (vec![0; row.len()], 0.0);
    }
    let inv = 127.0 / max;
    let q = row
        .iter()
        .map(|&v| (v * inv).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, max / 127.0)
}

/// Activations quantised per row for one product: shifted codes `ux = qx + 128` (`[m, kp]`,
/// padding `k` holds 128, i.e. zero) and the per-row scales `s_x`.
#[derive(Debug, Default)]
pub struct QuantRows {
    codes: Vec<u8>,
    scale: Vec<f32>,
    kp: usize,
}

impl QuantRows {
    /// Quantises `m` rows of `x` (row `r` at `x[r*ldx .. r*ldx + k]`) with `path`'s code
    /// (the portable one where the CPU lacks it; same result on every path).
    pub fn quantize(&mut self, path: I8Path, x: &[f32], ldx: usize, m: usize, k: usize) {
        let path = resolve(path);
        let kp = k.div_ceil(KG) * KG;
        self.kp = kp;
        self.codes.clear();
        self.codes.resize(m * kp, 128);
        self.scale.clear();
        self.scale.resize(m, 0.0);
        for r in 0..m {
            let src = &x[r * ldx..r * ldx + k];
            let dst = &mut self.codes[r * kp..r * kp + k];
            self.scale[r] = match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `resolve` only keeps this path when the CPU has AVX-512.
                I8Path::Vnni => unsafe { x86::quantize_row_avx512(src, dst) },
                _ => quantize_row_portable(src, dst),
            };
        }
    }

    /// The signed code `qx[r, kk]` (for tests).
    pub fn code(&self, r: usize, kk: usize) -> i32 {
        self.codes[r * self.kp + kk] as i32 - 128
    }
}

/// `(max |row|, 127 / max)` or `(0, 0)` for a zero (or non-finite) row.
#[inline(always)]
fn row_scale(max: f32) -> (f32, f32) {
    if max > 0.0 && max.is_finite() {
        (max / 127.0, 127.0 / max)
    } else {
        (0.0, 0.0)
    }
}

/// One activation row to shifted codes; returns its scale `s_x`.
fn quantize_row_portable(src: &[f32], dst: &mut [u8]) -> f32 {
    let max = src.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (s, inv) = row_scale(max);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = code_of(v, inv);
    }
    s
}

/// The shifted code of `v` at inverse scale `inv` (round half to even, as `vcvtps2dq`).
#[inline(always)]
fn code_of(v: f32, inv: f32) -> u8 {
    ((v * inv).round_ties_even().clamp(-127.0, 127.0) as i32 + 128) as u8
}

thread_local! {
    /// Per-thread activation codes, taken out for the duration of one product (so a nested
    /// product run by work stealing on the same thread simply allocates its own). A `Cell`
    /// rather than a `RefCell`: it cannot be borrowed at all, so no borrow can be held across
    /// the parallel loop.
    static ROWS: Cell<QuantRows> = Cell::new(QuantRows::default());
}

/// `y[m, :] = dequant(x[m, :] * W^T) + bias` for `m` rows, then `epi`, with the process's
/// [`i8_path`]. The epilogue must be elementwise: it runs over whole tiles of up to
/// `MR * NR` values (rows of one panel, padding columns included, which are never stored).
///
/// Panics if `x` is not `[m, K]` or `y` is not `[m, N]` (callers size their buffers from the
/// same shapes).
pub fn gemm_i8(x: &[f32], m: usize, w: &PackedMatrixI8, y: &mut [f32], epi: Epilogue) {
    gemm_i8_with(i8_path(), x, m, w, y, epi)
}

/// [`gemm_i8`] on an explicit path (for tests and benchmarks). Falls back to the portable
/// kernel when the CPU lacks the requested features; the result is the same either way.
pub fn gemm_i8_with(
    path: I8Path,
    x: &[f32],
    m: usize,
    w: &PackedMatrixI8,
    y: &mut [f32],
    epi: Epilogue,
) {
    assert_eq!(x.len(), m * w.k, "gemm_i8: x is not [{m}, {}]", w.k);
    assert_eq!(y.len(), m * w.n, "gemm_i8: y is not [{m}, {}]", w.n);
    if m == 0 || w.n == 0 {
        return;
    }
    let path = resolve(path);
    let mut q = ROWS.take();
    q.quantize(path, x, w.k, m, w.k);
    let out = OutPtr(y.as_mut_ptr());
    let task = |p: usize| {
        // SAFETY: each panel writes only its own column range of `y` (`m` rows of `w.n`,
        // checked above), so tasks never overlap, and `y` outlives the blocking loop.
        unsafe {
            match path {
                #[cfg(target_arch = "x86_64")]
                I8Path::Vnni => x86::panel_task_avx512(path, &q, m, w, p, out, epi),
                _ => panel_task(path, &q, m, w, p, out, epi),
            }
        }
    };
    if m * w.n * w.k >= PAR_MIN_MACS && w.panels() > 1 {
        (0..w.panels()).into_par_iter().for_each(task);
    } else {
        (0..w.panels()).for_each(task);
    }
    ROWS.set(q);
}

/// The exact integer sums `sum_k qx[r, k] * qw[o, k]` (`[m, N]`) that [`gemm_i8_with`]
/// dequantises, for quantised rows `q` (tests check them against a scalar triple loop).
pub fn accumulate_i8_with(path: I8Path, q: &QuantRows, m: usize, w: &PackedMatrixI8) -> Vec<i32> {
    let path = resolve(path);
    assert!(
        q.kp == w.kp && q.codes.len() >= m * w.kp,
        "accumulate_i8: rows are not [{m}, {}]",
        w.kp
    );
    let mut acc = vec![0i32; m * w.n];
    let mut tile = [[0i32; NR]; MR];
    for p in 0..w.panels() {
        let cols = NR.min(w.n - p * NR);
        for r0 in (0..m).step_by(MR) {
            let rows = MR.min(m - r0);
            microkernel(path, q, r0, rows, w, p, &mut tile);
            for r in 0..rows {
                acc[(r0 + r) * w.n + p * NR..][..cols].copy_from_slice(&tile[r][..cols]);
            }
        }
    }
    acc
}

/// `path` if this CPU runs it, else the portable kernel.
fn resolve(path: I8Path) -> I8Path {
    if path.available() {
        path
    } else {
        I8Path::Portable
    }
}

/// The output pointer shared by the panel tasks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `gemm_i8_with`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Computes the columns of panel `p` for every row, MR rows at a time: integer tile, then
/// dequantisation, bias and the epilogue.
///
/// # Safety
/// `out` must point to `m` rows of `w.n` floats that no other thread touches in this
/// panel's columns.
#[inline(always)]
unsafe fn panel_task(
    path: I8Path,
    q: &QuantRows,
    m: usize,
    w: &PackedMatrixI8,
    p: usize,
    out: OutPtr,
    epi: Epilogue,
) {
    let cols = NR.min(w.n - p * NR);
    let sw: &[f32; NR] = w.scale[p * NR..(p + 1) * NR]
        .try_into()
        .expect("scale panel has NR entries");
    let bias: &[f32; NR] = w.bias[p * NR..(p + 1) * NR]
        .try_into()
        .expect("bias panel has NR entries");
    let mut tile = [[0i32; NR]; MR];
    let mut vals = [0.0f32; MR * NR];
    let mut r0 = 0;
    while r0 < m {
        let rows = MR.min(m - r0);
        microkernel(path, q, r0, rows, w, p, &mut tile);
        for (r, (t, v)) in tile
            .iter()
            .zip(vals.chunks_exact_mut(NR))
            .enumerate()
            .take(rows)
        {
            let v: &mut [f32; NR] = v.try_into().expect("chunks are NR long");
            dequant(t, q.scale[r0 + r], sw, bias, v);
        }
        // The epilogue runs once over the whole tile (independent vectors for an elementwise
        // function to overlap; padding columns are finite and never stored).
        if let Epilogue::Apply(f) = epi {
            f(&mut vals[..rows * NR]);
        }
        for (r, v) in vals.chunks_exact(NR).enumerate().take(rows) {
            // SAFETY: row r0 + r < m and columns p*NR .. p*NR + cols <= n are in bounds.
            let dst = std::slice::from_raw_parts_mut(out.0.add((r0 + r) * w.n + p * NR), cols);
            dst.copy_from_slice(&v[..cols]);
        }
        r0 += rows;
    }
}

/// `out[j] = acc[j] * (s_x * s_w[j]) + bias[j]` (the same arithmetic on every path).
#[inline(always)]
fn dequant(acc: &[i32; NR], sx: f32, sw: &[f32; NR], bias: &[f32; NR], out: &mut [f32; NR]) {
    for j in 0..NR {
        out[j] = acc[j] as f32 * (sx * sw[j]) + bias[j];
    }
}

/// `tile[r, j] = sum_k qx[r0 + r, k] * qw[p*NR + j, k]` for `rows <= MR` rows.
fn microkernel(
    path: I8Path,
    q: &QuantRows,
    r0: usize,
    rows: usize,
    w: &PackedMatrixI8,
    p: usize,
    tile: &mut [[i32; NR]; MR],
) {
    let kp = w.kp;
    let xs = &q.codes[r0 * kp..(r0 + rows) * kp];
    let panel = &w.data[p * kp * NR..(p + 1) * kp * NR];
    let corr: &[i32; NR] = w.neg_corr[p * NR..(p + 1) * NR]
        .try_into()
        .expect("correction panel has NR entries");
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `resolve` only keeps this path when the CPU has AVX-512 VNNI.
        I8Path::Vnni => unsafe { x86::kernel_vnni(xs, rows, kp, panel, corr, tile) },
        _ => kernel_portable(xs, rows, kp, panel, corr, tile),
    }
}

/// Portable microkernel over the packed bytes: the same shifted-activation arithmetic as
/// the VNNI kernel, one row at a time.
fn kernel_portable(
    xs: &[u8],
    rows: usize,
    kp: usize,
    panel: &[i8],
    corr: &[i32; NR],
    tile: &mut [[i32; NR]; MR],
) {
    for (r, out) in tile.iter_mut().enumerate().take(rows) {
        let mut acc = *corr;
        let xr = &xs[r * kp..(r + 1) * kp];
        for (xg, wg) in xr.chunks_exact(KG).zip(panel.chunks_exact(KG * NR)) {
            for (a, wj) in acc.iter_mut().zip(wg.chunks_exact(KG)) {
                for t in 0..KG {
                    *a += xg[t] as i32 * wj[t] as i32;
                }
            }
        }
        *out = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 VNNI microkernel and activation quantiser.
    use super::{
        code_of, row_scale, Epilogue, I8Path, OutPtr, PackedMatrixI8, QuantRows, KG, MR, NR,
        PREFETCH_GROUPS,
    };
    use std::arch::x86_64::*;

    /// One activation row to shifted codes with AVX-512 (the same codes as
    /// [`super::quantize_row_portable`]: `vcvtps2dq` rounds half to even); returns `s_x`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_row_avx512(src: &[f32], dst: &mut [u8]) -> f32 {
        let n = src.len().min(dst.len());
        let body = n / 16 * 16;
        let sp = src.as_ptr();
        let mut vmax = _mm512_setzero_ps();
        for i in (0..body).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(sp.add(i))));
        }
        let mut max = _mm512_reduce_max_ps(vmax);
        for &v in &src[body..n] {
            max = max.max(v.abs());
        }
        let (s, inv) = row_scale(max);
        let vinv = _mm512_set1_ps(inv);
        let (lo, hi, shift) = (
            _mm512_set1_epi32(-127),
            _mm512_set1_epi32(127),
            _mm512_set1_epi32(128),
        );
        for i in (0..body).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(sp.add(i)), vinv);
            let c = _mm512_cvtps_epi32(v);
            let c = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(c, lo), hi), shift);
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(c),
            );
        }
        for (d, &v) in dst[body..n].iter_mut().zip(&src[body..n]) {
            *d = code_of(v, inv);
        }
        s
    }

    /// [`super::panel_task`] compiled for AVX-512 (the dequantisation vectorises wider; the
    /// same arithmetic, so the same bits).
    ///
    /// # Safety
    /// As [`super::panel_task`], and the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_task_avx512(
        path: I8Path,
        q: &QuantRows,
        m: usize,
        w: &PackedMatrixI8,
        p: usize,
        out: OutPtr,
        epi: Epilogue,
    ) {
        super::panel_task(path, q, m, w, p, out, epi)
    }

    /// AVX-512 VNNI microkernel: dispatches `rows` to a fully unrolled kernel.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, AVX-512BW and AVX512-VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn kernel_vnni(
        xs: &[u8],
        rows: usize,
        kp: usize,
        panel: &[i8],
        corr: &[i32; NR],
        tile: &mut [[i32; NR]; MR],
    ) {
        match rows {
            8 => vnni_rows::<8>(xs, kp, panel, corr, tile),
            7 => vnni_rows::<7>(xs, kp, panel, corr, tile),
            6 => vnni_rows::<6>(xs, kp, panel, corr, tile),
            5 => vnni_rows::<5>(xs, kp, panel, corr, tile),
            4 => vnni_rows::<4>(xs, kp, panel, corr, tile),
            3 => vnni_rows::<3>(xs, kp, panel, corr, tile),
            2 => vnni_rows::<2>(xs, kp, panel, corr, tile),
            _ => vnni_rows::<1>(xs, kp, panel, corr, tile),
        }
    }

    /// `R` rows x 32 columns: two `zmm` accumulators per row (starting at the shift
    /// correction); per group of four `k`, two 64-byte panel loads and one 4-byte broadcast
    /// per row feed `2R` `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_rows<const R: usize>(
        xs: &[u8],
        kp: usize,
        panel: &[i8],
        corr: &[i32; NR],
        tile: &mut [[i32; NR]; MR],
    ) {
        assert!(xs.len() >= R * kp && panel.len() >= kp * NR && kp % KG == 0);
        let (xp, wp) = (xs.as_ptr(), panel.as_ptr());
        let c0 = _mm512_loadu_si512(corr.as_ptr() as *const _);
        let c1 = _mm512_loadu_si512(corr.as_ptr().add(16) as *const _);
        let mut acc = [[c0, c1]; R];
        for g in 0..kp / KG {
            let w0 = _mm512_loadu_si512(wp.add(g * KG * NR) as *const _);
            let w1 = _mm512_loadu_si512(wp.add(g * KG * NR + 64) as *const _);
            // Pull the panel in ahead of use (it streams from L3 on the first row tile; a
            // prefetch past the end is harmless, and `wrapping_add` keeps the address legal).
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((g + PREFETCH_GROUPS) * KG * NR));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = (xp.add(r * kp + g * KG) as *const i32).read_unaligned();
                let xv = _mm512_set1_epi32(xv);
                a[0] = _mm512_dpbusd_epi32(a[0], xv, w0);
                a[1] = _mm512_dpbusd_epi32(a[1], xv, w1);
            }
        }
        for (a, t) in acc.iter().zip(tile.iter_mut()) {
            _mm512_storeu_si512(t.as_mut_ptr() as *mut _, a[0]);
            _mm512_storeu_si512(t.as_mut_ptr().add(16) as *mut _, a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// Every path this CPU runs, plus the VNNI request (which must fall back cleanly when
    /// the CPU lacks it).
    fn paths() -> [I8Path; 2] {
        [I8Path::Vnni, I8Path::Portable]
    }

    /// Quantised rows of `x` on `path`.
    fn quantized(path: I8Path, x: &[f32], m: usize, k: usize) -> QuantRows {
        let mut q = QuantRows::default();
        q.quantize(resolve(path), x, k, m, k);
        q
    }

    /// `sum_k qx[r, k] * qw[o, k]` by the definition, on signed codes (no shift).
    fn scalar_sums(q: &QuantRows, w: &PackedMatrixI8, m: usize) -> Vec<i32> {
        let mut acc = vec![0i32; m * w.n];
        for r in 0..m {
            for o in 0..w.n {
                acc[r * w.n + o] = (0..w.k)
                    .map(|kk| q.code(r, kk) * w.code(o, kk) as i32)
                    .sum();
            }
        }
        acc
    }

    /// Random `[m, k]` activations with a few outliers, `[n, k]` weights and a bias.
    fn operands(seed: u64, m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let mut x = rng.vec_uniform(m * k, 1.0);
        for i in (0..x.len()).step_by(37) {
            x[i] *= 6.0;
        }
        (x, rng.vec_uniform(n * k, 0.5), rng.vec_uniform(n, 1.0))
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (8, 32, 64),
        (9, 33, 7),
        (3, 65, 100),
        (17, 31, 64),
        (13, 70, 130),
        (32, 96, 513),
    ];

    #[test]
    fn integer_sums_are_bit_exact_on_every_path_and_ragged_shape() {
        let mut rng = Rng::new(5);
        let mut shapes = SHAPES.to_vec();
        for _ in 0..12 {
            let m = 1 + rng.below(20) as usize;
            let n = 1 + rng.below(100) as usize;
            let k = 1 + rng.below(200) as usize;
            shapes.push((m, n, k));
        }
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            let (x, w, b) = operands(i as u64, m, n, k);
            let packed = PackedMatrixI8::pack(&w, Some(&b), n, k);
            for path in paths() {
                let q = quantized(path, &x, m, k);
                let want = scalar_sums(&q, &packed, m);
                assert_eq!(
                    accumulate_i8_with(path, &q, m, &packed),
                    want,
                    "{path:?} {m}x{n}x{k}"
                );
            }
        }
    }

    #[test]
    fn both_quantisers_give_the_same_codes_and_scales() {
        for &(m, _, k) in SHAPES {
            let (mut x, _, _) = operands(k as u64, m, 1, k);
            // Exact halves after scaling: the row maximum 127 maps x to x itself.
            x[0] = 127.0;
            if k > 2 {
                x[1] = 2.5;
                x[2] = -3.5;
            }
            let a = quantized(I8Path::Vnni, &x, m, k);
            let b = quantized(I8Path::Portable, &x, m, k);
            assert_eq!((&a.codes, &a.scale), (&b.codes, &b.scale));
            if k > 2 {
                // Half to even, as vcvtps2dq.
                assert_eq!((b.code(0, 1), b.code(0, 2)), (2, -4));
            }
            assert!((0..m).all(|r| (0..k).all(|kk| b.code(r, kk).abs() <= 127)));
        }
    }

    #[test]
    fn products_match_the_dequantised_sums_and_the_f32_product() {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let (x, w, b) = operands(100 + i as u64, m, n, k);
            let packed = PackedMatrixI8::pack(&w, Some(&b), n, k);
            let q = quantized(I8Path::Portable, &x, m, k);
            let sums = scalar_sums(&q, &packed, m);
            let mut first: Option<Vec<f32>> = None;
            for path in paths() {
                let mut y = vec![f32::NAN; m * n];
                gemm_i8_with(path, &x, m, &packed, &mut y, Epilogue::None);
                for r in 0..m {
                    for o in 0..n {
                        let want = sums[r * n + o] as f32 * (q.scale[r] * packed.scale(o)) + b[o];
                        assert_eq!(y[r * n + o], want, "{path:?} {m}x{n}x{k} [{r}, {o}]");
                        // Against the f32 product: rounding each code costs at most half a
                        // step of either scale.
                        let exact: f64 = (0..k)
                            .map(|kk| x[r * k + kk] as f64 * w[o * k + kk] as f64)
                            .sum::<f64>()
                            + b[o] as f64;
                        let xmax = (0..k).map(|kk| x[r * k + kk].abs()).fold(0.0, f32::max);
                        let wmax = (0..k).map(|kk| w[o * k + kk].abs()).fold(0.0, f32::max);
                        let bound = k as f64 * (xmax * wmax) as f64 / 127.0 + 1e-5;
                        assert!((y[r * n + o] as f64 - exact).abs() <= bound);
                    }
                }
                match &first {
                    None => first = Some(y),
                    Some(f) => assert_eq!(f, &y, "paths disagree at {m}x{n}x{k}"),
                }
            }
        }
    }

    #[test]
    fn the_unsigned_shift_is_corrected() {
        // All weights +1 (code 127) and all activations -1 (code -127): the true sum is
        // -127 * 127 * K. Without the -128 * sum(qw) correction the kernels would return the
        // sum over (qx + 128) = 1, i.e. +127 * K.
        let (m, n, k) = (3, 40, 70);
        let packed = PackedMatrixI8::pack(&vec![1.0; n * k], None, n, k);
        let x = vec![-1.0; m * k];
        for path in paths() {
            let q = quantized(path, &x, m, k);
            let acc = accumulate_i8_with(path, &q, m, &packed);
            assert!(
                acc.iter().all(|&a| a == -127 * 127 * k as i32),
                "{path:?}: {acc:?}"
            );
            let mut y = vec![0.0; m * n];
            gemm_i8_with(path, &x, m, &packed, &mut y, Epilogue::None);
            assert!(
                y.iter().all(|&v| (v + k as f32).abs() < 1e-3),
                "{path:?}: {y:?}"
            );
        }
    }

    #[test]
    fn zero_rows_and_zero_weights_give_the_bias_then_the_epilogue() {
        let (m, n, k) = (4, 35, 9);
        let b: Vec<f32> = (0..n).map(|i| i as f32 - 10.0).collect();
        let packed = PackedMatrixI8::pack(&vec![0.0; n * k], Some(&b), n, k);
        let (x, _, _) = operands(3, m, 1, k);
        for path in paths() {
            let mut y = vec![f32::NAN; m * n];
            let relu = Epilogue::Apply(|r| r.iter_mut().for_each(|v| *v = v.max(0.0)));
            gemm_i8_with(path, &x, m, &packed, &mut y, relu);
            for r in 0..m {
                assert!((0..n).all(|o| y[r * n + o] == b[o].max(0.0)));
            }
        }
        // A zero activation row against non-zero weights gives the bias too.
        let (_, w, _) = operands(4, 1, n, k);
        let packed = PackedMatrixI8::pack(&w, Some(&b), n, k);
        let mut y = vec![f32::NAN; n];
        gemm_i8(&vec![0.0; k], 1, &packed, &mut y, Epilogue::None);
        assert_eq!(y, b);
    }

    #[test]
    fn a_large_product_runs_in_parallel_and_agrees_with_the_serial_one() {
        // Crosses PAR_MIN_MACS, so the panels are split across threads.
        let (m, n, k) = (32, 200, 96);
        let (x, w, b) = operands(9, m, n, k);
        let packed = PackedMatrixI8::pack(&w, Some(&b), n, k);
        let q = quantized(I8Path::Portable, &x, m, k);
        let sums = scalar_sums(&q, &packed, m);
        let mut y = vec![0.0; m * n];
        gemm_i8(&x, m, &packed, &mut y, Epilogue::None);
        for (i, &s) in sums.iter().enumerate() {
            let (r, o) = (i / n, i % n);
            assert_eq!(y[i], s as f32 * (q.scale[r] * packed.scale(o)) + b[o]);
        }
    }

    #[test]
    fn weight_codes_land_where_the_layout_says() {
        let (n, k) = (35, 6);
        let w: Vec<f32> = (0..n * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let p = PackedMatrixI8::pack(&w, None, n, k);
        assert_eq!((p.n(), p.k(), p.kp, p.panels()), (35, 6, 8, 2));
        for o in 0..n {
            let max = w[o * k..(o + 1) * k]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(p.scale(o), max / 127.0);
            for kk in 0..k {
                let want = (w[o * k + kk] * 127.0 / max).round() as i8;
                assert_eq!(p.code(o, kk), want);
            }
            // Padding k is zero.
            assert_eq!((p.code(o, 6), p.code(o, 7)), (0, 0));
        }
        assert!(p.scale[n..].iter().all(|&s| s == 0.0));
    }
}
