//! The compact INT2 group parameters: per row one FP16 super-scale, per group one u8 log-scale
//! code and one 4-bit zero code. The layout, the decode rules and why they were chosen are
//! documented once, in [`super::packed`] ("INT2 parameters"); this file is the codec.

use crate::{Error, Result};
use half::f16;
use std::sync::LazyLock;

/// Scale codes per octave: `s = S_r * 2^(-c / 32)`.
pub const SCALE_STEPS_PER_OCTAVE: u32 = 32;
/// Largest scale code (8 octaves below the super-scale); smaller scales clamp to it.
pub const MAX_SCALE_CODE: u8 = 255;
/// Largest zero code: `z = zc / 4`, so `z` spans `[0, 3.75]` in steps of 0.25.
pub const MAX_ZERO_CODE: u8 = 15;
/// Zero codes per quantisation step: `z = zc / 4`.
pub const ZERO_CODES_PER_STEP: f64 = 4.0;

/// `2^(-c/32)` for every code. Built from square roots and products of exact binary
/// fractions only (each correctly rounded by IEEE 754), so every host decodes the same bits.
static FACTORS: LazyLock<[f64; 256]> = LazyLock::new(|| {
    let mut step = 0.5f64; // 2^(-1/32) after five square roots
    for _ in 0..5 {
        step = step.sqrt();
    }
    let mut frac = [1.0f64; 32];
    for j in 1..32 {
        frac[j] = frac[j - 1] * step;
    }
    let mut t = [0.0f64; 256];
    for (c, f) in t.iter_mut().enumerate() {
        let octave = 0.5f64.powi((c / 32) as i32); // exact: a power of two
        *f = octave * frac[c % 32];
    }
    t
});

/// The decoded scale of code `c` under super-scale `super_scale`:
/// `f16(S_r * 2^(-c/32))`, never below the smallest positive FP16.
pub fn decode_scale(super_scale: f16, c: u8) -> f16 {
    let s = f16::from_f64(super_scale.to_f64() * FACTORS[c as usize]);
    if s.to_f32() > 0.0 {
        s
    } else {
        f16::from_bits(1)
    }
}

/// The code whose decoded scale is nearest to `s` (scales at or above `super_scale` give 0;
/// scales below the 8-octave range, non-positive or NaN ones give [`MAX_SCALE_CODE`]).
pub fn encode_scale(super_scale: f16, s: f32) -> u8 {
    let sup = super_scale.to_f32();
    if s.is_nan() || s <= 0.0 {
        return MAX_SCALE_CODE;
    }
    let guess = (SCALE_STEPS_PER_OCTAVE as f32 * (sup / s).log2())
        .round()
        .clamp(0.0, MAX_SCALE_CODE as f32) as i32;
    let mut best = (f32::INFINITY, 0u8);
    for c in (guess - 1).max(0)..=(guess + 1).min(MAX_SCALE_CODE as i32) {
        let d = (decode_scale(super_scale, c as u8).to_f32() - s).abs();
        if d < best.0 {
            best = (d, c as u8);
        }
    }
    best.1
}

/// The decoded zero of code `zc`: `zc / 4` (exact in FP16).
pub fn decode_zero(zc: u8) -> f16 {
    f16::from_f64(zc as f64 / ZERO_CODES_PER_STEP)
}

/// The zero code nearest to `z`, clamped to `0..=15` (non-finite `z` gives 0).
pub fn encode_zero(z: f32) -> u8 {
    if !z.is_finite() {
        return 0;
    }
    (z * ZERO_CODES_PER_STEP as f32)
        .round()
        .clamp(0.0, MAX_ZERO_CODE as f32) as u8
}

/// Bytes of the compact parameters of `out` rows of `n_groups` groups: scale codes, zero
/// codes two per byte, and one FP16 super-scale per row.
pub fn param_byte_len(out: usize, n_groups: usize) -> usize {
    out * (n_groups + n_groups.div_ceil(2) + 2)
}

/// The compact parameters of one INT2 matrix, the source of truth its decoded FP16 scales and
/// zeros are computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Int2Params {
    n_groups: usize,
    super_scales: Vec<f16>,
    scale_codes: Vec<u8>,
    zero_codes: Vec<u8>,
}

impl Int2Params {
    /// Checks and wraps the parts: `super_scales` `[out]` (positive, finite), `scale_codes`
    /// and `zero_codes` `[out, n_groups]` (zero codes one per byte, each at most 15).
    pub fn new(
        n_groups: usize,
        super_scales: Vec<f16>,
        scale_codes: Vec<u8>,
        zero_codes: Vec<u8>,
    ) -> Result<Self> {
        let want = super_scales.len() * n_groups;
        if n_groups == 0 || scale_codes.len() != want || zero_codes.len() != want {
            return Err(Error::invalid(format!(
                "INT2 parameters of {} rows x {n_groups} groups: got {} scale codes and {} zero codes",
                super_scales.len(),
                scale_codes.len(),
                zero_codes.len()
            )));
        }
        if let Some(r) = super_scales
            .iter()
            .position(|s| !(s.is_finite() && s.to_f32() > 0.0))
        {
            return Err(Error::invalid(format!(
                "INT2 super-scale of row {r} is {}, not a positive finite FP16",
                super_scales[r]
            )));
        }
        if let Some(i) = zero_codes.iter().position(|&z| z > MAX_ZERO_CODE) {
            return Err(Error::invalid(format!(
                "INT2 zero code {} of row {} group {} is above {MAX_ZERO_CODE}",
                zero_codes[i],
                i / n_groups,
                i % n_groups
            )));
        }
        Ok(Int2Params {
            n_groups,
            super_scales,
            scale_codes,
            zero_codes,
        })
    }

    /// Encodes decoded FP16 scales and zeros (`[out, n_groups]`) losslessly: each row's
    /// super-scale is its largest scale, and every scale and zero must be exactly the decode
    /// of some code; an error names the first that is not.
    pub fn from_decoded(n_groups: usize, scales: &[f16], zeros: &[f16]) -> Result<Self> {
        if n_groups == 0 || scales.len() % n_groups != 0 || zeros.len() != scales.len() {
            return Err(Error::invalid(format!(
                "INT2 parameters with {n_groups} groups per row: got {} scales and {} zeros",
                scales.len(),
                zeros.len()
            )));
        }
        let out = scales.len() / n_groups;
        let mut sup = Vec::with_capacity(out);
        let (mut sc, mut zc) = (
            Vec::with_capacity(scales.len()),
            Vec::with_capacity(scales.len()),
        );
        for r in 0..out {
            let row = r * n_groups..(r + 1) * n_groups;
            let s_r =
                scales[row.clone()]
                    .iter()
                    .copied()
                    .fold(f16::ZERO, |m, s| if s > m { s } else { m });
            sup.push(s_r);
            for i in row {
                let (c, z) = (
                    encode_scale(s_r, scales[i].to_f32()),
                    encode_zero(zeros[i].to_f32()),
                );
                let (g, ok_s, ok_z) = (
                    i % n_groups,
                    decode_scale(s_r, c) == scales[i],
                    decode_zero(z) == zeros[i],
                );
                if !ok_s || !ok_z {
                    let (what, v) = if ok_s {
                        ("zero", zeros[i])
                    } else {
                        ("scale", scales[i])
                    };
                    return Err(Error::invalid(format!(
                        "INT2 {what} {v} of row {r} group {g} is not on the compact code grid (super-scale {s_r})"
                    )));
                }
                sc.push(c);
                zc.push(z);
            }
        }
        Int2Params::new(n_groups, sup, sc, zc)
    }

    /// Reads the stored form: scale codes `[out, n_groups]`, zero codes packed two per byte
    /// `[out, ceil(n_groups / 2)]` (even group in the low nibble; an odd count leaves the last
    /// high nibble 0), super-scales as little-endian FP16 `[out]`.
    pub fn from_bytes(
        out: usize,
        n_groups: usize,
        scale_codes: &[u8],
        zero_bytes: &[u8],
        super_bytes: &[u8],
    ) -> Result<Self> {
        let zb = n_groups.div_ceil(2);
        if scale_codes.len() != out * n_groups
            || zero_bytes.len() != out * zb
            || super_bytes.len() != out * 2
        {
            return Err(Error::invalid(format!(
                "INT2 parameters of [{out}, {n_groups}] need {} + {} + {} bytes, got {} + {} + {}",
                out * n_groups,
                out * zb,
                out * 2,
                scale_codes.len(),
                zero_bytes.len(),
                super_bytes.len()
            )));
        }
        let mut zeros = Vec::with_capacity(out * n_groups);
        for (r, row) in zero_bytes.chunks_exact(zb.max(1)).enumerate() {
            for g in 0..n_groups {
                zeros.push((row[g / 2] >> (4 * (g % 2))) & 0x0f);
            }
            if n_groups % 2 == 1 && row[zb - 1] >> 4 != 0 {
                return Err(Error::invalid(format!(
                    "INT2 zero codes of row {r}: the unused high nibble of the last byte is not 0"
                )));
            }
        }
        let sup = super_bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        Int2Params::new(n_groups, sup, scale_codes.to_vec(), zeros)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.super_scales.len()
    }

    /// Groups per row.
    pub fn n_groups(&self) -> usize {
        self.n_groups
    }

    /// Per-row super-scales, `[out]`.
    pub fn super_scales(&self) -> &[f16] {
        &self.super_scales
    }

    /// Per-group scale codes, `[out, n_groups]`.
    pub fn scale_codes(&self) -> &[u8] {
        &self.scale_codes
    }

    /// Per-group zero codes, one per byte, `[out, n_groups]`.
    pub fn zero_codes(&self) -> &[u8] {
        &self.zero_codes
    }

    /// The zero codes as stored: two per byte, `[out, ceil(n_groups / 2)]`.
    pub fn packed_zero_codes(&self) -> Vec<u8> {
        let zb = self.n_groups.div_ceil(2);
        let mut out = vec![0u8; self.rows() * zb];
        for (i, &z) in self.zero_codes.iter().enumerate() {
            let (r, g) = (i / self.n_groups, i % self.n_groups);
            out[r * zb + g / 2] |= z << (4 * (g % 2));
        }
        out
    }

    /// The super-scales as stored: little-endian FP16, `[out]`.
    pub fn super_scale_bytes(&self) -> Vec<u8> {
        self.super_scales
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect()
    }

    /// Bytes of the stored form ([`param_byte_len`]).
    pub fn byte_len(&self) -> usize {
        param_byte_len(self.rows(), self.n_groups)
    }

    /// The decoded FP16 scales and zeros, `[out, n_groups]` each.
    pub fn decode(&self) -> (Vec<f16>, Vec<f16>) {
        let scales = self
            .scale_codes
            .iter()
            .enumerate()
            .map(|(i, &c)| decode_scale(self.super_scales[i / self.n_groups], c))
            .collect();
        let zeros = self.zero_codes.iter().map(|&z| decode_zero(z)).collect();
        (scales, zeros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_codes_are_log_spaced_and_nearest() {
        let sup = f16::from_f32(0.5);
        assert_eq!(decode_scale(sup, 0), sup);
        assert_eq!(
            decode_scale(sup, 32).to_f32(),
            0.25,
            "one octave per 32 codes"
        );
        assert_eq!(
            decode_scale(sup, 255).to_f32(),
            f16::from_f64(0.5 * 2f64.powf(-255.0 / 32.0)).to_f32()
        );
        let mut worst = 0.0f32;
        for i in 0..2000 {
            let s = 0.5 * (-(i as f32) / 2000.0 * 7.9 * std::f32::consts::LN_2).exp();
            let c = encode_scale(sup, s);
            let d = decode_scale(sup, c).to_f32();
            worst = worst.max((d - s).abs() / s);
            for n in [c.saturating_sub(1), c.saturating_add(1)] {
                assert!(
                    (decode_scale(sup, n).to_f32() - s).abs() >= (d - s).abs(),
                    "{s}: {c} vs {n}"
                );
            }
        }
        // Half a step of 2^(1/32) is 1.09%, plus FP16 rounding.
        assert!(worst < 0.0115, "{worst}");
        assert_eq!(encode_scale(sup, 1.0), 0);
        assert_eq!(encode_scale(sup, 1e-6), MAX_SCALE_CODE);
        assert_eq!(encode_scale(sup, 0.0), MAX_SCALE_CODE);
        assert!(decode_scale(f16::from_bits(1), 255).to_f32() > 0.0);
    }

    #[test]
    fn zero_codes_cover_zero_to_three_and_three_quarters() {
        assert_eq!(decode_zero(0).to_f32(), 0.0);
        assert_eq!(decode_zero(15).to_f32(), 3.75);
        assert_eq!(
            decode_zero(6).to_f32(),
            1.5,
            "a symmetric group's zero is exact"
        );
        for zc in 0..=MAX_ZERO_CODE {
            assert_eq!(encode_zero(decode_zero(zc).to_f32()), zc);
        }
        assert_eq!(encode_zero(-1.0), 0);
        assert_eq!(encode_zero(7.0), 15);
        assert_eq!(encode_zero(0.31), 1);
        assert_eq!(encode_zero(f32::NAN), 0);
    }

    #[test]
    fn bad_parts_are_named() {
        let e = Int2Params::new(2, vec![f16::ONE], vec![0; 2], vec![0, 16]).unwrap_err();
        assert!(
            e.to_string().contains("zero code 16 of row 0 group 1"),
            "{e}"
        );
        let e = Int2Params::new(2, vec![f16::ZERO], vec![0; 2], vec![0; 2]).unwrap_err();
        assert!(e.to_string().contains("super-scale of row 0"), "{e}");
        let e = Int2Params::new(2, vec![f16::ONE], vec![0; 3], vec![0; 2]).unwrap_err();
        assert!(e.to_string().contains("3 scale codes"), "{e}");
        let e =
            Int2Params::from_decoded(1, &[f16::ONE, f16::ONE], &[f16::ZERO, f16::from_f32(0.3)])
                .unwrap_err();
        assert!(
            e.to_string().contains("zero 0.3") && e.to_string().contains("of row 1 group 0"),
            "{e}"
        );
        let e = Int2Params::from_bytes(1, 3, &[0; 3], &[0x00, 0x10], &[0, 0x3c]).unwrap_err();
        assert!(e.to_string().contains("high nibble"), "{e}");
        let e = Int2Params::from_bytes(1, 3, &[0; 3], &[0x00], &[0, 0x3c]).unwrap_err();
        assert!(e.to_string().contains("need 3 + 2 + 2 bytes"), "{e}");
    }
}
