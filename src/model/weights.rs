//! The named weights of a model, generic over how a matrix is stored (dense host tensor,
//! quantized packing, device buffer), so that loaders, quantizers and backends share one shape.

use super::{ModelConfig, Tensor};
use crate::{Error, Result};

/// The weights of one transformer block. Matrices are row-major `[out, in]`.
#[derive(Clone, Debug)]
pub struct LayerWeights<M = Tensor> {
    /// RMSNorm weight before attention, `[dim]`.
    pub attn_norm: Tensor,
    /// Query projection `[q_dim, dim]`.
    pub wq: M,
    /// Key projection `[kv_dim, dim]`.
    pub wk: M,
    /// Value projection `[kv_dim, dim]`.
    pub wv: M,
    /// Output projection `[dim, q_dim]`.
    pub wo: M,
    /// Query bias `[q_dim]` (Qwen2).
    pub bq: Option<Tensor>,
    /// Key bias `[kv_dim]` (Qwen2).
    pub bk: Option<Tensor>,
    /// Value bias `[kv_dim]` (Qwen2).
    pub bv: Option<Tensor>,
    /// RMSNorm weight before the FFN, `[dim]`.
    pub ffn_norm: Tensor,
    /// FFN gate projection `[hidden, dim]`.
    pub w_gate: M,
    /// FFN down projection `[dim, hidden]`.
    pub w_down: M,
    /// FFN up projection `[hidden, dim]`.
    pub w_up: M,
}

/// All weights of a model.
#[derive(Clone, Debug)]
pub struct ModelWeights<M = Tensor> {
    /// Shape and hyper-parameters.
    pub config: ModelConfig,
    /// Token embedding `[vocab, dim]` (kept dense in every variant).
    pub embedding: Tensor,
    /// Transformer blocks in order.
    pub layers: Vec<LayerWeights<M>>,
    /// Final RMSNorm weight `[dim]`.
    pub final_norm: Tensor,
    /// Classifier `[vocab, dim]`; `None` when tied to the embedding.
    pub classifier: Option<M>,
}

/// The seven projection matrices of a layer, by name, in forward order.
pub const LAYER_MATRICES: [&str; 7] = ["wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"];

impl<M> LayerWeights<M> {
    /// Converts every matrix with `f`, which receives the matrix name (see [`LAYER_MATRICES`]).
    pub fn try_map<N>(
        self,
        mut f: impl FnMut(&'static str, M) -> Result<N>,
    ) -> Result<LayerWeights<N>> {
        Ok(LayerWeights {
            attn_norm: self.attn_norm,
            wq: f("wq", self.wq)?,
            wk: f("wk", self.wk)?,
            wv: f("wv", self.wv)?,
            wo: f("wo", self.wo)?,
            bq: self.bq,
            bk: self.bk,
            bv: self.bv,
            ffn_norm: self.ffn_norm,
            w_gate: f("w_gate", self.w_gate)?,
            w_up: f("w_up", self.w_up)?,
            w_down: f("w_down", self.w_down)?,
        })
    }

    /// The matrices with their names, in forward order.
    pub fn matrices(&self) -> [(&'static str, &M); 7] {
        [
            ("wq", &self.wq),
            ("wk", &self.wk),
            ("wv", &self.wv),
            ("wo", &self.wo),
            ("w_gate", &self.w_gate),
            ("w_up", &self.w_up),
            ("w_down", &self.w_down),
        ]
    }
}

/// Where a projection matrix sits: in a transformer layer, or the output classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatrixSite {
    /// A matrix of transformer layer `n` (counted from 0).
    Layer(usize),
    /// The output classifier (`"classifier"`).
    Classifier,
}

impl<M> ModelWeights<M> {
    /// Converts every projection matrix (and an untied classifier) with `f`, which receives
    /// `(site, name, matrix)`; the classifier comes as [`MatrixSite::Classifier`], name
    /// `"classifier"`.
    pub fn try_map<N>(
        self,
        mut f: impl FnMut(MatrixSite, &'static str, M) -> Result<N>,
    ) -> Result<ModelWeights<N>> {
        let layers = self
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| l.try_map(|name, m| f(MatrixSite::Layer(i), name, m)))
            .collect::<Result<Vec<_>>>()?;
        let classifier = match self.classifier {
            Some(c) => Some(f(MatrixSite::Classifier, "classifier", c)?),
            None => None,
        };
        Ok(ModelWeights {
            config: self.config,
            embedding: self.embedding,
            layers,
            final_norm: self.final_norm,
            classifier,
        })
    }
}

impl ModelWeights<Tensor> {
    /// Checks every tensor's shape against the config; the message names the first bad tensor.
    pub fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let want = |name: String, t: &Tensor, shape: &[usize]| -> Result<()> {
            if t.shape() != shape {
                return Err(Error::invalid(format!(
                    "tensor {name} has shape {:?}, expected {:?}",
                    t.shape(),
                    shape
                )));
            }
            Ok(())
        };
        want("embedding".into(), &self.embedding, &[c.vocab_size, c.dim])?;
        want("final_norm".into(), &self.final_norm, &[c.dim])?;
        if let Some(cls) = &self.classifier {
            want("classifier".into(), cls, &[c.vocab_size, c.dim])?;
        }
        if self.layers.len() != c.n_layers {
            return Err(Error::invalid(format!(
                "{} layers present, config says {}",
                self.layers.len(),
                c.n_layers
            )));
        }
        let (d, h, q, kv) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("layers.{i}.{s}");
            want(n("attn_norm"), &l.attn_norm, &[d])?;
            want(n("ffn_norm"), &l.ffn_norm, &[d])?;
            want(n("wq"), &l.wq, &[q, d])?;
            want(n("wk"), &l.wk, &[kv, d])?;
            want(n("wv"), &l.wv, &[kv, d])?;
            want(n("wo"), &l.wo, &[d, q])?;
            want(n("w_gate"), &l.w_gate, &[h, d])?;
            want(n("w_up"), &l.w_up, &[h, d])?;
            want(n("w_down"), &l.w_down, &[d, h])?;
            for (b, len, s) in [(&l.bq, q, "bq"), (&l.bk, kv, "bk"), (&l.bv, kv, "bv")] {
                if let Some(b) = b {
                    want(n(s), b, &[len])?;
                }
            }
            if c.qkv_bias != (l.bq.is_some() && l.bk.is_some() && l.bv.is_some()) {
                return Err(Error::invalid(format!(
                    "layer {i}: qkv_bias is {} but the biases present do not agree",
                    c.qkv_bias
                )));
            }
        }
        Ok(())
    }
}
