//! Weight streaming: read tensor extents from disk into aligned host buffers (io_uring with
//! O_DIRECT, or a pread fallback), and stage them through a ring of host buffers into a
//! destination [`Sink`] so reading chunk k+1 overlaps copying chunk k.
//!
//! Layers: [`Extent`]/[`Layer`] say what to read; [`BlockReader`] reads byte ranges
//! ([`UringReader`], [`PreadReader`], picked by [`open_reader`]); [`StagingPipeline`] moves a
//! layer through [`StagingAlloc`] buffers into a [`Sink`]. The variant store supplies the extents.

mod aligned;
mod extent;
mod files;
mod pread;
mod reader;
mod staging;
mod uring;

pub use aligned::{round_up, AlignedBuf, ALIGN};
pub use extent::{Extent, Layer};
pub use files::warn_once;
pub use pread::PreadReader;
pub use reader::{
    open_reader, read_fully, BlockReader, Completion, ReadReq, ReadSession, ReaderConfig,
    ReaderCounters, ReaderKind,
};
pub use staging::{
    gbps, HostStagingAlloc, LoadStats, Sink, StagingAlloc, StagingBuffer, StagingConfig,
    StagingPipeline,
};
pub use uring::{UringConfig, UringReader};
