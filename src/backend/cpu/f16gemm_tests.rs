//! Tests of the blocked FP16 product against an f64 reference and the one-row kernels.

use super::*;
use crate::backend::cpu::f16mat::{f16_matmul_on, f16_matmul_unblocked, F16Path};
use crate::util::rng::Rng;

fn skip() -> bool {
    if !available() {
        eprintln!("SKIPPED: this CPU lacks AVX-512F");
        return true;
    }
    false
}

fn random(rng: &mut Rng, n_out: usize, n_in: usize, rows: usize) -> (Vec<f16>, Vec<f32>) {
    let w = (0..n_out * n_in)
        .map(|_| f16::from_f32(rng.uniform(-1.0, 1.0)))
        .collect();
    let x = (0..rows * n_in).map(|_| rng.uniform(-1.0, 1.0)).collect();
    (w, x)
}

/// Every output against the f64 product: each `w * x` is exact in f64 and the kernels add
/// `n_in` f32 terms (the one-row kernels then reduce 16 lanes), so the error is within
/// `(n_in + 16) * 2^-24 * sum |w x|`.
fn check(w: &[f16], x: &[f32], n_out: usize, n_in: usize, rows: usize, out: &[f32]) {
    let wd: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
    for r in 0..rows {
        let xr = &x[r * n_in..(r + 1) * n_in];
        for o in 0..n_out {
            let wr = &wd[o * n_in..(o + 1) * n_in];
            let want: f64 = wr.iter().zip(xr).map(|(a, &b)| a * b as f64).sum();
            let mag: f64 = wr.iter().zip(xr).map(|(a, &b)| (a * b as f64).abs()).sum();
            let bound = (n_in as f64 + 16.0) * f64::powi(2.0, -24) * mag + 1e-30;
            let got = out[r * n_out + o] as f64;
            assert!(
                (got - want).abs() <= bound,
                "[{n_out}, {n_in}] x {rows} at ({r}, {o}): {got} vs {want} (bound {bound:e})"
            );
        }
    }
}

#[test]
fn blocked_f16_matches_f64_for_rows_1_to_70_and_ragged_shapes() {
    if skip() {
        return;
    }
    let mut rng = Rng::new(21);
    // 37 outputs: one full panel and a ragged one (past 16 and not); 300 inputs: one full K
    // block and a ragged 44 (not a multiple of 16); rows 1..=70 cover every micro-kernel
    // height and several row blocks.
    let (n_out, n_in) = (37, 300);
    let (w, x) = random(&mut rng, n_out, n_in, 70);
    for rows in 1..=70 {
        let mut out = vec![f32::NAN; rows * n_out];
        assert!(f16_gemm(&w, n_out, n_in, &x[..rows * n_in], rows, &mut out));
        check(&w, &x, n_out, n_in, rows, &out);
    }
    // Outputs below, at and past one vector; K below 16, at a block edge, and two blocks.
    for &(n_out, n_in, rows) in &[
        (1, 1, 3),
        (5, 7, 9),
        (16, 16, 8),
        (17, 255, 11),
        (32, 256, 16),
        (33, 257, 5),
        (64, 512, 13),
        (70, 33, 70),
        (96, 577, 24),
    ] {
        let (w, x) = random(&mut rng, n_out, n_in, rows);
        let mut out = vec![f32::NAN; rows * n_out];
        assert!(f16_gemm(&w, n_out, n_in, &x, rows, &mut out));
        check(&w, &x, n_out, n_in, rows, &out);
    }
}

#[test]
fn blocked_f16_places_every_weight() {
    // One-hot inputs at every K position (across a K block edge and the ragged tail): output
    // `o` of row `r` must be exactly `w[o, k] * (1 + r)`.
    if skip() {
        return;
    }
    let mut rng = Rng::new(22);
    let (n_out, n_in, rows) = (35, 270, 9);
    let (w, _) = random(&mut rng, n_out, n_in, 0);
    for k in 0..n_in {
        let mut x = vec![0.0f32; rows * n_in];
        for r in 0..rows {
            x[r * n_in + k] = 1.0 + r as f32;
        }
        let mut out = vec![f32::NAN; rows * n_out];
        assert!(f16_gemm(&w, n_out, n_in, &x, rows, &mut out));
        for r in 0..rows {
            for o in 0..n_out {
                let want = w[o * n_in + k].to_f32() * (1.0 + r as f32);
                assert_eq!(out[r * n_out + o], want, "k {k} ({r}, {o})");
            }
        }
    }
}

#[test]
fn dispatch_sends_prefill_here_and_agrees_with_the_one_row_kernels() {
    // Through `f16_matmul_on`: at and above MIN_ROWS the blocked product, below it the
    // one-row kernels; both agree with the scalar path within rounding.
    let mut rng = Rng::new(23);
    let (n_out, n_in) = (50, 200);
    for rows in [MIN_ROWS - 1, MIN_ROWS, MIN_ROWS + 5] {
        let (w, x) = random(&mut rng, n_out, n_in, rows);
        let mut want = vec![0.0f32; rows * n_out];
        f16_matmul_on(F16Path::Scalar, &w, n_out, n_in, &x, rows, &mut want);
        let mut got = vec![f32::NAN; rows * n_out];
        f16_matmul_on(F16Path::best(), &w, n_out, n_in, &x, rows, &mut got);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-4, "rows {rows} element {i}: {a} vs {b}");
        }
        check(&w, &x, n_out, n_in, rows, &got);
    }
}

#[test]
fn below_min_rows_each_row_is_bit_identical_to_a_one_row_product() {
    // The speculative-decoding contract: a verify of fewer than MIN_ROWS rows must give
    // exactly what decoding each row alone gives.
    let mut rng = Rng::new(24);
    let (n_out, n_in, rows) = (45, 300, MIN_ROWS - 1);
    let (w, x) = random(&mut rng, n_out, n_in, rows);
    let mut all = vec![f32::NAN; rows * n_out];
    f16_matmul_on(F16Path::best(), &w, n_out, n_in, &x, rows, &mut all);
    for r in 0..rows {
        let mut one = vec![f32::NAN; n_out];
        let xr = &x[r * n_in..(r + 1) * n_in];
        f16_matmul_on(F16Path::best(), &w, n_out, n_in, xr, 1, &mut one);
        assert_eq!(&all[r * n_out..(r + 1) * n_out], &one[..], "row {r}");
    }
}

/// Microseconds of the fastest of `calls` calls of `f`.
fn fastest_us(calls: usize, f: &mut dyn FnMut()) -> f64 {
    (0..calls)
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

/// Kernel timing, not a check: `cargo test --release --lib timing_blocked_f16 -- --ignored
/// --nocapture`. Fastest of 15 calls, blocked against unblocked (AVX-512), at SmolLM2-135M's
/// q and up shapes for 2 to 16 input rows (where the blocked product starts to win), and
/// at its classifier and the Llama-2-7B square shape for 8 and 64 rows.
#[test]
#[ignore]
fn timing_blocked_f16() {
    if skip() {
        return;
    }
    let fastest = |f: &mut dyn FnMut()| fastest_us(15, f);
    let mut rng = Rng::new(5);
    let small = [2, 3, 4, 6, 8, 12, 16];
    for (n_out, n_in, counts) in [
        (576, 576, &small[..]),
        (1536, 576, &small[..]),
        (49152, 576, &[8, 64][..]),
        (4096, 4096, &[8, 64][..]),
    ] {
        let max = counts.iter().copied().max().unwrap_or(1);
        let (w, x) = random(&mut rng, n_out, n_in, max);
        let mut y = vec![0.0f32; max * n_out];
        for &rows in counts {
            let (x, y) = (&x[..rows * n_in], &mut y[..rows * n_out]);
            let b = fastest(&mut || assert!(f16_gemm(&w, n_out, n_in, x, rows, y)));
            let u =
                fastest(&mut || f16_matmul_unblocked(F16Path::Avx512, &w, n_out, n_in, x, rows, y));
            eprintln!(
                "FP16 [{n_out}, {n_in}] x {rows}: blocked {b:.1} us, unblocked {u:.1} us ({:.2}x)",
                u / b
            );
        }
    }
}

/// Kernel timing, not a check: `cargo test --release --lib timing_blocked_f16_against_panels
/// -- --ignored --nocapture`. Fastest of 9 calls at prefill row counts: this blocked product
/// (each weight widened once per call) against the FP16 panel layout the backend uses
/// ([`super::super::f16panel`], each weight widened once per kernel call of up to 8 rows, or of
/// up to 6 rows over two panels), at SmolLM2-135M's up,
/// down and classifier shapes and the Llama-2-7B square shape.
#[test]
#[ignore]
fn timing_blocked_f16_against_panels() {
    if skip() {
        return;
    }
    let fastest = |f: &mut dyn FnMut()| fastest_us(9, f);
    let mut rng = Rng::new(5);
    for (n_out, n_in) in [(1536, 576), (576, 1536), (49152, 576), (4096, 4096)] {
        for rows in [32, 64] {
            let (w, x) = random(&mut rng, n_out, n_in, rows);
            let bytes: Vec<u8> = w.iter().flat_map(|h| h.to_le_bytes()).collect();
            let p = super::super::f16panel::F16Panels::pack(&bytes, n_out, n_in).unwrap();
            let mut y = vec![0.0f32; rows * n_out];
            let b = fastest(&mut || assert!(f16_gemm(&w, n_out, n_in, &x, rows, &mut y)));
            let q = fastest(&mut || p.matmul(&x, rows, &mut y));
            eprintln!(
                "FP16 [{n_out}, {n_in}] x {rows}: blocked {b:.0} us, panels {q:.0} us \
                 (blocked / panels {:.2}x)",
                b / q
            );
        }
    }
}
