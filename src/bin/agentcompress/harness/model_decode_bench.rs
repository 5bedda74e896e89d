//! Prefill and decode speed of a real model: the weights of a model file (llama2.c, GGUF,
//! Hugging Face directory) turned into each timed variant, or one precision of a variant
//! directory, then a fixed prompt prefilled and greedy tokens decoded from it, repeated, with
//! the median of each reported.

use agentcompress::backend::Backend;
use agentcompress::engine::Model;
use agentcompress::model::load::{detect_format, load_model, ModelFormat};
use agentcompress::model::ModelWeights;
use agentcompress::quant::{quantize_model, Precision, QuantConfig, WeightMatrix};
use agentcompress::store::{LoadOptions, Manifest};
use agentcompress::{Error, Result};
use std::path::Path;
use std::time::Instant;

/// Where a model's variants come from: dense weights quantized on request, or the packed
/// variants of a variant directory.
pub enum ModelSource<'a> {
    /// Dense weights loaded from a model file (every precision is derived from them).
    Dense(Box<ModelWeights>),
    /// A variant directory; each precision is loaded as written.
    Variants(&'a Path),
}

impl<'a> ModelSource<'a> {
    /// Opens `path` (any format the engine loads).
    pub fn open(path: &'a Path) -> Result<Self> {
        Ok(match detect_format(path)? {
            ModelFormat::VariantStore => ModelSource::Variants(path),
            _ => ModelSource::Dense(Box::new(load_model(path)?)),
        })
    }

    /// The weights of precision `p`, keeping only the first `layers` blocks when given
    /// (`Some(0)` is an error).
    pub fn variant(
        &self,
        p: Precision,
        cfg: &QuantConfig,
        layers: Option<usize>,
    ) -> Result<ModelWeights<WeightMatrix>> {
        let mut w = match self {
            ModelSource::Dense(w) => quantize_model(w, p, cfg, None)?,
            ModelSource::Variants(dir) => {
                Manifest::read(dir)?
                    .listed(dir, p)?
                    .load(LoadOptions::default())?
                    .0
            }
        };
        if let Some(n) = layers {
            if n == 0 {
                return Err(Error::invalid("--layers must be at least 1"));
            }
            w.layers.truncate(n);
            w.config.n_layers = w.layers.len();
        }
        Ok(w)
    }
}

/// Medians of one variant's prefill and decode runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefillDecode {
    /// The variant.
    pub precision: Precision,
    /// Weight bytes one decode step reads ([`super::decode_bench::bytes_per_token`]).
    pub bytes_per_token: u64,
    /// Median prompt tokens per second of the prefill.
    pub prefill_tok_s: f64,
    /// Median greedy tokens per second after the prompt.
    pub decode_tok_s: f64,
    /// Prompt tokens per run.
    pub prompt_tokens: usize,
    /// Greedy tokens timed per run.
    pub steps: usize,
}

impl PrefillDecode {
    /// Tokens per second if every weight byte were read once per token at `copy_gbps`.
    pub fn floor_tok_s(&self, copy_gbps: f64) -> f64 {
        copy_gbps * 1e9 / self.bytes_per_token as f64
    }
}

/// The median of `v` (the mean of the middle two for an even count); `v` is not empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A deterministic prompt of `n` token ids spread over the vocabulary (avoiding the first few
/// ids, which are control tokens in most vocabularies).
pub fn bench_prompt(n: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(16).max(1) as u64;
    (0..n as u64)
        .map(|i| (16 + (i * 7919 + 13) % span).min(vocab as u64 - 1) as u32)
        .collect()
}

/// The context one run needs, or an error when the model's is shorter (or a count is 0).
fn check_run<B: Backend>(model: &Model<B>, prompt_tokens: usize, steps: usize) -> Result<usize> {
    if prompt_tokens == 0 || steps == 0 {
        return Err(Error::invalid(
            "the decode benchmark needs a prompt and steps of at least 1",
        ));
    }
    let ctx = prompt_tokens + steps;
    if ctx > model.config().max_seq_len {
        return Err(Error::invalid(format!(
            "{prompt_tokens} prompt tokens + {steps} steps exceed the model's context of {}",
            model.config().max_seq_len
        )));
    }
    Ok(ctx)
}

/// One run on a fresh sequence: the `prompt_tokens`-token prompt prefilled in one chunk, then
/// `steps` greedy tokens, one step each. Returns (prefill, decode) tokens per second.
pub fn time_run<B: Backend>(
    model: &Model<B>,
    prompt_tokens: usize,
    steps: usize,
) -> Result<(f64, f64)> {
    let ctx = check_run(model, prompt_tokens, steps)?;
    let prompt = bench_prompt(prompt_tokens, model.config().vocab_size);
    let mut st = model.new_state_with_context(prompt_tokens, ctx)?;
    model.backend().synchronize()?;
    let t = Instant::now();
    let logits = model.forward(&mut st, &prompt, false)?;
    model.backend().synchronize()?;
    let prefill = prompt_tokens as f64 / t.elapsed().as_secs_f64();
    let mut tok = agentcompress::backend::cpu::argmax(&logits) as u32;
    let t = Instant::now();
    for _ in 0..steps {
        tok = model.step_greedy(&mut st, tok)?;
    }
    model.backend().synchronize()?;
    Ok((prefill, steps as f64 / t.elapsed().as_secs_f64()))
}

/// Times `repeats` runs of every model in `models` (the same variant on different backend
/// settings), interleaved run by run so that a change in the machine's load falls on all of
/// them alike. Returns each model's medians, in order.
pub fn time_interleaved<B: Backend>(
    models: &[Model<B>],
    precision: Precision,
    bytes_per_token: u64,
    prompt_tokens: usize,
    steps: usize,
    repeats: usize,
) -> Result<Vec<PrefillDecode>> {
    if repeats == 0 {
        return Err(Error::invalid(
            "the decode benchmark needs at least 1 repeat",
        ));
    }
    for m in models {
        check_run(m, prompt_tokens, steps)?;
    }
    let mut samples = vec![(Vec::new(), Vec::new()); models.len()];
    for _ in 0..repeats {
        for (m, (pre, dec)) in models.iter().zip(samples.iter_mut()) {
            let (p, d) = time_run(m, prompt_tokens, steps)?;
            pre.push(p);
            dec.push(d);
        }
    }
    Ok(samples
        .into_iter()
        .map(|(mut pre, mut dec)| PrefillDecode {
            precision,
            bytes_per_token,
            prefill_tok_s: median(&mut pre),
            decode_tok_s: median(&mut dec),
            prompt_tokens,
            steps,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::decode_bench::bytes_per_token;
    use agentcompress::backend::cpu::{CpuBackend, KvPrecision, Threading};

    fn time_weights(
        w: &ModelWeights<WeightMatrix>,
        p: Precision,
        prompt: usize,
        steps: usize,
        repeats: usize,
    ) -> Result<PrefillDecode> {
        let models = [
            Model::new(CpuBackend::new(), w)?,
            Model::new(
                CpuBackend::with_kv(KvPrecision::F32).with_threading(Threading::Rayon),
                w,
            )?,
        ];
        let r = time_interleaved(&models, p, bytes_per_token(w), prompt, steps, repeats)?;
        assert_eq!(r.len(), 2);
        Ok(r[0].clone())
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn prompt_ids_stay_inside_small_vocabularies() {
        for vocab in [1, 5, 17, 512, 49152] {
            let p = bench_prompt(64, vocab);
            assert_eq!(p.len(), 64);
            assert!(p.iter().all(|&t| (t as usize) < vocab), "{vocab}: {p:?}");
        }
    }

    #[test]
    fn stories260k_times_each_variant_and_too_long_runs_are_errors() {
        let Some(dir) = crate::harness::test_models::stories260k_dir() else {
            return;
        };
        let path = dir.join("stories260K.bin");
        let src = ModelSource::open(&path).unwrap();
        let cfg = QuantConfig::default();
        for p in [Precision::Fp16, Precision::Int4] {
            let w = src.variant(p, &cfg, Some(2)).unwrap();
            assert_eq!(w.config.n_layers, 2);
            let r = time_weights(&w, p, 16, 8, 3).unwrap();
            assert!(r.prefill_tok_s > 0.0 && r.decode_tok_s > 0.0, "{r:?}");
            assert_eq!((r.prompt_tokens, r.steps), (16, 8));
        }
        assert!(src.variant(Precision::Fp16, &cfg, Some(0)).is_err());
        let w = src.variant(Precision::Fp16, &cfg, None).unwrap();
        let e = time_weights(&w, Precision::Fp16, 500, 100, 1).unwrap_err();
        assert!(e.to_string().contains("exceed the model's context"), "{e}");
    }
}
