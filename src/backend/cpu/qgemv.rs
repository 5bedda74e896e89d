//! Decode-time (one input row) products on the packed INT8/INT4/INT2 formats with AVX-512
//! (`qgemv_avx512`) or AVX2 + FMA, dispatched at run time ([`GemvPath`]); other
//! machines use [`Packed::row_dot`].
//!
//! The packed layout ([`crate::quant::packed`]) interleaves codes inside each word for the
//! GPU's int-to-half trick. Instead of un-interleaving the codes, the kernel permutes the
//! *input* once per call into the order the bytes present them, so the inner loop is: load one
//! unit of bytes, widen them to one lane each, then per sub-position `t` of a byte mask,
//! convert and fused-multiply-add with the permuted inputs. Sub-position `t` is masked in place
//! (the code times `2^(BITS t)`, no shift) and its permuted inputs carry the factor
//! `2^(-BITS t)`, which is exact in f32.
//!
//! **Permuted input** ("unit" = `L` consecutive bytes of a row, `L` = 8 lanes for AVX2, 16 for
//! AVX-512): lane `b` (0..L) holds byte `b` of the unit, i.e. byte `b % 4` of word
//! `(L / 4) u + b / 4`; sub-position `t` (0..8/BITS) of that byte is the code at bit
//! `BITS * t`, which is slot `(8 / BITS) * (b % 4) + t` of its word and so code `j` of the
//! word with `slot(j)` equal to it. `xp[(u * (8 / BITS) + t) * L + b]` is the input at that
//! code's K index times `2^(-BITS t)`, or 0 past the row's real width (so padding codes
//! contribute nothing).
//!
//! Groups are whole 8-byte units (INT4/INT2 groups are multiples of 32 codes = 16/8 bytes, INT8
//! groups multiples of 16 bytes, or one group per row), so in the AVX2 kernel each group's
//! `sum q * x` stays in one vector accumulator, which is scaled into a row accumulator at the
//! group's end; the zero-point term `s * z * sum x` uses per-group input sums computed once per
//! call. (The AVX-512 kernel's 16-byte units can split an INT2 group of 32 or 96 codes; see its
//! docs.)
//!
//! Several input rows (prefill) on AVX-512 go through [`packed_gemm`], which widens each weight
//! unit once for four permuted inputs at a time.
//!
//! Where the CPU has AVX512-VNNI, both go instead through `qgemv_vnni` (activations quantized
//! to int8 blocks once per call, integer dot products).
//!
//! `AGENTCOMPRESS_CPU_SIMD=avx512` disables the VNNI path (f32 activations on AVX-512),
//! `=avx2` caps the dispatch at AVX2 and `=scalar` disables the SIMD kernels (for A/B timing
//! on one binary).

use crate::quant::packed::slot;
use crate::quant::Packed;
use rayon::prelude::*;
use std::cell::Cell;

/// Outputs per rayon task.
const ROWS_PER_TASK: usize = 16;

/// A packed-GEMV kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvPath {
    /// Int8 activations on AVX512-VNNI integer dot products (`qgemv_vnni`).
    Avx512Vnni,
    /// 16 lanes, 16-byte units (`qgemv_avx512`).
    Avx512,
    /// 8 lanes with FMA (and F16C for the scales), 8-byte units.
    Avx2,
}

impl GemvPath {
    /// Bytes per unit, which is also the lanes per vector.
    fn lanes(self) -> usize {
        match self {
            GemvPath::Avx512Vnni | GemvPath::Avx512 => 16,
            GemvPath::Avx2 => 8,
        }
    }

    /// True when this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            GemvPath::Avx512Vnni => super::qgemv_vnni::available(),
            GemvPath::Avx512 => super::simd::avx512f(),
            GemvPath::Avx2 => super::simd::avx2_fma_f16c(),
        }
    }
}

/// The fastest path this machine runs (capped by `AGENTCOMPRESS_CPU_SIMD`), or `None` when
/// the caller must use [`Packed::row_dot`].
pub fn best_path() -> Option<GemvPath> {
    static BEST: std::sync::OnceLock<Option<GemvPath>> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        let cap = std::env::var("AGENTCOMPRESS_CPU_SIMD")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let order: &[GemvPath] = match cap.as_str() {
            "scalar" => &[],
            "avx2" => &[GemvPath::Avx2],
            "avx512" => &[GemvPath::Avx512, GemvPath::Avx2],
            _ => &[GemvPath::Avx512Vnni, GemvPath::Avx512, GemvPath::Avx2],
        };
        order.iter().copied().find(|p| p.available())
    })
}

/// True when this machine runs a SIMD packed-GEMV kernel.
pub fn simd_available() -> bool {
    best_path().is_some()
}

/// The code index `j` inside a word whose slot is `s` (the inverse of [`slot`]).
pub(super) fn code_of_slot(bits: u32, s: usize) -> usize {
    let half = (16 / bits) as usize;
    let j = if s < half { 2 * s } else { 2 * (s - half) + 1 };
    debug_assert_eq!(slot(bits, j), s);
    j
}

/// Fills `xp` with `x` in the permuted order of the module docs for rows of `units` units of
/// `lanes` bytes, and `sx` with the per-group sums of `x`.
pub(super) fn permute_input<const BITS: u32>(
    x: &[f32],
    lanes: usize,
    units: usize,
    group: usize,
    xp: &mut Vec<f32>,
    sx: &mut Vec<f32>,
) {
    let nsub = (8 / BITS) as usize;
    let per_word = (32 / BITS) as usize;
    xp.clear();
    xp.resize(units * nsub * lanes, 0.0);
    for u in 0..units {
        for t in 0..nsub {
            for b in 0..lanes {
                let word = (lanes / 4) * u + b / 4;
                let j = code_of_slot(BITS, nsub * (b % 4) + t);
                let k = word * per_word + j;
                if k < x.len() {
                    // Sub-position t is read unshifted (as code * 2^(BITS t)) by the kernel.
                    let unshift = if BITS == 8 {
                        1.0
                    } else {
                        (0.5f32).powi((BITS as usize * t) as i32)
                    };
                    xp[(u * nsub + t) * lanes + b] = x[k] * unshift;
                }
            }
        }
    }
    sx.clear();
    sx.extend(x.chunks(group).map(|c| c.iter().sum::<f32>()));
}

thread_local! {
    /// Per-thread permuted input and group sums, taken out for the duration of one product:
    /// while the parallel loop below waits, rayon may run another product on this thread (work
    /// stealing), which then finds the cell empty and allocates its own instead of finding it
    /// borrowed.
    static SCRATCH: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// `out[o] = sum_k w[o, k] * x[k]` for one input row, on the packed data, with the fastest
/// kernel of [`best_path`]. Returns false (and writes nothing) when no SIMD kernel is
/// available, so the caller uses its fallback.
pub fn packed_gemv<const BITS: u32>(m: &Packed<BITS>, x: &[f32], out: &mut [f32]) -> bool {
    match best_path() {
        Some(path) => packed_gemv_on(path, m, x, out),
        None => false,
    }
}

/// [`packed_gemv`], or with `f32_only` the best path that keeps f32 activations (the VNNI
/// path replaced by the AVX-512 one); false (nothing written) when no SIMD kernel runs.
pub fn packed_gemv_on_f32<const BITS: u32>(
    f32_only: bool,
    m: &Packed<BITS>,
    x: &[f32],
    out: &mut [f32],
) -> bool {
    match best_path() {
        Some(GemvPath::Avx512Vnni) if f32_only => packed_gemv_on(GemvPath::Avx512, m, x, out),
        Some(path) => packed_gemv_on(path, m, x, out),
        None => false,
    }
}

/// [`packed_gemm`], or with `f32_only` its f32-activation kernels ([`packed_gemm_f32`]).
pub fn packed_gemm_on_f32<const BITS: u32>(
    f32_only: bool,
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    match best_path() {
        Some(GemvPath::Avx512Vnni) if f32_only => packed_gemm_f32(m, x, rows, out),
        _ => packed_gemm(m, x, rows, out),
    }
}

/// [`packed_gemv`] on a chosen kernel family; false (nothing written) when this CPU cannot
/// run it.
pub fn packed_gemv_on<const BITS: u32>(
    path: GemvPath,
    m: &Packed<BITS>,
    x: &[f32],
    out: &mut [f32],
) -> bool {
    if !path.available() {
        return false;
    }
    if path == GemvPath::Avx512Vnni {
        return super::qgemv_vnni::packed_product(m, x, 1, out);
    }
    let (n_out, n_in) = m.dims();
    let lanes = path.lanes();
    let units = m.row_words() * 4 / lanes;
    let (mut xp, mut sx) = SCRATCH.take();
    permute_input::<BITS>(&x[..n_in], lanes, units, m.group_size(), &mut xp, &mut sx);
    {
        let (xp, sx) = (&xp[..], &sx[..]);
        let chunk = super::worker_pool::stream_chunk(n_out, ROWS_PER_TASK);
        super::worker_pool::for_each_chunk(&mut out[..n_out], chunk, |c, ys| {
            for (i, y) in ys.iter_mut().enumerate() {
                let r = c * chunk + i;
                // SAFETY: `path.available()` checked the CPU features above, and `xp`/`sx`
                // were sized for this matrix's units and groups.
                *y = unsafe {
                    match path {
                        GemvPath::Avx512 | GemvPath::Avx512Vnni => {
                            super::qgemv_avx512::row_avx512::<BITS>(m, r, xp, sx)
                        }
                        GemvPath::Avx2 => row_avx2::<BITS>(m, r, xp, sx),
                    }
                };
            }
        });
    }
    SCRATCH.set((xp, sx));
    true
}

/// Input rows per block of the multi-row product: their permuted copies (`ROW_BLOCK * K`
/// floats) stay in the L2 cache while every weight row streams past them.
const ROW_BLOCK: usize = 16;

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows (prefill) on the AVX-512
/// kernels: per block of `ROW_BLOCK` inputs, each weight unit is widened once for four
/// inputs at a time (`qgemv_avx512::rows_avx512`), or on int8 activations when
/// [`best_path`] is [`GemvPath::Avx512Vnni`]. Returns false (nothing written) when
/// [`best_path`] is not AVX-512, so the caller uses its fallback.
pub fn packed_gemm<const BITS: u32>(
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    match best_path() {
        Some(GemvPath::Avx512Vnni) => super::qgemv_vnni::packed_product(m, x, rows, out),
        Some(GemvPath::Avx512) => packed_gemm_f32(m, x, rows, out),
        _ => false,
    }
}

/// [`packed_gemm`] on f32 activations (the AVX-512 kernels); false (nothing written) when
/// this CPU lacks AVX-512.
pub fn packed_gemm_f32<const BITS: u32>(
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    if !GemvPath::Avx512.available() {
        return false;
    }
    let (n_out, n_in) = m.dims();
    let lanes = GemvPath::Avx512.lanes();
    let units = m.row_words() * 4 / lanes;
    let (per_x, ng) = (units * (8 / BITS) as usize * lanes, m.n_groups());
    let aligned = super::qgemv_avx512::aligned(m);
    let (mut xp, mut sx, mut one_xp, mut one_sx) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cols = Vec::new();
    for r0 in (0..rows).step_by(ROW_BLOCK) {
        let nr = ROW_BLOCK.min(rows - r0);
        xp.clear();
        sx.clear();
        for r in r0..r0 + nr {
            permute_input::<BITS>(
                &x[r * n_in..(r + 1) * n_in],
                lanes,
                units,
                m.group_size(),
                &mut one_xp,
                &mut one_sx,
            );
            xp.extend_from_slice(&one_xp);
            sx.extend_from_slice(&one_sx);
        }
        let (xp, sx) = (&xp[..], &sx[..]);
        let xr = |i: usize| &xp[i * per_x..(i + 1) * per_x];
        let sr = |i: usize| &sx[i * ng..(i + 1) * ng];
        // cols[o * nr + i]: output o of input r0 + i, computed in parallel over outputs.
        cols.clear();
        cols.resize(n_out * nr, 0.0f32);
        cols.par_chunks_mut(ROWS_PER_TASK * nr)
            .enumerate()
            .for_each(|(c, ys)| {
                for (j, y) in ys.chunks_mut(nr).enumerate() {
                    let o = c * ROWS_PER_TASK + j;
                    let mut i = 0;
                    // SAFETY: `best_path` is AVX-512 (its features were detected) and every
                    // permuted input was sized for this matrix.
                    unsafe {
                        while aligned && i + 4 <= nr {
                            let v = super::qgemv_avx512::rows_avx512::<BITS, 4>(
                                m,
                                o,
                                [xr(i), xr(i + 1), xr(i + 2), xr(i + 3)],
                                [sr(i), sr(i + 1), sr(i + 2), sr(i + 3)],
                            );
                            y[i..i + 4].copy_from_slice(&v);
                            i += 4;
                        }
                        for (k, yv) in y.iter_mut().enumerate().skip(i) {
                            *yv = super::qgemv_avx512::row_avx512::<BITS>(m, o, xr(k), sr(k));
                        }
                    }
                }
            });
        for (o, col) in cols.chunks(nr).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[(r0 + i) * n_out + o] = v;
            }
        }
    }
    true
}

/// One packed row against the permuted input on AVX2 + FMA + F16C: per unit of eight bytes,
/// the codes widened to eight i32 lanes (INT8 sign-extended; INT4/INT2 masked in place per
/// sub-position, left unshifted: the permuted input carries the `2^(-BITS t)`), converted and
/// multiply-added with the input into per-sub-position accumulators; per group, their sum
/// times the group's scale into the total. Scales (and zero points, whose `s z sum x` term is
/// taken off at the end) are widened eight groups at a time. Every accumulator index is a
/// constant after unrolling, so they stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_avx2<const BITS: u32>(m: &Packed<BITS>, r: usize, xp: &[f32], sx: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let nsub = (8 / BITS) as usize;
    let units = m.row_words() / 2;
    let ng = m.n_groups();
    let bytes = &m.bytes()[r * units * 8..(r + 1) * units * 8];
    let scales = &m.scales()[r * ng..(r + 1) * ng];
    let zeros = if BITS < 8 {
        &m.zeros()[r * ng..(r + 1) * ng]
    } else {
        &[][..]
    };
    debug_assert!(xp.len() >= units * nsub * 8 && sx.len() >= ng);
    // Units per group; one group per row (per-channel INT8) covers every unit.
    let upg = if ng == 1 {
        units
    } else {
        m.group_size() * BITS as usize / 64
    };
    let code = (1i32 << BITS) - 1;
    let masks = [
        _mm256_set1_epi32(code),
        _mm256_set1_epi32(code << BITS),
        _mm256_set1_epi32(code << (2 * BITS)),
        _mm256_set1_epi32(code << (3 * BITS)),
    ];
    let (bp, xq) = (bytes.as_ptr(), xp.as_ptr());
    let unit = |u: usize| _mm_loadl_epi64(bp.add(u * 8) as *const __m128i);
    let mut total = _mm256_setzero_ps();
    let mut zvec = _mm256_setzero_ps();
    let mut ztail = 0.0f32;
    let mut sbuf = [0.0f32; 8];
    let mut g0 = 0;
    while g0 < ng {
        let nb = (ng - g0).min(8);
        if nb == 8 {
            let s8 = _mm256_cvtph_ps(_mm_loadu_si128(scales.as_ptr().add(g0) as *const __m128i));
            _mm256_storeu_ps(sbuf.as_mut_ptr(), s8);
            if BITS < 8 {
                let z8 = _mm256_cvtph_ps(_mm_loadu_si128(zeros.as_ptr().add(g0) as *const __m128i));
                let sums = _mm256_loadu_ps(sx.as_ptr().add(g0));
                zvec = _mm256_fmadd_ps(_mm256_mul_ps(s8, z8), sums, zvec);
            }
        } else {
            for j in 0..nb {
                sbuf[j] = scales[g0 + j].to_f32();
                if BITS < 8 {
                    ztail += sbuf[j] * zeros[g0 + j].to_f32() * sx[g0 + j];
                }
            }
        }
        for (j, &s) in sbuf.iter().enumerate().take(nb) {
            let g = g0 + j;
            let (ua, ub) = (g * upg, ((g + 1) * upg).min(units));
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut u = ua;
            if BITS == 8 {
                // Two units per step into two accumulators (independent FMA chains).
                while u + 2 <= ub {
                    let (a, b) = (
                        _mm256_cvtepi8_epi32(unit(u)),
                        _mm256_cvtepi8_epi32(unit(u + 1)),
                    );
                    acc[0] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(a),
                        _mm256_loadu_ps(xq.add(u * 8)),
                        acc[0],
                    );
                    acc[1] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(b),
                        _mm256_loadu_ps(xq.add(u * 8 + 8)),
                        acc[1],
                    );
                    u += 2;
                }
                if u < ub {
                    let a = _mm256_cvtepi8_epi32(unit(u));
                    acc[0] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(a),
                        _mm256_loadu_ps(xq.add(u * 8)),
                        acc[0],
                    );
                }
            } else {
                while u < ub {
                    let v = _mm256_cvtepu8_epi32(unit(u));
                    let xs = xq.add(u * nsub * 8);
                    for t in 0..nsub {
                        let c = _mm256_cvtepi32_ps(_mm256_and_si256(v, masks[t]));
                        acc[t] = _mm256_fmadd_ps(c, _mm256_loadu_ps(xs.add(t * 8)), acc[t]);
                    }
                    u += 1;
                }
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            total = _mm256_fmadd_ps(_mm256_set1_ps(s), sum, total);
        }
        g0 += nb;
    }
    super::simd::hsum256(total) - (super::simd::hsum256(zvec) + ztail)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_avx2<const BITS: u32>(m: &Packed<BITS>, r: usize, xp: &[f32], _: &[f32]) -> f32 {
    let _ = xp;
    unreachable!(
        "simd_available is false off x86_64 (row {r} of {:?})",
        m.dims()
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::util::rng::Rng;
    use half::f16;

    /// A random packed matrix whose groups have very different scales (a wrong group
    /// boundary changes the product).
    pub(crate) fn random_matrix<const BITS: u32>(
        out: usize,
        inp: usize,
        group: usize,
        rng: &mut Rng,
    ) -> Packed<BITS> {
        let ng = inp.div_ceil(group);
        let max = if BITS == 8 { 255 } else { (1 << BITS) - 1 };
        let codes: Vec<i32> = (0..out * inp)
            .map(|_| {
                let c = (rng.next_u64() % (max as u64 + 1)) as i32;
                if BITS == 8 {
                    (c - 127).clamp(-127, 127)
                } else {
                    c
                }
            })
            .collect();
        let (scales, zeros): (Vec<f16>, Vec<f16>) = if BITS == 2 {
            // INT2 parameters must lie on the compact grid: each row's first group carries the
            // super-scale (code 0), the others random log-scale and zero codes.
            use crate::quant::int2_params::{decode_scale, decode_zero};
            let mut sc = Vec::new();
            let mut zc = Vec::new();
            for _ in 0..out {
                let sup = f16::from_f32(0.005 + 0.02 * rng.next_f32());
                for g in 0..ng {
                    let c = if g == 0 { 0 } else { rng.below(200) as u8 };
                    sc.push(decode_scale(sup, c));
                    zc.push(decode_zero(rng.below(16) as u8));
                }
            }
            (sc, zc)
        } else {
            let scales = (0..out * ng)
                .map(|_| f16::from_f32(0.001 + 0.02 * rng.next_f32()))
                .collect();
            let zeros = if BITS == 8 {
                Vec::new()
            } else {
                (0..out * ng)
                    .map(|_| f16::from_f32(max as f32 * rng.next_f32()))
                    .collect()
            };
            (scales, zeros)
        };
        Packed::<BITS>::pack(out, inp, group, &codes, scales, zeros).unwrap()
    }

    /// The SIMD paths this CPU runs (the test of a path this CPU lacks says so and skips).
    fn paths() -> Vec<GemvPath> {
        let all = [GemvPath::Avx512, GemvPath::Avx2];
        for p in all.iter().filter(|p| !p.available()) {
            eprintln!("SKIPPED {p:?}: this CPU lacks its features");
        }
        all.into_iter().filter(|p| p.available()).collect()
    }

    /// Every available path against `row_dot` on one random matrix and input.
    fn check<const BITS: u32>(out: usize, inp: usize, group: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let x: Vec<f32> = (0..inp).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        for path in paths() {
            let mut y = vec![f32::NAN; out];
            assert!(packed_gemv_on(path, &m, &x, &mut y));
            for (r, &v) in y.iter().enumerate() {
                let want = m.row_dot(r, &x);
                let tol = 1e-5 * (1.0 + want.abs()) + 1e-6 * inp as f32;
                assert!(
                    (v - want).abs() <= tol,
                    "{path:?} INT{BITS} [{out}, {inp}] g{group} row {r}: {v} vs {want}"
                );
            }
        }
    }

    /// One-hot inputs: output `r` must be weight `(r, k)` itself, so any misplaced permuted
    /// input, sub-position factor, or group scale (boundary) shows up at its `k`.
    fn check_one_hot<const BITS: u32>(out: usize, inp: usize, group: usize, seed: u64) {
        let mut rng = Rng::new(seed);
        let m = random_matrix::<BITS>(out, inp, group, &mut rng);
        let w = m.dequantize();
        for path in paths() {
            let mut y = vec![f32::NAN; out];
            for k in 0..inp {
                let mut x = vec![0.0f32; inp];
                x[k] = 1.0;
                assert!(packed_gemv_on(path, &m, &x, &mut y));
                for (r, &v) in y.iter().enumerate() {
                    let want = w[r * inp + k];
                    assert!(
                        (v - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{path:?} INT{BITS} [{out}, {inp}] g{group} w[{r}, {k}]: {v} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_places_every_weight_for_every_format() {
        // 160 INT2 codes in groups of 96 end a group inside a 16-byte unit; 172 leaves a
        // partial last group; 48 INT4/INT8 codes leave a partial 16-byte unit row stride.
        for (i, &(out, inp)) in [(3, 160), (5, 172), (2, 48)].iter().enumerate() {
            let seed = 40 + i as u64;
            check_one_hot::<2>(out, inp, 32, seed);
            check_one_hot::<2>(out, inp, 96, seed);
            check_one_hot::<2>(out, inp, 64, seed);
            check_one_hot::<4>(out, inp, 32, seed);
            check_one_hot::<4>(out, inp, 96, seed);
            check_one_hot::<8>(out, inp, 16, seed);
            check_one_hot::<8>(out, inp, inp, seed);
        }
    }

    #[test]
    fn multi_row_product_matches_row_dot() {
        if !GemvPath::Avx512.available() {
            eprintln!("SKIPPED: packed_gemm_f32 needs AVX-512");
            return;
        }
        // 21 input rows: one full block of 16 (four 4-row passes), then 5 (one pass and a
        // single row); INT2 groups of 96 take the per-row split kernel.
        let mut rng = Rng::new(77);
        let rows = 21;
        fn run<const BITS: u32>(rng: &mut Rng, out: usize, inp: usize, group: usize, rows: usize) {
            let m = random_matrix::<BITS>(out, inp, group, rng);
            let x: Vec<f32> = (0..rows * inp)
                .map(|_| rng.next_f32() * 2.0 - 1.0)
                .collect();
            let mut y = vec![f32::NAN; rows * out];
            assert!(packed_gemm_f32(&m, &x, rows, &mut y));
            for r in 0..rows {
                for o in 0..out {
                    let want = m.row_dot(o, &x[r * inp..(r + 1) * inp]);
                    let v = y[r * out + o];
                    let tol = 1e-5 * (1.0 + want.abs()) + 1e-6 * inp as f32;
                    assert!(
                        (v - want).abs() <= tol,
                        "INT{BITS} g{group} x{r} w{o}: {v} vs {want}"
                    );
                }
            }
        }
        run::<8>(&mut rng, 19, 172, 172, rows);
        run::<8>(&mut rng, 19, 172, 48, rows);
        run::<4>(&mut rng, 33, 200, 64, rows);
        run::<2>(&mut rng, 17, 200, 64, rows);
        run::<2>(&mut rng, 17, 200, 96, rows);
    }

    #[test]
    fn cap_and_fallback_paths_are_consistent() {
        // The chosen path is one this CPU runs; a path it lacks writes nothing.
        if let Some(p) = best_path() {
            assert!(p.available());
        }
        let mut rng = Rng::new(3);
        let m = random_matrix::<4>(4, 64, 32, &mut rng);
        for p in [GemvPath::Avx512, GemvPath::Avx2] {
            let mut y = vec![f32::NAN; 4];
            let ran = packed_gemv_on(p, &m, &[0.5; 64], &mut y);
            assert_eq!(ran, p.available());
            assert_eq!(y.iter().all(|v| v.is_nan()), !ran);
        }
    }

    #[test]
    fn simd_gemv_matches_row_dot_for_every_format_and_ragged_shape() {
        if !simd_available() {
            eprintln!("SKIPPED: this CPU has no AVX2+FMA; the scalar row_dot path is used");
            return;
        }
        // Rows not a multiple of ROWS_PER_TASK; K not a multiple of a unit or group.
        for (i, &(out, inp)) in [
            (1, 32),
            (37, 172),
            (64, 256),
            (19, 96),
            (130, 512),
            (17, 200),
        ]
        .iter()
        .enumerate()
        {
            let seed = 10 + i as u64;
            for g in [32, 64, 128] {
                check::<4>(out, inp, g, seed);
            }
            for g in [32, 64, 96] {
                check::<2>(out, inp, g, seed);
            }
            for g in [16, 48, inp] {
                check::<8>(out, inp, g, seed);
            }
        }
    }

    #[test]
    fn permutation_is_the_inverse_of_the_slot_order() {
        for bits in [2u32, 4, 8] {
            let per = (32 / bits) as usize;
            let mut seen = vec![false; per];
            for s in 0..per {
                let j = code_of_slot(bits, s);
                assert!(!seen[j]);
                seen[j] = true;
                assert_eq!(slot(bits, j), s);
            }
        }
    }

    /// Kernel timing, not a check: `cargo test --release --lib timing_packed -- --ignored
    /// --nocapture`. Fastest of 15 calls per shape on a 4096 x 4096 matrix, every path (the
    /// minimum, since other load on the machine only ever adds time).
    #[test]
    #[ignore]
    fn timing_packed_products() {
        fn fastest(mut f: impl FnMut()) -> f64 {
            let t: Vec<f64> = (0..15)
                .map(|_| {
                    let s = std::time::Instant::now();
                    f();
                    s.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.into_iter().fold(f64::INFINITY, f64::min)
        }
        fn one<const BITS: u32>(group: usize) {
            let (n, rows) = (4096, 64);
            let mut rng = Rng::new(5);
            let m = random_matrix::<BITS>(n, n, group, &mut rng);
            let x: Vec<f32> = (0..rows * n).map(|_| rng.next_f32() - 0.5).collect();
            let mut y = vec![0.0f32; rows * n];
            for p in paths() {
                let ms = fastest(|| {
                    packed_gemv_on(p, &m, &x[..n], &mut y[..n]);
                });
                eprintln!("INT{BITS} g{group} gemv {p:?}: {ms:.3} ms");
            }
            let ms = fastest(|| {
                super::super::matmul_rows(1, n, n, &x[..n], &mut y[..n], |o, xr| m.row_dot(o, xr))
            });
            eprintln!("INT{BITS} g{group} gemv row_dot: {ms:.3} ms");
            let ms = fastest(|| {
                packed_gemm(&m, &x, rows, &mut y);
            });
            eprintln!("INT{BITS} g{group} {rows} rows packed_gemm: {ms:.3} ms");
            let ms = fastest(|| {
                super::super::matmul_widened_rows(rows, n, n, &x, &mut y, |o, w| {
                    m.dequantize_row_into(o, w)
                })
            });
            eprintln!("INT{BITS} g{group} {rows} rows widened: {ms:.3} ms");
        }
        one::<8>(4096);
        one::<4>(128);
        one::<2>(64);
        one::<2>(32);
    }
}
