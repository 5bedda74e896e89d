//! Host-to-device copy rates of the same bytes from pageable memory, from pinned memory, and
//! from pageable memory through the [`PinnedUploader`]'s pinned bounce buffers: what
//! `bench stream --device cuda` and the pinned-pipeline row of `gpu-check` report.
//!
//! Each rate copies `total` bytes in `chunk`-byte pieces (the staging chunk size) cycling over a
//! window of host bytes into a device buffer of the window's size, queued back to back on the
//! copy stream with one wait at the end, after an untimed warm-up piece.

use agentcompress::backend::cuda::{CopyEngine, PinnedBuf, PinnedUploader};
use agentcompress::internal::cuda_err;
use agentcompress::io::gbps;
use agentcompress::{Error, Result};
use cudarc::driver::CudaSlice;
use std::time::Instant;

/// Host-to-device throughput of one byte window, GB/s (10^9 bytes per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct H2dRates {
    /// From pageable host memory (the driver stages it through its own pinned buffers).
    pub pageable_gbps: f64,
    /// From page-locked host memory (a DMA).
    pub pinned_gbps: f64,
    /// From pageable memory through two pinned bounce buffers (host copy overlapping DMA).
    pub bounced_gbps: f64,
}

impl H2dRates {
    /// pinned / pageable (0 when the pageable copy was not timed).
    pub fn pinned_speedup(&self) -> f64 {
        if self.pageable_gbps > 0.0 {
            self.pinned_gbps / self.pageable_gbps
        } else {
            0.0
        }
    }
}

/// Measures the three rates for `total` bytes copied from `window` in `chunk`-byte pieces.
pub fn h2d_rates(engine: &CopyEngine, window: &[u8], total: u64, chunk: usize) -> Result<H2dRates> {
    if window.is_empty() || chunk == 0 {
        return Err(Error::invalid("copy rate of an empty window or chunk"));
    }
    let stream = engine.stream();
    // SAFETY: device bytes are only written by the copies below, never read.
    let mut dev: CudaSlice<u8> = unsafe { stream.alloc(window.len()) }.map_err(|e| {
        Error::OutOfMemory(format!("device buffer of {} bytes: {e:?}", window.len()))
    })?;
    let mut pinned = PinnedBuf::new(engine.context(), window.len())?;
    pinned.copy_from_slice(window);
    let pageable_gbps = queued_rate(engine, window, &mut dev, total, chunk)?;
    let pinned_gbps = queued_rate(engine, &pinned, &mut dev, total, chunk)?;
    drop(pinned);

    let mut up = PinnedUploader::new(engine.context(), chunk)?;
    let mut view = dev.slice_mut(..);
    up.copy(stream, &window[..chunk.min(window.len())], &mut view)?;
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = window
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        up.copy(stream, &window[..n], &mut view)?;
        left -= n as u64;
    }
    let bounced_gbps = gbps(total, t.elapsed().as_secs_f64());
    Ok(H2dRates {
        pageable_gbps,
        pinned_gbps,
        bounced_gbps,
    })
}

/// `total` bytes from `host` (cycled) into `dev`, queued in `chunk`-byte pieces, then one wait.
fn queued_rate(
    engine: &CopyEngine,
    host: &[u8],
    dev: &mut CudaSlice<u8>,
    total: u64,
    chunk: usize,
) -> Result<f64> {
    let stream = engine.stream();
    let warm = chunk.min(host.len());
    stream
        .memcpy_htod(&host[..warm], &mut dev.slice_mut(..warm))
        .map_err(cuda_err)?;
    stream.synchronize().map_err(cuda_err)?;
    let t = Instant::now();
    let (mut left, mut off) = (total, 0usize);
    while left > 0 {
        let n = chunk
            .min(host.len() - off)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        stream
            .memcpy_htod(&host[off..off + n], &mut dev.slice_mut(off..off + n))
            .map_err(cuda_err)?;
        left -= n as u64;
        off = (off + n) % host.len();
    }
    stream.synchronize().map_err(cuda_err)?;
    Ok(gbps(total, t.elapsed().as_secs_f64()))
}
