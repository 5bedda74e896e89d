//! The priority-weighted LRU pool of device memory: which (variant, layer) entries are resident,
//! what to evict (`0.7 * frequency + 0.3 * recency`, pinned entries never), loading missing ones
//! through the staging pipeline, a host-RAM tier below the device, prefetch, and statistics.
//!
//! [`policy`] is the pure bookkeeping; [`Pool`] adds memory (through a pluggable
//! [`DeviceAlloc`]) and I/O; [`PoolStats`] reports what happened.

mod block_pool;
mod device_alloc;
pub mod policy;
mod stats;
pub mod variant_source;

pub use block_pool::{LayerSource, Pool, PoolConfig, PoolGuard, PoolKey, Prefetch};
pub use device_alloc::{DeviceAlloc, DeviceBuffer, HostDeviceAlloc, HostDeviceBuffer};
pub use policy::{EntryMeta, PolicyTable};
pub use stats::PoolStats;
pub use variant_source::{variant_pool, OpenVariant, VariantPoolConfig, VariantSource, GLOBALS};
