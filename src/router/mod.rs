//! Routing: turning the controller's prediction into a variant, aware of which variants are
//! resident and of what a swap costs; every decision records its reasons.

mod policy;
mod variant_cache;

pub use policy::{Decision, QualityModel, Router, RouterConfig, DEFAULT_PREFETCH_MIN_PROB};
pub use variant_cache::VariantCache;
