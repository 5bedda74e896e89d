//! Speculative decoding: a cheaper draft model of the same vocabulary proposes `k` tokens,
//! the target checks all of them in one forward of `k + 1` rows, and the longest agreeing
//! prefix plus the target's own next token is kept. The target's KV cache keeps only the
//! kept tokens; the draft's is rolled back past a rejection (and given the last draft token
//! it never ran when all were kept).
//!
//! Greedy output is token for token the target's own greedy output; with sampling the
//! acceptance rule of [`super::spec_sampling`] makes every token distributed as the target's.
//! Limits are those of [`generate`](fn@super::generate): the same `max_new_tokens`, context,
//! EOS and cancellation, so the result has the same length and end reason.

use super::draft_len::DraftLenChooser;
use super::generate::{plan, Plan};
use super::spec_sampling::{accept_or_resample, distribution, draw};
use super::{
    DraftLen, DraftLenMemory, GenerateOutput, GenerateParams, Model, SpeculationStats, TokenEvent,
};
use crate::backend::cpu::argmax;
use crate::backend::Backend;
use crate::model::tokenizer::{StreamDecoder, Tokenizer};
use crate::util::rng::Rng;
use crate::{Error, Result};
use std::time::{Duration, Instant};

/// How speculation runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeculativeParams {
    /// Draft tokens per verify.
    pub draft_len: DraftLen,
    /// Where an adaptive draft length starts from and leaves what it learnt (none: every run
    /// starts from the prior).
    pub memory: Option<DraftLenMemory>,
}

/// Generates from `prompt_ids` with `target`, drafting with `draft` (same vocabulary, same
/// backend): the output of [`generate`](super::generate::generate) on `target` (identical tokens when
/// greedy, identically distributed when sampling), with
/// [`GenerateOutput::speculation`] set.
pub fn generate_speculative<B: Backend>(
    target: &Model<B>,
    draft: &Model<B>,
    tokenizer: &dyn Tokenizer,
    prompt_ids: &[u32],
    params: &GenerateParams,
    spec: &SpeculativeParams,
    on_token: impl FnMut(TokenEvent<'_>) -> bool,
) -> Result<GenerateOutput> {
    let cfg = target.config();
    let dcfg = draft.config();
    if dcfg.vocab_size != cfg.vocab_size {
        return Err(Error::invalid(format!(
            "the draft model's vocabulary of {} tokens differs from the target's {}",
            dcfg.vocab_size, cfg.vocab_size
        )));
    }
    if let DraftLen::Fixed(0) | DraftLen::Adaptive(0) = spec.draft_len {
        return Err(Error::invalid("the draft length must be at least 1 token"));
    }
    params.sampling.validate()?;
    let Plan {
        prompt: prompt_ids,
        dropped,
        context,
        limit: steps,
        eos,
    } = plan(cfg, tokenizer, prompt_ids, params)?;
    if dcfg.max_seq_len < context {
        return Err(Error::invalid(format!(
            "the draft model's context of {} tokens is shorter than the {context} this \
             generation may use",
            dcfg.max_seq_len
        )));
    }
    let room = context - prompt_ids.len();
    let mut run = Run {
        target,
        draft,
        t_state: target.new_state_with_context(params.prefill_chunk, context)?,
        d_state: draft.new_state_with_context(params.prefill_chunk, context)?,
        params,
        rng: Rng::new(params.sampling.seed),
        vocab: cfg.vocab_size,
        scratch: Scratch::default(),
        out: GenerateOutput {
            prompt_ids: prompt_ids.to_vec(),
            context,
            context_limited: params.max_new_tokens > room,
            prompt_tokens_dropped: dropped,
            speculation: Some(SpeculationStats::default()),
            ..Default::default()
        },
        decoder: StreamDecoder::new(&prompt_ids),
        tokenizer,
        eos,
        steps,
        on_token,
        stopped: false,
    };
    if steps == 0 {
        return Ok(run.out);
    }
    let t0 = Instant::now();
    let logits = target.forward(&mut run.t_state, &prompt_ids, false)?;
    draft.forward(&mut run.d_state, &prompt_ids, false)?;
    target.backend().synchronize()?;
    run.out.prefill_time = t0.elapsed();
    let t1 = Instant::now();
    let first = run.pick(&logits);
    run.decode(first, spec)?;
    run.finish()?;
    target.backend().synchronize()?;
    run.out.decode_time = t1.elapsed();
    Ok(run.out)
}

/// Host buffers reused every round.
#[derive(Default)]
struct Scratch {
    /// The draft's distributions of the round, `[k, vocab]` (sampling only).
    q: Vec<f32>,
    /// The target's distribution of one verified row.
    p: Vec<f32>,
    /// The draft's logits of one step.
    logits: Vec<f32>,
    /// The target's logits of one verify, `[k + 1, vocab]`.
    verify: Vec<f32>,
    residual: Vec<f32>,
    sort: Vec<(f32, u32)>,
}

/// One speculative generation in progress.
struct Run<'a, B: Backend, F> {
    target: &'a Model<B>,
    draft: &'a Model<B>,
    t_state: super::State<B>,
    d_state: super::State<B>,
    params: &'a GenerateParams,
    rng: Rng,
    vocab: usize,
    scratch: Scratch,
    out: GenerateOutput,
    decoder: StreamDecoder,
    tokenizer: &'a dyn Tokenizer,
    eos: Vec<u32>,
    steps: usize,
    on_token: F,
    /// EOS, the limit or the callback ended generation.
    stopped: bool,
}

impl<B: Backend, F: FnMut(TokenEvent<'_>) -> bool> Run<'_, B, F> {
    fn greedy(&self) -> bool {
        self.params.sampling.is_greedy()
    }

    /// The target's token for `logits` (argmax, or a draw from its distribution).
    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.greedy() {
            return argmax(logits) as u32;
        }
        let s = &mut self.scratch;
        distribution(logits, &self.params.sampling, &mut s.p, &mut s.sort);
        draw(&s.p, &mut self.rng)
    }

    /// Emits `token` as plain generation would: EOS ends without emitting, the callback may
    /// stop, and the limit ends after it.
    fn emit(&mut self, token: u32) -> Result<()> {
        if self.eos.contains(&token) {
            self.out.hit_eos = true;
            self.stopped = true;
            return Ok(());
        }
        let index = self.out.ids.len();
        self.out.ids.push(token);
        let piece = self.decoder.push(self.tokenizer, token)?;
        self.out.text.push_str(&piece);
        if !(self.on_token)(TokenEvent {
            id: token,
            text: &piece,
            index,
        }) {
            self.out.cancelled = true;
            self.stopped = true;
        }
        if self.out.ids.len() == self.steps {
            self.stopped = true;
        }
        Ok(())
    }

    /// The decode loop. `next` is the target's next token, in neither cache yet; `pending`
    /// holds the tokens the draft's cache lacks before it.
    fn decode(&mut self, next: u32, spec: &SpeculativeParams) -> Result<()> {
        let mut chooser = match &spec.memory {
            Some(m) => m.chooser(spec.draft_len),
            None => DraftLenChooser::new(spec.draft_len),
        };
        let done = self.decode_rounds(next, spec, &mut chooser);
        if let Some(m) = &spec.memory {
            m.keep(&chooser);
        }
        done
    }

    /// The rounds of [`Self::decode`], drafting as `chooser` says.
    fn decode_rounds(
        &mut self,
        mut next: u32,
        spec: &SpeculativeParams,
        chooser: &mut DraftLenChooser,
    ) -> Result<()> {
        let mut pending: Vec<u32> = Vec::new();
        let mut drafts: Vec<u32> = Vec::new();
        loop {
            self.emit(next)?;
            if self.stopped {
                return Ok(());
            }
            // Drafting more than the tokens still wanted after the round's own next token
            // would be wasted, and also keeps the verify within the context: the target then
            // never holds more tokens than plain generation does.
            let wanted = self.steps - self.out.ids.len();
            let k = chooser.next().min(wanted - 1);
            pending.push(next);
            let t0 = Instant::now();
            if k > 0 {
                self.draft_tokens(&pending, k, &mut drafts)?;
                pending.clear();
            } else {
                drafts.clear();
            }
            let base = self.t_state.pos();
            let mut rows = Vec::with_capacity(k + 1);
            rows.push(next);
            rows.extend_from_slice(&drafts);
            let t1 = Instant::now();
            let mut logits = std::mem::take(&mut self.scratch.verify);
            let verified = self
                .target
                .forward_into(&mut self.t_state, &rows, true, &mut logits);
            if verified.is_ok() && !matches!(spec.draft_len, DraftLen::Fixed(_)) {
                self.target.backend().synchronize()?;
            }
            let t2 = Instant::now();
            let checked = verified.map(|()| self.verify(&drafts, &logits));
            self.scratch.verify = logits;
            let (accepted, following) = checked?;
            self.t_state.truncate(base + 1 + accepted);
            if accepted < k {
                self.d_state.truncate(base + 1 + accepted);
            } else if k > 0 {
                pending.push(drafts[k - 1]);
            }
            self.record(k, accepted, t1 - t0, t2 - t1, chooser);
            for &token in &drafts[..accepted] {
                self.emit(token)?;
                if self.stopped {
                    return Ok(());
                }
            }
            next = following;
        }
    }

    /// Runs the draft model over `pending` (the tokens its cache lacks, ending with the
    /// round's next token) and `k - 1` of its own proposals, writing `k` proposals to
    /// `drafts` (and their distributions to the scratch when sampling).
    fn draft_tokens(&mut self, pending: &[u32], k: usize, drafts: &mut Vec<u32>) -> Result<()> {
        drafts.clear();
        let vocab = self.vocab;
        let greedy = self.greedy();
        if !greedy {
            self.scratch.q.clear();
            self.scratch.q.resize(k * vocab, 0.0);
        }
        for j in 0..k {
            let token = if j == 0 && pending.len() > 1 {
                self.draft.forward_into(
                    &mut self.d_state,
                    pending,
                    false,
                    &mut self.scratch.logits,
                )?;
                None
            } else {
                let input = if j == 0 { pending[0] } else { drafts[j - 1] };
                if greedy {
                    Some(self.draft.step_greedy(&mut self.d_state, input)?)
                } else {
                    self.scratch.logits.resize(vocab, 0.0);
                    self.draft
                        .step(&mut self.d_state, input, &mut self.scratch.logits)?;
                    None
                }
            };
            let token = match token {
                Some(t) => t,
                None if greedy => argmax(&self.scratch.logits) as u32,
                None => {
                    let s = &mut self.scratch;
                    distribution(&s.logits, &self.params.sampling, &mut s.p, &mut s.sort);
                    s.q[j * vocab..(j + 1) * vocab].copy_from_slice(&s.p);
                    draw(&s.p, &mut self.rng)
                }
            };
            drafts.push(token);
        }
        Ok(())
    }

    /// Checks `drafts` against the target's rows `logits` (`[drafts + 1, vocab]`): how many
    /// are kept, and the target's token after them.
    fn verify(&mut self, drafts: &[u32], logits: &[f32]) -> (usize, u32) {
        let vocab = self.vocab;
        for (i, &x) in drafts.iter().enumerate() {
            let row = &logits[i * vocab..(i + 1) * vocab];
            if self.greedy() {
                let t = argmax(row) as u32;
                if t != x {
                    return (i, t);
                }
                continue;
            }
            let s = &mut self.scratch;
            distribution(row, &self.params.sampling, &mut s.p, &mut s.sort);
            let q = &s.q[i * vocab..(i + 1) * vocab];
            if let Some(t) = accept_or_resample(x, &s.p, q, &mut self.rng, &mut s.residual) {
                return (i, t);
            }
        }
        let k = drafts.len();
        (k, self.pick(&logits[k * vocab..(k + 1) * vocab]))
    }

    fn record(
        &mut self,
        k: usize,
        accepted: usize,
        draft: Duration,
        verify: Duration,
        chooser: &mut DraftLenChooser,
    ) {
        chooser.record(k, accepted, draft, verify);
        if let Some(st) = self.out.speculation.as_mut() {
            st.drafted += k as u64;
            st.accepted += accepted as u64;
            st.verifies += 1;
            if accepted < k {
                if st.rejections_at.len() <= accepted {
                    st.rejections_at.resize(accepted + 1, 0);
                }
                st.rejections_at[accepted] += 1;
            }
            st.draft_time += draft;
            st.verify_time += verify;
        }
    }

    /// Flushes text held back in the middle of a multi-byte character, as plain generation
    /// does.
    fn finish(&mut self) -> Result<()> {
        let tail = self.decoder.finish(self.tokenizer)?;
        if !tail.is_empty() {
            self.out.text.push_str(&tail);
            (self.on_token)(TokenEvent {
                id: *self.out.ids.last().unwrap_or(&0),
                text: &tail,
                index: self.out.ids.len().saturating_sub(1),
            });
        }
        Ok(())
    }
}
