//! The transformer forward pass, KV cache, sampling and generation, written once over
//! [`Backend`](crate::backend::Backend).

mod forward;
mod generate;
mod layers;
pub mod sampling;
mod upload_cache;

pub use forward::{Model, State};
pub use generate::{generate, GenerateOutput, GenerateParams, TokenEvent};
pub use layers::StreamOptions;
pub use sampling::{Sampler, SamplingParams};
pub use upload_cache::UploadCacheStats;
