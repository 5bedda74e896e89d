//! The transformer forward pass, KV cache, sampling and generation, written once over
//! [`Backend`](crate::backend::Backend).

mod device_tier;
mod forward;
mod generate;
mod layers;
pub mod sampling;

pub use device_tier::DeviceTierStats;
pub use forward::{Model, State};
pub use generate::{generate, GenerateOutput, GenerateParams, TokenEvent, DEFAULT_CONTEXT};
pub use layers::StreamOptions;
pub use sampling::{Sampler, SamplingParams};
