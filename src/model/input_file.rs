//! Opening the files a loader reads: only regular files (a device such as `/dev/zero` or a FIFO
//! has no size and would be read until memory runs out), and whole-file reads bounded by a
//! caller's limit and made with a fallible allocation.

use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading after checking that it is a regular file; returns the file and its
/// length in bytes.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a regular file (a directory, device, FIFO or socket cannot be loaded)",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// Reads all of the regular file `path`, refusing one larger than `max_bytes` (what it holds is
/// named `what` in the error).
pub fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(Error::corrupt(
            path,
            format!("{what} of {len} bytes exceeds the limit of {max_bytes} bytes"),
        ));
    }
    let mut buf = Vec::new();
    try_reserve(&mut buf, len as usize)?;
    // Reading one byte past the limit notices a file that grew after the size was taken.
    file.take(max_bytes + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > max_bytes {
        return Err(Error::corrupt(
            path,
            format!("{what} grew past the limit of {max_bytes} bytes while being read"),
        ));
    }
    Ok(buf)
}

/// Reads all of the regular file `path` as UTF-8 text, bounded like [`read_bounded`].
pub fn read_text_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, max_bytes, what)?;
    String::from_utf8(bytes).map_err(|e| Error::corrupt(path, format!("{what} is not UTF-8: {e}")))
}

/// Reserves room for `additional` more elements in `v`, reporting a refusal as
/// [`Error::OutOfMemory`] with the number of bytes asked for.
pub fn try_reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<()> {
    v.try_reserve_exact(additional).map_err(|_| {
        Error::OutOfMemory(format!(
            "allocation of {} bytes failed",
            additional.saturating_mul(std::mem::size_of::<T>())
        ))
    })
}

/// A vector of `len` copies of `value`, allocated fallibly.
pub fn try_filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, len)?;
    v.resize(len, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_and_directories() {
        let e = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 10, "x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn bounds_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [7u8; 20]).unwrap();
        assert_eq!(read_bounded(&p, 20, "x").unwrap(), vec![7u8; 20]);
        let e = read_bounded(&p, 19, "tokenizer").unwrap_err();
        assert!(e.to_string().contains("tokenizer of 20 bytes"), "{e}");
    }

    #[test]
    fn impossible_reservations_are_out_of_memory() {
        let mut v: Vec<u64> = Vec::new();
        let e = try_reserve(&mut v, usize::MAX / 4).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        assert!(try_filled(usize::MAX / 16, 0u32).is_err());
    }
}
