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

/// Like [`check_len`] for operand `what` of operation `op`; the message is built only on failure.
fn check_operand(op: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::invalid(format!(
            "{op} {what}: buffer holds {have} elements, the operation needs {need}"
        )));
    }
    Ok(())
}

/// A copy of whole rows between two buffers of the same row width: `rows` rows from row
/// `from` of the source to row `to` of the destination.
#[derive(Clone, Copy, Debug)]
pub struct RowCopy {
    /// First source row.
    pub from: usize,
    /// First destination row.
    pub to: usize,
    /// Rows to copy.
    pub rows: usize,
    /// Elements per row.
    pub width: usize,
}

impl RowCopy {
    /// One row, `from` -> `to`.
    pub fn one(from: usize, to: usize, width: usize) -> Self {
        RowCopy {
            from,
            to,
            rows: 1,
            width,
        }
    }

    /// Element ranges of the source and destination, checked against their lengths.
    pub fn check(
        &self,
        src: usize,
        dst: usize,
    ) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>)> {
        let span = |first: usize| {
            let start = first.checked_mul(self.width)?;
            let end = first.checked_add(self.rows)?.checked_mul(self.width)?;
            Some(start..end)
        };
        let overflow = || crate::Error::invalid("copy_rows: rows overflow");
        let (s, d) = (
            span(self.from).ok_or_else(overflow)?,
            span(self.to).ok_or_else(overflow)?,
        );
        check_len("copy_rows source", src, s.end)?;
        check_len("copy_rows destination", dst, d.end)?;
        Ok((s, d))
    }
}

/// One row-wise normalisation (RMSNorm or layer norm): `rows` rows of width `dim`, with
/// `eps` added to the variance.
#[derive(Clone, Copy, Debug)]
pub struct NormShape {
    /// Rows to normalise.
    pub rows: usize,
    /// Width of one row (and length of each per-feature parameter vector).
    pub dim: usize,
    /// Added to the mean square (RMSNorm) or variance (layer norm).
    pub eps: f32,
}

impl NormShape {
    /// Checks the input and output (`rows * dim`) and each named per-feature parameter
    /// vector (`dim`) of operation `op`.
    pub fn check(&self, op: &str, x: usize, out: usize, params: &[(&str, usize)]) -> Result<()> {
        let n = self.rows * self.dim;
        check_operand(op, "x", x, n)?;
        check_operand(op, "out", out, n)?;
        for &(name, len) in params {
            check_operand(op, name, len, self.dim)?;
        }
        Ok(())
    }
}

/// One unmasked (bidirectional) multi-head attention call: `n_q` query rows attend to all
/// `n_k` key/value rows, `n_heads` heads of width `head_dim`.
#[derive(Clone, Copy, Debug)]
pub struct FullAttentionShape {
    /// Query rows.
    pub n_q: usize,
    /// Key/value rows (at least one).
    pub n_k: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl FullAttentionShape {
    /// Checks buffer lengths (`q`, `k`, `v`, `out`) and that there is a key to attend to.
    pub fn check(&self, q: usize, k: usize, v: usize, out: usize) -> Result<()> {
        let w = self.n_heads * self.head_dim;
        check_operand("attention_full", "q", q, self.n_q * w)?;
        check_operand("attention_full", "k", k, self.n_k * w)?;
        check_operand("attention_full", "v", v, self.n_k * w)?;
        check_operand("attention_full", "out", out, self.n_q * w)?;
        if self.n_k == 0 {
            return Err(Error::invalid("attention_full over zero keys"));
        }
        Ok(())
    }
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
