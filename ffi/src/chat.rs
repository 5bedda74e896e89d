//! Chat over the C ABI: a list of role/content messages rendered with the model's chat
//! template and run like a task.

use crate::args::{c_str, out_ptr};
use crate::engine::{ac_engine, engine_of};
use crate::params::read_params;
use crate::run::{ac_result, ac_run_params, ac_token_callback, store_result, token_sink, RunMode};
use crate::status::{ac_status, guard};
use ac::api::ChatMessage;
use ac::{Error, Result};
use std::ffi::{c_char, c_void};

/// One turn of a conversation for `ac_run_chat`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ac_chat_message {
    /// `"system"`, `"user"` or `"assistant"` (NUL-terminated UTF-8).
    pub role: *const c_char,
    /// The text of the turn (NUL-terminated UTF-8).
    pub content: *const c_char,
}

/// Most messages one `ac_run_chat` call accepts.
const MAX_MESSAGES: usize = 1 << 16;

/// Copies the C messages, checking every pointer and string.
///
/// # Safety
/// `messages` is NULL or points to `n` readable `ac_chat_message`s whose strings are NULL or
/// NUL-terminated.
unsafe fn read_messages(messages: *const ac_chat_message, n: usize) -> Result<Vec<ChatMessage>> {
    if messages.is_null() {
        return Err(Error::invalid("messages is NULL"));
    }
    if n == 0 || n > MAX_MESSAGES {
        return Err(Error::invalid(format!(
            "n_messages is {n}; a chat needs 1 to {MAX_MESSAGES} messages"
        )));
    }
    // SAFETY: `n` readable messages per the contract.
    let items = unsafe { std::slice::from_raw_parts(messages, n) };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = unsafe { c_str(m.role, &format!("messages[{i}].role")) }?;
            let content = unsafe { c_str(m.content, &format!("messages[{i}].content")) }?;
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Renders `messages` (`n_messages` of them, in order) with the model's chat template, routes
/// the conversation on its last user message (as `ac_run` routes that text as a task, whatever
/// the system prompt), runs it, and stores a new result in `*out` (NULL
/// on failure): the assistant's reply, which ends at the model's end-of-sequence or
/// end-of-turn token. Tokens stream to `callback` (may be NULL) exactly as in `ac_run`.
/// A model without a chat template is `AC_INVALID_ARGUMENT`.
///
/// `params` may be NULL for the defaults. Thread-safe, as `ac_run`.
///
/// # Safety
/// `messages` is NULL or points to `n_messages` readable `ac_chat_message`s whose strings are
/// NULL or NUL-terminated; `params` is NULL or readable for `params->size` bytes; `callback`, when
/// not NULL, is a function of the documented type; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_run_chat(
    engine: *mut ac_engine,
    messages: *const ac_chat_message,
    n_messages: usize,
    params: *const ac_run_params,
    callback: ac_token_callback,
    user_data: *mut c_void,
    out: *mut *mut ac_result,
) -> ac_status {
    let null_out = || {
        if !out.is_null() {
            // SAFETY: writable per the contract.
            unsafe { *out = std::ptr::null_mut() };
        }
    };
    guard(null_out, || {
        let out = out_ptr(out, "out")?;
        // SAFETY: writable per the contract.
        unsafe { *out = std::ptr::null_mut() };
        let engine = engine_of(engine)?;
        let messages = unsafe { read_messages(messages, n_messages) }?;
        // SAFETY: NULL or readable for `params->size` bytes per the contract.
        let params = unsafe { read_params(params) }?;
        let gen = params.to_generate()?;
        let sink = token_sink(callback, user_data);
        let r = match params.to_mode()? {
            RunMode::Speculative(spec) => engine.chat_speculative(&messages, &gen, &spec, sink)?,
            RunMode::Planned => engine.chat_planned(&messages, &gen, sink)?,
            RunMode::Plain => engine.chat(&messages, &gen, sink)?,
        };
        // SAFETY: writable per the contract.
        unsafe { *out = store_result(&r)? };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_and_named() {
        let m = [ac_chat_message {
            role: c"user".as_ptr(),
            content: std::ptr::null(),
        }];
        let e = unsafe { read_messages(m.as_ptr(), 1) }.unwrap_err();
        assert!(e.to_string().contains("messages[0].content is NULL"), "{e}");
        assert!(unsafe { read_messages(std::ptr::null(), 1) }.is_err());
        assert!(unsafe { read_messages(m.as_ptr(), 0) }.is_err());
        let ok = [ac_chat_message {
            role: c"user".as_ptr(),
            content: c"hi".as_ptr(),
        }];
        let got = unsafe { read_messages(ok.as_ptr(), 1) }.unwrap();
        assert_eq!(got, vec![ChatMessage::new("user", "hi")]);
    }

    #[test]
    fn a_model_without_a_template_is_an_invalid_argument() {
        let mut engine = std::ptr::null_mut();
        let ep = crate::engine::ac_engine_default_params();
        let st =
            unsafe { crate::engine::ac_engine_open(c"builtin:tiny".as_ptr(), &ep, &mut engine) };
        assert_eq!(st, ac_status::AC_OK);
        let m = [ac_chat_message {
            role: c"user".as_ptr(),
            content: c"hi".as_ptr(),
        }];
        let mut out = std::ptr::null_mut();
        let st = unsafe {
            ac_run_chat(
                engine,
                m.as_ptr(),
                1,
                std::ptr::null(),
                None,
                std::ptr::null_mut(),
                &mut out,
            )
        };
        assert_eq!(st, ac_status::AC_INVALID_ARGUMENT);
        assert!(out.is_null());
        crate::engine::ac_engine_close(engine);
    }
}
