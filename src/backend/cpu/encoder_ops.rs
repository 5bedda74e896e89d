//! Reference kernels of a bidirectional encoder (the controller's): layer norm with bias, GELU,
//! unmasked multi-head attention over a short sequence, and the mean over rows. f32 throughout;
//! the CPU backend runs them in place and the [`crate::backend::Backend`] defaults run them on
//! host copies.

use super::kernels::dot;
use crate::backend::FullAttentionShape;

/// `out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * g + b` for every `dim`-wide row of `x`
/// (population variance, two passes).
pub fn layer_norm(x: &[f32], g: &[f32], b: &[f32], out: &mut [f32], dim: usize, eps: f32) {
    if dim == 0 {
        return;
    }
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..dim {
            o[i] = (row[i] - mean) * inv * g[i] + b[i];
        }
    }
}

/// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
}

/// Unmasked multi-head attention: each of the `n_q` rows of `q` attends to all `n_k` rows of
/// `k`/`v` (all `[rows, heads * hd]`, head `h` in columns `h*hd..(h+1)*hd`), softmax scaled by
/// `1/sqrt(hd)` with the maximum subtracted; `out` is `[n_q, heads * hd]`.
pub fn attention_full(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: &FullAttentionShape,
) {
    let FullAttentionShape {
        n_q,
        n_k,
        n_heads: heads,
        head_dim: hd,
    } = *shape;
    let width = heads * hd;
    if width == 0 {
        return;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0.0f32; n_k];
    for i in 0..n_q {
        for h in 0..heads {
            let col = h * hd..(h + 1) * hd;
            let qh = &q[i * width..(i + 1) * width][col.clone()];
            for (t, s) in scores.iter_mut().enumerate() {
                *s = dot(qh, &k[t * width..(t + 1) * width][col.clone()]) * scale;
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let oh = &mut out[i * width..(i + 1) * width][col.clone()];
            oh.iter_mut().for_each(|o| *o = 0.0);
            for (t, &p) in scores.iter().enumerate() {
                let w = p / sum;
                let vr = &v[t * width..(t + 1) * width][col.clone()];
                oh.iter_mut().zip(vr).for_each(|(o, &x)| *o += w * x);
            }
        }
    }
}

/// `out[c] = mean over r of x[r, c]` for `rows` rows of width `out.len()`.
pub fn mean_rows(x: &[f32], out: &mut [f32], rows: usize) {
    let width = out.len();
    if width == 0 || rows == 0 {
        return;
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    for row in x[..rows * width].chunks_exact(width) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out.iter_mut().for_each(|o| *o /= rows as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    #[test]
    fn layer_norm_matches_the_textbook_formula_in_f64() {
        let mut rng = Rng::new(1);
        let (rows, dim) = (3, 11);
        let x = rng.vec_uniform(rows * dim, 3.0);
        let g = rng.vec_uniform(dim, 1.0);
        let b = rng.vec_uniform(dim, 1.0);
        let mut out = vec![f32::NAN; rows * dim];
        layer_norm(&x, &g, &b, &mut out, dim, 1e-5);
        for r in 0..rows {
            let row: Vec<f64> = x[r * dim..(r + 1) * dim]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let mean = row.iter().sum::<f64>() / dim as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                let want = (row[i] - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64;
                let got = out[r * dim + i] as f64;
                assert!((got - want).abs() < 1e-5, "[{r},{i}] {got} vs {want}");
            }
        }
    }

    #[test]
    fn gelu_matches_known_values() {
        // GELU(x) = x * Phi(x) is within 1e-3 of the tanh form; these are the tanh form's values.
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu(-1.0) + 0.158_808).abs() < 1e-5);
        assert!((gelu(3.0) - 2.996_363).abs() < 1e-5);
        assert!(gelu(-10.0).abs() < 1e-6);
    }

    /// Attention of every query row over every key, written out per element with f64 sums.
    fn direct_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n_q: usize,
        n_k: usize,
        heads: usize,
        hd: usize,
    ) -> Vec<f64> {
        let w = heads * hd;
        let mut out = vec![0.0f64; n_q * w];
        for i in 0..n_q {
            for h in 0..heads {
                let s: Vec<f64> = (0..n_k)
                    .map(|t| {
                        (0..hd)
                            .map(|d| q[i * w + h * hd + d] as f64 * k[t * w + h * hd + d] as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let z: f64 = s.iter().map(|x| x.exp()).sum();
                for d in 0..hd {
                    out[i * w + h * hd + d] = (0..n_k)
                        .map(|t| s[t].exp() / z * v[t * w + h * hd + d] as f64)
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn full_attention_matches_a_direct_computation_and_sees_every_key() {
        let mut rng = Rng::new(2);
        for &(n_q, n_k, heads, hd) in &[(1, 1, 1, 1), (5, 5, 3, 4), (1, 9, 2, 16), (4, 7, 1, 33)] {
            let w = heads * hd;
            let q = rng.vec_uniform(n_q * w, 1.0);
            let k = rng.vec_uniform(n_k * w, 1.0);
            let v = rng.vec_uniform(n_k * w, 1.0);
            let mut out = vec![f32::NAN; n_q * w];
            let shape = FullAttentionShape {
                n_q,
                n_k,
                n_heads: heads,
                head_dim: hd,
            };
            attention_full(&q, &k, &v, &mut out, &shape);
            let want = direct_attention(&q, &k, &v, n_q, n_k, heads, hd);
            for (a, b) in out.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-5,
                    "{n_q} {n_k} {heads} {hd}: {a} vs {b}"
                );
            }
            // Not causal: the first query row changes when only the last value row does.
            if n_k > 1 {
                let mut v2 = v.clone();
                v2[(n_k - 1) * w..].iter_mut().for_each(|x| *x += 1.0);
                let mut out2 = vec![0.0; n_q * w];
                attention_full(&q, &k, &v2, &mut out2, &shape);
                assert!(
                    (0..w).all(|d| out2[d] > out[d]),
                    "row 0 ignores the last key"
                );
            }
        }
    }

    #[test]
    fn mean_rows_averages_columns() {
        let x = [1.0, 2.0, 3.0, 5.0, -4.0, 0.5, 100.0, 100.0];
        let mut out = [f32::NAN; 2];
        mean_rows(&x, &mut out, 3);
        assert_eq!(out, [0.0, 2.5]);
        mean_rows(&x, &mut out, 1);
        assert_eq!(out, [1.0, 2.0]);
    }
}
