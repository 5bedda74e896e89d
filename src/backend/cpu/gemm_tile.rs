//! Pieces shared by the blocked multi-row products ([`super::f16gemm`], [`super::qgemm_vnni`]):
//! a 64-byte-aligned panel line, an in-register 16 x 16 transpose of 32-bit lanes (how a
//! panel of weight rows is turned so that one vector holds one K position of 16 outputs), and
//! the shared output pointer through which parallel tasks write disjoint output columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One 64-byte panel line: sixteen f32 lanes or sixty-four bytes, aligned for full-vector
/// loads that never straddle a cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Line(pub [u32; 16]);

/// Outputs per panel: two vectors of sixteen.
pub(super) const PANEL_OUTS: usize = 32;

/// Fewest input rows the blocked products take. They round differently from the one-row
/// (decode) kernels, whose multi-row form is bit-identical to running each row alone; a
/// speculative verify (`draft_len + 1` rows) relies on that to reproduce the target's greedy
/// tokens, so shorter products keep the one-row kernels. The blocked products already win
/// at a few rows (`timing_blocked_*` tests; docs/PERFORMANCE.md), so this bound is about
/// consistency, not speed.
pub(super) const BLOCKED_MIN_ROWS: usize = 32;

/// The row-major `[rows, n_out]` output of a product, shared by tasks that each write their
/// own block of output columns (never the same element).
#[derive(Clone, Copy)]
pub(super) struct SharedOut(*mut f32);

// SAFETY: the tasks sharing it write disjoint column blocks of one `&mut [f32]` that outlives
// them (see the callers), so no element is accessed by two threads.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wraps `out`, which must outlive every use of the result.
    pub(super) fn new(out: &mut [f32]) -> Self {
        SharedOut(out.as_mut_ptr())
    }

    /// The base pointer.
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs several panel products of one input as one parallel job: `panels(m)` is the number of
/// panels of matrix `m`, `run(m, p, dst)` computes panel `p` of `m` into its output `dst`.
pub(super) fn for_each_product_panel<M: Sync>(
    products: &mut [(&M, &mut [f32])],
    panels: impl Fn(&M) -> usize,
    run: impl Fn(&M, usize, SharedOut) + Sync,
) {
    let mats: Vec<(&M, SharedOut)> = products
        .iter_mut()
        .map(|(m, out)| (*m, SharedOut::new(out)))
        .collect();
    let counts: Vec<usize> = mats.iter().map(|(m, _)| panels(m)).collect();
    super::worker_pool::for_each_in_runs(&counts, |i, p| run(mats[i].0, p, mats[i].1));
}

/// The fewest calls that carry `rows` input rows at most `max` at a time, their row counts as
/// even as can be: `(first row, rows)` of each call, in order.
pub(super) fn even_row_calls(rows: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let calls = rows.div_ceil(max.max(1));
    (0..calls).map(move |c| {
        let (base, extra) = (rows / calls, rows % calls);
        (c * base + c.min(extra), base + usize::from(c < extra))
    })
}

/// The lane masks of a panel's two output vectors when only `n` (<= 32) outputs are real.
pub(super) fn out_masks(n: usize) -> [u16; 2] {
    let lanes = |c: usize| if c >= 16 { 0xffff } else { (1u16 << c) - 1 };
    [lanes(n.min(32)), lanes(n.saturating_sub(16))]
}

/// Transposes the 16 x 16 matrix of 32-bit lanes held by `r` in place (row `i` of the input
/// becomes lane `i` of every output vector): 16 unpacks at 32 bits, 16 at 64 bits, then
/// 32 128-bit lane shuffles.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j]: per 128-bit lane L, element 4L + j of rows 4i .. 4i + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let pd = |v: __m512| _mm512_castps_pd(v);
        let (a, b, c, d) = (
            pd(t[4 * i]),
            pd(t[4 * i + 1]),
            pd(t[4 * i + 2]),
            pd(t[4 * i + 3]),
        );
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // Output column 4L + j gathers lane L of u[j], u[4 + j], u[8 + j], u[12 + j].
    for j in 0..4 {
        let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        let t0 = _mm512_shuffle_f32x4::<0x44>(a, b);
        let t1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let t2 = _mm512_shuffle_f32x4::<0x44>(c, d);
        let t3 = _mm512_shuffle_f32x4::<0xEE>(c, d);
        r[j] = _mm512_shuffle_f32x4::<0x88>(t0, t2);
        r[4 + j] = _mm512_shuffle_f32x4::<0xDD>(t0, t2);
        r[8 + j] = _mm512_shuffle_f32x4::<0x88>(t1, t3);
        r[12 + j] = _mm512_shuffle_f32x4::<0xDD>(t1, t3);
    }
}

/// A vector of `len` copies of `init` whose chunks of `chunk` elements are then passed, in
/// parallel, to `fill(chunk index, chunk)`: a weight layout written at upload in one pass over
/// fresh memory (each chunk is initialised and rewritten while it sits in cache, on huge pages
/// where Linux gives them: [`super::huge_pages`]), or a typed error naming `what` when it
/// cannot be allocated.
pub(super) fn par_filled<T: Copy + Send + Sync>(
    len: usize,
    chunk: usize,
    init: T,
    what: &str,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> crate::Result<Vec<T>> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| crate::Error::OutOfMemory(format!("{len} {what}")))?;
    // Before the first write, which is when Linux picks the page size.
    super::huge_pages::advise(v.as_ptr().cast(), len * std::mem::size_of::<T>());
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            for x in c.iter_mut() {
                x.write(init);
            }
            // SAFETY: every element of `c` was initialised just above, and `MaybeUninit<T>`
            // has `T`'s layout.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<T>] as *mut [T]) };
            fill(i, c);
        });
    // SAFETY: the chunks cover `0..len` and each was fully initialised (a panic in `fill`
    // propagates before this line, leaving the vector empty).
    unsafe { v.set_len(len) };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_row_calls_cover_every_row_once_in_the_fewest_even_calls() {
        for max in 1..=8 {
            for rows in 0..=70 {
                let calls: Vec<(usize, usize)> = even_row_calls(rows, max).collect();
                assert_eq!(calls.len(), rows.div_ceil(max), "{rows} rows by {max}");
                let mut next = 0;
                for &(r, n) in &calls {
                    assert_eq!(r, next, "{rows} rows by {max}: calls in order, no gap");
                    assert!((1..=max).contains(&n), "{rows} rows by {max}: {n}");
                    next += n;
                }
                assert_eq!(next, rows);
                let (lo, hi) = calls
                    .iter()
                    .fold((usize::MAX, 0), |(a, b), &(_, n)| (a.min(n), b.max(n)));
                assert!(
                    calls.is_empty() || hi - lo <= 1,
                    "{rows} rows by {max}: uneven"
                );
            }
        }
    }

    #[test]
    fn par_filled_starts_every_chunk_at_init_and_keeps_what_fill_wrote() {
        for (len, chunk) in [(0usize, 4usize), (1, 4), (10, 4), (12, 4), (1000, 7)] {
            let v = par_filled(len, chunk, 7u32, "test values", |i, c| {
                assert!(c.iter().all(|&x| x == 7) && c.len() <= chunk);
                if let Some(first) = c.first_mut() {
                    *first = i as u32 + 100;
                }
            })
            .unwrap();
            assert_eq!(v.len(), len);
            for (k, &x) in v.iter().enumerate() {
                let want = if k % chunk == 0 {
                    (k / chunk) as u32 + 100
                } else {
                    7
                };
                assert_eq!(x, want, "len {len}, chunk {chunk}, element {k}");
            }
        }
        assert!(matches!(
            par_filled(usize::MAX / 2, 4, 0u64, "huge values", |_, _| {}),
            Err(crate::Error::OutOfMemory(_))
        ));
    }

    #[test]
    fn out_masks_cover_the_real_outputs() {
        assert_eq!(out_masks(32), [0xffff, 0xffff]);
        assert_eq!(out_masks(16), [0xffff, 0]);
        assert_eq!(out_masks(17), [0xffff, 1]);
        assert_eq!(out_masks(3), [0b111, 0]);
        assert_eq!(out_masks(0), [0, 0]);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose16_moves_every_lane() {
        if !super::super::simd::avx512f() {
            eprintln!("SKIPPED: this CPU lacks AVX-512F");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512F was checked above; every load and store is of 16 in-bounds lanes.
        unsafe {
            let mut r: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
            transpose16(&mut r);
            let mut got = vec![0.0f32; 256];
            for (i, v) in r.iter().enumerate() {
                _mm512_storeu_ps(got.as_mut_ptr().add(16 * i), *v);
            }
            for i in 0..16 {
                for j in 0..16 {
                    assert_eq!(got[16 * j + i], m[16 * i + j], "({i}, {j})");
                }
            }
        }
    }
}
