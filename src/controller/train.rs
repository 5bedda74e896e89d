//! Training of the controller: first-order MAML across domains with a Gumbel-softmax relaxation
//! of the discrete precision choice and the loss
//! `w_cost * cost + w_quality * max(0, threshold - quality)` (plus regression of the complexity
//! and of the pruning/sparsity heads to their label-derived targets).
//!
//! Gradients are written by hand for the trainable part, the `Head` (attention pooling,
//! complexity MLP, policy heads); the projection and encoder stay at their seeded
//! initialisation (frozen random features), which keeps training light enough to live in the
//! default build and to run in CI. Because training and inference call the same
//! `Head::forward_traced`, the runtime forward is the training forward by construction; a
//! finite-difference test checks the gradients.

use super::encoder::{Encoded, Head};
use super::layers::{softmax, Linear};
use crate::util::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One training example: a task's encoding and its labels.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The frozen encoder's output for the task.
    pub enc: Encoded,
    /// Measured quality (fidelity to FP16) per precision, in [`crate::quant::Precision::ALL`] order.
    pub quality: [f32; 4],
    /// Relative cost per precision (FP16 = 1).
    pub cost: [f32; 4],
    /// Ground-truth complexity in [0, 1].
    pub complexity: f32,
    /// Target compression headroom in [0, 1] (1 - bits of the cheapest adequate variant / 16).
    pub headroom: f32,
    /// Domain index (the MAML task distribution).
    pub domain: usize,
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Meta-iterations.
    pub iterations: usize,
    /// Tasks per support batch and per query batch.
    pub batch: usize,
    /// Inner-loop (adaptation) learning rate.
    pub inner_lr: f32,
    /// Inner-loop SGD steps.
    pub inner_steps: usize,
    /// Outer (Adam) learning rate.
    pub outer_lr: f32,
    /// Weight of the expected cost.
    pub w_cost: f32,
    /// Weight of the quality shortfall.
    pub w_quality: f32,
    /// Quality threshold of the shortfall term.
    pub threshold: f32,
    /// Gumbel-softmax temperature.
    pub tau: f32,
    /// Weight of the complexity regression term.
    pub w_complexity: f32,
    /// Seed of batch sampling and Gumbel noise.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            iterations: 8700,
            batch: 16,
            inner_lr: 0.01,
            inner_steps: 1,
            outer_lr: 1e-3,
            w_cost: 0.3,
            w_quality: 0.7,
            threshold: 0.95,
            tau: 1.0,
            w_complexity: 1.0,
            seed: 42,
        }
    }
}

/// The loss of one sample and, when `grad` is given, its gradient accumulated into it.
/// `gumbel` is the Gumbel noise added to the precision logits (zeros for a deterministic loss).
pub fn sample_loss(
    head: &Head,
    s: &Sample,
    heads: usize,
    cfg: &TrainConfig,
    gumbel: &[f32; 4],
    grad: Option<&mut Head>,
) -> f32 {
    let (out, tr) = head.forward_traced(&s.enc, heads);
    // Policy: relaxed one-hot over precisions.
    let mut y: Vec<f32> = (0..4)
        .map(|p| (out.precision_logits[p] + gumbel[p]) / cfg.tau)
        .collect();
    softmax(&mut y);
    let q: f32 = (0..4).map(|p| y[p] * s.quality[p]).sum();
    let c: f32 = (0..4).map(|p| y[p] * s.cost[p]).sum();
    let short = (cfg.threshold - q).max(0.0);
    let cx = out.complexity - s.complexity;
    let pr = out.pruning - 0.5 * s.headroom;
    let sp = out.sparsity - s.headroom;
    let loss = cfg.w_cost * c
        + cfg.w_quality * short
        + cfg.w_complexity * cx * cx
        + 0.1 * (pr * pr + sp * sp);
    let Some(g) = grad else { return loss };

    // d loss / d y, then through the softmax and the temperature.
    let active = if short > 0.0 { 1.0 } else { 0.0 };
    let dy: Vec<f32> = (0..4)
        .map(|p| cfg.w_cost * s.cost[p] - cfg.w_quality * active * s.quality[p])
        .collect();
    let ydy: f32 = (0..4).map(|p| y[p] * dy[p]).sum();
    let dz: Vec<f32> = (0..4).map(|p| y[p] * (dy[p] - ydy) / cfg.tau).collect();
    let mut dh = head.precision.backward_input(&dz);
    Linear::accumulate_grad(&mut g.precision, &tr.h, &dz);

    let sig_back = |v: f32, d: f32| d * v * (1.0 - v);
    let dpr = [sig_back(out.pruning, 0.2 * pr)];
    let dsp = [sig_back(out.sparsity, 0.2 * sp)];
    for (lin, glin, d) in [
        (&head.pruning, &mut g.pruning, &dpr),
        (&head.sparsity, &mut g.sparsity, &dsp),
    ] {
        Linear::accumulate_grad(glin, &tr.h, d);
        dh.iter_mut()
            .zip(lin.backward_input(d))
            .for_each(|(a, b)| *a += b);
    }

    // Complexity MLP.
    let da2 = [sig_back(out.complexity, 2.0 * cfg.w_complexity * cx)];
    Linear::accumulate_grad(&mut g.mlp2, &tr.r, &da2);
    let dr = head.mlp2.backward_input(&da2);
    let da1: Vec<f32> = dr
        .iter()
        .zip(&tr.a1)
        .map(|(&d, &a)| if a > 0.0 { d } else { 0.0 })
        .collect();
    Linear::accumulate_grad(&mut g.mlp1, &tr.h, &da1);
    dh.iter_mut()
        .zip(head.mlp1.backward_input(&da1))
        .for_each(|(a, b)| *a += b);

    // Attention pooling.
    Linear::accumulate_grad(&mut g.po, &tr.att, &dh);
    let datt = head.po.backward_input(&dh);
    pool_backward(head, g, s, &tr.q, &tr.k, &tr.v, &datt, heads);
    loss
}

/// Backward pass of the pooling attention: one query (from the pooled vector) over the tokens.
#[allow(clippy::too_many_arguments)]
fn pool_backward(
    head: &Head,
    g: &mut Head,
    s: &Sample,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    heads: usize,
) {
    let n = s.enc.n;
    let width = q.len();
    let hd = width / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let d = s.enc.pooled.len();
    let mut dq = vec![0.0; width];
    let mut dk = vec![0.0; n * width];
    let mut dv = vec![0.0; n * width];
    for h in 0..heads {
        let r = h * hd..(h + 1) * hd;
        let mut a: Vec<f32> = (0..n)
            .map(|t| {
                let kt = &k[t * width..(t + 1) * width];
                q[r.clone()]
                    .iter()
                    .zip(&kt[r.clone()])
                    .map(|(x, y)| x * y)
                    .sum::<f32>()
                    * scale
            })
            .collect();
        softmax(&mut a);
        let dout_h = &dout[r.clone()];
        let da: Vec<f32> = (0..n)
            .map(|t| {
                let vt = &v[t * width + h * hd..t * width + (h + 1) * hd];
                dout_h.iter().zip(vt).map(|(x, y)| x * y).sum()
            })
            .collect();
        let ada: f32 = a.iter().zip(&da).map(|(x, y)| x * y).sum();
        for t in 0..n {
            let ds = a[t] * (da[t] - ada) * scale;
            let off = t * width + h * hd;
            for j in 0..hd {
                dv[off + j] += a[t] * dout_h[j];
                dq[h * hd + j] += ds * k[off + j];
                dk[off + j] += ds * q[h * hd + j];
            }
        }
    }
    let _ = head;
    Linear::accumulate_grad(&mut g.pq, &s.enc.pooled, &dq);
    for t in 0..n {
        let x = &s.enc.tokens[t * d..(t + 1) * d];
        Linear::accumulate_grad(&mut g.pk, x, &dk[t * width..(t + 1) * width]);
        Linear::accumulate_grad(&mut g.pv, x, &dv[t * width..(t + 1) * width]);
    }
}

fn gumbel_noise(rng: &mut Rng) -> [f32; 4] {
    let mut g = [0.0; 4];
    for v in &mut g {
        let u = rng.next_f32().clamp(1e-7, 1.0 - 1e-7);
        *v = -(-u.ln()).ln();
    }
    g
}

/// Mean loss and gradient of a batch (with fresh Gumbel noise per sample).
fn batch_grad(
    head: &Head,
    batch: &[&Sample],
    heads: usize,
    cfg: &TrainConfig,
    rng: &mut Rng,
) -> (f32, Head) {
    let mut g = head.zeros_like();
    let mut loss = 0.0;
    for s in batch {
        let noise = gumbel_noise(rng);
        loss += sample_loss(head, s, heads, cfg, &noise, Some(&mut g));
    }
    let inv = 1.0 / batch.len() as f32;
    for l in g.linears_mut() {
        l.w.iter_mut().chain(l.b.iter_mut()).for_each(|v| *v *= inv);
    }
    (loss * inv, g)
}

fn sgd(head: &mut Head, g: &Head, lr: f32) {
    for (p, (_, gl)) in head.linears_mut().into_iter().zip(g.linears()) {
        p.w.iter_mut().zip(&gl.w).for_each(|(a, b)| *a -= lr * b);
        p.b.iter_mut().zip(&gl.b).for_each(|(a, b)| *a -= lr * b);
    }
}

/// Adam state for a [`Head`].
struct Adam {
    m: Head,
    v: Head,
    t: i32,
}

impl Adam {
    fn step(&mut self, head: &mut Head, g: &Head, lr: f32) {
        self.t += 1;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let params = head.linears_mut();
        let ms = self.m.linears_mut();
        let vs = self.v.linears_mut();
        for (((p, m), v), (_, gl)) in params.into_iter().zip(ms).zip(vs).zip(g.linears()) {
            let upd = |p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
                for i in 0..p.len() {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                }
            };
            upd(&mut p.w, &mut m.w, &mut v.w, &gl.w);
            upd(&mut p.b, &mut m.b, &mut v.b, &gl.b);
        }
    }
}

/// What training produced: the loss curve (iteration, mean query loss over the last stretch).
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// `(iteration, mean loss)` points, one per `log_every` iterations.
    pub curve: Vec<(usize, f32)>,
}

/// Trains `head` on `samples` with first-order MAML across their domains. `progress` is called
/// with `(iteration, mean recent loss)` every `log_every` iterations.
pub fn train(
    head: &mut Head,
    samples: &[Sample],
    heads: usize,
    cfg: &TrainConfig,
    log_every: usize,
    mut progress: impl FnMut(usize, f32),
) -> Result<TrainReport> {
    if samples.is_empty() {
        return Err(Error::invalid("no training samples"));
    }
    if cfg.batch == 0 || cfg.tau <= 0.0 {
        return Err(Error::invalid("batch must be non-zero and tau positive"));
    }
    let n_dom = samples.iter().map(|s| s.domain).max().unwrap_or(0) + 1;
    let by_domain: Vec<Vec<&Sample>> = (0..n_dom)
        .map(|d| samples.iter().filter(|s| s.domain == d).collect())
        .filter(|v: &Vec<&Sample>| !v.is_empty())
        .collect();
    let mut rng = Rng::new(cfg.seed);
    let mut adam = Adam {
        m: head.zeros_like(),
        v: head.zeros_like(),
        t: 0,
    };
    let log_every = log_every.max(1);
    let mut report = TrainReport::default();
    let (mut acc, mut cnt) = (0.0f32, 0usize);
    for it in 0..cfg.iterations {
        let dom = &by_domain[rng.below(by_domain.len() as u64) as usize];
        let draw = |rng: &mut Rng| -> Vec<&Sample> {
            (0..cfg.batch)
                .map(|_| dom[rng.below(dom.len() as u64) as usize])
                .collect()
        };
        let support = draw(&mut rng);
        let query = draw(&mut rng);
        let mut fast = head.clone();
        for _ in 0..cfg.inner_steps {
            let (_, g) = batch_grad(&fast, &support, heads, cfg, &mut rng);
            sgd(&mut fast, &g, cfg.inner_lr);
        }
        let (loss, g) = batch_grad(&fast, &query, heads, cfg, &mut rng);
        if !loss.is_finite() {
            return Err(Error::Internal(format!(
                "training diverged at iteration {it}"
            )));
        }
        adam.step(head, &g, cfg.outer_lr);
        acc += loss;
        cnt += 1;
        if (it + 1) % log_every == 0 || it + 1 == cfg.iterations {
            let mean = acc / cnt as f32;
            report.curve.push((it + 1, mean));
            progress(it + 1, mean);
            acc = 0.0;
            cnt = 0;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{Controller, ControllerConfig};

    /// Samples whose complexity is a function of their first embedding coordinate.
    fn samples(c: &Controller, n: usize, seed: u64) -> Vec<Sample> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let len = 4 + (i % 5);
                let emb = rng.vec_uniform(len * c.config.embed_dim, 1.0);
                let hard = (emb[0] + 1.0) / 2.0;
                let enc = c.encode(&emb).unwrap();
                let q4 = 1.0 - 0.3 * hard;
                Sample {
                    enc,
                    quality: [1.0, 1.0 - 0.02 * hard, q4, 0.5 - 0.4 * hard],
                    cost: [1.0, 0.55, 0.3, 0.18],
                    complexity: hard,
                    headroom: if q4 >= 0.95 { 0.75 } else { 0.5 },
                    domain: i % 3,
                }
            })
            .collect()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut cfg = ControllerConfig::small(8);
        cfg.d_model = 8;
        cfg.ffn_dim = 8;
        cfg.pool_dim = 8;
        cfg.mlp_hidden = 4;
        cfg.n_layers = 1;
        let c = Controller::new(cfg.clone(), 3).unwrap();
        let s = &samples(&c, 1, 5)[0];
        let tc = TrainConfig {
            threshold: 1.1,
            ..Default::default()
        };
        let noise = [0.1, -0.2, 0.3, 0.0];
        let mut g = c.head.zeros_like();
        sample_loss(&c.head, s, cfg.pool_heads, &tc, &noise, Some(&mut g));
        let eps = 1e-2;
        let mut checked = 0;
        for li in 0..9 {
            for idx in [0usize, 3, 7] {
                let mut hp = c.head.clone();
                let mut hm = c.head.clone();
                if idx >= hp.linears_mut()[li].w.len() {
                    continue;
                }
                hp.linears_mut()[li].w[idx] += eps;
                hm.linears_mut()[li].w[idx] -= eps;
                let lp = sample_loss(&hp, s, cfg.pool_heads, &tc, &noise, None);
                let lm = sample_loss(&hm, s, cfg.pool_heads, &tc, &noise, None);
                let fd = (lp - lm) / (2.0 * eps);
                let an = g.linears()[li].1.w[idx];
                assert!(
                    (fd - an).abs() < 2e-3 + 0.05 * an.abs(),
                    "layer {} weight {idx}: numeric {fd}, analytic {an}",
                    g.linears()[li].0
                );
                checked += 1;
            }
        }
        assert!(checked >= 20);
    }

    #[test]
    fn loss_falls_on_a_fixed_seed_and_training_is_reproducible() {
        let c = Controller::new(ControllerConfig::small(8), 1).unwrap();
        let data = samples(&c, 60, 2);
        let tc = TrainConfig {
            iterations: 300,
            batch: 8,
            outer_lr: 3e-3,
            ..Default::default()
        };
        let mut h1 = c.head.clone();
        let r1 = train(&mut h1, &data, 4, &tc, 50, |_, _| {}).unwrap();
        let mut h2 = c.head.clone();
        let r2 = train(&mut h2, &data, 4, &tc, 50, |_, _| {}).unwrap();
        assert_eq!(r1.curve, r2.curve);
        assert_eq!(h1, h2);
        let first = r1.curve[0].1;
        let last = r1.curve.last().unwrap().1;
        assert!(last < 0.8 * first, "loss {first} -> {last}");
        assert!(train(&mut h1, &[], 4, &tc, 50, |_, _| {}).is_err());
    }
}
