//! The controller network and its forward pass.

use super::kernels::gemm::Epilogue;
use super::layers::{attention, attention_into, gelu, sigmoid, softmax, LayerNorm, Linear};
use super::layers::{attention_packed, gelu_slice, AttentionScratch, PackedLinear};
use super::ControllerConfig;
use crate::quant::{PerPrecision, Precision};
use crate::util::rng::Rng;
use crate::{Error, Result};

/// One pre-norm transformer encoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderLayer {
    /// Norm before attention.
    pub ln1: LayerNorm,
    /// Query projection.
    pub wq: Linear,
    /// Key projection.
    pub wk: Linear,
    /// Value projection.
    pub wv: Linear,
    /// Output projection.
    pub wo: Linear,
    /// Norm before the feed-forward block.
    pub ln2: LayerNorm,
    /// Feed-forward up projection (GELU after it).
    pub ff1: Linear,
    /// Feed-forward down projection.
    pub ff2: Linear,
}

impl EncoderLayer {
    fn init(rng: &mut Rng, c: &ControllerConfig) -> Self {
        let d = c.d_model;
        EncoderLayer {
            ln1: LayerNorm::new(d),
            wq: Linear::init(rng, d, d),
            wk: Linear::init(rng, d, d),
            wv: Linear::init(rng, d, d),
            wo: Linear::init(rng, d, d),
            ln2: LayerNorm::new(d),
            ff1: Linear::init(rng, d, c.ffn_dim),
            ff2: Linear::init(rng, c.ffn_dim, d),
        }
    }

    /// `x += attn(ln1(x)); x += ff2(gelu(ff1(ln2(x))))` over `n` rows.
    pub fn forward(&self, x: &mut [f32], n: usize, heads: usize) {
        let maps = [&self.wq, &self.wk, &self.wv, &self.wo, &self.ff1, &self.ff2];
        layer_forward(
            &self.ln1,
            &self.ln2,
            maps,
            x,
            n,
            heads,
            &mut LayerScratch::default(),
        );
    }
}

/// A linear map the encoder runs: the training form [`Linear`] or the packed inference form
/// [`PackedLinear`]. Both compute `y = x W^T + b`, then GELU when asked.
pub(crate) trait Affine {
    /// Whether the encoder should use the inference-path attention ([`attention_packed`]).
    const PACKED: bool;

    /// `y = x W^T + b` over `rows` rows (then GELU if `gelu`), `y` resized to `[rows, out]`.
    fn apply(&self, x: &[f32], rows: usize, y: &mut Vec<f32>, gelu: bool);
}

impl Affine for Linear {
    const PACKED: bool = false;

    fn apply(&self, x: &[f32], rows: usize, y: &mut Vec<f32>, act: bool) {
        *y = self.forward(x, rows);
        if act {
            y.iter_mut().for_each(|v| *v = gelu(*v));
        }
    }
}

impl Affine for PackedLinear {
    const PACKED: bool = true;

    fn apply(&self, x: &[f32], rows: usize, y: &mut Vec<f32>, act: bool) {
        let epi = if act {
            Epilogue::Apply(gelu_slice)
        } else {
            Epilogue::None
        };
        self.forward_map_into(x, rows, y, epi);
    }
}

/// Buffers one encoder layer's forward pass reuses.
#[derive(Default)]
pub(crate) struct LayerScratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    a: Vec<f32>,
    scores: Vec<f32>,
    attn: AttentionScratch,
    o: Vec<f32>,
    f: Vec<f32>,
}

/// One pre-norm encoder layer over `n` rows of `x`; `maps` are `[wq, wk, wv, wo, ff1, ff2]`.
pub(crate) fn layer_forward<L: Affine>(
    ln1: &LayerNorm,
    ln2: &LayerNorm,
    maps: [&L; 6],
    x: &mut [f32],
    n: usize,
    heads: usize,
    s: &mut LayerScratch,
) {
    let [wq, wk, wv, wo, ff1, ff2] = maps;
    ln1.forward_into(x, &mut s.h);
    wq.apply(&s.h, n, &mut s.q, false);
    wk.apply(&s.h, n, &mut s.k, false);
    wv.apply(&s.h, n, &mut s.v, false);
    if L::PACKED {
        attention_packed(&s.q, &s.k, &s.v, n, n, heads, &mut s.a, &mut s.attn);
    } else {
        attention_into(&s.q, &s.k, &s.v, n, n, heads, &mut s.a, &mut s.scores);
    }
    wo.apply(&s.a, n, &mut s.o, false);
    x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
    ln2.forward_into(x, &mut s.h);
    ff1.apply(&s.h, n, &mut s.f, true);
    ff2.apply(&s.f, n, &mut s.o, false);
    x.iter_mut().zip(&s.o).for_each(|(x, f)| *x += f);
}

/// The sinusoidal position code added to feature `i` of token `t` in a `d`-wide encoder.
pub(crate) fn position_code(t: usize, i: usize, d: usize) -> f32 {
    let freq = 1.0 / 10000f32.powf((2 * (i / 2)) as f32 / d as f32);
    let a = t as f32 * freq;
    if i % 2 == 0 {
        a.sin()
    } else {
        a.cos()
    }
}

/// The embeddings of the first k of `ids` from `table` (see [`Controller::gather`]).
pub(crate) fn gather_rows(c: &ControllerConfig, table: &[f32], ids: &[u32]) -> Result<Vec<f32>> {
    let e = c.embed_dim;
    if ids.is_empty() {
        return Err(Error::invalid("the controller needs at least one token"));
    }
    if table.len() % e != 0 {
        return Err(Error::invalid(format!(
            "embedding table of {} values is not a multiple of the controller's embed_dim {e}",
            table.len()
        )));
    }
    let vocab = table.len() / e;
    let mut x = Vec::with_capacity(ids.len().min(c.k) * e);
    for &id in ids.iter().take(c.k) {
        let i = id as usize;
        if i >= vocab {
            return Err(Error::invalid(format!(
                "token id {id} is outside the embedding table of {vocab} rows"
            )));
        }
        x.extend_from_slice(&table[i * e..(i + 1) * e]);
    }
    Ok(x)
}

/// Checks that `emb` holds 1..=k rows of `embed_dim` values and returns the row count.
pub(crate) fn input_rows(c: &ControllerConfig, emb: &[f32]) -> Result<usize> {
    let n = emb.len() / c.embed_dim;
    if n == 0 || n > c.k || emb.len() % c.embed_dim != 0 {
        return Err(Error::invalid(format!(
            "controller input of {} values is not 1..={} rows of {}",
            emb.len(),
            c.k,
            c.embed_dim
        )));
    }
    Ok(n)
}

/// The mean of the `d`-wide rows of `tokens`.
pub(crate) fn mean_rows(tokens: &[f32], d: usize) -> Vec<f32> {
    let n = tokens.len() / d;
    let mut pooled = vec![0.0; d];
    for row in tokens.chunks(d) {
        pooled.iter_mut().zip(row).for_each(|(p, v)| *p += v);
    }
    pooled.iter_mut().for_each(|p| *p /= n as f32);
    pooled
}

/// The trainable top of the controller: attention pooling, complexity MLP and policy heads.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// Pooling query projection (from the mean-pooled vector).
    pub pq: Linear,
    /// Pooling key projection (from each encoded token).
    pub pk: Linear,
    /// Pooling value projection.
    pub pv: Linear,
    /// Pooling output projection.
    pub po: Linear,
    /// Complexity MLP, first layer (ReLU after it).
    pub mlp1: Linear,
    /// Complexity MLP, output layer (sigmoid after it).
    pub mlp2: Linear,
    /// Precision logits, in [`Precision::ALL`] order.
    pub precision: Linear,
    /// Pruning ratio (sigmoid).
    pub pruning: Linear,
    /// Sparsity target (sigmoid).
    pub sparsity: Linear,
}

impl Head {
    fn init(rng: &mut Rng, c: &ControllerConfig) -> Self {
        let (d, p) = (c.d_model, c.pool_dim);
        Head {
            pq: Linear::init(rng, d, p),
            pk: Linear::init(rng, d, p),
            pv: Linear::init(rng, d, p),
            po: Linear::init(rng, p, p),
            mlp1: Linear::init(rng, p, c.mlp_hidden),
            mlp2: Linear::init(rng, c.mlp_hidden, 1),
            precision: Linear::init(rng, p, 4),
            pruning: Linear::init(rng, p, 1),
            sparsity: Linear::init(rng, p, 1),
        }
    }

    /// Every layer, in a fixed order (for optimisers and serialisation).
    pub fn linears(&self) -> [(&'static str, &Linear); 9] {
        [
            ("pool.q", &self.pq),
            ("pool.k", &self.pk),
            ("pool.v", &self.pv),
            ("pool.o", &self.po),
            ("mlp.0", &self.mlp1),
            ("mlp.1", &self.mlp2),
            ("head.precision", &self.precision),
            ("head.pruning", &self.pruning),
            ("head.sparsity", &self.sparsity),
        ]
    }

    /// Every layer, mutably, in the order of [`Head::linears`].
    pub fn linears_mut(&mut self) -> [&mut Linear; 9] {
        [
            &mut self.pq,
            &mut self.pk,
            &mut self.pv,
            &mut self.po,
            &mut self.mlp1,
            &mut self.mlp2,
            &mut self.precision,
            &mut self.pruning,
            &mut self.sparsity,
        ]
    }

    /// The head's output for encoded tokens `x` (`[n, d_model]`) and their mean `pooled`.
    pub fn forward(&self, enc: &Encoded, heads: usize) -> ControllerOutput {
        let k = self.pk.forward(&enc.tokens, enc.n);
        let v = self.pv.forward(&enc.tokens, enc.n);
        self.forward_from_kv(enc, k, v, heads)
    }

    /// The rest of [`Head::forward`] once the pooling keys `k` and values `v`
    /// (`[n, pool_dim]`) of the encoded tokens are known.
    pub(crate) fn forward_from_kv(
        &self,
        enc: &Encoded,
        k: Vec<f32>,
        v: Vec<f32>,
        heads: usize,
    ) -> ControllerOutput {
        let n = enc.n;
        let q = self.pq.forward_vec(&enc.pooled);
        let att = attention(&q, &k, &v, 1, n, heads);
        let h = self.po.forward_vec(&att);
        let r: Vec<f32> = self
            .mlp1
            .forward_vec(&h)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let complexity = sigmoid(self.mlp2.forward_vec(&r)[0]);
        let logits = self.precision.forward_vec(&h);
        let mut probs = logits.clone();
        softmax(&mut probs);
        ControllerOutput {
            complexity,
            precision_logits: [logits[0], logits[1], logits[2], logits[3]].into(),
            precision_probs: [probs[0], probs[1], probs[2], probs[3]].into(),
            pruning: sigmoid(self.pruning.forward_vec(&h)[0]),
            sparsity: sigmoid(self.sparsity.forward_vec(&h)[0]),
        }
    }
}

/// The encoder's output for one task: encoded tokens and their mean.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Encoded tokens `[n, d_model]`.
    pub tokens: Vec<f32>,
    /// Number of (non-padding) tokens, at most k.
    pub n: usize,
    /// Mean of the encoded tokens `[d_model]`.
    pub pooled: Vec<f32>,
}

/// What the controller predicts for one task.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerOutput {
    /// Predicted complexity in [0, 1].
    pub complexity: f32,
    /// Precision logits.
    pub precision_logits: PerPrecision<f32>,
    /// Softmax of the precision logits.
    pub precision_probs: PerPrecision<f32>,
    /// Predicted pruning ratio in [0, 1].
    pub pruning: f32,
    /// Predicted sparsity target in [0, 1].
    pub sparsity: f32,
}

impl ControllerOutput {
    /// The precision the policy head prefers.
    pub fn precision(&self) -> Precision {
        let i = crate::backend::cpu::argmax(self.precision_probs.values());
        Precision::ALL[i]
    }
}

/// The complexity controller (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Controller {
    /// Its sizes.
    pub config: ControllerConfig,
    /// Projection of the frozen embeddings to `d_model`.
    pub proj: Linear,
    /// Encoder layers.
    pub layers: Vec<EncoderLayer>,
    /// Final encoder norm.
    pub ln_f: LayerNorm,
    /// Attention pooling, complexity MLP and policy heads.
    pub head: Head,
}

impl Controller {
    /// A freshly initialised controller, seeded.
    pub fn new(config: ControllerConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let proj = Linear::init(&mut rng, config.embed_dim, config.d_model);
        let layers = (0..config.n_layers)
            .map(|_| EncoderLayer::init(&mut rng, &config))
            .collect();
        let ln_f = LayerNorm::new(config.d_model);
        let head = Head::init(&mut rng, &config);
        Ok(Controller {
            config,
            proj,
            layers,
            ln_f,
            head,
        })
    }

    /// Moves every layer norm's gain and bias by up to `norm` and every linear bias by up to
    /// `bias` (uniform, seeded). A fresh controller has unit gains and zero biases, which
    /// would hide a forward pass that ignored them; agreement checks start from this instead.
    pub fn jitter_norms_and_biases(&mut self, seed: u64, norm: f32, bias: f32) {
        let mut rng = Rng::new(seed);
        let mut jitter =
            |v: &mut Vec<f32>, s: f32| v.iter_mut().for_each(|x| *x += rng.uniform(-s, s));
        for l in &mut self.layers {
            for n in [&mut l.ln1, &mut l.ln2] {
                jitter(&mut n.g, norm);
                jitter(&mut n.b, norm);
            }
            for m in [
                &mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.ff1, &mut l.ff2,
            ] {
                jitter(&mut m.b, bias);
            }
        }
        jitter(&mut self.ln_f.g, norm);
        jitter(&mut self.ln_f.b, norm);
        jitter(&mut self.proj.b, bias);
        for m in self.head.linears_mut() {
            jitter(&mut m.b, bias);
        }
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        let ln = |l: &LayerNorm| l.g.len() + l.b.len();
        let layer = |l: &EncoderLayer| {
            ln(&l.ln1)
                + ln(&l.ln2)
                + [&l.wq, &l.wk, &l.wv, &l.wo, &l.ff1, &l.ff2]
                    .iter()
                    .map(|x| x.param_count())
                    .sum::<usize>()
        };
        self.proj.param_count()
            + self.layers.iter().map(layer).sum::<usize>()
            + ln(&self.ln_f)
            + self
                .head
                .linears()
                .iter()
                .map(|(_, l)| l.param_count())
                .sum::<usize>()
    }

    /// Gathers the frozen embeddings of the first k of `ids` from `table` (`[vocab, embed_dim]`,
    /// row-major). Positions past the end of a short task are padding and are left out.
    pub fn gather(&self, table: &[f32], ids: &[u32]) -> Result<Vec<f32>> {
        gather_rows(&self.config, table, ids)
    }

    /// Runs the projection and the encoder over gathered embeddings `[n, embed_dim]`.
    pub fn encode(&self, emb: &[f32]) -> Result<Encoded> {
        let c = &self.config;
        let n = input_rows(c, emb)?;
        let d = c.d_model;
        let mut x = self.proj.forward(emb, n);
        for (t, row) in x.chunks_mut(d).enumerate() {
            for (i, v) in row.iter_mut().enumerate() {
                *v += position_code(t, i, d);
            }
        }
        for layer in &self.layers {
            layer.forward(&mut x, n, c.n_heads);
        }
        let tokens = self.ln_f.forward(&x);
        let pooled = mean_rows(&tokens, d);
        Ok(Encoded { tokens, n, pooled })
    }

    /// Predicts complexity and policy for a task given its token ids and the served model's
    /// embedding table.
    pub fn predict(&self, table: &[f32], ids: &[u32]) -> Result<ControllerOutput> {
        let enc = self.encode(&self.gather(table, ids)?)?;
        Ok(self.head.forward(&enc, self.config.pool_heads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(vocab: usize, e: usize) -> Vec<f32> {
        Rng::new(11).vec_uniform(vocab * e, 1.0)
    }

    #[test]
    fn parameter_counts_agree_with_the_config_formula() {
        for cfg in [ControllerConfig::small(64), ControllerConfig::reference(64)] {
            let c = Controller::new(cfg.clone(), 1).unwrap();
            assert_eq!(c.param_count(), cfg.param_count());
        }
    }

    #[test]
    fn outputs_are_in_range_and_deterministic() {
        let c = Controller::new(ControllerConfig::small(16), 5).unwrap();
        let t = table(40, 16);
        let ids: Vec<u32> = (0..50).map(|i| (i * 7 % 40) as u32).collect();
        let a = c.predict(&t, &ids).unwrap();
        let b = c.predict(&t, &ids).unwrap();
        assert_eq!(a, b);
        assert!((0.0..=1.0).contains(&a.complexity));
        assert!((a.precision_probs.values().iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // Only the first k tokens matter.
        let mut longer = ids.clone();
        longer.extend([1, 2, 3]);
        assert_eq!(c.predict(&t, &longer).unwrap(), a);
        // A different task gives a different prediction.
        assert_ne!(c.predict(&t, &ids[3..]).unwrap(), a);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let c = Controller::new(ControllerConfig::small(16), 5).unwrap();
        let t = table(40, 16);
        assert!(c.predict(&t, &[]).is_err());
        assert!(c.predict(&t, &[41]).unwrap_err().to_string().contains("41"));
        assert!(c.predict(&t[..15], &[1]).is_err());
        let mut bad = ControllerConfig::small(16);
        bad.n_heads = 5;
        assert!(Controller::new(bad, 1).is_err());
        assert!(ControllerConfig::named("huge", 16).is_err());
    }

    #[test]
    fn encoder_layer_matches_a_direct_computation() {
        let cfg = ControllerConfig {
            k: 4,
            embed_dim: 3,
            d_model: 4,
            n_layers: 1,
            n_heads: 1,
            ffn_dim: 5,
            pool_heads: 1,
            pool_dim: 2,
            mlp_hidden: 2,
        };
        let c = Controller::new(cfg, 9).unwrap();
        let l = &c.layers[0];
        let x: Vec<f32> = Rng::new(2).vec_uniform(8, 1.0);
        let mut got = x.clone();
        l.forward(&mut got, 2, 1);
        // Direct: single head of width 4 over two rows.
        let h = l.ln1.forward(&x);
        let proj = |w: &Linear, r: &[f32]| w.forward_vec(r);
        let rows: Vec<&[f32]> = h.chunks(4).collect();
        let q: Vec<Vec<f32>> = rows.iter().map(|r| proj(&l.wq, r)).collect();
        let k: Vec<Vec<f32>> = rows.iter().map(|r| proj(&l.wk, r)).collect();
        let v: Vec<Vec<f32>> = rows.iter().map(|r| proj(&l.wv, r)).collect();
        let mut want = x.clone();
        for i in 0..2 {
            let s: Vec<f32> = (0..2)
                .map(|j| q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f32>() / 2.0)
                .collect();
            let m = s[0].max(s[1]);
            let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z = e[0] + e[1];
            let a: Vec<f32> = (0..4)
                .map(|d| (e[0] * v[0][d] + e[1] * v[1][d]) / z)
                .collect();
            let o = proj(&l.wo, &a);
            for d in 0..4 {
                want[i * 4 + d] += o[d];
            }
        }
        let h2 = l.ln2.forward(&want);
        for i in 0..2 {
            let f: Vec<f32> = proj(&l.ff1, &h2[i * 4..i * 4 + 4])
                .into_iter()
                .map(gelu)
                .collect();
            let f = proj(&l.ff2, &f);
            for d in 0..4 {
                want[i * 4 + d] += f[d];
            }
        }
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
