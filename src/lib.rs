//! AgentCompress: an embedded LLM inference engine that serves every task from the cheapest
//! precision (FP16, INT8, INT4, INT2) of one LLaMA-family model that still does it well.
//!
//! Open a model, see where a task would be routed, and stream its tokens (this runs on the
//! built-in synthetic model, so it needs no file and no GPU):
//!
//! ```
//! use agentcompress::{Device, Engine, GenerateParams};
//!
//! let engine = Engine::builtin("builtin:tiny")?.device(Device::Cpu).build()?;
//! let route = engine.route("Summarise the meeting notes.")?;
//! println!("routed to {} because {:?}", route.precision, route.reasons);
//!
//! let params = GenerateParams { max_new_tokens: 4, stop_at_eos: false, ..Default::default() };
//! let mut streamed = String::new();
//! let out = engine.generate("Once upon a time", &params, |t| {
//!     streamed.push_str(t.text);
//!     true // false stops generation
//! })?;
//! assert_eq!(out.ids.len(), 4);
//! assert_eq!(out.text, streamed);
//! # Ok::<(), agentcompress::Error>(())
//! ```
//!
//! Hosts use [`api`] and the items re-exported here; a real model is opened with
//! [`Engine::builder`] (a llama2.c `.bin`, a Hugging Face directory, or a variant directory
//! written by `agentcompress quantize`). C and C++ hosts use the C ABI in `ffi/`.
//!
//! Layout (see `docs/ARCHITECTURE.md`): `model` loads checkpoints and tokenizers, `backend`
//! supplies kernels (CPU reference, CUDA), `engine` runs the transformer forward pass once over
//! the `Backend` trait, and [`api`] is the public entry point. Those rooms stay public for the
//! command line, the tools and the tests, but are hidden from these docs: their paths are not a
//! stable interface.

pub mod api;
#[doc(hidden)]
pub mod backend;
#[doc(hidden)]
pub mod controller;
#[doc(hidden)]
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod eval;
#[doc(hidden)]
pub mod internal;
#[doc(hidden)]
pub mod io;
#[doc(hidden)]
pub mod model;
#[doc(hidden)]
pub mod pipeline;
#[doc(hidden)]
pub mod pool;
#[doc(hidden)]
pub mod quant;
#[doc(hidden)]
pub mod router;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod util;

pub use api::{
    BatchEvent, BatchSession, Device, Engine, EngineBuilder, EngineStats, FinishReason,
    GenerateOutput, GenerateParams, ModelConfig, Precision, Route, RunResult, SamplingParams,
    TokenEvent,
};
pub use error::{Error, Result};
