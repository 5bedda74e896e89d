//! Collecting a [`Calibration`]: per-input-channel importances `E[x_k^2]` of every projection's
//! input, captured while the model runs its own (self-generated) text.
//!
//! Capture needs no hook in the engine: [`RecordingBackend`] wraps the CPU backend, numbers
//! matrices in upload order (which [`crate::engine::Model::new`] fixes: embedding, then per
//! layer `wq wk wv wo w_gate w_up w_down`, then the classifier) and accumulates the squared
//! inputs of every `matmul` per matrix.

use crate::backend::cpu::{CpuBackend, CpuMat, KvCache};
use crate::backend::{AttentionShape, Backend, NormShape, RopeParams};
use crate::engine::Model;
use crate::model::{ModelWeights, Tensor};
use crate::quant::calib::Calibration;
use crate::Result;
use std::sync::Mutex;

impl Calibration {
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
    type Cache = KvCache;

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
    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        self.inner.buf_len(buf)
    }
    fn embed(&self, table: &RecMat, tokens: &[u32], out: &mut Vec<f32>) -> Result<()> {
        self.inner.embed(&table.mat, tokens, out)
    }
    fn rmsnorm_impl(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        out: &mut Vec<f32>,
        shape: &NormShape,
    ) -> Result<()> {
        self.inner.rmsnorm_impl(x, w, out, shape)
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
    fn rope_impl(&self, x: &mut Vec<f32>, p: &RopeParams) -> Result<()> {
        self.inner.rope_impl(x, p)
    }
    fn alloc_cache(&self, len: usize) -> Result<KvCache> {
        self.inner.alloc_cache(len)
    }
    fn cache_len(&self, cache: &KvCache) -> usize {
        self.inner.cache_len(cache)
    }
    fn copy_cache(
        &self,
        src: &KvCache,
        dst: &mut KvCache,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        self.inner.copy_cache(src, dst, rows, width)
    }
    fn store_rows(
        &self,
        src: &Vec<f32>,
        cache: &mut KvCache,
        rows: usize,
        width: usize,
        pos0: usize,
    ) -> Result<()> {
        self.inner.store_rows(src, cache, rows, width, pos0)
    }
    fn attention_impl(
        &self,
        q: &Vec<f32>,
        k: &KvCache,
        v: &KvCache,
        out: &mut Vec<f32>,
        shape: &AttentionShape,
    ) -> Result<()> {
        self.inner.attention_impl(q, k, v, out, shape)
    }
    fn swiglu(&self, g: &Vec<f32>, u: &Vec<f32>, out: &mut Vec<f32>, len: usize) -> Result<()> {
        self.inner.swiglu(g, u, out, len)
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        self.inner.add(x, y, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_ops_and_the_trait_defaults_agree_and_check_lengths() {
        use crate::backend::cpu::encoder_ops::{gelu, layer_norm};
        use crate::backend::cpu::CpuBackend;
        use crate::backend::{Backend, FullAttentionShape};
        use crate::util::rng::Rng;
        // The recording backend implements only the required methods, so it runs the
        // trait's host-copy defaults.
        let (cpu, dflt) = (CpuBackend::new(), RecordingBackend::default());
        let mut rng = Rng::new(5);
        let (rows, dim, heads, hd) = (4, 12, 3, 4);
        let x = rng.vec_uniform(rows * dim, 2.0);
        let (g, b) = (rng.vec_uniform(dim, 1.0), rng.vec_uniform(dim, 1.0));
        let (mut o1, mut o2) = (vec![0.0; rows * dim], vec![0.0; rows * dim]);
        let norm = NormShape {
            rows,
            dim,
            eps: 1e-5,
        };
        cpu.layer_norm(&x, &g, &b, &mut o1, &norm).unwrap();
        dflt.layer_norm(&x, &g, &b, &mut o2, &norm).unwrap();
        assert_eq!(o1, o2);
        let mut want = vec![0.0; rows * dim];
        layer_norm(&x, &g, &b, &mut want, dim, 1e-5);
        assert_eq!(o1, want);
        let (mut g1, mut g2) = (x.clone(), x.clone());
        cpu.gelu(&mut g1, 7).unwrap();
        dflt.gelu(&mut g2, 7).unwrap();
        assert_eq!(g1, g2);
        assert_eq!(g1[7..], x[7..]);
        assert_eq!(g1[3], gelu(x[3]));
        let (k, v) = (rng.vec_uniform(5 * dim, 1.0), rng.vec_uniform(5 * dim, 1.0));
        let attn = FullAttentionShape {
            n_q: rows,
            n_k: 5,
            n_heads: heads,
            head_dim: hd,
        };
        cpu.attention_full(&x, &k, &v, &mut o1, &attn).unwrap();
        dflt.attention_full(&x, &k, &v, &mut o2, &attn).unwrap();
        assert_eq!(o1, o2);
        let (mut m1, mut m2) = (vec![0.0; dim], vec![0.0; dim]);
        cpu.mean_rows(&x, &mut m1, rows, dim).unwrap();
        dflt.mean_rows(&x, &mut m2, rows, dim).unwrap();
        assert_eq!(m1, m2);
        // Short buffers and empty reductions are errors naming the operation.
        let e = cpu
            .layer_norm(&x[..5].to_vec(), &g, &b, &mut o1, &norm)
            .unwrap_err();
        assert!(e.to_string().contains("layer_norm x"), "{e}");
        assert!(cpu.gelu(&mut vec![0.0; 3], 4).is_err());
        let e = cpu
            .attention_full(&x, &k[..dim].to_vec(), &v, &mut o1, &attn)
            .unwrap_err();
        assert!(e.to_string().contains("attention_full k"), "{e}");
        let no_keys = FullAttentionShape { n_k: 0, ..attn };
        assert!(cpu.attention_full(&x, &k, &v, &mut o1, &no_keys).is_err());
        assert!(dflt.attention_full(&x, &k, &v, &mut o1, &no_keys).is_err());
        assert!(cpu.mean_rows(&x, &mut m1, 0, dim).is_err());
        assert!(dflt.mean_rows(&x, &mut m1, 0, dim).is_err());
        assert!(cpu.mean_rows(&x, &mut vec![0.0; 2], rows, dim).is_err());
    }
}
