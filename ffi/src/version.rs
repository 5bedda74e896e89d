//! The library version as C macros (`AC_VERSION_MAJOR/MINOR/PATCH`, `AC_VERSION`) for compile
//! time checks, and `ac_version_number()` for the version of the library actually loaded.
//!
//! cbindgen cannot read `Cargo.toml`, so the parts are literals here; a unit test fails when
//! they differ from the crate version.

/// Major version of the C ABI this header declares; a change breaks existing hosts.
pub const AC_VERSION_MAJOR: u32 = 0;
/// Minor version: additions that keep existing hosts working.
pub const AC_VERSION_MINOR: u32 = 1;
/// Patch version: fixes only.
pub const AC_VERSION_PATCH: u32 = 0;
/// The header's version as one number, `MAJOR * 10000 + MINOR * 100 + PATCH`, comparable with
/// `ac_version_number()`.
pub const AC_VERSION: u32 = AC_VERSION_MAJOR * 10000 + AC_VERSION_MINOR * 100 + AC_VERSION_PATCH;

/// The loaded library's version as `MAJOR * 10000 + MINOR * 100 + PATCH` (compare with the
/// header's `AC_VERSION` to detect a host built against another header). Safe to call from any
/// thread; never fails.
#[no_mangle]
pub extern "C" fn ac_version_number() -> u32 {
    AC_VERSION
}
