//! Argument checks shared by every backend, so each reports bad sizes with the same message.

use crate::model::RopeStyle;
use crate::{Error, Result};

/// Fails when a buffer of `have` elements is smaller than the `need` an operation requires.
pub fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::invalid(format!(
            "{what}: buffer holds {have} elements, the operation needs {need}"
        )));
    }
    Ok(())
}

/// The shape of one attention call, checked once for every backend.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Query rows (positions `pos0..pos0 + rows`).
    pub rows: usize,
    /// Tokens already in the cache before these rows.
    pub pos0: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Checks buffer lengths (`q`, `out`, key cache, value cache) and the head grouping.
    pub fn check(&self, q: usize, out: usize, k_cache: usize, v_cache: usize) -> Result<()> {
        let q_dim = self.n_heads * self.head_dim;
        let kv_dim = self.n_kv_heads * self.head_dim;
        let cached = (self.pos0 + self.rows) * kv_dim;
        check_len("attention q", q, self.rows * q_dim)?;
        check_len("attention out", out, self.rows * q_dim)?;
        check_len("attention k cache", k_cache, cached)?;
        check_len("attention v cache", v_cache, cached)?;
        if self.n_kv_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            return Err(Error::invalid(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            )));
        }
        Ok(())
    }
}

/// One rotary-embedding call: `rows` rows of `n_heads` heads of width `head_dim`, row `r` at
/// position `pos0 + r`.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    /// Rows to rotate.
    pub rows: usize,
    /// Heads per row.
    pub n_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Position of the first row.
    pub pos0: usize,
    /// Base of the rotation frequencies.
    pub theta: f32,
    /// Which element pairs rotate together.
    pub style: RopeStyle,
}

impl RopeParams {
    /// Checks that a buffer of `len` elements holds every row.
    pub fn check(&self, len: usize) -> Result<()> {
        check_len("rope", len, self.rows * self.n_heads * self.head_dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_shape_names_the_short_buffer_and_bad_grouping() {
        let s = AttentionShape {
            rows: 2,
            pos0: 3,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        assert!(s.check(64, 64, 80, 80).is_ok());
        let e = s.check(64, 64, 79, 80).unwrap_err().to_string();
        assert!(e.contains("attention k cache") && e.contains("79"), "{e}");
        let bad = AttentionShape { n_kv_heads: 3, ..s };
        assert!(bad
            .check(64, 64, 1000, 1000)
            .unwrap_err()
            .to_string()
            .contains("n_kv_heads 3"));
    }
}
