//! The controller's building blocks over plain f32 slices: linear maps, layer norm, GELU,
//! masked multi-head attention. Each is small enough to check against a direct formula.

use super::kernels::gemm::{gemm, gemm_strided, Epilogue, GemmPath, PackedMatrix};
use super::kernels::gemm_i8::{gemm_i8_with, I8Path, PackedMatrixI8};
use crate::backend::cpu::{dot, matmul_rows};
use crate::util::rng::Rng;
use rayon::prelude::*;

/// Layer-norm epsilon used throughout the controller.
pub const LN_EPS: f32 = 1e-5;

/// A dense affine map `y = W x + b` with `W` row-major `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Weights `[out, in]`.
    pub w: Vec<f32>,
    /// Bias `[out]`.
    pub b: Vec<f32>,
    /// Output features.
    pub out: usize,
    /// Input features.
    pub inp: usize,
}

impl Linear {
    /// A seeded layer with weights uniform in `±sqrt(6 / (in + out))` (Glorot) and zero bias.
    pub fn init(rng: &mut Rng, inp: usize, out: usize) -> Self {
        let scale = (6.0 / (inp + out) as f32).sqrt();
        Linear {
            w: rng.vec_uniform(inp * out, scale),
            b: vec![0.0; out],
            out,
            inp,
        }
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.w.len() + self.b.len()
    }

    /// Applies the map to `rows` rows of `x` (`[rows, in]`), returning `[rows, out]`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0.0; rows * self.out];
        matmul_rows(rows, self.inp, self.out, x, &mut y, |o, row| {
            dot(row, &self.w[o * self.inp..(o + 1) * self.inp]) + self.b[o]
        });
        y
    }

    /// Applies the map to one vector.
    pub fn forward_vec(&self, x: &[f32]) -> Vec<f32> {
        (0..self.out)
            .map(|o| dot(x, &self.w[o * self.inp..(o + 1) * self.inp]) + self.b[o])
            .collect()
    }
}

/// A [`Linear`] packed once for the fast CPU product: the inference form of a layer whose
/// weights no longer change. Pack again after training.
///
/// Two forms: f32 ([`crate::controller::kernels::gemm`], results equal to [`Linear::forward`] up to
/// summation order) and INT8 ([`crate::controller::kernels::gemm_i8`]: weights quantised per output
/// row at pack time, activations per row on every call, exact integer sums dequantised with
/// the bias and epilogue fused).
#[derive(Clone, Debug)]
pub struct PackedLinear {
    m: PackedWeights,
}

/// The packed weights of a [`PackedLinear`].
#[derive(Clone, Debug)]
enum PackedWeights {
    F32(PackedMatrix),
    Int8(PackedMatrixI8, I8Path),
}

impl Linear {
    /// Packs the weights and bias in f32 for [`PackedLinear::forward_into`].
    pub fn pack(&self) -> PackedLinear {
        PackedLinear {
            m: PackedWeights::F32(PackedMatrix::pack(
                &self.w,
                Some(&self.b),
                self.out,
                self.inp,
            )),
        }
    }

    /// Quantises the weights to INT8 (bias kept in f32) for [`PackedLinear::forward_into`],
    /// run with the integer kernel `path` (the portable one where the CPU lacks it).
    pub fn pack_int8(&self, path: I8Path) -> PackedLinear {
        let path = if path.available() {
            path
        } else {
            I8Path::Portable
        };
        PackedLinear {
            m: PackedWeights::Int8(
                PackedMatrixI8::pack(&self.w, Some(&self.b), self.out, self.inp),
                path,
            ),
        }
    }
}

impl PackedLinear {
    /// Output features.
    pub fn out(&self) -> usize {
        match &self.m {
            PackedWeights::F32(m) => m.n(),
            PackedWeights::Int8(m, _) => m.n(),
        }
    }

    /// Input features.
    pub fn inp(&self) -> usize {
        match &self.m {
            PackedWeights::F32(m) => m.k(),
            PackedWeights::Int8(m, _) => m.k(),
        }
    }

    /// The integer kernel this map runs, or `None` for the f32 form.
    pub fn int8_path(&self) -> Option<I8Path> {
        match &self.m {
            PackedWeights::F32(_) => None,
            PackedWeights::Int8(_, p) => Some(*p),
        }
    }

    /// `y = x W^T + b` for `rows` rows of `x` (`[rows, in]`), resizing `y` to `[rows, out]`
    /// (no allocation once `y` has grown to that size).
    pub fn forward_into(&self, x: &[f32], rows: usize, y: &mut Vec<f32>) {
        self.forward_map_into(x, rows, y, Epilogue::None);
    }

    /// [`PackedLinear::forward_into`] with `epi` applied to each output (fused into the
    /// product, so it runs on every thread).
    pub fn forward_map_into(&self, x: &[f32], rows: usize, y: &mut Vec<f32>, epi: Epilogue) {
        y.resize(rows * self.out(), 0.0);
        let x = &x[..rows * self.inp()];
        match &self.m {
            PackedWeights::F32(m) => gemm(x, rows, m, y, epi),
            PackedWeights::Int8(m, path) => gemm_i8_with(*path, x, rows, m, y, epi),
        }
    }
}

/// Layer normalisation with a learned gain and bias.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// Gain `[width]`.
    pub g: Vec<f32>,
    /// Bias `[width]`.
    pub b: Vec<f32>,
}

impl LayerNorm {
    /// Unit gain, zero bias.
    pub fn new(width: usize) -> Self {
        LayerNorm {
            g: vec![1.0; width],
            b: vec![0.0; width],
        }
    }

    /// Normalises each row of `x` (`[rows, width]`) to zero mean and unit variance, then
    /// applies gain and bias.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = Vec::new();
        self.forward_into(x, &mut y);
        y
    }

    /// [`LayerNorm::forward`] into `y`, resized to `x.len()` (reused across calls).
    pub fn forward_into(&self, x: &[f32], y: &mut Vec<f32>) {
        let w = self.g.len();
        y.resize(x.len(), 0.0);
        for (row, out) in x.chunks(w).zip(y.chunks_mut(w)) {
            let mean = lane_sum(row, |v| v) / w as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / w as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(&self.g).zip(&self.b) {
                *o = (v - mean) * inv * g + b;
            }
        }
    }
}

/// `sum f(x)` over `xs` in 16 interleaved partial sums (a fixed order, so the same bits on
/// every build, and vectorisable where a single running sum is one long dependency chain).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let chunks = xs.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// GELU, tanh approximation: the CPU backend's encoder kernel, one formula for both.
pub use crate::backend::cpu::encoder_ops::gelu;

/// [`gelu`] over a slice, written so that it vectorises: `0.5 x (1 + tanh u)` is computed as
/// the equal `x / (1 + exp(-2u))` with a branch-free exponential (within a few f32 ulps of
/// [`gelu`]; tested). Used by the packed inference path.
pub fn gelu_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::kernels::gemm::gemm_path() {
        // SAFETY: the path is only chosen when the CPU has these features.
        GemmPath::Avx512 => return unsafe { gelu_avx512(xs) },
        // SAFETY: as above.
        GemmPath::Avx2Fma => return unsafe { gelu_avx2(xs) },
        GemmPath::Portable => {}
    }
    gelu_body(xs)
}

/// [`gelu_body`] compiled for AVX-512 (same arithmetic, wider vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(xs: &mut [f32]) {
    gelu_body(xs)
}

/// [`gelu_body`] compiled for AVX2 (same arithmetic, wider vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(xs: &mut [f32]) {
    gelu_body(xs)
}

/// The arithmetic of [`gelu_slice`].
#[inline(always)]
fn gelu_body(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        let v = *x;
        let u = 0.797_884_6 * (v + 0.044_715 * v * v * v);
        *x = v / (1.0 + exp_approx(-2.0 * u));
    }
}

/// `e^x` without branches or tables, relative error about 2e-7 for `x` in `[-87, 88]` (inputs
/// outside are clamped): `x = n ln2 + r` with `|r| <= ln2/2`, a degree-7 Taylor polynomial
/// for `e^r`, and `2^n` built in the exponent bits.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest through the 1.5 * 2^23 trick (vectorises without SSE4.1).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    // `t`'s low mantissa bits hold n (integer arithmetic below, no float-to-int cast).
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

/// Logistic sigmoid.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Softmax in place (max-subtracted).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Multi-head scaled dot-product attention without a mask over the `n_k` keys given:
/// `q` is `[n_q, heads*hd]`, `k` and `v` are `[n_k, heads*hd]`; returns `[n_q, heads*hd]`.
/// (Padded positions are never passed in, which is the same as masking them.)
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_k: usize,
    heads: usize,
) -> Vec<f32> {
    let mut out = Vec::new();
    attention_into(q, k, v, n_q, n_k, heads, &mut out, &mut Vec::new());
    out
}

/// [`attention`] into `out` (resized to `[n_q, heads*hd]`), with `scores` as scratch; neither
/// allocates once grown.
#[allow(clippy::too_many_arguments)]
pub fn attention_into(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_k: usize,
    heads: usize,
    out: &mut Vec<f32>,
    scores: &mut Vec<f32>,
) {
    let width = q.len() / n_q.max(1);
    let hd = width / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.clear();
    out.resize(n_q * width, 0.0);
    let rows = AttnRows {
        k,
        v,
        n_k,
        heads,
        hd,
        scale,
    };
    let task = |(i, o): (usize, &mut [f32]), scores: &mut Vec<f32>| {
        scores.resize(n_k, 0.0);
        rows.row_dispatch(&q[i * width..(i + 1) * width], o, scores);
    };
    if n_q > 1 && n_q * n_k * width >= ATTN_PAR_MIN {
        out.par_chunks_mut(width.max(1))
            .enumerate()
            .for_each_init(Vec::new, |scores, item| task(item, scores));
    } else {
        out.chunks_mut(width.max(1))
            .enumerate()
            .for_each(|item| task(item, scores));
    }
}

/// Buffers of [`attention_packed`], reused across calls.
#[derive(Debug, Default)]
pub struct AttentionScratch {
    keys: PackedMatrix,
    values: PackedMatrix,
    scores: Vec<f32>,
}

/// [`attention`] through the packed matrix product, for the inference path: per head, the
/// scores `Q_h K_h^T` and the outputs `P V_h` are two small products (keys and values packed
/// per head), and the softmax uses a vectorisable exponential. Agrees with [`attention`] to
/// f32 rounding (tested).
#[allow(clippy::too_many_arguments)]
pub fn attention_packed(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_k: usize,
    heads: usize,
    out: &mut Vec<f32>,
    s: &mut AttentionScratch,
) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::gemm::gemm_path() == GemmPath::Avx512 {
        // SAFETY: the path is only chosen when the CPU has AVX-512F.
        return unsafe { attention_packed_avx512(q, k, v, n_q, n_k, heads, out, s) };
    }
    attention_packed_body(q, k, v, n_q, n_k, heads, out, s)
}

/// [`attention_packed_body`] compiled for AVX-512 (the softmax and repacking loops vectorise
/// wider; the same arithmetic, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_packed_avx512(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_k: usize,
    heads: usize,
    out: &mut Vec<f32>,
    s: &mut AttentionScratch,
) {
    attention_packed_body(q, k, v, n_q, n_k, heads, out, s)
}

/// The work of [`attention_packed`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_packed_body(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    n_k: usize,
    heads: usize,
    out: &mut Vec<f32>,
    s: &mut AttentionScratch,
) {
    let width = q.len() / n_q.max(1);
    let hd = width / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.clear();
    out.resize(n_q * width, 0.0);
    s.scores.resize(n_q * n_k, 0.0);
    for h in 0..heads {
        let off = h * hd;
        // Scores: W[t, j] = K[t, off + j], so y[i, t] = q_i . k_t.
        s.keys.repack_with(n_k, hd, |t, j| k[t * width + off + j]);
        gemm_strided(
            &q[off..],
            width,
            n_q,
            &s.keys,
            &mut s.scores,
            n_k,
            Epilogue::None,
        );
        for row in s.scores.chunks_exact_mut(n_k) {
            row.iter_mut().for_each(|x| *x *= scale);
            softmax_approx(row);
        }
        // Outputs: W[j, t] = V[t, off + j], so y[i, j] = sum_t p_it v_tj.
        s.values.repack_with(hd, n_k, |j, t| v[t * width + off + j]);
        gemm_strided(
            &s.scores,
            n_k,
            n_q,
            &s.values,
            &mut out[off..],
            width,
            Epilogue::None,
        );
    }
}

/// [`softmax`] with the vectorisable [`exp_approx`] (a few ulps from it).
fn softmax_approx(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    x.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let sum: f32 = x.iter().sum();
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Attention work (`n_q * n_k * width`) from which query rows run in parallel.
const ATTN_PAR_MIN: usize = 1 << 16;

/// What every query row of one attention call shares.
struct AttnRows<'a> {
    k: &'a [f32],
    v: &'a [f32],
    n_k: usize,
    heads: usize,
    hd: usize,
    scale: f32,
}

impl AttnRows<'_> {
    /// [`AttnRows::row`] compiled for the widest vectors the CPU has. The arithmetic (and so
    /// every result bit) is the same on every path: `dot` fixes its summation order and the
    /// value update is elementwise.
    fn row_dispatch(&self, q: &[f32], o: &mut [f32], scores: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match super::kernels::gemm::gemm_path() {
            // SAFETY: the path is only chosen when the CPU has these features.
            GemmPath::Avx512 => return unsafe { self.row_avx512(q, o, scores) },
            // SAFETY: as above.
            GemmPath::Avx2Fma => return unsafe { self.row_avx2(q, o, scores) },
            GemmPath::Portable => {}
        }
        self.row(q, o, scores)
    }

    /// [`AttnRows::row`] compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn row_avx512(&self, q: &[f32], o: &mut [f32], scores: &mut [f32]) {
        self.row(q, o, scores)
    }

    /// [`AttnRows::row`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(&self, q: &[f32], o: &mut [f32], scores: &mut [f32]) {
        self.row(q, o, scores)
    }

    /// Every head of one query row `q` into its output row `o`.
    #[inline(always)]
    fn row(&self, q: &[f32], o: &mut [f32], scores: &mut [f32]) {
        let (hd, width) = (self.hd, self.hd * self.heads);
        for h in 0..self.heads {
            let qh = &q[h * hd..(h + 1) * hd];
            for (t, s) in scores.iter_mut().enumerate().take(self.n_k) {
                *s = dot(qh, &self.k[t * width + h * hd..t * width + (h + 1) * hd]) * self.scale;
            }
            softmax(scores);
            let oh = &mut o[h * hd..(h + 1) * hd];
            for (t, &p) in scores.iter().enumerate() {
                let vr = &self.v[t * width + h * hd..t * width + (h + 1) * hd];
                oh.iter_mut().zip(vr).for_each(|(a, &b)| *a += p * b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_the_sum_formula() {
        let mut rng = Rng::new(3);
        let mut l = Linear::init(&mut rng, 5, 3);
        l.b = vec![0.5, -1.0, 2.0];
        let x = rng.vec_uniform(10, 1.0);
        let y = l.forward(&x, 2);
        for r in 0..2 {
            for o in 0..3 {
                let want: f32 = (0..5).map(|i| l.w[o * 5 + i] * x[r * 5 + i]).sum::<f32>() + l.b[o];
                assert!((y[r * 3 + o] - want).abs() < 1e-5);
            }
        }
        assert_eq!(l.forward_vec(&x[5..]), y[3..].to_vec());
        assert_eq!(l.param_count(), 18);
    }

    #[test]
    fn gelu_slice_matches_gelu_and_exp_approx_matches_exp() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).collect();
        let mut fast = xs.clone();
        gelu_slice(&mut fast);
        for (&x, &g) in xs.iter().zip(&fast) {
            let want = gelu(x);
            assert!(
                (g - want).abs() <= 2e-6 * (1.0 + want.abs()),
                "gelu({x}) {g} vs {want}"
            );
        }
        let mut big = [-200.0f32, -30.0, 30.0, 200.0];
        gelu_slice(&mut big);
        // Far negative inputs give (nearly) zero, far positive ones the input itself.
        assert!(big[0].abs() < 1e-30 && big[1].abs() < 1e-30);
        assert!(big[2] == 30.0 && big[3] == 200.0);
        for i in -870..=880 {
            let x = i as f32 * 0.1;
            let (a, e) = (exp_approx(x), x.exp());
            assert!(((a - e) / e).abs() < 1e-6, "exp({x}) {a} vs {e}");
        }
    }

    #[test]
    fn packed_attention_matches_the_reference() {
        let mut rng = Rng::new(21);
        let mut s = AttentionScratch::default();
        let mut out = Vec::new();
        for &(n_q, n_k, heads, hd) in &[(1, 1, 1, 1), (5, 7, 3, 6), (32, 32, 8, 64), (2, 40, 2, 33)]
        {
            let w = heads * hd;
            let q = rng.vec_uniform(n_q * w, 1.0);
            let (k, v) = (rng.vec_uniform(n_k * w, 1.0), rng.vec_uniform(n_k * w, 1.0));
            attention_packed(&q, &k, &v, n_q, n_k, heads, &mut out, &mut s);
            let want = attention(&q, &k, &v, n_q, n_k, heads);
            assert_eq!(out.len(), want.len());
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{n_q} {n_k} {heads} {hd}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn layernorm_gives_zero_mean_unit_variance() {
        let ln = LayerNorm::new(6);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0];
        let y = ln.forward(&x);
        for row in y.chunks(6) {
            let mean: f32 = row.iter().sum::<f32>() / 6.0;
            let var: f32 = row.iter().map(|v| v * v).sum::<f32>() / 6.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn attention_of_one_key_returns_its_value_and_weights_sum_to_one() {
        let q = [0.3, -0.2, 1.0, 0.5];
        let k = [1.0, 2.0, 3.0, 4.0];
        let v = [5.0, 6.0, 7.0, 8.0];
        assert_eq!(attention(&q, &k, &v, 1, 1, 2), v.to_vec());
        // Two keys, one head of width 1: the weights are the softmax of q*k.
        let out = attention(&[1.0], &[0.0, 1.0], &[10.0, 20.0], 1, 2, 1);
        let p1 = 1.0f32.exp() / (1.0 + 1.0f32.exp());
        assert!((out[0] - (10.0 * (1.0 - p1) + 20.0 * p1)).abs() < 1e-4);
        assert!((gelu(0.0)).abs() < 1e-7 && (gelu(3.0) - 2.9964).abs() < 1e-3);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
