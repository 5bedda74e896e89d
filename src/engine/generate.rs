//! Generation: prefill the prompt, then decode token by token until EOS or the limit,
//! streaming each token to a callback.

use super::{Model, Sampler, SamplingParams};
use crate::backend::Backend;
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// How tokens are picked.
    pub sampling: SamplingParams,
    /// Stop at the model's end-of-sequence token.
    pub stop_at_eos: bool,
    /// Rows per prefill forward call.
    pub prefill_chunk: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 128,
            sampling: SamplingParams::default(),
            stop_at_eos: true,
            prefill_chunk: 256,
        }
    }
}

/// One generated token, as passed to the streaming callback. When generation ends in the
/// middle of a multi-byte character, one last event repeats the final token's id and index
/// and carries the text that was held back.
#[derive(Clone, Debug)]
pub struct TokenEvent<'a> {
    /// The token id.
    pub id: u32,
    /// The text this token completes (may be empty while a UTF-8 sequence is incomplete).
    pub text: &'a str,
    /// Index of the token among the generated ones.
    pub index: usize,
}

/// The result of a generation.
#[derive(Clone, Debug, Default)]
pub struct GenerateOutput {
    /// Prompt ids as fed to the model (with BOS when the tokenizer adds one).
    pub prompt_ids: Vec<u32>,
    /// Generated ids (without the prompt; EOS excluded).
    pub ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Time spent on the prompt.
    pub prefill_time: Duration,
    /// Time spent generating.
    pub decode_time: Duration,
    /// Whether generation ended at EOS (rather than the limit or a cancel).
    pub hit_eos: bool,
    /// Whether the callback stopped generation.
    pub cancelled: bool,
}

impl GenerateOutput {
    /// Decode speed in tokens per second.
    pub fn decode_tokens_per_s(&self) -> f64 {
        let s = self.decode_time.as_secs_f64();
        if s > 0.0 {
            self.ids.len() as f64 / s
        } else {
            0.0
        }
    }
}

/// Generates from `prompt_ids` (which must be non-empty: pass `[BOS]` for an empty prompt).
/// The callback receives every token; returning `false` stops generation.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tokenizer: &dyn Tokenizer,
    prompt_ids: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<GenerateOutput> {
    if prompt_ids.is_empty() {
        return Err(Error::invalid("prompt has no tokens (pass at least BOS)"));
    }
    let cfg = model.config();
    if let Some(&bad) = prompt_ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::invalid(format!(
            "prompt token {bad} is outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    let room = cfg.max_seq_len.saturating_sub(prompt_ids.len());
    let steps = params.max_new_tokens.min(room);
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut state = model.new_state(params.prefill_chunk)?;
    let eos: Vec<u32> = if params.stop_at_eos {
        let mut e = cfg.eos_tokens.clone();
        e.extend(tokenizer.eos_id());
        e
    } else {
        Vec::new()
    };

    let mut out = GenerateOutput {
        prompt_ids: prompt_ids.to_vec(),
        ..Default::default()
    };
    if steps == 0 {
        return Ok(out);
    }
    let t0 = Instant::now();
    let mut logits = model.forward(&mut state, prompt_ids, false)?;
    model.backend().synchronize()?;
    out.prefill_time = t0.elapsed();

    let t1 = Instant::now();
    let mut decoder = StreamDecoder::new(prompt_ids);
    let greedy = sampler.params().is_greedy();
    let mut next = sampler.sample(&logits);
    for index in 0..steps {
        if eos.contains(&next) {
            out.hit_eos = true;
            break;
        }
        out.ids.push(next);
        let piece = decoder.push(tokenizer, next)?;
        out.text.push_str(&piece);
        if !on_token(TokenEvent {
            id: next,
            text: &piece,
            index,
        }) {
            out.cancelled = true;
            break;
        }
        if index + 1 == steps {
            break;
        }
        next = if greedy {
            model.step_greedy(&mut state, next)?
        } else {
            model.step(&mut state, next, &mut logits)?;
            sampler.sample(&logits)
        };
    }
    let tail = decoder.finish(tokenizer)?;
    if !tail.is_empty() {
        out.text.push_str(&tail);
        on_token(TokenEvent {
            id: *out.ids.last().unwrap_or(&0),
            text: &tail,
            index: out.ids.len().saturating_sub(1),
        });
    }
    model.backend().synchronize()?;
    out.decode_time = t1.elapsed();
    Ok(out)
}
