//! Calibration: per-input-channel importances `E[x_k^2]` of every projection's input,
//! captured while the model runs its own (self-generated) text.
//!
//! Capture needs no hook in the engine: [`RecordingBackend`] wraps the CPU backend, numbers
//! matrices in upload order (which [`crate::engine::Model::new`] fixes: embedding, then per
//! layer `wq wk wv wo w_gate w_up w_down`, then the classifier) and accumulates the squared
//! inputs of every `matmul` per matrix.

use crate::backend::cpu::{CpuBackend, CpuMat};
use crate::backend::Backend;
use crate::engine::Model;
use crate::model::weights::LAYER_MATRICES;
use crate::model::{ModelWeights, RopeStyle, Tensor};
use crate::Result;
use std::sync::Mutex;

/// Gram matrices per layer, per matrix (indexed like [`LAYER_MATRICES`]).
type LayerGrams = Vec<Vec<Vec<f64>>>;

/// Importances per projection matrix: `E[x_k^2]` over all calibration tokens.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// `[layer][matrix index in LAYER_MATRICES]` -> one value per input channel.
    layers: Vec<Vec<Vec<f32>>>,
    /// The classifier's input importances.
    classifier: Vec<f32>,
    /// Gram matrices `sum x x^T` (`[in, in]`), same indexing, when collected (for GPTQ).
    grams: Option<(LayerGrams, Vec<f64>)>,
    /// Tokens the statistics were gathered over.
    pub tokens: usize,
}

impl Calibration {
    /// Importances of matrix `name` of `layer` (`usize::MAX`/"classifier" for the classifier).
    pub fn importance(&self, layer: usize, name: &str) -> Option<&[f32]> {
        if layer == usize::MAX {
            return (!self.classifier.is_empty()).then_some(&self.classifier[..]);
        }
        let m = LAYER_MATRICES.iter().position(|&n| n == name)?;
        self.layers.get(layer)?.get(m).map(|v| &v[..])
    }

    /// The Gram matrix `sum x x^T` of matrix `name`'s inputs, when collected.
    pub fn gram(&self, layer: usize, name: &str) -> Option<&[f64]> {
        let (layers, cls) = self.grams.as_ref()?;
        if layer == usize::MAX {
            return (!cls.is_empty()).then_some(&cls[..]);
        }
        let m = LAYER_MATRICES.iter().position(|&n| n == name)?;
        layers.get(layer)?.get(m).map(|v| &v[..])
    }

    /// Runs `weights` (dense, on the CPU) over `seqs` and records every projection's inputs:
    /// mean squares always, full Gram matrices (`in^2` f64 per matrix) when `grams` is set.
    pub fn collect(weights: &ModelWeights<Tensor>, seqs: &[Vec<u32>], grams: bool) -> Result<Self> {
        let rec = RecordingBackend {
            grams,
            ..Default::default()
        };
        let model = Model::new(rec, weights)?;
        let mut tokens = 0;
        for s in seqs.iter().filter(|s| !s.is_empty()) {
            let mut st = model.new_state(s.len())?;
            model.forward(&mut st, s, false)?;
            tokens += s.len();
        }
        let stats = model
            .backend()
            .stats
            .lock()
            .map_err(|_| crate::Error::Internal("calibration lock poisoned".into()))?
            .clone();
        let mean = |st: &MatStats| -> Vec<f32> {
            st.sumsq
                .iter()
                .map(|&v| (v / st.rows.max(1) as f64) as f32)
                .collect()
        };
        let nl = weights.config.n_layers;
        // Matrix 0 is the embedding (never multiplied); then 7 per layer; then the classifier.
        let layers = (0..nl)
            .map(|l| (0..7).map(|m| mean(&stats[1 + 7 * l + m])).collect())
            .collect();
        // Tied: the classifier's input (the final-norm output) is recorded on the
        // embedding's slot, since the forward pass multiplies by the embedding.
        let cls = if weights.classifier.is_some() {
            1 + 7 * nl
        } else {
            0
        };
        let classifier = mean(&stats[cls]);
        let grams = grams.then(|| {
            let layers = (0..nl)
                .map(|l| (0..7).map(|m| stats[1 + 7 * l + m].gram.clone()).collect())
                .collect();
            (layers, stats[cls].gram.clone())
        });
        Ok(Calibration {
            layers,
            classifier,
            grams,
            tokens,
        })
    }
}

/// Input statistics of one uploaded matrix.
#[derive(Clone, Debug, Default)]
struct MatStats {
    /// Sum of `x_k^2` per input channel.
    sumsq: Vec<f64>,
    /// `sum x x^T`, row-major `[in, in]` (empty unless Gram matrices are collected).
    gram: Vec<f64>,
    /// Input rows seen.
    rows: usize,
}

/// A CPU backend that records per-matrix input statistics (sums of squares per channel and,
/// optionally, Gram matrices).
#[derive(Default)]
pub struct RecordingBackend {
    inner: CpuBackend,
    grams: bool,
    stats: Mutex<Vec<MatStats>>,
}

/// A matrix of the recording backend: its upload index and the CPU matrix.
pub struct RecMat {
    id: usize,
    mat: CpuMat,
}

impl Backend for RecordingBackend {
    type Buf = Vec<f32>;
    type Mat = RecMat;

    fn name(&self) -> String {
        format!("recording {}", self.inner.name())
    }
    fn upload_matrix(&self, m: &crate::quant::WeightMatrix) -> Result<RecMat> {
        let mat = self.inner.upload_matrix(m)?;
        let mut s = self
            .stats
            .lock()
            .map_err(|_| crate::Error::Internal("calibration lock poisoned".into()))?;
        let inp = mat.dims().1;
        s.push(MatStats {
            sumsq: vec![0.0; inp],
            gram: if self.grams {
                vec![0.0; inp * inp]
            } else {
                Vec::new()
            },
            rows: 0,
        });
        Ok(RecMat {
            id: s.len() - 1,
            mat,
        })
    }
    fn upload_vec(&self, v: &[f32]) -> Result<Vec<f32>> {
        self.inner.upload_vec(v)
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        self.inner.alloc(len)
    }
    fn write(&self, dst: &mut Vec<f32>, src: &[f32]) -> Result<()> {
        self.inner.write(dst, src)
    }
    fn read(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        self.inner.read(src, dst)
    }
    fn embed(&self, table: &RecMat, tokens: &[u32], out: &mut Vec<f32>) -> Result<()> {
        self.inner.embed(&table.mat, tokens, out)
    }
    fn rmsnorm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        self.inner.rmsnorm(x, w, out, rows, dim, eps)
    }
    fn matmul(&self, x: &Vec<f32>, w: &RecMat, out: &mut Vec<f32>, rows: usize) -> Result<()> {
        self.inner.matmul(x, &w.mat, out, rows)?;
        let inp = w.mat.dims().1;
        let mut s = self
            .stats
            .lock()
            .map_err(|_| crate::Error::Internal("calibration lock poisoned".into()))?;
        let st = &mut s[w.id];
        for row in x[..rows * inp].chunks_exact(inp) {
            st.sumsq
                .iter_mut()
                .zip(row)
                .for_each(|(a, &v)| *a += (v as f64) * (v as f64));
            if !st.gram.is_empty() {
                for (i, &xi) in row.iter().enumerate() {
                    let g = &mut st.gram[i * inp..(i + 1) * inp];
                    g.iter_mut()
                        .zip(row)
                        .for_each(|(a, &xj)| *a += xi as f64 * xj as f64);
                }
            }
        }
        st.rows += rows;
        Ok(())
    }
    fn add_bias(&self, x: &mut Vec<f32>, b: &Vec<f32>, rows: usize, width: usize) -> Result<()> {
        self.inner.add_bias(x, b, rows, width)
    }
    fn rope(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        theta: f32,
        style: RopeStyle,
    ) -> Result<()> {
        self.inner
            .rope(x, rows, n_heads, head_dim, pos0, theta, style)
    }
    fn store_rows(
        &self,
        src: &Vec<f32>,
        cache: &mut Vec<f32>,
        rows: usize,
        width: usize,
        pos0: usize,
    ) -> Result<()> {
        self.inner.store_rows(src, cache, rows, width, pos0)
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        pos0: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        self.inner
            .attention(q, k, v, out, rows, pos0, n_heads, n_kv_heads, head_dim)
    }
    fn swiglu(&self, g: &Vec<f32>, u: &Vec<f32>, out: &mut Vec<f32>, len: usize) -> Result<()> {
        self.inner.swiglu(g, u, out, len)
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        self.inner.add(x, y, len)
    }
}
