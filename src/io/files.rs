//! Open-file table shared by the readers: one buffered and (where the file system allows it) one
//! O_DIRECT descriptor per path, plus the warn-once log used for every fallback.

use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Most open files kept; past it the table is cleared (descriptors close when unused).
const MAX_OPEN: usize = 256;

/// Prints `msg` to stderr the first time `key` is seen in this process, never again.
pub fn warn_once(key: &str, msg: impl FnOnce() -> String) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    let first = match seen.lock() {
        Ok(mut s) => s.insert(key.to_string()),
        Err(poisoned) => poisoned.into_inner().insert(key.to_string()),
    };
    if first {
        eprintln!("agentcompress io: {}", msg());
    }
}

/// An I/O failure on `path` annotated with the offset and length of the read that failed.
pub fn read_error(path: &Path, offset: u64, len: usize, e: std::io::Error) -> Error {
    let kind = e.kind();
    Error::io(
        path,
        std::io::Error::new(kind, format!("read of {len} bytes at offset {offset}: {e}")),
    )
}

/// The descriptors of one file.
pub struct OpenFile {
    /// Buffered descriptor: always present, used for unaligned pieces and as the fallback.
    pub buffered: File,
    /// O_DIRECT descriptor, when asked for and accepted by the file system.
    pub direct: Option<File>,
    direct_ok: AtomicBool,
}

impl OpenFile {
    /// The O_DIRECT descriptor while direct reads still work on this file.
    pub fn direct(&self) -> Option<&File> {
        if self.direct_ok.load(Ordering::Relaxed) {
            self.direct.as_ref()
        } else {
            None
        }
    }

    /// Stops using O_DIRECT on this file (a read was refused with EINVAL) and says so once.
    pub fn refuse_direct(&self, path: &Path) {
        self.direct_ok.store(false, Ordering::Relaxed);
        warn_once("odirect-read-einval", || {
            format!(
                "O_DIRECT reads refused on {} (EINVAL); using buffered reads there, \
                 the page cache may inflate throughput numbers",
                path.display()
            )
        });
    }
}

/// Lazily opened descriptors keyed by path.
pub struct FileTable {
    want_direct: bool,
    files: Mutex<HashMap<PathBuf, Arc<OpenFile>>>,
}

impl FileTable {
    /// A table that opens O_DIRECT descriptors too when `want_direct`.
    pub fn new(want_direct: bool) -> Self {
        FileTable {
            want_direct,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The descriptors of `path`, opening them on first use.
    pub fn get(&self, path: &Path) -> Result<Arc<OpenFile>> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| Error::Internal("file table lock poisoned".into()))?;
        if let Some(f) = files.get(path) {
            return Ok(f.clone());
        }
        let buffered = File::open(path).map_err(|e| Error::io(path, e))?;
        let direct = if self.want_direct {
            open_direct(path)?
        } else {
            None
        };
        let f = Arc::new(OpenFile {
            direct_ok: AtomicBool::new(direct.is_some()),
            buffered,
            direct,
        });
        if files.len() >= MAX_OPEN {
            files.clear();
        }
        files.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }
}

/// Opens `path` with O_DIRECT; `None` (said once) where the file system refuses it.
fn open_direct(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            warn_once("odirect-open-einval", || {
                format!(
                    "file system of {} refuses O_DIRECT (EINVAL, e.g. tmpfs); using buffered \
                     reads, the page cache may inflate throughput numbers",
                    path.display()
                )
            });
            Ok(None)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}
