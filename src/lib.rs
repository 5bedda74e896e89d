//! AgentCompress: an embedded LLM inference engine that serves every task from the cheapest
//! precision (FP16, INT8, INT4, INT2) of one LLaMA-family model that still does it well.
//!
//! Layout (see `docs/ARCHITECTURE.md`): [`model`] loads checkpoints and
//! tokenizers, [`backend`] supplies kernels (CPU reference, CUDA), [`engine`] runs the transformer
//! forward pass once over the [`backend::Backend`] trait, and [`api`] is the public entry point.

pub mod api;
pub mod backend;
pub mod controller;
pub mod engine;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod internal;
pub mod io;
pub mod model;
pub mod pipeline;
pub mod pool;
pub mod quant;
pub mod router;
pub mod store;
pub mod util;

pub use error::{Error, Result};
