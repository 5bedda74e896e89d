//! C ABI for AgentCompress: `libagentcompress.so` / `libagentcompress.a`, declared by
//! `include/agentcompress.h` (generated from this crate by cbindgen; a test fails when the
//! committed header drifts).
//!
//! Every exported function runs its body under a guard that catches panics and maps
//! [`ac::Error`] to an [`ac_status`]; handles are never-reused identifiers checked against a
//! registry of live objects, so NULL, closed, freed or forged handles are reported, not
//! dereferenced.

#![allow(non_camel_case_types)]

mod args;
mod chat;
mod engine;
mod handles;
mod params;
mod run;
mod status;
mod version;

#[cfg(test)]
mod tests;

pub use chat::{ac_chat_message, ac_run_chat};
pub use engine::{
    ac_engine, ac_engine_close, ac_engine_default_params, ac_engine_open, ac_engine_params,
    ac_engine_params_init, ac_engine_stats, ac_precision, ac_precision_name, ac_route,
    ac_route_info, ac_route_reasons, ac_stats, AC_PRECISION_COUNT,
};
pub use run::{
    ac_result, ac_result_context, ac_result_free, ac_result_info, ac_result_reasons,
    ac_result_route, ac_result_speculation, ac_result_text, ac_run, ac_run_default_params,
    ac_run_info, ac_run_params, ac_run_params_init, ac_token, ac_token_callback, AC_BOS_ADD,
    AC_BOS_DEFAULT, AC_BOS_NONE, AC_DRAFT_AUTO,
};
pub use status::{ac_last_error, ac_status, ac_status_string};
pub use version::{
    ac_version_number, AC_VERSION, AC_VERSION_MAJOR, AC_VERSION_MINOR, AC_VERSION_PATCH,
};

use std::ffi::c_char;

/// The library's version (`"MAJOR.MINOR.PATCH"`) as a static string, never NULL.
/// Safe to call from any thread.
#[no_mangle]
pub extern "C" fn ac_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
