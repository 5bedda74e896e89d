//! `UringReader`: reads through an io_uring ring with O_DIRECT, keeping up to `queue_depth`
//! reads of `io_size` bytes in flight, resuming short reads and retrying EAGAIN.

use super::files::{read_error, warn_once, FileTable, OpenFile};
use super::pread::PreadReader;
use super::reader::{
    check_io_size, direct_span, file_table, AtomicCounters, BlockReader, ReadReq, ReaderCounters,
    ReaderKind,
};
use super::ALIGN;
use crate::{Error, Result};
use io_uring::{opcode, types, IoUring};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Retries of one read that keeps completing with EAGAIN / EINTR before it is an error.
const MAX_RETRIES: u32 = 16;

/// Settings of a [`UringReader`].
#[derive(Clone, Debug)]
pub struct UringConfig {
    /// Ring size and most reads in flight (1..=4096; 32 or more for NVMe).
    pub queue_depth: u32,
    /// Bytes per submitted read, a multiple of 4 KiB, at most 1 GiB (default 1 MiB).
    pub io_size: usize,
    /// Use O_DIRECT where the file system allows it.
    pub direct: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            queue_depth: 64,
            io_size: 1 << 20,
            direct: true,
        }
    }
}

/// io_uring reader. One ring, shared by callers under a mutex (the disk is the bottleneck).
pub struct UringReader {
    ring: Mutex<IoUring>,
    cfg: UringConfig,
    files: FileTable,
    counters: AtomicCounters,
    /// Set when the kernel rejected the read opcode at run time; pread serves from then on.
    unsupported: AtomicBool,
    fallback: PreadReader,
}

/// One read in flight or queued: a piece of a request.
struct Sub {
    req: usize,
    file: Arc<OpenFile>,
    direct: bool,
    off: u64,
    ptr: *mut u8,
    len: usize,
    retries: u32,
}

impl UringReader {
    /// Sets up a ring of `cfg.queue_depth` entries. Kernels that refuse io_uring (ENOSYS,
    /// EPERM under seccomp, no READ opcode) give [`Error::Io`]; [`super::open_reader`] then
    /// falls back to pread.
    pub fn new(cfg: UringConfig) -> Result<Self> {
        check_io_size(cfg.io_size)?;
        if cfg.io_size > 1 << 30 {
            return Err(Error::invalid(format!(
                "io size {} exceeds 1 GiB",
                cfg.io_size
            )));
        }
        if !(1..=4096).contains(&cfg.queue_depth) {
            return Err(Error::invalid(format!(
                "queue depth {} outside 1..=4096",
                cfg.queue_depth
            )));
        }
        let ring = IoUring::new(cfg.queue_depth).map_err(|e| Error::io("io_uring_setup", e))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| Error::io("io_uring_register(PROBE)", e))?;
        if !probe.is_supported(opcode::Read::CODE) {
            return Err(Error::io(
                "io_uring",
                std::io::Error::from_raw_os_error(libc::ENOSYS),
            ));
        }
        Ok(UringReader {
            ring: Mutex::new(ring),
            files: file_table(cfg.direct),
            fallback: PreadReader::new(false, cfg.io_size)?,
            cfg,
            counters: AtomicCounters::default(),
            unsupported: AtomicBool::new(false),
        })
    }

    /// Splits the pending part of every request into reads of at most `io_size` bytes.
    fn plan(&self, reqs: &mut [ReadReq<'_>]) -> Result<Vec<Sub>> {
        let mut subs = Vec::new();
        for (i, r) in reqs.iter_mut().enumerate().filter(|(_, r)| !r.is_done()) {
            let file = self.files.get(r.path)?;
            let mut pos = r.filled;
            while pos < r.buf.len() {
                let span = direct_span(r.offset, r.buf, pos);
                let direct = file.direct().is_some() && span > 0;
                let len = if direct { span } else { r.buf.len() - pos }.min(self.cfg.io_size);
                subs.push(Sub {
                    req: i,
                    file: file.clone(),
                    direct,
                    off: r.offset + pos as u64,
                    // SAFETY: `pos < len` of the buffer, so the pointer stays in bounds.
                    ptr: unsafe { r.buf.as_mut_ptr().add(pos) },
                    len,
                    retries: 0,
                });
                pos += len;
            }
        }
        Ok(subs)
    }

    /// Runs every planned read to completion (or end of file / error). Returns, per request,
    /// the lowest file offset where end of file was met, and whether the kernel rejected the op.
    fn run(&self, subs: &mut [Sub], paths: &[&Path]) -> Result<(Vec<Option<u64>>, bool)> {
        let mut ring = self
            .ring
            .lock()
            .map_err(|_| Error::Internal("io_uring lock poisoned".into()))?;
        let mut queue: VecDeque<usize> = (0..subs.len()).collect();
        let mut eof: Vec<Option<u64>> = vec![None; paths.len()];
        let mut inflight = 0usize;
        let mut first_err: Option<Error> = None;
        let mut unsupported = false;
        let mut done: Vec<(u64, i32)> = Vec::new();
        let qd = self.cfg.queue_depth as usize;
        loop {
            while first_err.is_none() && !unsupported && inflight < qd {
                let Some(i) = queue.pop_front() else { break };
                let s = &subs[i];
                let fd = match (s.direct, s.file.direct()) {
                    (true, Some(f)) => f.as_raw_fd(),
                    _ => s.file.buffered.as_raw_fd(),
                };
                let entry = opcode::Read::new(types::Fd(fd), s.ptr, s.len as u32)
                    .offset(s.off)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the buffer behind `ptr` outlives the read: this function does not
                // return before every submitted read has completed.
                if unsafe { ring.submission().push(&entry) }.is_err() {
                    queue.push_front(i);
                    break;
                }
                inflight += 1;
            }
            if inflight == 0 {
                break;
            }
            submit_wait(&ring)?;
            done.clear();
            done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for &(ud, res) in &done {
                inflight -= 1;
                let i = ud as usize;
                let s = &mut subs[i];
                if res > 0 {
                    let n = res as usize;
                    self.counters.add(s.direct, n);
                    s.off += n as u64;
                    // SAFETY: `n <= len`, so the pointer stays within the request buffer.
                    s.ptr = unsafe { s.ptr.add(n) };
                    s.len -= n;
                    if s.len > 0 {
                        // Short read: resume; an unaligned remainder continues buffered.
                        if s.direct && (s.off % ALIGN as u64 != 0 || s.len % ALIGN != 0) {
                            s.direct = false;
                        }
                        queue.push_front(i);
                    }
                } else if res == 0 {
                    let e = &mut eof[s.req];
                    *e = Some(e.map_or(s.off, |x| x.min(s.off)));
                } else {
                    let errno = -res;
                    match errno {
                        libc::EAGAIN | libc::EINTR if s.retries < MAX_RETRIES => {
                            s.retries += 1;
                            queue.push_back(i);
                        }
                        libc::EINVAL if s.direct => {
                            s.file.refuse_direct(paths[s.req]);
                            s.direct = false;
                            queue.push_front(i);
                        }
                        libc::ENOSYS | libc::EOPNOTSUPP => unsupported = true,
                        _ => {
                            if first_err.is_none() {
                                first_err = Some(read_error(
                                    paths[s.req],
                                    s.off,
                                    s.len,
                                    std::io::Error::from_raw_os_error(errno),
                                ));
                            }
                        }
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((eof, unsupported)),
        }
    }
}

/// Submits queued entries and waits for at least one completion; transient errors retry.
fn submit_wait(ring: &IoUring) -> Result<()> {
    let mut tries = 0u32;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) && tries < 1000 =>
            {
                tries += 1;
                std::thread::yield_now();
            }
            Err(e) => {
                // Reads may still be in flight into caller buffers: returning would be unsound.
                eprintln!("agentcompress io: io_uring_enter failed with reads in flight: {e}");
                std::process::abort();
            }
        }
    }
}

impl BlockReader for UringReader {
    fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> Result<()> {
        if self.unsupported.load(Ordering::Relaxed) {
            return self.fallback.read_batch(reqs);
        }
        let mut subs = self.plan(reqs)?;
        if subs.is_empty() {
            return Ok(());
        }
        let paths: Vec<&Path> = reqs.iter().map(|r| r.path).collect();
        let (eof, unsupported) = self.run(&mut subs, &paths)?;
        if unsupported {
            self.unsupported.store(true, Ordering::Relaxed);
            warn_once("uring-op-unsupported", || {
                "io_uring read rejected by the kernel (ENOSYS/EOPNOTSUPP); falling back to pread \
                 with buffered files"
                    .to_string()
            });
            return self.fallback.read_batch(reqs);
        }
        for (r, e) in reqs.iter_mut().zip(eof) {
            if r.is_done() {
                continue;
            }
            r.filled = match e {
                Some(end) => (end.saturating_sub(r.offset) as usize).clamp(r.filled, r.buf.len()),
                None => r.buf.len(),
            };
        }
        Ok(())
    }

    fn kind(&self) -> ReaderKind {
        if self.unsupported.load(Ordering::Relaxed) {
            ReaderKind::Pread
        } else {
            ReaderKind::IoUring
        }
    }

    fn counters(&self) -> ReaderCounters {
        let mut c = self.counters.get();
        c.buffered_bytes += self.fallback.counters().buffered_bytes;
        c
    }
}
