//! The public entry point for Rust hosts: open a model, generate, inspect.
//!
//! ```no_run
//! use agentcompress::api::{Engine, Device};
//! use agentcompress::engine::GenerateParams;
//!
//! let engine = Engine::builder("model.bin").device(Device::Cpu).build()?;
//! let out = engine.generate("Once upon a time", &GenerateParams::default(), |t| {
//!     print!("{}", t.text);
//!     true
//! })?;
//! println!("\n{:.1} tokens/s", out.decode_tokens_per_s());
//! # Ok::<(), agentcompress::Error>(())
//! ```

mod demo;
mod device;
mod runner;
mod types;
mod variants;

pub use demo::{BUILTIN_MODELS, BUILTIN_PREFIX, BUILTIN_SEED};
pub use device::Device;
pub use runner::DynModel;
pub use types::{EngineStats, Route, RunResult};
pub use variants::{open_variant, variant_tokenizer, VariantOpenOptions};

use crate::engine::{GenerateOutput, GenerateParams, TokenEvent};
use crate::model::tokenizer::Tokenizer;
use crate::model::{ModelConfig, ModelWeights};
use crate::quant::Precision;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A loaded model on a backend, with its tokenizer.
///
/// An `Engine` is `Send + Sync`: several threads may call [`Engine::run`] at once; each call
/// has its own sequence state, and statistics are updated atomically.
pub struct Engine {
    model: Box<dyn DynModel>,
    precision: Precision,
    tokenizer: Option<Box<dyn Tokenizer>>,
    source: String,
    stats: Mutex<EngineStats>,
}

/// Builds an [`Engine`] from a path (or from weights already in memory).
pub struct EngineBuilder {
    path: Option<PathBuf>,
    weights: Option<ModelWeights>,
    tokenizer_path: Option<PathBuf>,
    tokenizer: Option<Box<dyn Tokenizer>>,
    device: Device,
}

impl Engine {
    /// Starts building an engine for the model at `path` (a llama2.c `.bin` or a Hugging Face
    /// directory).
    pub fn builder(path: impl AsRef<Path>) -> EngineBuilder {
        EngineBuilder {
            path: Some(path.as_ref().to_path_buf()),
            weights: None,
            tokenizer_path: None,
            tokenizer: None,
            device: Device::Auto,
        }
    }

    /// Starts building an engine over weights already in memory (synthetic models, tests).
    pub fn from_weights(weights: ModelWeights) -> EngineBuilder {
        EngineBuilder {
            path: None,
            weights: Some(weights),
            tokenizer_path: None,
            tokenizer: None,
            device: Device::Auto,
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.model.backend_name()
    }

    /// Where the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The tokenizer, if one was found or given.
    pub fn tokenizer(&self) -> Option<&dyn Tokenizer> {
        self.tokenizer.as_deref()
    }

    fn need_tokenizer(&self) -> Result<&dyn Tokenizer> {
        self.tokenizer.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "no tokenizer for {}: pass one explicitly",
                self.source
            ))
        })
    }

    /// Encodes `prompt` (with BOS when the model uses one).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let tok = self.need_tokenizer()?;
        let mut ids = tok.encode(
            prompt,
            self.config().bos_token.is_some() || tok.bos_id().is_some(),
        )?;
        if ids.is_empty() {
            ids.extend(self.config().bos_token.or(tok.bos_id()));
        }
        if ids.is_empty() {
            return Err(Error::invalid(
                "the prompt encodes to no tokens and the model has no BOS token",
            ));
        }
        Ok(ids)
    }

    /// Generates from a text prompt, streaming each token to `on_token` (return `false` to stop).
    pub fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        let ids = self.encode(prompt)?;
        self.model
            .generate(self.need_tokenizer()?, &ids, params, &mut on_token)
    }

    /// Generates from token ids.
    pub fn generate_ids(
        &self,
        ids: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        self.model
            .generate(self.need_tokenizer()?, ids, params, &mut on_token)
    }

    /// Decides which variant would serve `task`, without running it.
    pub fn route(&self, task: &str) -> Result<Route> {
        if task.is_empty() {
            return Err(Error::invalid("task text is empty"));
        }
        Ok(Route {
            precision: self.precision,
            complexity: None,
            expected_cost: self.precision.bits() as f64 / 16.0,
            swap: false,
            reasons: vec![format!(
                "only the {} variant is loaded: no alternatives",
                self.precision
            )],
        })
    }

    /// Routes `task` and generates from it, streaming tokens to `on_token`.
    pub fn run(
        &self,
        task: &str,
        params: &GenerateParams,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let route = self.route(task)?;
        let output = self.generate(task, params, on_token)?;
        let mut st = self
            .stats
            .lock()
            .map_err(|_| Error::Internal("engine statistics lock poisoned".into()))?;
        st.tasks += 1;
        st.tokens += output.ids.len() as u64;
        st.per_precision[route.precision.index()] += 1;
        if route.swap {
            st.swaps += 1;
        } else {
            st.hits += 1;
        }
        st.cost += route.expected_cost;
        Ok(RunResult { route, output })
    }

    /// Counters since the engine was opened.
    pub fn stats(&self) -> EngineStats {
        let mut st = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(pool) = self.model.pool_stats() {
            st.bytes_streamed = pool.bytes_read;
        }
        st
    }

    /// Logits for `ids` from a fresh sequence: the last position, or every position when `all`.
    pub fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<Vec<f32>>> {
        self.model.logits(ids, all)
    }
}

impl EngineBuilder {
    /// Which device to run on (default: [`Device::Auto`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// A tokenizer file to use instead of the one found beside the model.
    pub fn tokenizer_path(mut self, path: impl AsRef<Path>) -> Self {
        self.tokenizer_path = Some(path.as_ref().to_path_buf());
        self
    }

    /// A tokenizer object to use.
    pub fn tokenizer(mut self, tokenizer: Box<dyn Tokenizer>) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// Loads the model and uploads it to the chosen device.
    pub fn build(self) -> Result<Engine> {
        if let (None, Some(p)) = (&self.weights, &self.path) {
            if p.is_dir()
                && crate::model::load::detect_format(p)?
                    == crate::model::load::ModelFormat::VariantStore
            {
                // A variants directory opens its FP16 variant; `open_variant` picks others.
                let opts = VariantOpenOptions {
                    device: self.device,
                    tokenizer: self.tokenizer_path.clone(),
                    ..Default::default()
                };
                let mut engine = open_variant(p, &opts)?;
                if let Some(t) = self.tokenizer {
                    engine.tokenizer = Some(t);
                }
                return Ok(engine);
            }
        }
        let (weights, source) = match (self.weights, &self.path) {
            (Some(w), _) => (w, "in-memory weights".to_string()),
            (None, Some(p)) => (crate::model::load::load_model(p)?, p.display().to_string()),
            (None, None) => return Err(Error::invalid("no model given")),
        };
        let tokenizer = match (self.tokenizer, &self.tokenizer_path) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => Some(crate::model::tokenizer::load_tokenizer(p)?),
            (None, None) => match self
                .path
                .as_deref()
                .and_then(crate::model::load::find_tokenizer)
            {
                Some(p) => Some(crate::model::tokenizer::load_tokenizer(&p)?),
                None => None,
            },
        };
        if let Some(t) = &tokenizer {
            if t.vocab_size() > weights.config.vocab_size {
                return Err(Error::invalid(format!(
                    "tokenizer has {} tokens but the model's vocabulary is {}",
                    t.vocab_size(),
                    weights.config.vocab_size
                )));
            }
        }
        let model = device::upload(self.device, &weights)?;
        Ok(Engine {
            model,
            precision: Precision::Fp16,
            tokenizer,
            source,
            stats: Mutex::new(EngineStats::default()),
        })
    }
}
