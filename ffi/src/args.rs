//! Reading arguments that come from C: strings, paths and out-pointers, each checked with an
//! error naming the argument.

use ac::{Error, Result};
use std::ffi::{c_char, CStr};
use std::path::PathBuf;

/// The NUL-terminated string `ptr` (argument `name`) as bytes; an error when NULL.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn c_bytes<'a>(ptr: *const c_char, name: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// The NUL-terminated UTF-8 string `ptr` (argument `name`); an error when NULL or not UTF-8.
///
/// # Safety
/// As [`c_bytes`].
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    let bytes = unsafe { c_bytes(ptr, name) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "{name} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// An optional UTF-8 string: `None` when `ptr` is NULL.
///
/// # Safety
/// As [`c_bytes`].
pub(crate) unsafe fn opt_c_str<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        unsafe { c_str(ptr, name) }.map(Some)
    }
}

/// A file-system path: any bytes but NUL (paths need not be UTF-8 on Unix); empty is an error.
///
/// # Safety
/// As [`c_bytes`].
pub(crate) unsafe fn c_path(ptr: *const c_char, name: &str) -> Result<PathBuf> {
    let bytes = unsafe { c_bytes(ptr, name) }?;
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{name} is an empty string")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        unsafe { c_str(ptr, name) }.map(PathBuf::from)
    }
}

/// Checks that the out-pointer `ptr` (argument `name`) is not NULL.
pub(crate) fn out_ptr<T>(ptr: *mut T, name: &str) -> Result<*mut T> {
    if ptr.is_null() {
        Err(Error::invalid(format!("{name} is NULL")))
    } else {
        Ok(ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_checked_and_named() {
        let ok = c"plan";
        assert_eq!(unsafe { c_str(ok.as_ptr(), "task") }.unwrap(), "plan");
        let null = unsafe { c_str(std::ptr::null(), "task") }.unwrap_err();
        assert!(null.to_string().contains("task is NULL"));
        let bad = c"ab\xff";
        let e = unsafe { c_str(bad.as_ptr(), "task") }.unwrap_err().to_string();
        assert!(e.contains("UTF-8") && e.contains("offset 2"), "{e}");
        assert!(unsafe { c_path(bad.as_ptr(), "path") }.is_ok());
        assert!(unsafe { c_path(c"".as_ptr(), "path") }.is_err());
        assert_eq!(unsafe { opt_c_str(std::ptr::null(), "x") }.unwrap(), None);
        assert!(out_ptr(std::ptr::null_mut::<u8>(), "out").is_err());
    }
}
