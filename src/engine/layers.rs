//! Where the forward pass gets each transformer block: all uploaded once ([`Layers::Resident`],
//! the fast path) or acquired from the pool as the pass reaches it ([`Layers::Streamed`]:
//! acquire -> decode -> upload -> run -> release, with the next block prefetched meanwhile).
//! With a pool budget smaller than the model this is offloaded execution: slower, same result.
//! A streamed model may also keep uploaded blocks on the backend under a byte budget (the
//! device tier, [`DeviceTier`]), so that a hit skips the pool, the decode and the copy.

use super::device_tier::{CachedLayer, DeviceTier, DeviceTierStats};
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
    /// Bytes of uploaded blocks kept on the backend (device memory on CUDA) between uses, by
    /// the pool's priority policy; 0 keeps none (every use acquires, decodes and uploads).
    pub upload_budget: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            prefetch: true,
            upload_budget: 0,
        }
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
    /// Acquired from the pool per use, through the backend tier when it has a budget.
    Streamed(Streamer, Option<DeviceTier<B>>),
}

/// A block in use by a running pass: borrowed from the resident set, or uploaded from a pool
/// entry that stays pinned (by the guard) until this is dropped after the block.
pub(super) enum Held<'a, B: Backend> {
    Resident(&'a Layer<B>),
    Streamed {
        layer: Layer<B>,
        _pin: PoolGuard,
    },
    /// From the backend tier, pinned there while in use.
    Cached(CachedLayer<B>),
}

impl<B: Backend> Held<'_, B> {
    /// The block's weights.
    pub fn get(&self) -> &Layer<B> {
        match self {
            Held::Resident(l) => l,
            Held::Streamed { layer, .. } => layer,
            Held::Cached(c) => &c.layer,
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

    /// Asks the pool to load block `i + 1` (block 0 after the last) in the background, when
    /// prefetch is on. The outcome is not needed: a failed prefetch is retried by the acquire.
    fn prefetch_after(&self, i: usize) {
        if self.prefetch {
            let next = (i + 1) % self.n_layers;
            drop(
                self.pool
                    .prefetch(&VariantSource::key(self.precision, EntryPart::Layer(next))),
            );
        }
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
            Layers::Streamed(s, _) => s.n_layers,
        }
    }

    /// Block `i`, ready to run; for a streamed model, block `i + 1` is prefetched.
    pub fn get(&self, be: &B, i: usize) -> Result<Held<'_, B>> {
        match self {
            Layers::Resident(v) => v
                .get(i)
                .map(Held::Resident)
                .ok_or_else(|| crate::Error::Internal(format!("layer {i} out of range"))),
            Layers::Streamed(s, None) => {
                let guard = s.acquire(EntryPart::Layer(i))?;
                s.prefetch_after(i);
                let weights = s.source.decode_layer(s.precision, i, s.bytes(&guard)?)?;
                let layer = Layer::upload(be, &weights)?;
                Ok(Held::Streamed { layer, _pin: guard })
            }
            Layers::Streamed(s, Some(cache)) => {
                let held = cache.get(i, || {
                    let guard = s.acquire(EntryPart::Layer(i))?;
                    let weights = s.source.decode_layer(s.precision, i, s.bytes(&guard)?)?;
                    let bytes = layer_bytes(&weights);
                    Ok((Layer::upload(be, &weights)?, bytes))
                })?;
                // The host tier only needs the next block when the backend tier lacks it.
                if !cache.contains((i + 1) % s.n_layers) {
                    s.prefetch_after(i);
                }
                Ok(Held::Cached(held))
            }
        }
    }

    /// The backend tier's counters, for a streamed model that has one.
    pub fn upload_stats(&self) -> Option<DeviceTierStats> {
        match self {
            Layers::Streamed(_, Some(c)) => Some(c.stats()),
            _ => None,
        }
    }

    /// The pool's counters, for a streamed model.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match self {
            Layers::Resident(_) => None,
            Layers::Streamed(s, _) => Some(s.pool.stats()),
        }
    }
}

/// Bytes of one block's weights in their stored formats: the seven matrices (packed codes,
/// scales and zeros, or FP16) plus norms and biases as uploaded (f32).
fn layer_bytes(l: &LayerWeights<WeightMatrix>) -> u64 {
    let mats = l.matrices();
    let vecs = [
        Some(&l.attn_norm),
        Some(&l.ffn_norm),
        l.bq.as_ref(),
        l.bk.as_ref(),
        l.bv.as_ref(),
    ];
    mats.iter().map(|(_, m)| m.byte_len() as u64).sum::<u64>()
        + vecs
            .iter()
            .flatten()
            .map(|t| 4 * t.numel() as u64)
            .sum::<u64>()
}
