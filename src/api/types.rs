//! Plain data the API returns: routes, run results, statistics.

use crate::engine::GenerateOutput;
use crate::quant::Precision;
use serde::Serialize;

/// A routing decision and the reasons for it.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// The variant chosen.
    pub precision: Precision,
    /// Predicted task complexity in [0, 1] (`None` when no controller ran).
    pub complexity: Option<f32>,
    /// Expected relative cost of running the task on the chosen variant (FP16 = 1.0).
    pub expected_cost: f64,
    /// Whether serving the task needs loading a variant that is not resident.
    pub swap: bool,
    /// Human-readable reasons: complexity, alternatives considered, hit or swap.
    pub reasons: Vec<String>,
}

/// The outcome of [`super::Engine::run`]: the route taken and what was generated.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The route the task took.
    pub route: Route,
    /// The generation.
    pub output: GenerateOutput,
}

/// Counters accumulated by an engine since it was opened.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct EngineStats {
    /// Tasks run.
    pub tasks: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Tasks per precision, indexed by [`Precision::index`].
    pub per_precision: [u64; 4],
    /// Variant loads that were needed (swaps).
    pub swaps: u64,
    /// Tasks served by an already resident variant.
    pub hits: u64,
    /// Bytes read from storage.
    pub bytes_streamed: u64,
    /// Accumulated relative cost (FP16 = 1.0 per task).
    pub cost: f64,
}
