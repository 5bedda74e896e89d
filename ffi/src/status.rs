//! Status codes, the thread-local last-error message, and the guard that every entry point runs
//! its body under (so that no Rust panic ever crosses the C boundary).

use ac::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The outcome of a call. `AC_OK` is zero; every other value is a failure whose message
/// `ac_last_error()` returns on the same thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ac_status {
    /// Success.
    AC_OK = 0,
    /// A null pointer, a closed or unknown handle, invalid UTF-8, an impossible parameter.
    AC_INVALID_ARGUMENT = 1,
    /// An operating-system I/O failure (a missing or unreadable file).
    AC_IO = 2,
    /// A file exists but is not a valid model, tokenizer or variant.
    AC_CORRUPT_MODEL = 3,
    /// Well-formed input this build does not support (an architecture, a tokenizer format).
    AC_UNSUPPORTED = 4,
    /// A memory budget cannot hold the request.
    AC_OUT_OF_MEMORY = 5,
    /// A CUDA device was asked for and none is usable.
    AC_NO_DEVICE = 6,
    /// The engine was asked to stop. (A token callback returning false is not an error: see
    /// `ac_run`.)
    AC_CANCELLED = 7,
    /// A broken invariant inside the engine (a bug, including a caught Rust panic).
    AC_INTERNAL = 8,
    /// A CUDA driver, compiler or kernel failure.
    AC_CUDA_ERROR = 9,
}

impl ac_status {
    /// The status an engine error maps to (one to one with `ac::Error`'s variants).
    pub fn of(e: &Error) -> ac_status {
        match e {
            Error::Io { .. } => ac_status::AC_IO,
            Error::Corrupt { .. } => ac_status::AC_CORRUPT_MODEL,
            Error::Unsupported(_) => ac_status::AC_UNSUPPORTED,
            Error::InvalidArgument(_) => ac_status::AC_INVALID_ARGUMENT,
            Error::NoDevice(_) => ac_status::AC_NO_DEVICE,
            Error::Cuda(_) => ac_status::AC_CUDA_ERROR,
            Error::OutOfMemory(_) => ac_status::AC_OUT_OF_MEMORY,
            Error::Cancelled => ac_status::AC_CANCELLED,
            Error::Internal(_) => ac_status::AC_INTERNAL,
        }
    }

    /// The status's name as a static NUL-terminated string.
    fn name(self) -> &'static [u8] {
        match self {
            ac_status::AC_OK => b"AC_OK\0",
            ac_status::AC_INVALID_ARGUMENT => b"AC_INVALID_ARGUMENT\0",
            ac_status::AC_IO => b"AC_IO\0",
            ac_status::AC_CORRUPT_MODEL => b"AC_CORRUPT_MODEL\0",
            ac_status::AC_UNSUPPORTED => b"AC_UNSUPPORTED\0",
            ac_status::AC_OUT_OF_MEMORY => b"AC_OUT_OF_MEMORY\0",
            ac_status::AC_NO_DEVICE => b"AC_NO_DEVICE\0",
            ac_status::AC_CANCELLED => b"AC_CANCELLED\0",
            ac_status::AC_INTERNAL => b"AC_INTERNAL\0",
            ac_status::AC_CUDA_ERROR => b"AC_CUDA_ERROR\0",
        }
    }
}

thread_local! {
    /// The message of the last failed call on this thread ("" after a successful one).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error (interior NULs become spaces).
fn set_last_error(msg: &str) {
    let bytes: Vec<u8> = msg.bytes().map(|b| if b == 0 { b' ' } else { b }).collect();
    let c = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Clears this thread's last error.
fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::default());
}

/// The message a caught panic carries.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs an entry point's body: clears the last error, catches panics, maps an `Error` to its
/// status and records its message. On failure `on_error` runs first (to null out-pointers).
pub(crate) fn guard(
    on_error: impl FnOnce(),
    body: impl FnOnce() -> Result<(), Error>,
) -> ac_status {
    clear_last_error();
    let outcome = catch_unwind(AssertUnwindSafe(body));
    let (status, msg) = match outcome {
        Ok(Ok(())) => return ac_status::AC_OK,
        Ok(Err(e)) => (ac_status::of(&e), e.to_string()),
        Err(p) => (
            ac_status::AC_INTERNAL,
            format!("internal error: panic inside AgentCompress: {}", panic_message(&*p)),
        ),
    };
    // The clean-up writes plain values to caller memory; it cannot panic in practice, but a
    // panic here must not cross the boundary either.
    let _ = catch_unwind(AssertUnwindSafe(on_error));
    set_last_error(&msg);
    status
}

/// Like [`guard`] for entry points that return a value rather than a status: `fallback` is
/// returned on failure (the message is still recorded).
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> Result<T, Error>) -> T {
    let mut out = None;
    let status = guard(|| {}, || body().map(|v| out = Some(v)));
    match (status, out) {
        (ac_status::AC_OK, Some(v)) => v,
        _ => fallback,
    }
}

/// The message of the last failed call on the calling thread, or "" when the thread's last call
/// succeeded (the functions that can fail reset it: those returning `ac_status`, and
/// `ac_engine_close`, `ac_result_text`, `ac_result_free`). Never NULL. The string belongs to the library and stays valid until the next call into
/// the library on the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn ac_last_error() -> *const c_char {
    // `LAST_ERROR` is only replaced by calls on this thread, so the pointer stays valid until
    // then. During thread teardown the thread-local may be gone: return a static "".
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Every status, in value order.
const ALL_STATUSES: [ac_status; 10] = [
    ac_status::AC_OK,
    ac_status::AC_INVALID_ARGUMENT,
    ac_status::AC_IO,
    ac_status::AC_CORRUPT_MODEL,
    ac_status::AC_UNSUPPORTED,
    ac_status::AC_OUT_OF_MEMORY,
    ac_status::AC_NO_DEVICE,
    ac_status::AC_CANCELLED,
    ac_status::AC_INTERNAL,
    ac_status::AC_CUDA_ERROR,
];

/// The name of a status (`"AC_OK"`, `"AC_IO"`, ...) as a static string, never NULL;
/// `"AC_UNKNOWN_STATUS"` for a value outside the enum. Safe to call from any thread.
#[no_mangle]
pub extern "C" fn ac_status_string(status: i32) -> *const c_char {
    let name = ALL_STATUSES
        .iter()
        .find(|s| **s as i32 == status)
        .map_or(&b"AC_UNKNOWN_STATUS\0"[..], |s| s.name());
    name.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        unsafe { CStr::from_ptr(ac_last_error()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn guard_maps_errors_catches_panics_and_clears_on_success() {
        let mut cleaned = false;
        let s = guard(|| cleaned = true, || Err(Error::corrupt("m.bin", "short header")));
        assert_eq!(s, ac_status::AC_CORRUPT_MODEL);
        assert!(cleaned);
        assert!(last().contains("m.bin") && last().contains("short header"));

        let s = guard(|| {}, || panic!("boom {}", 7));
        assert_eq!(s, ac_status::AC_INTERNAL);
        assert!(last().contains("panic") && last().contains("boom 7"), "{}", last());

        assert_eq!(guard(|| {}, || Ok(())), ac_status::AC_OK);
        assert_eq!(last(), "");
        assert_eq!(guard_value(5, || Err(Error::Cancelled)), 5);
        assert_eq!(last(), "cancelled");
    }

    #[test]
    fn every_error_variant_has_its_own_status_and_name() {
        let errors = [
            Error::io("f", std::io::Error::other("x")),
            Error::corrupt("f", "x"),
            Error::Unsupported("x".into()),
            Error::invalid("x"),
            Error::NoDevice("x".into()),
            Error::Cuda("x".into()),
            Error::OutOfMemory("x".into()),
            Error::Cancelled,
            Error::Internal("x".into()),
        ];
        let mut seen: Vec<ac_status> = errors.iter().map(ac_status::of).collect();
        seen.sort_by_key(|s| *s as i32);
        seen.dedup();
        assert_eq!(seen.len(), errors.len());
        assert!(!seen.contains(&ac_status::AC_OK));
        for s in ALL_STATUSES {
            let name = unsafe { CStr::from_ptr(ac_status_string(s as i32)) };
            assert_eq!(format!("{s:?}"), name.to_str().unwrap());
        }
        let unknown = unsafe { CStr::from_ptr(ac_status_string(99)) };
        assert_eq!(unknown.to_str().unwrap(), "AC_UNKNOWN_STATUS");
    }
}
