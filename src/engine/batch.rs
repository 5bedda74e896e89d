//! One decode step for several sequences at once: every weight product runs once over one
//! row per sequence (the weights are read once per step, not once per sequence), while each
//! row's RoPE, KV-cache update and attention run on its own sequence's state and position.

use super::forward::{Activations, Logits, Model, Rows, State};
use crate::backend::{Backend, RowCopy};
use crate::{Error, Result};

/// Scratch of a batched decode step: one activation row per sequence, reused across steps.
pub struct BatchScratch<B: Backend> {
    act: Activations<B>,
}

impl<B: Backend> BatchScratch<B> {
    /// Most sequences one step can run with this scratch.
    pub fn rows(&self) -> usize {
        self.act.rows
    }
}

impl<B: Backend> Model<B> {
    /// Scratch for batched steps of up to `rows` sequences.
    pub fn new_batch_scratch(&self, rows: usize) -> Result<BatchScratch<B>> {
        if rows == 0 {
            return Err(Error::invalid(
                "a batch needs room for at least one sequence",
            ));
        }
        Ok(BatchScratch {
            act: self.alloc_activations(rows)?,
        })
    }

    /// Feeds `tokens[i]` to `states[i]` for every `i` in one pass: the products run on all
    /// rows together, attention per sequence on its own cache at its own position. Each
    /// sequence advances by one token; the logits of row `i` are left in the scratch (read
    /// them with [`Model::read_batch_logits`]). Row `i` computes what [`Model::step`] on
    /// `states[i]` alone computes, up to the rounding of the backend's batched products
    /// ([`Backend::matmul_batch`]; bit for bit below the backend's blocked-product threshold).
    pub fn step_batch(
        &self,
        states: &mut [&mut State<B>],
        tokens: &[u32],
        scratch: &mut BatchScratch<B>,
    ) -> Result<()> {
        let n = tokens.len();
        if n == 0 || states.len() != n {
            return Err(Error::invalid(format!(
                "a batched step needs one token per sequence (got {n} tokens for {} sequences)",
                states.len()
            )));
        }
        if n > scratch.rows() {
            return Err(Error::invalid(format!(
                "a batch of {n} sequences exceeds the scratch of {} rows",
                scratch.rows()
            )));
        }
        for s in states.iter_mut() {
            self.check_room(s, 1)?;
            let need = s.pos + 1;
            self.ensure_cache_rows(s, need)?;
        }
        let be = &self.backend;
        let (qd, kvd) = (self.config.q_dim(), self.config.kv_dim());
        be.embed(&self.embedding, tokens, &mut scratch.act.x)?;
        self.layers_pass(&mut scratch.act, n, Rows::Batch, |li, batch| {
            for (i, s) in states.iter_mut().enumerate() {
                let State {
                    k_cache,
                    v_cache,
                    act: one,
                    pos,
                    ..
                } = &mut **s;
                be.copy_rows(&batch.q, &mut one.q, &RowCopy::one(i, 0, qd))?;
                be.copy_rows(&batch.k, &mut one.k, &RowCopy::one(i, 0, kvd))?;
                be.copy_rows(&batch.v, &mut one.v, &RowCopy::one(i, 0, kvd))?;
                self.rope_rows(one, 1, *pos)?;
                be.store_rows(&one.k, &mut k_cache[li], 1, kvd, *pos)?;
                be.store_rows(&one.v, &mut v_cache[li], 1, kvd, *pos)?;
                be.attention(
                    &one.q,
                    &k_cache[li],
                    &v_cache[li],
                    &mut one.att,
                    &self.attention_shape(1, *pos),
                )?;
                be.copy_rows(&one.att, &mut batch.att, &RowCopy::one(0, i, qd))?;
            }
            Ok(())
        })?;
        self.classify(&mut scratch.act, n, Logits::Every, Rows::Batch)?;
        for s in states.iter_mut() {
            s.pos += 1;
        }
        Ok(())
    }

    /// Copies the logits of the first `rows` sequences of the last batched step to `out`
    /// (row-major `[rows, vocab]`).
    pub fn read_batch_logits(
        &self,
        scratch: &BatchScratch<B>,
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let len = rows
            .checked_mul(self.config.vocab_size)
            .ok_or_else(|| Error::invalid("batch logits size overflows"))?;
        if rows > scratch.rows() || out.len() < len {
            return Err(Error::invalid(format!(
                "cannot read {rows} rows of logits from a batch of {} rows into {} values",
                scratch.rows(),
                out.len()
            )));
        }
        self.backend.read(&scratch.act.logits, &mut out[..len])
    }
}
