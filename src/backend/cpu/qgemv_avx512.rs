//! The AVX-512 row kernel of [`super::qgemv`]: the same permuted-input scheme as the AVX2
//! kernel, on 16-byte units and 16 f32 lanes.
//!
//! **Units.** A unit is 16 consecutive bytes of a row (four words); lane `b` (0..16) holds
//! byte `b % 4` of word `4u + b / 4`, and the permuted input is laid out by
//! [`super::qgemv::permute_input`] with 16 lanes. Rows are padded to 16 bytes, so every row is a
//! whole number of units.
//!
//! **Groups.** INT8 groups (multiples of 16 codes, or one per row) and INT4 groups (multiples of
//! 32 codes) are whole units, and so are INT2 groups whose size is a multiple of 64: each
//! group's `sum q * x` stays in vector accumulators that are scaled into the row total at the
//! group's end ([`row_aligned`]). INT2 groups of an odd multiple of 32 codes (32, 96, ...)
//! end in the middle of a unit, at its 8-byte half; [`row_split`] then scales each unit's
//! product by a vector whose low eight lanes carry the scale of the group of the unit's first
//! half and the high eight lanes that of its second half. The zero-point term
//! `s * z * sum x` uses the per-group input sums either way.

use crate::quant::Packed;

/// `sum_k w[r, k] * x[k]` for row `r`, with `xp` the 16-lane permuted input and `sx` the
/// per-group input sums ([`super::qgemv::permute_input`]).
///
/// # Safety
/// The CPU must support AVX-512F and F16C; `xp` must hold `units * (8 / BITS) * 16` values, where
/// `units = m.row_words() / 4`, and `sx` one value per group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn row_avx512<const BITS: u32>(
    m: &Packed<BITS>,
    r: usize,
    xp: &[f32],
    sx: &[f32],
) -> f32 {
    let ng = m.n_groups();
    let q = if aligned(m) {
        row_aligned::<BITS>(m, r, xp)
    } else {
        row_split::<BITS>(m, r, xp)
    };
    if BITS < 8 {
        let scales = &m.scales()[r * ng..(r + 1) * ng];
        let zeros = &m.zeros()[r * ng..(r + 1) * ng];
        q - zero_term(scales, zeros, sx)
    } else {
        q
    }
}

/// One FP16 value widened with the F16C instruction (the per-group scales and zeros; the
/// portable conversion is a call per value, which showed in small groups).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn h2f(h: half::f16) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

/// Up to 16 FP16 values widened to f32 (16 at a time with one `vcvtph2ps`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn widen16(h: &[half::f16]) -> [f32; 16] {
    use std::arch::x86_64::*;
    let mut out = [0.0f32; 16];
    if h.len() >= 16 {
        let v = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
        _mm512_storeu_ps(out.as_mut_ptr(), v);
    } else {
        for (o, &v) in out.iter_mut().zip(h) {
            *o = h2f(v);
        }
    }
    out
}

/// `sum_g s_g * z_g * sx_g`, sixteen groups per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn zero_term(scales: &[half::f16], zeros: &[half::f16], sx: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm512_setzero_ps();
    for g0 in (0..scales.len()).step_by(16) {
        let g1 = (g0 + 16).min(scales.len());
        let s = _mm512_loadu_ps(widen16(&scales[g0..g1]).as_ptr());
        let z = _mm512_loadu_ps(widen16(&zeros[g0..g1]).as_ptr());
        let mut xs = [0.0f32; 16];
        xs[..g1 - g0].copy_from_slice(&sx[g0..g1]);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(s, z), _mm512_loadu_ps(xs.as_ptr()), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// The masks selecting sub-position `t` of every byte in a 32-bit lane (unshifted).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn masks<const BITS: u32>() -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    let mut out = [_mm512_setzero_si512(); 4];
    for (t, m) in out.iter_mut().enumerate().take((8 / BITS as usize).min(4)) {
        *m = _mm512_set1_epi32(((1i32 << BITS) - 1) << (BITS as usize * t));
    }
    out
}

/// Loads unit `u` (16 bytes) widened to sixteen 32-bit lanes, sign-extended for INT8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_unit<const BITS: u32>(bytes: &[u8], u: usize) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    debug_assert!(u * 16 + 16 <= bytes.len());
    let raw = _mm_loadu_si128(bytes.as_ptr().add(u * 16) as *const __m128i);
    if BITS == 8 {
        _mm512_cvtepi8_epi32(raw)
    } else {
        _mm512_cvtepu8_epi32(raw)
    }
}

/// Accumulates unit `u`'s products into `acc[(base + t) % 4]` for each sub-position `t`
/// (`base` is a constant after inlining, so the accumulators stay in registers), or all into
/// `acc[0]` without `SPREAD`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unit_fma<const BITS: u32, const SPREAD: bool>(
    bytes: &[u8],
    xp: &[f32],
    masks: &[std::arch::x86_64::__m512i; 4],
    u: usize,
    acc: &mut [std::arch::x86_64::__m512; 4],
    base: usize,
) {
    use std::arch::x86_64::*;
    let nsub = (8 / BITS) as usize;
    let v = load_unit::<BITS>(bytes, u);
    debug_assert!((u + 1) * nsub * 16 <= xp.len());
    let xs = xp.as_ptr().add(u * nsub * 16);
    if BITS == 8 {
        let a = if SPREAD { base % 4 } else { 0 };
        acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_loadu_ps(xs), acc[a]);
    } else {
        for (t, mask) in masks.iter().enumerate().take(nsub) {
            // The code times 2^(BITS t), unshifted: the permuted input carries 2^(-BITS t).
            let c = _mm512_and_si512(v, *mask);
            let a = if SPREAD { (base + t) % 4 } else { 0 };
            acc[a] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(c),
                _mm512_loadu_ps(xs.add(t * 16)),
                acc[a],
            );
        }
    }
}

/// `sum_g s_g * sum_{k in g} q_k x_k` when every group is a whole number of units. Groups of
/// more than four FMAs spread them over four accumulators; smaller ones (INT2 g64, INT4 g64)
/// keep one chain each, since out-of-order execution overlaps consecutive groups and the
/// three adds per group would cost more than they hide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn row_aligned<const BITS: u32>(m: &Packed<BITS>, r: usize, xp: &[f32]) -> f32 {
    let units = m.row_words() / 4;
    let upg = if m.n_groups() == 1 {
        units
    } else {
        m.group_size() * BITS as usize / 128
    };
    if upg * (8 / BITS) as usize > 4 {
        row_aligned_acc::<BITS, true>(m, r, xp, upg)
    } else {
        row_aligned_acc::<BITS, false>(m, r, xp, upg)
    }
}

/// [`row_aligned`] with `upg` units per group, on four accumulators or (without `SPREAD`) one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn row_aligned_acc<const BITS: u32, const SPREAD: bool>(
    m: &Packed<BITS>,
    r: usize,
    xp: &[f32],
    upg: usize,
) -> f32 {
    use std::arch::x86_64::*;
    let nsub = (8 / BITS) as usize;
    let units = m.row_words() / 4;
    let ng = m.n_groups();
    let bytes = &m.bytes()[r * units * 16..(r + 1) * units * 16];
    let scales = &m.scales()[r * ng..(r + 1) * ng];
    let masks = masks::<BITS>();
    // Units per step so one step issues four FMAs into four independent accumulators.
    let step = (4 / nsub).max(1);
    let mut total = _mm512_setzero_ps();
    for g0 in (0..ng).step_by(16) {
        let g1 = (g0 + 16).min(ng);
        let block = widen16(&scales[g0..g1]);
        for (g, &s) in (g0..g1).zip(&block) {
            let u1 = ((g + 1) * upg).min(units);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut u = g * upg;
            while u + step <= u1 {
                for i in 0..step {
                    unit_fma::<BITS, SPREAD>(bytes, xp, &masks, u + i, &mut acc, i * nsub);
                }
                u += step;
            }
            while u < u1 {
                unit_fma::<BITS, SPREAD>(bytes, xp, &masks, u, &mut acc, 0);
                u += 1;
            }
            let sum = if SPREAD {
                _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))
            } else {
                acc[0]
            };
            total = _mm512_fmadd_ps(_mm512_set1_ps(s), sum, total);
        }
    }
    _mm512_reduce_add_ps(total)
}

/// `sum_g s_g * sum_{k in g} q_k x_k` when groups may end at a unit's 8-byte half (INT2
/// groups of an odd multiple of 32 codes): each unit's product is scaled per half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn row_split<const BITS: u32>(m: &Packed<BITS>, r: usize, xp: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let units = m.row_words() / 4;
    let ng = m.n_groups();
    let bytes = &m.bytes()[r * units * 16..(r + 1) * units * 16];
    let scales = &m.scales()[r * ng..(r + 1) * ng];
    // 8-byte halves per group; halves past the last group (row padding) read the last
    // group's scale against zero inputs.
    let hpg = m.group_size() * BITS as usize / 64;
    let scale_of = |h: usize| h2f(scales[(h / hpg).min(ng - 1)]);
    let masks = masks::<BITS>();
    let mut total = _mm512_setzero_ps();
    for u in 0..units {
        let mut acc = [_mm512_setzero_ps(); 4];
        unit_fma::<BITS, true>(bytes, xp, &masks, u, &mut acc, 0);
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let (lo, hi) = (scale_of(2 * u), scale_of(2 * u + 1));
        let sv = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(lo), _mm512_set1_ps(hi));
        total = _mm512_fmadd_ps(sv, sum, total);
    }
    _mm512_reduce_add_ps(total)
}

/// `R` outputs at once for the multi-row (prefill) product: `out[i] = sum_k w[r, k] *
/// x_i[k]`, where `xps[i]`/`sxs[i]` are input `i`'s 16-lane permuted values and group sums.
/// Each unit of the weight row is loaded, widened and converted once for all `R` inputs.
/// Only for matrices whose groups are whole units ([`aligned`]).
///
/// # Safety
/// As [`row_avx512`], for every input; `aligned(m)` must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn rows_avx512<const BITS: u32, const R: usize>(
    m: &Packed<BITS>,
    r: usize,
    xps: [&[f32]; R],
    sxs: [&[f32]; R],
) -> [f32; R] {
    use std::arch::x86_64::*;
    debug_assert!(aligned(m));
    let nsub = (8 / BITS) as usize;
    let units = m.row_words() / 4;
    let ng = m.n_groups();
    let bytes = &m.bytes()[r * units * 16..(r + 1) * units * 16];
    let scales = &m.scales()[r * ng..(r + 1) * ng];
    let upg = if ng == 1 {
        units
    } else {
        m.group_size() * BITS as usize / 128
    };
    let masks = masks::<BITS>();
    let mut total = [_mm512_setzero_ps(); R];
    let mut zterm = [0.0f32; R];
    for (g, s) in scales.iter().enumerate() {
        // Two accumulators per input: sub-positions alternate between them (INT8 uses one;
        // its `R` inputs are the independent chains).
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for u in g * upg..((g + 1) * upg).min(units) {
            let v = load_unit::<BITS>(bytes, u);
            for (t, mask) in masks.iter().enumerate().take(nsub) {
                let c = if BITS == 8 {
                    _mm512_cvtepi32_ps(v)
                } else {
                    _mm512_cvtepi32_ps(_mm512_and_si512(v, *mask))
                };
                let a = t % 2;
                for i in 0..R {
                    debug_assert!((u * nsub + t + 1) * 16 <= xps[i].len());
                    let xs = _mm512_loadu_ps(xps[i].as_ptr().add((u * nsub + t) * 16));
                    acc[i][a] = _mm512_fmadd_ps(c, xs, acc[i][a]);
                }
            }
        }
        let s = h2f(*s);
        for i in 0..R {
            let sum = _mm512_add_ps(acc[i][0], acc[i][1]);
            total[i] = _mm512_fmadd_ps(_mm512_set1_ps(s), sum, total[i]);
        }
        if BITS < 8 {
            let sz = s * h2f(m.zeros()[r * ng + g]);
            for i in 0..R {
                zterm[i] += sz * sxs[i][g];
            }
        }
    }
    let mut out = [0.0f32; R];
    for i in 0..R {
        out[i] = _mm512_reduce_add_ps(total[i]) - zterm[i];
    }
    out
}

/// True when every group of `m` is a whole number of 16-byte units.
pub(super) fn aligned<const BITS: u32>(m: &Packed<BITS>) -> bool {
    m.n_groups() == 1 || (m.group_size() * BITS as usize) % 128 == 0
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn row_avx512<const BITS: u32>(
    m: &Packed<BITS>,
    r: usize,
    _: &[f32],
    _: &[f32],
) -> f32 {
    unreachable!(
        "AVX-512 is never detected off x86_64 (row {r} of {:?})",
        m.dims()
    )
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn rows_avx512<const BITS: u32, const R: usize>(
    m: &Packed<BITS>,
    r: usize,
    _: [&[f32]; R],
    _: [&[f32]; R],
) -> [f32; R] {
    unreachable!(
        "AVX-512 is never detected off x86_64 (row {r} of {:?})",
        m.dims()
    )
}
