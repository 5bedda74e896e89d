//! Scalar reference kernels of the CPU backend (f32 throughout).

use crate::model::RopeStyle;
use std::cell::Cell;

/// Dot product with eight independent f32 accumulators (vectorises well, deterministic).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// RMSNorm of one row: `out = w * x / sqrt(mean(x^2) + eps)`.
pub fn rmsnorm(x: &[f32], w: &[f32], out: &mut [f32], eps: f32) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((o, &xv), &wv) in out.iter_mut().zip(x).zip(w) {
        *o = wv * (inv * xv);
    }
}

/// `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The RoPE angle of pair `i` of a head of width `head_dim` at `pos`.
#[inline]
pub fn rope_angle(pos: usize, i: usize, head_dim: usize, theta: f32) -> f32 {
    let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
    pos as f32 * freq
}

/// Rotates one head in place by the `(cos, sin)` of each of its pairs.
pub fn rope_head(head: &mut [f32], cs: &[(f32, f32)], style: RopeStyle) {
    let half = head.len() / 2;
    for (i, &(c, s)) in cs.iter().enumerate().take(half) {
        let (j, k) = match style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::RotateHalf => (i, i + half),
        };
        let (x0, x1) = (head[j], head[k]);
        head[j] = x0 * c - x1 * s;
        head[k] = x0 * s + x1 * c;
    }
}

/// The `(cos, sin)` of every RoPE pair at `rows` consecutive positions from `pos0`, for heads
/// of width `head_dim`, `[rows][head_dim / 2]`: computed once per call for every head and kept
/// while the positions stay the same (every layer of a forward pass ropes the same positions,
/// Q and K alike), so the angles are not recomputed per head and layer.
#[derive(Debug, Default)]
struct RopeTable {
    /// `(pos0, rows, head_dim, theta bits)` the table holds.
    key: Option<(usize, usize, usize, u32)>,
    cs: Vec<(f32, f32)>,
}

impl RopeTable {
    fn get(&mut self, pos0: usize, rows: usize, head_dim: usize, theta: f32) -> &[(f32, f32)] {
        let key = (pos0, rows, head_dim, theta.to_bits());
        if self.key != Some(key) {
            let half = head_dim / 2;
            self.cs.clear();
            self.cs.extend((0..rows).flat_map(|r| {
                (0..half).map(move |i| {
                    let (s, c) = rope_angle(pos0 + r, i, head_dim, theta).sin_cos();
                    (c, s)
                })
            }));
            self.key = Some(key);
        }
        &self.cs
    }
}

thread_local! {
    /// This thread's last RoPE table (a `Cell`: taken out for one call and put back).
    static ROPE: Cell<RopeTable> = Cell::new(RopeTable::default());
}

/// Rotates `rows` rows of `n_heads` heads of width `head_dim` (row `r` at position `pos0 + r`).
pub fn rope_rows(
    x: &mut [f32],
    rows: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    theta: f32,
    style: RopeStyle,
) {
    let mut table = ROPE.take();
    let half = head_dim / 2;
    let cs = table.get(pos0, rows, head_dim, theta);
    for (r, row) in x
        .chunks_exact_mut(n_heads * head_dim)
        .take(rows)
        .enumerate()
    {
        for head in row.chunks_exact_mut(head_dim) {
            rope_head(head, &cs[r * half..(r + 1) * half], style);
        }
    }
    ROPE.set(table);
}

thread_local! {
    /// Per-thread attention scores, taken out for one head and put back after (a `Cell`, so
    /// no borrow can outlive the call even if rayon work is ever added inside it).
    static SCORES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Attention of one query head over `len` cached positions: two-pass softmax, f32.
/// `kv_off` selects the KV head's columns inside rows of width `kv_dim`.
pub fn attend_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    len: usize,
    kv_dim: usize,
    kv_off: usize,
    out: &mut [f32],
) {
    let hd = q.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = SCORES.take();
    scores.clear();
    scores.extend(
        (0..len).map(|t| dot(q, &k[t * kv_dim + kv_off..t * kv_dim + kv_off + hd]) * scale),
    );
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    for (t, &p) in scores.iter().enumerate() {
        let w = p / sum;
        let vr = &v[t * kv_dim + kv_off..t * kv_dim + kv_off + hd];
        out.iter_mut().zip(vr).for_each(|(o, &x)| *o += w * x);
    }
    SCORES.set(scores);
}

/// Index of the largest element (the first on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    // Two passes that vectorise (the maximum in sixteen lanes, then its first position) on a
    // classifier row; a row holding a NaN takes the one-pass rule below, which defines the
    // result.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut nan = false;
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
            nan |= v.is_nan();
        }
    }
    for &v in tail {
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
        nan |= v.is_nan();
    }
    if !nan {
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if let Some(i) = x.iter().position(|&v| v == max) {
            return i;
        }
    }
    argmax_scalar(x)
}

/// [`argmax`] in one scalar pass (what it falls back to when the row holds a NaN).
pub fn argmax_scalar(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}
