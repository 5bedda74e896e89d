//! The staging pipeline: moves a layer from disk into a destination [`Sink`], with reading,
//! checksum verification and copying overlapped.
//!
//! The reader stage keeps a deep queue of reads in flight through one
//! [`ReadSession`](super::ReadSession) per load
//! (io_uring: the queue never drains between chunks) and passes filled chunks on in layer
//! order. Host destinations ([`Sink::host_dest`]) are read in place: the reads land in the
//! destination itself and the calling thread verifies each chunk while later ones are read.
//! Other sinks go through a ring of staging buffers and three stages: reading chunk k+1,
//! verifying chunk k (its own thread) and copying chunk k-1 into the sink (the calling thread).
//! Staging buffers come from a pluggable [`StagingAlloc`] (plain aligned host memory here; the
//! CUDA backend plugs page-locked memory so the copy is a DMA) and are offered to the reader
//! as registered destinations ([`BlockReader::register_buffer`]).
//!
//! On CUDA, `backend::cuda::PinnedStagingAlloc` supplies `cuMemHostAlloc` (page-locked)
//! buffers and `backend::cuda::CudaDeviceBuffer` is the [`Sink`]: its `start_copy` issues
//! `cuMemcpyHtoDAsync` on a copy stream and `wait_copies` waits on an event. Only then does the
//! buffer go back to the reader. Buffers are kept between loads, so pinned memory is allocated
//! (and registered) once per ring.

use super::aligned::AlignedBuf;
use super::extent::Layer;
use super::reader::{truncated, BlockReader};
use crate::{Error, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{BTreeMap, HashMap};
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

    /// The destination as host memory that reads may fill in place (no staging copy), or
    /// `None` (the default) when it is not host-visible.
    fn host_dest(&mut self) -> Option<&mut [u8]> {
        None
    }
}

impl Sink for AlignedBuf {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        copy_into_slice(self, offset, data)
    }
    fn host_dest(&mut self) -> Option<&mut [u8]> {
        Some(self)
    }
}

impl Sink for Vec<u8> {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        copy_into_slice(self, offset, data)
    }
    fn host_dest(&mut self) -> Option<&mut [u8]> {
        Some(self)
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
    /// Read host destinations ([`Sink::host_dest`]) in place, with no staging copy. Off by
    /// default: reads landing in a cold, layer-sized destination can be slower than reads into
    /// the small, hot staging ring followed by a copy (so it was on the virtual machine measured
    /// in `docs/PERFORMANCE.md`; `bench stream --in-place` measures it).
    pub read_in_place: bool,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            chunk_size: 4 << 20,
            ring: 8,
            read_in_place: false,
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
    /// Seconds the copy stage spent placing bytes in the sink: copying, or (read in place)
    /// preparing the destination's pages ahead of the reader.
    pub copy_s: f64,
    /// Seconds the verify stage spent computing checksums.
    pub verify_s: f64,
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
    /// Throughput of the verify stage alone (0 when nothing was checked).
    pub fn verify_gbps(&self) -> f64 {
        gbps(self.bytes, self.verify_s)
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
        self.verify_s += o.verify_s;
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

/// A staging buffer offered to the reader as a registered read destination; withdrawn before
/// it is freed.
struct RingBuf {
    buf: Box<dyn StagingBuffer>,
    reader: Arc<dyn BlockReader>,
    registered: bool,
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        if self.registered {
            self.reader
                .forget_buffer(self.buf.as_mut_slice().as_mut_ptr());
        }
    }
}

/// Where the reader stage puts a chunk: a staging buffer, or (in place) the chunk's own part
/// of a host destination.
trait ReadTarget: Send {
    fn dst(&mut self) -> *mut u8;
}

impl ReadTarget for RingBuf {
    fn dst(&mut self) -> *mut u8 {
        self.buf.as_mut_slice().as_mut_ptr()
    }
}

impl ReadTarget for &mut [u8] {
    fn dst(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
}

/// A chunk read into its target (chunk index), or the error that stopped the reader.
type Filled<T> = Result<(usize, T)>;

/// A staged chunk with the verdict of its checksum (an extent's verdict comes with its last
/// chunk), or the error that stopped the reader.
type Checked = Result<(usize, RingBuf, Result<()>)>;

/// Checks each extent's CRC-32 as its chunks pass in layer order.
struct Verifier<'l> {
    layer: &'l Layer,
    hasher: crc32fast::Hasher,
    secs: f64,
}

impl<'l> Verifier<'l> {
    fn new(layer: &'l Layer) -> Self {
        Verifier {
            layer,
            hasher: crc32fast::Hasher::new(),
            secs: 0.0,
        }
    }

    /// Hashes chunk `c`'s bytes; at the extent's last chunk, compares with its checksum.
    fn chunk(&mut self, c: &Chunk, data: &[u8]) -> Result<()> {
        let extent = &self.layer.extents[c.extent];
        let Some(expected) = extent.crc32 else {
            return Ok(());
        };
        let t = Instant::now();
        self.hasher.update(data);
        let mut res = Ok(());
        if c.last_of_extent {
            let got = std::mem::take(&mut self.hasher).finalize();
            if got != expected {
                res = Err(Error::corrupt(
                    &extent.path,
                    format!(
                        "crc32 mismatch for {} bytes at offset {}: expected {expected:08x}, \
                         got {got:08x}",
                        extent.len, extent.offset
                    ),
                ));
            }
        }
        self.secs += t.elapsed().as_secs_f64();
        res
    }
}

/// Reader + staging ring + sink: loads layers. Shareable across threads; staging buffers are
/// kept between loads (pinned memory is costly to allocate) and offered to the reader as
/// registered destinations.
pub struct StagingPipeline {
    reader: Arc<dyn BlockReader>,
    alloc: Arc<dyn StagingAlloc>,
    cfg: StagingConfig,
    spare: Mutex<Vec<RingBuf>>,
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

    /// The staging settings.
    pub fn config(&self) -> &StagingConfig {
        &self.cfg
    }

    /// Reads every extent of `layer` into `sink` (extent after extent, back to back), checking
    /// checksums. With [`StagingConfig::read_in_place`], a host sink ([`Sink::host_dest`])
    /// whose layout keeps O_DIRECT alignment is read in place: reader -> verify, no staging
    /// copy. Otherwise three stages overlap:
    /// reading chunk k+1, verifying chunk k and copying chunk k-1 into the sink. On error the
    /// sink may hold part of the layer; the caller discards it.
    pub fn load(&self, layer: &Layer, sink: &mut dyn Sink) -> Result<LoadStats> {
        let start = Instant::now();
        check_empty_crcs(layer)?;
        let chunks = self.plan(layer)?;
        if chunks.is_empty() {
            return Ok(LoadStats::default());
        }
        let total = layer.total_len();
        if let Some(dest) = sink.host_dest().filter(|_| self.cfg.read_in_place) {
            if in_place_fits(dest, &chunks) {
                let Some(n) = usize::try_from(total).ok().filter(|&n| n <= dest.len()) else {
                    return Err(Error::invalid(format!(
                        "a layer of {total} bytes overruns a {}-byte destination",
                        dest.len()
                    )));
                };
                let dest = &mut dest[..n];
                let (disk_s, verify_s, copy_s) = self.load_in_place(layer, &chunks, dest)?;
                return Ok(LoadStats {
                    bytes: total,
                    disk_s,
                    copy_s,
                    verify_s,
                    wall_s: start.elapsed().as_secs_f64(),
                });
            }
        }
        let (disk_s, verify_s, copy_s) = self.load_staged(layer, &chunks, sink)?;
        Ok(LoadStats {
            bytes: total,
            disk_s,
            copy_s,
            verify_s,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Reader thread -> verify (this thread), reading straight into `dest`.
    /// Returns seconds reading, verifying and preparing destination pages.
    fn load_in_place(
        &self,
        layer: &Layer,
        chunks: &[Chunk],
        dest: &mut [u8],
    ) -> Result<(f64, f64, f64)> {
        let mut pieces: Vec<&mut [u8]> = Vec::new();
        pieces
            .try_reserve_exact(chunks.len())
            .map_err(|_| Error::OutOfMemory(format!("list of {} chunks", chunks.len())))?;
        let mut rest = dest;
        for c in chunks {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(c.len);
            pieces.push(piece);
            rest = tail;
        }
        let (full_tx, full_rx) = bounded::<Filled<&mut [u8]>>(chunks.len());
        let (piece_tx, piece_rx) = bounded::<&mut [u8]>(chunks.len());
        let reader = self.reader.as_ref();
        let ring = self.cfg.ring;
        std::thread::scope(|s| {
            let rd = s.spawn(move || {
                let take = |block: bool| {
                    if block {
                        piece_rx.recv().ok()
                    } else {
                        piece_rx.try_recv().ok()
                    }
                };
                read_stage(reader, layer, chunks, ring, take, &full_tx)
            });
            // This thread hands the reader its pieces a little ahead, touching each page
            // first: a fresh destination then faults its pages in here, not in the reader's
            // submissions (which would stall the disk queue).
            let mut pieces = pieces.into_iter();
            let ahead = 2 * ring;
            let mut sent = 0usize;
            let mut feed = move |upto: usize| {
                while sent < upto.min(chunks.len()) {
                    let Some(p) = pieces.next() else { return };
                    p.iter_mut().step_by(super::ALIGN).for_each(|b| *b = 0);
                    if piece_tx.send(p).is_err() {
                        return;
                    }
                    sent += 1;
                }
            };
            let mut touch_s = 0.0;
            let t = Instant::now();
            feed(ahead);
            touch_s += t.elapsed().as_secs_f64();
            let mut v = Verifier::new(layer);
            let verified = (|| {
                for (want, c) in chunks.iter().enumerate() {
                    let (idx, piece) = full_rx
                        .recv()
                        .map_err(|_| Error::Internal("reader stopped early".into()))??;
                    check_order(idx, want)?;
                    v.chunk(c, piece)?;
                    let t = Instant::now();
                    feed(want + 1 + ahead);
                    touch_s += t.elapsed().as_secs_f64();
                }
                Ok(())
            })();
            drop(feed);
            drop(full_rx);
            let disk_s = rd
                .join()
                .map_err(|_| Error::Internal("staging reader thread panicked".into()))?;
            verified.map(|()| (disk_s, v.secs, touch_s))
        })
    }

    /// Reader thread -> verify thread -> copy (this thread), through the staging ring.
    fn load_staged(
        &self,
        layer: &Layer,
        chunks: &[Chunk],
        sink: &mut dyn Sink,
    ) -> Result<(f64, f64, f64)> {
        let nbuf = self.cfg.ring.min(chunks.len());
        let bufs = self.take_spares(nbuf)?;
        let (free_tx, free_rx) = bounded::<RingBuf>(nbuf);
        let (full_tx, full_rx) = bounded::<Filled<RingBuf>>(nbuf);
        let (ok_tx, ok_rx) = bounded::<Checked>(nbuf);
        for b in bufs {
            free_tx
                .send(b)
                .map_err(|_| Error::Internal("staging ring closed early".into()))?;
        }
        let reader = self.reader.as_ref();
        let ring = self.cfg.ring;
        let out = std::thread::scope(|s| {
            let free = &free_rx;
            let rd = s.spawn(move || {
                let take = |block: bool| {
                    if block {
                        free.recv().ok()
                    } else {
                        free.try_recv().ok()
                    }
                };
                read_stage(reader, layer, chunks, ring, take, &full_tx)
            });
            let vf = s.spawn(move || {
                let mut v = Verifier::new(layer);
                for msg in full_rx.iter() {
                    let msg = msg.map(|(i, b)| {
                        let verdict = v.chunk(&chunks[i], &b.buf.as_slice()[..chunks[i].len]);
                        (i, b, verdict)
                    });
                    let failed = !matches!(msg, Ok((_, _, Ok(()))));
                    if ok_tx.send(msg).is_err() || failed {
                        break;
                    }
                }
                v.secs
            });
            let copied = copy_stage(chunks, sink, &ok_rx, &free_tx);
            drop(free_tx);
            drop(ok_rx);
            let verify_s = vf.join();
            let disk_s = rd.join();
            match (disk_s, verify_s) {
                (Ok(d), Ok(v)) => copied.map(|c| (d, v, c)),
                _ => Err(Error::Internal("staging thread panicked".into())),
            }
        });
        let spares: Vec<_> = free_rx.try_iter().collect();
        self.put_spares(spares);
        out
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
                chunks.try_reserve(1).map_err(|_| {
                    Error::OutOfMemory(format!("list of {} chunks", chunks.len() + 1))
                })?;
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

    /// `n` staging buffers: spares first, new ones (offered to the reader) for the rest.
    fn take_spares(&self, n: usize) -> Result<Vec<RingBuf>> {
        let mut out: Vec<_> = match self.spare.lock() {
            Ok(mut s) => {
                let k = s.len().saturating_sub(n);
                s.drain(k..).collect()
            }
            Err(_) => Vec::new(),
        };
        while out.len() < n {
            let mut buf = self.alloc.alloc(self.cfg.chunk_size)?;
            let s = buf.as_mut_slice();
            // SAFETY: the buffer is withdrawn (`RingBuf::drop`) before it is freed.
            let registered = unsafe { self.reader.register_buffer(s.as_mut_ptr(), s.len()) };
            out.push(RingBuf {
                buf,
                reader: self.reader.clone(),
                registered,
            });
        }
        Ok(out)
    }

    /// Keeps buffers for later loads (at most four rings' worth).
    fn put_spares(&self, bufs: Vec<RingBuf>) {
        if let Ok(mut s) = self.spare.lock() {
            let room = (4 * self.cfg.ring).saturating_sub(s.len());
            s.extend(bufs.into_iter().take(room));
        }
    }
}

/// True when reading in place into `dest` keeps each chunk's O_DIRECT alignment: the
/// destination starts on a block and every chunk sits at the same offset within a block in
/// the file and in the destination (then the staging ring would not do better).
fn in_place_fits(dest: &[u8], chunks: &[Chunk]) -> bool {
    let a = super::ALIGN as u64;
    (dest.as_ptr() as usize) % super::ALIGN == 0
        && chunks.iter().all(|c| c.file_off % a == c.dest_off % a)
}

/// An internal error unless chunk `idx` is the expected `want`.
fn check_order(idx: usize, want: usize) -> Result<()> {
    if idx != want {
        return Err(Error::Internal(format!(
            "staging chunk {idx} arrived, expected {want}"
        )));
    }
    Ok(())
}

/// The reader stage: keeps up to `limit` chunks in flight in one
/// [`ReadSession`](crate::io::ReadSession) (half that for a synchronous session, so the next
/// stage works on the other half), taking targets from `take` (`true`: may block, nothing is in
/// flight) and passing filled ones on in layer order.
/// Returns seconds spent submitting and waiting for reads.
fn read_stage<T: ReadTarget>(
    reader: &dyn BlockReader,
    layer: &Layer,
    chunks: &[Chunk],
    limit: usize,
    mut take: impl FnMut(bool) -> Option<T>,
    out: &Sender<Filled<T>>,
) -> f64 {
    // Targets in flight and completed ones waiting for their turn; declared before the
    // session so that they outlive it (dropping the session waits for reads in flight).
    let mut held: HashMap<u64, T> = HashMap::new();
    let mut ready: BTreeMap<usize, T> = BTreeMap::new();
    let mut session = reader.session();
    let limit = if session.synchronous() {
        (limit / 2).max(1)
    } else {
        limit.max(1)
    };
    let mut disk_s = 0.0;
    let (mut next, mut send_next) = (0usize, 0usize);
    let fail = |e: Error| {
        let _ = out.send(Err(e));
    };
    while send_next < chunks.len() {
        while next < chunks.len() && session.pending() < limit {
            let Some(mut t) = take(session.pending() == 0) else {
                break;
            };
            let c = &chunks[next];
            let path: &Path = &layer.extents[c.extent].path;
            let ts = Instant::now();
            // SAFETY: `t` stays in `held` (or `ready`) until the session has returned its
            // read and outlives the session; each chunk has its own target.
            let r = unsafe { session.submit(next as u64, path, c.file_off, t.dst(), c.len) };
            disk_s += ts.elapsed().as_secs_f64();
            held.insert(next as u64, t);
            if let Err(e) = r {
                fail(e);
                return disk_s;
            }
            next += 1;
        }
        if session.pending() == 0 {
            // Nothing in flight and no target to read into: the next stage has stopped.
            return disk_s;
        }
        let ts = Instant::now();
        let done = match session.wait() {
            Ok(d) => d,
            Err(e) => {
                fail(e);
                return disk_s;
            }
        };
        disk_s += ts.elapsed().as_secs_f64();
        for (id, res) in done {
            let Some(t) = held.remove(&id) else {
                fail(Error::Internal(format!("read {id} completed twice")));
                return disk_s;
            };
            let c = &chunks[id as usize];
            match res {
                Ok(n) if n == c.len => {
                    ready.insert(id as usize, t);
                }
                Ok(n) => {
                    let path = &layer.extents[c.extent].path;
                    fail(truncated(path, c.file_off, c.len, n));
                    return disk_s;
                }
                Err(e) => {
                    fail(e);
                    return disk_s;
                }
            }
        }
        while let Some(t) = ready.remove(&send_next) {
            if out.send(Ok((send_next, t))).is_err() {
                return disk_s;
            }
            send_next += 1;
        }
    }
    disk_s
}

/// The copy stage: copy each chunk in order into the sink and hand its buffer back; a failed
/// checksum verdict is returned once its chunk's copy has finished (nothing is left in
/// flight). Seconds spent copying.
fn copy_stage(
    chunks: &[Chunk],
    sink: &mut dyn Sink,
    ok_rx: &Receiver<Checked>,
    free_tx: &Sender<RingBuf>,
) -> Result<f64> {
    let mut copy_s = 0.0;
    for (want, c) in chunks.iter().enumerate() {
        let (idx, buf, verdict) = ok_rx
            .recv()
            .map_err(|_| Error::Internal("staging verifier stopped early".into()))??;
        check_order(idx, want)?;
        let t = Instant::now();
        let data = &buf.buf.as_slice()[..c.len];
        // SAFETY: `buf` is neither dropped nor written (it goes back to the reader only below)
        // before `wait_copies` has returned, on every path.
        unsafe { sink.start_copy(c.dest_off, data) }?;
        sink.wait_copies()?;
        copy_s += t.elapsed().as_secs_f64();
        let _ = free_tx.send(buf);
        verdict?;
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
    use crate::io::{Extent, ReadReq, ReaderKind};
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
            read_in_place: false,
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
            read_in_place: false,
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
                read_in_place: false,
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
