//! The quality of a variant against its reference, as the manifest records it;
//! `crate::pipeline::variant_quality` measures it by running both models.

use serde::{Deserialize, Serialize};

/// How a variant compares with the reference on the same tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// exp(mean negative log-likelihood of the next token) under the variant.
    pub perplexity: f64,
    /// Fraction of positions where the variant's argmax equals the reference's.
    pub top1_agreement: f64,
    /// Mean over positions of KL(P_reference || P_variant), in nats.
    pub mean_kl: f64,
    /// Positions scored.
    pub positions: usize,
}
