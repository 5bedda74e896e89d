//! The controller's forward pass written once over the [`Backend`] trait, so it runs on the CPU
//! backend or on CUDA. Weights and the frozen embedding table are uploaded once; a task then
//! costs one token copy to the backend, the kernels, and one read-back of `mlp_hidden + 6`
//! values.
//!
//! On the backend: embedding gather ([`Backend::embed`]), projection plus bias and position
//! codes, every encoder layer (layer norm, Q/K/V projections, unmasked attention, output
//! projection, residual; layer norm, GELU feed-forward, residual), the final layer norm, mean
//! pooling, the pooled attention (query from the mean, keys/values from the tokens) and its
//! output projection, then ONE product of that output with `[mlp1; precision; pruning;
//! sparsity]` stacked. On the host: ReLU and the `mlp_hidden -> 1` output layer of the
//! complexity MLP (a dot product), the sigmoids and the softmax.
//!
//! Precision is the backend's: the CPU backend keeps f32 weights (agrees with
//! [`Controller::predict`] to f32 rounding, tested); the CUDA backend stores weight matrices
//! and the embedding table as FP16 (its only dense format) with f32 activations, biases,
//! norms and accumulation.

use super::encoder::{position_code, ControllerOutput, Encoded};
use super::layers::{sigmoid, softmax, Linear, LN_EPS};
use super::{Controller, ControllerConfig};
use crate::backend::{Backend, FullAttentionShape, NormShape};
use crate::model::Tensor;
use crate::quant::WeightMatrix;
use crate::util::scratch_pool::ScratchPool;
use crate::{Error, Result};

/// An affine map uploaded to a backend: weights `[out, in]` and bias `[out]`.
struct DevLinear<B: Backend> {
    w: B::Mat,
    b: B::Buf,
    out: usize,
}

impl<B: Backend> DevLinear<B> {
    /// Uploads `w` (`[out, inp]`, row-major) and `b`.
    fn upload(be: &B, w: &[f32], b: &[f32], out: usize, inp: usize) -> Result<Self> {
        let t = Tensor::from_f32(w, vec![out, inp]);
        Ok(DevLinear {
            w: be.upload_matrix(&WeightMatrix::Dense(t))?,
            b: be.upload_vec(b)?,
            out,
        })
    }

    fn of(be: &B, l: &Linear) -> Result<Self> {
        Self::upload(be, &l.w, &l.b, l.out, l.inp)
    }

    /// `y = x W^T + b` over `rows` rows.
    fn apply(&self, be: &B, x: &B::Buf, y: &mut B::Buf, rows: usize) -> Result<()> {
        be.matmul(x, &self.w, y, rows)?;
        be.add_bias(y, &self.b, rows, self.out)
    }
}

/// One encoder layer on the backend.
struct DevLayer<B: Backend> {
    ln1: [B::Buf; 2],
    ln2: [B::Buf; 2],
    wq: DevLinear<B>,
    wk: DevLinear<B>,
    wv: DevLinear<B>,
    wo: DevLinear<B>,
    ff1: DevLinear<B>,
    ff2: DevLinear<B>,
}

/// Activation buffers of one task, sized for k tokens once.
struct Scratch<B: Backend> {
    emb: B::Buf,
    x: B::Buf,
    h: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    a: B::Buf,
    o: B::Buf,
    f: B::Buf,
    tokens: B::Buf,
    pooled: B::Buf,
    pk: B::Buf,
    pv: B::Buf,
    pq: B::Buf,
    att: B::Buf,
    head: B::Buf,
    tail: B::Buf,
    /// Host copy of `tail`.
    host: Vec<f32>,
}

impl<B: Backend> Scratch<B> {
    /// Buffers for tasks of up to `cfg.k` tokens on `be`.
    fn new(be: &B, cfg: &ControllerConfig) -> Result<Self> {
        let (k, e, d, p) = (cfg.k, cfg.embed_dim, cfg.d_model, cfg.pool_dim);
        let tail_out = cfg.mlp_hidden + 6;
        let buf = |n: usize| be.alloc(n);
        Ok(Scratch {
            emb: buf(k * e)?,
            x: buf(k * d)?,
            h: buf(k * d)?,
            q: buf(k * d)?,
            k: buf(k * d)?,
            v: buf(k * d)?,
            a: buf(k * d)?,
            o: buf(k * d)?,
            f: buf(k * cfg.ffn_dim)?,
            tokens: buf(k * d)?,
            pooled: buf(d)?,
            pk: buf(k * p)?,
            pv: buf(k * p)?,
            pq: buf(p)?,
            att: buf(p)?,
            head: buf(p)?,
            tail: buf(tail_out)?,
            host: vec![0.0; tail_out],
        })
    }
}

/// A [`Controller`] uploaded to a backend (see the module documentation). Shareable across
/// threads; each prediction takes a set of activation buffers out of a pool for its duration
/// (the CPU backend's products run on rayon, so no lock may be held across them).
pub struct DeviceController<B: Backend> {
    be: B,
    config: ControllerConfig,
    vocab: usize,
    table: B::Mat,
    proj: DevLinear<B>,
    /// Position codes `[k, d_model]`.
    positions: B::Buf,
    layers: Vec<DevLayer<B>>,
    ln_f: [B::Buf; 2],
    pool_q: DevLinear<B>,
    pool_k: DevLinear<B>,
    pool_v: DevLinear<B>,
    pool_o: DevLinear<B>,
    /// `[mlp1; precision; pruning; sparsity]` stacked: `[mlp_hidden + 6, pool_dim]`.
    tail: DevLinear<B>,
    /// The complexity MLP's output layer, finished on the host.
    mlp2: Linear,
    scratch: ScratchPool<Scratch<B>>,
}

impl<B: Backend> DeviceController<B> {
    /// Uploads `c` and the served model's frozen embedding table (`[vocab, embed_dim]`,
    /// row-major) to `be`.
    pub fn new(be: B, c: &Controller, table: &[f32]) -> Result<Self> {
        let cfg = c.config.clone();
        cfg.validate()?;
        let (e, d, p) = (cfg.embed_dim, cfg.d_model, cfg.pool_dim);
        if table.is_empty() || table.len() % e != 0 {
            return Err(Error::invalid(format!(
                "embedding table of {} values is not a non-empty multiple of the controller's embed_dim {e}",
                table.len()
            )));
        }
        let vocab = table.len() / e;
        let tw = be.upload_matrix(&WeightMatrix::Dense(Tensor::from_f32(
            table,
            vec![vocab, e],
        )))?;
        let positions: Vec<f32> = (0..cfg.k * d)
            .map(|j| position_code(j / d, j % d, d))
            .collect();
        let ln = |l: &super::layers::LayerNorm| -> Result<[B::Buf; 2]> {
            Ok([be.upload_vec(&l.g)?, be.upload_vec(&l.b)?])
        };
        let layers = c
            .layers
            .iter()
            .map(|l| {
                Ok(DevLayer {
                    ln1: ln(&l.ln1)?,
                    ln2: ln(&l.ln2)?,
                    wq: DevLinear::of(&be, &l.wq)?,
                    wk: DevLinear::of(&be, &l.wk)?,
                    wv: DevLinear::of(&be, &l.wv)?,
                    wo: DevLinear::of(&be, &l.wo)?,
                    ff1: DevLinear::of(&be, &l.ff1)?,
                    ff2: DevLinear::of(&be, &l.ff2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let h = &c.head;
        let stacked = [&h.mlp1, &h.precision, &h.pruning, &h.sparsity];
        let tw_tail: Vec<f32> = stacked.iter().flat_map(|l| l.w.iter().copied()).collect();
        let tb_tail: Vec<f32> = stacked.iter().flat_map(|l| l.b.iter().copied()).collect();
        let tail_out = cfg.mlp_hidden + 6;
        let tail = DevLinear::upload(&be, &tw_tail, &tb_tail, tail_out, p)?;
        let scratch = Scratch::new(&be, &cfg)?;
        Ok(DeviceController {
            vocab,
            table: tw,
            proj: DevLinear::of(&be, &c.proj)?,
            positions: be.upload_vec(&positions)?,
            layers,
            ln_f: ln(&c.ln_f)?,
            pool_q: DevLinear::of(&be, &h.pq)?,
            pool_k: DevLinear::of(&be, &h.pk)?,
            pool_v: DevLinear::of(&be, &h.pv)?,
            pool_o: DevLinear::of(&be, &h.po)?,
            tail,
            mlp2: h.mlp2.clone(),
            scratch: ScratchPool::with(scratch),
            config: cfg,
            be,
        })
    }

    /// The controller's sizes.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The backend it runs on.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// Number of token rows a task of `ids` uses (the first k), checking every one of them
    /// against the table (as [`Controller::gather`]).
    fn rows(&self, ids: &[u32]) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::invalid("the controller needs at least one token"));
        }
        let n = ids.len().min(self.config.k);
        if let Some(&id) = ids[..n].iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::invalid(format!(
                "token id {id} is outside the embedding table of {} rows",
                self.vocab
            )));
        }
        Ok(n)
    }

    /// Queues the encoder for the first k of `ids`: `s.tokens` holds the encoded tokens and
    /// `s.pooled` their mean. Returns the token count.
    fn encode_into(&self, ids: &[u32], s: &mut Scratch<B>) -> Result<usize> {
        let (be, c) = (&self.be, &self.config);
        let n = self.rows(ids)?;
        let d = c.d_model;
        let hd = d / c.n_heads;
        be.embed(&self.table, &ids[..n], &mut s.emb)?;
        self.proj.apply(be, &s.emb, &mut s.x, n)?;
        be.add(&mut s.x, &self.positions, n * d)?;
        let norm = NormShape {
            rows: n,
            dim: d,
            eps: LN_EPS,
        };
        let attn = FullAttentionShape {
            n_q: n,
            n_k: n,
            n_heads: c.n_heads,
            head_dim: hd,
        };
        for l in &self.layers {
            be.layer_norm(&s.x, &l.ln1[0], &l.ln1[1], &mut s.h, &norm)?;
            l.wq.apply(be, &s.h, &mut s.q, n)?;
            l.wk.apply(be, &s.h, &mut s.k, n)?;
            l.wv.apply(be, &s.h, &mut s.v, n)?;
            be.attention_full(&s.q, &s.k, &s.v, &mut s.a, &attn)?;
            l.wo.apply(be, &s.a, &mut s.o, n)?;
            be.add(&mut s.x, &s.o, n * d)?;
            be.layer_norm(&s.x, &l.ln2[0], &l.ln2[1], &mut s.h, &norm)?;
            l.ff1.apply(be, &s.h, &mut s.f, n)?;
            be.gelu(&mut s.f, n * c.ffn_dim)?;
            l.ff2.apply(be, &s.f, &mut s.o, n)?;
            be.add(&mut s.x, &s.o, n * d)?;
        }
        be.layer_norm(&s.x, &self.ln_f[0], &self.ln_f[1], &mut s.tokens, &norm)?;
        be.mean_rows(&s.tokens, &mut s.pooled, n, d)?;
        Ok(n)
    }

    /// Runs `f` on a set of activation buffers taken out of the pool (a new set when every
    /// one is in use) and gives the set back afterwards, also when `f` fails.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch<B>) -> Result<T>) -> Result<T> {
        let mut s = match self.scratch.take() {
            Some(s) => s,
            None => Scratch::new(&self.be, &self.config)?,
        };
        let out = f(&mut s);
        self.scratch.give(s);
        out
    }

    /// Runs the projection and the encoder over the first k of `ids` and reads the encoded
    /// tokens and their mean back (as [`Controller::encode`] of [`Controller::gather`]).
    pub fn encode(&self, ids: &[u32]) -> Result<Encoded> {
        self.with_scratch(|s| {
            let n = self.encode_into(ids, s)?;
            let d = self.config.d_model;
            let (mut tokens, mut pooled) = (vec![0.0; n * d], vec![0.0; d]);
            self.be.read(&s.tokens, &mut tokens)?;
            self.be.read(&s.pooled, &mut pooled)?;
            self.be.synchronize()?;
            Ok(Encoded { tokens, n, pooled })
        })
    }

    /// Predicts complexity and policy for a task given its token ids (as
    /// [`Controller::predict`] with the table given at upload). Returns once the result is on
    /// the host.
    pub fn predict(&self, ids: &[u32]) -> Result<ControllerOutput> {
        let (be, c) = (&self.be, &self.config);
        self.with_scratch(|s| {
            let n = self.encode_into(ids, s)?;
            let ph = c.pool_dim / c.pool_heads;
            self.pool_k.apply(be, &s.tokens, &mut s.pk, n)?;
            self.pool_v.apply(be, &s.tokens, &mut s.pv, n)?;
            self.pool_q.apply(be, &s.pooled, &mut s.pq, 1)?;
            let pool = FullAttentionShape {
                n_q: 1,
                n_k: n,
                n_heads: c.pool_heads,
                head_dim: ph,
            };
            be.attention_full(&s.pq, &s.pk, &s.pv, &mut s.att, &pool)?;
            self.pool_o.apply(be, &s.att, &mut s.head, 1)?;
            self.tail.apply(be, &s.head, &mut s.tail, 1)?;
            be.read(&s.tail, &mut s.host)?;
            be.synchronize()?;
            Ok(finish(&s.host, c.mlp_hidden, &self.mlp2))
        })
    }
}

/// The host part of the head from the stacked product `t = [mlp1 h; precision h; pruning h;
/// sparsity h]` (biases included): ReLU, the MLP's output layer, sigmoids and the softmax.
fn finish(t: &[f32], mh: usize, mlp2: &Linear) -> ControllerOutput {
    let r: Vec<f32> = t[..mh].iter().map(|v| v.max(0.0)).collect();
    let complexity = sigmoid(mlp2.forward_vec(&r)[0]);
    let logits = [t[mh], t[mh + 1], t[mh + 2], t[mh + 3]];
    let mut probs = logits;
    softmax(&mut probs);
    ControllerOutput {
        complexity,
        precision_logits: logits.into(),
        precision_probs: probs.into(),
        pruning: sigmoid(t[mh + 4]),
        sparsity: sigmoid(t[mh + 5]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::util::rng::Rng;

    use crate::util::max_abs_diff as max_diff;

    /// Worst difference over complexity, pruning, sparsity and the precision logits.
    fn out_diff(a: &ControllerOutput, b: &ControllerOutput) -> f32 {
        let fa = [a.complexity, a.pruning, a.sparsity];
        let fb = [b.complexity, b.pruning, b.sparsity];
        max_diff(&fa, &fb).max(max_diff(
            a.precision_logits.values(),
            b.precision_logits.values(),
        ))
    }

    /// Random non-zero norm parameters and biases, so none of them can be skipped unnoticed.
    fn perturbed(cfg: ControllerConfig, seed: u64) -> Controller {
        let mut c = Controller::new(cfg, seed).unwrap();
        c.jitter_norms_and_biases(seed + 100, 0.3, 0.2);
        c
    }

    #[test]
    fn cpu_backend_predictions_match_the_reference_and_packed_forwards() {
        for c in [
            perturbed(ControllerConfig::ragged(20), 3),
            perturbed(ControllerConfig::small(16), 4),
        ] {
            let e = c.config.embed_dim;
            let table = Rng::new(9).vec_uniform(50 * e, 1.0);
            let dc = DeviceController::new(CpuBackend::new(), &c, &table).unwrap();
            let packed = c.packed_with(crate::controller::ControllerPrecision::F32);
            for (i, len) in [1usize, 5, 12, 40].into_iter().enumerate() {
                let ids: Vec<u32> = (0..len).map(|j| ((j * 13 + i) % 50) as u32).collect();
                let want_enc = c.encode(&c.gather(&table, &ids).unwrap()).unwrap();
                let got_enc = dc.encode(&ids).unwrap();
                assert_eq!(want_enc.n, got_enc.n);
                assert!(max_diff(&want_enc.tokens, &got_enc.tokens) < 1e-4);
                assert!(max_diff(&want_enc.pooled, &got_enc.pooled) < 1e-4);
                let want = c.predict(&table, &ids).unwrap();
                let got = dc.predict(&ids).unwrap();
                assert!(out_diff(&want, &got) < 1e-4, "{want:?} vs {got:?}");
                assert!(
                    max_diff(want.precision_probs.values(), got.precision_probs.values()) < 1e-4
                );
                let fast = packed.predict(&table, &ids).unwrap();
                assert!(out_diff(&fast, &got) < 1e-4, "{fast:?} vs {got:?}");
                // The buffers carry nothing from one task to the next.
                assert_eq!(dc.predict(&ids).unwrap(), got);
            }
        }
    }

    #[test]
    fn encoder_attention_is_bidirectional() {
        let c = perturbed(ControllerConfig::small(16), 6);
        let table = Rng::new(8).vec_uniform(40 * 16, 1.0);
        let dc = DeviceController::new(CpuBackend::new(), &c, &table).unwrap();
        let a = dc.encode(&[1, 2, 3, 4, 5]).unwrap();
        let b = dc.encode(&[1, 2, 3, 4, 30]).unwrap();
        // Changing only the last token changes the first token's encoding (a causal encoder
        // would leave it exactly as it was).
        assert!(max_diff(&a.tokens[..16], &b.tokens[..16]) > 1e-3);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = Controller::new(ControllerConfig::small(16), 5).unwrap();
        let t = Rng::new(1).vec_uniform(40 * 16, 1.0);
        let dc = DeviceController::new(CpuBackend::new(), &c, &t).unwrap();
        assert!(dc.predict(&[]).is_err());
        assert!(dc.predict(&[41]).unwrap_err().to_string().contains("41"));
        // Ids past the first k are never read, so they are not checked either.
        let mut long: Vec<u32> = (0..32).collect();
        long.push(1000);
        assert_eq!(dc.predict(&long).unwrap(), dc.predict(&long[..32]).unwrap());
        assert!(DeviceController::new(CpuBackend::new(), &c, &t[..15]).is_err());
        assert!(DeviceController::new(CpuBackend::new(), &c, &[]).is_err());
        assert_eq!(dc.config(), &c.config);
    }
}
