//! Controller sizes. The default follows the reference architecture's widths; the small
//! configuration is what the benchmark trains on a 2-core machine in seconds.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Widths and depths of the controller. `embed_dim` is the served model's embedding width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControllerConfig {
    /// Tokens read from the start of a task (padded/truncated), k.
    pub k: usize,
    /// Width of the frozen token embeddings (the served model's `dim`).
    pub embed_dim: usize,
    /// Encoder width.
    pub d_model: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Encoder attention heads.
    pub n_heads: usize,
    /// Encoder feed-forward inner width.
    pub ffn_dim: usize,
    /// Heads of the attention-pooling layer.
    pub pool_heads: usize,
    /// Width of the attention-pooling projections.
    pub pool_dim: usize,
    /// Hidden width of the complexity MLP.
    pub mlp_hidden: usize,
}

impl ControllerConfig {
    /// A tiny configuration whose widths are multiples of no kernel tile, panel or lane count
    /// (for tests of the packed and backend forwards).
    #[cfg(test)]
    pub(crate) fn ragged(embed_dim: usize) -> Self {
        ControllerConfig {
            k: 12,
            embed_dim,
            d_model: 36,
            n_layers: 2,
            n_heads: 3,
            ffn_dim: 70,
            pool_heads: 2,
            pool_dim: 18,
            mlp_hidden: 9,
        }
    }

    /// The reference widths: k = 32, encoder 6 x 512 with 8 heads (FFN 1024), pooling
    /// attention with 4 heads and 256-wide projections, MLP 256 -> 128 -> 1.
    pub fn reference(embed_dim: usize) -> Self {
        ControllerConfig {
            k: 32,
            embed_dim,
            d_model: 512,
            n_layers: 6,
            n_heads: 8,
            ffn_dim: 1024,
            pool_heads: 4,
            pool_dim: 256,
            mlp_hidden: 128,
        }
    }

    /// A small configuration: encoder 2 x 64 with 4 heads (FFN 128), pooling 4 x 16, MLP
    /// 64 -> 32 -> 1.
    pub fn small(embed_dim: usize) -> Self {
        ControllerConfig {
            k: 32,
            embed_dim,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            ffn_dim: 128,
            pool_heads: 4,
            pool_dim: 64,
            mlp_hidden: 32,
        }
    }

    /// A configuration by name: `reference` (alias `default`) or `small`.
    pub fn named(name: &str, embed_dim: usize) -> Result<Self> {
        match name {
            "reference" | "default" => Ok(Self::reference(embed_dim)),
            "small" => Ok(Self::small(embed_dim)),
            _ => Err(Error::invalid(format!(
                "unknown controller configuration '{name}' (expected reference or small)"
            ))),
        }
    }

    /// Checks that every width is non-zero and the heads divide their widths.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("k", self.k),
            ("embed_dim", self.embed_dim),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("ffn_dim", self.ffn_dim),
            ("pool_heads", self.pool_heads),
            ("pool_dim", self.pool_dim),
            ("mlp_hidden", self.mlp_hidden),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(format!(
                "controller {name} must be non-zero"
            )));
        }
        if self.d_model % self.n_heads != 0 || self.pool_dim % self.pool_heads != 0 {
            return Err(Error::invalid(format!(
                "controller heads must divide their widths (d_model {} / {} heads, pool_dim {} / {} heads)",
                self.d_model, self.n_heads, self.pool_dim, self.pool_heads
            )));
        }
        Ok(())
    }

    /// Number of parameters these sizes give (see [`super::Controller::param_count`]).
    pub fn param_count(&self) -> usize {
        let lin = |i: usize, o: usize| i * o + o;
        let d = self.d_model;
        let layer = 4 * lin(d, d) + lin(d, self.ffn_dim) + lin(self.ffn_dim, d) + 4 * d;
        lin(self.embed_dim, d)
            + self.n_layers * layer
            + 2 * d
            + 3 * lin(d, self.pool_dim)
            + lin(self.pool_dim, self.pool_dim)
            + lin(self.pool_dim, self.mlp_hidden)
            + lin(self.mlp_hidden, 1)
            + lin(self.pool_dim, 4)
            + 2 * lin(self.pool_dim, 1)
    }
}
