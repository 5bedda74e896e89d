//! Packed INT8/INT4/INT2 products on int8 activations with AVX512-VNNI (`vpdpbusd`: 64
//! u8 x s8 products summed in fours into sixteen i32 lanes per instruction).
//!
//! The input rows are quantized once per call ([`super::act_quant`]: blocks of 32, one f32
//! scale each) and permuted into the byte order of the weight rows, so the inner loop over a
//! 64-byte chunk of a weight row (16 words) is: load it, get each sub-position's codes as
//! unsigned bytes (INT8: `xor 0x80`, i.e. `q + 128`; INT4/INT2: shift and mask), `vpdpbusd`
//! them with the permuted codes, then convert the sixteen per-word integer sums to f32 and
//! multiply-add them with per-word scales `s_g * d_b` (weight group scale times activation
//! block scale). INT8's `+128` is cancelled exactly by starting each word's sum at `-128 *
//! sum xq` ([`QuantizedInput::corr`](super::act_quant::QuantizedInput)); INT4/INT2 take
//! `z_g * sum xq` (the word's code sum times its group's real zero point) off each word's
//! converted sum before scaling. The integer sums are exact, so the result is the product of
//! the dequantized weights with the dequantized activations up to f32 rounding of the scale
//! products and the float accumulation.
//!
//! **Per-word weight scales.** Any group size works: a chunk's 16 words span groups
//! `g0[c] ..` (at most 8, since a group is at least 2 words), whose FP16 scales are loaded with
//! a masked load, widened, and spread over the lanes by a per-chunk permutation
//! ([`ChunkScales`]), and so are the zero points; when every chunk lies in one group (INT8 per channel, groups that are a
//! multiple of 16 words) one broadcast scale is used.
//!
//! **Work split.** [`outputs`] computes outputs `[o0, o1)` for every quantized input row,
//! reading each weight chunk once for up to four input rows; the callers split the outputs
//! across threads.

use super::act_quant::{QuantizedInput, CHUNK};
use crate::quant::Packed;
use rayon::prelude::*;
use std::cell::Cell;

/// True when the CPU has AVX-512 F/BW/VL and VNNI (what these kernels need).
pub fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            super::simd::avx512f()
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Where each 64-byte chunk of a weight row finds its words' group scales: the first group
/// `g0[c]` of chunk `c` and, per word lane, the group's offset from it.
#[derive(Debug, Default)]
pub struct ChunkScales {
    /// First group of each chunk.
    pub g0: Vec<u32>,
    /// Per chunk, the offset of each word's group from `g0` (past the row: the last group).
    pub idx: Vec<[i32; 16]>,
    /// True when every chunk lies in one group (a broadcast scale suffices).
    pub single: bool,
}

impl ChunkScales {
    /// The table for matrix `m`.
    pub fn new<const BITS: u32>(m: &Packed<BITS>) -> Self {
        let ng = m.n_groups();
        let words = m.row_words();
        let chunks = words.div_ceil(16);
        // Words per group; one group per row covers every word.
        let wpg = if ng == 1 {
            words.max(1)
        } else {
            m.group_size() * BITS as usize / 32
        };
        let group_of = |w: usize| (w / wpg).min(ng - 1);
        let mut s = ChunkScales {
            g0: Vec::with_capacity(chunks),
            idx: Vec::with_capacity(chunks),
            single: true,
        };
        for c in 0..chunks {
            let g0 = group_of(16 * c);
            let mut idx = [0i32; 16];
            for (l, v) in idx.iter_mut().enumerate() {
                *v = (group_of(16 * c + l) - g0) as i32;
                s.single &= *v == 0;
            }
            s.g0.push(g0 as u32);
            s.idx.push(idx);
        }
        s
    }
}

/// Input rows per pass over a weight row (each chunk is loaded and unpacked once for them).
const PASS_ROWS: usize = 4;

/// Computes outputs `[o0, o1)` of `m` for every input row held by `q`:
/// `cols[(o - o0) * q.rows + i] = sum_k w[o, k] * xhat_i[k]`, where `xhat_i` is row `i`
/// dequantized from its int8 blocks.
///
/// # Safety
/// [`available`] must be true; `q` must have been filled for `m` and `cs` built for `m`.
pub unsafe fn outputs<const BITS: u32>(
    m: &Packed<BITS>,
    cs: &ChunkScales,
    q: &QuantizedInput,
    o0: usize,
    o1: usize,
    cols: &mut [f32],
) {
    let rows = q.rows;
    debug_assert!(cols.len() >= (o1 - o0) * rows);
    // Input rows outside, outputs inside: a pass's few quantized rows stay in the L1 cache
    // while the task's weight rows cycle through it (the other order streams every input row
    // from L2 once per output).
    let mut i = 0;
    while i < rows {
        let n = if i + PASS_ROWS <= rows { PASS_ROWS } else { 1 };
        for o in o0..o1 {
            let y = &mut cols[(o - o0) * rows + i..(o - o0) * rows + i + n];
            if n == PASS_ROWS {
                y.copy_from_slice(&row_dots::<BITS, PASS_ROWS>(m, cs, q, o, i));
            } else {
                y[0] = row_dots::<BITS, 1>(m, cs, q, o, i)[0];
            }
        }
        i += n;
    }
}

/// Outputs per parallel task.
const OUTS_PER_TASK: usize = 16;

thread_local! {
    /// Per-thread quantized input, taken out for the duration of one product (see
    /// `qgemv::SCRATCH` for why it is a `Cell`).
    static SCRATCH: Cell<QuantizedInput> = Cell::new(QuantizedInput::default());
}

/// `out[r, o] = sum_k w[o, k] * x[r, k]` for `rows` input rows on int8 activations, parallel
/// over outputs: [`super::qgemm_vnni::MIN_ROWS`] or more rows (prefill) through the blocked
/// product ([`super::qgemm_vnni`]), fewer through [`packed_product_unblocked`]. Returns false
/// (nothing written) when the CPU lacks VNNI.
pub fn packed_product<const BITS: u32>(
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    if rows >= super::qgemm_vnni::MIN_ROWS {
        return super::qgemm_vnni::packed_gemm(m, x, rows, out);
    }
    packed_product_unblocked(m, x, rows, out)
}

/// [`packed_product`] without the blocked product: each weight chunk unpacked once per pass
/// of up to four input rows (kept for few rows, and to compare against).
pub fn packed_product_unblocked<const BITS: u32>(
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    if !available() {
        return false;
    }
    let (n_out, n_in) = m.dims();
    let mut q = SCRATCH.take();
    q.fill(m, &x[..rows * n_in], rows);
    let cs = ChunkScales::new(m);
    {
        let (q, cs) = (&q, &cs);
        if rows == 1 {
            // A decode product: on the worker pool, like the other one-row products.
            let chunk = super::worker_pool::stream_chunk(n_out, OUTS_PER_TASK);
            super::worker_pool::for_each_chunk(&mut out[..n_out], chunk, |c, ys| {
                let o0 = c * chunk;
                // SAFETY: `available()` checked the CPU; `q` and `cs` were built for `m`.
                unsafe { outputs(m, cs, q, o0, o0 + ys.len(), ys) };
            });
        } else {
            let mut cols = vec![0.0f32; n_out * rows];
            cols.par_chunks_mut(OUTS_PER_TASK * rows)
                .enumerate()
                .for_each(|(c, ys)| {
                    let o0 = c * OUTS_PER_TASK;
                    // SAFETY: as above.
                    unsafe { outputs(m, cs, q, o0, o0 + ys.len() / rows, ys) };
                });
            for (o, col) in cols.chunks(rows).enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    out[i * n_out + o] = v;
                }
            }
        }
    }
    SCRATCH.set(q);
    true
}

/// `R` dot products of weight row `o` with input rows `i0 .. i0 + R` of `q`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn row_dots<const BITS: u32, const R: usize>(
    m: &Packed<BITS>,
    cs: &ChunkScales,
    q: &QuantizedInput,
    o: usize,
    i0: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let nsub = (8 / BITS) as usize;
    let words = m.row_words();
    let ng = m.n_groups();
    let bytes = &m.bytes()[o * words * 4..(o + 1) * words * 4];
    let scales = &m.scales()[o * ng..(o + 1) * ng];
    let chunks = q.chunks;
    let xq: [&[i8]; R] = std::array::from_fn(|i| q.xq_row(i0 + i));
    let dw: [&[f32]; R] = std::array::from_fn(|i| q.dw_row(i0 + i));
    let corr: [&[i32]; R] = std::array::from_fn(|i| q.corr_row(i0 + i));
    let xsum: [&[f32]; R] = std::array::from_fn(|i| q.xsum_row(i0 + i));
    let zeros = if BITS < 8 {
        &m.zeros()[o * ng..(o + 1) * ng]
    } else {
        &[][..]
    };
    let low = _mm512_set1_epi8(((1u32 << BITS) - 1) as u8 as i8);
    let mut acc = [_mm512_setzero_ps(); R];
    for c in 0..chunks {
        let w_left = words - 16 * c;
        let p = bytes.as_ptr().add(c * CHUNK);
        let v = if w_left >= 16 {
            _mm512_loadu_si512(p as *const _)
        } else {
            _mm512_maskz_loadu_epi32(((1u32 << w_left) - 1) as u16, p as *const i32)
        };
        // Each sub-position's codes as unsigned bytes (INT8: q + 128).
        let mut codes = [_mm512_setzero_si512(); 4];
        if BITS == 8 {
            codes[0] = _mm512_xor_si512(v, _mm512_set1_epi8(-128));
        } else {
            codes[0] = _mm512_and_si512(v, low);
            if nsub >= 2 {
                codes[1] = _mm512_and_si512(_mm512_srli_epi32::<BITS>(v), low);
            }
            if nsub == 4 {
                codes[2] = _mm512_and_si512(_mm512_srli_epi32::<4>(v), low);
                codes[3] = _mm512_and_si512(_mm512_srli_epi32::<6>(v), low);
            }
        }
        let g0 = cs.g0[c] as usize;
        // One group per row: its scale multiplies the row total once, at the end.
        let sw = if ng == 1 {
            _mm512_setzero_ps()
        } else {
            group_lanes(cs, c, scales, g0)
        };
        let zw = if BITS < 8 {
            group_lanes(cs, c, zeros, g0)
        } else {
            _mm512_setzero_ps()
        };
        for i in 0..R {
            let mut s = if BITS == 8 {
                _mm512_loadu_si512(corr[i].as_ptr().add(c * 16) as *const _)
            } else {
                _mm512_setzero_si512()
            };
            for (t, code) in codes.iter().enumerate().take(nsub) {
                let xv = _mm512_loadu_si512(xq[i].as_ptr().add((c * nsub + t) * CHUNK) as *const _);
                s = _mm512_dpbusd_epi32(s, *code, xv);
            }
            let mut f = _mm512_cvtepi32_ps(s);
            if BITS < 8 {
                let xs = _mm512_loadu_ps(xsum[i].as_ptr().add(c * 16));
                f = _mm512_fnmadd_ps(zw, xs, f);
            }
            let d = _mm512_loadu_ps(dw[i].as_ptr().add(c * 16));
            let sd = if ng == 1 { d } else { _mm512_mul_ps(sw, d) };
            acc[i] = _mm512_fmadd_ps(f, sd, acc[i]);
        }
    }
    let row_scale = if ng == 1 { h2f(scales[0]) } else { 1.0 };
    acc.map(|a| _mm512_reduce_add_ps(a) * row_scale)
}

/// The per-word values of chunk `c` from one row's per-group FP16 parameters `p` (scales or
/// zeros): a broadcast when every chunk lies in one group, else a masked load of the groups
/// from `g0` on, widened and permuted to the words.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group_lanes(
    cs: &ChunkScales,
    c: usize,
    p: &[half::f16],
    g0: usize,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    if cs.single {
        _mm512_set1_ps(h2f(p[g0]))
    } else {
        let n = (p.len() - g0).min(16);
        let mask = ((1u32 << n) - 1) as u16;
        let h = _mm256_maskz_loadu_epi16(mask, p.as_ptr().add(g0) as *const i16);
        let idx = _mm512_loadu_si512(cs.idx[c].as_ptr() as *const _);
        _mm512_permutexvar_ps(idx, _mm512_cvtph_ps(h))
    }
}

/// One FP16 value widened with F16C.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn h2f(h: half::f16) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_dots<const BITS: u32, const R: usize>(
    m: &Packed<BITS>,
    _: &ChunkScales,
    _: &QuantizedInput,
    o: usize,
    _: usize,
) -> [f32; R] {
    unreachable!(
        "VNNI is never detected off x86_64 (row {o} of {:?})",
        m.dims()
    )
}

#[cfg(test)]
#[path = "qgemv_vnni_tests.rs"]
pub(super) mod tests;
