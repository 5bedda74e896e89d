//! Differential checks and benchmarks behind `agentcompress gpu-check` and `agentcompress
//! bench ...`. They live with the command line, outside the library, and reach the library
//! through its public paths (and [`agentcompress::internal`] for the few launch-level items a
//! kernel benchmark needs).

pub mod check;
pub mod check_controller;
pub mod check_quant;
pub mod check_stream;
pub mod copy_rate;
pub mod cpu_kernel_bench;
pub mod decode_bench;
pub mod ids_tokenizer;
pub mod kernel_bench;
pub mod model_decode_bench;
pub mod quant_kernel_bench;
pub mod spec_bench;
pub mod stream_bench;

#[cfg(test)]
mod cuda_diff_tests;

/// The integration tests' shared-model finder (`tests/common`), so the harness's unit tests
/// skip visibly on a clone without the shared models too.
#[cfg(test)]
#[path = "../../../../tests/common/mod.rs"]
pub(crate) mod test_models;
