//! Helpers shared by the io and pool integration tests: seeded test files on a disk-backed
//! directory (under `target/`, so O_DIRECT works where /tmp is tmpfs), and readers that
//! inject faults or count what they read.
#![allow(dead_code)]

use agentcompress::io::{BlockReader, ReadReq, ReaderCounters, ReaderKind};
use agentcompress::util::rng::Rng;
use agentcompress::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A fresh directory under the crate's `target/` (disk-backed), removed on drop.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under target/")
}

/// `len` seeded random bytes.
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` seeded bytes to `dir/name` and returns the path and the bytes.
pub fn write_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let bytes = seeded_bytes(len, seed);
    std::fs::write(&path, &bytes).expect("write test file");
    (path, bytes)
}

/// The fault a [`FaultyReader`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass reads through.
    None,
    /// Read at most half of what is asked each call (at least 1 byte).
    ShortReads,
    /// Fail every call with EIO.
    Eio,
    /// Fail the next `n` calls with EAGAIN, then pass through.
    Eagain(u32),
    /// Flip one bit of the first byte read by each call.
    FlipBit,
}

/// Wraps a reader and injects a [`Fault`]; counts calls and bytes passed through.
pub struct FaultyReader {
    inner: Arc<dyn BlockReader>,
    fault: Mutex<Fault>,
    pub calls: AtomicUsize,
    pub bytes: AtomicU64,
    /// Sleep per call, to widen race windows in concurrency tests.
    pub delay_ms: u64,
    /// Each successful call: the file, when it started and when it returned.
    pub log: Mutex<Vec<(PathBuf, Instant, Instant)>>,
}

impl FaultyReader {
    pub fn new(inner: Arc<dyn BlockReader>, fault: Fault) -> Self {
        FaultyReader {
            inner,
            fault: Mutex::new(fault),
            calls: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            delay_ms: 0,
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn set_fault(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
}

impl BlockReader for FaultyReader {
    fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        if self.delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        }
        let fault = {
            let mut f = self.fault.lock().unwrap();
            let now = *f;
            if let Fault::Eagain(n) = now {
                *f = if n > 1 {
                    Fault::Eagain(n - 1)
                } else {
                    Fault::None
                };
            }
            now
        };
        let path = reqs
            .first()
            .map(|r| r.path.to_path_buf())
            .unwrap_or_default();
        let before: u64 = reqs.iter().map(|r| r.filled as u64).sum();
        match fault {
            Fault::Eio => {
                return Err(Error::io(
                    path,
                    std::io::Error::from_raw_os_error(libc::EIO),
                ))
            }
            Fault::Eagain(_) => {
                return Err(Error::io(
                    path,
                    std::io::Error::from(std::io::ErrorKind::WouldBlock),
                ))
            }
            Fault::ShortReads => {
                for r in reqs.iter_mut().filter(|r| !r.is_done()) {
                    let want = ((r.buf.len() - r.filled) / 2).max(1);
                    let start = r.filled;
                    let mut sub = [ReadReq::new(
                        r.path,
                        r.offset + start as u64,
                        &mut r.buf[start..start + want],
                    )];
                    self.inner.read_batch(&mut sub)?;
                    r.filled += sub[0].filled;
                }
            }
            Fault::None | Fault::FlipBit => {
                let starts: Vec<usize> = reqs.iter().map(|r| r.filled).collect();
                self.inner.read_batch(reqs)?;
                if fault == Fault::FlipBit {
                    for (r, s) in reqs.iter_mut().zip(starts) {
                        if r.filled > s {
                            r.buf[s] ^= 0x10;
                        }
                    }
                }
            }
        }
        let after: u64 = reqs.iter().map(|r| r.filled as u64).sum();
        self.bytes.fetch_add(after - before, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push((path, started, Instant::now()));
        Ok(())
    }

    fn kind(&self) -> ReaderKind {
        self.inner.kind()
    }

    fn counters(&self) -> ReaderCounters {
        self.inner.counters()
    }
}
