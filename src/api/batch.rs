//! Continuous batching through the API: a [`BatchSession`] decodes many requests on one
//! variant together (one multi-row step per iteration, requests joining and leaving between
//! steps), and the engine routes, pins and counts requests served that way.

use super::runner::DynBatch;
use super::types::Route;
use super::{single_route, Engine, Models};
use crate::engine::{BatchEvent, GenerateParams, SeqId};
use crate::quant::Precision;
use crate::{Error, Result};

/// Sequences decoding together on one variant of an engine (see
/// [`BatchDecoder`](crate::engine::BatchDecoder)). It holds the variant's model, so it stays
/// usable while the engine serves other requests; it is `Send` (one thread drives it).
pub struct BatchSession {
    inner: Box<dyn DynBatch>,
    precision: Precision,
}

impl BatchSession {
    /// The variant this session decodes on.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Checks `prompt` for a new sequence (the same rules and errors as
    /// [`Engine::generate_ids`]: an empty prompt, ids outside the vocabulary, a prompt beyond
    /// the context). The next steps prefill it in chunks beside the decoding sequences; its
    /// first token comes out of the step after its prompt is in.
    pub fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
        self.inner.join(prompt, params)
    }

    /// One step of every live sequence in one multi-row pass (a token of each decoding
    /// sequence, a prompt chunk of each joining one): an event for every sequence that
    /// emitted a token or finished; the ones that finished are gone after it.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        self.inner.step()
    }

    /// Ends sequence `id` now; `false` when it is not live.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        self.inner.cancel(id)
    }

    /// Sets the most prompt tokens one step feeds over all joining sequences (default
    /// [`DEFAULT_PREFILL_PER_STEP`](crate::engine::DEFAULT_PREFILL_PER_STEP)): more shortens
    /// the time to a joining request's first token, fewer keeps the decoding ones' steps
    /// short. At least 1.
    pub fn set_prefill_per_step(&mut self, tokens: usize) -> Result<()> {
        self.inner.set_prefill_per_step(tokens)
    }

    /// Live sequences.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no sequence is live.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// Sequences the last step ran together.
    pub fn last_step_rows(&self) -> usize {
        self.inner.last_step_rows()
    }

    /// The most sequences any step of this session ran together.
    pub fn max_step_rows(&self) -> usize {
        self.inner.max_step_rows()
    }

    /// Prompt tokens this session took from other sequences' caches instead of feeding them
    /// ([`BatchDecoder::reused_prompt_tokens`](crate::engine::BatchDecoder::reused_prompt_tokens)).
    pub fn reused_prompt_tokens(&self) -> usize {
        self.inner.reused_prompt_tokens()
    }
}

impl Engine {
    /// Decides which variant would serve a task encoded as `ids`, against `quality_target`
    /// (the router's configured target when `None`; it must lie in [0, 1]). A single-model
    /// engine returns its one variant.
    pub fn route_ids(&self, ids: &[u32], quality_target: Option<f32>) -> Result<Route> {
        if ids.is_empty() {
            return Err(Error::invalid("task has no tokens"));
        }
        if let Some(t) = quality_target {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::invalid(format!(
                    "quality target {t} is outside [0, 1]"
                )));
            }
        }
        match &self.models {
            Models::Single { precision, .. } => Ok(single_route(*precision)),
            Models::Routed(r) => r.route_for(ids, quality_target),
        }
    }

    /// The route of a request that pins variant `p`: no controller runs; `swap` says whether
    /// `p` must be loaded. A single-model engine accepts only its own precision.
    pub fn pinned_route(&self, p: Precision) -> Result<Route> {
        match &self.models {
            Models::Single { precision, .. } if *precision == p => {
                let mut route = single_route(p);
                route.reasons = vec![format!("pinned to {p} by the request")];
                Ok(route)
            }
            Models::Single { precision, .. } => Err(Error::invalid(format!(
                "this engine holds only the {precision} variant, not {p}"
            ))),
            Models::Routed(r) => r.pinned(p),
        }
    }

    /// Makes variant `p` resident (a swap when it was not) and opens a batching session on
    /// it. A single-model engine accepts only its own precision.
    pub fn batch_session(&self, p: Precision) -> Result<BatchSession> {
        let tok = self.tokenizer.clone().ok_or_else(|| {
            Error::invalid(format!(
                "no tokenizer for {}: pass one explicitly",
                self.source
            ))
        })?;
        let model = match &self.models {
            Models::Single { model, precision } if *precision == p => model.clone(),
            Models::Single { precision, .. } => {
                return Err(Error::invalid(format!(
                    "this engine holds only the {precision} variant, not {p}"
                )))
            }
            Models::Routed(r) => r.acquire(p)?.0,
        };
        Ok(BatchSession {
            inner: model.batch_decoder(tok),
            precision: p,
        })
    }

    /// Counts a request served outside [`Engine::run`] (through a [`BatchSession`]) in the
    /// engine's statistics: a task on `route.precision`, its generated tokens, a hit or a
    /// swap, and its expected cost.
    pub fn record_served(&self, route: &Route, generated_tokens: usize) -> Result<()> {
        self.count_task(route, generated_tokens, false)
    }
}
