//! Dequantization of the K-quant super-blocks (256 elements): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
//!
//! Layouts (bytes, in order), as ggml defines them:
//! - Q2_K (84): 16 scale bytes (low nibble scale, high nibble minimum), 64 bytes of 2-bit
//!   values, f16 `d`, f16 `dmin`.
//! - Q3_K (110): 32 bytes of high-bit mask, 64 bytes of 2-bit low values, 12 bytes of sixteen
//!   packed 6-bit scales, f16 `d`.
//! - Q4_K (144): f16 `d`, f16 `dmin`, 12 bytes of eight 6-bit scales and eight 6-bit minimums,
//!   128 bytes of nibbles.
//! - Q5_K (176): as Q4_K, then 32 bytes of fifth bits before the 128 bytes of nibbles.
//! - Q6_K (210): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, f16 `d`.
//!
//! Within each 128 values, the 32-byte runs are read with increasing bit shifts: bytes `l` of
//! a run give elements `l`, `l + 32`, `l + 64`, `l + 96` (shifts 0, 2, 4, 6) for the 2-bit
//! fields, and elements `l` and `l + 32` (low and high nibble) for the 4-bit ones.

use super::dequant::f16_at;

/// Q2_K: sub-block `s` of 16 has `dl = d * (sc & 15)` and `ml = dmin * (sc >> 4)`;
/// `y = dl * q - ml`.
pub(super) fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(&b[80..]), f16_at(&b[82..]));
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift_i in 0..4 {
            let shift = 2 * shift_i;
            for part in 0..2 {
                let s = half * 8 + shift_i * 2 + part;
                let dl = d * (scales[s] & 0x0F) as f32;
                let ml = dmin * (scales[s] >> 4) as f32;
                for l in 0..16 {
                    let v = (q[part * 16 + l] >> shift) & 3;
                    y[s * 16 + l] = dl * v as f32 - ml;
                }
            }
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block: the low 4 bits from bytes 0-7 (low nibbles give
/// scales 0-7, high nibbles 8-15), the top 2 bits from bytes 8-11 (shifts 0, 2, 4, 6 give
/// scales 0-3, 4-7, 8-11, 12-15); minus 32.
fn q3_k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *o = (low | high << 4) as i32 - 32;
    }
    out
}

/// Q3_K: `q = low2 - (hmask bit clear ? 4 : 0)`; `y = (d * scale) * q`.
pub(super) fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(&b[108..]);
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for shift_i in 0..4 {
            let bit = half * 4 + shift_i;
            for part in 0..2 {
                let s = half * 8 + shift_i * 2 + part;
                let dl = d * scales[s] as f32;
                for l in 0..16 {
                    let k = part * 16 + l;
                    let low = ((q[k] >> (2 * shift_i)) & 3) as i32;
                    let offset = if (hmask[k] >> bit) & 1 == 1 { 0 } else { 4 };
                    y[s * 16 + l] = dl * (low - offset) as f32;
                }
            }
        }
    }
}

/// Scale and minimum `j` (0-7) of the 12 packed bytes of a Q4_K / Q5_K block.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: sub-block `s` of 32 has `d * sc` and `dmin * m`; `y = (d * sc) * q - dmin * m`.
pub(super) fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for nib in 0..2 {
            let s = chunk * 2 + nib;
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for l in 0..32 {
                let v = (q[l] >> (4 * nib)) & 0x0F;
                y[s * 32 + l] = dl * v as f32 - ml;
            }
        }
    }
}

/// Q5_K: as Q4_K with a fifth bit: bit `s` of byte `l` of the 32-byte mask for sub-block `s`.
pub(super) fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b), f16_at(&b[2..]));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for nib in 0..2 {
            let s = chunk * 2 + nib;
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for l in 0..32 {
                let v = ((q[l] >> (4 * nib)) & 0x0F) | ((qh[l] >> s) & 1) << 4;
                y[s * 32 + l] = dl * v as f32 - ml;
            }
        }
    }
}

/// Q6_K: `q = (low4 | high2 << 4) - 32`; sub-block `s` of 16 has `d * scale[s]`;
/// `y = (d * scale) * q`.
pub(super) fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(&b[208..]);
    for half in 0..2 {
        let (ql, qh) = (
            &ql[half * 64..half * 64 + 64],
            &qh[half * 32..half * 32 + 32],
        );
        for l in 0..32 {
            let q = [
                (ql[l] & 0x0F) | (qh[l] & 3) << 4,
                (ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4,
                (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4,
                (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,
            ];
            for (k, &qk) in q.iter().enumerate() {
                let e = half * 128 + k * 32 + l;
                let scale = sc[e / 16] as i8;
                y[e] = (d * scale as f32) * (qk as i32 - 32) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_scales_unpack_six_bits() {
        let mut s = [0u8; 12];
        s[0] = 0b11_000101; // scale 0 = 5, top bits of scale 4 = 3
        s[4] = 0b01_000111; // min 0 = 7, top bits of min 4 = 1
        s[8] = 0x9A; // scale 4 low = 0xA, min 4 low = 0x9
        assert_eq!(scale_min_k4(0, &s), (5, 7));
        assert_eq!(scale_min_k4(4, &s), (0x3A, 0x19));
    }

    #[test]
    fn q3_k_scales_take_top_bits_from_the_last_four_bytes() {
        let mut s = [0u8; 12];
        s[1] = 0x21; // scale 1 low 1, scale 9 low 2
        s[9] = 0b10_00_00_01; // scale 1 top 1, scale 13 top 2
        let sc = q3_k_scales(&s);
        assert_eq!(sc[1], (1 | 1 << 4) - 32);
        assert_eq!(sc[9], 2 - 32);
        assert_eq!(sc[13], (2 << 4) - 32);
    }
}
