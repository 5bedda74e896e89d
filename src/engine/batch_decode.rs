//! Continuous batching over one model: sequences join, every [`BatchDecoder::step`] feeds one
//! batched pass ([`Model::step_batch`]) with one token of each decoding sequence and a chunk
//! of each joining sequence's prompt (chunked prefill: a long prompt neither stalls the
//! decoding sequences nor waits for them), and sequences leave when they finish or are
//! cancelled. Each
//! sequence follows the same rules as [`generate`](fn@super::generate): the same prompt checks
//! and context limits, EOS handling, token limit and seeded sampler, so a greedy sequence
//! yields the ids it would yield alone (up to the rounding of multi-row products).

use super::batch::BatchScratch;
use super::forward::{Model, State};
use super::generate::{plan, GenerateParams, Plan};
use super::sampling::Sampler;
use crate::backend::Backend;
use crate::model::input_file::try_filled;
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};
use std::sync::Arc;

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

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
    /// The prompt as it is fed (after any truncation).
    prompt: Vec<u32>,
    /// Prompt tokens fed so far; the sequence decodes once all are.
    fed: usize,
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
}

/// Prompt tokens a step feeds by default: enough to prefill a chat prompt in a step or two,
/// few enough that the decoding sequences' step stays short.
pub const DEFAULT_PREFILL_PER_STEP: usize = 64;

/// Sequences decoding together on one model; see the module docs.
pub struct BatchDecoder<B: Backend> {
    model: Arc<Model<B>>,
    tokenizer: Arc<dyn Tokenizer>,
    seqs: Vec<Seq<B>>,
    scratch: Option<BatchScratch<B>>,
    /// Host copy of the last step's logits (when some sequence samples).
    logits: Vec<f32>,
    /// The last step's greedy tokens, one per sequence fed (when every sequence is greedy).
    greedy: Vec<u32>,
    /// Most prompt tokens one step feeds (over all joining sequences).
    prefill_per_step: usize,
    next_id: SeqId,
    last_rows: usize,
    max_rows: usize,
    /// Prompt tokens taken from other sequences' caches instead of being fed.
    reused: usize,
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
            greedy: Vec::new(),
            prefill_per_step: DEFAULT_PREFILL_PER_STEP,
            next_id: 0,
            last_rows: 0,
            max_rows: 0,
            reused: 0,
        }
    }

    /// Sets the most prompt tokens one step feeds, over all joining sequences (at least 1).
    pub fn set_prefill_per_step(&mut self, tokens: usize) -> Result<()> {
        if tokens == 0 {
            return Err(Error::invalid("a step must feed at least one prompt token"));
        }
        self.prefill_per_step = tokens;
        Ok(())
    }

    /// Checks `prompt` for a new sequence with `params` (token limit, sampling and seed, EOS,
    /// context, prompt truncation) and returns its id. The next steps prefill it in chunks;
    /// its first token comes out of the step after the one that feeds its last prompt token.
    pub fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
        let model = &self.model;
        let Plan {
            prompt,
            context,
            limit,
            eos,
            ..
        } = plan(model.config(), self.tokenizer.as_ref(), prompt, params)?;
        let sampler = Sampler::new(params.sampling.clone())?;
        // Scratch for the prompt chunks this sequence may feed in one step.
        let chunk = self.prefill_per_step.min(prompt.len());
        let state = model.new_batch_state(chunk, context)?;
        let mut ids = Vec::new();
        crate::model::input_file::try_reserve(&mut ids, prompt.len())?;
        ids.extend_from_slice(&prompt);
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.try_reserve(1).map_err(|_| {
            Error::OutOfMemory("no memory for another sequence in the batch".into())
        })?;
        self.seqs.push(Seq {
            id,
            state,
            decoder: StreamDecoder::new(&ids),
            // Nothing to generate: nothing to prefill either (as `generate` does).
            fed: if limit == 0 { ids.len() } else { 0 },
            prompt: ids,
            sampler,
            pending: 0,
            generated: 0,
            limit,
            eos,
        });
        Ok(id)
    }

    /// One step: a joining sequence first takes any prompt prefix another live sequence
    /// already holds (its key/value rows copied, not recomputed); each decoding sequence
    /// emits the token it has pending (or ends at EOS or
    /// its limit), and the ones that go on are fed that token, together with the next chunk
    /// of each joining sequence's prompt, in one batched pass, which samples every decoding
    /// sequence's next token (and a joining sequence's first, once its prompt is in).
    /// Returns an event for every sequence that emitted a token or finished; finished
    /// sequences are removed.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        self.reuse_prefixes()?;
        let tok = self.tokenizer.as_ref();
        let mut events = Vec::with_capacity(self.seqs.len());
        let mut feed = Vec::with_capacity(self.seqs.len());
        let takes = self.prompt_takes();
        for (s, &take) in self.seqs.iter_mut().zip(&takes) {
            if s.fed < s.prompt.len() {
                feed.push(Feed::Prompt(take));
                continue;
            }
            let mut ev = BatchEvent {
                id: s.id,
                token: None,
                text: String::new(),
                finish: None,
                prompt_tokens: s.prompt.len(),
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
                feed.push(Feed::Done);
            } else {
                feed.push(Feed::Token);
            }
            events.push(ev);
        }
        let seqs = feed.iter().filter(|f| f.rows() > 0).count();
        if seqs > 0 {
            self.run(&feed, seqs)?;
        }
        self.last_rows = seqs;
        self.max_rows = self.max_rows.max(seqs);
        let mut keep = feed.into_iter();
        self.seqs
            .retain(|_| !matches!(keep.next(), Some(Feed::Done)));
        Ok(events)
    }

    /// Prefix reuse: a joining sequence whose prompt begins with prompt tokens another live
    /// sequence already holds in its cache (a shared system prompt, a repeated request) takes
    /// those positions' key/value rows from it instead of feeding them, all but its last
    /// prompt token (whose logits give its first token). On the CPU backend the rows are
    /// bit for bit the ones it would compute itself, so its output is unchanged; on others
    /// they agree within the rounding of multi-row products that batching already allows.
    fn reuse_prefixes(&mut self) -> Result<()> {
        for i in 0..self.seqs.len() {
            let s = &self.seqs[i];
            if s.fed + 1 >= s.prompt.len() {
                continue;
            }
            let want = &s.prompt[..s.prompt.len() - 1];
            let mut best = (s.fed, i);
            for (j, d) in self.seqs.iter().enumerate() {
                let common = common_prefix(&d.prompt[..d.fed.min(d.state.pos)], want);
                if j != i && common > best.0 {
                    best = (common, j);
                }
            }
            let (rows, j) = best;
            if j == i {
                continue;
            }
            let (s, d) = if i < j {
                let (a, b) = self.seqs.split_at_mut(j);
                (&mut a[i], &b[0])
            } else {
                let (a, b) = self.seqs.split_at_mut(i);
                (&mut b[0], &a[j])
            };
            self.model.copy_prefix(&d.state, &mut s.state, rows)?;
            self.reused += rows - s.fed;
            s.fed = rows;
        }
        Ok(())
    }

    /// Prompt tokens each sequence feeds this step (0 for a decoding one): the joining
    /// sequences in order while the step's budget lasts, except that one whose next prompt
    /// tokens a sequence before it feeds in this step too (a burst of requests with one
    /// system prompt, or the same prompt twice) waits, and takes them from that sequence's
    /// cache at the next step ([`Self::reuse_prefixes`]) rather than computing them again.
    fn prompt_takes(&self) -> Vec<usize> {
        let mut budget = self.prefill_per_step;
        let mut takes = vec![0; self.seqs.len()];
        for (i, s) in self.seqs.iter().enumerate() {
            if s.fed >= s.prompt.len() || budget == 0 {
                continue;
            }
            let want = &s.prompt[..s.prompt.len() - 1];
            let fed_ahead = self.seqs[..i]
                .iter()
                .zip(&takes)
                .any(|(d, &t)| t > 0 && common_prefix(&d.prompt[..d.fed + t], want) > s.fed);
            if fed_ahead {
                continue;
            }
            let take = budget.min(s.prompt.len() - s.fed);
            budget -= take;
            takes[i] = take;
        }
        takes
    }

    /// Feeds what `feed` marks (`seqs` sequences) in one pass and samples each sequence's
    /// next token where it has one.
    fn run(&mut self, feed: &[Feed], seqs: usize) -> Result<()> {
        let model = &self.model;
        let vocab = model.config().vocab_size;
        let rows: usize = feed.iter().map(Feed::rows).sum();
        let fits = self
            .scratch
            .as_ref()
            .is_some_and(|s| s.rows() >= rows && s.sequences() >= seqs);
        if !fits {
            self.scratch = None;
            let seq_cap = seqs.next_power_of_two();
            let row_cap = rows.next_power_of_two().max(seq_cap);
            self.scratch = Some(model.new_batch_scratch(row_cap, seq_cap)?);
        }
        let scratch = self
            .scratch
            .as_mut()
            .ok_or_else(|| Error::Internal("batch scratch missing".into()))?;
        let mut segments: Vec<&[u32]> = Vec::with_capacity(seqs);
        let mut states = Vec::with_capacity(seqs);
        for (s, f) in self.seqs.iter_mut().zip(feed) {
            match *f {
                Feed::Token => segments.push(std::slice::from_ref(&s.pending)),
                Feed::Prompt(n) if n > 0 => segments.push(&s.prompt[s.fed..s.fed + n]),
                _ => continue,
            }
            states.push(&mut s.state);
        }
        model.step_batch(&mut states, &segments, scratch)?;
        // Greedy sequences only need each row's argmax, taken where the logits are.
        let greedy = self
            .seqs
            .iter()
            .zip(feed)
            .all(|(s, f)| f.rows() == 0 || s.sampler.params().is_greedy());
        if greedy {
            if self.greedy.len() < seqs {
                self.greedy = try_filled(seqs, 0)?;
            }
            model.argmax_batch_logits(scratch, seqs, &mut self.greedy)?;
        } else {
            let len = seqs * vocab;
            if self.logits.len() < len {
                self.logits = try_filled(len, 0.0)?;
            }
            model.read_batch_logits(scratch, seqs, &mut self.logits)?;
        }
        // Row `i` of the step's outputs belongs to the `i`-th sequence fed.
        let mut row = 0;
        for (s, f) in self.seqs.iter_mut().zip(feed) {
            let i = row;
            match *f {
                Feed::Token => row += 1,
                Feed::Prompt(n) if n > 0 => {
                    row += 1;
                    s.fed += n;
                    if s.fed < s.prompt.len() {
                        continue;
                    }
                    // Decoding runs one row at a time: drop the prefill-sized scratch.
                    s.state.act = model.alloc_activations(1)?;
                }
                _ => continue,
            }
            s.pending = if greedy {
                self.greedy[i]
            } else {
                let logits = self
                    .logits
                    .get(i * vocab..(i + 1) * vocab)
                    .ok_or_else(|| Error::Internal("batch logits row missing".into()))?;
                s.sampler.sample(logits)
            };
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

    /// Sequences the last step fed through the model (decoding and joining).
    pub fn last_step_rows(&self) -> usize {
        self.last_rows
    }

    /// The most sequences any step fed through the model together.
    pub fn max_step_rows(&self) -> usize {
        self.max_rows
    }

    /// Prompt tokens taken so far from other sequences' caches instead of being fed
    /// (prefix reuse; see [`BatchDecoder::step`]).
    pub fn reused_prompt_tokens(&self) -> usize {
        self.reused
    }
}

/// What one step feeds a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    /// Its pending token (decoding).
    Token,
    /// The next `n` prompt tokens (joining; 0 when the step's prompt budget is spent).
    Prompt(usize),
    /// Nothing: it finished in this step.
    Done,
}

impl Feed {
    /// Token rows this feeds.
    fn rows(&self) -> usize {
        match *self {
            Feed::Token => 1,
            Feed::Prompt(n) => n,
            Feed::Done => 0,
        }
    }
}
