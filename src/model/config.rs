//! The shape and hyper-parameters of one LLaMA-family model.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How rotary position embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// llama2.c / Meta original: rotate pairs `(x[2i], x[2i+1])`.
    Interleaved,
    /// Hugging Face: rotate pairs `(x[i], x[i + head_dim/2])`.
    RotateHalf,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model (residual stream) width.
    pub dim: usize,
    /// FFN inner width.
    pub hidden_dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence (prompt + generated) the model supports.
    pub max_seq_len: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RoPE pairing convention of the stored q/k weights.
    pub rope_style: RopeStyle,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Whether the classifier shares the token-embedding matrix.
    pub tied_embeddings: bool,
    /// Whether q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
    /// Beginning-of-sequence token id, if the model uses one.
    pub bos_token: Option<u32>,
    /// Token ids that end generation.
    pub eos_tokens: Vec<u32>,
}

impl ModelConfig {
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Number of weight parameters (embeddings, norms, projections, classifier if untied).
    pub fn parameter_count(&self) -> u64 {
        let (d, h, l) = (
            self.dim as u64,
            self.hidden_dim as u64,
            self.n_layers as u64,
        );
        let (q, kv) = (self.q_dim() as u64, self.kv_dim() as u64);
        let per_layer = 2 * d
            + d * q
            + 2 * d * kv
            + q * d
            + 3 * d * h
            + if self.qkv_bias { q + 2 * kv } else { 0 };
        let emb = self.vocab_size as u64 * d;
        emb + l * per_layer + d + if self.tied_embeddings { 0 } else { emb }
    }

    /// Checks that the shape is self-consistent; the message names the first bad field.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::invalid(format!("model config: {m}")));
        for (name, v) in [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return fail(format!("{name} is 0"));
            }
            if v > (1 << 24) {
                return fail(format!("{name} = {v} is implausibly large"));
            }
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return fail(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return fail(format!(
                "head_dim {} is odd (RoPE needs pairs)",
                self.head_dim
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return fail(format!(
                "rope_theta {} is not a positive number",
                self.rope_theta
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return fail(format!(
                "norm_eps {} is not a non-negative number",
                self.norm_eps
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn stories_like() -> ModelConfig {
        ModelConfig {
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            head_dim: 8,
            vocab_size: 512,
            max_seq_len: 512,
            rope_theta: 10000.0,
            rope_style: RopeStyle::Interleaved,
            norm_eps: 1e-5,
            tied_embeddings: true,
            qkv_bias: false,
            bos_token: Some(1),
            eos_tokens: vec![2],
        }
    }

    #[test]
    fn stories260k_parameter_count_matches_published() {
        assert_eq!(stories_like().parameter_count(), 260_032);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = stories_like();
        c.n_kv_heads = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("n_kv_heads"), "{e}");
        let mut c = stories_like();
        c.dim = 0;
        assert!(c.validate().unwrap_err().to_string().contains("dim is 0"));
        assert!(stories_like().validate().is_ok());
    }
}
