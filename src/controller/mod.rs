//! The complexity controller: reads the first k tokens of a task through the served model's
//! frozen embedding table and predicts how hard the task is (complexity in [0, 1]) and a
//! compression policy (precision, pruning ratio, sparsity target).
//!
//! Architecture: embeddings `[k, embed_dim]` -> linear projection to `d_model` plus
//! sinusoidal positions -> `n_layers` pre-norm transformer encoder layers -> final layer norm
//! -> mean pooling -> one multi-head attention layer whose query is the pooled vector and whose
//! keys/values are the encoded tokens (`pool_heads` heads, `pool_dim`-wide projections) ->
//! MLP `pool_dim -> mlp_hidden -> 1` with a sigmoid (complexity), and three heads on the pooled
//! attention output: precision logits (FP16/INT8/INT4/INT2), pruning ratio and sparsity target
//! (sigmoids).
//!
//! Inference runs on the CPU in a packed form ([`PackedController`]). Its token-wise linear
//! maps (projection, wq/wk/wv/wo, ff1/ff2) are INT8 by default where the CPU has AVX512-VNNI
//! (weights quantised per output row at pack time, activations per token, exact integer
//! products; [`ControllerPrecision::Int8`]) and f32 elsewhere ([`ControllerPrecision::F32`],
//! which also stays selectable and matches the training forward to f32 rounding). Layer norms,
//! attention, the pooling head and the residual stream are f32 in both. On any backend,
//! CUDA included, the same forward runs through the [`crate::backend::Backend`] trait
//! ([`DeviceController`]: f32 weights on the CPU backend, FP16 weights on CUDA).
//!
//! Parameter counts (embed_dim 64, stories260K): [`ControllerConfig::reference`] has
//! 13,145,351 parameters (not the reference paper's 2.37M, which these widths cannot give);
//! [`ControllerConfig::small`] has 90,375. Measured by `agentcompress bench controller`.

mod config;
mod device_controller;
mod encoder;
pub mod io;
pub mod kernels;
pub mod layers;
mod runtime;
pub mod train;
#[cfg(feature = "train")]
pub mod train_model;

pub use config::ControllerConfig;
pub use device_controller::DeviceController;
pub use encoder::{Controller, ControllerOutput, Encoded};
pub use runtime::{ControllerPrecision, PackedController};
