//! Tests of the VNNI products against a scalar reference of the same arithmetic and against
//! the f32 product.

use super::*;
use crate::backend::cpu::act_quant::{quantize_row, QBLOCK};
use crate::backend::cpu::qgemv::tests::random_matrix;
use crate::util::rng::Rng;

/// The scalar reference of the same arithmetic: `x` quantized by the same block rule, then
/// `sum_k s_g (q_k - z_g) * d_b xq_k` in f64 (every term is exact in f64 but the scale
/// products). Returns the value and `sum_k |term|`, the scale of its rounding error.
pub(crate) fn reference<const BITS: u32>(m: &Packed<BITS>, o: usize, x: &[f32]) -> (f64, f64) {
    let (mut q, mut d) = (Vec::new(), Vec::new());
    quantize_row(x, &mut q, &mut d);
    let group = m.group_size();
    let (mut sum, mut mag) = (0.0f64, 0.0f64);
    for k in 0..x.len() {
        let (s, z) = m.params(o, k / group);
        let xh = d[k / QBLOCK] as f64 * q[k] as f64;
        let term = s as f64 * (m.code(o, k) as f64 - z as f64) * xh;
        sum += term;
        mag += (s as f64 * m.code(o, k) as f64 * xh).abs() + (s as f64 * z as f64 * xh).abs();
    }
    (sum, mag)
}

/// Bound on `|w . x - w . xhat|` from activation quantization: `sum_k |w_k| d_b / 2`.
pub(crate) fn quantization_bound<const BITS: u32>(m: &Packed<BITS>, o: usize, x: &[f32]) -> f64 {
    let (mut q, mut d) = (Vec::new(), Vec::new());
    quantize_row(x, &mut q, &mut d);
    let (_, n_in) = m.dims();
    let w = &m.dequantize()[o * n_in..(o + 1) * n_in];
    w.iter()
        .enumerate()
        .map(|(k, &wk)| wk.abs() as f64 * d[k / QBLOCK] as f64 / 2.0)
        .sum()
}

/// Every output of `rows` random input rows through [`packed_product`]: against the
/// reference to `1e-5 * sum|term|` (the integer sums are exact; what differs is f32 rounding
/// of `s_g * d_b`, of the per-group input sums and of at most `in / 4` f32 additions, each
/// a few 1e-7 relative), and against `row_dot` on the f32 input to the quantization bound.
fn check<const BITS: u32>(out: usize, inp: usize, group: usize, rows: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let m = random_matrix::<BITS>(out, inp, group, &mut rng);
    // Rows of different magnitudes, with an outlier, so the block scales differ.
    let x: Vec<f32> = (0..rows * inp)
        .map(|i| {
            let v = rng.next_f32() * 2.0 - 1.0;
            if i % 97 == 5 {
                v * 20.0
            } else {
                v * (1 + (i / inp) % 3) as f32
            }
        })
        .collect();
    let mut y = vec![f32::NAN; rows * out];
    assert!(packed_product(&m, &x, rows, &mut y));
    for r in 0..rows {
        let xr = &x[r * inp..(r + 1) * inp];
        for o in 0..out {
            let v = y[r * out + o] as f64;
            let (want, mag) = reference(&m, o, xr);
            assert!(
                (v - want).abs() <= 1e-5 * mag + 1e-9,
                "INT{BITS} [{out}, {inp}] g{group} rows {rows}: x{r} w{o}: {v} vs reference {want}"
            );
            let f = m.row_dot(o, xr) as f64;
            let tol = quantization_bound(&m, o, xr) + 1e-5 * mag + 1e-6;
            assert!(
                (v - f).abs() <= tol,
                "INT{BITS} [{out}, {inp}] g{group} x{r} w{o}: {v} vs f32 {f} (tol {tol})"
            );
        }
    }
}

fn skip() -> bool {
    if !available() {
        eprintln!("SKIPPED: this CPU lacks AVX512-VNNI");
        return true;
    }
    false
}

#[test]
fn vnni_int8_matches_reference_every_group_ragged_shapes_rows_1_to_9() {
    if skip() {
        return;
    }
    // 172 and 200 are not multiples of a group or of a 64-byte chunk; 37 and 19 outputs are
    // not multiples of the 16-output task or the 4-row pass.
    for (i, &(out, inp)) in [(37, 172), (19, 200), (5, 576)].iter().enumerate() {
        for rows in 1..=9 {
            let seed = 100 + 10 * i as u64 + rows as u64;
            for g in [inp, 16, 32, 48, 64, 128] {
                check::<8>(out, inp, g, rows, seed);
            }
        }
    }
}

#[test]
fn vnni_int4_matches_reference_every_group_ragged_shapes_rows_1_to_9() {
    if skip() {
        return;
    }
    for (i, &(out, inp)) in [(37, 172), (19, 200), (5, 576)].iter().enumerate() {
        for rows in 1..=9 {
            let seed = 200 + 10 * i as u64 + rows as u64;
            for g in [32, 64, 96, 128] {
                check::<4>(out, inp, g, rows, seed);
            }
        }
    }
}

#[test]
fn vnni_int2_matches_reference_every_group_ragged_shapes_rows_1_to_9() {
    if skip() {
        return;
    }
    for (i, &(out, inp)) in [(37, 172), (19, 200), (5, 576)].iter().enumerate() {
        for rows in 1..=9 {
            let seed = 300 + 10 * i as u64 + rows as u64;
            for g in [32, 64, 96] {
                check::<2>(out, inp, g, rows, seed);
            }
        }
    }
}

#[test]
fn vnni_zero_input_gives_zero_and_chunk_tables_cover_every_group() {
    if skip() {
        return;
    }
    let mut rng = Rng::new(9);
    let m = random_matrix::<4>(3, 200, 32, &mut rng);
    let mut y = vec![f32::NAN; 3];
    assert!(packed_product(&m, &[0.0; 200], 1, &mut y));
    assert_eq!(y, [0.0; 3]);
    // 200 INT4 codes in groups of 32: 7 groups, 28 words, 2 chunks; the padding words of
    // the last chunk point at the last group.
    let cs = ChunkScales::new(&m);
    assert!(!cs.single);
    assert_eq!(cs.g0, [0, 4]);
    assert_eq!(
        cs.idx[1][..],
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    );
    let m8 = random_matrix::<8>(3, 200, 200, &mut rng);
    assert!(ChunkScales::new(&m8).single);
}
