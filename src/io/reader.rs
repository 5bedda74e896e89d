//! The `BlockReader` trait (read byte ranges of files into caller buffers), the retrying
//! `read_fully` driver on top of it, and `open_reader`, which picks io_uring or pread.

use super::files::{warn_once, FileTable};
use super::pread::PreadReader;
use super::uring::{UringConfig, UringReader};
use crate::{Error, Result};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many times `read_fully` retries a batch that failed with EAGAIN / EINTR.
const TRANSIENT_RETRIES: u32 = 8;

/// One read: fill `buf[filled..]` from `path` at `offset + filled`.
///
/// O_DIRECT is used for the part where the file offset and the buffer address are 4 KiB aligned
/// (whole blocks); anything else (an unaligned start, the sub-4 KiB tail) is read buffered.
#[derive(Debug)]
pub struct ReadReq<'a> {
    /// File to read.
    pub path: &'a Path,
    /// File offset of `buf[0]`.
    pub offset: u64,
    /// Destination.
    pub buf: &'a mut [u8],
    /// Bytes of `buf` already read; readers advance it.
    pub filled: usize,
}

impl<'a> ReadReq<'a> {
    /// A request for `buf.len()` bytes of `path` at `offset`, nothing read yet.
    pub fn new(path: &'a Path, offset: u64, buf: &'a mut [u8]) -> Self {
        ReadReq {
            path,
            offset,
            buf,
            filled: 0,
        }
    }

    /// True when the whole buffer has been read.
    pub fn is_done(&self) -> bool {
        self.filled >= self.buf.len()
    }
}

/// Which implementation a reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ReaderKind {
    /// io_uring submissions (O_DIRECT where the file system allows).
    IoUring,
    /// Synchronous `pread` (O_DIRECT only when asked for).
    Pread,
}

/// Bytes a reader moved by each path, to tell which one actually ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderCounters {
    /// Bytes read through O_DIRECT descriptors.
    pub direct_bytes: u64,
    /// Bytes read through buffered descriptors (may come from the page cache).
    pub buffered_bytes: u64,
}

/// Shared atomic form of [`ReaderCounters`].
#[derive(Default)]
pub(crate) struct AtomicCounters {
    direct: AtomicU64,
    buffered: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn add(&self, direct: bool, n: usize) {
        let c = if direct { &self.direct } else { &self.buffered };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> ReaderCounters {
        ReaderCounters {
            direct_bytes: self.direct.load(Ordering::Relaxed),
            buffered_bytes: self.buffered.load(Ordering::Relaxed),
        }
    }
}

/// Reads byte ranges of files into caller-provided buffers.
///
/// Contract: `read_batch` reads into `buf[filled..]` of every request that is not done and
/// advances `filled` by the bytes it placed; it may stop short (end of file, or a partial read it
/// chose not to resume). It never returns while a read into a caller buffer is still in flight.
/// Errors name the file and the offset. Use [`read_fully`] to get whole requests or an error.
pub trait BlockReader: Send + Sync {
    /// Reads the pending part of each request (see the trait contract).
    fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> Result<()>;
    /// Which implementation this is.
    fn kind(&self) -> ReaderKind;
    /// Bytes read so far by each path (direct or buffered).
    fn counters(&self) -> ReaderCounters {
        ReaderCounters::default()
    }

    /// A session that keeps reads in flight across calls (see [`ReadSession`]). The default
    /// runs each group of submitted reads through [`read_fully`] inside `wait`.
    fn session(&self) -> Box<dyn ReadSession + '_> {
        Box::new(SyncSession {
            reader: self,
            queued: Vec::new(),
        })
    }

    /// Offers `len` bytes at `ptr` as a long-lived read destination (a staging buffer), which
    /// the reader may register with the kernel so reads into it skip per-read page pinning.
    /// Returns whether it did. The default ignores the offer.
    ///
    /// # Safety
    /// The memory must stay allocated until [`BlockReader::forget_buffer`] for `ptr` returns.
    unsafe fn register_buffer(&self, ptr: *mut u8, len: usize) -> bool {
        let _ = (ptr, len);
        false
    }

    /// Withdraws a buffer offered by [`BlockReader::register_buffer`] (before it is freed).
    fn forget_buffer(&self, ptr: *mut u8) {
        let _ = ptr;
    }
}

/// One read finished by a [`ReadSession`]: its id and the bytes placed (fewer than asked when
/// the file ends first), or its error.
pub type Completion = (u64, Result<usize>);

/// A stream of reads in flight together: the caller submits reads as destinations become free
/// and collects them as they finish, so the disk queue does not drain between groups of reads.
/// Dropping a session waits for the reads still in flight.
pub trait ReadSession {
    /// Queues a read of `len` bytes of `path` at `offset` into `dst`.
    ///
    /// # Safety
    /// `dst..dst + len` must stay allocated, writable and otherwise unused until `wait` has
    /// returned this read, or the session is dropped.
    unsafe fn submit(
        &mut self,
        id: u64,
        path: &Path,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<()>;

    /// Waits until at least one queued read has finished and returns the finished ones (empty
    /// when nothing is queued). An `Err` ends the session: reads not returned are abandoned.
    fn wait(&mut self) -> Result<Vec<Completion>>;

    /// Reads submitted and not yet returned by `wait`.
    fn pending(&self) -> usize;

    /// True when reads only progress inside `wait` (nothing overlaps the caller's own work,
    /// so the caller should leave buffers for the next group).
    fn synchronous(&self) -> bool {
        true
    }
}

/// The default [`ReadSession`]: queued reads run as one [`read_fully`] batch in `wait`, so
/// readers that only implement `read_batch` (and wrappers injecting faults) keep their retry
/// and truncation semantics.
struct SyncSession<'a, R: BlockReader + ?Sized> {
    reader: &'a R,
    queued: Vec<(u64, std::path::PathBuf, u64, *mut u8, usize)>,
}

impl<R: BlockReader + ?Sized> ReadSession for SyncSession<'_, R> {
    unsafe fn submit(
        &mut self,
        id: u64,
        path: &Path,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<()> {
        self.queued.try_reserve(1).map_err(|_| {
            Error::OutOfMemory(format!("read queue of {} entries", self.queued.len() + 1))
        })?;
        self.queued.push((id, path.to_path_buf(), offset, dst, len));
        Ok(())
    }

    fn wait(&mut self) -> Result<Vec<Completion>> {
        let queued = std::mem::take(&mut self.queued);
        let mut reqs: Vec<ReadReq<'_>> = queued
            .iter()
            .map(|(_, path, offset, dst, len)| {
                // SAFETY: the `submit` contract keeps `dst..dst + len` ours until returned.
                let buf = unsafe { std::slice::from_raw_parts_mut(*dst, *len) };
                ReadReq::new(path, *offset, buf)
            })
            .collect();
        read_fully_impl(self.reader, &mut reqs)?;
        Ok(queued.iter().map(|q| (q.0, Ok(q.4))).collect())
    }

    fn pending(&self) -> usize {
        self.queued.len()
    }
}

/// True for errors worth retrying: EAGAIN / EWOULDBLOCK and EINTR.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted))
}

/// Drives `reader` until every request is complete: resumes short reads, retries transient
/// errors (EAGAIN, EINTR) a bounded number of times, and reports a request that stops making
/// progress (the file ends early) as [`Error::Corrupt`] naming the file and offset.
pub fn read_fully(reader: &dyn BlockReader, reqs: &mut [ReadReq<'_>]) -> Result<()> {
    read_fully_impl(reader, reqs)
}

/// [`read_fully`] for any reader type (the default session calls it on `Self`).
fn read_fully_impl<R: BlockReader + ?Sized>(reader: &R, reqs: &mut [ReadReq<'_>]) -> Result<()> {
    let mut transient = 0u32;
    loop {
        if reqs.iter().all(ReadReq::is_done) {
            return Ok(());
        }
        let before: Vec<usize> = reqs.iter().map(|r| r.filled).collect();
        match reader.read_batch(reqs) {
            Ok(()) => {}
            Err(e) if is_transient(&e) && transient < TRANSIENT_RETRIES => {
                transient += 1;
                std::thread::sleep(std::time::Duration::from_millis(u64::from(transient)));
                continue;
            }
            Err(e) => return Err(e),
        }
        for (r, &b) in reqs.iter().zip(&before) {
            if !r.is_done() && r.filled == b {
                return Err(truncated(r.path, r.offset, r.buf.len(), r.filled));
            }
        }
    }
}

/// The error for a read of `want` bytes at `offset` of `path` that met the end of the file
/// after `got` bytes.
pub(crate) fn truncated(path: &Path, offset: u64, want: usize, got: usize) -> Error {
    Error::corrupt(
        path,
        format!(
            "file ends at offset {}: wanted {want} bytes at offset {offset} (truncated file?)",
            offset + got as u64,
        ),
    )
}

/// How to build a reader with [`open_reader`].
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    /// Try io_uring first (falls back to pread when the kernel refuses it).
    pub io_uring: bool,
    /// Use O_DIRECT where the file system allows it.
    pub direct: bool,
    /// io_uring submission queue depth (at least 32 recommended; 1..=4096).
    pub queue_depth: u32,
    /// Size of each read submitted to the kernel, a multiple of 4 KiB (default 1 MiB).
    pub io_size: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            io_uring: true,
            direct: true,
            queue_depth: 64,
            io_size: 1 << 20,
        }
    }
}

/// Builds the best reader available: io_uring with O_DIRECT when the kernel allows it, otherwise
/// (said once on stderr) a buffered pread reader. The environment variable
/// `AGENTCOMPRESS_IO=pread` forces the fallback.
pub fn open_reader(cfg: &ReaderConfig) -> Result<Arc<dyn BlockReader>> {
    let forced = std::env::var("AGENTCOMPRESS_IO").is_ok_and(|v| v == "pread");
    if cfg.io_uring && !forced {
        let ucfg = UringConfig {
            queue_depth: cfg.queue_depth,
            io_size: cfg.io_size,
            direct: cfg.direct,
        };
        match UringReader::new(ucfg) {
            Ok(r) => return Ok(Arc::new(r)),
            Err(Error::Io { source, .. }) => {
                warn_once("uring-setup", || {
                    format!("io_uring unavailable ({source}); falling back to pread with buffered files")
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Arc::new(PreadReader::new(false, cfg.io_size)?))
}

/// Shared by both readers: the table of open files for a reader that wants O_DIRECT or not.
pub(crate) fn file_table(direct: bool) -> FileTable {
    FileTable::new(direct)
}

/// Validates an `io_size`: a non-zero multiple of 4 KiB.
pub(crate) fn check_io_size(io_size: usize) -> Result<()> {
    if io_size == 0 || io_size % super::ALIGN != 0 {
        return Err(Error::invalid(format!(
            "io size {io_size} must be a non-zero multiple of 4096"
        )));
    }
    Ok(())
}

/// Length of the O_DIRECT-able prefix of `buf[filled..]` at file offset `offset + filled`:
/// whole 4 KiB blocks when both the offset and the address are aligned, else 0.
pub(crate) fn direct_span(offset: u64, buf: &[u8], filled: usize) -> usize {
    let rest = &buf[filled..];
    let off = offset + filled as u64;
    if off % super::ALIGN as u64 == 0 && (rest.as_ptr() as usize) % super::ALIGN == 0 {
        rest.len() / super::ALIGN * super::ALIGN
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;

    #[test]
    fn direct_span_needs_aligned_offset_and_address() {
        let buf = AlignedBuf::zeroed(3 * 4096 + 100).unwrap();
        assert_eq!(direct_span(0, &buf, 0), 3 * 4096, "whole blocks only");
        assert_eq!(direct_span(4096, &buf, 4096), 2 * 4096);
        assert_eq!(direct_span(1, &buf, 0), 0, "unaligned file offset");
        assert_eq!(direct_span(4095, &buf, 1), 0, "unaligned address");
        assert_eq!(direct_span(0, &buf, 3 * 4096), 0, "tail under one block");
    }

    #[test]
    fn io_size_must_be_whole_blocks() {
        assert!(check_io_size(4096).is_ok());
        assert!(check_io_size(0).is_err());
        assert!(check_io_size(4097).is_err());
    }

    #[test]
    fn open_reader_without_io_uring_is_pread() {
        let cfg = ReaderConfig {
            io_uring: false,
            ..Default::default()
        };
        assert_eq!(open_reader(&cfg).unwrap().kind(), ReaderKind::Pread);
    }

    #[test]
    fn transient_errors_are_recognised() {
        let eagain = Error::io("f", std::io::Error::from(std::io::ErrorKind::WouldBlock));
        let eio = Error::io("f", std::io::Error::from_raw_os_error(5));
        assert!(is_transient(&eagain));
        assert!(!is_transient(&eio));
        assert!(!is_transient(&Error::invalid("x")));
    }
}
