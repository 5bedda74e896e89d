//! The transformer forward pass, KV cache, sampling and generation, written once over
//! [`Backend`](crate::backend::Backend).

mod batch;
mod batch_decode;
mod device_tier;
mod draft_len;
mod forward;
mod generate;
mod layers;
mod load;
pub mod sampling;
mod spec_sampling;
mod speculative;

pub use batch::BatchScratch;
pub use batch_decode::{BatchDecoder, BatchEvent, FinishReason, SeqId, DEFAULT_PREFILL_PER_STEP};
pub use device_tier::DeviceTierStats;
pub use draft_len::{DraftLen, DraftLenMemory, SpeculationStats};
pub use forward::{Model, State};
pub use generate::{generate, GenerateOutput, GenerateParams, TokenEvent, DEFAULT_CONTEXT};
pub use layers::StreamOptions;
pub use sampling::{Sampler, SamplingParams};
pub use speculative::{generate_speculative, SpeculativeParams};
