//! An object-safe view of `engine::Model<B>`, so the API can hold a model on any backend.

use crate::backend::Backend;
use crate::engine::{
    generate, generate_speculative, BatchDecoder, BatchEvent, GenerateOutput, GenerateParams,
    Model, SeqId, SpeculativeParams, TokenEvent,
};
use crate::model::tokenizer::Tokenizer;
use crate::model::ModelConfig;
use crate::{Error, Result};
use std::sync::Arc;

/// What the API needs from a model, independent of its backend.
pub trait DynModel: Send + Sync {
    /// The model's configuration.
    fn config(&self) -> &ModelConfig;
    /// The backend's name.
    fn backend_name(&self) -> String;
    /// Generates from `ids`, streaming to `on_token`.
    fn generate(
        &self,
        tok: &dyn Tokenizer,
        ids: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput>;
    /// Generates from `ids` with this model as the target, drafting with `draft` (a model of
    /// the same vocabulary on the same backend); see [`generate_speculative`].
    fn generate_speculative(
        &self,
        draft: &dyn DynModel,
        tok: &dyn Tokenizer,
        ids: &[u32],
        params: &GenerateParams,
        spec: &SpeculativeParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput>;
    /// The model as `Any`, so a draft can be matched to its target's backend type.
    fn as_any(&self) -> &dyn std::any::Any;
    /// Logits of a fresh sequence: last position, or all when `all`.
    fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<Vec<f32>>>;
    /// A continuous-batching decoder over this model (see [`BatchDecoder`]).
    fn batch_decoder(self: Arc<Self>, tok: Arc<dyn Tokenizer>) -> Box<dyn DynBatch>;
    /// The weight pool's counters, when the model streams its blocks through one.
    fn pool_stats(&self) -> Option<crate::pool::PoolStats> {
        None
    }
    /// The backend tier's counters, when the model keeps uploaded blocks between uses.
    fn upload_stats(&self) -> Option<crate::engine::DeviceTierStats> {
        None
    }
}

impl<B: Backend + 'static> DynModel for Model<B> {
    fn config(&self) -> &ModelConfig {
        Model::config(self)
    }

    fn backend_name(&self) -> String {
        self.backend().name()
    }

    fn generate(
        &self,
        tok: &dyn Tokenizer,
        ids: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        generate(self, tok, ids, params, on_token)
    }

    fn generate_speculative(
        &self,
        draft: &dyn DynModel,
        tok: &dyn Tokenizer,
        ids: &[u32],
        params: &GenerateParams,
        spec: &SpeculativeParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        let draft = draft.as_any().downcast_ref::<Model<B>>().ok_or_else(|| {
            Error::invalid(format!(
                "the draft model runs on {}, not on the target's backend {}",
                draft.backend_name(),
                self.backend().name()
            ))
        })?;
        generate_speculative(self, draft, tok, ids, params, spec, on_token)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn batch_decoder(self: Arc<Self>, tok: Arc<dyn Tokenizer>) -> Box<dyn DynBatch> {
        Box::new(BatchDecoder::new(self, tok))
    }

    fn pool_stats(&self) -> Option<crate::pool::PoolStats> {
        Model::pool_stats(self)
    }

    fn upload_stats(&self) -> Option<crate::engine::DeviceTierStats> {
        Model::upload_stats(self)
    }

    fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<Vec<f32>>> {
        let mut state = self.new_state(256)?;
        let flat = self.forward(&mut state, ids, all)?;
        Ok(flat
            .chunks(self.config().vocab_size)
            .map(|c| c.to_vec())
            .collect())
    }
}

/// An object-safe view of [`BatchDecoder`] on any backend.
pub trait DynBatch: Send {
    /// [`BatchDecoder::join`].
    fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId>;
    /// [`BatchDecoder::step`].
    fn step(&mut self) -> Result<Vec<BatchEvent>>;
    /// [`BatchDecoder::cancel`].
    fn cancel(&mut self, id: SeqId) -> bool;
    /// [`BatchDecoder::set_prefill_per_step`].
    fn set_prefill_per_step(&mut self, tokens: usize) -> Result<()>;
    /// [`BatchDecoder::len`].
    fn len(&self) -> usize;
    /// [`BatchDecoder::last_step_rows`].
    fn last_step_rows(&self) -> usize;
    /// [`BatchDecoder::max_step_rows`].
    fn max_step_rows(&self) -> usize;
    /// [`BatchDecoder::reused_prompt_tokens`].
    fn reused_prompt_tokens(&self) -> usize;
}

impl<B: Backend + 'static> DynBatch for BatchDecoder<B> {
    fn join(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<SeqId> {
        BatchDecoder::join(self, prompt, params)
    }
    fn step(&mut self) -> Result<Vec<BatchEvent>> {
        BatchDecoder::step(self)
    }
    fn cancel(&mut self, id: SeqId) -> bool {
        BatchDecoder::cancel(self, id)
    }
    fn set_prefill_per_step(&mut self, tokens: usize) -> Result<()> {
        BatchDecoder::set_prefill_per_step(self, tokens)
    }
    fn len(&self) -> usize {
        BatchDecoder::len(self)
    }
    fn last_step_rows(&self) -> usize {
        BatchDecoder::last_step_rows(self)
    }
    fn max_step_rows(&self) -> usize {
        BatchDecoder::max_step_rows(self)
    }
    fn reused_prompt_tokens(&self) -> usize {
        BatchDecoder::reused_prompt_tokens(self)
    }
}
