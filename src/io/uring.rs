//! `UringReader`: reads through io_uring with O_DIRECT, keeping up to `queue_depth` reads of
//! `io_size` bytes in flight, resuming short reads and retrying EAGAIN.
//!
//! Reads go through sessions ([`ReadSession`]): a caller streams reads in and completions out
//! without the queue draining between groups. The reader's main ring has a table of registered
//! files (no per-read file lookup) and a table of registered buffers: staging buffers offered
//! through [`BlockReader::register_buffer`] are read with `READ_FIXED` (no per-read page
//! pinning). A session opened while the main ring is busy (two loads at once) gets a ring of
//! its own, without the tables.

use super::files::{read_error, warn_once, FileTable, OpenFile};
use super::pread::PreadReader;
use super::reader::{
    check_io_size, direct_span, file_table, AtomicCounters, BlockReader, Completion, ReadReq,
    ReadSession, ReaderCounters, ReaderKind,
};
use super::ALIGN;
use crate::{Error, Result};
use io_uring::{opcode, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// Retries of one read that keeps completing with EAGAIN / EINTR before it is an error.
const MAX_RETRIES: u32 = 16;

/// Slots of the main ring's registered-file table.
const FILE_SLOTS: u32 = 64;

/// Slots of the main ring's registered-buffer table.
const BUFFER_SLOTS: u32 = 64;

/// Settings of a [`UringReader`].
#[derive(Clone, Debug)]
pub struct UringConfig {
    /// Ring size and most reads in flight (1..=4096).
    pub queue_depth: u32,
    /// Bytes per submitted read, a multiple of 4 KiB, at most 1 GiB.
    pub io_size: usize,
    /// Use O_DIRECT where the file system allows it.
    pub direct: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        let r = super::ReaderConfig::default();
        UringConfig {
            queue_depth: r.queue_depth,
            io_size: r.io_size,
            direct: true,
        }
    }
}

/// A memory range offered as a read destination; `gen` tells a later offer at the same
/// address apart from an earlier, withdrawn one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    addr: usize,
    len: usize,
    gen: u64,
}

impl Region {
    fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let p = ptr as usize;
        p >= self.addr && p.saturating_add(len) <= self.addr + self.len
    }
}

/// The buffers currently offered (the truth the kernel's table is synced to).
#[derive(Default)]
struct Offered {
    live: Vec<Region>,
    next_gen: u64,
}

/// The registered-file table of a ring: slot `i` holds a descriptor of `files[i]`.
struct FixedFiles {
    slots: Vec<Option<(Arc<OpenFile>, bool)>>,
    next: usize,
}

impl FixedFiles {
    /// The slot of `file`'s direct or buffered descriptor, registering it (round robin over
    /// the slots) on first use; `None` when registration fails.
    fn slot(
        &mut self,
        ring: &IoUring,
        file: &Arc<OpenFile>,
        direct: bool,
        fd: RawFd,
    ) -> Option<u32> {
        let hit = self
            .slots
            .iter()
            .position(|s| matches!(s, Some((f, d)) if Arc::ptr_eq(f, file) && *d == direct));
        if let Some(i) = hit {
            return Some(i as u32);
        }
        let i = self.next;
        self.next = (self.next + 1) % self.slots.len();
        // Replacing a slot is safe with reads of the old file in flight: the kernel keeps
        // the old file referenced until they complete.
        match ring.submitter().register_files_update(i as u32, &[fd]) {
            Ok(_) => {
                self.slots[i] = Some((file.clone(), direct));
                Some(i as u32)
            }
            Err(_) => {
                self.slots[i] = None;
                None
            }
        }
    }
}

/// The registered-buffer table of a ring.
struct FixedBufs {
    slots: Vec<Option<Region>>,
}

impl FixedBufs {
    /// Makes the table hold exactly the offered regions (as far as slots go): withdrawn ones
    /// are cleared, new ones registered.
    fn sync(&mut self, ring: &IoUring, live: &[Region]) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(r) = *s {
                if !live.contains(&r) {
                    let empty = libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    };
                    // SAFETY: an empty entry clears the slot; nothing is read into it.
                    let _ = unsafe {
                        ring.submitter()
                            .register_buffers_update(i as u32, &[empty], None)
                    };
                    *s = None;
                }
            }
        }
        for r in live {
            if self.slots.contains(&Some(*r)) {
                continue;
            }
            let Some(i) = self.slots.iter().position(Option::is_none) else {
                return;
            };
            let iov = libc::iovec {
                iov_base: r.addr as *mut libc::c_void,
                iov_len: r.len,
            };
            // SAFETY: the region is offered, so its owner keeps it allocated until it is
            // withdrawn; a withdrawn region is cleared from the table by the next sync, before
            // any session looks it up.
            match unsafe {
                ring.submitter()
                    .register_buffers_update(i as u32, &[iov], None)
            } {
                Ok(()) => self.slots[i] = Some(*r),
                Err(e) => {
                    warn_once("uring-fixed-buffer", || {
                        format!("io_uring buffer registration failed ({e}); reading unregistered")
                    });
                    return;
                }
            }
        }
    }

    /// The slot holding `ptr..ptr + len` whole.
    fn find(&self, ptr: *const u8, len: usize) -> Option<u16> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|r| r.contains(ptr, len)))
            .map(|i| i as u16)
    }
}

/// A ring and, for the main ring, its tables.
struct Ring {
    ring: IoUring,
    files: Option<FixedFiles>,
    bufs: Option<FixedBufs>,
}

impl Ring {
    fn new(queue_depth: u32) -> Result<Self> {
        let ring = IoUring::new(queue_depth).map_err(|e| Error::io("io_uring_setup", e))?;
        Ok(Ring {
            ring,
            files: None,
            bufs: None,
        })
    }

    /// Sets up the registered-file and registered-buffer tables (sparse); a kernel that
    /// refuses either just reads without it.
    fn with_tables(mut self) -> Self {
        let sub = self.ring.submitter();
        if sub.register_files_sparse(FILE_SLOTS).is_ok() {
            self.files = Some(FixedFiles {
                slots: vec![None; FILE_SLOTS as usize],
                next: 0,
            });
        }
        if sub.register_buffers_sparse(BUFFER_SLOTS).is_ok() {
            self.bufs = Some(FixedBufs {
                slots: vec![None; BUFFER_SLOTS as usize],
            });
        }
        self
    }
}

/// io_uring reader: a main ring with registered files and buffers, shared by sessions under a
/// mutex; a session finding it busy opens a plain ring of its own.
pub struct UringReader {
    main: Mutex<Ring>,
    cfg: UringConfig,
    files: FileTable,
    counters: AtomicCounters,
    offered: Mutex<Offered>,
    /// Whether the main ring has a registered-file and a registered-buffer table.
    tables: (bool, bool),
    /// Reads submitted through a registered file and into a registered buffer.
    fixed: [AtomicU64; 2],
    /// Set when the kernel rejected the read opcode at run time; pread serves from then on.
    unsupported: AtomicBool,
    fallback: PreadReader,
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
        let ring = Ring::new(cfg.queue_depth)?;
        let mut probe = io_uring::Probe::new();
        ring.ring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| Error::io("io_uring_register(PROBE)", e))?;
        if !probe.is_supported(opcode::Read::CODE) {
            return Err(Error::io(
                "io_uring",
                std::io::Error::from_raw_os_error(libc::ENOSYS),
            ));
        }
        let mut ring = ring.with_tables();
        if !probe.is_supported(opcode::ReadFixed::CODE) {
            ring.bufs = None;
        }
        Ok(UringReader {
            tables: (ring.files.is_some(), ring.bufs.is_some()),
            fixed: Default::default(),
            main: Mutex::new(ring),
            files: file_table(cfg.direct),
            fallback: PreadReader::new(false, cfg.io_size)?,
            cfg,
            counters: AtomicCounters::default(),
            offered: Mutex::new(Offered::default()),
            unsupported: AtomicBool::new(false),
        })
    }

    /// Whether the main ring has registered-file and registered-buffer tables.
    pub fn registered_tables(&self) -> (bool, bool) {
        self.tables
    }

    /// Reads submitted so far through a registered file and into a registered buffer.
    pub fn fixed_reads(&self) -> (u64, u64) {
        (
            self.fixed[0].load(Ordering::Relaxed),
            self.fixed[1].load(Ordering::Relaxed),
        )
    }

    /// A session on the main ring (its tables synced to the offered buffers), or on a ring of
    /// its own while the main one is busy.
    fn open_session(&self) -> Result<UringSession<'_>> {
        let ring = match self.main.try_lock() {
            Ok(mut g) => {
                let Ring { ring, bufs, .. } = &mut *g;
                if let Some(b) = bufs.as_mut() {
                    let live = self
                        .offered
                        .lock()
                        .map(|o| o.live.clone())
                        .unwrap_or_default();
                    b.sync(ring, &live);
                }
                RingHandle::Main(g)
            }
            Err(TryLockError::WouldBlock) => {
                RingHandle::Own(Box::new(Ring::new(self.cfg.queue_depth)?))
            }
            Err(TryLockError::Poisoned(_)) => {
                return Err(Error::Internal("io_uring lock poisoned".into()))
            }
        };
        Ok(UringSession {
            reader: self,
            ring,
            reqs: HashMap::new(),
            subs: Vec::new(),
            free_subs: Vec::new(),
            queue: VecDeque::new(),
            inflight: 0,
            done: Vec::new(),
        })
    }
}

/// The ring a session uses.
enum RingHandle<'a> {
    Main(MutexGuard<'a, Ring>),
    Own(Box<Ring>),
}

impl RingHandle<'_> {
    fn get(&mut self) -> &mut Ring {
        match self {
            RingHandle::Main(g) => g,
            RingHandle::Own(r) => r,
        }
    }
}

/// A request of a session: `want` bytes of `path` at `offset`, split into subs.
struct Req {
    path: PathBuf,
    offset: u64,
    want: usize,
    subs_left: usize,
    eof: Option<u64>,
    err: Option<Error>,
}

/// One read of at most `io_size` bytes, queued or in flight: a piece of a request.
struct Sub {
    req: u64,
    file: Arc<OpenFile>,
    direct: bool,
    off: u64,
    ptr: *mut u8,
    len: usize,
    retries: u32,
    fixed_buf: Option<u16>,
}

/// A [`ReadSession`] on an io_uring ring.
struct UringSession<'a> {
    reader: &'a UringReader,
    ring: RingHandle<'a>,
    reqs: HashMap<u64, Req>,
    subs: Vec<Option<Sub>>,
    free_subs: Vec<usize>,
    queue: VecDeque<usize>,
    inflight: usize,
    done: Vec<Completion>,
}

impl UringSession<'_> {
    fn add_sub(&mut self, s: Sub) -> usize {
        match self.free_subs.pop() {
            Some(i) => {
                self.subs[i] = Some(s);
                i
            }
            None => {
                self.subs.push(Some(s));
                self.subs.len() - 1
            }
        }
    }

    /// Pushes queued subs while the ring has room, then tells the kernel (without waiting).
    fn fill(&mut self) -> Result<()> {
        let qd = self.reader.cfg.queue_depth as usize;
        let mut pushed = false;
        while self.inflight < qd {
            let Some(i) = self.queue.pop_front() else {
                break;
            };
            let ring = self.ring.get();
            let Some(s) = self.subs[i].as_ref() else {
                continue;
            };
            let raw = match (s.direct, s.file.direct()) {
                (true, Some(f)) => f.as_raw_fd(),
                _ => s.file.buffered.as_raw_fd(),
            };
            let direct = s.direct && s.file.direct().is_some();
            let slot = ring
                .files
                .as_mut()
                .and_then(|t| t.slot(&ring.ring, &s.file, direct, raw));
            let fixed_buf = s.fixed_buf;
            let entry = match (fixed_buf, slot) {
                (Some(b), Some(f)) => {
                    opcode::ReadFixed::new(types::Fixed(f), s.ptr, s.len as u32, b)
                        .offset(s.off)
                        .build()
                }
                (Some(b), None) => opcode::ReadFixed::new(types::Fd(raw), s.ptr, s.len as u32, b)
                    .offset(s.off)
                    .build(),
                (None, Some(f)) => opcode::Read::new(types::Fixed(f), s.ptr, s.len as u32)
                    .offset(s.off)
                    .build(),
                (None, None) => opcode::Read::new(types::Fd(raw), s.ptr, s.len as u32)
                    .offset(s.off)
                    .build(),
            }
            .user_data(i as u64);
            // SAFETY: the destination outlives the read: the submitter keeps it until the read
            // is returned, and dropping the session waits for every read in flight.
            if unsafe { ring.ring.submission().push(&entry) }.is_err() {
                self.queue.push_front(i);
                break;
            }
            self.inflight += 1;
            pushed = true;
            let fixed = &self.reader.fixed;
            if slot.is_some() {
                fixed[0].fetch_add(1, Ordering::Relaxed);
            }
            if fixed_buf.is_some() {
                fixed[1].fetch_add(1, Ordering::Relaxed);
            }
        }
        if pushed {
            submit(&self.ring.get().ring, 0)?;
        }
        Ok(())
    }

    /// Waits for at least one completion and handles what completed.
    fn reap(&mut self) -> Result<()> {
        submit(&self.ring.get().ring, 1)?;
        let cqes: Vec<(u64, i32)> = self
            .ring
            .get()
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in cqes {
            self.inflight -= 1;
            self.complete(ud as usize, res);
        }
        Ok(())
    }

    /// Handles the result of sub `i`.
    fn complete(&mut self, i: usize, res: i32) {
        let Some(s) = self.subs[i].as_mut() else {
            return;
        };
        let mut finished = true;
        if res > 0 {
            let n = res as usize;
            self.reader.counters.add(s.direct, n);
            s.off += n as u64;
            // SAFETY: `n <= len`, so the pointer stays within the destination.
            s.ptr = unsafe { s.ptr.add(n) };
            s.len -= n;
            if s.len > 0 {
                // Short read: resume; an unaligned remainder continues buffered.
                if s.direct && (s.off % ALIGN as u64 != 0 || s.len % ALIGN != 0) {
                    s.direct = false;
                }
                self.queue.push_front(i);
                finished = false;
            }
        } else if res == 0 {
            if let Some(r) = self.reqs.get_mut(&s.req) {
                r.eof = Some(r.eof.map_or(s.off, |x| x.min(s.off)));
            }
        } else {
            let errno = -res;
            match errno {
                libc::EAGAIN | libc::EINTR if s.retries < MAX_RETRIES => {
                    s.retries += 1;
                    self.queue.push_back(i);
                    finished = false;
                }
                libc::EINVAL if s.direct => {
                    if let Some(r) = self.reqs.get(&s.req) {
                        s.file.refuse_direct(&r.path);
                    }
                    s.direct = false;
                    self.queue.push_front(i);
                    finished = false;
                }
                libc::EFAULT if s.fixed_buf.is_some() => {
                    s.fixed_buf = None;
                    self.queue.push_front(i);
                    finished = false;
                }
                libc::ENOSYS | libc::EOPNOTSUPP => {
                    self.reader.unsupported.store(true, Ordering::Relaxed);
                    warn_once("uring-op-unsupported", || {
                        "io_uring read rejected by the kernel (ENOSYS/EOPNOTSUPP); falling back \
                         to pread with buffered files"
                            .to_string()
                    });
                    let (path, off, ptr, len) = match self.reqs.get(&s.req) {
                        Some(r) => (r.path.clone(), s.off, s.ptr, s.len),
                        None => return,
                    };
                    // SAFETY: the rest of this sub's destination, still ours (see `fill`).
                    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
                    let mut one = [ReadReq::new(&path, off, buf)];
                    match self.reader.fallback.read_batch(&mut one) {
                        Ok(()) if one[0].is_done() => {}
                        Ok(()) => {
                            let end = off + one[0].filled as u64;
                            if let Some(r) = self.reqs.get_mut(&s.req) {
                                r.eof = Some(r.eof.map_or(end, |x| x.min(end)));
                            }
                        }
                        Err(e) => {
                            if let Some(r) = self.reqs.get_mut(&s.req) {
                                r.err.get_or_insert(e);
                            }
                        }
                    }
                }
                _ => {
                    if let Some(r) = self.reqs.get_mut(&s.req) {
                        let e = read_error(
                            &r.path,
                            s.off,
                            s.len,
                            std::io::Error::from_raw_os_error(errno),
                        );
                        r.err.get_or_insert(e);
                    }
                }
            }
        }
        if !finished {
            return;
        }
        let req = s.req;
        self.subs[i] = None;
        self.free_subs.push(i);
        let Some(r) = self.reqs.get_mut(&req) else {
            return;
        };
        r.subs_left -= 1;
        if r.subs_left > 0 {
            return;
        }
        let Some(r) = self.reqs.remove(&req) else {
            return;
        };
        let out = match r.err {
            Some(e) => Err(e),
            None => Ok(match r.eof {
                Some(end) => (end.saturating_sub(r.offset) as usize).min(r.want),
                None => r.want,
            }),
        };
        self.done.push((req, out));
    }
}

impl ReadSession for UringSession<'_> {
    unsafe fn submit(
        &mut self,
        id: u64,
        path: &Path,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<()> {
        if self.reqs.contains_key(&id) {
            return Err(Error::Internal(format!("read {id} submitted twice")));
        }
        if len == 0 {
            self.done.push((id, Ok(0)));
            return Ok(());
        }
        offset.checked_add(len as u64).ok_or_else(|| {
            Error::invalid(format!("read of {len} bytes at offset {offset} overflows"))
        })?;
        let file = self.reader.files.get(path)?;
        let fixed_buf = match &mut self.ring {
            RingHandle::Main(g) => g.bufs.as_ref().and_then(|b| b.find(dst, len)),
            RingHandle::Own(_) => None,
        };
        // SAFETY: the caller guarantees `dst..dst + len` is valid for the read.
        let whole = unsafe { std::slice::from_raw_parts(dst, len) };
        let io = self.reader.cfg.io_size;
        let mut pos = 0usize;
        let mut n = 0usize;
        while pos < len {
            let span = direct_span(offset, whole, pos);
            let direct = file.direct().is_some() && span > 0;
            let piece = if direct { span } else { len - pos }.min(io);
            let i = self.add_sub(Sub {
                req: id,
                file: file.clone(),
                direct,
                off: offset + pos as u64,
                // SAFETY: `pos < len`, so the pointer stays within the destination.
                ptr: unsafe { dst.add(pos) },
                len: piece,
                retries: 0,
                fixed_buf,
            });
            self.queue.push_back(i);
            pos += piece;
            n += 1;
        }
        self.reqs.insert(
            id,
            Req {
                path: path.to_path_buf(),
                offset,
                want: len,
                subs_left: n,
                eof: None,
                err: None,
            },
        );
        self.fill()
    }

    fn wait(&mut self) -> Result<Vec<Completion>> {
        loop {
            self.fill()?;
            if !self.done.is_empty() || self.inflight == 0 {
                return Ok(std::mem::take(&mut self.done));
            }
            self.reap()?;
        }
    }

    fn pending(&self) -> usize {
        self.reqs.len() + self.done.len()
    }

    fn synchronous(&self) -> bool {
        false
    }
}

impl Drop for UringSession<'_> {
    fn drop(&mut self) {
        self.queue.clear();
        while self.inflight > 0 {
            if self.reap().is_err() {
                // `submit` aborts on unrecoverable errors; a bounded retry failure lands here.
                eprintln!("agentcompress io: cannot wait for io_uring reads in flight");
                std::process::abort();
            }
        }
    }
}

/// Submits queued entries and waits for `want` completions; transient errors retry.
fn submit(ring: &IoUring, want: usize) -> Result<()> {
    let mut tries = 0u32;
    loop {
        match ring.submit_and_wait(want) {
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
        let mut s = self.session();
        for (i, r) in reqs.iter_mut().enumerate().filter(|(_, r)| !r.is_done()) {
            let rest = &mut r.buf[r.filled..];
            // SAFETY: `rest` is borrowed from `reqs` for this whole function, and the session
            // is dropped (waiting for its reads) before the function returns.
            unsafe {
                s.submit(
                    i as u64,
                    r.path,
                    r.offset + r.filled as u64,
                    rest.as_mut_ptr(),
                    rest.len(),
                )
            }?;
        }
        let mut first_err = None;
        while s.pending() > 0 {
            for (id, res) in s.wait()? {
                match res {
                    Ok(n) => reqs[id as usize].filled += n,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        drop(s);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn session(&self) -> Box<dyn ReadSession + '_> {
        if self.unsupported.load(Ordering::Relaxed) {
            return self.fallback.session();
        }
        match self.open_session() {
            Ok(s) => Box::new(s),
            Err(e) => {
                warn_once("uring-session", || {
                    format!("io_uring ring setup failed ({e}); reading with pread")
                });
                self.fallback.session()
            }
        }
    }

    unsafe fn register_buffer(&self, ptr: *mut u8, len: usize) -> bool {
        if len == 0 || !self.tables.1 {
            return false;
        }
        let Ok(mut o) = self.offered.lock() else {
            return false;
        };
        let gen = o.next_gen;
        o.next_gen += 1;
        o.live.retain(|r| r.addr != ptr as usize);
        o.live.push(Region {
            addr: ptr as usize,
            len,
            gen,
        });
        true
    }

    fn forget_buffer(&self, ptr: *mut u8) {
        if let Ok(mut o) = self.offered.lock() {
            o.live.retain(|r| r.addr != ptr as usize);
        }
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
