//! Jobs that run the model to make or measure something: collecting calibration statistics,
//! building and evaluating a variant directory, the four in-memory variants the router and the
//! benchmark use, and per-task labels. They sit above the engine (they run it) and below the
//! workflow benchmark and the API, which use them.

pub mod build_variants;
pub mod calibrate;
pub mod labels;
pub mod variant_quality;
pub mod variant_set;

pub use build_variants::{build_variants, evaluate_variants, BuildOptions, SelfText, VariantEval};
pub use variant_set::VariantSet;
