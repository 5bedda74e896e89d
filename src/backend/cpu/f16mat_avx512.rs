//! AVX-512 kernels for products on FP16 weights (see [`super::f16mat`]): 16 halves widened per
//! `vcvtph2ps`, four accumulators per row to hide FMA latency. Decode reads one weight row
//! after another ([`dot_avx512`]): a single sequential stream per thread is what the hardware
//! prefetcher serves best (interleaving rows, or software prefetch, lowered the read rate).
//! Products of a few input rows take [`INPUTS`] input rows per weight row so each weight vector
//! is widened once for all of them, with each row's arithmetic identical to [`dot_avx512`].
//!
//! The tail of each row (`n_in % 16` elements) is finished in scalar f32.

use half::f16;
use std::arch::x86_64::*;

/// Input rows per pass of [`inputs_avx512`].
pub(super) const INPUTS: usize = 4;

/// `out[r] = sum_k w[k] * xs[r][k]` over `n_in` elements for `r < INPUTS`: one weight row
/// against several input rows, each weight vector widened once for all of them. Every
/// (weight row, input row) pair gets exactly the arithmetic of [`dot_avx512`] (four
/// accumulators over 64-element steps, 16-element steps into the first, the same reduction and
/// scalar tail), so a multi-row product gives every row the bits a one-row product gives it:
/// speculative verification and batched decoding rely on that.
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `w` and every `xs[r]` must hold at least `n_in`
/// elements (checked by assertions in debug builds).
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn inputs_avx512(w: &[f16], n_in: usize, xs: [&[f32]; INPUTS]) -> [f32; INPUTS] {
    debug_assert!(w.len() >= n_in && xs.iter().all(|x| x.len() >= n_in));
    let wp = w.as_ptr();
    let xp: [*const f32; INPUTS] = std::array::from_fn(|r| xs[r].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 4]; INPUTS];
    let mut k = 0;
    while k + 64 <= n_in {
        for a in 0..4 {
            let wv = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(k + 16 * a) as *const __m256i));
            for (x, acc) in xp.iter().zip(acc.iter_mut()) {
                acc[a] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x.add(k + 16 * a)), acc[a]);
            }
        }
        k += 64;
    }
    while k + 16 <= n_in {
        let wv = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(k) as *const __m256i));
        for (x, acc) in xp.iter().zip(acc.iter_mut()) {
            acc[0] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x.add(k)), acc[0]);
        }
        k += 16;
    }
    let mut out = [0.0f32; INPUTS];
    for ((o, x), a) in out.iter_mut().zip(&xs).zip(&acc) {
        let s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        let mut total = _mm512_reduce_add_ps(s);
        for i in k..n_in {
            total += w[i].to_f32() * x[i];
        }
        *o = total;
    }
    out
}

/// `sum_k w[k] * x[k]` over `min(w.len(), x.len())` elements: one row, four accumulators.
///
/// # Safety
/// The CPU must have AVX-512F and F16C.
#[target_feature(enable = "avx512f,f16c")]
pub(super) unsafe fn dot_avx512(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut k = 0;
    while k + 64 <= n {
        for (a, acc) in acc.iter_mut().enumerate() {
            let h = _mm256_loadu_si256(wp.add(k + 16 * a) as *const __m256i);
            let xv = _mm512_loadu_ps(xp.add(k + 16 * a));
            *acc = _mm512_fmadd_ps(_mm512_cvtph_ps(h), xv, *acc);
        }
        k += 64;
    }
    while k + 16 <= n {
        let h = _mm256_loadu_si256(wp.add(k) as *const __m256i);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtph_ps(h), _mm512_loadu_ps(xp.add(k)), acc[0]);
        k += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut total = _mm512_reduce_add_ps(s);
    for i in k..n {
        total += w[i].to_f32() * x[i];
    }
    total
}
