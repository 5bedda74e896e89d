//! The residency layer: `Pool::acquire(key)` returns a guard to resident bytes, loading missing
//! entries (from the host tier, else from disk through the staging pipeline) and evicting by
//! the [`PolicyTable`] rules; evicted entries demote to a host-RAM tier.
//!
//! Concurrency: one mutex guards the bookkeeping and is never held during I/O. A key being
//! loaded is marked `Loading` (its bytes reserved and pinned); other threads acquiring it wait
//! on a condition variable, so each load happens once. A failed load removes the mark and the
//! reservation (nothing half-loaded is ever resident) and wakes the waiters, who then try the
//! load themselves and report their own error.
//!
//! Waiters may be rayon workers (a streamed model run from a `par_iter`). That is safe because
//! a load runs no rayon work between marking a key `Loading` and resolving the mark: it reads
//! through the staging pipeline's own I/O threads and adopts or copies the bytes on the
//! loading thread. So the load never needs a worker that waits for it, and the loading thread
//! never runs (by work stealing) another task that could wait for its own load. Decoding and
//! uploading the bytes, which may use rayon, happen after `acquire` returns, with no lock held.

use super::device_alloc::{DeviceAlloc, DeviceBuffer};
use super::policy::PolicyTable;
use super::stats::PoolStats;
use crate::io::{AlignedBuf, Layer, StagingPipeline};
use crate::{Error, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// Identifies a pool entry: one layer of one variant (precision) of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Variant name ("fp16", "int8", ...).
    pub variant: String,
    /// Layer index within the variant.
    pub layer: u32,
}

impl PoolKey {
    /// The key of `layer` of `variant`.
    pub fn new(variant: impl Into<String>, layer: u32) -> Self {
        PoolKey {
            variant: variant.into(),
            layer,
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/layer{}", self.variant, self.layer)
    }
}

/// Says where the bytes of a key are on disk (the variant store implements it).
pub trait LayerSource: Send + Sync {
    /// The extents of `key`'s layer; an unknown key is an error naming it.
    fn layer(&self, key: &PoolKey) -> Result<Layer>;
}

/// Budgets of the two tiers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Bytes of device memory the pool may hold.
    pub device_budget: u64,
    /// Bytes of host RAM for entries evicted from the device (0 disables the tier).
    pub host_budget: u64,
}

/// A resident entry's memory.
struct Entry {
    buf: Box<dyn DeviceBuffer>,
}

enum Slot {
    Loading,
    Resident(Arc<Entry>),
}

struct State {
    dev: PolicyTable<PoolKey>,
    slots: HashMap<PoolKey, Slot>,
    host: PolicyTable<PoolKey>,
    host_data: HashMap<PoolKey, AlignedBuf>,
    /// Prefetch requests not yet taken by the prefetch thread, per key; an acquire of the key
    /// clears them (see [`Inner::take_prefetch_request`]).
    prefetch_requests: HashMap<PoolKey, u32>,
    stats: PoolStats,
}

struct Inner {
    pipeline: StagingPipeline,
    source: Arc<dyn LayerSource>,
    device: Arc<dyn DeviceAlloc>,
    state: Mutex<State>,
    loaded: Condvar,
}

/// A background prefetch request: the key and where to report the outcome.
type Job = (PoolKey, Sender<Result<()>>);

/// The device-memory pool with its host tier. Share it with `Arc<Pool>`; dropping it stops the
/// prefetch thread (guards keep the memory they point to alive).
pub struct Pool {
    inner: Arc<Inner>,
    jobs: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

/// A pinned, resident entry: it cannot be evicted while the guard lives.
pub struct PoolGuard {
    inner: Arc<Inner>,
    key: PoolKey,
    entry: Option<Arc<Entry>>,
}

/// Handle of a background prefetch; [`Prefetch::wait`] gives its outcome, dropping it is fine.
pub struct Prefetch {
    rx: Receiver<Result<()>>,
}

impl Prefetch {
    /// Blocks until the prefetch has finished and returns its outcome.
    pub fn wait(self) -> Result<()> {
        self.rx
            .recv()
            .map_err(|_| Error::Internal("prefetch worker stopped".into()))?
    }
}

fn lock(m: &Mutex<State>) -> Result<MutexGuard<'_, State>> {
    m.lock()
        .map_err(|_| Error::Internal("pool lock poisoned".into()))
}

impl Pool {
    /// A pool loading through `pipeline` the layers `source` names, into memory from `device`.
    pub fn new(
        cfg: PoolConfig,
        pipeline: StagingPipeline,
        source: Arc<dyn LayerSource>,
        device: Arc<dyn DeviceAlloc>,
    ) -> Result<Self> {
        if cfg.device_budget == 0 {
            return Err(Error::invalid("device budget of the pool must be positive"));
        }
        let stats = PoolStats {
            device_budget: cfg.device_budget,
            host_budget: cfg.host_budget,
            ..Default::default()
        };
        let inner = Arc::new(Inner {
            pipeline,
            source,
            device,
            state: Mutex::new(State {
                dev: PolicyTable::new(cfg.device_budget),
                slots: HashMap::new(),
                host: PolicyTable::new(cfg.host_budget),
                host_data: HashMap::new(),
                prefetch_requests: HashMap::new(),
                stats,
            }),
            loaded: Condvar::new(),
        });
        let (tx, rx) = unbounded::<Job>();
        let worker_inner = inner.clone();
        let worker = std::thread::Builder::new()
            .name("agentcompress-prefetch".into())
            .spawn(move || {
                for (key, done) in rx {
                    let r = worker_inner.acquire(&key, true).map(drop);
                    if let Err(e) = &r {
                        crate::io::warn_once("prefetch-failed", || {
                            format!("prefetch of {key} failed: {e}")
                        });
                    }
                    let _ = done.send(r);
                }
            })
            .map_err(|e| Error::io("prefetch thread", e))?;
        Ok(Pool {
            inner,
            jobs: Some(tx),
            worker: Some(worker),
        })
    }

    /// Pins `key` resident and returns a guard to it, loading it first if needed (from the host
    /// tier, else from disk) and evicting lower-priority unpinned entries to make room.
    pub fn acquire(&self, key: &PoolKey) -> Result<PoolGuard> {
        self.inner
            .acquire(key, false)?
            .ok_or_else(|| Error::Internal(format!("acquire of {key} returned no guard")))
    }

    /// Starts loading `key` in the background (what the router says comes next); a no-op when
    /// it is already resident or loading, or when an acquire of `key` comes first. Skipped
    /// (still `Ok`) when the room could only come from pinned entries or from other prefetched
    /// entries not used yet (see [`super::policy`]).
    pub fn prefetch(&self, key: &PoolKey) -> Prefetch {
        let (tx, rx) = crossbeam_channel::bounded(1);
        match &self.jobs {
            Some(jobs) => {
                if let Ok(mut st) = lock(&self.inner.state) {
                    *st.prefetch_requests.entry(key.clone()).or_insert(0) += 1;
                }
                if let Err(e) = jobs.send((key.clone(), tx)) {
                    let _ =
                        e.0 .1
                            .send(Err(Error::Internal("prefetch worker stopped".into())));
                }
            }
            None => {
                let _ = tx.send(Err(Error::Internal("prefetch worker stopped".into())));
            }
        }
        Prefetch { rx }
    }

    /// True when `key` is resident in the device tier (not merely loading).
    pub fn is_resident(&self, key: &PoolKey) -> bool {
        lock(&self.inner.state)
            .map(|st| matches!(st.slots.get(key), Some(Slot::Resident(_))))
            .unwrap_or(false)
    }

    /// True when `key` is held by the host tier.
    pub fn in_host_tier(&self, key: &PoolKey) -> bool {
        lock(&self.inner.state)
            .map(|st| st.host_data.contains_key(key))
            .unwrap_or(false)
    }

    /// Keys resident in the device tier, sorted.
    pub fn resident_keys(&self) -> Vec<PoolKey> {
        let mut keys: Vec<PoolKey> = lock(&self.inner.state)
            .map(|st| {
                st.slots
                    .iter()
                    .filter(|(_, s)| matches!(s, Slot::Resident(_)))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Current pins of `key` (0 when not resident).
    pub fn pins(&self, key: &PoolKey) -> u32 {
        lock(&self.inner.state)
            .ok()
            .and_then(|st| st.dev.get(key).map(|m| m.pins))
            .unwrap_or(0)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        match lock(&self.inner.state) {
            Ok(st) => {
                let mut s = st.stats;
                s.device_used = st.dev.used();
                s.host_used = st.host.used();
                s
            }
            Err(_) => PoolStats::default(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Inner {
    /// The shared acquire path. `prefetch`: do not count hits/misses, return no guard, and do
    /// nothing when the key is already resident.
    fn acquire(self: &Arc<Self>, key: &PoolKey, prefetch: bool) -> Result<Option<PoolGuard>> {
        let mut layer: Option<Layer> = None;
        let mut st = lock(&self.state)?;
        if !Self::take_prefetch_request(&mut st, key, prefetch) {
            // A demand acquire took this key over. While its load runs, the next prefetch
            // would only compete with it for the disk and delay what is needed now: wait.
            while matches!(st.slots.get(key), Some(Slot::Loading)) {
                st = self
                    .loaded
                    .wait(st)
                    .map_err(|_| Error::Internal("pool lock poisoned".into()))?;
            }
            st.stats.prefetch_skips += 1;
            return Ok(None);
        }
        loop {
            match st.slots.get(key) {
                Some(Slot::Resident(e)) => {
                    if prefetch {
                        return Ok(None);
                    }
                    let entry = e.clone();
                    st.dev.touch(key);
                    st.dev.pin(key)?;
                    st.stats.hits += 1;
                    return Ok(Some(self.guard(key, entry)));
                }
                Some(Slot::Loading) => {
                    st = self
                        .loaded
                        .wait(st)
                        .map_err(|_| Error::Internal("pool lock poisoned".into()))?;
                }
                None if layer.is_none() => {
                    // Resolve the extents without holding the lock, then look again.
                    drop(st);
                    layer = Some(self.source.layer(key)?);
                    st = lock(&self.state)?;
                }
                None => break,
            }
        }
        let layer = layer.ok_or_else(|| Error::Internal("layer not resolved".into()))?;
        let size = layer.total_len();
        // Take a host-tier copy out first, so demotions while making room cannot drop it.
        let from_host = st.host_data.remove(key);
        if from_host.is_some() {
            st.host.remove(key);
        }
        let room = self.make_room(&mut st, size, prefetch);
        if !matches!(room, Ok(true)) {
            if let Some(h) = from_host {
                // Nothing was evicted (make_room fails or skips before changing anything): put
                // it back.
                if st.host.insert(key.clone(), size).is_ok() {
                    st.host_data.insert(key.clone(), h);
                }
            }
            // A prefetch that would have to evict a pinned entry or another prefetched entry
            // not used yet is skipped: the demand load reads the entry when it is needed.
            room?;
            st.stats.prefetch_skips += 1;
            return Ok(None);
        }
        if prefetch {
            st.dev.insert_prefetched(key.clone(), size)?;
        } else {
            st.dev.insert(key.clone(), size)?;
        }
        st.dev.pin(key)?;
        st.slots.insert(key.clone(), Slot::Loading);
        if !prefetch {
            st.stats.misses += 1;
        }
        drop(st);
        // From here on the Loading mark must be resolved even if the load panics.
        let mut ticket = LoadTicket {
            inner: self,
            key,
            armed: true,
        };

        let t = Instant::now();
        let loaded = match from_host {
            Some(host) => self.device.adopt(host).map(|b| (b, None)),
            None => self.load_from_disk(&layer, size),
        };
        let load_s = t.elapsed().as_secs_f64();

        let mut st = lock(&self.state)?;
        st.stats.load_s += load_s;
        let (buf, disk) = match loaded {
            Ok(x) => x,
            // The ticket removes the mark and the reservation and wakes the waiters.
            Err(e) => {
                drop(st);
                return Err(e);
            }
        };
        ticket.armed = false;
        let entry = Arc::new(Entry { buf });
        st.slots.insert(key.clone(), Slot::Resident(entry.clone()));
        match disk {
            Some(l) => st.stats.add_load(&l),
            None => {
                st.stats.bytes_promoted += size;
                if !prefetch {
                    st.stats.host_hits += 1;
                }
            }
        }
        let result = if prefetch {
            st.stats.prefetch_loads += 1;
            st.dev.unpin(key).map(|()| None)
        } else {
            Ok(Some(self.guard(key, entry)))
        };
        drop(st);
        self.loaded.notify_all();
        result
    }

    /// Settles the prefetch requests of `key` as an acquire starts; false when a prefetch is
    /// stale and must be skipped. An acquire (a use) clears them: a request is a guess of what
    /// comes next, and once the entry has been used, loading it again for that request would
    /// read it twice (from a prefetch thread running late, after the use and the eviction).
    /// A prefetch takes one request, and is stale when an acquire cleared them first.
    fn take_prefetch_request(st: &mut State, key: &PoolKey, prefetch: bool) -> bool {
        if !prefetch {
            st.prefetch_requests.remove(key);
            return true;
        }
        match st.prefetch_requests.get_mut(key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                st.prefetch_requests.remove(key);
            }
            None => return false,
        }
        true
    }

    fn guard(self: &Arc<Self>, key: &PoolKey, entry: Arc<Entry>) -> PoolGuard {
        PoolGuard {
            inner: self.clone(),
            key: key.clone(),
            entry: Some(entry),
        }
    }

    /// Reads `layer` from disk into a new device buffer.
    fn load_from_disk(
        &self,
        layer: &Layer,
        size: u64,
    ) -> Result<(Box<dyn DeviceBuffer>, Option<crate::io::LoadStats>)> {
        let mut buf = self.device.alloc(size)?;
        let stats = match self.pipeline.load(layer, buf.as_mut()) {
            Ok(s) => s,
            Err(e) => {
                self.device.recycle(buf);
                return Err(e);
            }
        };
        Ok((buf, Some(stats)))
    }

    /// Evicts device entries until `size` bytes are free, by the policy's rules for a demand
    /// load or a `prefetch`; evicted entries demote to the host tier when it can hold them.
    /// False (a prefetch to skip) or an error change nothing.
    fn make_room(&self, st: &mut State, size: u64, prefetch: bool) -> Result<bool> {
        let victims = if prefetch {
            match st.dev.evict_for_prefetch(size)? {
                Some(v) => v,
                None => return Ok(false),
            }
        } else {
            st.dev.evict_for(size)?
        };
        for (vk, meta) in victims {
            st.stats.evictions += 1;
            let Some(Slot::Resident(entry)) = st.slots.remove(&vk) else {
                continue;
            };
            // Unpinned entries have no guards left (a guard drops its reference before it
            // unpins), so this is the only reference and the memory can move to the host tier.
            let Ok(entry) = Arc::try_unwrap(entry) else {
                continue;
            };
            // Demote to the host tier when it can take the entry, else give the memory back.
            let Ok(dropped) = st.host.evict_for(meta.size) else {
                self.device.recycle(entry.buf);
                continue;
            };
            for (hk, _) in dropped {
                st.host_data.remove(&hk);
                st.stats.host_evictions += 1;
            }
            let Ok(host) = entry.buf.into_host() else {
                continue;
            };
            if st.host.insert(vk.clone(), meta.size).is_ok() {
                st.host_data.insert(vk, host);
                st.stats.demotions += 1;
            }
        }
        Ok(true)
    }
}

/// Resolves a `Loading` mark that did not become resident (the load failed or panicked):
/// removes the mark and the reserved bytes, counts the failure and wakes the waiters.
struct LoadTicket<'a> {
    inner: &'a Inner,
    key: &'a PoolKey,
    armed: bool,
}

impl Drop for LoadTicket<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = match self.inner.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if matches!(st.slots.get(self.key), Some(Slot::Loading)) {
            st.slots.remove(self.key);
            st.dev.remove(self.key);
        }
        st.stats.load_failures += 1;
        drop(st);
        self.inner.loaded.notify_all();
    }
}

impl PoolGuard {
    /// The entry's key.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The entry's memory.
    pub fn buffer(&self) -> Option<&dyn DeviceBuffer> {
        self.entry.as_deref().map(|e| e.buf.as_ref())
    }

    /// The bytes, when the memory is host-visible (CPU backend).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.buffer().and_then(|b| b.host_view())
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.buffer().map_or(0, |b| b.len())
    }

    /// True when the entry holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        // Release the memory reference first so an evictor never sees an unpinned entry that
        // is still referenced.
        self.entry = None;
        if let Ok(mut st) = self.inner.state.lock() {
            let _ = st.dev.unpin(&self.key);
        }
    }
}
