//! The staging pipeline: a ring of host staging buffers between the reader and the destination,
//! so that reading chunk k+1 from disk overlaps copying chunk k into the [`Sink`].
//!
//! Two stages joined by bounded crossbeam channels: a reader thread takes free staging buffers,
//! fills them (several chunks per `read_batch`, so the kernel sees a deep queue) and passes them
//! on; the calling thread verifies checksums, copies each chunk into the sink and hands the buffer
//! back. Staging buffers come from a pluggable [`StagingAlloc`] (plain aligned host memory here;
//! the CUDA backend plugs page-locked memory so `copy_in` can be a DMA).
//!
//! On CUDA, `backend::cuda::PinnedStagingAlloc` supplies `cuMemHostAlloc` (page-locked)
//! buffers and `backend::cuda::CudaDeviceBuffer` is the [`Sink`]: its `start_copy` issues
//! `cuMemcpyHtoDAsync` on a copy stream, the copy stage checksums the chunk meanwhile, and
//! `wait_copies` waits on an event. Only then does the buffer go back to the reader (the overlap
//! with disk comes from the reader thread, which keeps filling the other buffers). Buffers are
//! kept between loads, so pinned memory is allocated once per ring.

use super::aligned::AlignedBuf;
use super::extent::Layer;
use super::reader::{read_fully, BlockReader, ReadReq};
use crate::{Error, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A host staging buffer: its address is 4 KiB aligned (O_DIRECT needs it).
pub trait StagingBuffer: Send {
    /// The bytes.
    fn as_slice(&self) -> &[u8];
    /// The bytes, writable.
    fn as_mut_slice(&mut self) -> &mut [u8];
}

impl StagingBuffer for AlignedBuf {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

/// Allocates staging buffers (plain aligned host memory, or pinned memory on CUDA).
pub trait StagingAlloc: Send + Sync {
    /// A buffer of `len` bytes whose start is 4 KiB aligned.
    fn alloc(&self, len: usize) -> Result<Box<dyn StagingBuffer>>;
}

/// [`StagingAlloc`] of plain 4 KiB-aligned host memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostStagingAlloc;

impl StagingAlloc for HostStagingAlloc {
    fn alloc(&self, len: usize) -> Result<Box<dyn StagingBuffer>> {
        Ok(Box::new(AlignedBuf::zeroed(len)?))
    }
}

/// The destination of a load: bytes land at `offset` (from the start of the layer).
///
/// `copy_in` must be finished with `data` when it returns: the staging buffer is reused then.
/// A sink whose copy can run in the background (a DMA) also implements [`Sink::start_copy`] and
/// [`Sink::wait_copies`], so that the pipeline checksums a chunk while its copy is in flight.
pub trait Sink {
    /// Copies `data` to `offset..offset + data.len()` of the destination.
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()>;

    /// Starts the same copy as [`Sink::copy_in`], possibly in the background; the default
    /// copies at once. On error no copy of `data` is left in flight.
    ///
    /// # Safety
    /// `data` must stay allocated and unmodified (reading it is fine) until the next
    /// [`Sink::wait_copies`] on this sink has returned.
    unsafe fn start_copy(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.copy_in(offset, data)
    }

    /// Waits until every copy started by [`Sink::start_copy`] is done with its source bytes.
    fn wait_copies(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Sink for AlignedBuf {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        copy_into_slice(self, offset, data)
    }
}

impl Sink for Vec<u8> {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        copy_into_slice(self, offset, data)
    }
}

/// Bounds-checked copy of `data` into `dst` at `offset`.
fn copy_into_slice(dst: &mut [u8], offset: u64, data: &[u8]) -> Result<()> {
    let start = usize::try_from(offset).map_err(|_| Error::invalid("sink offset overflows"))?;
    let end = start
        .checked_add(data.len())
        .filter(|&e| e <= dst.len())
        .ok_or_else(|| {
            Error::invalid(format!(
                "copy of {} bytes at offset {offset} overruns a {}-byte destination",
                data.len(),
                dst.len()
            ))
        })?;
    dst[start..end].copy_from_slice(data);
    Ok(())
}

/// Sizes of the staging ring.
#[derive(Clone, Debug)]
pub struct StagingConfig {
    /// Bytes per staging buffer (a multiple of 4 KiB; default 4 MiB).
    pub chunk_size: usize,
    /// Staging buffers per load (at least 2 for overlap; default 8).
    pub ring: usize,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            chunk_size: 4 << 20,
            ring: 8,
        }
    }
}

/// Timings of one load (or a sum of loads).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadStats {
    /// Bytes moved from disk into the sink.
    pub bytes: u64,
    /// Seconds the reader stage spent in reads.
    pub disk_s: f64,
    /// Seconds the copy stage spent in `copy_in` and checksums.
    pub copy_s: f64,
    /// Seconds from start to the last byte in the sink.
    pub wall_s: f64,
}

/// `bytes / secs` in GB/s (10^9 bytes per second); 0 when no time passed.
pub fn gbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs / 1e9
    } else {
        0.0
    }
}

impl LoadStats {
    /// Throughput of the disk stage alone.
    pub fn disk_gbps(&self) -> f64 {
        gbps(self.bytes, self.disk_s)
    }
    /// Throughput of the copy stage alone.
    pub fn copy_gbps(&self) -> f64 {
        gbps(self.bytes, self.copy_s)
    }
    /// End-to-end throughput.
    pub fn gbps(&self) -> f64 {
        gbps(self.bytes, self.wall_s)
    }
    /// Adds another load's figures.
    pub fn add(&mut self, o: &LoadStats) {
        self.bytes += o.bytes;
        self.disk_s += o.disk_s;
        self.copy_s += o.copy_s;
        self.wall_s += o.wall_s;
    }
}

/// One staging-buffer-sized piece of a layer.
struct Chunk {
    extent: usize,
    file_off: u64,
    dest_off: u64,
    len: usize,
    last_of_extent: bool,
}

/// A chunk read into a staging buffer, or the read error.
type Filled = Result<(Box<dyn StagingBuffer>, usize)>;

/// Reader + staging ring + sink: loads layers. Shareable across threads; staging buffers are
/// kept between loads (pinned memory is costly to allocate).
pub struct StagingPipeline {
    reader: Arc<dyn BlockReader>,
    alloc: Arc<dyn StagingAlloc>,
    cfg: StagingConfig,
    spare: Mutex<Vec<Box<dyn StagingBuffer>>>,
}

impl StagingPipeline {
    /// A pipeline over `reader` with staging buffers from `alloc`.
    pub fn new(
        reader: Arc<dyn BlockReader>,
        alloc: Arc<dyn StagingAlloc>,
        cfg: StagingConfig,
    ) -> Result<Self> {
        if cfg.chunk_size == 0 || cfg.chunk_size % super::ALIGN != 0 {
            return Err(Error::invalid(format!(
                "staging chunk size {} must be a non-zero multiple of 4096",
                cfg.chunk_size
            )));
        }
        if cfg.ring < 2 {
            return Err(Error::invalid(format!(
                "staging ring of {} buffers: need at least 2 to overlap",
                cfg.ring
            )));
        }
        Ok(StagingPipeline {
            reader,
            alloc,
            cfg,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// The reader underneath.
    pub fn reader(&self) -> &Arc<dyn BlockReader> {
        &self.reader
    }

    /// Reads every extent of `layer` into `sink` (extent after extent, back to back), checking
    /// checksums. On error the sink may hold part of the layer; the caller discards it.
    pub fn load(&self, layer: &Layer, sink: &mut dyn Sink) -> Result<LoadStats> {
        let start = Instant::now();
        check_empty_crcs(layer)?;
        let chunks = self.plan(layer)?;
        if chunks.is_empty() {
            return Ok(LoadStats::default());
        }
        let nbuf = self.cfg.ring.min(chunks.len());
        let mut bufs = self.take_spares(nbuf)?;
        let (free_tx, free_rx) = bounded::<Box<dyn StagingBuffer>>(nbuf);
        let (full_tx, full_rx) = bounded::<Filled>(nbuf);
        for b in bufs.drain(..) {
            free_tx
                .send(b)
                .map_err(|_| Error::Internal("staging ring closed early".into()))?;
        }
        let (result, disk_s) = std::thread::scope(|s| {
            let reader = s.spawn(|| self.read_stage(layer, &chunks, &free_rx, full_tx));
            let result = copy_stage(layer, &chunks, sink, &full_rx, &free_tx);
            drop(free_tx);
            let disk_s = reader.join();
            (result, disk_s)
        });
        let disk_s =
            disk_s.map_err(|_| Error::Internal("staging reader thread panicked".into()))?;
        let copy_s = result?;
        let spares: Vec<_> = free_rx.try_iter().collect();
        self.put_spares(spares);
        Ok(LoadStats {
            bytes: layer.total_len(),
            disk_s,
            copy_s,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Splits the layer into chunks of at most `chunk_size` bytes.
    fn plan(&self, layer: &Layer) -> Result<Vec<Chunk>> {
        let mut chunks = Vec::new();
        let mut dest = 0u64;
        for (i, e) in layer.extents.iter().enumerate() {
            e.offset.checked_add(e.len).ok_or_else(|| {
                Error::invalid(format!("extent of {} overflows u64", e.path.display()))
            })?;
            let mut done = 0u64;
            while done < e.len {
                let len = (e.len - done).min(self.cfg.chunk_size as u64) as usize;
                chunks.push(Chunk {
                    extent: i,
                    file_off: e.offset + done,
                    dest_off: dest + done,
                    len,
                    last_of_extent: done + len as u64 == e.len,
                });
                done += len as u64;
            }
            dest += e.len;
        }
        Ok(chunks)
    }

    /// The reader stage: fill free buffers (up to half the ring per batch) and pass them on.
    /// Returns seconds spent reading.
    fn read_stage(
        &self,
        layer: &Layer,
        chunks: &[Chunk],
        free_rx: &Receiver<Box<dyn StagingBuffer>>,
        full_tx: Sender<Filled>,
    ) -> f64 {
        let mut disk_s = 0.0;
        let mut next = 0usize;
        // At most half the ring per batch, so the copy stage always has the other half to work
        // on while this batch is read (double buffering); a batch is submitted as one deep
        // queue of reads.
        let max_batch = (self.cfg.ring / 2).max(1);
        while next < chunks.len() {
            let Ok(first) = free_rx.recv() else { break };
            let mut batch = vec![first];
            while next + batch.len() < chunks.len() && batch.len() < max_batch {
                match free_rx.try_recv() {
                    Ok(b) => batch.push(b),
                    Err(_) => break,
                }
            }
            let t = Instant::now();
            let res = {
                let mut reqs: Vec<ReadReq<'_>> = batch
                    .iter_mut()
                    .zip(&chunks[next..])
                    .map(|(b, c)| {
                        let path: &Path = &layer.extents[c.extent].path;
                        ReadReq::new(path, c.file_off, &mut b.as_mut_slice()[..c.len])
                    })
                    .collect();
                read_fully(self.reader.as_ref(), &mut reqs)
            };
            disk_s += t.elapsed().as_secs_f64();
            if let Err(e) = res {
                let _ = full_tx.send(Err(e));
                break;
            }
            for b in batch {
                if full_tx.send(Ok((b, next))).is_err() {
                    return disk_s;
                }
                next += 1;
            }
        }
        disk_s
    }

    /// `n` staging buffers: spares first, new ones for the rest.
    fn take_spares(&self, n: usize) -> Result<Vec<Box<dyn StagingBuffer>>> {
        let mut out: Vec<_> = match self.spare.lock() {
            Ok(mut s) => {
                let k = s.len().saturating_sub(n);
                s.drain(k..).collect()
            }
            Err(_) => Vec::new(),
        };
        while out.len() < n {
            out.push(self.alloc.alloc(self.cfg.chunk_size)?);
        }
        Ok(out)
    }

    /// Keeps buffers for later loads (at most four rings' worth).
    fn put_spares(&self, bufs: Vec<Box<dyn StagingBuffer>>) {
        if let Ok(mut s) = self.spare.lock() {
            let room = (4 * self.cfg.ring).saturating_sub(s.len());
            s.extend(bufs.into_iter().take(room));
        }
    }
}

/// The copy stage: checksum and copy each chunk in order, return buffers. Seconds spent.
fn copy_stage(
    layer: &Layer,
    chunks: &[Chunk],
    sink: &mut dyn Sink,
    full_rx: &Receiver<Filled>,
    free_tx: &Sender<Box<dyn StagingBuffer>>,
) -> Result<f64> {
    let mut copy_s = 0.0;
    let mut hasher = crc32fast::Hasher::new();
    for (want, c) in chunks.iter().enumerate() {
        let (buf, idx) = full_rx
            .recv()
            .map_err(|_| Error::Internal("staging reader stopped early".into()))??;
        if idx != want {
            return Err(Error::Internal(format!(
                "staging chunk {idx} arrived, expected {want}"
            )));
        }
        let t = Instant::now();
        let data = &buf.as_slice()[..c.len];
        let extent = &layer.extents[c.extent];
        // The checksum reads the staging buffer while its copy (a DMA on CUDA) is in flight.
        // SAFETY: `buf` is neither dropped nor written (it goes back to the reader only at the
        // end of this iteration) before `wait_copies` below has returned, on every path.
        unsafe { sink.start_copy(c.dest_off, data) }?;
        if extent.crc32.is_some() {
            hasher.update(data);
        }
        sink.wait_copies()?;
        if c.last_of_extent {
            let got = std::mem::take(&mut hasher).finalize();
            if let Some(expected) = extent.crc32 {
                if got != expected {
                    return Err(Error::corrupt(
                        &extent.path,
                        format!(
                            "crc32 mismatch for {} bytes at offset {}: expected {expected:08x}, \
                             got {got:08x}",
                            extent.len, extent.offset
                        ),
                    ));
                }
            }
        }
        copy_s += t.elapsed().as_secs_f64();
        let _ = free_tx.send(buf);
    }
    Ok(copy_s)
}

/// Checks the checksums of zero-length extents (the CRC-32 of no bytes is 0).
fn check_empty_crcs(layer: &Layer) -> Result<()> {
    for e in layer.extents.iter().filter(|e| e.len == 0) {
        if let Some(c) = e.crc32.filter(|&c| c != 0) {
            return Err(Error::corrupt(
                &e.path,
                format!(
                    "crc32 {c:08x} given for an empty extent at offset {}",
                    e.offset
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Extent, ReaderKind};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Fills each byte with a function of its file offset (a stand-in disk, a little slow so
    /// the reader runs ahead of the copies when it can).
    struct PatternReader;

    fn pattern(off: u64) -> u8 {
        (off % 251) as u8
    }

    impl BlockReader for PatternReader {
        fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> Result<()> {
            std::thread::sleep(Duration::from_micros(300));
            for r in reqs.iter_mut() {
                let base = r.offset + r.filled as u64;
                for (i, b) in r.buf[r.filled..].iter_mut().enumerate() {
                    *b = pattern(base + i as u64);
                }
                r.filled = r.buf.len();
            }
            Ok(())
        }
        fn kind(&self) -> ReaderKind {
            ReaderKind::Pread
        }
    }

    /// Counts allocations, like a pinned allocator whose buffers are costly.
    #[derive(Default)]
    struct CountingAlloc {
        allocs: AtomicUsize,
    }

    impl StagingAlloc for CountingAlloc {
        fn alloc(&self, len: usize) -> Result<Box<dyn StagingBuffer>> {
            self.allocs.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(AlignedBuf::zeroed(len)?))
        }
    }

    /// A sink acting like an asynchronous device copy: `start_copy` only notes the source,
    /// `wait_copies` takes a while, then checks that nobody rewrote the source meanwhile (the
    /// reader must not get the buffer back before the wait) and copies it.
    #[derive(Default)]
    struct DmaSink {
        data: Vec<u8>,
        order: Vec<(u64, usize)>,
        buffers: HashSet<usize>,
        pending: Option<(u64, *const u8, Vec<u8>)>,
        waits: usize,
    }

    impl Sink for DmaSink {
        fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            // SAFETY: waited on right away.
            unsafe { self.start_copy(offset, data) }?;
            self.wait_copies()
        }
        unsafe fn start_copy(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            if self.pending.is_some() {
                return Err(Error::Internal(
                    "a copy started before the last wait".into(),
                ));
            }
            self.order.push((offset, data.len()));
            self.buffers.insert(data.as_ptr() as usize);
            self.pending = Some((offset, data.as_ptr(), data.to_vec()));
            Ok(())
        }
        fn wait_copies(&mut self) -> Result<()> {
            self.waits += 1;
            let Some((offset, ptr, before)) = self.pending.take() else {
                return Ok(());
            };
            std::thread::sleep(Duration::from_millis(1));
            // SAFETY: the `start_copy` contract keeps the source alive until this returns.
            let now = unsafe { std::slice::from_raw_parts(ptr, before.len()) };
            if now != before.as_slice() {
                return Err(Error::Internal(format!(
                    "staging buffer at offset {offset} rewritten during its copy"
                )));
            }
            copy_into_slice(&mut self.data, offset, now)
        }
    }

    #[test]
    fn buffers_are_reused_only_after_their_copy_and_kept_between_loads() {
        let alloc = Arc::new(CountingAlloc::default());
        let cfg = StagingConfig {
            chunk_size: 4096,
            ring: 4,
        };
        let p = StagingPipeline::new(Arc::new(PatternReader), alloc.clone(), cfg).unwrap();
        // Two extents, the second with a partial last chunk: 11 chunks in all.
        let b_crc = crc32fast::hash(
            &(0..4 * 4096 + 100u64)
                .map(|i| pattern(4096 + i))
                .collect::<Vec<u8>>(),
        );
        let layer = Layer::new(vec![
            Extent::new("/fake/a", 8192, 6 * 4096),
            Extent::new("/fake/b", 4096, 4 * 4096 + 100).with_crc32(b_crc),
        ]);
        let total = layer.total_len() as usize;
        for round in 0..2 {
            let mut sink = DmaSink {
                data: vec![0; total],
                ..Default::default()
            };
            let st = p.load(&layer, &mut sink).unwrap();
            assert_eq!(st.bytes, total as u64);
            // Chunks arrive in layer order, back to back.
            let mut next = 0u64;
            for &(off, len) in &sink.order {
                assert_eq!(off, next, "round {round}: chunk out of order");
                next += len as u64;
            }
            assert_eq!((sink.order.len(), next), (11, total as u64));
            assert!(sink.buffers.len() <= 4, "at most a ring's worth of buffers");
            let want: Vec<u8> = (0..6 * 4096u64)
                .map(|i| pattern(8192 + i))
                .chain((0..4 * 4096 + 100u64).map(|i| pattern(4096 + i)))
                .collect();
            assert!(sink.data == want, "round {round}: wrong bytes");
            assert_eq!(sink.waits, 11, "one wait per chunk");
            // The ring is allocated once; the second load reuses the spares.
            assert_eq!(alloc.allocs.load(Ordering::Relaxed), 4, "round {round}");
        }
    }

    #[test]
    fn a_short_layer_allocates_only_the_buffers_it_needs() {
        let alloc = Arc::new(CountingAlloc::default());
        let cfg = StagingConfig {
            chunk_size: 4096,
            ring: 8,
        };
        let p = StagingPipeline::new(Arc::new(PatternReader), alloc.clone(), cfg).unwrap();
        let layer = Layer::new(vec![Extent::new("/fake/a", 0, 2 * 4096)]);
        let mut sink = DmaSink {
            data: vec![0; 2 * 4096],
            ..Default::default()
        };
        p.load(&layer, &mut sink).unwrap();
        assert_eq!(alloc.allocs.load(Ordering::Relaxed), 2);
        assert_eq!(sink.order, vec![(0, 4096), (4096, 4096)]);
    }

    #[test]
    fn a_checksum_mismatch_waits_for_the_copy_in_flight() {
        let p = StagingPipeline::new(
            Arc::new(PatternReader),
            Arc::new(HostStagingAlloc),
            StagingConfig {
                chunk_size: 4096,
                ring: 2,
            },
        )
        .unwrap();
        let layer = Layer::new(vec![Extent::new("/fake/a", 0, 3 * 4096).with_crc32(1)]);
        let mut sink = DmaSink {
            data: vec![0; 3 * 4096],
            ..Default::default()
        };
        let e = p.load(&layer, &mut sink).unwrap_err();
        assert!(e.to_string().contains("crc32 mismatch"), "{e}");
        assert!(sink.pending.is_none(), "no copy left in flight");
        assert_eq!(sink.waits, 3);
    }
}
