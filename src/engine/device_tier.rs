//! The backend tier of a streamed model: blocks already decoded and uploaded to the backend
//! (device memory on CUDA, the CPU backend's matrices on the CPU), kept under a byte budget by
//! the pool's priority policy ([`PolicyTable`]: `0.7 * frequency + 0.3 * recency`), so that
//! part of a variant stays resident on the device and a hit skips the host tier, the decode and
//! the host-to-device copy. Below it sit the pool's host tier and the disk.
//!
//! A block in use by a running pass is pinned (its [`CachePin`] is alive) and never evicted.
//! A block larger than the whole budget, or one that cannot fit because everything else is
//! pinned, is used uncached (uploaded for this use only) instead of failing the pass.

use super::layers::Layer;
use crate::backend::Backend;
use crate::pool::PolicyTable;
use crate::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Counters of the backend tier since the model was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DeviceTierStats {
    /// Uses served by a block already on the backend.
    pub hits: u64,
    /// Uses that had to acquire, decode and upload the block.
    pub misses: u64,
    /// Misses whose block did not fit (larger than the budget, or too much pinned): used once.
    pub uncached: u64,
    /// Blocks evicted to make room.
    pub evictions: u64,
    /// Bytes uploaded to the backend by misses.
    pub bytes_uploaded: u64,
    /// Seconds misses spent acquiring, decoding and uploading.
    pub upload_s: f64,
    /// Bytes of blocks resident now.
    pub used: u64,
    /// The byte budget.
    pub budget: u64,
}

impl DeviceTierStats {
    /// Hits over all uses (0 when none).
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

struct Inner<B: Backend> {
    table: PolicyTable<usize>,
    layers: HashMap<usize, Arc<Layer<B>>>,
    stats: DeviceTierStats,
}

/// Uploaded blocks of one streamed model under a byte budget (see the module docs).
pub(super) struct DeviceTier<B: Backend> {
    inner: Arc<Mutex<Inner<B>>>,
}

/// Keeps a cached block pinned while a pass uses it; unpins on drop.
pub(super) struct CachePin<B: Backend> {
    inner: Arc<Mutex<Inner<B>>>,
    key: usize,
}

impl<B: Backend> Drop for CachePin<B> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.inner.lock() {
            // The entry is pinned, so it is still resident: unpin cannot fail here.
            let _ = g.table.unpin(&self.key);
        }
    }
}

/// A block from the cache: shared, and pinned when it is resident.
pub(super) struct CachedLayer<B: Backend> {
    /// The uploaded block.
    pub layer: Arc<Layer<B>>,
    /// The pin, `None` for an uncached use.
    pub _pin: Option<CachePin<B>>,
}

impl<B: Backend> DeviceTier<B> {
    /// An empty cache of `budget` bytes.
    pub fn new(budget: u64) -> Self {
        DeviceTier {
            inner: Arc::new(Mutex::new(Inner {
                table: PolicyTable::new(budget),
                layers: HashMap::new(),
                stats: DeviceTierStats {
                    budget,
                    ..Default::default()
                },
            })),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner<B>>> {
        self.inner
            .lock()
            .map_err(|_| Error::Internal("upload cache lock poisoned".into()))
    }

    fn pin(&self, g: &mut Inner<B>, key: usize) -> Result<CachedLayer<B>> {
        g.table.pin(&key)?;
        let layer = g
            .layers
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("cached block {key} has no weights")))?;
        Ok(CachedLayer {
            layer,
            _pin: Some(CachePin {
                inner: self.inner.clone(),
                key,
            }),
        })
    }

    /// Block `key`: from the cache on a hit; otherwise `load` acquires, decodes and uploads it
    /// (returning the block and its bytes), and it is cached when it fits.
    pub fn get(
        &self,
        key: usize,
        load: impl FnOnce() -> Result<(Layer<B>, u64)>,
    ) -> Result<CachedLayer<B>> {
        {
            let mut g = self.lock()?;
            if g.table.touch(&key) {
                g.stats.hits += 1;
                return self.pin(&mut g, key);
            }
        }
        // Load without the lock: uploads of different blocks may overlap.
        let t0 = Instant::now();
        let (layer, bytes) = load()?;
        let secs = t0.elapsed().as_secs_f64();
        let mut g = self.lock()?;
        g.stats.misses += 1;
        g.stats.bytes_uploaded += bytes;
        g.stats.upload_s += secs;
        if g.table.touch(&key) {
            // Another pass uploaded it meanwhile: use theirs, drop ours.
            return self.pin(&mut g, key);
        }
        match g.table.evict_for(bytes) {
            Ok(victims) => {
                for (k, _) in victims {
                    g.layers.remove(&k);
                    g.stats.evictions += 1;
                }
                g.table.insert(key, bytes)?;
                g.layers.insert(key, Arc::new(layer));
                g.stats.used = g.table.used();
                self.pin(&mut g, key)
            }
            Err(Error::OutOfMemory(_)) => {
                g.stats.uncached += 1;
                Ok(CachedLayer {
                    layer: Arc::new(layer),
                    _pin: None,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// True when block `key` is resident.
    pub fn contains(&self, key: usize) -> bool {
        self.lock().is_ok_and(|g| g.table.get(&key).is_some())
    }

    /// The counters.
    pub fn stats(&self) -> DeviceTierStats {
        self.lock().map(|g| g.stats).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::model::{synthetic, DType};

    fn block() -> Layer<CpuBackend> {
        let c = synthetic::preset("tiny").unwrap();
        let w = synthetic::synthetic_weights(&c, 5, DType::F32).unwrap();
        Layer::upload(&CpuBackend::new(), &w.layers[0]).unwrap()
    }

    fn load(n: &std::cell::Cell<u32>) -> Result<(Layer<CpuBackend>, u64)> {
        n.set(n.get() + 1);
        Ok((block(), 100))
    }

    #[test]
    fn hits_skip_the_load_and_the_policy_evicts_the_coldest_block() {
        let cache = DeviceTier::<CpuBackend>::new(200);
        let loads = std::cell::Cell::new(0);
        drop(cache.get(0, || load(&loads)).unwrap());
        drop(cache.get(0, || load(&loads)).unwrap());
        drop(cache.get(0, || load(&loads)).unwrap());
        drop(cache.get(1, || load(&loads)).unwrap());
        assert_eq!(loads.get(), 2, "block 0 loaded once, then hit twice");
        // Block 0 is used more often, so block 1 is the one evicted for block 2.
        drop(cache.get(2, || load(&loads)).unwrap());
        assert!(cache.contains(0) && cache.contains(2) && !cache.contains(1));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.evictions), (2, 3, 1));
        assert_eq!((s.used, s.budget, s.bytes_uploaded), (200, 200, 300));
        assert!((s.hit_rate() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn pinned_blocks_stay_and_a_block_that_cannot_fit_is_used_uncached() {
        let cache = DeviceTier::<CpuBackend>::new(100);
        let loads = std::cell::Cell::new(0);
        let held = cache.get(0, || load(&loads)).unwrap();
        // Block 0 is in use, so block 1 cannot evict it: used once, not cached.
        let other = cache.get(1, || load(&loads)).unwrap();
        assert!(other._pin.is_none());
        assert!(cache.contains(0) && !cache.contains(1));
        drop((held, other));
        // Unpinned now: block 1 may take block 0's place.
        drop(cache.get(1, || load(&loads)).unwrap());
        assert!(cache.contains(1) && !cache.contains(0));
        // Larger than the whole budget: used uncached, nothing evicted.
        let big = cache.get(2, || Ok((block(), 1000))).unwrap();
        assert!(big._pin.is_none() && cache.contains(1));
        let s = cache.stats();
        assert_eq!((s.uncached, s.evictions), (2, 1));
    }

    #[test]
    fn a_failed_load_leaves_nothing_behind() {
        let cache = DeviceTier::<CpuBackend>::new(100);
        let e = cache
            .get(3, || Err(Error::invalid("tensor layers.3.wq is corrupt")))
            .err()
            .unwrap();
        assert!(e.to_string().contains("layers.3.wq"), "{e}");
        assert!(!cache.contains(3));
        let loads = std::cell::Cell::new(0);
        drop(cache.get(3, || load(&loads)).unwrap());
        assert!(cache.contains(3) && loads.get() == 1);
    }
}
