//! Blocked multi-row product on packed INT8/INT4/INT2 weights with int8 activations
//! (prefill), AVX512-VNNI: `out[r, o] = sum_k w[o, k] * xhat_r[k]`, where `xhat_r` is input
//! row `r` quantized to int8 blocks of [`QBLOCK`] exactly as [`super::qgemv_vnni`] does.
//!
//! [`super::qgemv_vnni`] unpacks every weight chunk again for each pass of four input rows and
//! pays a float epilogue per 64-byte chunk per row; here each weight code is unpacked once per
//! call and the epilogue is paid once per 32 K positions:
//!
//! - **Quads and segments.** A "quad" is the 4 codes that one byte lane of `vpdpbusd` sums:
//!   sub-position `t` of the four bytes of one packed word (so K positions
//!   `w * 32/BITS + code_of_slot(nsub * b + t)`, b = 0..4; the same fixed permutation for
//!   every output row). A "segment" is `step` = 32 K positions (16 for INT8 groups that are
//!   not a multiple of 32), i.e. `step / 4` quads, lying in one activation block and one
//!   weight group; its integer sums are exact.
//! - **Input** (`GemmInput`, once per call): per row, the int8 codes of every quad as one
//!   dword (broadcast operand), per segment the block scale `d` and (INT8) `-128 * sum xq`,
//!   which cancels the `+128` that makes signed INT8 codes unsigned; per group (INT4/INT2)
//!   `xg = sum d_b xq_k`, for the zero-point term `s z xg`.
//! - **Work split.** One rayon task per panel of `PANEL_OUTS` outputs.
//! - **Panel.** Per K block of `KQ` quads the task unpacks its 32 weight rows into a
//!   thread-local panel of u8 codes (line `2q + h`: dword lane `i` = the quad's four codes of
//!   output `16h + i`; INT8 as `q + 128`): 16 rows x 16 words through the register transpose,
//!   then a shift and mask per sub-position. 32 KiB; outputs past `n_out` are zero.
//! - **Micro-kernel.** `MR` input rows x 32 outputs: per quad, two panel loads and one
//!   broadcast dword per row feed `2 * MR` `vpdpbusd` into integer segment sums; per segment
//!   each sum is converted and multiply-added with its row's block scale into a group
//!   accumulator; at a group's end (or the K block's) that is multiply-added with the
//!   outputs' group scales, and (INT4/INT2) `s z xg` is taken off. Later K blocks add to the
//!   tile already in `out`.
//!
//! The result is the dequantized weights times the dequantized activations up to f32
//! rounding of the per-segment and per-group sums.

use super::act_quant::{quantize_row, QBLOCK};
#[cfg(target_arch = "x86_64")]
use super::gemm_tile::{out_masks, transpose16, Line};
use super::gemm_tile::{SharedOut, PANEL_OUTS};
use super::qgemv::code_of_slot;
use crate::quant::Packed;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
#[cfg(target_arch = "x86_64")]
use std::cell::Cell;

/// Fewest input rows [`super::qgemv_vnni::packed_product`] sends here (see
/// `gemm_tile::BLOCKED_MIN_ROWS`: fewer rows stay bit-identical to one-row products).
pub const MIN_ROWS: usize = super::gemm_tile::BLOCKED_MIN_ROWS;

/// Input rows per micro-kernel call (three sets of 8 accumulators in the 32 zmm registers).
const MR: usize = 4;

/// Quads per panel K block (`KQ` x 2 lines of 64 bytes = 32 KiB).
const KQ: usize = 256;

/// How one packed matrix's rows are cut into quads, segments and groups.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// K positions per packed word (`32 / BITS`).
    per_word: usize,
    /// Quads per packed word (`8 / BITS`).
    nsub: usize,
    /// K positions per segment (32, or 16 for INT8 groups not a multiple of 32).
    step: usize,
    /// Quads per segment.
    qps: usize,
    /// Segments per row (the last may run past `n_in`; its extra codes meet zero inputs).
    segs: usize,
    /// Weight groups per row.
    ng: usize,
    /// K positions per group.
    group: usize,
}

impl Geometry {
    fn new<const BITS: u32>(m: &Packed<BITS>) -> Self {
        let (_, n_in) = m.dims();
        let ng = m.n_groups();
        let group = m.group_size();
        let per_word = (32 / BITS) as usize;
        let step = if ng == 1 || group % 32 == 0 { 32 } else { 16 };
        Geometry {
            per_word,
            nsub: (8 / BITS) as usize,
            step,
            qps: step / 4,
            segs: n_in.div_ceil(per_word).div_ceil(step / per_word),
            ng,
            group,
        }
    }

    /// The weight group segment `s` lies in.
    fn group_of(&self, s: usize) -> usize {
        if self.ng == 1 {
            0
        } else {
            (s * self.step / self.group).min(self.ng - 1)
        }
    }

    /// True when segment `s` is the last of its group.
    fn ends_group(&self, s: usize) -> bool {
        s + 1 == self.segs || (self.ng > 1 && ((s + 1) * self.step) % self.group == 0)
    }
}

/// Input rows quantized for one packed matrix (module docs): `[rows][quads]` code dwords,
/// `[rows][segs]` block scales and (INT8) corrections, `[rows][ng]` (INT4/INT2) group sums.
#[derive(Debug, Default)]
struct GemmInput {
    rows: usize,
    quads: usize,
    segs: usize,
    ng: usize,
    xa: Vec<i32>,
    d: Vec<f32>,
    corr: Vec<i32>,
    xg: Vec<f32>,
    row_q: Vec<i8>,
    row_d: Vec<f32>,
}

impl GemmInput {
    /// Quantizes `rows` rows of `x` (`[rows, in]`) for `m`, reusing the buffers.
    fn fill<const BITS: u32>(&mut self, m: &Packed<BITS>, geo: &Geometry, x: &[f32], rows: usize) {
        let (_, n_in) = m.dims();
        let Geometry {
            per_word,
            nsub,
            step,
            segs,
            ng,
            group,
            ..
        } = *geo;
        let quads = segs * geo.qps;
        (self.rows, self.quads, self.segs, self.ng) = (rows, quads, segs, ng);
        // K offset inside its word of byte `b`'s sub-position `t`.
        let offs: Vec<[usize; 4]> = (0..nsub)
            .map(|t| std::array::from_fn(|b| code_of_slot(BITS, nsub * b + t)))
            .collect();
        self.xa.clear();
        self.xa.resize(rows * quads, 0);
        self.d.clear();
        self.d.resize(rows * segs, 0.0);
        self.corr.clear();
        self.xg.clear();
        if BITS == 8 {
            self.corr.resize(rows * segs, 0);
        } else {
            self.xg.resize(rows * ng, 0.0);
        }
        let (mut q, mut d) = (
            std::mem::take(&mut self.row_q),
            std::mem::take(&mut self.row_d),
        );
        for r in 0..rows {
            quantize_row(&x[r * n_in..(r + 1) * n_in], &mut q, &mut d);
            for (j, a) in self.xa[r * quads..(r + 1) * quads].iter_mut().enumerate() {
                let base = (j / nsub) * per_word;
                let bytes = offs[j % nsub].map(|o| q.get(base + o).map_or(0, |&v| v as u8));
                *a = i32::from_le_bytes(bytes);
            }
            for s in 0..segs {
                let (k0, k1) = (s * step, ((s + 1) * step).min(n_in));
                self.d[r * segs + s] = d[k0 / QBLOCK];
                if BITS == 8 {
                    let sum: i32 = q[k0..k1].iter().map(|&v| v as i32).sum();
                    self.corr[r * segs + s] = -128 * sum;
                }
            }
            if BITS < 8 {
                // INT4/INT2 groups are whole activation blocks.
                for (b, qb) in q.chunks(QBLOCK).enumerate() {
                    let sum: i32 = qb.iter().map(|&v| v as i32).sum();
                    self.xg[r * ng + (b * QBLOCK / group).min(ng - 1)] += d[b] * sum as f32;
                }
            }
        }
        (self.row_q, self.row_d) = (q, d);
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Per-thread quantized input, taken out for one product (a product started on this
    /// thread by work stealing meanwhile finds it empty and allocates its own).
    static INPUT: Cell<GemmInput> = Cell::new(GemmInput::default());
    /// Per-thread panel and per-group output scales (`s`, and `s z` for INT4/INT2), taken
    /// out for one task (no rayon work runs while they are out).
    static PANEL: Cell<(Vec<Line>, Vec<Line>, Vec<Line>)> =
        const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `out[r, o] = sum_k w[o, k] * xhat_r[k]` for `rows` input rows on int8 activations,
/// parallel over panels of outputs. Returns false (nothing written) when the CPU lacks
/// AVX512-VNNI.
///
/// # Panics
/// When `x` or `out` is shorter than its shape (the backend checks lengths before calling).
pub fn packed_gemm<const BITS: u32>(
    m: &Packed<BITS>,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
) -> bool {
    if !super::qgemv_vnni::available() {
        return false;
    }
    let (n_out, n_in) = m.dims();
    assert!(
        x.len() >= rows * n_in && out.len() >= rows * n_out,
        "packed_gemm: slices shorter than [{n_out}, {n_in}] x {rows}"
    );
    if rows == 0 || n_out == 0 {
        return true;
    }
    run(m, x, rows, out);
    true
}

#[cfg(target_arch = "x86_64")]
fn run<const BITS: u32>(m: &Packed<BITS>, x: &[f32], rows: usize, out: &mut [f32]) {
    let (n_out, n_in) = m.dims();
    let geo = Geometry::new(m);
    let mut input = INPUT.take();
    input.fill(m, &geo, &x[..rows * n_in], rows);
    let dst = SharedOut::new(out);
    {
        let (input, geo) = (&input, &geo);
        (0..n_out.div_ceil(PANEL_OUTS))
            .into_par_iter()
            .for_each(|b| panel_task(m, geo, input, dst, b));
    }
    INPUT.set(input);
}

#[cfg(not(target_arch = "x86_64"))]
fn run<const BITS: u32>(m: &Packed<BITS>, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("VNNI is never detected off x86_64 ({:?})", m.dims())
}

/// Outputs `32 b .. 32 b + 32` of every input row: the group scales of those outputs, then
/// per K block one panel and every block of `MR` input rows over it.
#[cfg(target_arch = "x86_64")]
fn panel_task<const BITS: u32>(
    m: &Packed<BITS>,
    geo: &Geometry,
    input: &GemmInput,
    dst: SharedOut,
    b: usize,
) {
    let (n_out, _) = m.dims();
    let (mut panel, mut sc, mut sz) = PANEL.take();
    let o0 = b * PANEL_OUTS;
    let n = PANEL_OUTS.min(n_out - o0);
    let ng = geo.ng;
    // sc[2g + h] lane i: scale of output o0 + 16h + i in group g; sz: scale times zero.
    sc.clear();
    sc.resize(2 * ng, Line::default());
    sz.clear();
    sz.resize(if BITS < 8 { 2 * ng } else { 0 }, Line::default());
    for j in 0..n {
        for g in 0..ng {
            let s = m.scales()[(o0 + j) * ng + g].to_f32();
            sc[2 * g + j / 16].0[j % 16] = s.to_bits();
            if BITS < 8 {
                let z = m.zeros()[(o0 + j) * ng + g].to_f32();
                sz[2 * g + j / 16].0[j % 16] = (s * z).to_bits();
            }
        }
    }
    panel.resize(2 * KQ, Line::default());
    let masks = out_masks(n);
    let seg_per_block = KQ / geo.qps;
    for s0 in (0..geo.segs).step_by(seg_per_block) {
        let s1 = (s0 + seg_per_block).min(geo.segs);
        // SAFETY: the caller checked AVX512-VNNI (with F/BW/VL); the panel holds 2 * KQ
        // lines, `input` was filled for `m`, and this task alone writes output columns
        // `o0 .. o0 + n` (masked) of rows below `input.rows`.
        unsafe {
            pack(m, geo, o0, n, s0 * geo.qps, (s1 - s0) * geo.qps, &mut panel);
            let k = Kblock {
                panel: panel.as_ptr(),
                s0,
                s1,
                sc: sc.as_ptr(),
                sz: sz.as_ptr(),
                masks,
                ldo: n_out,
            };
            let mut r = 0;
            while r < input.rows {
                let mr = MR.min(input.rows - r);
                let op = dst.get().wrapping_add(r * n_out + o0);
                match mr {
                    4 => tile::<BITS, 4>(&k, geo, input, r, op),
                    3 => tile::<BITS, 3>(&k, geo, input, r, op),
                    2 => tile::<BITS, 2>(&k, geo, input, r, op),
                    _ => tile::<BITS, 1>(&k, geo, input, r, op),
                }
                r += mr;
            }
        }
    }
    PANEL.set((panel, sc, sz));
}

/// Unpacks the codes of weight rows `o0 .. o0 + n` (n <= 32) for quads `q0 .. q0 + nq` (whole
/// words) into `panel` (module docs; zero codes past `n` and past the row's words).
///
/// # Safety
/// AVX-512F; `panel.len() >= 2 * nq`; `q0` and `nq` are multiples of the quads per word.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack<const BITS: u32>(
    m: &Packed<BITS>,
    geo: &Geometry,
    o0: usize,
    n: usize,
    q0: usize,
    nq: usize,
    panel: &mut [Line],
) {
    debug_assert!(panel.len() >= 2 * nq && q0 % geo.nsub == 0 && nq % geo.nsub == 0);
    let nsub = geo.nsub;
    let row_words = m.row_words();
    let words = m.words().as_ptr();
    let (w0, w1) = (q0 / nsub, (q0 + nq) / nsub);
    let low = _mm512_set1_epi8(((1u32 << BITS) - 1) as u8 as i8);
    let lines = panel.as_mut_ptr() as *mut __m512i;
    for h in 0..2 {
        let rows_h = n.saturating_sub(16 * h).min(16);
        let mut w = w0;
        while w < w1 {
            let cnt = (w1 - w).min(16);
            let avail = row_words.saturating_sub(w).min(cnt);
            let lm = if avail >= 16 {
                0xffff
            } else {
                (1u16 << avail) - 1
            };
            let mut v = [_mm512_setzero_ps(); 16];
            for (i, vi) in v.iter_mut().enumerate().take(rows_h) {
                // Masked: lanes past the row's words are neither read nor faulted on.
                let src = words.wrapping_add((o0 + 16 * h + i) * row_words + w) as *const i32;
                *vi = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(lm, src));
            }
            transpose16(&mut v);
            for (c, vc) in v.iter().enumerate().take(cnt) {
                let word = _mm512_castps_si512(*vc);
                let line = |t: usize| lines.add(((w + c) * nsub + t - q0) * 2 + h);
                if BITS == 8 {
                    _mm512_store_si512(line(0), _mm512_xor_si512(word, _mm512_set1_epi8(-128)));
                } else {
                    _mm512_store_si512(line(0), _mm512_and_si512(word, low));
                    let s1 = _mm512_srli_epi32::<BITS>(word);
                    _mm512_store_si512(line(1), _mm512_and_si512(s1, low));
                    if nsub == 4 {
                        let s2 = _mm512_srli_epi32::<4>(word);
                        _mm512_store_si512(line(2), _mm512_and_si512(s2, low));
                        let s3 = _mm512_srli_epi32::<6>(word);
                        _mm512_store_si512(line(3), _mm512_and_si512(s3, low));
                    }
                }
            }
            w += cnt;
        }
    }
}

/// One K block's panel and the output tile's parameters, shared by its micro-kernel calls.
#[cfg(target_arch = "x86_64")]
struct Kblock {
    /// The unpacked codes of segments `s0 .. s1`.
    panel: *const Line,
    s0: usize,
    s1: usize,
    /// Per group, two lines of output scales (and, INT4/INT2, scale times zero).
    sc: *const Line,
    sz: *const Line,
    /// Lanes of the two output vectors that are real outputs.
    masks: [u16; 2],
    /// Output row stride.
    ldo: usize,
}

/// `R` input rows (`r0 ..`) x 32 outputs over one K block (module docs), added to `out`
/// (row `r0`, first output of the panel) except in the first K block; lanes outside the
/// masks are neither read nor written.
///
/// # Safety
/// AVX512-VNNI with F/BW; `k` describes a packed panel and scale lines of this matrix and
/// output block, `input` was filled for it, rows `r0 .. r0 + R` exist, and the masked lanes
/// of `out`'s rows `0 .. R` are writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const BITS: u32, const R: usize>(
    k: &Kblock,
    geo: &Geometry,
    input: &GemmInput,
    r0: usize,
    out: *mut f32,
) {
    let (quads, segs, ng) = (input.quads, input.segs, input.ng);
    let xa = input.xa.as_ptr().add(r0 * quads);
    let d = input.d.as_ptr().add(r0 * segs);
    let [m0, m1] = k.masks;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if k.s0 > 0 {
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_maskz_loadu_ps(m0, out.wrapping_add(r * k.ldo));
            a[1] = _mm512_maskz_loadu_ps(m1, out.wrapping_add(r * k.ldo + 16));
        }
    }
    let mut accg = [[_mm512_setzero_ps(); 2]; R];
    let panel = k.panel as *const __m512i;
    let q0 = k.s0 * geo.qps;
    for s in k.s0..k.s1 {
        let mut isum = [[_mm512_setzero_si512(); 2]; R];
        if BITS == 8 {
            for (r, v) in isum.iter_mut().enumerate() {
                let c = _mm512_set1_epi32(input.corr[(r0 + r) * segs + s]);
                *v = [c, c];
            }
        }
        for q in s * geo.qps..(s + 1) * geo.qps {
            let w0 = _mm512_load_si512(panel.add((q - q0) * 2));
            let w1 = _mm512_load_si512(panel.add((q - q0) * 2 + 1));
            for (r, v) in isum.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(*xa.add(r * quads + q));
                v[0] = _mm512_dpbusd_epi32(v[0], w0, a);
                v[1] = _mm512_dpbusd_epi32(v[1], w1, a);
            }
        }
        for (r, (g, v)) in accg.iter_mut().zip(&isum).enumerate() {
            let dv = _mm512_set1_ps(*d.add(r * segs + s));
            g[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v[0]), dv, g[0]);
            g[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v[1]), dv, g[1]);
        }
        let ends = geo.ends_group(s);
        if ends || s + 1 == k.s1 {
            let g = geo.group_of(s);
            let sc = k.sc.add(2 * g) as *const f32;
            let (s0, s1) = (_mm512_load_ps(sc), _mm512_load_ps(sc.add(16)));
            for (a, ag) in acc.iter_mut().zip(accg.iter_mut()) {
                a[0] = _mm512_fmadd_ps(ag[0], s0, a[0]);
                a[1] = _mm512_fmadd_ps(ag[1], s1, a[1]);
                *ag = [_mm512_setzero_ps(); 2];
            }
            if BITS < 8 && ends {
                let sz = k.sz.add(2 * g) as *const f32;
                let (z0, z1) = (_mm512_load_ps(sz), _mm512_load_ps(sz.add(16)));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xg = _mm512_set1_ps(input.xg[(r0 + r) * ng + g]);
                    a[0] = _mm512_fnmadd_ps(z0, xg, a[0]);
                    a[1] = _mm512_fnmadd_ps(z1, xg, a[1]);
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_mask_storeu_ps(out.wrapping_add(r * k.ldo), m0, a[0]);
        _mm512_mask_storeu_ps(out.wrapping_add(r * k.ldo + 16), m1, a[1]);
    }
}

#[cfg(test)]
#[path = "qgemm_vnni_tests.rs"]
pub(super) mod tests;
