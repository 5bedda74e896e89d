//! An object-safe view of `engine::Model<B>`, so the API can hold a model on any backend.

use crate::backend::Backend;
use crate::engine::{generate, GenerateOutput, GenerateParams, Model, TokenEvent};
use crate::model::tokenizer::Tokenizer;
use crate::model::ModelConfig;
use crate::Result;

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
    /// Logits of a fresh sequence: last position, or all when `all`.
    fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<Vec<f32>>>;
    /// The weight pool's counters, when the model streams its blocks through one.
    fn pool_stats(&self) -> Option<crate::pool::PoolStats> {
        None
    }
    /// The backend tier's counters, when the model keeps uploaded blocks between uses.
    fn upload_stats(&self) -> Option<crate::engine::DeviceTierStats> {
        None
    }
}

impl<B: Backend> DynModel for Model<B> {
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
