//! Training of the whole controller (projection, encoder and head, end to end) with the candle
//! autodiff crate: first-order MAML across domains, a Gumbel-softmax relaxation of the discrete
//! precision choice, and the loss `w_cost * cost + w_quality * max(0, threshold - quality)` plus
//! regression of the complexity and of the pruning/sparsity heads to their label-derived
//! targets. The candle network ([`super::train_model`]) mirrors the runtime controller; trained
//! weights are copied back into a [`Controller`] (and so into its safetensors file) by name,
//! and tests check that both forwards agree.
//!
//! The configuration types live in every build; [`train`] needs the `train` cargo feature.

#[cfg(feature = "train")]
use super::train_model::{Batch, TrainModel, Weights};
#[cfg(feature = "train")]
use super::Controller;
use crate::quant::PerPrecision;
#[cfg(feature = "train")]
use crate::util::rng::Rng;
#[cfg(feature = "train")]
use crate::{Error, Result};
#[cfg(feature = "train")]
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// One training example: a task's gathered embeddings and its labels.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The task's first (at most k) token embeddings from the frozen table, `[n, embed_dim]`
    /// (see [`super::Controller::gather`]).
    pub emb: Vec<f32>,
    /// Measured quality (fidelity to FP16) per precision.
    pub quality: PerPrecision<f32>,
    /// Relative cost per precision (FP16 = 1).
    pub cost: PerPrecision<f32>,
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

/// What training produced: the loss curve (iteration, mean query loss over the last stretch).
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// `(iteration, mean loss)` points, one per `log_every` iterations.
    pub curve: Vec<(usize, f32)>,
}

/// Mean loss of `batch` under weights `w`, with fresh Gumbel noise per task from `rng`.
#[cfg(feature = "train")]
pub fn batch_loss(
    model: &TrainModel,
    w: &Weights,
    batch: &[&Sample],
    cfg: &TrainConfig,
    rng: &mut Rng,
) -> Result<Tensor> {
    let dev = candle_core::Device::Cpu;
    let rows = batch.len();
    let embs: Vec<&[f32]> = batch.iter().map(|s| s.emb.as_slice()).collect();
    let out = model.forward(w, &Batch::new(&model.config, &embs)?)?;
    let mut noise = Vec::with_capacity(rows * 4);
    for _ in 0..rows * 4 {
        let u = rng.next_f32().clamp(1e-7, 1.0 - 1e-7);
        noise.push(-(-u.ln()).ln());
    }
    let per_row = |f: &dyn Fn(&Sample) -> PerPrecision<f32>| -> Result<Tensor> {
        let v: Vec<f32> = batch.iter().flat_map(|s| f(s).into_array()).collect();
        Ok(Tensor::from_vec(v, (rows, 4), &dev)?)
    };
    let scalar = |f: &dyn Fn(&Sample) -> f32| -> Result<Tensor> {
        let v: Vec<f32> = batch.iter().map(|s| f(s)).collect();
        Ok(Tensor::from_vec(v, rows, &dev)?)
    };
    let noisy = (&out.logits + Tensor::from_vec(noise, (rows, 4), &dev)?)?;
    let y = super::train_model::softmax_last(&noisy.affine(1.0 / cfg.tau as f64, 0.0)?)?;
    let quality = (&y * per_row(&|s| s.quality)?)?.sum(1)?;
    let cost = (&y * per_row(&|s| s.cost)?)?.sum(1)?;
    let short = quality.affine(-1.0, cfg.threshold as f64)?.relu()?;
    let cx = (&out.complexity - scalar(&|s| s.complexity)?)?;
    let pr = (&out.pruning - scalar(&|s| 0.5 * s.headroom)?)?;
    let sp = (&out.sparsity - scalar(&|s| s.headroom)?)?;
    let loss = ((cost * cfg.w_cost as f64)?
        + (short * cfg.w_quality as f64)?
        + (cx.sqr()? * cfg.w_complexity as f64)?
        + ((pr.sqr()? + sp.sqr()?)? * 0.1)?)?;
    Ok(loss.mean_all()?)
}

/// Adam over the model's variables.
#[cfg(feature = "train")]
struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

#[cfg(feature = "train")]
impl Adam {
    fn new(vars: &[Var]) -> Result<Self> {
        let zeros = vars
            .iter()
            .map(|v| Ok(v.as_tensor().zeros_like()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Adam {
            m: zeros.clone(),
            v: zeros,
            t: 0,
        })
    }

    fn step(&mut self, vars: &[Var], grads: &[Tensor], lr: f32) -> Result<()> {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            self.m[i] = (self.m[i].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            self.v[i] = (self.v[i].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let denom = self.v[i].affine(1.0 / c2, 0.0)?.sqrt()?.affine(1.0, eps)?;
            let upd = self.m[i].affine(lr as f64 / c1, 0.0)?.div(&denom)?;
            var.set(&(var.as_tensor() - upd)?)?;
        }
        Ok(())
    }
}

/// The gradient of `loss` for each of `w`'s tensors (zeros for one the loss does not reach).
#[cfg(feature = "train")]
fn gradients(loss: &Tensor, w: &Weights) -> Result<Vec<Tensor>> {
    let grads = loss.backward()?;
    w.tensors()
        .iter()
        .map(|t| match grads.get(t) {
            Some(g) => Ok(g.clone()),
            None => Ok(t.zeros_like()?),
        })
        .collect()
}

/// Trains every weight of `controller` on `samples` with first-order MAML across their
/// domains: per iteration one domain, a support batch for `inner_steps` SGD steps of
/// adaptation, and a query batch whose gradient at the adapted weights updates the shared
/// weights by Adam. `progress` is called with `(iteration, mean recent query loss)` every
/// `log_every` iterations. Seeded by `cfg.seed`: the same inputs give the same weights.
#[cfg(feature = "train")]
pub fn train(
    controller: &mut Controller,
    samples: &[Sample],
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
    let (k, e) = (controller.config.k, controller.config.embed_dim);
    if let Some((i, s)) = samples
        .iter()
        .enumerate()
        .find(|(_, s)| s.emb.is_empty() || s.emb.len() % e != 0 || s.emb.len() > k * e)
    {
        return Err(Error::invalid(format!(
            "training sample {i}: controller input of {} values is not 1..={k} rows of {e}",
            s.emb.len()
        )));
    }
    let n_dom = samples.iter().map(|s| s.domain).max().unwrap_or(0) + 1;
    let by_domain: Vec<Vec<&Sample>> = (0..n_dom)
        .map(|d| samples.iter().filter(|s| s.domain == d).collect())
        .filter(|v: &Vec<&Sample>| !v.is_empty())
        .collect();
    let model = TrainModel::from_controller(controller)?;
    let shared = model.weights();
    let mut adam = Adam::new(model.vars())?;
    let mut rng = Rng::new(cfg.seed);
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
        let mut fast = shared.clone();
        for _ in 0..cfg.inner_steps {
            let loss = batch_loss(&model, &fast, &support, cfg, &mut rng)?;
            let grads = gradients(&loss, &fast)?;
            let adapted = fast
                .tensors()
                .iter()
                .zip(&grads)
                .map(|(t, g)| {
                    let next = (t - g.affine(cfg.inner_lr as f64, 0.0)?)?.detach();
                    Ok(Var::from_tensor(&next)?.into_inner())
                })
                .collect::<Result<Vec<_>>>()?;
            fast = fast.with_tensors(adapted)?;
        }
        let loss = batch_loss(&model, &fast, &query, cfg, &mut rng)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(Error::Internal(format!(
                "training diverged at iteration {it}"
            )));
        }
        let grads = gradients(&loss, &fast)?;
        adam.step(model.vars(), &grads, cfg.outer_lr)?;
        acc += value;
        cnt += 1;
        if (it + 1) % log_every == 0 || it + 1 == cfg.iterations {
            let mean = acc / cnt as f32;
            report.curve.push((it + 1, mean));
            progress(it + 1, mean);
            acc = 0.0;
            cnt = 0;
        }
    }
    *controller = model.to_controller()?;
    Ok(report)
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;
    use crate::controller::train_model::tests::{max_diff, tiny};
    use crate::controller::ControllerConfig;

    /// Samples whose complexity is a function of their first embedding coordinate.
    fn samples(cfg: &ControllerConfig, n: usize, seed: u64) -> Vec<Sample> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let len = 1 + (i % cfg.k);
                let emb = rng.vec_uniform(len * cfg.embed_dim, 1.0);
                let hard = (emb[0] + 1.0) / 2.0;
                let q4 = 1.0 - 0.3 * hard;
                Sample {
                    emb,
                    quality: [1.0, 1.0 - 0.02 * hard, q4, 0.5 - 0.4 * hard].into(),
                    cost: [1.0, 0.55, 0.3, 0.18].into(),
                    complexity: hard,
                    headroom: if q4 >= 0.95 { 0.75 } else { 0.5 },
                    domain: i % 3,
                }
            })
            .collect()
    }

    #[test]
    fn loss_falls_training_is_reproducible_and_the_forwards_still_agree() {
        let cfg = tiny();
        let c0 = Controller::new(cfg.clone(), 1).unwrap();
        let data = samples(&cfg, 60, 2);
        let tc = TrainConfig {
            iterations: 120,
            batch: 8,
            outer_lr: 3e-3,
            ..Default::default()
        };
        let mut c1 = c0.clone();
        let r1 = train(&mut c1, &data, &tc, 20, |_, _| {}).unwrap();
        let mut c2 = c0.clone();
        let r2 = train(&mut c2, &data, &tc, 20, |_, _| {}).unwrap();
        assert_eq!(r1.curve, r2.curve);
        assert_eq!(c1, c2);
        // Every part moved, the encoder and the projection included.
        assert_ne!(c1.proj, c0.proj);
        assert_ne!(c1.layers[0].wq, c0.layers[0].wq);
        assert_ne!(c1.layers[1].ln2, c0.layers[1].ln2);
        assert_ne!(c1.head.mlp1, c0.head.mlp1);
        let first = r1.curve[0].1;
        let last = r1.curve.last().unwrap().1;
        assert!(last < 0.8 * first, "loss {first} -> {last}");
        // The exported (trained) weights give the runtime the candle forward's outputs.
        let d = max_diff(&c1, 12);
        assert!(d < 1e-5, "trained: max abs diff {d}");
        let other = TrainConfig {
            seed: 43,
            ..tc.clone()
        };
        let mut c3 = c0.clone();
        train(&mut c3, &data, &other, 20, |_, _| {}).unwrap();
        assert_ne!(c3, c1);
    }

    #[test]
    fn bad_training_inputs_are_errors() {
        let cfg = tiny();
        let mut c = Controller::new(cfg.clone(), 1).unwrap();
        let tc = TrainConfig::default();
        assert!(train(&mut c, &[], &tc, 10, |_, _| {}).is_err());
        let mut data = samples(&cfg, 4, 1);
        let zero = TrainConfig {
            batch: 0,
            ..tc.clone()
        };
        assert!(train(&mut c, &data, &zero, 10, |_, _| {}).is_err());
        data[0].emb.pop();
        let short = TrainConfig {
            iterations: 5,
            batch: 4,
            ..tc
        };
        let e = train(&mut c, &data, &short, 10, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("controller input"), "{e}");
    }
}
