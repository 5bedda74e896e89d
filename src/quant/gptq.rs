//! GPTQ for the asymmetric group-wise formats: quantize one input column at a time and push
//! each column's rounding error onto the columns not yet quantized, weighted by the inverse
//! of the layer-input Gram matrix `H = sum x x^T` (from [`super::calib`]), so the layer's
//! *output* error, not the weight error, is minimised.
//!
//! Per row (rows are independent and run in parallel): for column `k`, at the start of each
//! group fit `(s, z)` on the group's current (error-updated) weights with the
//! [`Method::Als`] fit weighted by `diag(H)`, snapped to the stored parameter grid (INT2:
//! the compact codes, with the row's super-scale fixed up front); quantize `w_k`;
//! `e = (w_k - w'_k) / U_kk`; `w_j -= e * U_kj` for `j > k`, where `U` is the upper Cholesky
//! factor of `H^-1` (`H^-1 = U^T U`). `H` is damped by 1% of its mean diagonal; channels
//! never seen (`H_kk = 0`) get weight 0.

use super::packed::Packed;
use super::quantizer::{code, fit_group, pack_rows, row_grid, Method, RowFit};
use crate::{Error, Result};
use rayon::prelude::*;

/// Headroom of an INT2 row's super-scale over its largest min/max group scale: the error
/// feedback can widen a group's range before it is quantized, and a scale above the
/// super-scale would have to clamp (a margin costs no resolution: the scale grid is
/// logarithmic).
const SUPER_SCALE_MARGIN: f32 = 1.25;

/// Lower Cholesky factor of a symmetric positive-definite `n x n` matrix (row-major).
fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return Err(Error::invalid(format!(
                        "GPTQ: calibration Gram matrix is not positive definite at column {i}"
                    )));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// Upper Cholesky factor `U` of `H^-1` (`H^-1 = U^T U`) for the damped Gram matrix.
fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let l = cholesky(h, n)?;
    // Linv = L^-1 (lower triangular), by forward substitution on the identity.
    let mut linv = vec![0.0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= l[i * n + k] * linv[k * n + c];
            }
            linv[i * n + c] = s / l[i * n + i];
        }
    }
    // H^-1 = Linv^T Linv.
    let mut hinv = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i.max(j)..n)
                .map(|k| linv[k * n + i] * linv[k * n + j])
                .sum();
            hinv[i * n + j] = s;
            hinv[j * n + i] = s;
        }
    }
    let l2 = cholesky(&hinv, n)?;
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = l2[i * n + j];
        }
    }
    Ok(u)
}

/// Quantizes `w` (`[out, inp]`) to `BITS`-bit (4 or 2) asymmetric groups with GPTQ, given the
/// layer-input Gram matrix `gram` (`[inp, inp]`, row-major, any positive scale).
pub fn gptq_asym<const BITS: u32>(
    w: &[f32],
    out: usize,
    inp: usize,
    group: usize,
    gram: &[f64],
) -> Result<Packed<BITS>> {
    Packed::<BITS>::check_group(inp, group)?;
    if w.len() != out * inp || gram.len() != inp * inp {
        return Err(Error::invalid(format!(
            "GPTQ of [{out}, {inp}]: got {} weights and a Gram matrix of {} entries",
            w.len(),
            gram.len()
        )));
    }
    let mut h = gram.to_vec();
    let mean_diag = (0..inp).map(|i| h[i * inp + i]).sum::<f64>() / inp as f64;
    let dead: Vec<bool> = (0..inp).map(|i| h[i * inp + i] <= 0.0).collect();
    let damp = 0.01 * mean_diag.max(1e-12);
    for i in 0..inp {
        if dead[i] {
            h[i * inp + i] = 1.0;
        }
        h[i * inp + i] += damp;
    }
    let importance: Vec<f32> = (0..inp)
        .map(|i| {
            if dead[i] {
                0.0
            } else {
                gram[i * inp + i] as f32
            }
        })
        .collect();
    let u = inverse_cholesky_upper(&h, inp)?;
    let ng = inp.div_ceil(group);
    let levels = Packed::<BITS>::MAX_CODE;
    let rows: Vec<RowFit> = (0..out)
        .into_par_iter()
        .map(|r| {
            let orig = &w[r * inp..(r + 1) * inp];
            // INT2 rows fix their super-scale before any error feedback, from the original
            // weights with headroom for the ranges the feedback widens.
            let grid = row_grid::<BITS>(orig, group, SUPER_SCALE_MARGIN);
            let mut row: Vec<f64> = orig.iter().map(|&x| x as f64).collect();
            let (mut codes, mut groups) = (Vec::with_capacity(inp), Vec::with_capacity(ng));
            let (mut s, mut z) = (1.0f32, 0.0f32);
            for k in 0..inp {
                if k % group == 0 {
                    let k1 = (k + group).min(inp);
                    let cur: Vec<f32> = row[k..k1].iter().map(|&x| x as f32).collect();
                    let imp = &importance[k..k1];
                    let hw = imp.iter().any(|&v| v > 0.0).then_some(imp);
                    let fit = fit_group(&cur, hw, levels, Method::Als, grid);
                    (s, z) = (fit.scale.to_f32(), fit.zero.to_f32());
                    groups.push(fit);
                }
                let q = code(row[k] as f32, s, z, levels as f32);
                codes.push(q as i32);
                let deq = ((q - z) * s) as f64;
                let e = (row[k] - deq) / u[k * inp + k];
                for j in k + 1..inp {
                    row[j] -= e * u[k * inp + j];
                }
            }
            RowFit {
                codes,
                grid,
                groups,
            }
        })
        .collect();
    pack_rows::<BITS>(out, inp, group, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantizer::quantize_asym;
    use crate::util::rng::Rng;

    #[test]
    fn inverse_cholesky_is_exact_on_a_small_matrix() {
        // H = [[4, 2], [2, 3]] -> H^-1 = [[3, -2], [-2, 4]] / 8.
        let u = inverse_cholesky_upper(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let utu = |i: usize, j: usize| (0..2).map(|k| u[k * 2 + i] * u[k * 2 + j]).sum::<f64>();
        assert!((utu(0, 0) - 3.0 / 8.0).abs() < 1e-12);
        assert!((utu(0, 1) + 2.0 / 8.0).abs() < 1e-12);
        assert!((utu(1, 1) - 4.0 / 8.0).abs() < 1e-12);
        assert_eq!(u[2], 0.0, "upper triangular");
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }

    #[test]
    fn gptq_lowers_output_error_on_correlated_inputs() {
        let (out, inp, n) = (8, 96, 400);
        let mut rng = Rng::new(3);
        let w: Vec<f32> = (0..out * inp).map(|_| rng.normal() * 0.05).collect();
        // Correlated inputs: a shared component plus noise, with uneven channel scales.
        let xs: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                let c = rng.normal();
                (0..inp)
                    .map(|k| (c + 0.5 * rng.normal()) * (1.0 + (k % 7) as f32))
                    .collect()
            })
            .collect();
        let mut gram = vec![0.0f64; inp * inp];
        for x in &xs {
            for i in 0..inp {
                for j in 0..inp {
                    gram[i * inp + j] += x[i] as f64 * x[j] as f64;
                }
            }
        }
        let out_err = |deq: &[f32]| -> f64 {
            xs.iter()
                .map(|x| {
                    (0..out)
                        .map(|o| {
                            let d: f64 = (0..inp)
                                .map(|k| ((w[o * inp + k] - deq[o * inp + k]) * x[k]) as f64)
                                .sum();
                            d * d
                        })
                        .sum::<f64>()
                })
                .sum()
        };
        let g = gptq_asym::<2>(&w, out, inp, 32, &gram).unwrap();
        let r = quantize_asym::<2>(&w, out, inp, 32, Method::Rtn, None).unwrap();
        let (eg, er) = (out_err(&g.dequantize()), out_err(&r.dequantize()));
        assert!(eg < 0.7 * er, "gptq {eg} vs rtn {er}");
        // What GPTQ reconstructs with is what the compact parameters decode to.
        let (s, z) = g.int2_params().unwrap().decode();
        assert_eq!((&s[..], &z[..]), (g.scales(), g.zeros()));
    }
}
