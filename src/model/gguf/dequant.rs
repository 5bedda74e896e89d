//! Dequantization of ggml tensor data to f32: the float types and the 32-element block types
//! (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) here, the K-quants in `dequant_k`.
//!
//! Each block is expanded with the same float operations, in the same order, as ggml's
//! reference dequantizers (`d * q`, `d * q + m`, ...), so results match them bit for bit.

use super::dequant_k;
use super::GgmlType;
use crate::{Error, Result};
use rayon::prelude::*;

/// Blocks per parallel work item.
const BLOCKS_PER_TASK: usize = 1024;

/// The f16 stored little-endian at `b[0..2]`, as f32 (exact).
#[inline]
pub(super) fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

/// Bytes that `n` elements of type `ty` occupy, or an error naming the type when `ty` is not
/// dequantizable or `n` is not a whole number of blocks.
pub fn byte_len(ty: GgmlType, n: usize) -> Result<usize> {
    let (bs, ts) = ty.block().ok_or_else(|| unsupported(ty))?;
    if n % bs != 0 {
        return Err(Error::invalid(format!(
            "{n} elements are not a whole number of {ty} blocks of {bs}"
        )));
    }
    (n / bs)
        .checked_mul(ts)
        .ok_or_else(|| Error::invalid(format!("{n} {ty} elements overflow a byte count")))
}

fn unsupported(ty: GgmlType) -> Error {
    Error::Unsupported(format!(
        "ggml tensor type {ty}: only F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, \
         Q4_K, Q5_K and Q6_K are dequantized"
    ))
}

/// Dequantizes `n` elements of type `ty` from `bytes` (exactly [`byte_len`] bytes) to f32.
/// The output vector is allocated fallibly.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let want = byte_len(ty, n)?;
    if bytes.len() != want {
        return Err(Error::invalid(format!(
            "{n} {ty} elements need {want} bytes, got {}",
            bytes.len()
        )));
    }
    let mut out: Vec<f32> = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory(format!("{} bytes to dequantize a {ty} tensor", n * 4)))?;
    out.resize(n, 0.0);
    let (bs, ts) = ty.block().ok_or_else(|| unsupported(ty))?;
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16_at(b),
        GgmlType::BF16 => {
            |b, y| y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q2K => dequant_k::q2_k,
        GgmlType::Q3K => dequant_k::q3_k,
        GgmlType::Q4K => dequant_k::q4_k,
        GgmlType::Q5K => dequant_k::q5_k,
        GgmlType::Q6K => dequant_k::q6_k,
        GgmlType::Other(_) => return Err(unsupported(ty)),
    };
    out.par_chunks_mut(bs * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(ts * BLOCKS_PER_TASK))
        .for_each(|(y, b)| {
            for (yb, bb) in y.chunks_exact_mut(bs).zip(b.chunks_exact(ts)) {
                block_fn(bb, yb);
            }
        });
    Ok(out)
}

/// Q8_0: `d` (f16), 32 int8 `q`; `y = q * d`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = (q as i8) as f32 * d;
    }
}

/// Q4_0: `d`, 16 bytes of nibbles (element `j` the low nibble of byte `j`, element `j + 16`
/// its high nibble); `y = d * (q - 8)`.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1: `d`, `m`, nibbles as Q4_0; `y = d * q + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0x0F) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// The fifth bits of a Q5 block: bit `j` of the little-endian `u32` is element `j`'s.
fn high_bits(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Q5_0: `d`, 32 high bits, nibbles as Q4_0; `y = d * (q - 16)`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b);
    let qh = high_bits(&b[2..]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (lo as i32 - 16) as f32;
        y[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// Q5_1: `d`, `m`, 32 high bits, nibbles; `y = d * q + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(&b[2..]));
    let qh = high_bits(&b[4..]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * lo as f32 + m;
        y[j + 16] = d * hi as f32 + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_low_then_high_nibbles() {
        let mut b = Vec::new();
        b.extend(f16b(0.5));
        b.extend(f16b(-1.0));
        b.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!(y[0], -1.0);
        assert_eq!(y[3], 0.5 * 3.0 - 1.0);
        assert_eq!(y[16], 0.5 * 15.0 - 1.0);
        assert_eq!(y[31], -1.0 + 0.5 * 0.0);
    }

    #[test]
    fn q5_0_takes_fifth_bits_from_the_mask() {
        let mut b = Vec::new();
        b.extend(f16b(2.0));
        b.extend((1u32 | 1 << 16).to_le_bytes());
        b.extend([0u8; 16]);
        let y = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!((y[0], y[1], y[16], y[17]), (0.0, -32.0, 0.0, -32.0));
    }

    #[test]
    fn sizes_are_checked_and_other_types_are_named() {
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
        assert!(byte_len(GgmlType::Q4_0, 31).is_err());
        let e = dequantize(GgmlType::from_id(16), &[], 0).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("IQ2_XXS"), "{e}");
        assert_eq!(byte_len(GgmlType::Q6K, 512).unwrap(), 420);
    }
}
