//! The workflow benchmark: multi-stage workflows across domains, labels measured on every
//! variant, the controller trained and calibrated on one split and evaluated on another
//! against uniform, random and oracle baselines.

pub mod bench;
pub mod labels;
pub mod metrics;
pub mod report;
pub mod workflows;

pub use bench::{run, EvalConfig, EvalOutput, EvalReport};
