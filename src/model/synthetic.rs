//! The one seeded generator of synthetic models, used by the demo, tests and benchmarks.
//!
//! Every element is a pure function of `(seed, tensor stream, index)` through a splitmix64 hash,
//! so tensors can be filled in parallel (or on a GPU) and still be identical everywhere.
//! Matrices are uniform in `±sqrt(3/in)` (unit-variance outputs for unit-variance inputs), norms
//! uniform in [0.8, 1.2], biases uniform in ±0.1: never zero, never degenerate.

use super::{DType, LayerWeights, ModelConfig, ModelWeights, RopeStyle, Tensor};
use crate::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;

/// splitmix64 finaliser: a bijective 64-bit mix.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Element `i` of stream `stream` under `seed`, uniform in [lo, hi).
#[inline]
pub fn synthetic_value(seed: u64, stream: u64, i: u64, lo: f32, hi: f32) -> f32 {
    let h = mix64(
        seed ^ mix64(stream.wrapping_mul(0xD6E8_FEB8_6659_FD93))
            ^ i.wrapping_mul(0xA076_1D64_78BD_642F),
    );
    let u = (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
    lo + (hi - lo) * u
}

/// A filled tensor of the given shape and element type.
pub fn synthetic_tensor(
    seed: u64,
    stream: u64,
    shape: Vec<usize>,
    lo: f32,
    hi: f32,
    dtype: DType,
) -> Tensor {
    let n: usize = shape.iter().product();
    let bytes: Vec<u8> = match dtype {
        DType::F32 => {
            let v: Vec<f32> = (0..n as u64)
                .into_par_iter()
                .map(|i| synthetic_value(seed, stream, i, lo, hi))
                .collect();
            return Tensor::from_f32(&v, shape);
        }
        DType::F16 => {
            let v: Vec<f16> = (0..n as u64)
                .into_par_iter()
                .map(|i| f16::from_f32(synthetic_value(seed, stream, i, lo, hi)))
                .collect();
            bytemuck::cast_slice(&v).to_vec()
        }
        DType::BF16 => {
            let v: Vec<bf16> = (0..n as u64)
                .into_par_iter()
                .map(|i| bf16::from_f32(synthetic_value(seed, stream, i, lo, hi)))
                .collect();
            bytemuck::cast_slice(&v).to_vec()
        }
    };
    Tensor::from_bytes(&bytes, shape, dtype)
}

/// Named model shapes: `tiny` (stories260K-like), `small` (a few million parameters),
/// `llama2-7b`, `llama2-13b`, `llama2-70b`, `llama3-8b`.
pub fn preset(name: &str) -> Result<ModelConfig> {
    let base = |dim, hidden, layers, heads, kv, vocab, seq, theta: f32| ModelConfig {
        dim,
        hidden_dim: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim: dim / heads,
        vocab_size: vocab,
        max_seq_len: seq,
        rope_theta: theta,
        rope_style: RopeStyle::RotateHalf,
        norm_eps: 1e-5,
        tied_embeddings: false,
        qkv_bias: false,
        bos_token: Some(1),
        eos_tokens: vec![2],
    };
    Ok(match name {
        "tiny" => ModelConfig {
            rope_style: RopeStyle::Interleaved,
            tied_embeddings: true,
            ..base(64, 172, 5, 8, 4, 512, 512, 10000.0)
        },
        "small" => base(256, 688, 4, 8, 2, 32000, 1024, 10000.0),
        "llama2-7b" => base(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0),
        "llama2-13b" => base(5120, 13824, 40, 40, 40, 32000, 4096, 10000.0),
        "llama2-70b" => base(8192, 28672, 80, 64, 8, 32000, 4096, 10000.0),
        "llama3-8b" => base(4096, 14336, 32, 32, 8, 128256, 8192, 500000.0),
        other => {
            return Err(Error::invalid(format!(
                "unknown synthetic preset '{other}' (known: tiny, small, llama2-7b, llama2-13b, llama2-70b, llama3-8b)"
            )))
        }
    })
}

/// A full synthetic model of shape `config`, every tensor drawn from `seed`.
pub fn synthetic_weights(config: &ModelConfig, seed: u64, dtype: DType) -> Result<ModelWeights> {
    config.validate()?;
    let c = config;
    let (d, h, q, kv, v) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.vocab_size);
    let mut stream = 0u64;
    let mut next = |shape: Vec<usize>, lo: f32, hi: f32, dt: DType| {
        stream += 1;
        synthetic_tensor(seed, stream, shape, lo, hi, dt)
    };
    let mat =
        |next: &mut dyn FnMut(Vec<usize>, f32, f32, DType) -> Tensor, out: usize, inp: usize| {
            let a = (3.0 / inp as f32).sqrt();
            next(vec![out, inp], -a, a, dtype)
        };
    let embedding = next(vec![v, d], -1.0, 1.0, dtype);
    let mut layers = Vec::with_capacity(c.n_layers);
    for _ in 0..c.n_layers {
        let attn_norm = next(vec![d], 0.8, 1.2, DType::F32);
        let wq = mat(&mut next, q, d);
        let wk = mat(&mut next, kv, d);
        let wv = mat(&mut next, kv, d);
        let wo = mat(&mut next, d, q);
        let (bq, bk, bv) = if c.qkv_bias {
            (
                Some(next(vec![q], -0.1, 0.1, DType::F32)),
                Some(next(vec![kv], -0.1, 0.1, DType::F32)),
                Some(next(vec![kv], -0.1, 0.1, DType::F32)),
            )
        } else {
            (None, None, None)
        };
        let ffn_norm = next(vec![d], 0.8, 1.2, DType::F32);
        let w_gate = mat(&mut next, h, d);
        let w_up = mat(&mut next, h, d);
        let w_down = mat(&mut next, d, h);
        layers.push(LayerWeights {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            bq,
            bk,
            bv,
            ffn_norm,
            w_gate,
            w_down,
            w_up,
        });
    }
    let final_norm = next(vec![d], 0.8, 1.2, DType::F32);
    let classifier = if c.tied_embeddings {
        None
    } else {
        Some(mat(&mut next, v, d))
    };
    let w = ModelWeights {
        config: c.clone(),
        embedding,
        layers,
        final_norm,
        classifier,
    };
    w.check_shapes()?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_is_seeded_nonzero_and_shaped() {
        let c = preset("tiny").unwrap();
        let a = synthetic_weights(&c, 3, DType::F32).unwrap();
        let b = synthetic_weights(&c, 3, DType::F32).unwrap();
        let other = synthetic_weights(&c, 4, DType::F32).unwrap();
        assert_eq!(a.layers[2].wq.to_f32_vec(), b.layers[2].wq.to_f32_vec());
        assert_ne!(a.layers[2].wq.to_f32_vec(), other.layers[2].wq.to_f32_vec());
        let wq = a.layers[0].wq.to_f32_vec();
        assert!(wq
            .iter()
            .all(|&x| x != 0.0 || wq.iter().filter(|&&y| y == 0.0).count() < 2));
        let bound = (3.0f32 / 64.0).sqrt();
        assert!(wq.iter().all(|x| x.abs() <= bound));
        assert_ne!(a.layers[0].wq.to_f32_vec(), a.layers[0].wk.to_f32_vec()[..]);
    }

    #[test]
    fn unknown_preset_is_named() {
        assert!(preset("llama9").unwrap_err().to_string().contains("llama9"));
        for p in [
            "tiny",
            "small",
            "llama2-7b",
            "llama2-13b",
            "llama2-70b",
            "llama3-8b",
        ] {
            preset(p).unwrap().validate().unwrap();
        }
        assert!(preset("llama2-7b").unwrap().parameter_count() > 6_000_000_000);
    }
}
