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
//! Scales and zeros are snapped to what is stored *before* codes are chosen (FP16 for INT4,
//! the compact code grid of [`super::packed`] for INT2, see [`ParamGrid`]), so the stored
//! parameters and codes are consistent and reconstruction equals the stored decode.

use super::int2_params::{
    decode_scale, decode_zero, encode_scale, encode_zero, Int2Params, MAX_SCALE_CODE, MAX_ZERO_CODE,
};
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
pub(super) fn code(w: f32, s: f32, z: f32, levels: f32) -> f32 {
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

/// Where a group's scale and zero may lie.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamGrid {
    /// Any positive FP16 scale and any FP16 zero (INT4).
    Fp16,
    /// The compact INT2 grid of a row whose super-scale is the given FP16 value (see
    /// "INT2 parameters" in [`super::packed`]).
    Int2(f16),
}

/// A group's fitted parameters: the FP16 scale and zero the codes are chosen with and, on
/// the INT2 grid, the scale and zero codes they are the exact decode of (0 on the FP16 grid).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupFit {
    /// Decoded scale.
    pub scale: f16,
    /// Decoded zero point.
    pub zero: f16,
    /// INT2 scale code.
    pub scale_code: u8,
    /// INT2 zero code.
    pub zero_code: u8,
}

impl ParamGrid {
    /// The grid point nearest to a real `(s, z)`.
    pub fn snap(self, s: f32, z: f32) -> GroupFit {
        match self {
            ParamGrid::Fp16 => GroupFit {
                scale: to_f16_scale(s),
                zero: f16::from_f32(z),
                scale_code: 0,
                zero_code: 0,
            },
            ParamGrid::Int2(sup) => self.point(encode_scale(sup, s), encode_zero(z)),
        }
    }

    /// The INT2 grid point of codes `(c, zc)` (on the FP16 grid the codes are ignored and
    /// the point is the smallest positive FP16 scale with zero 0).
    fn point(self, c: u8, zc: u8) -> GroupFit {
        match self {
            ParamGrid::Fp16 => self.snap(0.0, 0.0),
            ParamGrid::Int2(sup) => GroupFit {
                scale: decode_scale(sup, c),
                zero: decode_zero(zc),
                scale_code: c,
                zero_code: zc,
            },
        }
    }

    /// Min/max (RTN) parameters: the scale `(hi - lo) / levels` snapped first, then the zero
    /// `-lo / s` computed with that stored scale and snapped.
    fn rtn(self, lo: f32, hi: f32, levels: f32) -> GroupFit {
        let s = self.snap((hi - lo) / levels, 0.0).scale.to_f32();
        self.snap(s, -lo / s)
    }
}

/// The INT2 super-scale of a row: `margin` times its largest min/max group scale
/// `(max(w, 0) - min(w, 0)) / levels`, as a positive FP16.
pub fn row_super_scale(row: &[f32], group: usize, levels: u32, margin: f32) -> f16 {
    let widest = row
        .chunks(group.max(1))
        .map(|g| {
            let lo = g.iter().copied().fold(0.0f32, f32::min);
            let hi = g.iter().copied().fold(0.0f32, f32::max);
            hi - lo
        })
        .fold(0.0f32, f32::max);
    to_f16_scale(widest / levels as f32 * margin)
}

/// Fits `(scale, zero)` of one asymmetric group with `levels = 2^b - 1` on `grid`. Every
/// candidate is snapped to the grid before its codes are chosen, so the error it is judged by
/// is the error of what is stored. [`Method::Als`] alternates on the grid from several
/// clipped ranges, keeping the best point seen (RTN's included); on the INT2 grid it then
/// descends over neighbouring scale and zero codes until no neighbour is better.
pub fn fit_group(
    w: &[f32],
    h: Option<&[f32]>,
    levels: u32,
    method: Method,
    grid: ParamGrid,
) -> GroupFit {
    let levels = levels as f32;
    let lo = w.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let hi = w.iter().copied().fold(f32::NEG_INFINITY, f32::max).max(0.0);
    let rtn = grid.rtn(lo, hi, levels);
    if method == Method::Rtn {
        return rtn;
    }
    let mut best = rtn;
    let mut best_err = group_err(w, h, rtn.scale, rtn.zero, levels);
    let weight = |i: usize| h.map_or(1.0, |h| h[i] as f64);
    // On the FP16 grid the alternation runs on real (s, z) and only its end point is
    // rounded (FP16 is fine enough); on the coarse INT2 grid every step is snapped, so the
    // codes are always chosen under a storable point, and each point is judged.
    let on_grid = matches!(grid, ParamGrid::Int2(_));
    for &clip in &[1.0f32, 0.9, 0.8, 0.7, 0.6, 0.5] {
        let mut s = ((hi - lo) * clip / levels).max(MIN_SCALE);
        let mut z = -lo * clip / s;
        let mut cur = grid.snap(s, z);
        for _ in 0..12 {
            // Codes (and, on the grid, the error) under the current point, then least
            // squares of w on those codes: w ≈ a*q + b, i.e. s = a, z = -b/a.
            let (cs, cz) = if on_grid {
                (cur.scale.to_f32(), cur.zero.to_f32())
            } else {
                (s, z)
            };
            let (mut sw, mut sq, mut sww, mut sqq, mut sqw) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            let mut err = 0.0f64;
            for (i, &x) in w.iter().enumerate() {
                let qf = code(x, cs, cz, levels);
                let (q, hw) = (qf as f64, weight(i));
                let e = (x - (qf - cz) * cs) as f64;
                err += hw * e * e;
                sw += hw * x as f64;
                sq += hw * q;
                sqq += hw * q * q;
                sqw += hw * q * x as f64;
                sww += hw;
            }
            if on_grid && err < best_err {
                best_err = err;
                best = cur;
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
            let next = grid.snap(ns, nz);
            let converged = if on_grid {
                next == cur
            } else {
                (ns - s).abs() <= 1e-7 * s && (nz - z).abs() <= 1e-6
            };
            if converged {
                break;
            }
            (s, z, cur) = (ns, nz, next);
        }
        let e = group_err(w, h, cur.scale, cur.zero, levels);
        if e < best_err {
            best_err = e;
            best = cur;
        }
    }
    if matches!(grid, ParamGrid::Int2(_)) {
        for _ in 0..32 {
            let mut moved = false;
            for dc in -2i32..=2 {
                for dz in -1i32..=1 {
                    let c = best.scale_code as i32 + dc;
                    let zc = best.zero_code as i32 + dz;
                    if (dc, dz) == (0, 0)
                        || !(0..=MAX_SCALE_CODE as i32).contains(&c)
                        || !(0..=MAX_ZERO_CODE as i32).contains(&zc)
                    {
                        continue;
                    }
                    let cand = grid.point(c as u8, zc as u8);
                    let e = group_err(w, h, cand.scale, cand.zero, levels);
                    if e < best_err {
                        (best, best_err, moved) = (cand, e, true);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    best
}

/// One quantized row: its codes, the grid its groups were fitted on, and their parameters.
pub(super) struct RowFit {
    /// Codes, `in` of them.
    pub codes: Vec<i32>,
    /// The row's grid (its super-scale on INT2).
    pub grid: ParamGrid,
    /// One fit per group.
    pub groups: Vec<GroupFit>,
}

/// Packs fitted rows into a `BITS`-bit matrix: compact parameters for INT2, FP16 otherwise.
pub(super) fn pack_rows<const BITS: u32>(
    out: usize,
    inp: usize,
    group: usize,
    rows: Vec<RowFit>,
) -> Result<Packed<BITS>> {
    let ng = inp.div_ceil(group);
    let mut codes = Vec::with_capacity(out * inp);
    let mut fits = Vec::with_capacity(out * ng);
    let mut supers = Vec::with_capacity(out);
    for r in rows {
        codes.extend(r.codes);
        fits.extend(r.groups);
        if let ParamGrid::Int2(sup) = r.grid {
            supers.push(sup);
        }
    }
    if BITS == 2 {
        let params = Int2Params::new(
            ng,
            supers,
            fits.iter().map(|f| f.scale_code).collect(),
            fits.iter().map(|f| f.zero_code).collect(),
        )?;
        Packed::<BITS>::pack_int2(out, inp, group, &codes, params)
    } else {
        let scales = fits.iter().map(|f| f.scale).collect();
        let zeros = fits.iter().map(|f| f.zero).collect();
        Packed::<BITS>::pack(out, inp, group, &codes, scales, zeros)
    }
}

/// The grid of a row of a `BITS`-bit matrix: INT2 rows get a super-scale from
/// [`row_super_scale`] with `margin`.
pub(super) fn row_grid<const BITS: u32>(row: &[f32], group: usize, margin: f32) -> ParamGrid {
    if BITS == 2 {
        ParamGrid::Int2(row_super_scale(
            row,
            group,
            Packed::<BITS>::MAX_CODE,
            margin,
        ))
    } else {
        ParamGrid::Fp16
    }
}

/// Quantizes `w` (`[out, inp]` row-major f32) to a `BITS`-bit asymmetric packed matrix
/// (`BITS` = 4 or 2). `importance`, when given, holds one non-negative weight per input
/// channel (length `inp`) for [`Method::Als`]. INT2 rows take their largest min/max group
/// scale as super-scale.
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
    let rows: Vec<RowFit> = (0..out)
        .into_par_iter()
        .map(|r| {
            let row = &w[r * inp..(r + 1) * inp];
            let grid = row_grid::<BITS>(row, group, 1.0);
            let mut codes = Vec::with_capacity(inp);
            let mut groups = Vec::with_capacity(ng);
            for g in 0..ng {
                let (k0, k1) = (g * group, ((g + 1) * group).min(inp));
                let h = importance.map(|h| &h[k0..k1]);
                let fit = fit_group(&row[k0..k1], h, levels, method, grid);
                let (sf, zf) = (fit.scale.to_f32(), fit.zero.to_f32());
                codes.extend(
                    row[k0..k1]
                        .iter()
                        .map(|&x| code(x, sf, zf, levels as f32) as i32),
                );
                groups.push(fit);
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
    fn int2_codes_are_chosen_under_the_stored_parameters() {
        let mut rng = Rng::new(11);
        let (out, inp, g) = (12, 172, 64);
        let w: Vec<f32> = (0..out * inp).map(|_| rng.normal() * 0.05).collect();
        let imp: Vec<f32> = (0..inp).map(|_| rng.uniform(0.1, 2.0)).collect();
        for method in [Method::Rtn, Method::Als] {
            let m = quantize_asym::<2>(&w, out, inp, g, method, Some(&imp)).unwrap();
            let p = m.int2_params().unwrap();
            let (s, z) = p.decode();
            assert_eq!((&s[..], &z[..]), (m.scales(), m.zeros()), "{method}");
            for r in 0..out {
                for k in 0..inp {
                    let (sf, zf) = m.params(r, k / g);
                    let want = code(w[r * inp + k], sf, zf, 3.0) as i32;
                    assert_eq!(m.code(r, k), want, "{method} row {r} k {k}");
                }
                if method == Method::Rtn {
                    // The super-scale is the row's widest RTN scale: that group has code 0.
                    assert!(p.scale_codes()[r * 3..r * 3 + 3].contains(&0), "row {r}");
                }
            }
        }
    }

    #[test]
    fn int2_fits_are_grid_points_no_worse_than_rtn() {
        let mut rng = Rng::new(4);
        let sup = f16::from_f32(0.07);
        let grid = ParamGrid::Int2(sup);
        for _ in 0..50 {
            let w: Vec<f32> = (0..64).map(|_| rng.normal() * 0.03 + 0.01).collect();
            let rtn = fit_group(&w, None, 3, Method::Rtn, grid);
            let als = fit_group(&w, None, 3, Method::Als, grid);
            for f in [rtn, als] {
                assert_eq!(f, grid.point(f.scale_code, f.zero_code));
            }
            let err = |f: GroupFit| group_err(&w, None, f.scale, f.zero, 3.0);
            assert!(err(als) <= err(rtn), "{als:?} vs {rtn:?}");
        }
        // Range checks of the grid: scales above the super-scale clamp to code 0.
        assert_eq!(grid.snap(1.0, 9.0), grid.point(0, 15));
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
