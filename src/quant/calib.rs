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

/// Importances per projection matrix: `E[x_k^2]` over all calibration tokens.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// `[layer][matrix index in LAYER_MATRICES]` -> one value per input channel.
    layers: Vec<Vec<Vec<f32>>>,
    /// The classifier's input importances.
    classifier: Vec<f32>,
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

    /// Runs `weights` (dense, on the CPU) over `seqs` and records every projection's inputs.
    pub fn collect(weights: &ModelWeights<Tensor>, seqs: &[Vec<u32>]) -> Result<Self> {
        let rec = RecordingBackend::default();
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
        let mean = |(sum, n): &(Vec<f64>, usize)| -> Vec<f32> {
            sum.iter()
                .map(|&v| (v / (*n).max(1) as f64) as f32)
                .collect()
        };
        let nl = weights.config.n_layers;
        // Matrix 0 is the embedding (never multiplied); then 7 per layer; then the classifier.
        let layers = (0..nl)
            .map(|l| (0..7).map(|m| mean(&stats[1 + 7 * l + m])).collect())
            .collect();
        let classifier = if weights.classifier.is_some() {
            mean(&stats[1 + 7 * nl])
        } else {
            // Tied: the classifier's input is the same final-norm output; recorded on the
            // embedding's slot.
            mean(&stats[0])
        };
        Ok(Calibration {
            layers,
            classifier,
            tokens,
        })
    }
}

/// A CPU backend that records per-matrix input statistics (sum of squares per channel).
#[derive(Default)]
pub struct RecordingBackend {
    inner: CpuBackend,
    /// Per uploaded matrix: (sum of x_k^2 per channel, rows seen).
    stats: Mutex<Vec<(Vec<f64>, usize)>>,
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
        s.push((vec![0.0; mat.dims().1], 0));
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
        let (sum, n) = &mut s[w.id];
        for row in x[..rows * inp].chunks_exact(inp) {
            sum.iter_mut()
                .zip(row)
                .for_each(|(a, &v)| *a += (v as f64) * (v as f64));
        }
        *n += rows;
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
