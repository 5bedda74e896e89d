//! Continuous batching over one model: sequences join (their prompt is prefilled alone),
//! every [`BatchDecoder::step`] decodes one token of each live sequence in one batched pass
//! ([`Model::step_batch`]), and sequences leave when they finish or are cancelled. Each
//! sequence follows the same rules as [`generate`](super::generate): the same prompt checks
//! and context limits, EOS handling, token limit and seeded sampler, so a greedy sequence
//! yields the ids it would yield alone (up to the rounding of multi-row products).

use super::batch::BatchScratch;
use super::forward::{Model, State};
use super::generate::{fit_prompt, GenerateParams};
use super::sampling::Sampler;
use crate::backend::Backend;
use crate::model::input_file::try_filled;
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::sync::Arc;

/// Names a sequence of a [`BatchDecoder`] (unique within it).
pub type SeqId = u64;

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Stop,
    /// The token limit was reached (the caller's, or the context's room).
    Length,
}

/// What one step did to one sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEvent {
    /// The sequence.
    pub id: SeqId,
    /// The token generated (`None` when the step ended the sequence without one: EOS, or a
    /// limit of zero tokens).
    pub token: Option<u32>,
    /// The text this token completes (may be empty while a UTF-8 sequence is incomplete);
    /// on the last event it includes any text held back until then.
    pub text: String,
    /// Set when the sequence ended with this event (it is gone from the decoder).
    pub finish: Option<FinishReason>,
    /// Tokens the sequence's prompt was fed as (after any truncation).
    pub prompt_tokens: usize,
}

/// One live sequence.
struct Seq<B: Backend> {
    id: SeqId,
    state: State<B>,
    sampler: Sampler,
    decoder: StreamDecoder,
    /// The token sampled last and not yet emitted.
    pending: u32,
    /// Tokens emitted so far.
    generated: usize,
    /// Most tokens this sequence may emit.
    limit: usize,
    /// Ids that end it.
    eos: Vec<u32>,
    prompt_tokens: usize,
}

/// Sequences decoding together on one model; see the module docs.
pub struct BatchDecoder<B: Backend> {
    model: Arc<Model<B>>,
    tokenizer: Arc<dyn Tokenizer>,
    seqs: Vec<Seq<B>>,
    scratch: Option<BatchScratch<B>>,
    /// Host copy of the last step's logits.
    logits: Vec<f32>,
    next_id: SeqId,
    last_rows: usize,
    max_rows: usize,
}

impl<B: Backend> BatchDecoder<B> {
    /// An empty decoder over `model`, decoding text with `tokenizer`.
    pub fn new(model: Arc<Model<B>>, tokenizer: Arc<dyn Tokenizer>) -> Self {
        BatchDecoder {
            model,
            tokenizer,
            seqs: Vec::new(),
            scratch: None,
            logits: Vec::new(),
            next_id: 0,
            last_rows: 0,
            max_rows: 0,
        }
    }

    /// Checks and prefills `prompt` for a new sequence with `params` (token limit, sampling
    /// and seed, EOS, context, prompt truncation) and returns its id. Its first token comes
    /// out of the next [`BatchDecoder::step`].
    pub fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
        let model = &self.model;
        let cfg = model.config();
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
        let tok = self.tokenizer.as_ref();
        let context = params.context.min(cfg.max_seq_len);
        let bos = cfg.bos_token.or(tok.bos_id());
        let (prompt, _) = fit_prompt(prompt, context, params, bos)?;
        let limit = params.max_new_tokens.min(context - prompt.len());
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let mut state = model.new_state_with_context(params.prefill_chunk, context)?;
        let logits = model.forward(&mut state, &prompt, false)?;
        // Decoding runs one row at a time on this state: drop the prefill-sized scratch.
        state.act = model.alloc_activations(1)?;
        let pending = sampler.sample(&logits);
        let eos = if params.stop_at_eos {
            let mut e = cfg.eos_tokens.clone();
            e.extend(tok.eos_id());
            e
        } else {
            Vec::new()
        };
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.try_reserve(1).map_err(|_| {
            Error::OutOfMemory("no memory for another sequence in the batch".into())
        })?;
        self.seqs.push(Seq {
            id,
            state,
            sampler,
            decoder: StreamDecoder::new(&prompt),
            pending,
            generated: 0,
            limit,
            eos,
            prompt_tokens: prompt.len(),
        });
        Ok(id)
    }

    /// One step of every live sequence: each emits the token it has pending (or ends at EOS
    /// or its limit), and the ones that go on are fed that token in one batched pass, which
    /// samples their next. Returns one event per sequence live before the step; finished
    /// sequences are removed.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        let tok = self.tokenizer.as_ref();
        let mut events = Vec::with_capacity(self.seqs.len());
        let mut feed = Vec::with_capacity(self.seqs.len());
        for s in &mut self.seqs {
            let mut ev = BatchEvent {
                id: s.id,
                token: None,
                text: String::new(),
                finish: None,
                prompt_tokens: s.prompt_tokens,
            };
            if s.generated == s.limit {
                ev.finish = Some(FinishReason::Length);
            } else if s.eos.contains(&s.pending) {
                ev.finish = Some(FinishReason::Stop);
            } else {
                ev.token = Some(s.pending);
                ev.text = s.decoder.push(tok, s.pending)?;
                s.generated += 1;
                if s.generated == s.limit {
                    ev.finish = Some(FinishReason::Length);
                }
            }
            if ev.finish.is_some() {
                ev.text.push_str(&s.decoder.finish(tok)?);
            }
            feed.push(ev.finish.is_none());
            events.push(ev);
        }
        let rows = feed.iter().filter(|&&f| f).count();
        if rows > 0 {
            self.run_rows(&feed, rows)?;
        }
        self.last_rows = rows;
        self.max_rows = self.max_rows.max(rows);
        let mut keep = feed.into_iter();
        self.seqs.retain(|_| keep.next().unwrap_or(false));
        Ok(events)
    }

    /// Feeds the pending token of every sequence marked in `feed` (`rows` of them) and
    /// samples each one's next token.
    fn run_rows(&mut self, feed: &[bool], rows: usize) -> Result<()> {
        let model = &self.model;
        let vocab = model.config().vocab_size;
        if self.scratch.as_ref().is_none_or(|s| s.rows() < rows) {
            self.scratch = None;
            self.scratch = Some(model.new_batch_scratch(rows.next_power_of_two())?);
        }
        let scratch = self
            .scratch
            .as_mut()
            .ok_or_else(|| Error::Internal("batch scratch missing".into()))?;
        let len = rows * vocab;
        if self.logits.len() < len {
            self.logits = try_filled(len, 0.0)?;
        }
        let mut tokens = Vec::with_capacity(rows);
        let mut states = Vec::with_capacity(rows);
        for (s, _) in self.seqs.iter_mut().zip(feed).filter(|(_, &f)| f) {
            tokens.push(s.pending);
            states.push(&mut s.state);
        }
        model.step_batch(&mut states, &tokens, scratch)?;
        model.read_batch_logits(scratch, rows, &mut self.logits)?;
        let fed = self.seqs.iter_mut().zip(feed).filter(|(_, &f)| f);
        for ((s, _), row) in fed.zip(self.logits.chunks(vocab)) {
            s.pending = s.sampler.sample(row);
        }
        Ok(())
    }

    /// Ends sequence `id` now; `false` when no such sequence is live.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        let before = self.seqs.len();
        self.seqs.retain(|s| s.id != id);
        self.seqs.len() != before
    }

    /// Live sequences.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether no sequence is live.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Sequences the last step fed through the model.
    pub fn last_step_rows(&self) -> usize {
        self.last_rows
    }

    /// The most sequences any step fed through the model together.
    pub fn max_step_rows(&self) -> usize {
        self.max_rows
    }
}
