//! The four variants of one model as the router and the benchmark use them.
//!
//! Until the packed variant store is wired in, lower precisions are produced by
//! [`simulate_quantization`]: every projection matrix is quantised group-wise
//! (round-to-nearest, asymmetric, FP16 scale and zero per group) and immediately dequantised
//! back to f32. The forward passes therefore compute exactly what the quantised weights
//! compute (up to f32 accumulation order), so fidelity labels are real measurements; only
//! speed is not representative, which is why costs come from [`variant_bytes`].

use crate::backend::cpu::CpuBackend;
use crate::engine::Model;
use crate::model::{ModelConfig, ModelWeights, Tensor};
use crate::quant::Precision;
use crate::{Error, Result};
use half::f16;

/// Quantisation group width (along the input dimension) of the simulated variants.
pub const SIM_GROUP: usize = 32;

/// Quantises then dequantises `w` (`[rows, cols]`) group-wise at `bits` (2..=8), in place.
/// At 16 bits it rounds every weight to FP16 instead.
pub fn fake_quantize(w: &mut [f32], cols: usize, bits: u32, group: usize) {
    if bits >= 16 {
        w.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
        return;
    }
    let levels = ((1u32 << bits) - 1) as f32;
    for row in w.chunks_mut(cols) {
        for g in row.chunks_mut(group.max(1)) {
            let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scale = f16::from_f32((hi - lo) / levels).to_f32();
            let zero = f16::from_f32(lo).to_f32();
            if scale <= 0.0 {
                g.iter_mut().for_each(|v| *v = zero);
                continue;
            }
            for v in g.iter_mut() {
                let q = ((*v - zero) / scale).round().clamp(0.0, levels);
                *v = zero + q * scale;
            }
        }
    }
}

/// The weights of the `p` variant of `weights`, simulated by fake quantisation (see the module
/// documentation). The embedding and norms stay as they are.
pub fn simulate_quantization(weights: &ModelWeights, p: Precision) -> Result<ModelWeights> {
    weights.clone().try_map(|_, _, t: Tensor| {
        let shape = t.shape().to_vec();
        if shape.len() != 2 {
            return Err(Error::invalid(format!(
                "matrix of shape {shape:?} is not 2-D"
            )));
        }
        let mut v = t.to_f32_vec();
        fake_quantize(&mut v, shape[1], p.bits(), SIM_GROUP);
        Ok(Tensor::from_f32(&v, shape))
    })
}

/// Bytes the `p` variant of a model of shape `c` occupies: projection matrices (and an untied
/// classifier) at `p.bits()` per weight plus an FP16 scale and zero per group of
/// [`SIM_GROUP`] below 16 bits; embedding and norms in FP16.
pub fn variant_bytes(c: &ModelConfig, p: Precision) -> u64 {
    let (d, h, q, kv) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
    let mats: [(usize, usize); 7] = [(q, d), (kv, d), (kv, d), (d, q), (h, d), (h, d), (d, h)];
    let mat_bits = |rows: usize, cols: usize| -> u64 {
        let n = (rows * cols) as u64;
        if p == Precision::Fp16 {
            16 * n
        } else {
            let groups = (rows * cols.div_ceil(SIM_GROUP)) as u64;
            p.bits() as u64 * n + 32 * groups
        }
    };
    let mut bits: u64 = mats.iter().map(|&(r, k)| mat_bits(r, k)).sum::<u64>() * c.n_layers as u64;
    if !c.tied_embeddings {
        bits += mat_bits(c.vocab_size, d);
    }
    bits += 16 * (c.vocab_size * d + (2 * c.n_layers + 1) * d) as u64;
    bits.div_ceil(8)
}

/// The four variants of one model, on the CPU backend, with their sizes.
pub struct VariantSet {
    /// Shape of the model.
    pub config: ModelConfig,
    /// The frozen token-embedding table `[vocab, dim]` the controller reads.
    pub embedding: Vec<f32>,
    /// One model per precision, in [`Precision::ALL`] order.
    pub models: Vec<Model<CpuBackend>>,
    /// Bytes of each variant, in [`Precision::ALL`] order.
    pub bytes: [u64; 4],
    /// Whether the lower precisions are simulated (fake-quantised) rather than packed.
    pub simulated: bool,
}

impl VariantSet {
    /// Builds all four variants of `weights` by simulation (see [`simulate_quantization`]).
    pub fn simulated(weights: &ModelWeights) -> Result<Self> {
        weights.check_shapes()?;
        let models = Precision::ALL
            .iter()
            .map(|&p| Model::new(CpuBackend::new(), &simulate_quantization(weights, p)?))
            .collect::<Result<Vec<_>>>()?;
        let bytes = Precision::ALL.map(|p| variant_bytes(&weights.config, p));
        Ok(VariantSet {
            config: weights.config.clone(),
            embedding: weights.embedding.to_f32_vec(),
            models,
            bytes,
            simulated: true,
        })
    }

    /// The model of precision `p`.
    pub fn model(&self, p: Precision) -> &Model<CpuBackend> {
        &self.models[p.index()]
    }

    /// Size of each variant relative to FP16.
    pub fn relative_bytes(&self) -> [f64; 4] {
        self.bytes.map(|b| b as f64 / self.bytes[0] as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{preset, synthetic_weights};
    use crate::model::DType;
    use crate::util::rng::Rng;

    #[test]
    fn fake_quantization_error_shrinks_with_bits_and_levels_are_few() {
        let w0 = Rng::new(1).vec_uniform(4 * 64, 1.0);
        let mut prev = f32::INFINITY;
        for bits in [2u32, 4, 8, 16] {
            let mut w = w0.clone();
            fake_quantize(&mut w, 64, bits, 32);
            let err = w
                .iter()
                .zip(&w0)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < prev, "{bits} bits: max error {err} not below {prev}");
            prev = err;
            if bits < 16 {
                let group = &w[..32];
                let mut distinct: Vec<u32> = group.iter().map(|v| v.to_bits()).collect();
                distinct.sort_unstable();
                distinct.dedup();
                assert!(distinct.len() <= 1 << bits);
                // Half a step of the group's range bounds the error.
                let (lo, hi) = w0[..32]
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let step = (hi - lo) / ((1u32 << bits) - 1) as f32;
                assert!(err <= step * 0.51 + 2e-3, "{bits}: {err} vs step {step}");
            }
        }
        let mut flat = vec![0.5f32; 32];
        fake_quantize(&mut flat, 32, 2, 32);
        assert!(flat.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn variant_sizes_shrink_with_precision_and_models_differ() {
        let mut cfg = preset("tiny").unwrap();
        cfg.max_seq_len = 64;
        let w = synthetic_weights(&cfg, 3, DType::F32).unwrap();
        let set = VariantSet::simulated(&w).unwrap();
        let rel = set.relative_bytes();
        assert_eq!(rel[0], 1.0);
        assert!(
            rel[1] < 0.75 && rel[2] < rel[1] && rel[3] < rel[2],
            "{rel:?}"
        );
        let ids = [1u32, 5, 9, 13];
        let run = |p: Precision| {
            let m = set.model(p);
            let mut st = m.new_state(8).unwrap();
            m.forward(&mut st, &ids, false).unwrap()
        };
        let (a, b) = (run(Precision::Fp16), run(Precision::Int2));
        assert_ne!(a, b);
        let d8: f32 = run(Precision::Int8)
            .iter()
            .zip(&a)
            .map(|(x, y)| (x - y).abs())
            .sum();
        let d2: f32 = b.iter().zip(&a).map(|(x, y)| (x - y).abs()).sum();
        assert!(d8 < d2);
    }
}
