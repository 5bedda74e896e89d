//! Plain data the API returns: routes, run results, statistics.

use crate::engine::GenerateOutput;
use crate::quant::{PerPrecision, Precision};
use crate::router::SpeculationPlan;
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
    /// The other adequate variants and their expected cost (swap included), cheapest first.
    pub alternatives: Vec<(Precision, f64)>,
    /// The variant the router expects to want next (what the engine prefetches).
    pub next: Option<Precision>,
    /// Human-readable reasons: complexity, alternatives considered, hit or swap.
    pub reasons: Vec<String>,
    /// The speculation the task was served through ([`super::Engine::run_planned`]), `None`
    /// for plain decoding.
    pub speculation: Option<SpeculationPlan>,
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
    /// Tasks per precision.
    pub per_precision: PerPrecision<u64>,
    /// Tasks that had to load their variant (swaps).
    pub swaps: u64,
    /// Tasks served by an already resident variant.
    pub hits: u64,
    /// Tasks served through speculation from a cheaper variant.
    pub speculated: u64,
    /// Bytes read from storage (pool streaming, or variant loads of a routed engine).
    pub bytes_streamed: u64,
    /// Bytes of variant weights loaded by swaps and prefetches (routed engines).
    pub bytes_loaded: u64,
    /// Seconds tasks spent waiting for their variant to load (swaps, prefetch waits).
    pub swap_seconds: f64,
    /// Variants loaded in the background and admitted ahead of use.
    pub prefetches: u64,
    /// Tasks served by a variant a prefetch had loaded.
    pub prefetch_hits: u64,
    /// Accumulated relative cost (FP16 = 1.0 per task).
    pub cost: f64,
}

impl EngineStats {
    /// Fraction of tasks served by a resident variant (0 before any task).
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.swaps;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}
