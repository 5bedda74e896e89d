//! `PreadReader`: synchronous positional reads, the fallback where io_uring is unavailable and
//! (with O_DIRECT) the plain sequential floor the benchmark compares against.

use super::files::{read_error, FileTable};
use super::reader::{
    check_io_size, direct_span, file_table, AtomicCounters, BlockReader, ReadReq, ReaderCounters,
    ReaderKind,
};
use crate::Result;
use std::os::unix::fs::FileExt;

/// Reads with `pread(2)`, one request after the other, `io_size` bytes per call.
pub struct PreadReader {
    files: FileTable,
    io_size: usize,
    counters: AtomicCounters,
}

impl PreadReader {
    /// A reader that uses O_DIRECT where possible when `direct`, buffered reads otherwise.
    pub fn new(direct: bool, io_size: usize) -> Result<Self> {
        check_io_size(io_size)?;
        Ok(PreadReader {
            files: file_table(direct),
            io_size,
            counters: AtomicCounters::default(),
        })
    }

    /// Reads one request until done, end of file, or error.
    fn read_one(&self, req: &mut ReadReq<'_>) -> Result<()> {
        let file = self.files.get(req.path)?;
        while !req.is_done() {
            let span = direct_span(req.offset, req.buf, req.filled);
            let (fd, direct, len) = match file.direct() {
                Some(fd) if span > 0 => (fd, true, span.min(self.io_size)),
                _ => (
                    &file.buffered,
                    false,
                    (req.buf.len() - req.filled).min(self.io_size),
                ),
            };
            let off = req.offset + req.filled as u64;
            let dst = &mut req.buf[req.filled..req.filled + len];
            match fd.read_at(dst, off) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.counters.add(direct, n);
                    req.filled += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    file.refuse_direct(req.path)
                }
                Err(e) => return Err(read_error(req.path, off, len, e)),
            }
        }
        Ok(())
    }
}

impl BlockReader for PreadReader {
    fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> Result<()> {
        for r in reqs.iter_mut().filter(|r| !r.is_done()) {
            self.read_one(r)?;
        }
        Ok(())
    }

    fn kind(&self) -> ReaderKind {
        ReaderKind::Pread
    }

    fn counters(&self) -> ReaderCounters {
        self.counters.get()
    }
}
