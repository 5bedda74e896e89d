//! Products on FP16 weights kept as FP16 (half the bytes of an f32 copy, and decode is
//! memory-bound): each weight is widened to f32 exactly (F16C `vcvtph2ps`) and accumulated in
//! f32. Kernels, dispatched at run time ([`F16Path`]): AVX-512 (`f16mat_avx512`: 16
//! lanes, four weight rows per pass sharing each input load), AVX2 + FMA + F16C (8 lanes), else
//! `half`'s conversion. `AGENTCOMPRESS_CPU_SIMD` caps the choice as it does for the packed GEMV
//! ([`super::qgemv::best_path`]).
//!
//! Layout: `[out, in]` row-major FP16, the tensor as loaded (zero-copy when memory-mapped).

use half::f16;
use rayon::prelude::*;

/// Outputs per rayon task (a multiple of the AVX-512 kernel's rows per pass).
const OUTS_PER_TASK: usize = 16;

/// An FP16-product kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Path {
    /// AVX-512F + F16C: 16 lanes, four rows per pass.
    Avx512,
    /// AVX2 + FMA + F16C: 8 lanes, one row at a time.
    Avx2,
    /// Portable: `half`'s conversion, eight scalar accumulators.
    Scalar,
}

impl F16Path {
    /// True when this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            F16Path::Avx512 => super::simd::avx512f(),
            F16Path::Avx2 => super::simd::avx2_fma_f16c(),
            F16Path::Scalar => true,
        }
    }

    /// The fastest path this machine runs, under the `AGENTCOMPRESS_CPU_SIMD` cap.
    pub fn best() -> F16Path {
        use super::qgemv::{best_path, GemvPath};
        match best_path() {
            Some(GemvPath::Avx512Vnni | GemvPath::Avx512) if F16Path::Avx512.available() => {
                F16Path::Avx512
            }
            Some(GemvPath::Avx512Vnni | GemvPath::Avx512 | GemvPath::Avx2)
                if F16Path::Avx2.available() =>
            {
                F16Path::Avx2
            }
            _ => F16Path::Scalar,
        }
    }
}

/// `sum_k w[k] * x[k]` over `min(w.len(), x.len())` elements, in f32, on the best path.
pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    dot_f16_on(F16Path::best(), w, x)
}

/// [`dot_f16`] on `path`, falling back to the scalar kernel when this CPU lacks it.
pub fn dot_f16_on(path: F16Path, w: &[f16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY: `available` checked the features the kernels enable.
        F16Path::Avx512 if path.available() => {
            return unsafe { super::f16mat_avx512::dot_avx512(w, x) }
        }
        F16Path::Avx2 if path.available() => return unsafe { dot_f16_avx2(w, x) },
        _ => {}
    }
    let _ = path;
    let mut acc = [0.0f32; 8];
    for (i, (a, b)) in w.iter().zip(x).enumerate() {
        acc[i % 8] += a.to_f32() * b;
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2(w: &[f16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len();
    let (wp, xp) = (w.as_ptr() as *const __m128i, x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut k = 0;
    while k + 32 <= n {
        for (a, acc) in acc.iter_mut().enumerate() {
            let h = _mm_loadu_si128(wp.add(k / 8 + a));
            *acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(k + 8 * a)), *acc);
        }
        k += 32;
    }
    while k + 8 <= n {
        let h = _mm_loadu_si128(wp.add(k / 8));
        acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(k)), acc[0]);
        k += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = super::simd::hsum256(s);
    for i in k..n {
        total += w[i].to_f32() * x[i];
    }
    total
}

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows, on the best path.
pub fn f16_matmul(w: &[f16], n_out: usize, n_in: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    f16_matmul_on(F16Path::best(), w, n_out, n_in, x, rows, out)
}

/// [`f16_matmul`] on `path` (the scalar kernel when this CPU lacks it), parallel over outputs:
/// on the AVX-512 path, [`super::f16gemm::MIN_ROWS`] or more input rows (prefill) go through
/// the blocked product ([`super::f16gemm`]), fewer through [`f16_matmul_unblocked`].
pub fn f16_matmul_on(
    path: F16Path,
    w: &[f16],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    use super::f16gemm;
    if path == F16Path::Avx512
        && path.available()
        && rows >= f16gemm::MIN_ROWS
        && f16gemm::f16_gemm(w, n_out, n_in, x, rows, out)
    {
        return;
    }
    f16_matmul_unblocked(path, w, n_out, n_in, x, rows, out)
}

/// [`f16_matmul_on`] without the blocked product: each weight row widened once per input
/// row (kept for few rows, and to compare against).
///
/// One input row (decode) runs about four tasks per thread on the CPU worker pool
/// ([`super::worker_pool`]), each a sequential run of weight rows, writing in place. Several rows (prefill), on rayon: on AVX-512
/// every task takes `OUTS_PER_TASK` outputs and runs each weight row against four input rows
/// per pass (one widening of the weights for four rows); AVX2 runs one input row at a time;
/// the scalar path widens each weight row once for all input rows.
pub fn f16_matmul_unblocked(
    path: F16Path,
    w: &[f16],
    n_out: usize,
    n_in: usize,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    let row = |o: usize| &w[o * n_in..(o + 1) * n_in];
    let simd = path != F16Path::Scalar && path.available();
    if rows == 1 {
        // Decode: each task writes its outputs in place, one weight row after another, so the
        // task's weights are one sequential stream (interleaving several rows, or software
        // prefetch, halved the read rate at short rows).
        let chunk = super::worker_pool::stream_chunk(n_out, OUTS_PER_TASK);
        super::worker_pool::for_each_chunk(&mut out[..n_out], chunk, |t, ys| {
            for (i, y) in ys.iter_mut().enumerate() {
                *y = dot_f16_on(path, row(t * chunk + i), &x[..n_in]);
            }
        });
        return;
    }
    if simd && rows > 1 {
        // Task `t` yields its outputs' results input-row-major: `[rows][outputs of t]`.
        let blocks: Vec<Vec<f32>> = (0..n_out.div_ceil(OUTS_PER_TASK))
            .into_par_iter()
            .map(|t| {
                let (o0, o1) = (t * OUTS_PER_TASK, ((t + 1) * OUTS_PER_TASK).min(n_out));
                let mut res = vec![0.0f32; rows * (o1 - o0)];
                block(path, w, n_in, o0, o1, x, rows, &mut res);
                res
            })
            .collect();
        for (t, res) in blocks.into_iter().enumerate() {
            let o0 = t * OUTS_PER_TASK;
            let len = OUTS_PER_TASK.min(n_out - o0);
            for r in 0..rows {
                out[r * n_out + o0..r * n_out + o0 + len]
                    .copy_from_slice(&res[r * len..(r + 1) * len]);
            }
        }
        return;
    }
    super::matmul_widened_rows(rows, n_in, n_out, x, out, |o, wrow| {
        for (d, h) in wrow.iter_mut().zip(row(o)) {
            *d = h.to_f32();
        }
    });
}

/// Outputs `o0..o1` for every input row into `res[r * (o1 - o0) + (o - o0)]`, each weight row
/// kept in cache across the input rows: on AVX-512 full passes of
/// [`super::f16mat_avx512::INPUTS`] input rows at a time against each weight row, then (and on
/// other paths) one input row at a time.
#[allow(clippy::too_many_arguments)]
fn block(
    path: F16Path,
    w: &[f16],
    n_in: usize,
    o0: usize,
    o1: usize,
    x: &[f32],
    rows: usize,
    res: &mut [f32],
) {
    let len = o1 - o0;
    for o in o0..o1 {
        let wrow = &w[o * n_in..(o + 1) * n_in];
        #[allow(unused_mut)]
        let mut r = 0;
        #[cfg(target_arch = "x86_64")]
        while path == F16Path::Avx512
            && path.available()
            && r + super::f16mat_avx512::INPUTS <= rows
        {
            use super::f16mat_avx512::{inputs_avx512, INPUTS};
            let xs: [&[f32]; INPUTS] =
                std::array::from_fn(|i| &x[(r + i) * n_in..(r + i + 1) * n_in]);
            // SAFETY: the caller checked AVX-512F + F16C; every slice holds `n_in` elements.
            let v = unsafe { inputs_avx512(wrow, n_in, xs) };
            for (i, v) in v.into_iter().enumerate() {
                res[(r + i) * len + o - o0] = v;
            }
            r += INPUTS;
        }
        for r in r..rows {
            res[r * len + o - o0] = dot_f16_on(path, wrow, &x[r * n_in..(r + 1) * n_in]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    const ALL: [F16Path; 3] = [F16Path::Avx512, F16Path::Avx2, F16Path::Scalar];

    /// The paths this CPU runs (a path it lacks says so and is skipped).
    fn paths() -> Vec<F16Path> {
        for p in ALL.iter().filter(|p| !p.available()) {
            eprintln!("SKIPPED {p:?}: this CPU lacks its features");
        }
        ALL.into_iter().filter(|p| p.available()).collect()
    }

    fn random(rng: &mut Rng, n_out: usize, n_in: usize, rows: usize) -> (Vec<f16>, Vec<f32>) {
        let w = (0..n_out * n_in)
            .map(|_| f16::from_f32(rng.uniform(-1.0, 1.0)))
            .collect();
        let x = (0..rows * n_in).map(|_| rng.uniform(-1.0, 1.0)).collect();
        (w, x)
    }

    /// Checks `out` against an f64 reference. Each product `w * x` is exact in f64, so the
    /// f32 sum's error is within `(n_in + 16) * 2^-24 * sum |w x|` (n adds plus the
    /// 16-lane reduction).
    fn check(
        w: &[f16],
        x: &[f32],
        n_out: usize,
        n_in: usize,
        rows: usize,
        out: &[f32],
        what: &str,
    ) {
        for r in 0..rows {
            for o in 0..n_out {
                let terms = (0..n_in).map(|k| w[o * n_in + k].to_f64() * x[r * n_in + k] as f64);
                let want: f64 = terms.clone().sum();
                let mag: f64 = terms.map(f64::abs).sum();
                let bound = (n_in as f64 + 16.0) * f64::powi(2.0, -24) * mag + 1e-30;
                let got = out[r * n_out + o] as f64;
                assert!(
                    (got - want).abs() <= bound,
                    "{what} [{n_out}, {n_in}] x {rows} at ({r}, {o}): {got} vs {want} (bound {bound:e})"
                );
            }
        }
    }

    #[test]
    fn every_path_matches_the_f64_reference_at_ragged_sizes() {
        // K around the 16- and 32-element steps; outputs not a multiple of the 4 rows per
        // pass, and more than one 16-output task; 1, 2 and 5 input rows; one input row over
        // enough outputs for several decode tasks of several rows each, the last one short.
        let mut rng = Rng::new(4);
        let shapes = [
            (1, 1, 1),
            (7, 33, 1),
            (5, 15, 2),
            (4, 16, 1),
            (19, 17, 1),
            (40, 172, 1),
            (37, 63, 5),
            (9, 64, 3),
            (70, 257, 2),
            (18, 95, 1),
            (16 * 4 * 16 * 2 + 5, 40, 1),
        ];
        for path in paths() {
            for &(n_out, n_in, rows) in &shapes {
                let (w, x) = random(&mut rng, n_out, n_in, rows);
                let mut out = vec![f32::NAN; rows * n_out];
                f16_matmul_on(path, &w, n_out, n_in, &x, rows, &mut out);
                check(&w, &x, n_out, n_in, rows, &out, &format!("{path:?}"));
                for o in 0..n_out {
                    let d = dot_f16_on(path, &w[o * n_in..(o + 1) * n_in], &x[..n_in]);
                    check(
                        &w[o * n_in..(o + 1) * n_in],
                        &x[..n_in],
                        1,
                        n_in,
                        1,
                        &[d],
                        "dot",
                    );
                }
            }
        }
    }

    #[test]
    fn every_weight_of_the_tail_is_counted() {
        // One-hot inputs at each of the last positions of a ragged K (past the last full
        // 16- and 32-element steps): output `o` must be exactly `w[o, k]`, which a dropped
        // or misplaced tail would zero or move.
        let mut rng = Rng::new(9);
        for &(n_out, n_in, rows) in &[(6, 53, 1), (6, 53, 3), (5, 7, 2)] {
            let (w, _) = random(&mut rng, n_out, n_in, 0);
            for path in paths() {
                for k in n_in.saturating_sub(24)..n_in {
                    let mut x = vec![0.0f32; rows * n_in];
                    for r in 0..rows {
                        x[r * n_in + k] = 1.0 + r as f32;
                    }
                    let mut out = vec![f32::NAN; rows * n_out];
                    f16_matmul_on(path, &w, n_out, n_in, &x, rows, &mut out);
                    for r in 0..rows {
                        for o in 0..n_out {
                            let want = w[o * n_in + k].to_f32() * (1.0 + r as f32);
                            assert_eq!(out[r * n_out + o], want, "{path:?} k {k} ({r}, {o})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn forced_paths_fall_back_and_the_best_path_runs_here() {
        // The chosen path is one this CPU runs; a forced path it lacks still answers (scalar)
        // and every path agrees with the scalar kernel within rounding.
        assert!(F16Path::best().available());
        if std::env::var("AGENTCOMPRESS_CPU_SIMD").is_err() && F16Path::Avx512.available() {
            assert_eq!(F16Path::best(), F16Path::Avx512);
        }
        let mut rng = Rng::new(11);
        let (n_out, n_in) = (21, 100);
        let (w, x) = random(&mut rng, n_out, n_in, 1);
        let mut want = vec![0.0f32; n_out];
        f16_matmul_on(F16Path::Scalar, &w, n_out, n_in, &x, 1, &mut want);
        for path in ALL {
            let mut out = vec![f32::NAN; n_out];
            f16_matmul_on(path, &w, n_out, n_in, &x, 1, &mut out);
            for (o, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-4, "{path:?} output {o}: {a} vs {b}");
            }
        }
    }

    /// Kernel timing, not a check: `cargo test --release --lib timing_f16 -- --ignored
    /// --nocapture`. Fastest of 9 calls on a 4096 x 4096 FP16 matrix per path, for one input
    /// row (decode) and for 32 (prefill); the minimum, since other load only adds time.
    #[test]
    #[ignore]
    fn timing_f16_products() {
        let (n, rows) = (4096, 32);
        let mut rng = Rng::new(5);
        let (w, x) = random(&mut rng, n, n, rows);
        let mut y = vec![0.0f32; rows * n];
        for m in [1, rows] {
            for path in paths() {
                let ms = (0..9)
                    .map(|_| {
                        let s = std::time::Instant::now();
                        f16_matmul_on(path, &w, n, n, &x[..m * n], m, &mut y[..m * n]);
                        s.elapsed().as_secs_f64() * 1e3
                    })
                    .fold(f64::INFINITY, f64::min);
                let gbs = (n * n * 2) as f64 / (ms * 1e6);
                eprintln!("[{n}, {n}] x {m} {path:?}: {ms:.3} ms ({gbs:.1} GB/s of weights)");
            }
        }
    }
}
