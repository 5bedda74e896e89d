//! Causal grouped-query attention over an FP16 key/value cache, one (query row, KV head) pair
//! per call: the query heads of one KV group share every K and V row read, so a decode step
//! streams each layer's cache once.
//!
//! Layout: `k` and `v` are `[positions, kv_dim]` row-major FP16, the group's KV head at
//! columns `kv_off..kv_off + head_dim`; `q` and `out` hold the group's `group` query heads
//! back to back (`[group, head_dim]`). Scores, softmax and sums are f32; each cached element
//! is widened exactly (F16C `vcvtph2ps`). Kernels: AVX-512F + F16C when `head_dim` is a
//! multiple of 16, AVX2 + FMA + F16C when it is a multiple of 8, else portable.

#[cfg(target_arch = "x86_64")]
use super::vexp::exp_avx512;
use half::f16;
use std::cell::Cell;

thread_local! {
    /// Per-thread scores `[group, len]`, taken out for one call and put back after (a `Cell`,
    /// so no borrow outlives the call).
    static SCORES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Attention of the `group` query heads in `q` (`[group, head_dim]`) over the first `len`
/// cached positions of one KV head; writes `out` (`[group, head_dim]`). Two-pass softmax with
/// scores scaled by `1/sqrt(head_dim)`.
#[allow(clippy::too_many_arguments)]
pub fn attend_group_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let group = q.len() / head_dim;
    assert!(
        len >= 1 && out.len() == q.len() && kv_off + head_dim <= kv_dim,
        "attend_group_f16: bad shape"
    );
    assert!(k.len() >= len * kv_dim && v.len() >= len * kv_dim);
    let mut scores = SCORES.take();
    scores.clear();
    scores.resize(group * len, 0.0);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let path = Lanes::pick(head_dim);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `pick` checked the CPU features and the head width; the asserts above bound
        // every row read.
        Lanes::L16 => unsafe {
            scores_avx512(q, k, len, kv_dim, kv_off, head_dim, scale, &mut scores)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Lanes::L8 => unsafe {
            scores_avx2(q, k, len, kv_dim, kv_off, head_dim, scale, &mut scores)
        },
        _ => scores_scalar(q, k, len, kv_dim, kv_off, head_dim, scale, &mut scores),
    }
    softmax_rows(&mut scores, len);
    out.iter_mut().for_each(|o| *o = 0.0);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Lanes::L16 => unsafe { values_avx512(&scores, v, len, kv_dim, kv_off, head_dim, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Lanes::L8 => unsafe { values_avx2(&scores, v, len, kv_dim, kv_off, head_dim, out) },
        _ => values_scalar(&scores, v, len, kv_dim, kv_off, head_dim, out),
    }
    SCORES.set(scores);
}

/// Softmax of each `len`-long row of `scores` in place (max subtracted): on AVX-512 sixteen
/// positions at a time ([`softmax_row_avx512`]), else in portable code (libm `exp`, sums in
/// order).
fn softmax_rows(scores: &mut [f32], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx512f() {
        for s in scores.chunks_exact_mut(len) {
            // SAFETY: the CPU has AVX-512F.
            unsafe { softmax_row_avx512(s) };
        }
        return;
    }
    for s in scores.chunks_exact_mut(len) {
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        s.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Softmax of one row in place, sixteen positions per vector (the tail masked): the maximum,
/// then `e^(x - max)` by [`exp_avx512`] summed per lane (the lanes added at the end), then
/// each value times the inverse of the sum.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(s: &mut [f32]) {
    use std::arch::x86_64::*;
    let len = s.len();
    let p = s.as_mut_ptr();
    let tail = len % 16;
    let whole = len - tail;
    let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < whole {
        m = _mm512_max_ps(m, _mm512_loadu_ps(p.add(i)));
        i += 16;
    }
    if tail > 0 {
        let v = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, p.add(whole));
        m = _mm512_max_ps(m, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut sum = _mm512_setzero_ps();
    let mut i = 0;
    while i < whole {
        let e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), max));
        _mm512_storeu_ps(p.add(i), e);
        sum = _mm512_add_ps(sum, e);
        i += 16;
    }
    if tail > 0 {
        let e = exp_avx512(_mm512_sub_ps(
            _mm512_maskz_loadu_ps(mask, p.add(whole)),
            max,
        ));
        let e = _mm512_maskz_mov_ps(mask, e);
        _mm512_mask_storeu_ps(p.add(whole), mask, e);
        sum = _mm512_add_ps(sum, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    let mut i = 0;
    while i < whole {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
        i += 16;
    }
    if tail > 0 {
        let v = _mm512_maskz_loadu_ps(mask, p.add(whole));
        _mm512_mask_storeu_ps(p.add(whole), mask, _mm512_mul_ps(v, inv));
    }
}

/// Positions per span of the whole-row value pass: its rows (`span * kv_dim` halves) stay in
/// L1 while every KV head's pass reads its columns.
const VALUE_SPAN: usize = 64;

/// Attention of every query head of one query row over the first `len` cached positions:
/// `q` and `out` are `[n_kv * group, head_dim]` (KV head `g`'s query heads at `g * group ..`),
/// `k` and `v` rows of `n_kv * head_dim` halves. Each head gets exactly the operations of
/// [`attend_group_f16`], so the same bits; what differs is the order of reads: the scores
/// read each cached K row whole, front to back (one memory stream instead of `n_kv`
/// interleaved column streams), and the value passes take V in spans of [`VALUE_SPAN`] rows,
/// every KV head's columns of a span before the next. Head widths other than 64 and 128
/// (or a CPU without AVX-512) run [`attend_group_f16`] per KV head.
#[allow(clippy::too_many_arguments)]
pub fn attend_row_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    len: usize,
    n_kv: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let kv_dim = n_kv * head_dim;
    assert!(
        n_kv >= 1 && len >= 1 && out.len() == q.len() && q.len() % (n_kv * head_dim) == 0,
        "attend_row_f16: bad shape"
    );
    assert!(k.len() >= len * kv_dim && v.len() >= len * kv_dim);
    let width = q.len() / n_kv;
    let group = width / head_dim;
    let fast = Lanes::pick(head_dim) == Lanes::L16 && (head_dim == 64 || head_dim == 128);
    if !fast {
        for (g, (qg, og)) in q
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(width))
            .enumerate()
        {
            attend_group_f16(qg, k, v, len, kv_dim, g * head_dim, head_dim, og);
        }
        return;
    }
    let mut scores = SCORES.take();
    scores.clear();
    scores.resize(n_kv * group * len, 0.0);
    let scale = 1.0 / (head_dim as f32).sqrt();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `fast` checked the CPU and the head width; the asserts above bound every row
    // read, and `scores` holds `n_kv * group * len` floats.
    unsafe {
        let kp = k.as_ptr() as *const u16;
        let args = (q, kp, len, n_kv, scale, &mut scores[..]);
        if head_dim == 64 {
            scores_whole_rows_avx512::<4>(args);
        } else {
            scores_whole_rows_avx512::<8>(args);
        }
    }
    softmax_rows(&mut scores, len);
    out.iter_mut().for_each(|o| *o = 0.0);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as above; KV head `g`'s scores are `group` rows of `len` from `g * group * len`
    // and its outputs `width` floats from `g * width`.
    unsafe {
        let vp = v.as_ptr() as *const u16;
        let op = out.as_mut_ptr();
        let mut t0 = 0;
        while t0 < len {
            let span = (t0, (t0 + VALUE_SPAN).min(len));
            for g in 0..n_kv {
                values_passes_avx512(
                    &scores[g * group * len..],
                    vp,
                    len,
                    kv_dim,
                    g * head_dim,
                    head_dim,
                    op.add(g * width),
                    span,
                    group,
                );
            }
            t0 = span.1;
        }
    }
    SCORES.set(scores);
}

/// The kernel family for a head width on this CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// AVX-512F + F16C, 16 lanes.
    L16,
    /// AVX2 + FMA + F16C, 8 lanes.
    L8,
    /// Portable.
    Scalar,
}

impl Lanes {
    fn pick(head_dim: usize) -> Lanes {
        if head_dim % 16 == 0 && super::simd::avx512f() {
            Lanes::L16
        } else if head_dim % 8 == 0 && super::simd::avx2_fma_f16c() {
            Lanes::L8
        } else {
            Lanes::Scalar
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scores_scalar(
    q: &[f32],
    k: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let mut row = vec![0.0f32; hd];
    for t in 0..len {
        let at = t * kv_dim + kv_off;
        row.iter_mut()
            .zip(&k[at..at + hd])
            .for_each(|(d, h)| *d = h.to_f32());
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            scores[h * len + t] = super::dot(qh, &row) * scale;
        }
    }
}

fn values_scalar(
    p: &[f32],
    v: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    out: &mut [f32],
) {
    let mut row = vec![0.0f32; hd];
    for t in 0..len {
        let at = t * kv_dim + kv_off;
        row.iter_mut()
            .zip(&v[at..at + hd])
            .for_each(|(d, h)| *d = h.to_f32());
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            let w = p[h * len + t];
            oh.iter_mut().zip(&row).for_each(|(o, x)| *o += w * x);
        }
    }
}

/// How many cached positions ahead of their reads the kernels prefetch a row's head slice:
/// a decode step's cache is read once, mostly from memory, and a position takes a few tens of
/// cycles, so the distance has to cover a memory latency.
const ROWS_AHEAD: usize = 16;

/// Prefetches into L1 every cache line of the `hd` halves at `at` (a row's head slice).
///
/// # Safety
/// The CPU must have SSE (every x86-64 does); the address need not be valid.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_slice(at: *const u16, hd: usize) {
    use std::arch::x86_64::*;
    let mut i = 0;
    while i < hd {
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(i) as *const i8);
        i += 32;
    }
    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(hd - 1) as *const i8);
}

/// Scores of every query head of the group at every position: each K row is widened once (16
/// lanes at a time) and dotted with every head.
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `hd % 16 == 0`; rows `0..len` of `k` hold
/// `kv_off + hd <= kv_dim` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_avx512(
    q: &[f32],
    k: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
) {
    use std::arch::x86_64::*;
    let group = q.len() / hd;
    let chunks = hd / 16;
    let kp = k.as_ptr() as *const u16;
    let args = (q, kp, len, kv_dim, kv_off, scale, scores);
    match chunks {
        4 => return scores_rows_avx512::<4>(args),
        8 => return scores_rows_avx512::<8>(args),
        _ => {}
    }
    let (q, kp, len, kv_dim, kv_off, scale, scores) = args;
    for t in 0..len {
        let row = kp.add(t * kv_dim + kv_off);
        if t + ROWS_AHEAD < len {
            prefetch_slice(kp.add((t + ROWS_AHEAD) * kv_dim + kv_off), hd);
        }
        for h in 0..group {
            let qh = q.as_ptr().add(h * hd);
            let mut acc = _mm512_setzero_ps();
            for c in 0..chunks {
                let kc = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * c) as *const __m256i));
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(16 * c)), kc, acc);
            }
            *scores.get_unchecked_mut(h * len + t) = _mm512_reduce_add_ps(acc) * scale;
        }
    }
}

/// [`scores_avx512`] for heads of `16 * C` lanes: each K row is loaded and widened once into
/// `C` registers, then dotted with every head (the same FMAs in the same order, so the same
/// bits as the general loop).
///
/// # Safety
/// As [`scores_avx512`], with `hd == 16 * C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::type_complexity)]
unsafe fn scores_rows_avx512<const C: usize>(
    args: (&[f32], *const u16, usize, usize, usize, f32, &mut [f32]),
) {
    let (q, kp, len, kv_dim, kv_off, scale, scores) = args;
    let hd = 16 * C;
    let group = q.len() / hd;
    for t in 0..len {
        let row = kp.add(t * kv_dim + kv_off);
        if t + ROWS_AHEAD < len {
            prefetch_slice(kp.add((t + ROWS_AHEAD) * kv_dim + kv_off), hd);
        }
        score_heads::<C>(row, q, 0..group, (t, len, scale), scores);
    }
}

/// One cached position's scores for query heads `heads`: its K slice (`16 * C` halves at `k`)
/// widened once into `C` registers, then dotted with each head's `16 * C` floats of `q` (FMAs
/// in lane order, then the lanes summed), times `scale`, into `scores[h * len + t]`.
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `k` holds `16 * C` halves; `q` holds `heads.end * 16 *
/// C` floats and `scores` `heads.end * len`, with `t < len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[inline]
unsafe fn score_heads<const C: usize>(
    k: *const u16,
    q: &[f32],
    heads: std::ops::Range<usize>,
    (t, len, scale): (usize, usize, f32),
    scores: &mut [f32],
) {
    use std::arch::x86_64::*;
    let mut kc = [_mm512_setzero_ps(); C];
    for (c, kc) in kc.iter_mut().enumerate() {
        *kc = _mm512_cvtph_ps(_mm256_loadu_si256(k.add(16 * c) as *const __m256i));
    }
    for h in heads {
        let qh = q.as_ptr().add(h * 16 * C);
        let mut acc = _mm512_setzero_ps();
        for (c, kc) in kc.iter().enumerate() {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(16 * c)), *kc, acc);
        }
        *scores.get_unchecked_mut(h * len + t) = _mm512_reduce_add_ps(acc) * scale;
    }
}

/// [`attend_row_f16`]'s scores for heads of `16 * C` lanes: per cached position the whole K
/// row is read, and each KV head's columns widened once and dotted with its query heads (the
/// FMAs and sum of [`scores_rows_avx512`], so the same bits). Scores are `[n_kv * group, len]`.
///
/// # Safety
/// The CPU must have AVX-512F and F16C; `k` holds `len` rows of `n_kv * 16 * C` halves; `q`
/// holds `n_kv * group * 16 * C` floats and `scores` `n_kv * group * len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::type_complexity)]
unsafe fn scores_whole_rows_avx512<const C: usize>(
    args: (&[f32], *const u16, usize, usize, f32, &mut [f32]),
) {
    let (q, kp, len, n_kv, scale, scores) = args;
    let hd = 16 * C;
    let kv_dim = n_kv * hd;
    let group = q.len() / kv_dim;
    for t in 0..len {
        let row = kp.add(t * kv_dim);
        if t + ROWS_AHEAD < len {
            prefetch_slice(kp.add((t + ROWS_AHEAD) * kv_dim), kv_dim);
        }
        for g in 0..n_kv {
            let heads = g * group..(g + 1) * group;
            score_heads::<C>(row.add(g * hd), q, heads, (t, len, scale), scores);
        }
    }
}

/// [`scores_avx512`] with 8 lanes.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `hd % 8 == 0`; rows `0..len` of `k` hold
/// `kv_off + hd <= kv_dim` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_avx2(
    q: &[f32],
    k: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
) {
    use std::arch::x86_64::*;
    let group = q.len() / hd;
    let kp = k.as_ptr() as *const u16;
    for t in 0..len {
        let row = kp.add(t * kv_dim + kv_off);
        for h in 0..group {
            let qh = q.as_ptr().add(h * hd);
            let mut acc = _mm256_setzero_ps();
            for c in 0..hd / 8 {
                let kc = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * c) as *const __m128i));
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8 * c)), kc, acc);
            }
            *scores.get_unchecked_mut(h * len + t) = super::simd::hsum256(acc) * scale;
        }
    }
}

/// Heads `h0 .. h0 + H` of [`values_avx512`] for heads of `C` 16-lane chunks over positions
/// `span.0 .. span.1`, their outputs held in `H * C` registers over the pass (loaded from
/// `out` first, stored after, so passes over consecutive spans add the FMAs of one pass over
/// all of them, in the same order).
///
/// # Safety
/// As [`values_avx512`]; `args` is `(p, v, len, kv_dim, kv_off, out, h0)` with heads
/// `h0 .. h0 + H` inside the group.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::type_complexity)]
unsafe fn values_pass_avx512<const C: usize, const H: usize>(
    args: (&[f32], *const u16, usize, usize, usize, *mut f32, usize),
    span: (usize, usize),
) {
    use std::arch::x86_64::*;
    let (p, vp, len, kv_dim, kv_off, op, h0) = args;
    let hd = 16 * C;
    let mut acc = [[_mm512_setzero_ps(); C]; H];
    for (h, acc) in acc.iter_mut().enumerate() {
        for (c, a) in acc.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(op.add((h0 + h) * hd + 16 * c));
        }
    }
    for t in span.0..span.1 {
        let row = vp.add(t * kv_dim + kv_off);
        if t + ROWS_AHEAD < len {
            prefetch_slice(vp.add((t + ROWS_AHEAD) * kv_dim + kv_off), hd);
        }
        for c in 0..C {
            let vc = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * c) as *const __m256i));
            for (h, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p.get_unchecked((h0 + h) * len + t));
                acc[c] = _mm512_fmadd_ps(w, vc, acc[c]);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (c, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(op.add((h0 + h) * hd + 16 * c), *a);
        }
    }
}

/// [`values_avx512`] with 8 lanes.
///
/// # Safety
/// As [`scores_avx2`], for `v`; `out` holds `group * hd` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values_avx2(
    p: &[f32],
    v: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let group = out.len() / hd;
    let vp = v.as_ptr() as *const u16;
    let op = out.as_mut_ptr();
    for t in 0..len {
        let row = vp.add(t * kv_dim + kv_off);
        for c in 0..hd / 8 {
            let vc = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * c) as *const __m128i));
            for h in 0..group {
                let w = _mm256_set1_ps(*p.get_unchecked(h * len + t));
                let o = op.add(h * hd + 8 * c);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(w, vc, _mm256_loadu_ps(o)));
            }
        }
    }
}

/// `out[h] = sum_t p[h, t] * v[t]` for every head of the group: each V row is widened once and
/// accumulated into every head's output. Heads of width 64 or 128 keep their outputs in
/// registers through the whole pass over `t` ([`values_pass_avx512`]); other widths accumulate
/// in memory. Both add the same FMAs in the same order, so they give the same bits.
///
/// # Safety
/// As [`scores_avx512`], for `v`; `out` holds `group * hd` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn values_avx512(
    p: &[f32],
    v: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    out: &mut [f32],
) {
    let group = out.len() / hd;
    let chunks = hd / 16;
    let vp = v.as_ptr() as *const u16;
    let op = out.as_mut_ptr();
    if chunks == 4 || chunks == 8 {
        // Passes of up to 16 accumulators: 4 heads of 64 or 2 of 128 at a time.
        values_passes_avx512(p, vp, len, kv_dim, kv_off, hd, op, (0, len), group);
        return;
    }
    values_memory_avx512(p, v, len, kv_dim, kv_off, hd, out);
}

/// [`values_avx512`]'s register passes (`hd` of 64 or 128) over positions `span`: passes of
/// up to 16 accumulators, 4 heads of 64 or 2 of 128 at a time, over the `group` heads.
///
/// # Safety
/// As [`values_avx512`], with `hd` 64 or 128 and `span.1 <= len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn values_passes_avx512(
    p: &[f32],
    vp: *const u16,
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    op: *mut f32,
    span: (usize, usize),
    group: usize,
) {
    let chunks = hd / 16;
    let per_pass = 16 / chunks;
    let mut h0 = 0;
    while h0 < group {
        let n = per_pass.min(group - h0);
        let args = (p, vp, len, kv_dim, kv_off, op, h0);
        match (chunks, n) {
            (4, 4) => values_pass_avx512::<4, 4>(args, span),
            (4, 3) => values_pass_avx512::<4, 3>(args, span),
            (4, 2) => values_pass_avx512::<4, 2>(args, span),
            (4, _) => values_pass_avx512::<4, 1>(args, span),
            (_, 2) => values_pass_avx512::<8, 2>(args, span),
            _ => values_pass_avx512::<8, 1>(args, span),
        }
        h0 += n;
    }
}

/// [`values_avx512`] accumulating in `out` itself (any width that is a multiple of 16).
///
/// # Safety
/// As [`values_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn values_memory_avx512(
    p: &[f32],
    v: &[f16],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    hd: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let group = out.len() / hd;
    let chunks = hd / 16;
    let vp = v.as_ptr() as *const u16;
    let op = out.as_mut_ptr();
    for t in 0..len {
        let row = vp.add(t * kv_dim + kv_off);
        if t + ROWS_AHEAD < len {
            prefetch_slice(vp.add((t + ROWS_AHEAD) * kv_dim + kv_off), hd);
        }
        for c in 0..chunks {
            let vc = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * c) as *const __m256i));
            for h in 0..group {
                let w = _mm512_set1_ps(*p.get_unchecked(h * len + t));
                let o = op.add(h * hd + 16 * c);
                _mm512_storeu_ps(o, _mm512_fmadd_ps(w, vc, _mm512_loadu_ps(o)));
            }
        }
    }
}

#[cfg(test)]
#[path = "attention_f16_tests.rs"]
mod tests;
