//! `e^x` sixteen lanes at a time on AVX-512, and the SwiGLU activation built on it: libm's
//! scalar `expf` per element had become a visible share of a batched decode step.

use super::kernels;

/// `e^x` for each lane, within two ulps: `x = n ln2 + r` with `|r| <= ln2 / 2` (`ln2` split
/// in two parts, so `r` is exact to f32), `e^r` by its Taylor polynomial of degree 7 (Horner,
/// fused), scaled by `2^n` (`vscalefps`, which flushes to zero below the range and gives
/// infinity above it). Inputs are clamped to [-104, 89], beyond which the result is zero or
/// infinity either way, so that infinities give 0 and infinity rather than NaN; NaN stays NaN.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // `max`/`min` return their second operand when the first is NaN: a NaN lane is put back.
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let c = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
        _mm512_set1_ps(89.0),
    );
    let x = _mm512_mask_mov_ps(c, nan, x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `out[i] = silu(gate[i]) * up[i]` (`silu(g) = g / (1 + e^-g)`, an IEEE division) over the
/// shortest of the three: sixteen elements per vector with [`exp_avx512`] on AVX-512 (the tail
/// masked), else libm's `exp` per element. The two paths may differ in the last bits; each
/// gives every element the same bits whatever the length and offset of the call.
pub(super) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = out.len().min(gate.len()).min(up.len());
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx512f() {
        // SAFETY: the CPU has AVX-512F; every slice holds at least `n` elements.
        unsafe { swiglu_avx512(&gate[..n], &up[..n], &mut out[..n]) };
        return;
    }
    for ((o, &g), &u) in out[..n].iter_mut().zip(&gate[..n]).zip(&up[..n]) {
        *o = kernels::silu(g) * u;
    }
}

/// The AVX-512 path of [`swiglu`].
///
/// # Safety
/// The CPU must have AVX-512F; `gate` and `up` hold at least `out.len()` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn swiglu_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let len = out.len();
    let one = _mm512_set1_ps(1.0);
    let (g, u, o) = (gate.as_ptr(), up.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i < len {
        let mask: __mmask16 = if len - i >= 16 {
            0xffff
        } else {
            ((1u32 << (len - i)) - 1) as __mmask16
        };
        let gv = _mm512_maskz_loadu_ps(mask, g.add(i));
        let uv = _mm512_maskz_loadu_ps(mask, u.add(i));
        let e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        let s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(o.add(i), mask, _mm512_mul_ps(s, uv));
        i += 16;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// `e^x` of every lane of `xs` (sixteen at a time).
    fn vector_exp(xs: &[f32]) -> Vec<f32> {
        use std::arch::x86_64::*;
        let mut out = Vec::with_capacity(xs.len());
        for chunk in xs.chunks(16) {
            let mut lanes = [0.0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0.0f32; 16];
            // SAFETY: callers check the CPU first.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    exp_avx512(_mm512_loadu_ps(lanes.as_ptr())),
                )
            };
            out.extend_from_slice(&got[..chunk.len()]);
        }
        out
    }

    #[test]
    fn vector_exp_is_within_two_ulps_of_the_exact_value_and_saturates_at_the_ends() {
        if !super::super::simd::avx512f() {
            eprintln!("SKIPPED: this CPU lacks AVX-512F");
            return;
        }
        let mut xs: Vec<f32> = (-200_000..=170_000).map(|i| i as f32 * 5.2e-4).collect();
        xs.extend([0.0, -0.0, -1e-30, 1e-30, -87.3, -103.9, 88.7, 88.72]);
        for (&x, &e) in xs.iter().zip(&vector_exp(&xs)) {
            let want = (x as f64).exp();
            if want < f32::MIN_POSITIVE as f64 {
                assert!(
                    e.is_finite() && (e as f64) < 2.0 * f32::MIN_POSITIVE as f64,
                    "e^{x} = {e}"
                );
                continue;
            }
            let ulp = f32::EPSILON as f64 * (want as f32).abs() as f64;
            assert!(
                ((e as f64) - want).abs() <= 2.0 * ulp,
                "e^{x}: {e} vs {want}"
            );
        }
        let ends = [
            -150.0,
            -1e30,
            f32::NEG_INFINITY,
            89.0,
            100.0,
            1e30,
            f32::INFINITY,
        ];
        let got = vector_exp(&ends);
        assert_eq!(&got[..3], &[0.0; 3], "below the range");
        assert!(got[3..].iter().all(|&e| e == f32::INFINITY), "{got:?}");
        assert!(vector_exp(&[f32::NAN])[0].is_nan());
    }

    #[test]
    fn vector_swiglu_matches_the_formula_and_keeps_bits_across_lengths_and_offsets() {
        if !super::super::simd::avx512f() {
            eprintln!("SKIPPED: this CPU lacks AVX-512F");
            return;
        }
        let mut rng = crate::util::rng::Rng::new(7);
        let n = 1000;
        let mut gate: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * 40.0).collect();
        gate[..6].copy_from_slice(&[0.0, -0.0, -100.0, 100.0, f32::NEG_INFINITY, 1e-30]);
        let up: Vec<f32> = (0..n).map(|_| rng.next_f32() * 4.0 - 2.0).collect();
        let mut whole = vec![0.0f32; n];
        swiglu(&gate, &up, &mut whole);
        for i in 0..n {
            let (g, u) = (gate[i] as f64, up[i] as f64);
            let want = g / (1.0 + (-g).exp()) * u;
            let got = whole[i] as f64;
            if gate[i] == f32::NEG_INFINITY {
                // -inf / (1 + inf): NaN, as libm's scalar formula gives.
                assert!(got.is_nan(), "silu(-inf) = {got}");
                continue;
            }
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs() + 1e-30,
                "silu({g}) * {u}: {got} vs {want}"
            );
        }
        // Any split of the row into calls, at any offset, gives the same bits.
        for (start, len) in [(0, 1), (3, 17), (16, 16), (5, 600), (999, 1)] {
            let mut part = vec![0.0f32; len];
            swiglu(&gate[start..], &up[start..], &mut part);
            let a: Vec<u32> = part.iter().map(|x| x.to_bits()).collect();
            let b: Vec<u32> = whole[start..start + len]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            assert_eq!(a, b, "start {start}, len {len}");
        }
    }
}
