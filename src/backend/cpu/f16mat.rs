//! Products on FP16 weights kept as FP16 (half the bytes of an f32 copy, and decode is
//! memory-bound): each weight is widened to f32 exactly (F16C `vcvtph2ps` where the CPU has it
//! with AVX2 + FMA, else `half`'s conversion) and accumulated in f32.
//!
//! Layout: `[out, in]` row-major FP16, the tensor as loaded (zero-copy when memory-mapped).

use half::f16;
use rayon::prelude::*;

/// `sum_k w[k] * x[k]` over `min(w.len(), x.len())` elements, in f32.
pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2_fma_f16c() {
        // SAFETY: the features were checked just above.
        return unsafe { dot_f16_avx2(&w[..n], &x[..n]) };
    }
    let mut acc = [0.0f32; 8];
    for (i, (a, b)) in w[..n].iter().zip(&x[..n]).enumerate() {
        acc[i % 8] += a.to_f32() * b;
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2(w: &[f16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len();
    let (wp, xp) = (w.as_ptr() as *const __m128i, x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut k = 0;
    while k + 32 <= n {
        for (a, acc) in acc.iter_mut().enumerate() {
            let h = _mm_loadu_si128(wp.add(k / 8 + a));
            *acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(k + 8 * a)), *acc);
        }
        k += 32;
    }
    while k + 8 <= n {
        let h = _mm_loadu_si128(wp.add(k / 8));
        acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(xp.add(k)), acc[0]);
        k += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = super::simd::hsum256(s);
    for i in k..n {
        total += w[i].to_f32() * x[i];
    }
    total
}

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows, parallel over outputs; each
/// weight row is read once for all input rows.
pub fn f16_matmul(w: &[f16], n_out: usize, n_in: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let row = |o: usize| &w[o * n_in..(o + 1) * n_in];
    if rows == 1 {
        out[..n_out]
            .par_iter_mut()
            .enumerate()
            .with_min_len(16)
            .for_each(|(o, y)| *y = dot_f16(row(o), &x[..n_in]));
        return;
    }
    super::matmul_widened_rows(rows, n_in, n_out, x, out, |o, wrow| {
        for (d, h) in wrow.iter_mut().zip(row(o)) {
            *d = h.to_f32();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn f16_products_match_the_f32_reference_at_ragged_sizes() {
        let mut rng = Rng::new(4);
        for &(n_out, n_in, rows) in &[
            (1, 1, 1),
            (7, 33, 1),
            (40, 172, 1),
            (9, 64, 3),
            (70, 257, 2),
        ] {
            let w: Vec<f16> = (0..n_out * n_in)
                .map(|_| f16::from_f32(rng.uniform(-1.0, 1.0)))
                .collect();
            let x: Vec<f32> = (0..rows * n_in).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut out = vec![f32::NAN; rows * n_out];
            f16_matmul(&w, n_out, n_in, &x, rows, &mut out);
            for r in 0..rows {
                for o in 0..n_out {
                    let want: f64 = (0..n_in)
                        .map(|k| w[o * n_in + k].to_f64() * x[r * n_in + k] as f64)
                        .sum();
                    let got = out[r * n_out + o] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + n_in as f64).sqrt(),
                        "[{n_out}, {n_in}] x {rows} at ({r}, {o}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
