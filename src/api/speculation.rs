//! Serving a variant through speculation: a cheaper variant of the same directory drafts,
//! the served variant verifies, and the output is the served variant's own.

use super::{DirectModel, DynModel, Engine, Models, Route, RunResult};
use crate::engine::{
    DraftLen, DraftLenMemory, GenerateOutput, GenerateParams, SpeculativeParams, TokenEvent,
};
use crate::model::tokenizer::ChatMessage;
use crate::quant::Precision;
use crate::{Error, Result};
use std::sync::Arc;

/// Which variant drafts for speculative serving, for which target, and how long its drafts
/// are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speculation {
    /// The variant whose output is produced by direct generation (default FP16; a routed
    /// run verifies with the routed variant instead).
    pub target: Precision,
    /// The drafting variant (fewer bits than the variant it drafts for).
    pub draft: Precision,
    /// Draft tokens per verify (default: adaptive, up to 8).
    pub draft_len: DraftLen,
}

impl Speculation {
    /// FP16 output, drafting with `draft`, adaptive draft length.
    pub fn new(draft: Precision) -> Self {
        Speculation {
            target: Precision::Fp16,
            draft,
            draft_len: DraftLen::default(),
        }
    }
}

impl Engine {
    /// How `target` drafted by `draft` runs: `draft_len`, starting from what earlier runs of
    /// the pair on this engine learnt.
    fn speculative_params(
        &self,
        target: Precision,
        draft: Precision,
        draft_len: DraftLen,
    ) -> SpeculativeParams {
        let mut all = self.draft_memory.lock().unwrap_or_else(|e| e.into_inner());
        let memory = match all.iter().find(|(pair, _)| *pair == (target, draft)) {
            Some((_, m)) => m.clone(),
            None => {
                let m = DraftLenMemory::new();
                all.push(((target, draft), m.clone()));
                m
            }
        };
        SpeculativeParams {
            draft_len,
            memory: Some(memory),
        }
    }

    /// The draft variant's model, when the engine holds variants; an error naming the
    /// problem for a single model.
    fn draft_model(&self, draft: Precision) -> Result<Arc<dyn DynModel>> {
        match &self.models {
            Models::Single { .. } => Err(Error::invalid(format!(
                "{} holds one variant: speculation needs a variant directory with a cheaper \
                 variant to draft",
                self.source
            ))),
            Models::Routed(r) => Ok(r.acquire(draft)?.0),
        }
    }

    /// Plain generation on variant `target` of a variant directory (a single-model engine
    /// has only its own): the baseline of speculative serving.
    pub fn generate_ids_on(
        &self,
        target: Precision,
        ids: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        let tok = self.need_tokenizer()?;
        match &self.models {
            Models::Single { .. } if target == Precision::Fp16 => {
                self.generate_ids(ids, params, on_token)
            }
            Models::Single { .. } => Err(Error::invalid(format!(
                "{} holds one variant, not {target}",
                self.source
            ))),
            Models::Routed(r) => r
                .acquire(target)?
                .0
                .generate(tok, ids, params, &mut on_token),
        }
    }

    /// [`Engine::generate_ids_on`] `spec.target` through speculation: that variant's output
    /// (identical tokens when greedy, identically distributed when sampling), drafted by
    /// `spec.draft`. The output's `speculation` holds the counters.
    pub fn generate_ids_speculative(
        &self,
        ids: &[u32],
        params: &GenerateParams,
        spec: &Speculation,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        if spec.draft.bits() >= spec.target.bits() {
            return Err(Error::invalid(format!(
                "the draft variant {} must have fewer bits than {}, the variant it drafts for",
                spec.draft, spec.target
            )));
        }
        let target = match &self.models {
            Models::Single { .. } if spec.target == Precision::Fp16 => self.direct()?,
            Models::Single { .. } => {
                return Err(Error::invalid(format!(
                    "{} holds one variant, not {}",
                    self.source, spec.target
                )))
            }
            Models::Routed(r) => DirectModel::Shared(r.acquire(spec.target)?.0),
        };
        let draft = self.draft_model(spec.draft)?;
        target.get().generate_speculative(
            draft.as_ref(),
            self.need_tokenizer()?,
            ids,
            params,
            &self.speculative_params(spec.target, spec.draft, spec.draft_len),
            &mut on_token,
        )
    }

    /// [`Engine::generate`] through speculation (see [`Engine::generate_ids_speculative`]).
    pub fn generate_speculative(
        &self,
        prompt: &str,
        params: &GenerateParams,
        spec: &Speculation,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        self.generate_ids_speculative(&self.encode(prompt)?, params, spec, on_token)
    }

    /// [`Engine::run`] with the routed variant served through speculation from `spec.draft`
    /// when that variant is cheaper; otherwise the task runs plainly. The route's reasons
    /// say which happened and, after the run, what speculation achieved.
    pub fn run_speculative(
        &self,
        task: &str,
        params: &GenerateParams,
        spec: &Speculation,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        if task.is_empty() {
            return Err(Error::invalid("task text is empty"));
        }
        let ids = self.encode(task)?;
        self.run_ids_speculative(&ids, &ids, params, spec, on_token)
    }

    /// [`Engine::chat`] with the routed variant served through speculation, as
    /// [`Engine::run_speculative`] serves a task.
    pub fn chat_speculative(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        spec: &Speculation,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let ids = self.encode_chat(messages)?;
        self.run_ids_speculative(
            &self.chat_routing_ids(messages)?,
            &ids,
            params,
            spec,
            on_token,
        )
    }

    /// [`Engine::run_speculative`] over an encoded prompt `ids`, routed on `route_ids`.
    fn run_ids_speculative(
        &self,
        route_ids: &[u32],
        ids: &[u32],
        params: &GenerateParams,
        spec: &Speculation,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let Models::Routed(r) = &self.models else {
            return Err(Error::invalid(format!(
                "{} holds one variant: speculation needs a variant directory",
                self.source
            )));
        };
        let mut route: Route = r.route(route_ids)?;
        let (target, swapped) = r.acquire(route.precision)?;
        route.swap = swapped;
        let output = if spec.draft.bits() < route.precision.bits() {
            let draft = DirectModel::Shared(r.acquire(spec.draft)?.0);
            let out = target.generate_speculative(
                draft.get(),
                self.need_tokenizer()?,
                ids,
                params,
                &self.speculative_params(route.precision, spec.draft, spec.draft_len),
                &mut on_token,
            )?;
            r.record_outcome(route.precision, Some(spec.draft), route.complexity, &out)?;
            if let Some(st) = &out.speculation {
                route.reasons.push(format!(
                    "served as {} via speculation from {}: {} of {} drafted tokens accepted \
                     ({:.0}%), {:.2} tokens per verify",
                    route.precision,
                    spec.draft,
                    st.accepted,
                    st.drafted,
                    100.0 * st.acceptance_rate(),
                    st.tokens_per_verify()
                ));
            }
            out
        } else {
            route.reasons.push(format!(
                "no speculation: the draft variant {} is not cheaper than {}",
                spec.draft, route.precision
            ));
            let out = target.generate(self.need_tokenizer()?, ids, params, &mut on_token)?;
            r.record_outcome(route.precision, None, route.complexity, &out)?;
            out
        };
        self.record_run(route, output)
    }

    /// [`Engine::run`] with speculation as a mode the router chooses: a task routed to a
    /// variant with a cheaper one resident is served through speculation from it when this
    /// engine's measurements say it is faster per token on tasks of this kind, after first
    /// timing plain decoding and trying each draft once per kind
    /// ([`crate::router::SpeculationBook::plan`]). The output is the routed variant's own;
    /// the route's `speculation` and reasons say what was chosen and why. A single-model
    /// engine runs plainly.
    pub fn run_planned(
        &self,
        task: &str,
        params: &GenerateParams,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        if task.is_empty() {
            return Err(Error::invalid("task text is empty"));
        }
        let ids = self.encode_with(task, params.add_bos)?;
        self.run_ids_planned(&ids, &ids, params, on_token)
    }

    /// [`Engine::chat`] with the router's speculation plan, as [`Engine::run_planned`].
    pub fn chat_planned(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let ids = self.encode_chat(messages)?;
        self.run_ids_planned(&self.chat_routing_ids(messages)?, &ids, params, on_token)
    }

    /// [`Engine::run_planned`] over an encoded prompt `ids`, routed on `route_ids`.
    fn run_ids_planned(
        &self,
        route_ids: &[u32],
        ids: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let Models::Routed(r) = &self.models else {
            return self.run_ids(route_ids, ids, params, on_token);
        };
        let mut route: Route = r.route(route_ids)?;
        let (target, swapped) = r.acquire(route.precision)?;
        route.swap = swapped;
        // Planned after the target is resident: its load may have evicted a draft.
        let decision = r.plan_speculation(route.precision, route.complexity)?;
        route.reasons.push(decision.reason);
        let tok = self.need_tokenizer()?;
        let output = match decision.plan {
            Some(plan) => {
                let (draft, draft_swapped) = r.acquire(plan.draft)?;
                if draft_swapped {
                    route.reasons.push(format!(
                        "{} was loaded again to draft (evicted meanwhile)",
                        plan.draft
                    ));
                }
                let out = target.generate_speculative(
                    draft.as_ref(),
                    tok,
                    ids,
                    params,
                    &self.speculative_params(route.precision, plan.draft, DraftLen::default()),
                    &mut on_token,
                )?;
                r.record_outcome(route.precision, Some(plan.draft), route.complexity, &out)?;
                if let Some(st) = &out.speculation {
                    route.reasons.push(format!(
                        "served as {} via speculation from {}: {} of {} drafted tokens \
                         accepted, {:.2} tokens per verify",
                        route.precision,
                        plan.draft,
                        st.accepted,
                        st.drafted,
                        st.tokens_per_verify()
                    ));
                }
                route.speculation = Some(plan);
                out
            }
            None => {
                let out = target.generate(tok, ids, params, &mut on_token)?;
                r.record_outcome(route.precision, None, route.complexity, &out)?;
                out
            }
        };
        self.record_run(route, output)
    }
}
