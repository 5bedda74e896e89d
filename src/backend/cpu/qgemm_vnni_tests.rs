//! Tests of the blocked VNNI product against a float64 reference of the same arithmetic and
//! against the one-row kernels.

use super::*;
use crate::backend::cpu::qgemv::tests::random_matrix;
use crate::backend::cpu::qgemv_vnni::{available, packed_product, packed_product_unblocked};
use crate::util::rng::Rng;

fn skip() -> bool {
    if !available() {
        eprintln!("SKIPPED: this CPU lacks AVX512-VNNI");
        return true;
    }
    false
}

/// Input rows of different magnitudes with outliers, so block scales differ.
pub(crate) fn inputs(rng: &mut Rng, rows: usize, inp: usize) -> Vec<f32> {
    (0..rows * inp)
        .map(|i| {
            let v = rng.next_f32() * 2.0 - 1.0;
            if i % 97 == 5 {
                v * 20.0
            } else {
                v * (1 + (i / inp) % 3) as f32
            }
        })
        .collect()
}

/// The reference: weights `s (q - z)` (exact in f64) times each row quantized by the same
/// block rule (`d_b * xq`, exact in f64), summed in f64. Returns per `(row, output)` the
/// value and `sum |s q xhat| + |s z xhat|`, the scale of the kernel's rounding error.
fn reference<const BITS: u32>(m: &Packed<BITS>, x: &[f32], rows: usize) -> Vec<(f64, f64)> {
    let (n_out, n_in) = m.dims();
    let group = m.group_size();
    let (mut wq, mut wz) = (vec![0.0f64; n_out * n_in], vec![0.0f64; n_out * n_in]);
    for o in 0..n_out {
        for k in 0..n_in {
            let (s, z) = m.params(o, k / group);
            wq[o * n_in + k] = s as f64 * m.code(o, k) as f64;
            wz[o * n_in + k] = s as f64 * z as f64;
        }
    }
    let (mut q, mut d) = (Vec::new(), Vec::new());
    let mut res = Vec::with_capacity(rows * n_out);
    for r in 0..rows {
        quantize_row(&x[r * n_in..(r + 1) * n_in], &mut q, &mut d);
        let xh: Vec<f64> = (0..n_in)
            .map(|k| d[k / QBLOCK] as f64 * q[k] as f64)
            .collect();
        for o in 0..n_out {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for k in 0..n_in {
                let (a, b) = (wq[o * n_in + k] * xh[k], wz[o * n_in + k] * xh[k]);
                sum += a - b;
                mag += a.abs() + b.abs();
            }
            res.push((sum, mag));
        }
    }
    res
}

/// `packed_gemm` for every row count in `row_counts` against the reference, to `1e-5 *
/// mag` (the integer sums are exact; f32 rounding of the per-segment and per-group sums and
/// of the scale products is a few 1e-7 relative per step).
fn check<const BITS: u32>(out: usize, inp: usize, group: usize, row_counts: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    let m = random_matrix::<BITS>(out, inp, group, &mut rng);
    let max_rows = row_counts.iter().copied().max().unwrap_or(0);
    let x = inputs(&mut rng, max_rows, inp);
    let want = reference(&m, &x, max_rows);
    for &rows in row_counts {
        let mut y = vec![f32::NAN; rows * out];
        assert!(packed_gemm(&m, &x[..rows * inp], rows, &mut y));
        for r in 0..rows {
            for o in 0..out {
                let (v, (w, mag)) = (y[r * out + o] as f64, want[r * out + o]);
                assert!(
                    (v - w).abs() <= 1e-5 * mag + 1e-9,
                    "INT{BITS} [{out}, {inp}] g{group} rows {rows}: x{r} w{o}: {v} vs {w}"
                );
            }
        }
    }
}

#[test]
fn blocked_int8_matches_reference_every_group_rows_1_to_70() {
    if skip() {
        return;
    }
    let all: Vec<usize> = (1..=70).collect();
    // 37 outputs: a full and a ragged panel; 200 inputs: not a multiple of 16 words or of a
    // 32-position segment; per-channel 172 runs a partial last segment past the row's words.
    for g in [200, 16, 32, 48, 64, 128] {
        check::<8>(37, 200, g, &all, 800 + g as u64);
    }
    for g in [172, 16, 32, 64] {
        check::<8>(33, 172, g, &[1, 4, 5, 9], 900 + g as u64);
    }
    // Several K blocks (2 x 256 quads per row at K 2100) and outputs past two panels.
    check::<8>(70, 2100, 2100, &[3, 8], 990);
    check::<8>(70, 2100, 48, &[7], 991);
}

#[test]
fn blocked_int4_matches_reference_every_group_rows_1_to_70() {
    if skip() {
        return;
    }
    let all: Vec<usize> = (1..=70).collect();
    for g in [32, 64, 96, 128] {
        check::<4>(37, 200, g, &all, 400 + g as u64);
        check::<4>(19, 172, g, &[1, 5, 8], 500 + g as u64);
    }
    check::<4>(65, 2100, 128, &[4, 9], 590);
}

#[test]
fn blocked_int2_matches_reference_every_group_rows_1_to_70() {
    if skip() {
        return;
    }
    let all: Vec<usize> = (1..=70).collect();
    for g in [32, 64, 96] {
        check::<2>(37, 200, g, &all, 600 + g as u64);
        check::<2>(19, 172, g, &[1, 5, 8], 700 + g as u64);
    }
    check::<2>(40, 4200, 64, &[6], 790);
}

#[test]
fn blocked_product_places_every_weight() {
    // One-hot rows: row `r` is 1 at K position `r` (block scale 1/127, code 127: 1 within
    // f32 rounding), so output `o` of row `r` is weight `(o, r)`: a misplaced quad,
    // segment scale, group scale or zero point shows at its position.
    if skip() {
        return;
    }
    fn one<const BITS: u32>(out: usize, inp: usize, group: usize) {
        let mut rng = Rng::new(31);
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let w = m.dequantize();
        let mut x = vec![0.0f32; inp * inp];
        for r in 0..inp {
            x[r * inp + r] = 1.0;
        }
        let mut y = vec![f32::NAN; inp * out];
        assert!(packed_gemm(&m, &x, inp, &mut y));
        for r in 0..inp {
            for o in 0..out {
                let (v, want) = (y[r * out + o], w[o * inp + r]);
                assert!(
                    (v - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "INT{BITS} g{group} w[{o}, {r}]: {v} vs {want}"
                );
            }
        }
    }
    one::<8>(18, 172, 172);
    one::<8>(18, 172, 16);
    one::<8>(18, 172, 48);
    one::<4>(18, 172, 32);
    one::<4>(18, 200, 96);
    one::<2>(18, 172, 64);
    one::<2>(18, 200, 96);
}

#[test]
fn dispatch_agrees_with_the_unblocked_product() {
    // Through `packed_product`: below `MIN_ROWS` the one-row kernels, at and above it the
    // blocked product; both compute the same quantized arithmetic.
    if skip() {
        return;
    }
    let mut rng = Rng::new(41);
    let m = random_matrix::<4>(45, 300, 64, &mut rng);
    for rows in [MIN_ROWS - 1, MIN_ROWS, MIN_ROWS + 5] {
        let x = inputs(&mut rng, rows, 300);
        let (mut a, mut b) = (vec![f32::NAN; rows * 45], vec![f32::NAN; rows * 45]);
        assert!(packed_product(&m, &x, rows, &mut a));
        assert!(packed_product_unblocked(&m, &x, rows, &mut b));
        for (i, (u, v)) in a.iter().zip(&b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "rows {rows} #{i}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn below_min_rows_each_row_is_bit_identical_to_a_one_row_product() {
    // The speculative-decoding contract: a verify of fewer than MIN_ROWS rows must give
    // exactly what decoding each row alone gives.
    if skip() {
        return;
    }
    let mut rng = Rng::new(47);
    fn one<const BITS: u32>(rng: &mut Rng, group: usize) {
        let (out, inp, rows) = (40, 300, MIN_ROWS - 1);
        let m = random_matrix::<BITS>(out, inp, group, rng);
        let x = inputs(rng, rows, inp);
        let mut all = vec![f32::NAN; rows * out];
        assert!(packed_product(&m, &x, rows, &mut all));
        for r in 0..rows {
            let mut one = vec![f32::NAN; out];
            assert!(packed_product(&m, &x[r * inp..(r + 1) * inp], 1, &mut one));
            assert_eq!(&all[r * out..(r + 1) * out], &one[..], "INT{BITS} row {r}");
        }
    }
    one::<8>(&mut rng, 300);
    one::<4>(&mut rng, 64);
    one::<2>(&mut rng, 32);
}

#[test]
fn zero_rows_and_zero_input() {
    if skip() {
        return;
    }
    let mut rng = Rng::new(43);
    let m = random_matrix::<2>(5, 96, 32, &mut rng);
    assert!(packed_gemm(&m, &[], 0, &mut []));
    let mut y = vec![f32::NAN; 3 * 5];
    assert!(packed_gemm(&m, &[0.0; 3 * 96], 3, &mut y));
    assert_eq!(y, [0.0; 15]);
}

/// Kernel timing, not a check: `cargo test --release --lib timing_blocked_packed -- --ignored
/// --nocapture`. Fastest of 15 calls, blocked against unblocked, at SmolLM2-135M's q and up
/// shapes for 2 to 16 input rows (where the blocked product starts to win).
#[test]
#[ignore]
fn timing_blocked_packed() {
    if skip() {
        return;
    }
    fn fastest(mut f: impl FnMut()) -> f64 {
        (0..15)
            .map(|_| {
                let s = std::time::Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e6
            })
            .fold(f64::INFINITY, f64::min)
    }
    fn one<const BITS: u32>(out: usize, inp: usize, group: usize) {
        let mut rng = Rng::new(5);
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let x = inputs(&mut rng, 16, inp);
        let mut y = vec![0.0f32; 16 * out];
        for rows in [2, 3, 4, 6, 8, 12, 16] {
            let (x, y) = (&x[..rows * inp], &mut y[..rows * out]);
            let b = fastest(|| assert!(packed_gemm(&m, x, rows, y)));
            let u = fastest(|| assert!(packed_product_unblocked(&m, x, rows, y)));
            eprintln!(
                "INT{BITS} g{group} [{out}, {inp}] x {rows}: blocked {b:.1} us, unblocked {u:.1} us ({:.2}x)",
                u / b
            );
        }
    }
    one::<8>(576, 576, 576);
    one::<4>(1536, 576, 128);
    one::<2>(576, 1536, 64);
}
