//! The controller's building blocks over plain f32 slices: linear maps, layer norm, GELU,
//! masked multi-head attention. Each is small enough to check against a direct formula.

use crate::backend::cpu::{dot, matmul_rows};
use crate::util::rng::Rng;

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
        let w = self.g.len();
        let mut y = vec![0.0; x.len()];
        for (row, out) in x.chunks(w).zip(y.chunks_mut(w)) {
            let mean = row.iter().sum::<f32>() / w as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for i in 0..w {
                out[i] = (row[i] - mean) * inv * self.g[i] + self.b[i];
            }
        }
        y
    }
}

/// GELU, tanh approximation.
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
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
    let width = q.len() / n_q.max(1);
    let hd = width / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0; n_q * width];
    let mut scores = vec![0.0; n_k];
    for i in 0..n_q {
        for h in 0..heads {
            let qh = &q[i * width + h * hd..i * width + (h + 1) * hd];
            for (t, s) in scores.iter_mut().enumerate() {
                *s = dot(qh, &k[t * width + h * hd..t * width + (h + 1) * hd]) * scale;
            }
            softmax(&mut scores);
            let o = &mut out[i * width + h * hd..i * width + (h + 1) * hd];
            for (t, &p) in scores.iter().enumerate() {
                let vr = &v[t * width + h * hd..t * width + (h + 1) * hd];
                o.iter_mut().zip(vr).for_each(|(a, &b)| *a += p * b);
            }
        }
    }
    out
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
