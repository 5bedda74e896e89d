//! Where the forward pass gets each transformer block: all uploaded once ([`Layers::Resident`],
//! the fast path) or acquired from the pool as the pass reaches it ([`Layers::Streamed`]:
//! acquire -> decode -> upload -> run -> release, with the next block prefetched meanwhile).
//! With a pool budget smaller than the model this is offloaded execution: slower, same result.

use crate::backend::Backend;
use crate::model::{LayerWeights, Tensor};
use crate::pool::{Pool, PoolGuard, PoolStats, VariantSource};
use crate::quant::{Precision, WeightMatrix};
use crate::store::EntryPart;
use crate::Result;
use std::sync::Arc;

/// One block's weights on the backend.
pub(super) struct Layer<B: Backend> {
    pub attn_norm: B::Buf,
    pub wq: B::Mat,
    pub wk: B::Mat,
    pub wv: B::Mat,
    pub wo: B::Mat,
    pub bias: Option<[B::Buf; 3]>,
    pub ffn_norm: B::Buf,
    pub w_gate: B::Mat,
    pub w_up: B::Mat,
    pub w_down: B::Mat,
}

/// Uploads a norm weight or bias.
pub(super) fn vec_of<B: Backend>(be: &B, t: &Tensor) -> Result<B::Buf> {
    be.upload_vec(&t.to_f32_vec())
}

impl<B: Backend> Layer<B> {
    /// Uploads one block.
    pub fn upload<M: Clone + Into<WeightMatrix>>(be: &B, l: &LayerWeights<M>) -> Result<Self> {
        let up = |m: &M| be.upload_matrix(&m.clone().into());
        let bias = match (&l.bq, &l.bk, &l.bv) {
            (Some(q), Some(k), Some(v)) => Some([vec_of(be, q)?, vec_of(be, k)?, vec_of(be, v)?]),
            _ => None,
        };
        Ok(Layer {
            attn_norm: vec_of(be, &l.attn_norm)?,
            wq: up(&l.wq)?,
            wk: up(&l.wk)?,
            wv: up(&l.wv)?,
            wo: up(&l.wo)?,
            bias,
            ffn_norm: vec_of(be, &l.ffn_norm)?,
            w_gate: up(&l.w_gate)?,
            w_up: up(&l.w_up)?,
            w_down: up(&l.w_down)?,
        })
    }
}

/// How a streamed model uses its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Prefetch block `i + 1` (and block 0 after the last) while block `i` runs. Skipped when
    /// the pool cannot hold two of the largest entries besides each other.
    pub prefetch: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { prefetch: true }
    }
}

/// The pool side of a streamed model.
pub(super) struct Streamer {
    pub pool: Arc<Pool>,
    pub source: Arc<VariantSource>,
    pub precision: Precision,
    pub n_layers: usize,
    pub prefetch: bool,
}

/// The blocks of a model.
pub(super) enum Layers<B: Backend> {
    /// Uploaded once, at construction.
    Resident(Vec<Layer<B>>),
    /// Acquired from the pool per use.
    Streamed(Streamer),
}

/// A block in use by a running pass: borrowed from the resident set, or uploaded from a pool
/// entry that stays pinned (by the guard) until this is dropped after the block.
pub(super) enum Held<'a, B: Backend> {
    Resident(&'a Layer<B>),
    Streamed { layer: Layer<B>, _pin: PoolGuard },
}

impl<B: Backend> Held<'_, B> {
    /// The block's weights.
    pub fn get(&self) -> &Layer<B> {
        match self {
            Held::Resident(l) => l,
            Held::Streamed { layer, .. } => layer,
        }
    }
}

impl Streamer {
    /// Acquires entry `part`, pinning it; a failed load names the entry and tensor.
    pub fn acquire(&self, part: EntryPart) -> Result<PoolGuard> {
        let key = VariantSource::key(self.precision, part);
        self.pool
            .acquire(&key)
            .map_err(|e| self.source.explain_load_error(&key, e))
    }

    /// The bytes of a resident entry.
    pub fn bytes<'g>(&self, g: &'g PoolGuard) -> Result<&'g [u8]> {
        g.bytes().ok_or_else(|| {
            crate::Error::Unsupported(format!(
                "pool entry {} is not host-visible; streamed models need a host-memory pool",
                g.key()
            ))
        })
    }
}

impl<B: Backend> Layers<B> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        match self {
            Layers::Resident(v) => v.len(),
            Layers::Streamed(s) => s.n_layers,
        }
    }

    /// Block `i`, ready to run; for a streamed model, block `i + 1` is prefetched.
    pub fn get(&self, be: &B, i: usize) -> Result<Held<'_, B>> {
        match self {
            Layers::Resident(v) => v
                .get(i)
                .map(Held::Resident)
                .ok_or_else(|| crate::Error::Internal(format!("layer {i} out of range"))),
            Layers::Streamed(s) => {
                let guard = s.acquire(EntryPart::Layer(i))?;
                if s.prefetch {
                    let next = (i + 1) % s.n_layers;
                    // The outcome is not needed: a failed prefetch is retried by the acquire.
                    drop(
                        s.pool
                            .prefetch(&VariantSource::key(s.precision, EntryPart::Layer(next))),
                    );
                }
                let weights = s.source.decode_layer(s.precision, i, s.bytes(&guard)?)?;
                let layer = Layer::upload(be, &weights)?;
                Ok(Held::Streamed { layer, _pin: guard })
            }
        }
    }

    /// The pool's counters, for a streamed model.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match self {
            Layers::Resident(_) => None,
            Layers::Streamed(s) => Some(s.pool.stats()),
        }
    }
}
