//! Quantizers: from f32 weights to the packed formats of [`super::packed`].
//!
//! * [`Method::Rtn`]: round to nearest. INT8: `s = max|w| / 127`. INT4/INT2: `s = (max - min)
//!   / (2^b - 1)`, `z = -min / s`, `q = clamp(round(w / s + z))`.
//! * [`Method::Als`]: an error-minimising fit per group. Starting from RTN ranges shrunk by
//!   several clipping ratios, it alternates (a) the optimal codes for fixed `(s, z)` (nearest
//!   clamped level) and (b) the least-squares `(s, z)` for fixed codes (a linear regression of
//!   `w` on `q`); each step can only lower the group's squared error, and the best candidate
//!   (RTN itself included) is kept, so it never does worse than RTN on any group. With
//!   per-input-channel importances `h_k` (mean squared calibration activation, see
//!   [`super::calib`]) it minimises `sum_k h_k (w_k - w'_k)^2`, the expected output error of
//!   a diagonal approximation of the layer's input covariance.
//!
//! Scales and zeros are rounded to FP16 *before* the final codes are chosen, so the stored
//! parameters and codes are consistent.

use super::packed::Packed;
use super::{Int8Matrix, WeightMatrix};
use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// How weights are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Round to nearest with min/max (INT8: absmax) ranges.
    Rtn,
    /// Alternating least-squares scale/zero fit with clipping search (see module docs).
    Als,
    /// GPTQ error feedback over calibration inputs (see [`super::gptq`]); groups are fitted
    /// with the `Als` fit. Needs a calibration with Gram matrices (`in^2` f64 per matrix) and
    /// costs `O(in^3 + out * in^2)` per matrix on one core for the factorisation: meant for
    /// small models such as stories260K; use `Als` at 7B scale.
    Gptq,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rtn" => Ok(Method::Rtn),
            "als" => Ok(Method::Als),
            "gptq" => Ok(Method::Gptq),
            other => Err(Error::invalid(format!(
                "unknown quantization method '{other}' (known: rtn, als, gptq)"
            ))),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Rtn => "rtn",
            Method::Als => "als",
            Method::Gptq => "gptq",
        })
    }
}

/// Smallest scale used (avoids dividing by zero on constant groups).
const MIN_SCALE: f32 = 1e-7;

fn to_f16_scale(s: f32) -> f16 {
    let h = f16::from_f32(s.max(MIN_SCALE));
    if h.to_f32() > 0.0 {
        h
    } else {
        f16::from_bits(1)
    }
}

/// Codes of `w` under `(s, z)` with `levels = 2^b - 1`.
#[inline]
fn code(w: f32, s: f32, z: f32, levels: f32) -> f32 {
    (w / s + z).round().clamp(0.0, levels)
}

/// Weighted squared error of a group under FP16-rounded `(s, z)`.
fn group_err(w: &[f32], h: Option<&[f32]>, s: f16, z: f16, levels: f32) -> f64 {
    let (s, z) = (s.to_f32(), z.to_f32());
    w.iter()
        .enumerate()
        .map(|(i, &x)| {
            let e = (x - (code(x, s, z, levels) - z) * s) as f64;
            e * e * h.map_or(1.0, |h| h[i] as f64)
        })
        .sum()
}

/// RTN min/max parameters of a group, FP16-rounded.
fn rtn_params(lo: f32, hi: f32, levels: f32) -> (f16, f16) {
    let s = to_f16_scale((hi - lo) / levels);
    let z = f16::from_f32(-lo / s.to_f32());
    (s, z)
}

/// Fits `(scale, zero)` of one asymmetric group with `levels = 2^b - 1`.
pub fn fit_group(w: &[f32], h: Option<&[f32]>, levels: u32, method: Method) -> (f16, f16) {
    let levels = levels as f32;
    let lo = w.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let hi = w.iter().copied().fold(f32::NEG_INFINITY, f32::max).max(0.0);
    let rtn = rtn_params(lo, hi, levels);
    if method == Method::Rtn {
        return rtn;
    }
    let mut best = rtn;
    let mut best_err = group_err(w, h, rtn.0, rtn.1, levels);
    let weight = |i: usize| h.map_or(1.0, |h| h[i] as f64);
    for &clip in &[1.0f32, 0.9, 0.8, 0.7, 0.6, 0.5] {
        let (mut s, mut z) = ((hi - lo) * clip / levels, -lo * clip);
        s = s.max(MIN_SCALE);
        z /= s;
        for _ in 0..12 {
            // Least squares of w on q: w ≈ a*q + b, then s = a, z = -b/a.
            let (mut sw, mut sq, mut sww, mut sqq, mut sqw) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for (i, &x) in w.iter().enumerate() {
                let q = code(x, s, z, levels) as f64;
                let hw = weight(i);
                sw += hw * x as f64;
                sq += hw * q;
                sqq += hw * q * q;
                sqw += hw * q * x as f64;
                sww += hw;
            }
            let n = sww;
            let var = sqq - sq * sq / n;
            if var <= 1e-20 {
                break;
            }
            let a = (sqw - sq * sw / n) / var;
            if a <= MIN_SCALE as f64 {
                break;
            }
            let b = (sw - a * sq) / n;
            let (ns, nz) = (a as f32, (-b / a) as f32);
            if (ns - s).abs() <= 1e-7 * s && (nz - z).abs() <= 1e-6 {
                break;
            }
            s = ns;
            z = nz;
        }
        let cand = (to_f16_scale(s), f16::from_f32(z));
        let e = group_err(w, h, cand.0, cand.1, levels);
        if e < best_err {
            best_err = e;
            best = cand;
        }
    }
    best
}

/// Quantizes `w` (`[out, inp]` row-major f32) to a `BITS`-bit asymmetric packed matrix
/// (`BITS` = 4 or 2). `importance`, when given, holds one non-negative weight per input
/// channel (length `inp`) for [`Method::Als`].
pub fn quantize_asym<const BITS: u32>(
    w: &[f32],
    out: usize,
    inp: usize,
    group: usize,
    method: Method,
    importance: Option<&[f32]>,
) -> Result<Packed<BITS>> {
    if BITS >= 8 {
        return Err(Error::invalid("quantize_asym is for INT4 and INT2"));
    }
    if method == Method::Gptq {
        return Err(Error::invalid(
            "GPTQ needs calibration Gram matrices: use quant::gptq::gptq_asym",
        ));
    }
    Packed::<BITS>::check_group(inp, group)?;
    check_len(w.len(), out, inp, importance)?;
    let ng = inp.div_ceil(group);
    let levels = Packed::<BITS>::MAX_CODE;
    let rows: Vec<(Vec<i32>, Vec<f16>, Vec<f16>)> = (0..out)
        .into_par_iter()
        .map(|r| {
            let row = &w[r * inp..(r + 1) * inp];
            let mut codes = Vec::with_capacity(inp);
            let (mut ss, mut zs) = (Vec::with_capacity(ng), Vec::with_capacity(ng));
            for g in 0..ng {
                let (k0, k1) = (g * group, ((g + 1) * group).min(inp));
                let h = importance.map(|h| &h[k0..k1]);
                let (s, z) = fit_group(&row[k0..k1], h, levels, method);
                let (sf, zf) = (s.to_f32(), z.to_f32());
                codes.extend(
                    row[k0..k1]
                        .iter()
                        .map(|&x| code(x, sf, zf, levels as f32) as i32),
                );
                ss.push(s);
                zs.push(z);
            }
            (codes, ss, zs)
        })
        .collect();
    let mut codes = Vec::with_capacity(out * inp);
    let (mut scales, mut zeros) = (Vec::with_capacity(out * ng), Vec::with_capacity(out * ng));
    for (c, s, z) in rows {
        codes.extend(c);
        scales.extend(s);
        zeros.extend(z);
    }
    Packed::<BITS>::pack(out, inp, group, &codes, scales, zeros)
}

/// Quantizes `w` (`[out, inp]`) to symmetric INT8 with groups of `group` (pass `inp` for one
/// scale per output channel): `s = max|w| / 127`, `q = round(w / s)`.
pub fn quantize_int8(w: &[f32], out: usize, inp: usize, group: usize) -> Result<Int8Matrix> {
    Int8Matrix::check_group(inp, group)?;
    check_len(w.len(), out, inp, None)?;
    let ng = inp.div_ceil(group);
    let mut codes = Vec::with_capacity(out * inp);
    let mut scales = Vec::with_capacity(out * ng);
    for r in 0..out {
        for g in 0..ng {
            let grp = &w[r * inp + g * group..r * inp + ((g + 1) * group).min(inp)];
            let amax = grp.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let s = to_f16_scale(amax / 127.0);
            let sf = s.to_f32();
            codes.extend(
                grp.iter()
                    .map(|&x| (x / sf).round().clamp(-127.0, 127.0) as i32),
            );
            scales.push(s);
        }
    }
    Int8Matrix::pack(out, inp, group, &codes, scales, Vec::new())
}

fn check_len(len: usize, out: usize, inp: usize, importance: Option<&[f32]>) -> Result<()> {
    if len != out * inp {
        return Err(Error::invalid(format!(
            "matrix [{out}, {inp}] needs {} weights, got {len}",
            out * inp
        )));
    }
    if let Some(h) = importance {
        if h.len() != inp || h.iter().any(|&v| !(v.is_finite() && v >= 0.0)) {
            return Err(Error::invalid(format!(
                "importance needs {inp} finite non-negative values (got {})",
                h.len()
            )));
        }
    }
    Ok(())
}

/// Quantizes one matrix to `bits` (8, 4 or 2) with the given group and method.
pub fn quantize_matrix(
    w: &[f32],
    out: usize,
    inp: usize,
    bits: u32,
    group: usize,
    method: Method,
    importance: Option<&[f32]>,
) -> Result<WeightMatrix> {
    Ok(match bits {
        8 => WeightMatrix::Int8(quantize_int8(w, out, inp, group)?),
        4 => WeightMatrix::Int4(quantize_asym::<4>(w, out, inp, group, method, importance)?),
        2 => WeightMatrix::Int2(quantize_asym::<2>(w, out, inp, group, method, importance)?),
        b => return Err(Error::invalid(format!("no {b}-bit packed format"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    fn mse(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64
    }

    #[test]
    fn als_beats_rtn_on_gaussian_weights() {
        let mut rng = Rng::new(5);
        let (out, inp) = (16, 172);
        let w: Vec<f32> = (0..out * inp).map(|_| rng.normal() * 0.05).collect();
        for bits in [4u32, 2] {
            let g = if bits == 4 { 128 } else { 64 };
            let rtn = quantize_matrix(&w, out, inp, bits, g, Method::Rtn, None).unwrap();
            let als = quantize_matrix(&w, out, inp, bits, g, Method::Als, None).unwrap();
            let (er, ea) = (mse(&w, &rtn.dequantize()), mse(&w, &als.dequantize()));
            assert!(ea < er * 0.95, "INT{bits}: als {ea} vs rtn {er}");
        }
    }

    #[test]
    fn constant_and_zero_groups_are_exact_enough() {
        let w = vec![0.25f32; 64];
        let m = quantize_asym::<2>(&w, 1, 64, 64, Method::Als, None).unwrap();
        assert!(m.dequantize().iter().all(|&x| (x - 0.25).abs() < 1e-3));
        let z = quantize_int8(&[0.0; 32], 1, 32, 32).unwrap();
        assert!(z.dequantize().iter().all(|&x| x == 0.0));
    }
}
