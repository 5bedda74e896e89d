//! The workflow benchmark: multi-stage workflows across domains, labels measured on every
//! variant, the controller trained and calibrated on one split and evaluated on another
//! against uniform, random and oracle baselines.
//!
//! Definitions used throughout:
//! - **quality** of a task on a variant: teacher-forced top-1 agreement with FP16 over FP16's
//!   greedy continuation (`n_gen` tokens); KL and exact match are reported beside it.
//! - **true complexity**: the mean quality lost by INT8, INT4 and INT2.
//! - **cost** of a task: bytes of weights read, i.e. the variant's size relative to FP16
//!   (decode is bound by memory traffic; the packed variants run on the CPU backend's packed
//!   kernels, whose time is recorded in the labels but not used); a **swap** (loading a variant that
//!   is not resident) costs `swap_factor` times the variant's bytes, spread over the task's
//!   `n_gen` forward calls. VariantCache is a byte budget (`capacity` x FP16's size) with LRU.
//! - **success**: quality at or above the threshold; **quality retained**: mean quality.
//! - **oracle**: the cheapest variant meeting the threshold per task (it pays swaps too).
//! - **oracle at int8 quality**: with every test task's quality known, the cheapest routing
//!   whose quality retained matches uniform INT8's; a bound on what any controller can save at
//!   that quality, not a strategy.
//! - **controller at int8 quality**: the controller with the router's target calibrated on the
//!   training split to uniform INT8's quality retained there.
//! - **variance beyond sampling noise**: the share of the across-task variance of a
//!   precision's quality that per-position (binomial) noise over `n_gen` positions does not
//!   explain; only that share is predictable from the task.
//!
//! The command line's variants are GPTQ (INT4 and INT2 in groups of 32), calibrated on text the
//! FP16 model samples from BOS, never on the benchmark's tasks.
//!
//! The chat task suite (`chat_tasks`, `task_checks`, `chat_labels`) labels every variant with
//! task success and fidelity; `chat_route` trains the controller on those labels and puts its
//! threshold sweep on the frontier (`frontier`) beside the uniform variants, blind mixing and
//! the per-task oracle, in-domain and cross-domain (`agentcompress eval --chat-tasks N`); its
//! router is calibrated on out-of-fold predictions (`cross_fit`).
//!
//! With `agentcompress eval --speculate`, the controller's hard tasks (routed to FP16 or
//! INT8) are also served through greedy speculation from a cheaper resident variant
//! (`speculation`): their cost and the whole benchmark's with and without it, at the same
//! outputs (checked task by task).
//!
//! Reproduce: `agentcompress eval -m ../shared/models/stories260K/stories260K.bin
//! --tokenizer ../shared/models/stories260K/tok512.bin` (writes `eval-out/`), or
//! `agentcompress eval --synthetic tiny`.

pub mod workflow_bench;
pub use crate::pipeline::labels;
pub mod chat_labels;
pub mod chat_route;
pub mod chat_route_report;
pub mod chat_tasks;
pub mod cross_fit;
pub mod frontier;
pub mod metrics;
pub mod report;
pub mod speculation;
pub mod task_checks;
pub mod workflows;

pub use workflow_bench::{run, EvalConfig, EvalOutput, EvalReport};
