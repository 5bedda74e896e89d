//! Whole-model decode throughput of one variant: a model of a named shape whose projection
//! matrices are random codes in the variant's packed format (timing does not depend on the
//! values, and packing random codes directly avoids quantizing billions of weights), timed over
//! greedy steps beside the floor set by reading every weight once per token.

use agentcompress::backend::Backend;
use agentcompress::engine::Model;
use agentcompress::model::synthetic::{mix64, synthetic_tensor};
use agentcompress::model::{DType, LayerWeights, ModelConfig, ModelWeights, Tensor};
use agentcompress::quant::packed::{row_stride_bytes, Packed};
use agentcompress::quant::{Precision, QuantConfig, WeightMatrix};
use agentcompress::{Error, Result};
use half::f16;
use rayon::prelude::*;
use std::time::Instant;

/// One variant's measured decode speed.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeResult {
    /// The variant.
    pub precision: Precision,
    /// Weight bytes read per token: every layer matrix, the classifier, the norms and one
    /// embedding row (the KV cache is excluded: it is small at the short contexts timed here).
    pub bytes_per_token: u64,
    /// Mean wall time of one greedy decode step, seconds.
    pub seconds_per_token: f64,
    /// Greedy steps timed.
    pub steps: usize,
}

impl DecodeResult {
    /// Tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        1.0 / self.seconds_per_token
    }

    /// Bandwidth of weight reads, GB/s.
    pub fn gbps(&self) -> f64 {
        self.bytes_per_token as f64 / self.seconds_per_token / 1e9
    }

    /// Tokens per second if every weight byte were read at `copy_gbps` (read + write bytes of
    /// a device copy divided by its time, as the kernel benchmarks report it).
    pub fn floor_tokens_per_s(&self, copy_gbps: f64) -> f64 {
        copy_gbps * 1e9 / self.bytes_per_token as f64
    }
}

/// Random codes filling `n` words, drawn from `seed`/`stream`.
fn random_words(seed: u64, stream: u64, n: usize) -> Vec<u32> {
    (0..n as u64)
        .into_par_iter()
        .map(|i| mix64(seed ^ mix64(stream) ^ i) as u32)
        .collect()
}

/// A `[out, inp]` matrix of precision `p` with random codes and scales that keep the
/// dequantised weights within `±sqrt(3 / inp)` (the synthetic models' range).
pub fn random_matrix(
    p: Precision,
    cfg: &QuantConfig,
    out: usize,
    inp: usize,
    seed: u64,
    stream: u64,
) -> Result<WeightMatrix> {
    let a = (3.0 / inp as f32).sqrt();
    let Some(g) = cfg.group(p, inp) else {
        let t = synthetic_tensor(seed, stream, vec![out, inp], -a, a, DType::F16);
        return Ok(WeightMatrix::Dense(t));
    };
    let ng = inp.div_ceil(g);
    let words = random_words(seed, stream, out * row_stride_bytes(p.bits(), inp, g) / 4);
    let levels = ((1u32 << p.bits()) - 1) as f32;
    Ok(match p {
        Precision::Int8 => {
            // Random bytes are two's-complement codes in [-128, 127]; the kernels treat -128
            // like any other code, so the timing is unaffected.
            let scales = vec![f16::from_f32(a / 127.0); out * ng];
            WeightMatrix::Int8(Packed::from_parts(out, inp, g, words, scales, Vec::new())?)
        }
        Precision::Int4 | Precision::Int2 => {
            let scales = vec![f16::from_f32(2.0 * a / levels); out * ng];
            let zeros = vec![f16::from_f32(levels / 2.0); out * ng];
            if p == Precision::Int4 {
                WeightMatrix::Int4(Packed::from_parts(out, inp, g, words, scales, zeros)?)
            } else {
                WeightMatrix::Int2(Packed::from_parts(out, inp, g, words, scales, zeros)?)
            }
        }
        Precision::Fp16 => unreachable!("FP16 has no group and returned above"),
    })
}

/// A whole model of shape `config` in precision `p` with random weights (see the module docs).
/// The embedding, norms and the classifier (INT8 unless `cfg.keep_classifier_fp16` is on)
/// follow [`agentcompress::quant::quantize_model`]'s choices, so the bytes match a real variant's.
pub fn random_variant(
    config: &ModelConfig,
    p: Precision,
    cfg: &QuantConfig,
    seed: u64,
) -> Result<ModelWeights<WeightMatrix>> {
    config.validate()?;
    cfg.validate()?;
    let c = config;
    let (d, h, q, kv, v) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.vocab_size);
    let mut stream = 0u64;
    let mut mat = |out: usize, inp: usize| {
        stream += 1;
        random_matrix(p, cfg, out, inp, seed, stream)
    };
    let norm = |s: u64| synthetic_tensor(seed, 1 << 40 | s, vec![d], 0.8, 1.2, DType::F16);
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers as u64 {
        layers.push(LayerWeights {
            attn_norm: norm(2 * i),
            wq: mat(q, d)?,
            wk: mat(kv, d)?,
            wv: mat(kv, d)?,
            wo: mat(d, q)?,
            bq: None,
            bk: None,
            bv: None,
            ffn_norm: norm(2 * i + 1),
            w_gate: mat(h, d)?,
            w_up: mat(h, d)?,
            w_down: mat(d, h)?,
        });
    }
    let classifier = if cfg.keep_classifier_fp16 || p == Precision::Fp16 {
        stream += 1;
        let a = (3.0 / d as f32).sqrt();
        WeightMatrix::Dense(synthetic_tensor(
            seed,
            stream,
            vec![v, d],
            -a,
            a,
            DType::F16,
        ))
    } else {
        random_matrix(Precision::Int8, cfg, v, d, seed, stream + 1)?
    };
    let mut config = c.clone();
    config.tied_embeddings = false;
    config.qkv_bias = false;
    Ok(ModelWeights {
        config,
        embedding: synthetic_tensor(seed, 1 << 41, vec![v, d], -1.0, 1.0, DType::F16),
        layers,
        final_norm: norm(u64::MAX >> 24),
        classifier: Some(classifier),
    })
}

/// Bytes one decode step reads from the weights of `w` (see [`DecodeResult::bytes_per_token`]).
pub fn bytes_per_token(w: &ModelWeights<WeightMatrix>) -> u64 {
    let t = |t: &Tensor| t.bytes().len() as u64;
    let mut n: u64 = w
        .layers
        .iter()
        .map(|l| {
            l.matrices()
                .iter()
                .map(|(_, m)| m.byte_len() as u64)
                .sum::<u64>()
                + t(&l.attn_norm)
                + t(&l.ffn_norm)
        })
        .sum();
    n += t(&w.final_norm);
    n += t(&w.embedding) / w.config.vocab_size as u64;
    n += match &w.classifier {
        Some(m) => m.byte_len() as u64,
        None => t(&w.embedding),
    };
    n
}

/// Times `steps` greedy decode steps of `model` after a short prompt and `warmup` untimed
/// steps. `bytes_per_token` is the variant's weight traffic per step.
pub fn time_decode<B: Backend>(
    model: &Model<B>,
    precision: Precision,
    bytes_per_token: u64,
    warmup: usize,
    steps: usize,
) -> Result<DecodeResult> {
    if steps == 0 {
        return Err(Error::invalid("decode benchmark needs at least one step"));
    }
    let prompt: Vec<u32> = (0..8u32)
        .map(|i| 1 + (i * 37) % model.config().vocab_size as u32)
        .collect();
    if prompt.len() + warmup + steps + 1 > model.config().max_seq_len {
        return Err(Error::invalid(format!(
            "{} prompt + {warmup} warm-up + {steps} timed steps exceed the context of {}",
            prompt.len(),
            model.config().max_seq_len
        )));
    }
    let mut st = model.new_state(prompt.len())?;
    let logits = model.forward(&mut st, &prompt, false)?;
    let mut tok = agentcompress::backend::cpu::argmax(&logits) as u32;
    for _ in 0..warmup {
        tok = model.step_greedy(&mut st, tok)?;
    }
    model.backend().synchronize()?;
    let t = Instant::now();
    for _ in 0..steps {
        tok = model.step_greedy(&mut st, tok)?;
    }
    model.backend().synchronize()?;
    Ok(DecodeResult {
        precision,
        bytes_per_token,
        seconds_per_token: t.elapsed().as_secs_f64() / steps as f64,
        steps,
    })
}

/// Host memory copy bandwidth (read + write bytes over time) of a 256 MiB buffer, copied in
/// parallel chunks; the best of `reps`. The CPU backend's floor uses it. Both buffers are on
/// huge pages where the weight layouts are ([`huge_pages`]), so the floor is not the slower
/// of two page sizes.
pub fn host_copy_gbps(reps: usize) -> f64 {
    use agentcompress::backend::cpu::huge_pages;
    let n = 64usize << 20;
    let on_huge_pages = |fill: &dyn Fn(usize) -> f32| {
        let mut v: Vec<f32> = Vec::with_capacity(n);
        huge_pages::advise(v.as_ptr().cast(), n * 4);
        v.extend((0..n).map(fill));
        v
    };
    let src = on_huge_pages(&|i| i as f32);
    let mut dst = on_huge_pages(&|_| 0.0);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        dst.par_chunks_mut(1 << 16)
            .zip(src.par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * (n * 4) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcompress::backend::cpu::CpuBackend;
    use agentcompress::model::synthetic;

    #[test]
    fn random_variants_have_the_packed_size_of_real_ones() {
        let mut c = synthetic::preset("tiny").unwrap();
        c.max_seq_len = 64;
        let cfg = QuantConfig::default();
        let dense = synthetic::synthetic_weights(&c, 3, DType::F32).unwrap();
        for p in Precision::ALL {
            let rand = random_variant(&c, p, &cfg, 7).unwrap();
            let real = agentcompress::quant::quantize_model(&dense, p, &cfg, None).unwrap();
            let real_bytes: usize = real
                .layers
                .iter()
                .flat_map(|l| l.matrices())
                .map(|(_, m)| m.byte_len())
                .sum();
            let rand_bytes: usize = rand
                .layers
                .iter()
                .flat_map(|l| l.matrices())
                .map(|(_, m)| m.byte_len())
                .sum();
            assert_eq!(rand_bytes, real_bytes, "{p}");
            assert_eq!(rand.layers[0].wq.bits(), real.layers[0].wq.bits(), "{p}");
        }
    }

    #[test]
    fn bytes_per_token_shrinks_with_precision_and_decode_runs() {
        let mut c = synthetic::preset("tiny").unwrap();
        c.max_seq_len = 64;
        let cfg = QuantConfig::default();
        let mut last = u64::MAX;
        for p in Precision::ALL {
            let w = random_variant(&c, p, &cfg, 11).unwrap();
            let bytes = bytes_per_token(&w);
            assert!(bytes < last, "{p}: {bytes} not below {last}");
            last = bytes;
            let m = Model::new(CpuBackend::new(), &w).unwrap();
            let r = time_decode(&m, p, bytes, 1, 4).unwrap();
            assert_eq!(r.steps, 4);
            assert!(r.tokens_per_s().is_finite() && r.tokens_per_s() > 0.0);
            assert!(r.floor_tokens_per_s(10.0) > 0.0);
        }
    }

    #[test]
    fn too_many_steps_for_the_context_is_an_error() {
        let mut c = synthetic::preset("tiny").unwrap();
        c.max_seq_len = 16;
        let w = random_variant(&c, Precision::Int4, &QuantConfig::default(), 1).unwrap();
        let m = Model::new(CpuBackend::new(), &w).unwrap();
        let e = time_decode(&m, Precision::Int4, 1, 2, 32).unwrap_err();
        assert!(e.to_string().contains("exceed the context"), "{e}");
        assert!(time_decode(&m, Precision::Int4, 1, 0, 0).is_err());
    }
}
