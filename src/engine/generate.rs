//! Generation: prefill the prompt, then decode token by token until EOS or the limit,
//! streaming each token to a callback.

use super::{Model, Sampler, SamplingParams};
use crate::backend::Backend;
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// The context length [`GenerateParams::default`] asks for: the most tokens (prompt plus
/// generated) one generation may hold, whatever larger context a model file declares.
pub const DEFAULT_CONTEXT: usize = 4096;

/// What to generate.
///
/// The sequence holds at most `context` tokens (capped by the model's own context length);
/// the KV cache grows with the sequence up to that limit, so memory follows the caller's
/// limit, never the file. A prompt that does not leave room for one new token is an error
/// naming both lengths, unless `truncate_prompt` is set. A `max_new_tokens` beyond the room
/// the prompt leaves is not an error (EOS may come first): generation stops when the context
/// is full and [`GenerateOutput::context_limited`] says the limit was cut short.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// At most this many new tokens (fewer when the context fills first).
    pub max_new_tokens: usize,
    /// How tokens are picked.
    pub sampling: SamplingParams,
    /// Stop at the model's end-of-sequence token.
    pub stop_at_eos: bool,
    /// Rows per prefill forward call.
    pub prefill_chunk: usize,
    /// Most tokens the sequence may hold, prompt included (capped by the model's context).
    pub context: usize,
    /// When the prompt does not fit the context, drop its oldest tokens (keeping a leading
    /// BOS) instead of failing; [`GenerateOutput::prompt_tokens_dropped`] counts them.
    pub truncate_prompt: bool,
    /// Whether a text prompt or chat gets a BOS token when the API encodes it: `None` follows
    /// the tokenizer (`add_bos_token`), `Some(true)` always prepends the model's BOS (once),
    /// `Some(false)` never does. Generation from token ids ignores it.
    pub add_bos: Option<bool>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 128,
            sampling: SamplingParams::default(),
            stop_at_eos: true,
            prefill_chunk: 256,
            context: DEFAULT_CONTEXT,
            truncate_prompt: false,
            add_bos: None,
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
    /// The context length the generation ran with (the caller's, capped by the model's).
    pub context: usize,
    /// Whether `max_new_tokens` asked for more tokens than the context had room for after
    /// the prompt, so the limit was lowered to that room.
    pub context_limited: bool,
    /// Prompt tokens dropped from the front to fit the context (only with
    /// [`GenerateParams::truncate_prompt`]); `prompt_ids` holds what was kept.
    pub prompt_tokens_dropped: usize,
    /// What speculation did, when the tokens came from
    /// [`generate_speculative`](super::generate_speculative) (`None` for plain generation).
    pub speculation: Option<super::SpeculationStats>,
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
    let Plan {
        prompt: prompt_ids,
        dropped,
        context,
        limit: steps,
        eos,
    } = plan(model.config(), tokenizer, prompt_ids, params)?;
    let room = context - prompt_ids.len();
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut state = model.new_state_with_context(params.prefill_chunk, context)?;

    let mut out = GenerateOutput {
        prompt_ids: prompt_ids.to_vec(),
        context,
        context_limited: params.max_new_tokens > room,
        prompt_tokens_dropped: dropped,
        ..Default::default()
    };
    if steps == 0 {
        return Ok(out);
    }
    let t0 = Instant::now();
    let mut logits = model.forward(&mut state, &prompt_ids, false)?;
    model.backend().synchronize()?;
    out.prefill_time = t0.elapsed();

    let t1 = Instant::now();
    let mut decoder = StreamDecoder::new(&prompt_ids);
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

/// What every way of generating (plain, speculative, batched) settles before running: the
/// prompt as it will be fed, how many of its tokens were dropped, the context, the most tokens
/// that may be generated and the ids that end generation.
pub(super) struct Plan<'a> {
    pub(super) prompt: std::borrow::Cow<'a, [u32]>,
    pub(super) dropped: usize,
    pub(super) context: usize,
    pub(super) limit: usize,
    pub(super) eos: Vec<u32>,
}

/// Checks `prompt` (non-empty, inside the vocabulary) and `params` (a context of at least one
/// token) against a model configured as `cfg`, and settles the [`Plan`].
pub(super) fn plan<'a>(
    cfg: &crate::model::ModelConfig,
    tokenizer: &dyn Tokenizer,
    prompt: &'a [u32],
    params: &GenerateParams,
) -> Result<Plan<'a>> {
    if prompt.is_empty() {
        return Err(Error::invalid("prompt has no tokens (pass at least BOS)"));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(Error::invalid(format!(
            "prompt token {bad} is outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    if params.context == 0 {
        return Err(Error::invalid("context length must be at least 1 token"));
    }
    let context = params.context.min(cfg.max_seq_len);
    let bos = cfg.bos_token.or(tokenizer.bos_id());
    let (prompt, dropped) = fit_prompt(prompt, context, params, bos)?;
    let limit = params.max_new_tokens.min(context - prompt.len());
    let mut eos = Vec::new();
    if params.stop_at_eos {
        eos.extend(&cfg.eos_tokens);
        eos.extend(tokenizer.eos_id());
    }
    Ok(Plan {
        prompt,
        dropped,
        context,
        limit,
        eos,
    })
}

/// The prompt as it will be fed: `prompt` itself when it leaves room for a new token in
/// `context` (or fits exactly and nothing is to be generated); otherwise an error naming both
/// lengths, or with `truncate_prompt` its newest tokens (after a leading `bos`, which is kept)
/// leaving room for up to half the context of new tokens. Returns the ids and how many were
/// dropped.
fn fit_prompt<'a>(
    prompt: &'a [u32],
    context: usize,
    params: &GenerateParams,
    bos: Option<u32>,
) -> Result<(std::borrow::Cow<'a, [u32]>, usize)> {
    use std::borrow::Cow;
    let fits = prompt.len() < context || (prompt.len() == context && params.max_new_tokens == 0);
    if fits {
        return Ok((Cow::Borrowed(prompt), 0));
    }
    if !params.truncate_prompt {
        return Err(Error::invalid(format!(
            "prompt of {} tokens does not fit the context of {context} tokens with room for a \
             new token (shorten it, raise the context, or ask for truncation)",
            prompt.len()
        )));
    }
    let reserve = params.max_new_tokens.clamp(1, (context / 2).max(1));
    let keep = context.saturating_sub(reserve);
    let lead = usize::from(bos.is_some() && prompt.first() == bos.as_ref() && keep >= 2);
    if keep == 0 {
        return Err(Error::invalid(format!(
            "a context of {context} tokens leaves no room for a prompt"
        )));
    }
    let tail = &prompt[prompt.len() - (keep - lead)..];
    let mut ids = Vec::new();
    crate::model::input_file::try_reserve(&mut ids, keep)?;
    ids.extend_from_slice(&prompt[..lead]);
    ids.extend_from_slice(tail);
    Ok((Cow::Owned(ids), prompt.len() - keep))
}
