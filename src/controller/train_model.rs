//! The controller written a second time in candle, for training: the same projection,
//! sinusoidal positions, pre-norm encoder layers (layer norm, masked multi-head attention,
//! GELU feed-forward), final norm, masked mean pooling, pooling attention, complexity MLP and
//! policy heads as [`Controller`], over a padded batch so that autodiff can train all of it.
//!
//! Parameters carry the names of the safetensors file ([`super::io::named`]), so moving
//! weights between the two is a copy by name. Padded positions get an additive `-1e9` in every
//! attention score and weight zero in the mean, which is what leaving them out (as the runtime
//! does) computes.

use super::io::{from_named, named};
use super::layers::LN_EPS;
use super::{Controller, ControllerConfig};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(format!("candle: {e}"))
    }
}

/// Additive attention bias of a padded key.
const MASKED: f32 = -1e9;

/// A set of named tensors in the order of [`named`]: the trainable variables, or (during
/// the MAML inner loop) adapted copies of them.
#[derive(Clone)]
pub struct Weights {
    names: Vec<String>,
    index: HashMap<String, usize>,
    tensors: Vec<Tensor>,
}

impl Weights {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::Internal(format!("training weights lack {name}")))
    }

    /// Every tensor, in order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The same names over other tensors (same count and order).
    pub fn with_tensors(&self, tensors: Vec<Tensor>) -> Result<Self> {
        if tensors.len() != self.tensors.len() {
            return Err(Error::Internal(format!(
                "{} tensors for {} weights",
                tensors.len(),
                self.tensors.len()
            )));
        }
        Ok(Weights {
            names: self.names.clone(),
            index: self.index.clone(),
            tensors,
        })
    }
}

/// The trainable controller: its sizes and one candle variable per named tensor.
pub struct TrainModel {
    /// Sizes (the runtime controller's).
    pub config: ControllerConfig,
    names: Vec<String>,
    vars: Vec<Var>,
    positions: Tensor,
}

impl TrainModel {
    /// Variables holding a copy of `c`'s weights.
    pub fn from_controller(c: &Controller) -> Result<Self> {
        let dev = Device::Cpu;
        let mut names = Vec::new();
        let mut vars = Vec::new();
        for (name, shape, values) in named(c) {
            vars.push(Var::from_vec(values, shape, &dev)?);
            names.push(name);
        }
        let cfg = &c.config;
        let mut pos = vec![0f32; cfg.k * cfg.d_model];
        for (t, row) in pos.chunks_mut(cfg.d_model).enumerate() {
            for (i, v) in row.iter_mut().enumerate() {
                let freq = 1.0 / 10000f32.powf((2 * (i / 2)) as f32 / cfg.d_model as f32);
                let a = t as f32 * freq;
                *v = if i % 2 == 0 { a.sin() } else { a.cos() };
            }
        }
        Ok(TrainModel {
            config: cfg.clone(),
            names,
            vars,
            positions: Tensor::from_vec(pos, (cfg.k, cfg.d_model), &dev)?,
        })
    }

    /// The variables.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The current weights (sharing the variables, so gradients reach them).
    pub fn weights(&self) -> Weights {
        Weights {
            names: self.names.clone(),
            index: self
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            tensors: self.vars.iter().map(|v| v.as_tensor().clone()).collect(),
        }
    }

    /// Copies the trained weights into a runtime [`Controller`].
    pub fn to_controller(&self) -> Result<Controller> {
        let mut values = HashMap::new();
        for (n, v) in self.names.iter().zip(&self.vars) {
            values.insert(n.clone(), v.flatten_all()?.to_vec1::<f32>()?);
        }
        from_named(self.config.clone(), values)
    }

    /// The forward pass of `w` over `batch`.
    pub fn forward(&self, w: &Weights, batch: &Batch) -> Result<Outputs> {
        let c = &self.config;
        let (b, k, d) = (batch.rows, c.k, c.d_model);
        let x = linear(w, "proj", &batch.emb.reshape((b * k, c.embed_dim))?)?;
        let mut x = x.reshape((b, k, d))?.broadcast_add(&self.positions)?;
        for i in 0..c.n_layers {
            let p = |n: &str| format!("layers.{i}.{n}");
            let h = layer_norm(w, &p("ln1"), &x)?.reshape((b * k, d))?;
            let heads = |name: &str| -> Result<Tensor> {
                Ok(linear(w, &p(name), &h)?
                    .reshape((b, k, c.n_heads, d / c.n_heads))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let a = attention(&heads("wq")?, &heads("wk")?, &heads("wv")?, &batch.bias)?;
            let a = a.transpose(1, 2)?.reshape((b * k, d))?;
            x = (x + linear(w, &p("wo"), &a)?.reshape((b, k, d))?)?;
            let h = layer_norm(w, &p("ln2"), &x)?.reshape((b * k, d))?;
            let f = linear(w, &p("ff1"), &h)?.gelu()?;
            x = (x + linear(w, &p("ff2"), &f)?.reshape((b, k, d))?)?;
        }
        let tokens = layer_norm(w, "ln_f", &x)?;
        let pooled = tokens
            .broadcast_mul(&batch.mask)?
            .sum(1)?
            .broadcast_mul(&batch.inv_n)?;
        let (ph, pd) = (c.pool_heads, c.pool_dim);
        let q = linear(w, "pool.q", &pooled)?.reshape((b, ph, 1, pd / ph))?;
        let flat = tokens.reshape((b * k, d))?;
        let heads = |name: &str| -> Result<Tensor> {
            Ok(linear(w, name, &flat)?
                .reshape((b, k, ph, pd / ph))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let att = attention(&q, &heads("pool.k")?, &heads("pool.v")?, &batch.bias)?;
        let h = linear(w, "pool.o", &att.reshape((b, pd))?)?;
        let hidden = linear(w, "mlp.0", &h)?.relu()?;
        let complexity = sigmoid(&linear(w, "mlp.1", &hidden)?)?.squeeze(1)?;
        Ok(Outputs {
            complexity,
            logits: linear(w, "head.precision", &h)?,
            pruning: sigmoid(&linear(w, "head.pruning", &h)?)?.squeeze(1)?,
            sparsity: sigmoid(&linear(w, "head.sparsity", &h)?)?.squeeze(1)?,
        })
    }
}

/// A padded batch of tasks' gathered embeddings.
pub struct Batch {
    /// Tasks in the batch.
    pub rows: usize,
    /// Embeddings `[rows, k, embed_dim]`, zero past each task's end.
    emb: Tensor,
    /// Additive attention bias over keys `[rows, 1, 1, k]`: 0 for tokens, `-1e9` for padding.
    bias: Tensor,
    /// 1 for tokens, 0 for padding, `[rows, k, 1]`.
    mask: Tensor,
    /// `1 / tokens` per task, `[rows, 1]`.
    inv_n: Tensor,
}

impl Batch {
    /// Pads the gathered embeddings of each task (`[n, embed_dim]`, `1 <= n <= k`) to k rows.
    pub fn new(config: &ControllerConfig, tasks: &[&[f32]]) -> Result<Self> {
        let (k, e) = (config.k, config.embed_dim);
        if tasks.is_empty() {
            return Err(Error::invalid("an empty training batch"));
        }
        let rows = tasks.len();
        let mut emb = vec![0f32; rows * k * e];
        let mut mask = vec![0f32; rows * k];
        let mut inv_n = vec![0f32; rows];
        for (r, t) in tasks.iter().enumerate() {
            let n = t.len() / e;
            if n == 0 || n > k || t.len() % e != 0 {
                return Err(Error::invalid(format!(
                    "controller input of {} values is not 1..={k} rows of {e}",
                    t.len()
                )));
            }
            emb[r * k * e..r * k * e + t.len()].copy_from_slice(t);
            mask[r * k..r * k + n].iter_mut().for_each(|m| *m = 1.0);
            inv_n[r] = 1.0 / n as f32;
        }
        let bias: Vec<f32> = mask
            .iter()
            .map(|&m| if m > 0.0 { 0.0 } else { MASKED })
            .collect();
        let dev = Device::Cpu;
        Ok(Batch {
            rows,
            emb: Tensor::from_vec(emb, (rows, k, e), &dev)?,
            bias: Tensor::from_vec(bias, (rows, 1, 1, k), &dev)?,
            mask: Tensor::from_vec(mask, (rows, k, 1), &dev)?,
            inv_n: Tensor::from_vec(inv_n, (rows, 1), &dev)?,
        })
    }
}

/// The batch's outputs, one row per task.
pub struct Outputs {
    /// Complexity `[rows]`.
    pub complexity: Tensor,
    /// Precision logits `[rows, 4]`.
    pub logits: Tensor,
    /// Pruning ratio `[rows]`.
    pub pruning: Tensor,
    /// Sparsity target `[rows]`.
    pub sparsity: Tensor,
}

/// `x W^T + b` over rows of `x` (`[rows, in]`).
fn linear(w: &Weights, name: &str, x: &Tensor) -> Result<Tensor> {
    let weight = w.get(&format!("{name}.weight"))?;
    let bias = w.get(&format!("{name}.bias"))?;
    Ok(x.matmul(&weight.t()?)?.broadcast_add(bias)?)
}

/// Layer norm over the last dimension with the gain and bias called `name`.
fn layer_norm(w: &Weights, name: &str, x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + LN_EPS as f64)?.sqrt()?)?;
    Ok(normed
        .broadcast_mul(w.get(&format!("{name}.gain"))?)?
        .broadcast_add(w.get(&format!("{name}.bias"))?)?)
}

/// Softmax over the last dimension (the maximum, a constant shift, is kept out of the graph).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Logistic sigmoid as `(tanh(x / 2) + 1) / 2`, whose gradient stays finite for any `x`.
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)?)
}

/// Scaled dot-product attention: `q` `[b, h, nq, hd]`, `k`/`v` `[b, h, nk, hd]`, `bias`
/// broadcastable to `[b, h, nq, nk]`; returns `[b, h, nq, hd]`.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let hd = q.dim(D::Minus1)?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(bias)?;
    Ok(softmax_last(&scores)?.matmul(v)?)
}

/// Reads a `[rows]` or `[rows, m]` f32 tensor into rows.
pub fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(match t.rank() {
        1 => t.to_vec1::<f32>()?.into_iter().map(|v| vec![v]).collect(),
        _ => t.to_dtype(DType::F32)?.to_vec2::<f32>()?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// Tasks of different lengths (one of them full, k tokens) for a config.
    fn tasks(cfg: &ControllerConfig, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        [1, 3, cfg.k, 5, cfg.k - 1]
            .iter()
            .map(|&n| rng.vec_uniform(n * cfg.embed_dim, 1.0))
            .collect()
    }

    /// Largest absolute difference between the runtime and the candle forward on `c`.
    pub(crate) fn max_diff(c: &Controller, seed: u64) -> f32 {
        let m = TrainModel::from_controller(c).unwrap();
        let data = tasks(&c.config, seed);
        let refs: Vec<&[f32]> = data.iter().map(|t| t.as_slice()).collect();
        let out = m
            .forward(&m.weights(), &Batch::new(&c.config, &refs).unwrap())
            .unwrap();
        let cx = rows_of(&out.complexity).unwrap();
        let lg = rows_of(&out.logits).unwrap();
        let pr = rows_of(&out.pruning).unwrap();
        let sp = rows_of(&out.sparsity).unwrap();
        let mut worst = 0f32;
        for (r, t) in data.iter().enumerate() {
            let enc = c.encode(t).unwrap();
            let want = c.head.forward(&enc, c.config.pool_heads);
            let got = [cx[r][0], pr[r][0], sp[r][0]];
            let exp = [want.complexity, want.pruning, want.sparsity];
            for (a, b) in got
                .iter()
                .chain(&lg[r])
                .zip(exp.iter().chain(want.precision_logits.values()))
            {
                worst = worst.max((a - b).abs());
            }
        }
        worst
    }

    /// A config small enough for a debug-build test, with several heads and layers.
    pub(crate) fn tiny() -> ControllerConfig {
        ControllerConfig {
            k: 8,
            embed_dim: 12,
            d_model: 16,
            n_layers: 2,
            n_heads: 4,
            ffn_dim: 24,
            pool_heads: 2,
            pool_dim: 8,
            mlp_hidden: 6,
        }
    }

    #[test]
    fn candle_forward_matches_the_runtime_forward_on_random_weights() {
        // Random weights with non-trivial norms and biases, so every tensor matters.
        let mut c = Controller::new(tiny(), 3).unwrap();
        let mut rng = Rng::new(8);
        let mut vals: HashMap<String, Vec<f32>> = named(&c)
            .into_iter()
            .map(|(n, _, v)| {
                let noisy = if n.ends_with("bias") || n.ends_with("gain") {
                    v.iter().map(|x| x + rng.uniform(-0.5, 0.5)).collect()
                } else {
                    v
                };
                (n, noisy)
            })
            .collect();
        vals.get_mut("head.precision.bias").unwrap()[2] += 1.0;
        c = from_named(c.config.clone(), vals).unwrap();
        let d = max_diff(&c, 4);
        assert!(d < 1e-5, "max abs diff {d}");
        let d = max_diff(&Controller::new(ControllerConfig::small(16), 5).unwrap(), 6);
        assert!(d < 1e-5, "small config: max abs diff {d}");
    }

    #[test]
    fn weights_round_trip_and_bad_batches_are_errors() {
        let c = Controller::new(tiny(), 9).unwrap();
        let m = TrainModel::from_controller(&c).unwrap();
        assert_eq!(m.to_controller().unwrap(), c);
        assert_eq!(m.vars().len(), named(&c).len());
        let cfg = tiny();
        assert!(Batch::new(&cfg, &[]).is_err());
        let long = vec![0.0; (cfg.k + 1) * cfg.embed_dim];
        assert!(Batch::new(&cfg, &[&long]).is_err());
        assert!(Batch::new(&cfg, &[&[1.0, 2.0]]).is_err());
        assert!(m.weights().get("nope").is_err());
    }
}
