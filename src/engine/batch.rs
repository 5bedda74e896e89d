//! One step for several sequences at once: every weight product runs once over the rows of
//! all of them (the weights are read once per step, not once per sequence), while each
//! sequence's RoPE, KV-cache update and attention run on its own state and positions. A
//! sequence feeds one token (decoding) or a chunk of its prompt (joining).

use super::forward::{Activations, Logits, Model, Rows, State};
use crate::backend::{AttentionJob, Backend, RowCopy};
use crate::{Error, Result};

/// Scratch of a batched step: the activation rows of every token fed, and one row per
/// sequence for its last token's norm and logits; reused across steps.
pub struct BatchScratch<B: Backend> {
    act: Activations<B>,
    heads: Activations<B>,
}

impl<B: Backend> BatchScratch<B> {
    /// Most token rows one step can feed with this scratch.
    pub fn rows(&self) -> usize {
        self.act.rows
    }

    /// Most sequences one step can feed with this scratch.
    pub fn sequences(&self) -> usize {
        self.heads.rows
    }
}

impl<B: Backend> Model<B> {
    /// Scratch for batched steps of up to `rows` token rows over up to `sequences` sequences.
    pub fn new_batch_scratch(&self, rows: usize, sequences: usize) -> Result<BatchScratch<B>> {
        if rows == 0 || sequences == 0 || sequences > rows {
            return Err(Error::invalid(format!(
                "a batch needs room for at least one sequence and a row per sequence \
                 (got {rows} rows for {sequences} sequences)"
            )));
        }
        Ok(BatchScratch {
            act: self.alloc_activations(rows)?,
            heads: self.alloc_activations(sequences)?,
        })
    }

    /// Feeds `segments[i]` (one or more tokens) to `states[i]` for every `i` in one pass:
    /// the products run on all rows together, attention per sequence on its own cache at
    /// its own positions. A decoding sequence feeds one token; a joining one a chunk of its
    /// prompt, so prompts are prefilled alongside the decode steps instead of stalling them.
    /// The logits of each sequence's last row are left in the scratch, row `i` for sequence
    /// `i` (read them with [`Model::read_batch_logits`]). Row for row this computes what
    /// [`Model::forward`] on each state alone computes, up to the rounding of the backend's
    /// batched products ([`Backend::matmul_batch`]; bit for bit below the backend's
    /// blocked-product threshold).
    pub fn step_batch(
        &self,
        states: &mut [&mut State<B>],
        segments: &[&[u32]],
        scratch: &mut BatchScratch<B>,
    ) -> Result<()> {
        let n_seq = segments.len();
        if n_seq == 0 || states.len() != n_seq || segments.iter().any(|t| t.is_empty()) {
            return Err(Error::invalid(format!(
                "a batched step needs one non-empty token segment per sequence (got {n_seq} \
                 segments for {} sequences)",
                states.len()
            )));
        }
        let n: usize = segments.iter().map(|t| t.len()).sum();
        if n > scratch.rows() || n_seq > scratch.sequences() {
            return Err(Error::invalid(format!(
                "a batch of {n} rows over {n_seq} sequences exceeds the scratch of {} rows \
                 and {} sequences",
                scratch.rows(),
                scratch.sequences()
            )));
        }
        for (s, t) in states.iter_mut().zip(segments) {
            if t.len() > s.act.rows {
                return Err(Error::invalid(format!(
                    "a segment of {} tokens exceeds its sequence's scratch of {} rows",
                    t.len(),
                    s.act.rows
                )));
            }
            self.check_room(s, t.len())?;
            let need = s.pos + t.len();
            self.ensure_cache_rows(s, need)?;
        }
        let be = &self.backend;
        let c = &self.config;
        let (qd, kvd, dim) = (c.q_dim(), c.kv_dim(), c.dim);
        let tokens: Vec<u32> = segments.iter().flat_map(|t| t.iter().copied()).collect();
        be.embed(&self.embedding, &tokens, &mut scratch.act.x)?;
        self.layers_pass(&mut scratch.act, n, Rows::Batch, |li, batch| {
            // Each sequence's rows: roped in its own scratch and stored in its own cache, then
            // all sequences attend as one job (the backend spreads the sequences' heads over
            // its threads) ...
            let mut jobs = Vec::new();
            jobs.try_reserve(states.len())
                .map_err(|_| Error::invalid("out of memory for the batch's attention jobs"))?;
            let mut r0 = 0;
            for (s, t) in states.iter_mut().zip(segments) {
                let rows = t.len();
                let State {
                    k_cache,
                    v_cache,
                    act: one,
                    pos,
                    ..
                } = &mut **s;
                let take = |width| RowCopy {
                    from: r0,
                    to: 0,
                    rows,
                    width,
                };
                be.copy_rows(&batch.q, &mut one.q, &take(qd))?;
                be.copy_rows(&batch.k, &mut one.k, &take(kvd))?;
                be.copy_rows(&batch.v, &mut one.v, &take(kvd))?;
                self.rope_rows(one, rows, *pos)?;
                be.store_rows(&one.k, &mut k_cache[li], rows, kvd, *pos)?;
                be.store_rows(&one.v, &mut v_cache[li], rows, kvd, *pos)?;
                jobs.push(AttentionJob {
                    q: &one.q,
                    k_cache: &k_cache[li],
                    v_cache: &v_cache[li],
                    out: &mut one.att,
                    shape: self.attention_shape(rows, *pos),
                });
                r0 += rows;
            }
            be.attention_batch(&mut jobs)?;
            // ... and their outputs go back into the batch's rows.
            let mut r0 = 0;
            for j in &jobs {
                let rows = j.shape.rows;
                let back = RowCopy {
                    from: 0,
                    to: r0,
                    rows,
                    width: qd,
                };
                be.copy_rows(j.out, &mut batch.att, &back)?;
                r0 += rows;
            }
            Ok(())
        })?;
        // Each sequence's last row alone goes through the final norm and the classifier.
        let mut r0 = 0;
        for (i, t) in segments.iter().enumerate() {
            r0 += t.len();
            be.copy_rows(
                &scratch.act.x,
                &mut scratch.heads.x,
                &RowCopy::one(r0 - 1, i, dim),
            )?;
        }
        self.classify(&mut scratch.heads, n_seq, Logits::Every, Rows::Batch)?;
        for (s, t) in states.iter_mut().zip(segments) {
            s.pos += t.len();
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
        if rows > scratch.sequences() || out.len() < len {
            return Err(Error::invalid(format!(
                "cannot read {rows} rows of logits from a batch of {} sequences into {} values",
                scratch.sequences(),
                out.len()
            )));
        }
        self.backend.read(&scratch.heads.logits, &mut out[..len])
    }

    /// The greedy token (argmax of the logits, [`Sampler`](super::sampling::Sampler)'s
    /// greedy rule) of each of the first `rows` sequences of the last batched step, into
    /// `out[..rows]`, without copying the logits to the host.
    pub fn argmax_batch_logits(
        &self,
        scratch: &BatchScratch<B>,
        rows: usize,
        out: &mut [u32],
    ) -> Result<()> {
        if rows > scratch.sequences() {
            return Err(Error::invalid(format!(
                "cannot take {rows} greedy tokens from a batch of {} sequences",
                scratch.sequences()
            )));
        }
        let vocab = self.config.vocab_size;
        self.backend
            .argmax_rows(&scratch.heads.logits, rows, vocab, out)
    }
}
