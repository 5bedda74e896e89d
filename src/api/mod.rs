//! The public entry point for Rust hosts: open a model, route tasks, generate, inspect.
//!
//! An engine opens either one model (a llama2.c `.bin`, a Hugging Face directory, a built-in
//! model: a set of one, routing has no alternatives) or a variant directory written by
//! `agentcompress quantize` (its `manifest.json` and four `.acv` files). Over a variant
//! directory the engine routes: `controller.safetensors` and `router.json` in the directory
//! (written by `agentcompress eval -m DIR --out DIR` or `train-controller`) pick the variant of
//! each task; without them every task goes to the fallback variant (FP16 unless
//! [`EngineBuilder::fallback_precision`] says otherwise) and each route says why. Variants are
//! loaded and evicted within [`EngineBuilder::memory_budget`], and with
//! [`EngineBuilder::prefetch`] the variant the router expects next is loaded in the
//! background.
//!
//! ```no_run
//! use agentcompress::{Device, Engine, GenerateParams};
//!
//! let engine = Engine::builder("model.bin").device(Device::Cpu).build()?;
//! let out = engine.generate("Once upon a time", &GenerateParams::default(), |t| {
//!     print!("{}", t.text);
//!     true
//! })?;
//! println!("\n{:.1} tokens/s", out.decode_tokens_per_s());
//! # Ok::<(), agentcompress::Error>(())
//! ```

mod batch;
mod chat;
mod demo;
mod device_choice;
mod open_variant;
mod route_controller;
mod routed;
mod runner;
mod speculation;
mod types;

pub use crate::model::tokenizer::{routing_text, ChatMessage};
pub use batch::BatchSession;
pub use demo::{BUILTIN_MODELS, BUILTIN_PREFIX, BUILTIN_SEED};
pub use device_choice::{Device, OpenBackend};
pub use open_variant::{open_variant, variant_tokenizer, VariantOpenOptions};
pub use routed::{CONTROLLER_FILE, ROUTER_FILE};
pub use runner::DynModel;
pub use types::{EngineStats, Route, RunResult};

// What hosts need from the rooms below, so host code names `agentcompress::api::...` (or the
// crate root) and never an internal path.
pub use crate::engine::{
    BatchEvent, DraftLen, FinishReason, GenerateOutput, GenerateParams, SamplingParams, SeqId,
    SpeculationStats, TokenEvent,
};
pub use crate::error::{Error, Result};
pub use crate::model::ModelConfig;
pub use crate::quant::{PerPrecision, Precision};
pub use speculation::Speculation;

use crate::model::tokenizer::Tokenizer;
use crate::model::ModelWeights;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A loaded model on a backend, with its tokenizer.
///
/// An `Engine` is `Send + Sync`: several threads may call [`Engine::run`] at once; each call
/// has its own sequence state, and statistics are updated atomically.
pub struct Engine {
    models: Models,
    tokenizer: Option<Arc<dyn Tokenizer>>,
    source: String,
    stats: Mutex<EngineStats>,
    /// What the adaptive draft length learnt per (target, draft) pair (see
    /// [`crate::engine::DraftLenMemory`]).
    draft_memory: Mutex<Vec<((Precision, Precision), crate::engine::DraftLenMemory)>>,
}

/// What an engine runs on: one model, or the routed variants of a directory.
enum Models {
    /// One model of one precision.
    Single {
        model: Arc<dyn DynModel>,
        precision: Precision,
    },
    /// Four variants, routed.
    Routed(Box<routed::Routed>),
}

/// Builds an [`Engine`] from a path (or from weights already in memory).
pub struct EngineBuilder {
    path: Option<PathBuf>,
    weights: Option<ModelWeights>,
    tokenizer_path: Option<PathBuf>,
    tokenizer: Option<Box<dyn Tokenizer>>,
    device: Device,
    routed: routed::RoutedOptions,
}

impl EngineBuilder {
    fn new(path: Option<PathBuf>, weights: Option<ModelWeights>) -> Self {
        EngineBuilder {
            path,
            weights,
            tokenizer_path: None,
            tokenizer: None,
            device: Device::Auto,
            routed: routed::RoutedOptions {
                device: Device::Auto,
                budget: None,
                prefetch: false,
                fallback: Precision::Fp16,
                verify_checksums: true,
                router_dir: None,
                target: None,
                controller_on_device: false,
            },
        }
    }
}

impl Engine {
    /// Starts building an engine for the model at `path` (a llama2.c `.bin` or a Hugging Face
    /// directory, or a variant directory with `manifest.json`, which the engine routes over).
    pub fn builder(path: impl AsRef<Path>) -> EngineBuilder {
        EngineBuilder::new(Some(path.as_ref().to_path_buf()), None)
    }

    /// Starts building an engine over weights already in memory (synthetic models, tests).
    pub fn from_weights(weights: ModelWeights) -> EngineBuilder {
        EngineBuilder::new(None, Some(weights))
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        match &self.models {
            Models::Single { model, .. } => model.config(),
            Models::Routed(r) => r.config(),
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        match &self.models {
            Models::Single { model, .. } => model.backend_name(),
            Models::Routed(r) => r.backend_name(),
        }
    }

    /// Whether tasks are routed by a trained controller and router (false for a single model
    /// and for a variant directory without them, which uses its fallback variant).
    pub fn has_router(&self) -> bool {
        matches!(&self.models, Models::Routed(r) if r.has_router())
    }

    /// The variants that are resident now, most recently used first.
    pub fn resident(&self) -> Result<Vec<Precision>> {
        match &self.models {
            Models::Single { precision, .. } => Ok(vec![*precision]),
            Models::Routed(r) => r.resident(),
        }
    }

    /// Bytes of each variant's weights (`None` for a single model).
    pub fn variant_bytes(&self) -> Option<PerPrecision<u64>> {
        match &self.models {
            Models::Single { .. } => None,
            Models::Routed(r) => Some(r.bytes()),
        }
    }

    /// Makes variant `p` resident (loading it within the budget, evicting the least recently
    /// used ones) without running a task; returns whether it had to be loaded. A single-model
    /// engine has only its own variant.
    pub fn make_resident(&self, p: Precision) -> Result<bool> {
        match &self.models {
            Models::Single { precision, .. } if *precision == p => Ok(false),
            Models::Single { precision, .. } => Err(Error::invalid(format!(
                "{} holds only the {precision} variant, not {p}",
                self.source
            ))),
            Models::Routed(r) => r.acquire(p).map(|(_, loaded)| loaded),
        }
    }

    /// Waits until a background prefetch, if one is running, has finished and been admitted.
    pub fn wait_prefetch(&self) -> Result<()> {
        match &self.models {
            Models::Single { .. } => Ok(()),
            Models::Routed(r) => r.wait_prefetch(),
        }
    }

    /// The model that serves direct generation: the single model, or the FP16 variant (made
    /// resident through the budget like any other use).
    fn direct(&self) -> Result<DirectModel<'_>> {
        match &self.models {
            Models::Single { model, .. } => Ok(DirectModel::Borrowed(model.as_ref())),
            Models::Routed(r) => Ok(DirectModel::Shared(r.acquire(Precision::Fp16)?.0)),
        }
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

    /// Encodes `prompt`, with BOS as the tokenizer adds it (see [`Engine::encode_with`]).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        self.encode_with(prompt, None)
    }

    /// Encodes `prompt`; `add_bos` as in [`GenerateParams::add_bos`]: `None` prepends BOS
    /// when the tokenizer adds one (`add_bos_token`), `Some(true)` always prepends the model's
    /// BOS, `Some(false)` never. An empty prompt becomes `[BOS]` (generation needs a token).
    pub fn encode_with(&self, prompt: &str, add_bos: Option<bool>) -> Result<Vec<u32>> {
        let tok = self.need_tokenizer()?;
        let bos = self.config().bos_token.or(tok.bos_id());
        let mut ids = match add_bos {
            None => tok.encode(prompt, bos.is_some())?,
            Some(_) => tok.encode(prompt, false)?,
        };
        if add_bos == Some(true) && ids.first() != bos.as_ref() {
            ids.splice(0..0, bos);
        }
        if ids.is_empty() {
            ids.extend(bos);
        }
        if ids.is_empty() {
            return Err(Error::invalid(
                "the prompt encodes to no tokens and the model has no BOS token",
            ));
        }
        Ok(ids)
    }

    /// Generates from a text prompt, streaming each token to `on_token` (return `false` to stop).
    /// Over a variant directory this runs the FP16 variant, unrouted; [`Engine::run`] routes.
    pub fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        let ids = self.encode_with(prompt, params.add_bos)?;
        self.direct()?
            .get()
            .generate(self.need_tokenizer()?, &ids, params, &mut on_token)
    }

    /// Generates from token ids (the FP16 variant over a variant directory, unrouted).
    pub fn generate_ids(
        &self,
        ids: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<GenerateOutput> {
        self.direct()?
            .get()
            .generate(self.need_tokenizer()?, ids, params, &mut on_token)
    }

    /// Decides which variant would serve `task`, without running it: the router's choice with
    /// its reasons (complexity, expected quality against the target, chosen variant,
    /// alternatives with their costs, swap or hit), or for a single model the one variant.
    pub fn route(&self, task: &str) -> Result<Route> {
        if task.is_empty() {
            return Err(Error::invalid("task text is empty"));
        }
        match &self.models {
            Models::Single { precision, .. } => Ok(single_route(*precision)),
            Models::Routed(r) => r.route(&self.encode(task)?),
        }
    }

    /// Routes `task`, makes the chosen variant resident (a hit, or a swap that loads it and
    /// evicts others within the budget), starts prefetching the variant the router expects
    /// next (when enabled), and generates on the chosen variant, streaming tokens to
    /// `on_token`. The returned route's `swap` says what actually happened.
    pub fn run(
        &self,
        task: &str,
        params: &GenerateParams,
        on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        if task.is_empty() {
            return Err(Error::invalid("task text is empty"));
        }
        let ids = self.encode_with(task, params.add_bos)?;
        self.run_ids(&ids, &ids, params, on_token)
    }

    /// [`Engine::run`] over an encoded prompt `ids`, routed on `route_ids` (the prompt itself
    /// for a task, the task's own ids for a conversation: [`Engine::chat_routing_ids`]).
    fn run_ids(
        &self,
        route_ids: &[u32],
        ids: &[u32],
        params: &GenerateParams,
        mut on_token: impl FnMut(TokenEvent<'_>) -> bool,
    ) -> Result<RunResult> {
        let (route, output) = match &self.models {
            Models::Single { precision, .. } => (
                single_route(*precision),
                self.generate_ids(ids, params, on_token)?,
            ),
            Models::Routed(r) => {
                let mut route = r.route(route_ids)?;
                let (model, swapped) = r.acquire(route.precision)?;
                route.swap = swapped;
                if let Some(next) = route.next {
                    if r.prefetch(next)? {
                        route
                            .reasons
                            .push(format!("prefetching {next} in the background"));
                    }
                }
                let out = model.generate(self.need_tokenizer()?, ids, params, &mut on_token)?;
                r.record_outcome(route.precision, None, route.complexity, &out)?;
                (route, out)
            }
        };
        self.record_run(route, output)
    }

    /// Adds a finished run to the engine's counters.
    fn record_run(&self, route: Route, output: GenerateOutput) -> Result<RunResult> {
        self.count_task(&route, output.ids.len(), output.speculation.is_some())?;
        Ok(RunResult { route, output })
    }

    /// Counts one task served on `route`: its generated tokens, its precision, a hit or a
    /// swap, its expected cost, and whether it went through speculation.
    fn count_task(&self, route: &Route, tokens: usize, speculated: bool) -> Result<()> {
        let mut st = self
            .stats
            .lock()
            .map_err(|_| Error::Internal("engine statistics lock poisoned".into()))?;
        st.tasks += 1;
        st.tokens += tokens as u64;
        st.per_precision[route.precision] += 1;
        if speculated {
            st.speculated += 1;
        }
        if route.swap {
            st.swaps += 1;
        } else {
            st.hits += 1;
        }
        st.cost += route.expected_cost;
        Ok(())
    }

    /// Counters since the engine was opened.
    pub fn stats(&self) -> EngineStats {
        let mut st = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        match &self.models {
            Models::Single { model, .. } => {
                if let Some(pool) = model.pool_stats() {
                    st.bytes_streamed = pool.bytes_read;
                }
            }
            Models::Routed(r) => {
                let l = r.load_stats();
                st.bytes_loaded = l.bytes_loaded;
                st.bytes_streamed = l.bytes_loaded;
                st.swap_seconds = l.swap_seconds;
                st.prefetches = l.prefetches;
                st.prefetch_hits = l.prefetch_hits;
            }
        }
        st
    }

    /// Logits for `ids` from a fresh sequence: the last position, or every position when `all`
    /// (the FP16 variant over a variant directory).
    pub fn logits(&self, ids: &[u32], all: bool) -> Result<Vec<Vec<f32>>> {
        self.direct()?.get().logits(ids, all)
    }
}

/// The route of a single-model engine: its one variant.
fn single_route(precision: Precision) -> Route {
    Route {
        precision,
        complexity: None,
        expected_cost: precision.bits() as f64 / 16.0,
        swap: false,
        alternatives: Vec::new(),
        next: None,
        speculation: None,
        reasons: vec![format!(
            "only the {precision} variant is loaded: no alternatives"
        )],
    }
}

/// The model behind direct generation: borrowed from a single-model engine or shared with the
/// residency of a routed one.
enum DirectModel<'a> {
    Borrowed(&'a dyn DynModel),
    Shared(std::sync::Arc<dyn DynModel>),
}

impl DirectModel<'_> {
    fn get(&self) -> &dyn DynModel {
        match self {
            DirectModel::Borrowed(m) => *m,
            DirectModel::Shared(m) => m.as_ref(),
        }
    }
}

impl EngineBuilder {
    /// Which device to run on (default: [`Device::Auto`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self.routed.device = device;
        self
    }

    /// Bytes of variant weights a variant directory may keep resident at once (default: all
    /// four). Loading a variant evicts the least recently used ones to stay within it; a
    /// budget smaller than the largest variant is an error at [`EngineBuilder::build`].
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.routed.budget = Some(bytes);
        self
    }

    /// After each routed run, load the variant the router expects next in the background
    /// (default off). It is admitted only beside the most recently used variant.
    pub fn prefetch(mut self, on: bool) -> Self {
        self.routed.prefetch = on;
        self
    }

    /// Read `controller.safetensors` and `router.json` from `dir` instead of the variant
    /// directory (e.g. the output directory of `agentcompress eval`).
    pub fn router_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.routed.router_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Overrides the router's quality target (fidelity to FP16 a route must be expected to
    /// keep, in [0, 1]).
    pub fn router_target(mut self, target: f32) -> Self {
        self.routed.target = Some(target);
        self
    }

    /// Run the routing controller on the engine's device: on CUDA (FP16 weights, see
    /// [`crate::controller::DeviceController`]) when the engine runs on a GPU; no effect on
    /// the CPU. Default off: the packed CPU controller.
    pub fn controller_on_device(mut self, on: bool) -> Self {
        self.routed.controller_on_device = on;
        self
    }

    /// The variant every task goes to when a variant directory has no controller and router
    /// (default FP16, the quality-safe choice).
    pub fn fallback_precision(mut self, p: Precision) -> Self {
        self.routed.fallback = p;
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
                // A variants directory: routed over its four variants.
                let r = routed::Routed::open(p, &self.routed)?;
                let tokenizer = match (self.tokenizer, &self.tokenizer_path) {
                    (Some(t), _) => Some(t),
                    (None, Some(tp)) => Some(crate::model::tokenizer::load_tokenizer(tp)?),
                    (None, None) => variant_tokenizer(p)?,
                };
                return Ok(Engine {
                    models: Models::Routed(Box::new(r)),
                    tokenizer: tokenizer.map(Arc::from),
                    source: format!("{} (routed variants)", p.display()),
                    stats: Mutex::new(EngineStats::default()),
                    draft_memory: Mutex::default(),
                });
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
        let model = device_choice::upload(self.device, &weights)?;
        Ok(Engine {
            models: Models::Single {
                model: Arc::from(model),
                precision: Precision::Fp16,
            },
            tokenizer: tokenizer.map(Arc::from),
            source,
            stats: Mutex::new(EngineStats::default()),
            draft_memory: Mutex::default(),
        })
    }
}
