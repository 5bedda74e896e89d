//! Fast f32 matrix product `y[M, N] = x[M, K] * W[N, K]^T (+ bias)` for weights that stay
//! fixed across calls (the controller's layers): `W` is packed once into column panels, and
//! each call runs a register-blocked microkernel chosen at run time (AVX-512, AVX2+FMA, or a
//! portable one), split over rayon's threads by panel.
//!
//! Results differ from [`crate::backend::cpu::dot`] only by summation order (each output is one running
//! sum over `k` in order, one FMA per step on the SIMD paths).

use rayon::prelude::*;

/// Output columns per packed panel (two AVX-512 vectors, four AVX2 vectors).
pub const NR: usize = 32;
/// Rows of `x` per microkernel call.
pub const MR: usize = 8;
/// Products smaller than this many multiply-adds run on the calling thread.
const PAR_MIN_MACS: usize = 1 << 19;

/// Which microkernel [`gemm`] runs; picked once per process by [`GemmPath::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// AVX-512F: 8 rows x 32 columns in 16 `zmm` accumulators.
    Avx512,
    /// AVX2 + FMA: up to 8 rows x 32 columns, four `ymm` accumulators per row, run as
    /// two 3-row and one 2-row passes so the accumulators fit in 16 registers.
    Avx2Fma,
    /// Plain Rust over fixed-size arrays (auto-vectorised for the build target).
    Portable,
}

impl GemmPath {
    /// The best path this CPU supports.
    pub fn detect() -> Self {
        Self::supported()
            .first()
            .copied()
            .unwrap_or(GemmPath::Portable)
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmPath::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            GemmPath::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            GemmPath::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU can run, best first (the portable one always).
    pub fn supported() -> Vec<Self> {
        [GemmPath::Avx512, GemmPath::Avx2Fma, GemmPath::Portable]
            .into_iter()
            .filter(|p| p.available())
            .collect()
    }

    /// The path's name as benchmarks print it.
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Avx512 => "avx512",
            GemmPath::Avx2Fma => "avx2+fma",
            GemmPath::Portable => "portable",
        }
    }
}

/// The path chosen for this process (detected once).
pub fn gemm_path() -> GemmPath {
    static PATH: std::sync::OnceLock<GemmPath> = std::sync::OnceLock::new();
    *PATH.get_or_init(GemmPath::detect)
}

/// A weight matrix `W[N, K]` packed into panels of [`NR`] output columns (the default is the
/// empty `[0, 0]` matrix, to be filled by [`PackedMatrix::repack_with`]).
///
/// Layout: panel `p` covers outputs `p*NR .. p*NR+NR` and occupies `data[p*K*NR .. (p+1)*K*NR]`;
/// inside it, element `k*NR + j` is `W[p*NR + j, k]`, so one step of `k` reads `NR` contiguous
/// floats (one aligned-size vector load per SIMD register). Columns past `N` in the last panel
/// are zero, as is the padded bias, so the microkernels never branch on ragged `N`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedMatrix {
    data: Vec<f32>,
    bias: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedMatrix {
    /// Packs row-major `w` (`[n, k]`) and an optional bias (`[n]`, zero when `None`).
    ///
    /// Panics if the slice lengths disagree with `n` and `k` (a programming error: callers
    /// hold matrices whose shapes were checked when they were built).
    pub fn pack(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed matrix: weights are not [{n}, {k}]");
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        for (p, panel) in data.chunks_exact_mut((k * NR).max(1)).enumerate() {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        }
        let mut padded = vec![0.0f32; panels * NR];
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "packed matrix: bias is not [{n}]");
            padded[..n].copy_from_slice(b);
        }
        PackedMatrix {
            data,
            bias: padded,
            n,
            k,
        }
    }

    /// Packs again in place, reusing the buffers: `W[j, kk] = f(j, kk)` for an `[n, k]`
    /// matrix with zero bias (for operands built per call, such as attention's keys).
    pub fn repack_with(&mut self, n: usize, k: usize, f: impl Fn(usize, usize) -> f32) {
        let panels = n.div_ceil(NR);
        self.data.clear();
        self.data.resize(panels * k * NR, 0.0);
        for (p, panel) in self.data.chunks_exact_mut((k * NR).max(1)).enumerate() {
            for j in 0..NR.min(n - p * NR) {
                for kk in 0..k {
                    panel[kk * NR + j] = f(p * NR + j, kk);
                }
            }
        }
        self.bias.clear();
        self.bias.resize(panels * NR, 0.0);
        self.n = n;
        self.k = k;
    }

    /// Output features `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

/// What [`gemm`] applies to each output after the bias.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue {
    /// Nothing: `y = x W^T + b`.
    None,
    /// `y = x W^T + b`, then `f` applied in place to each contiguous run of outputs (up to
    /// [`NR`] values of one row at a time, so `f` can vectorise).
    Apply(fn(&mut [f32])),
}

/// `y[m, :] = x[m, :] * W^T + bias` for `m` rows, with the process's [`gemm_path`].
///
/// Panics if `x` is not `[m, K]` or `y` is not `[m, N]` (callers size their buffers from the
/// same shapes).
pub fn gemm(x: &[f32], m: usize, w: &PackedMatrix, y: &mut [f32], epi: Epilogue) {
    gemm_with(gemm_path(), x, m, w, y, epi)
}

/// [`gemm`] on row-strided operands: row `r` of `x` is `x[r*ldx .. r*ldx + K]` and row `r`
/// of `y` is `y[r*ldy .. r*ldy + N]`; elements between rows are neither read nor written.
///
/// Panics if the strides are smaller than the rows or the slices too short.
pub fn gemm_strided(
    x: &[f32],
    ldx: usize,
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    ldy: usize,
    epi: Epilogue,
) {
    run(gemm_path(), Operands { x, ldx, m, ldy }, w, y, epi)
}

/// [`gemm`] on an explicit path (for tests and benchmarks). Falls back to the portable kernel
/// when the CPU lacks the requested features.
pub fn gemm_with(
    path: GemmPath,
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    y: &mut [f32],
    epi: Epilogue,
) {
    assert_eq!(x.len(), m * w.k, "gemm: x is not [{m}, {}]", w.k);
    assert_eq!(y.len(), m * w.n, "gemm: y is not [{m}, {}]", w.n);
    let ops = Operands {
        x,
        ldx: w.k,
        m,
        ldy: w.n,
    };
    run(path, ops, w, y, epi)
}

/// The left operand and the output's shape of one product.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    ldx: usize,
    m: usize,
    ldy: usize,
}

/// Checks the operands, then runs every panel (in parallel when the product is large).
fn run(path: GemmPath, ops: Operands, w: &PackedMatrix, y: &mut [f32], epi: Epilogue) {
    let Operands { x, ldx, m, ldy } = ops;
    if m == 0 || w.n == 0 {
        return;
    }
    assert!(
        ldx >= w.k && x.len() >= (m - 1) * ldx + w.k,
        "gemm: x too short"
    );
    assert!(
        ldy >= w.n && y.len() >= (m - 1) * ldy + w.n,
        "gemm: y too short"
    );
    let path = if path.available() {
        path
    } else {
        GemmPath::Portable
    };
    let out = OutPtr(y.as_mut_ptr());
    let task = |p: usize| {
        // SAFETY: each panel writes only its own column range of `y`, so tasks never overlap,
        // and `y` outlives the (blocking) parallel loop.
        unsafe { panel_task(path, ops, w, p, out, epi) }
    };
    if m * w.n * w.k >= PAR_MIN_MACS && w.panels() > 1 {
        (0..w.panels()).into_par_iter().for_each(task);
    } else {
        (0..w.panels()).for_each(task);
    }
}

/// The output pointer shared by the panel tasks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `gemm_with`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Computes the columns of panel `p` for every row of `x`, MR rows at a time.
///
/// # Safety
/// `out` must point to a buffer holding `m` rows of stride `ops.ldy` (checked by [`run`])
/// that no other thread touches in this panel's columns.
unsafe fn panel_task(
    path: GemmPath,
    ops: Operands,
    w: &PackedMatrix,
    p: usize,
    out: OutPtr,
    epi: Epilogue,
) {
    let Operands { x, ldx, m, ldy } = ops;
    let k = w.k;
    let panel = &w.data[p * k * NR..(p + 1) * k * NR];
    let bias: &[f32; NR] = w.bias[p * NR..(p + 1) * NR]
        .try_into()
        .expect("bias panel has NR entries");
    let cols = NR.min(w.n - p * NR);
    let mut tile = [[0.0f32; NR]; MR];
    let mut r0 = 0;
    while r0 < m {
        let rows = MR.min(m - r0);
        let xs = &x[r0 * ldx..(r0 + rows - 1) * ldx + k];
        microkernel(path, xs, ldx, rows, k, panel, bias, &mut tile);
        for (r, t) in tile.iter().enumerate().take(rows) {
            // SAFETY: row r0 + r < m and columns p*NR .. p*NR + cols < n are in bounds.
            let dst = std::slice::from_raw_parts_mut(out.0.add((r0 + r) * ldy + p * NR), cols);
            dst.copy_from_slice(&t[..cols]);
            if let Epilogue::Apply(f) = epi {
                f(dst);
            }
        }
        r0 += rows;
    }
}

/// `tile[r, j] = bias[j] + sum_k xs[r, k] * panel[k, j]` for `rows <= MR` rows.
#[allow(clippy::too_many_arguments)]
fn microkernel(
    path: GemmPath,
    xs: &[f32],
    ldx: usize,
    rows: usize,
    k: usize,
    panel: &[f32],
    bias: &[f32; NR],
    tile: &mut [[f32; NR]; MR],
) {
    debug_assert!(rows <= MR && xs.len() == (rows - 1) * ldx + k && panel.len() == k * NR);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `gemm_with` only selects this path when the CPU has AVX-512F.
        GemmPath::Avx512 => unsafe { x86::kernel_avx512(xs, ldx, rows, k, panel, bias, tile) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `gemm_with` only selects this path when the CPU has AVX2 and FMA.
        GemmPath::Avx2Fma => unsafe { x86::kernel_avx2(xs, ldx, rows, k, panel, bias, tile) },
        _ => kernel_portable(xs, ldx, rows, k, panel, bias, tile),
    }
}

/// Portable microkernel: one row at a time over a `NR`-wide accumulator array.
fn kernel_portable(
    xs: &[f32],
    ldx: usize,
    rows: usize,
    k: usize,
    panel: &[f32],
    bias: &[f32; NR],
    tile: &mut [[f32; NR]; MR],
) {
    for (r, out) in tile.iter_mut().enumerate().take(rows) {
        // A local accumulator the optimiser keeps in registers.
        let mut acc = *bias;
        let xr = &xs[r * ldx..r * ldx + k];
        for (&xv, wk) in xr.iter().zip(panel.chunks_exact(NR)) {
            let wk: &[f32; NR] = wk.try_into().expect("chunks are NR long");
            for j in 0..NR {
                acc[j] += xv * wk[j];
            }
        }
        *out = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 microkernels, compiled for their feature sets with `#[target_feature]`.
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// AVX-512 microkernel: dispatches `rows` to a fully unrolled kernel.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_avx512(
        xs: &[f32],
        ldx: usize,
        rows: usize,
        k: usize,
        panel: &[f32],
        bias: &[f32; NR],
        tile: &mut [[f32; NR]; MR],
    ) {
        match rows {
            8 => avx512_rows::<8>(xs, ldx, k, panel, bias, tile),
            7 => avx512_rows::<7>(xs, ldx, k, panel, bias, tile),
            6 => avx512_rows::<6>(xs, ldx, k, panel, bias, tile),
            5 => avx512_rows::<5>(xs, ldx, k, panel, bias, tile),
            4 => avx512_rows::<4>(xs, ldx, k, panel, bias, tile),
            3 => avx512_rows::<3>(xs, ldx, k, panel, bias, tile),
            2 => avx512_rows::<2>(xs, ldx, k, panel, bias, tile),
            _ => avx512_rows::<1>(xs, ldx, k, panel, bias, tile),
        }
    }

    /// `R` rows x 32 columns: two `zmm` accumulators per row; per step of `k`, two panel
    /// loads and one broadcast per row feed `2R` FMAs.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_rows<const R: usize>(
        xs: &[f32],
        ldx: usize,
        k: usize,
        panel: &[f32],
        bias: &[f32; NR],
        tile: &mut [[f32; NR]; MR],
    ) {
        assert!(xs.len() >= (R - 1) * ldx + k && panel.len() >= k * NR);
        let (xp, wp) = (xs.as_ptr(), panel.as_ptr());
        let b0 = _mm512_loadu_ps(bias.as_ptr());
        let b1 = _mm512_loadu_ps(bias.as_ptr().add(16));
        let mut acc = [[b0, b1]; R];
        for kk in 0..k {
            let w0 = _mm512_loadu_ps(wp.add(kk * NR));
            let w1 = _mm512_loadu_ps(wp.add(kk * NR + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(r * ldx + kk));
                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
            }
        }
        for (a, t) in acc.iter().zip(tile.iter_mut()) {
            _mm512_storeu_ps(t.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(t.as_mut_ptr().add(16), a[1]);
        }
    }

    /// AVX2 microkernel: rows in passes of at most three (12 `ymm` accumulators).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_avx2(
        xs: &[f32],
        ldx: usize,
        rows: usize,
        k: usize,
        panel: &[f32],
        bias: &[f32; NR],
        tile: &mut [[f32; NR]; MR],
    ) {
        let mut r = 0;
        while r < rows {
            let take = 3.min(rows - r);
            let sub = &xs[r * ldx..(r + take - 1) * ldx + k];
            let dst = &mut tile[r..r + take];
            match take {
                3 => avx2_rows::<3>(sub, ldx, k, panel, bias, dst),
                2 => avx2_rows::<2>(sub, ldx, k, panel, bias, dst),
                _ => avx2_rows::<1>(sub, ldx, k, panel, bias, dst),
            }
            r += take;
        }
    }

    /// `R` rows x 32 columns: four `ymm` accumulators per row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(
        xs: &[f32],
        ldx: usize,
        k: usize,
        panel: &[f32],
        bias: &[f32; NR],
        tile: &mut [[f32; NR]],
    ) {
        assert!(xs.len() >= (R - 1) * ldx + k && panel.len() >= k * NR && tile.len() >= R);
        let (xp, wp, bp) = (xs.as_ptr(), panel.as_ptr(), bias.as_ptr());
        let b = [
            _mm256_loadu_ps(bp),
            _mm256_loadu_ps(bp.add(8)),
            _mm256_loadu_ps(bp.add(16)),
            _mm256_loadu_ps(bp.add(24)),
        ];
        let mut acc = [b; R];
        for kk in 0..k {
            let p = wp.add(kk * NR);
            let w = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_set1_ps(*xp.add(r * ldx + kk));
                for (ai, &wi) in a.iter_mut().zip(&w) {
                    *ai = _mm256_fmadd_ps(xv, wi, *ai);
                }
            }
        }
        for (a, t) in acc.iter().zip(tile.iter_mut()) {
            for (i, &v) in a.iter().enumerate() {
                _mm256_storeu_ps(t.as_mut_ptr().add(8 * i), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// `y = x W^T + b` by the definition, accumulated in f64.
    fn naive(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for r in 0..m {
            for o in 0..n {
                let s: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[o * k + i] as f64)
                    .sum();
                y[r * n + o] = (s + b[o] as f64) as f32;
            }
        }
        y
    }

    fn check(path: GemmPath, m: usize, n: usize, k: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let x = rng.vec_uniform(m * k, 1.0);
        let w = rng.vec_uniform(n * k, 1.0);
        let b = rng.vec_uniform(n, 1.0);
        let packed = PackedMatrix::pack(&w, Some(&b), n, k);
        let mut y = vec![f32::NAN; m * n];
        gemm_with(path, &x, m, &packed, &mut y, Epilogue::None);
        let want = naive(&x, &w, &b, m, n, k);
        for (i, (g, e)) in y.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (k as f32).sqrt() * 4.0 + 1e-6;
            assert!(
                (g - e).abs() <= tol,
                "{path:?} m {m} n {n} k {k}: y[{i}] = {g}, want {e}"
            );
        }
    }

    #[test]
    fn every_supported_path_matches_the_triple_loop_on_ragged_shapes() {
        let mut rng = Rng::new(77);
        for path in GemmPath::supported() {
            for &(m, n, k) in &[
                (1, 1, 1),
                (8, 32, 16),
                (9, 33, 7),
                (3, 65, 100),
                (17, 31, 64),
            ] {
                check(path, m, n, k, (m * 1000 + n * 10 + k) as u64);
            }
            for i in 0..20 {
                let m = 1 + rng.below(20) as usize;
                let n = 1 + rng.below(100) as usize;
                let k = 1 + rng.below(130) as usize;
                check(path, m, n, k, i);
            }
        }
    }

    #[test]
    fn a_large_product_runs_in_parallel_and_agrees_with_the_serial_one() {
        // Large enough to cross PAR_MIN_MACS, so the panels are split across threads.
        for path in GemmPath::supported() {
            check(path, 32, 200, 96, 5);
        }
    }

    #[test]
    fn packing_puts_each_weight_where_the_layout_says() {
        let (n, k) = (35, 3);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let p = PackedMatrix::pack(&w, None, n, k);
        assert_eq!((p.n(), p.k(), p.panels()), (35, 3, 2));
        for o in 0..n {
            for kk in 0..k {
                let (panel, j) = (o / NR, o % NR);
                assert_eq!(p.data[panel * k * NR + kk * NR + j], w[o * k + kk]);
            }
        }
        // Padding columns of the last panel and the padded bias are zero.
        assert!((0..k).all(|kk| p.data[k * NR + kk * NR + 5] == 0.0));
        assert!(p.bias.iter().all(|&b| b == 0.0) && p.bias.len() == 64);
    }

    #[test]
    fn strided_operands_and_repacking_give_the_dense_result() {
        let mut rng = Rng::new(12);
        let (m, n, k, ldx, ldy) = (11, 37, 20, 29, 45);
        let x = rng.vec_uniform(m * ldx, 1.0);
        let w = rng.vec_uniform(n * k, 1.0);
        let mut p = PackedMatrix::default();
        // Pack the transpose of a [k, n] source through the closure.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        p.repack_with(n, k, |j, kk| wt[kk * n + j]);
        assert_eq!(p, PackedMatrix::pack(&w, None, n, k));
        let mut y = vec![-7.0; m * ldy];
        gemm_strided(&x, ldx, m, &p, &mut y, ldy, Epilogue::None);
        let dense: Vec<f32> = (0..m * k).map(|i| x[(i / k) * ldx + i % k]).collect();
        let want = naive(&dense, &w, &vec![0.0; n], m, n, k);
        for r in 0..m {
            for j in 0..ldy {
                let got = y[r * ldy + j];
                if j < n {
                    assert!((got - want[r * n + j]).abs() < 1e-4);
                } else {
                    assert_eq!(got, -7.0, "gap between rows was written");
                }
            }
        }
    }

    #[test]
    fn the_epilogue_is_applied_to_every_output() {
        let mut rng = Rng::new(8);
        let (m, n, k) = (5, 40, 12);
        let (x, w) = (rng.vec_uniform(m * k, 1.0), rng.vec_uniform(n * k, 1.0));
        let p = PackedMatrix::pack(&w, None, n, k);
        let mut plain = vec![0.0; m * n];
        let mut relu = vec![0.0; m * n];
        gemm(&x, m, &p, &mut plain, Epilogue::None);
        gemm(
            &x,
            m,
            &p,
            &mut relu,
            Epilogue::Apply(|r| r.iter_mut().for_each(|v| *v = v.max(0.0))),
        );
        assert!(plain.iter().any(|&v| v < 0.0));
        for (a, b) in plain.iter().zip(&relu) {
            assert_eq!(a.max(0.0), *b);
        }
    }
}
