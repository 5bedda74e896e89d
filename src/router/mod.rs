//! Routing: turning the controller's prediction into a variant, aware of which variants are
//! resident and of what a swap costs; every decision records its reasons.

mod policy;
mod speculation;
mod variant_cache;

pub use policy::{Decision, QualityModel, Router, RouterConfig, DEFAULT_PREFETCH_MIN_PROB};
pub use speculation::{
    PlanDecision, SpeculationBook, SpeculationEstimate, SpeculationPlan, MIN_PLAIN_TOKENS,
    MIN_VERIFIES,
};
pub use variant_cache::VariantCache;
