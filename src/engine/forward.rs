//! One forward pass: embedding, then per layer RMSNorm -> q/k/v (+bias) -> RoPE -> KV cache ->
//! grouped-query attention -> output projection -> residual, RMSNorm -> SwiGLU FFN -> residual;
//! then the final RMSNorm and the classifier.

use super::device_tier::{DeviceTier, DeviceTierStats};
use super::layers::{vec_of, Layer, Layers, StreamOptions, Streamer};
use crate::backend::{AttentionShape, Backend, NormShape, RopeParams, RowCopy};
use crate::model::input_file::try_reserve;
use crate::model::{ModelConfig, ModelWeights};
use crate::pool::{Pool, PoolStats, VariantSource};
use crate::quant::{Precision, WeightMatrix};
use crate::store::EntryPart;
use crate::{Error, Result};
use std::sync::Arc;

/// A model whose weights live on backend `B`: all uploaded at construction ([`Model::new`]),
/// or with the transformer blocks streamed through a pool ([`Model::streamed`]).
pub struct Model<B: Backend> {
    pub(super) backend: B,
    pub(super) config: ModelConfig,
    pub(super) embedding: B::Mat,
    pub(super) layers: Layers<B>,
    pub(super) final_norm: B::Buf,
    pub(super) classifier: Option<B::Mat>,
}

/// Rows the KV cache holds when a state is created; it doubles as the sequence needs more,
/// up to the state's context, so memory follows the tokens actually processed and never the
/// context length a model file declares.
const INITIAL_CACHE_ROWS: usize = 256;

/// Per-sequence state: the KV cache (grown on demand up to the state's context) and scratch
/// buffers (allocated once and reused).
pub struct State<B: Backend> {
    pub(super) k_cache: Vec<B::Cache>,
    pub(super) v_cache: Vec<B::Cache>,
    /// Scratch rows of one forward call (the prefill chunk size).
    pub(super) act: Activations<B>,
    /// Tokens already in the cache.
    pub(super) pos: usize,
    /// Rows each cache buffer holds now.
    pub(super) cache_rows: usize,
    /// Most tokens this sequence may hold (the caller's context, at most the model's).
    pub(super) context: usize,
}

/// The activations of up to `rows` token rows as they pass through the layers: the residual
/// stream, the normalised input, q/k/v, attention output, the FFN's gate/up/hidden and the
/// logits. A sequence's [`State`] holds one (its prefill chunk); a batched decode step holds
/// another, one row per sequence.
pub(super) struct Activations<B: Backend> {
    pub(super) x: B::Buf,
    pub(super) xb: B::Buf,
    pub(super) q: B::Buf,
    pub(super) k: B::Buf,
    pub(super) v: B::Buf,
    pub(super) att: B::Buf,
    pub(super) gate: B::Buf,
    pub(super) up: B::Buf,
    pub(super) hb: B::Buf,
    pub(super) logits: B::Buf,
    /// Rows every buffer holds (the attention buffers alone, for
    /// [`Model::alloc_segment_activations`]).
    pub(super) rows: usize,
}

impl<B: Backend> State<B> {
    /// Number of tokens already processed (the next token's position).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Most tokens this sequence may hold: the context it was created with, capped by the
    /// model's own context length.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Forgets the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Forgets every token from position `pos` on (a rejected speculative draft): the cached
    /// rows before it stay, the ones after are overwritten by the next forward. A `pos` at or
    /// beyond the current position changes nothing.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
}

/// `a * b` elements, or [`Error::OutOfMemory`] naming `what` when the product overflows.
fn elems(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| {
        Error::OutOfMemory(format!(
            "{what} of {a} x {b} elements does not fit in memory"
        ))
    })
}

impl<B: Backend> Model<B> {
    /// Uploads `weights` to `backend`.
    pub fn new<M: Clone + Into<WeightMatrix>>(
        backend: B,
        weights: &ModelWeights<M>,
    ) -> Result<Self> {
        let config = weights.config.clone();
        config.validate()?;
        let be = &backend;
        let up = |m: &M| be.upload_matrix(&m.clone().into());
        let embedding = be.upload_matrix(&WeightMatrix::Dense(weights.embedding.clone()))?;
        let layers = weights
            .layers
            .iter()
            .map(|l| Layer::upload(be, l))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = vec_of(be, &weights.final_norm)?;
        let classifier = weights.classifier.as_ref().map(up).transpose()?;
        Ok(Model {
            backend,
            config,
            embedding,
            layers: Layers::Resident(layers),
            final_norm,
            classifier,
        })
    }

    /// A model of precision `precision` of `source` whose blocks are acquired from `pool` as
    /// the forward pass reaches them (pinned while they run, released after). The embedding,
    /// final norm and classifier (used at both ends of every pass) are read through the pool
    /// once, here, and stay uploaded. With a budget smaller than the model this is offloaded
    /// execution; the logits are the same as [`Model::new`] on the same variant.
    pub fn streamed(
        backend: B,
        pool: Arc<Pool>,
        source: Arc<VariantSource>,
        precision: Precision,
        opts: StreamOptions,
    ) -> Result<Self> {
        let variant = source.variant(precision)?;
        let config = variant.index.meta.config.clone();
        config.validate()?;
        let budget = pool.stats().device_budget;
        let largest = source.max_entry_bytes(precision)?;
        if largest > budget {
            return Err(Error::OutOfMemory(format!(
                "the pool budget of {budget} bytes cannot hold the largest entry of the {precision} \
                 variant ({largest} bytes)"
            )));
        }
        let streamer = Streamer {
            pool,
            source: source.clone(),
            precision,
            n_layers: config.n_layers,
            prefetch: opts.prefetch && budget >= 2 * largest,
        };
        let be = &backend;
        let (embedding, final_norm, classifier) = {
            let guard = streamer.acquire(EntryPart::Globals)?;
            let g = source.decode_globals(precision, streamer.bytes(&guard)?)?;
            (
                be.upload_matrix(&WeightMatrix::Dense(g.embedding))?,
                vec_of(be, &g.final_norm)?,
                g.classifier
                    .as_ref()
                    .map(|c| be.upload_matrix(c))
                    .transpose()?,
            )
        };
        Ok(Model {
            backend,
            config,
            embedding,
            layers: Layers::Streamed(
                streamer,
                (opts.upload_budget > 0).then(|| DeviceTier::new(opts.upload_budget)),
            ),
            final_norm,
            classifier,
        })
    }

    /// The pool's counters when the blocks are streamed (`None` when all are resident).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.layers.pool_stats()
    }

    /// The backend tier's counters when the blocks are streamed with an upload budget
    /// ([`StreamOptions::upload_budget`]); `None` otherwise.
    pub fn upload_stats(&self) -> Option<DeviceTierStats> {
        self.layers.upload_stats()
    }

    /// True when the blocks are streamed through a pool.
    pub fn is_streamed(&self) -> bool {
        matches!(self.layers, Layers::Streamed(..))
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A fresh sequence state whose scratch holds `chunk` rows per forward call and whose
    /// context is the model's (the KV cache still grows only as tokens arrive).
    pub fn new_state(&self, chunk: usize) -> Result<State<B>> {
        self.new_state_with_context(chunk, self.config.max_seq_len)
    }

    /// A fresh sequence state holding at most `context` tokens (capped by the model's own
    /// context length). The KV cache starts small and grows with the sequence up to that
    /// limit; a backend that cannot hold it reports [`Error::OutOfMemory`].
    pub fn new_state_with_context(&self, chunk: usize, context: usize) -> Result<State<B>> {
        self.state_with(chunk, context, Self::alloc_activations)
    }

    /// A state for a sequence fed only through batched steps ([`Model::step_batch`]), with
    /// scratch from [`Model::alloc_segment_activations`]; otherwise as
    /// [`Model::new_state_with_context`].
    pub(super) fn new_batch_state(&self, chunk: usize, context: usize) -> Result<State<B>> {
        self.state_with(chunk, context, Self::alloc_segment_activations)
    }

    /// A fresh state whose scratch `scratch(rows)` makes for `chunk` rows (capped by the
    /// context).
    fn state_with(
        &self,
        chunk: usize,
        context: usize,
        scratch: impl Fn(&Self, usize) -> Result<Activations<B>>,
    ) -> Result<State<B>> {
        if context == 0 {
            return Err(Error::invalid("context length must be at least 1 token"));
        }
        let c = &self.config;
        let be = &self.backend;
        let context = context.min(c.max_seq_len);
        let chunk = chunk.clamp(1, context);
        let cache_rows = INITIAL_CACHE_ROWS.max(chunk).min(context);
        let cache_len = elems("KV cache", cache_rows, c.kv_dim())?;
        Ok(State {
            k_cache: (0..c.n_layers)
                .map(|_| be.alloc_cache(cache_len))
                .collect::<Result<_>>()?,
            v_cache: (0..c.n_layers)
                .map(|_| be.alloc_cache(cache_len))
                .collect::<Result<_>>()?,
            act: scratch(self, chunk)?,
            pos: 0,
            cache_rows,
            context,
        })
    }

    /// Scratch activations for `rows` token rows.
    pub(super) fn alloc_activations(&self, rows: usize) -> Result<Activations<B>> {
        self.activations(rows, rows)
    }

    /// Scratch of a sequence fed only through batched steps: a batched step uses a sequence's
    /// own query, key, value and attention rows (`rows` of them: a prompt chunk) and keeps
    /// every other row in the batch's scratch, so those buffers hold a single row here (a
    /// chat prompt's chunk would otherwise zero a classifier row per prompt token). Only
    /// [`Model::step_batch`] may feed such a state more than one token at a time.
    pub(super) fn alloc_segment_activations(&self, rows: usize) -> Result<Activations<B>> {
        self.activations(rows, 1)
    }

    /// Activations whose attention buffers (q, k, v, att) hold `rows` rows and the others
    /// `other_rows`.
    fn activations(&self, rows: usize, other_rows: usize) -> Result<Activations<B>> {
        let c = &self.config;
        let be = &self.backend;
        let scratch = |rows: usize, width: usize| be.alloc(elems("scratch buffer", rows, width)?);
        let other = |width: usize| scratch(other_rows, width);
        Ok(Activations {
            x: other(c.dim)?,
            xb: other(c.dim.max(c.q_dim()))?,
            q: scratch(rows, c.q_dim())?,
            k: scratch(rows, c.kv_dim())?,
            v: scratch(rows, c.kv_dim())?,
            att: scratch(rows, c.q_dim())?,
            gate: other(c.hidden_dim)?,
            up: other(c.hidden_dim)?,
            hb: other(c.hidden_dim)?,
            logits: other(c.vocab_size)?,
            rows,
        })
    }

    /// Grows the KV cache so it holds at least `rows` rows (doubling, capped by the context),
    /// keeping the rows already cached.
    pub(super) fn ensure_cache_rows(&self, s: &mut State<B>, rows: usize) -> Result<()> {
        if rows <= s.cache_rows {
            return Ok(());
        }
        let be = &self.backend;
        let kvd = self.config.kv_dim();
        let new_rows = rows.max(s.cache_rows.saturating_mul(2)).min(s.context);
        let len = elems("KV cache", new_rows, kvd)?;
        for cache in s.k_cache.iter_mut().chain(s.v_cache.iter_mut()) {
            let mut grown = be.alloc_cache(len)?;
            be.copy_cache(cache, &mut grown, s.pos, kvd)?;
            *cache = grown;
        }
        s.cache_rows = new_rows;
        Ok(())
    }

    /// Makes `dst` hold the first `rows` cached positions of `src` and nothing after them:
    /// their key/value rows copied on the backend, the position set to `rows`. Used to reuse
    /// a prompt prefix another sequence already holds. On the CPU backend, where every row's
    /// bits are the same whatever rows a forward carries, they are exactly the rows `dst`
    /// would compute for the same tokens; elsewhere they agree within the rounding that
    /// batching itself allows. Fails, changing nothing, unless `src` holds `rows` positions
    /// and they fit `dst`'s context.
    pub(super) fn copy_prefix(
        &self,
        src: &State<B>,
        dst: &mut State<B>,
        rows: usize,
    ) -> Result<()> {
        if rows > src.pos || rows > dst.context {
            return Err(Error::Internal(format!(
                "prefix of {rows} positions from a sequence holding {} into a context of {}",
                src.pos, dst.context
            )));
        }
        self.ensure_cache_rows(dst, rows)?;
        let kvd = self.config.kv_dim();
        let caches = src.k_cache.iter().zip(dst.k_cache.iter_mut());
        for (from, to) in caches.chain(src.v_cache.iter().zip(dst.v_cache.iter_mut())) {
            self.backend.copy_cache(from, to, rows, kvd)?;
        }
        dst.pos = rows;
        Ok(())
    }

    /// Fails unless `n` more tokens fit in the state's context.
    pub(super) fn check_room(&self, state: &State<B>, n: usize) -> Result<()> {
        let need = state.pos.saturating_add(n);
        if need <= state.context {
            return Ok(());
        }
        let model = self.config.max_seq_len;
        let context = if state.context == model {
            format!("the model's context of {model} tokens")
        } else {
            format!(
                "the context of {} tokens set for this sequence (the model allows {model})",
                state.context
            )
        };
        Err(Error::invalid(if n == 1 {
            format!("{context} is full")
        } else {
            format!("sequence of {need} tokens exceeds {context}")
        }))
    }

    /// Runs `tokens` through the model at the state's current position, in chunks.
    /// Returns logits for the last token, or for every token when `all_logits` is set
    /// (row-major `[tokens, vocab]`).
    pub fn forward(
        &self,
        state: &mut State<B>,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.forward_into(state, tokens, all_logits, &mut out)?;
        Ok(out)
    }

    /// [`Model::forward`] into `out` (resized to the logits, all of them overwritten), so a
    /// caller that runs many of them (a speculative verify each round) reuses one buffer: the
    /// logits are read from the backend straight into it.
    pub fn forward_into(
        &self,
        state: &mut State<B>,
        tokens: &[u32],
        all_logits: bool,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::invalid("forward needs at least one token"));
        }
        let vocab = self.config.vocab_size;
        self.check_room(state, tokens.len())?;
        let want = if all_logits {
            elems("logits", tokens.len(), vocab)?
        } else {
            vocab
        };
        // Every element is overwritten below, so a buffer already this long is not refilled.
        out.truncate(want);
        try_reserve(out, want - out.len())?;
        out.resize(want, 0.0);
        let n_chunks = tokens.len().div_ceil(state.act.rows);
        let mut at = 0;
        for (i, chunk) in tokens.chunks(state.act.rows).enumerate() {
            let last = i + 1 == n_chunks;
            let want = match (all_logits, last) {
                (true, _) => Logits::Every,
                (false, true) => Logits::Last,
                (false, false) => Logits::None,
            };
            self.forward_chunk(state, chunk, want)?;
            let rows = match want {
                Logits::None => continue,
                Logits::Every => chunk.len(),
                Logits::Last => 1,
            };
            self.backend
                .read(&state.act.logits, &mut out[at..at + rows * vocab])?;
            at += rows * vocab;
        }
        Ok(())
    }

    /// Runs one token and returns the argmax of its logits without copying them to the host.
    pub fn step_greedy(&self, state: &mut State<B>, token: u32) -> Result<u32> {
        self.check_room(state, 1)?;
        self.forward_chunk(state, &[token], Logits::Every)?;
        self.backend
            .argmax(&state.act.logits, self.config.vocab_size)
    }

    /// Runs one token and leaves its logits in `logits` (host), without allocating.
    pub fn step(&self, state: &mut State<B>, token: u32, logits: &mut [f32]) -> Result<()> {
        self.check_room(state, 1)?;
        self.forward_chunk(state, &[token], Logits::Every)?;
        self.backend
            .read(&state.act.logits, &mut logits[..self.config.vocab_size])
    }

    fn forward_chunk(&self, s: &mut State<B>, tokens: &[u32], want: Logits) -> Result<()> {
        let c = &self.config;
        let be = &self.backend;
        let n = tokens.len();
        let kvd = c.kv_dim();
        let pos0 = s.pos;
        self.ensure_cache_rows(s, pos0 + n)?;
        let State {
            k_cache,
            v_cache,
            act,
            ..
        } = s;
        be.embed(&self.embedding, tokens, &mut act.x)?;
        self.layers_pass(act, n, Rows::OneSequence, |li, a| {
            self.rope_rows(a, n, pos0)?;
            be.store_rows(&a.k, &mut k_cache[li], n, kvd, pos0)?;
            be.store_rows(&a.v, &mut v_cache[li], n, kvd, pos0)?;
            be.attention(
                &a.q,
                &k_cache[li],
                &v_cache[li],
                &mut a.att,
                &self.attention_shape(n, pos0),
            )
        })?;
        self.classify(act, n, want, Rows::OneSequence)?;
        s.pos += n;
        Ok(())
    }

    /// `out = x w^T` over `n` rows of kind `rows`.
    fn product(
        &self,
        rows: Rows,
        x: &B::Buf,
        w: &B::Mat,
        out: &mut B::Buf,
        n: usize,
    ) -> Result<()> {
        match rows {
            Rows::OneSequence => self.backend.matmul(x, w, out, n),
            Rows::Batch => self.backend.matmul_batch(x, w, out, n),
        }
    }

    /// Runs every layer over the first `n` rows of `a` (embedded in `a.x`). `attend(layer,
    /// a)` does the rows' attention: RoPE on `a.q`/`a.k`, the KV cache update, and attention
    /// from `a.q` into `a.att`; the caller decides which sequence and position each row is.
    pub(super) fn layers_pass(
        &self,
        a: &mut Activations<B>,
        n: usize,
        rows: Rows,
        mut attend: impl FnMut(usize, &mut Activations<B>) -> Result<()>,
    ) -> Result<()> {
        let c = &self.config;
        let be = &self.backend;
        let mm = |x: &B::Buf, w: &B::Mat, out: &mut B::Buf| self.product(rows, x, w, out, n);
        let mms = |x: &B::Buf, products: &mut [(&B::Mat, &mut B::Buf)]| {
            be.matmuls(x, products, n, rows == Rows::Batch)
        };
        let (dim, qd, kvd, hid) = (c.dim, c.q_dim(), c.kv_dim(), c.hidden_dim);
        let norm = NormShape {
            rows: n,
            dim,
            eps: c.norm_eps,
        };
        for li in 0..self.layers.len() {
            // Resident: a borrow. Streamed: the block's pool entry stays pinned until `held`
            // drops at the end of this iteration.
            let held = self.layers.get(be, li)?;
            let l = held.get();
            be.rmsnorm(&a.x, &l.attn_norm, &mut a.xb, &norm)?;
            mms(
                &a.xb,
                &mut [(&l.wq, &mut a.q), (&l.wk, &mut a.k), (&l.wv, &mut a.v)],
            )?;
            if let Some([bq, bk, bv]) = &l.bias {
                be.add_bias(&mut a.q, bq, n, qd)?;
                be.add_bias(&mut a.k, bk, n, kvd)?;
                be.add_bias(&mut a.v, bv, n, kvd)?;
            }
            attend(li, a)?;
            mm(&a.att, &l.wo, &mut a.xb)?;
            be.add(&mut a.x, &a.xb, n * dim)?;
            be.rmsnorm(&a.x, &l.ffn_norm, &mut a.xb, &norm)?;
            mms(&a.xb, &mut [(&l.w_gate, &mut a.gate), (&l.w_up, &mut a.up)])?;
            be.swiglu(&a.gate, &a.up, &mut a.hb, n * hid)?;
            mm(&a.hb, &l.w_down, &mut a.xb)?;
            be.add(&mut a.x, &a.xb, n * dim)?;
        }
        Ok(())
    }

    /// RoPE on the first `n` rows of `a.q` and `a.k`, at positions `pos0..pos0 + n`.
    pub(super) fn rope_rows(&self, a: &mut Activations<B>, n: usize, pos0: usize) -> Result<()> {
        let c = &self.config;
        let rope = RopeParams {
            rows: n,
            n_heads: c.n_heads,
            head_dim: c.head_dim,
            pos0,
            theta: c.rope_theta,
            style: c.rope_style,
        };
        self.backend.rope(&mut a.q, &rope)?;
        self.backend.rope(
            &mut a.k,
            &RopeParams {
                n_heads: c.n_kv_heads,
                ..rope
            },
        )
    }

    /// Causal attention of `n` query rows at positions `pos0..pos0 + n`.
    pub(super) fn attention_shape(&self, n: usize, pos0: usize) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            rows: n,
            pos0,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        }
    }

    /// The final norm and classifier over the first `n` rows of `a` (as `want` asks), into
    /// `a.logits`.
    pub(super) fn classify(
        &self,
        a: &mut Activations<B>,
        n: usize,
        want: Logits,
        rows: Rows,
    ) -> Result<()> {
        let be = &self.backend;
        let norm = NormShape {
            rows: n,
            dim: self.config.dim,
            eps: self.config.norm_eps,
        };
        let classifier = self.classifier.as_ref().unwrap_or(&self.embedding);
        match want {
            Logits::None => Ok(()),
            Logits::Every => {
                be.rmsnorm(&a.x, &self.final_norm, &mut a.xb, &norm)?;
                self.product(rows, &a.xb, classifier, &mut a.logits, n)
            }
            Logits::Last => {
                // Only the last row's logits are wanted: norm and classify that row alone
                // (the classifier is the largest product of a small model's prefill). The
                // residual stream is not needed after the last layer, so it takes the norm.
                be.copy_rows(&a.x, &mut a.xb, &RowCopy::one(n - 1, 0, norm.dim))?;
                be.rmsnorm(
                    &a.xb,
                    &self.final_norm,
                    &mut a.x,
                    &NormShape { rows: 1, ..norm },
                )?;
                be.matmul(&a.x, classifier, &mut a.logits, 1)
            }
        }
    }
}

/// What the rows of a forward pass are, which decides the products they may use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// Consecutive tokens of one sequence (prefill, speculative verify, decode): few-row
    /// products stay bit-identical to one-row products.
    OneSequence,
    /// One token of each of several sequences (a batched decode step): the backend's
    /// fastest multi-row products ([`Backend::matmul_batch`]).
    Batch,
}

/// Which logits a chunk of [`Model::forward`] computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Logits {
    /// None (an early prefill chunk).
    None,
    /// Every row's.
    Every,
    /// The last row's only, into the first row of the logits buffer.
    Last,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::model::{synthetic, DType};

    #[test]
    fn a_batch_state_holds_its_chunk_of_attention_rows_and_one_row_of_the_rest() {
        let c = synthetic::preset("tiny").unwrap();
        let w = synthetic::synthetic_weights(&c, 9, DType::F32).unwrap();
        let m = Model::new(CpuBackend::new(), &w).unwrap();
        let (chunk, be) = (12, m.backend());
        let s = m.new_batch_state(chunk, 64).unwrap();
        let a = &s.act;
        assert_eq!(a.rows, chunk);
        let (q, kv) = (c.q_dim(), c.kv_dim());
        for (buf, width) in [(&a.q, q), (&a.att, q), (&a.k, kv), (&a.v, kv)] {
            assert_eq!(be.buf_len(buf), chunk * width);
        }
        assert_eq!(be.buf_len(&a.logits), c.vocab_size);
        assert_eq!(be.buf_len(&a.hb), c.hidden_dim);
        assert_eq!(be.buf_len(&a.x), c.dim);
        // A full state of the same chunk holds every buffer at `chunk` rows.
        let full = m.new_state_with_context(chunk, 64).unwrap();
        assert_eq!(be.buf_len(&full.act.logits), chunk * c.vocab_size);
        assert_eq!((s.context(), s.pos()), (full.context(), full.pos()));
    }
}
