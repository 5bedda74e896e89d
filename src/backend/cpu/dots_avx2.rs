//! One f32 weight row against several f32 input rows on AVX2 + FMA: the inner product of the
//! multi-row products ([`super::matmul_widened_rows`]) on CPUs without AVX-512, where packed
//! and FP16 prefill widen each weight row once and dot it with every input row. Four input
//! rows per pass, two accumulators each, so each weight vector loaded feeds four FMAs and
//! eight FMA chains hide the FMA latency.

/// Whether this CPU runs [`dots_into`]'s AVX2 + FMA path.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[r] = sum_k w[k] * x[r * w.len() + k]` for every `r < out.len()` on AVX2 + FMA; false
/// (nothing written) when the CPU lacks them or `x` holds fewer than `out.len()` rows.
pub(crate) fn dots_into(w: &[f32], x: &[f32], out: &mut [f32]) -> bool {
    let n = w.len();
    let Some(need) = n.checked_mul(out.len()) else {
        return false;
    };
    if x.len() < need || !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` checked AVX2 and FMA; `x` holds `out.len()` rows of `n`.
        unsafe { dots_fma(w, &x[..need], out) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`dots_into`]'s kernel. The CPU must support AVX2 and FMA; `x.len() == w.len() * out.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_fma(w: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = w.len();
    let wp = w.as_ptr();
    let rows = out.len();
    let mut r = 0;
    while r + 4 <= rows {
        let xp: [*const f32; 4] = std::array::from_fn(|i| x.as_ptr().add((r + i) * n));
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut k = 0;
        while k + 16 <= n {
            let (w0, w1) = (_mm256_loadu_ps(wp.add(k)), _mm256_loadu_ps(wp.add(k + 8)));
            for i in 0..4 {
                acc[i][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[i].add(k)), acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp[i].add(k + 8)), acc[i][1]);
            }
            k += 16;
        }
        if k + 8 <= n {
            let w0 = _mm256_loadu_ps(wp.add(k));
            for i in 0..4 {
                acc[i][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[i].add(k)), acc[i][0]);
            }
            k += 8;
        }
        for i in 0..4 {
            let xr = std::slice::from_raw_parts(xp[i], n);
            let tail: f32 = w[k..].iter().zip(&xr[k..]).map(|(a, b)| a * b).sum();
            out[r + i] = super::simd::hsum256(_mm256_add_ps(acc[i][0], acc[i][1])) + tail;
        }
        r += 4;
    }
    for (i, o) in out.iter_mut().enumerate().skip(r) {
        *o = dot_fma(w, &x[i * n..(i + 1) * n]);
    }
}

/// One dot product on AVX2 + FMA (two accumulators). The CPU must support AVX2 and FMA;
/// `x.len() == w.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(w: &[f32], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut k = 0;
    while k + 16 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(wp.add(k)),
            _mm256_loadu_ps(xp.add(k)),
            acc[0],
        );
        acc[1] = _mm256_fmadd_ps(
            _mm256_loadu_ps(wp.add(k + 8)),
            _mm256_loadu_ps(xp.add(k + 8)),
            acc[1],
        );
        k += 16;
    }
    if k + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(wp.add(k)),
            _mm256_loadu_ps(xp.add(k)),
            acc[0],
        );
        k += 8;
    }
    let tail: f32 = w[k..].iter().zip(&x[k..]).map(|(a, b)| a * b).sum();
    super::simd::hsum256(_mm256_add_ps(acc[0], acc[1])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn dots_match_f64_for_every_row_count_and_tail() {
        if !available() {
            eprintln!("skipped: this CPU lacks AVX2 + FMA");
            return;
        }
        let mut rng = Rng::new(3);
        for n in [1usize, 7, 8, 15, 16, 17, 24, 576, 1001] {
            for rows in 1..=9 {
                let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let x: Vec<f32> = (0..n * rows).map(|_| rng.normal()).collect();
                let mut out = vec![f32::NAN; rows];
                assert!(dots_into(&w, &x, &mut out));
                for (r, got) in out.iter().enumerate() {
                    let row = &x[r * n..(r + 1) * n];
                    let want: f64 = w.iter().zip(row).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let scale: f64 = w.iter().zip(row).map(|(a, b)| (a * b).abs() as f64).sum();
                    assert!(
                        (*got as f64 - want).abs() <= 1e-5 * scale + 1e-6,
                        "n {n} rows {rows} row {r}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn short_input_or_no_rows_writes_nothing() {
        let w = [1.0f32; 8];
        let mut out = [7.0f32; 2];
        assert!(!dots_into(&w, &[1.0; 15], &mut out));
        assert_eq!(out, [7.0; 2]);
        if available() {
            assert!(dots_into(&w, &[], &mut []));
        }
    }
}
