//! Running a task: route, generate with streaming, and the result object.

use crate::args::{c_str, out_ptr};
use crate::engine::{ac_engine, ac_precision, ac_route_info, engine_of};
use crate::handles::Registry;
use crate::params::{init_params, read_params, SizedParams};
use crate::status::{ac_status, guard, guard_value};
use ac::api::{DraftLen, Precision, RunResult, Speculation};
use ac::engine::{GenerateParams, SamplingParams, TokenEvent};
use ac::{Error, Result};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// Options of `ac_run`. Get the defaults from `ac_run_default_params()` (or
/// `ac_run_params_init()`) and change the fields you need.
///
/// Evolution: as for `ac_engine_params`, `size` is the struct's size in bytes as the host was
/// compiled; fields a host does not know take their defaults, and `size` 0 or below the first
/// layout is `AC_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ac_run_params {
    /// Bytes of this struct as the host was compiled (`sizeof(ac_run_params)`); set by
    /// `ac_run_default_params()` and `ac_run_params_init()`.
    pub size: usize,
    /// At most this many new tokens (also bounded by the model's context length). 0 generates
    /// nothing (the task is still routed and counted).
    pub max_tokens: u32,
    /// 0 picks the most likely token (greedy, deterministic); otherwise the logits are divided
    /// by it before sampling. Must be finite and >= 0.
    pub temperature: f32,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches
    /// `top_p`. Must be in (0, 1].
    pub top_p: f32,
    /// Seed of the sampler: the same seed, task and parameters give the same tokens.
    pub seed: u64,
    /// Stop at the model's end-of-sequence token.
    pub stop_at_eos: bool,
    /// Most tokens one run may hold, prompt included (capped by the model's own context
    /// length); 0 means the library's default (4096). The cache grows with the sequence, so a
    /// large value costs memory only when used. Added after the first layout: a host built
    /// without it gets the default.
    pub context: u64,
    /// When the prompt does not fit the context: false (default) fails the run with
    /// `AC_INVALID_ARGUMENT` naming both lengths; true drops the oldest prompt tokens (keeping
    /// a leading BOS). Added after the first layout.
    pub truncate_prompt: bool,
    /// Whether the task's text (or the rendered chat) starts with the model's BOS token:
    /// `AC_BOS_DEFAULT` (0) as the tokenizer says (`add_bos_token`), `AC_BOS_ADD` always,
    /// `AC_BOS_NONE` never; any other value is `AC_INVALID_ARGUMENT`. 64 bits wide so that it
    /// starts past the previous layout's tail padding. Added after the second layout.
    pub bos: u64,
    /// Variants directories: serve the routed variant through speculation, drafting with the
    /// cheaper variant `draft_precision`; the output is the routed variant's own (identical
    /// tokens when greedy). When the routed variant is not more precise than the draft the
    /// task runs plainly and the reasons say so. Default false. Added after the third layout.
    pub speculate: bool,
    /// With `speculate`: the drafting variant, an `ac_precision` value (default
    /// `AC_PRECISION_INT4`), or `AC_DRAFT_AUTO`: the router decides per task whether and from
    /// which resident cheaper variant to speculate, from what the engine has measured
    /// (`ac_result_route` gives its reasons). Added after the third layout.
    pub draft_precision: i32,
    /// With `speculate`: draft tokens per verify; 0 (default) chooses them adaptively from
    /// the running acceptance rate, up to 8. Added after the third layout.
    pub draft_len: u32,
}

/// `ac_run_params.draft_precision`: the router chooses whether and from which variant to
/// speculate, per task, from the engine's measurements.
pub const AC_DRAFT_AUTO: i32 = -1;

/// How a run is served: plainly, through speculation from a fixed draft, or as the router
/// plans it.
pub(crate) enum RunMode {
    Plain,
    Speculative(Speculation),
    Planned,
}

/// `ac_run_params.bos`: BOS as the tokenizer's `add_bos_token` says.
pub const AC_BOS_DEFAULT: u64 = 0;
/// `ac_run_params.bos`: always start with the model's BOS token.
pub const AC_BOS_ADD: u64 = 1;
/// `ac_run_params.bos`: never add a BOS token.
pub const AC_BOS_NONE: u64 = 2;

impl ac_run_params {
    /// The engine's generation parameters, with the ranges checked.
    pub(crate) fn to_generate(self) -> Result<GenerateParams> {
        let sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        };
        sampling
            .validate()
            .map_err(|e| Error::invalid(format!("params: {e}")))?;
        let defaults = GenerateParams::default();
        let context = match self.context {
            0 => defaults.context,
            n => usize::try_from(n)
                .map_err(|_| Error::invalid(format!("params: context {n} is too large")))?,
        };
        let add_bos = match self.bos {
            AC_BOS_DEFAULT => None,
            AC_BOS_ADD => Some(true),
            AC_BOS_NONE => Some(false),
            b => {
                return Err(Error::invalid(format!(
                    "params: bos {b} is none of AC_BOS_DEFAULT, AC_BOS_ADD, AC_BOS_NONE"
                )))
            }
        };
        Ok(GenerateParams {
            add_bos,
            max_new_tokens: self.max_tokens as usize,
            sampling,
            stop_at_eos: self.stop_at_eos,
            context,
            truncate_prompt: self.truncate_prompt,
            ..defaults
        })
    }
}

impl ac_run_params {
    /// How the run is to be served (`speculate` and `draft_precision`).
    pub(crate) fn to_mode(self) -> Result<RunMode> {
        if !self.speculate {
            return Ok(RunMode::Plain);
        }
        if self.draft_precision == AC_DRAFT_AUTO {
            return Ok(RunMode::Planned);
        }
        let draft = usize::try_from(self.draft_precision)
            .ok()
            .and_then(|i| Precision::ALL.get(i).copied())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "params: draft_precision {} is not an ac_precision value",
                    self.draft_precision
                ))
            })?;
        Ok(RunMode::Speculative(Speculation {
            target: Precision::Fp16,
            draft,
            draft_len: match self.draft_len {
                0 => DraftLen::default(),
                k => DraftLen::Fixed(k as usize),
            },
        }))
    }
}

/// One generated token, as passed to an `ac_token_callback`. When generation ends in the
/// middle of a multi-byte character, one last call repeats the final token's `id` and `index`
/// and carries the text that was held back, so the concatenated `text` of all calls always
/// equals `ac_result_text`. Count tokens by `index`, not by calls.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ac_token {
    /// The token id.
    pub id: u32,
    /// Index of the token among the generated ones (0, 1, 2, ...).
    pub index: u32,
    /// The UTF-8 text this token completes, NUL-terminated; empty while a multi-byte character
    /// is incomplete. Valid only during the callback: copy it to keep it.
    pub text: *const c_char,
    /// Length of `text` in bytes (excluding the terminating NUL).
    pub text_len: usize,
}

/// Receives each generated token during `ac_run`, on the thread that called `ac_run`, before
/// `ac_run` returns. Return true to continue, false to stop generation (the return value of
/// the held-back-text call described at `ac_token` is ignored). `user_data` is the
/// pointer given to `ac_run`. The callback must not throw C++ exceptions or longjmp out, and
/// must not call `ac_result_free` on results it does not own; it may call any other function
/// of this library, including `ac_run` on the same engine.
pub type ac_token_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, token: *const ac_token) -> bool>;

/// The outcome of `ac_run`: the generated text, the route taken and counters. Opaque;
/// immutable, so it may be read from any thread; free it exactly once with `ac_result_free`.
pub struct ac_result {
    _private: [u8; 0],
}

/// Counters of one run.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ac_run_info {
    /// Tokens of the prompt as fed to the model (BOS included).
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Length of the generated text in bytes (`ac_result_text` is NUL-terminated, but a model
    /// may generate NUL bytes: use this length to read all of it).
    pub text_len: usize,
    /// Whether the token callback returned false and stopped generation.
    pub cancelled: bool,
    /// Whether generation ended at the end-of-sequence token.
    pub hit_eos: bool,
    /// Seconds spent on the prompt.
    pub prefill_seconds: f64,
    /// Seconds spent generating tokens.
    pub decode_seconds: f64,
}

/// What a result handle holds.
pub(crate) struct RunOutcome {
    /// The generated text followed by one NUL.
    text: Vec<u8>,
    /// The route's reasons, one per line, followed by one NUL.
    reasons: Vec<u8>,
    route: ac_route_info,
    info: ac_run_info,
    /// The context the run had, whether it cut `max_tokens` short, and the prompt tokens
    /// dropped to fit (see [`ac_result_context`]).
    context: (u64, bool, u64),
    /// Draft tokens proposed, accepted, and verify forwards (zeros without speculation).
    speculation: [u64; 3],
}

/// The live results.
static RESULTS: Registry<RunOutcome> = Registry::new("result");

fn result_of(result: *const ac_result) -> Result<Arc<RunOutcome>> {
    RESULTS.get(result.cast())
}

impl SizedParams for ac_run_params {
    const NAME: &'static str = "ac_run_params";
    // Every field of the first layout (up to `stop_at_eos`, padded) is required; fields
    // appended later (`context`, `truncate_prompt`, `bos`) are not. `context` starts past the first
    // layout's tail padding, so an older host's padding is never read as an option.
    const MIN_SIZE: usize = std::mem::offset_of!(ac_run_params, context);
    fn defaults() -> Self {
        ac_run_default_params()
    }
    fn set_size(&mut self, size: usize) {
        self.size = size;
    }
}

/// The default `ac_run_params`: 128 tokens, greedy (temperature 0), top_p 0.9, seed 42, stop
/// at end of sequence, `size` set to `sizeof(ac_run_params)`. Safe to call from any thread;
/// never fails.
#[no_mangle]
pub extern "C" fn ac_run_default_params() -> ac_run_params {
    let g = GenerateParams::default();
    ac_run_params {
        size: std::mem::size_of::<ac_run_params>(),
        max_tokens: u32::try_from(g.max_new_tokens).unwrap_or(u32::MAX),
        temperature: g.sampling.temperature,
        top_p: g.sampling.top_p,
        seed: g.sampling.seed,
        stop_at_eos: g.stop_at_eos,
        context: 0,
        truncate_prompt: g.truncate_prompt,
        bos: AC_BOS_DEFAULT,
        speculate: false,
        draft_precision: ac_precision::AC_PRECISION_INT4 as i32,
        draft_len: 0,
    }
}

/// Writes the default `ac_run_params` into the host's struct of `size` bytes at `params` (pass
/// `sizeof *params`) and sets `params->size` to `size`. Errors: `AC_INVALID_ARGUMENT` for a
/// NULL `params` or a `size` below the first layout. Thread-safe.
///
/// # Safety
/// `params` is NULL or writable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ac_run_params_init(params: *mut ac_run_params, size: usize) -> ac_status {
    guard(|| {}, || unsafe { init_params(params, size) })
}

/// Routes `task` (non-empty UTF-8), generates from it on the chosen variant, streams each token
/// to `callback` (may be NULL) and stores a new result in `*out` (NULL on failure).
///
/// Cancellation: when the callback returns false, generation stops and `ac_run` returns
/// `AC_OK` with a result whose `ac_run_info.cancelled` is true and whose text holds what was
/// generated so far (the task counts in the statistics). `AC_CANCELLED` is returned only when
/// the engine itself was asked to stop.
///
/// `params` may be NULL for the defaults. Thread-safe: several threads may run tasks on one
/// engine at once.
///
/// # Safety
/// `task` is NULL or NUL-terminated; `params` is NULL or points to an `ac_run_params` readable
/// for `params->size` bytes;
/// `callback`, when not NULL, is a function of the documented type; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_run(
    engine: *mut ac_engine,
    task: *const c_char,
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
        let task = unsafe { c_str(task, "task") }?;
        // SAFETY: NULL or readable for `params->size` bytes per the contract.
        let params = unsafe { read_params(params) }?;
        let gen = params.to_generate()?;
        let sink = token_sink(callback, user_data);
        let r = match params.to_mode()? {
            RunMode::Speculative(spec) => engine.run_speculative(task, &gen, &spec, sink)?,
            RunMode::Planned => engine.run_planned(task, &gen, sink)?,
            RunMode::Plain => engine.run(task, &gen, sink)?,
        };
        // SAFETY: writable per the contract.
        unsafe { *out = store_result(&r)? };
        Ok(())
    })
}

/// The engine's token callback that forwards each token to the C `callback` (when not NULL).
pub(crate) fn token_sink(
    callback: ac_token_callback,
    user_data: *mut c_void,
) -> impl FnMut(TokenEvent<'_>) -> bool {
    let mut piece = Vec::new();
    move |t: TokenEvent<'_>| -> bool {
        let Some(cb) = callback else { return true };
        piece.clear();
        piece.extend_from_slice(t.text.as_bytes());
        piece.push(0);
        let token = ac_token {
            id: t.id,
            index: u32::try_from(t.index).unwrap_or(u32::MAX),
            text: piece.as_ptr().cast(),
            text_len: t.text.len(),
        };
        // SAFETY: a function of the documented type per the caller's contract; `token` and
        // its text outlive the call.
        unsafe { cb(user_data, &token) }
    }
}

/// Stores the outcome of a run as a new live result handle.
pub(crate) fn store_result(r: &RunResult) -> Result<*mut ac_result> {
    let o = &r.output;
    let mut text = o.text.as_bytes().to_vec();
    text.push(0);
    let mut reasons = r.route.reasons.join("\n").into_bytes();
    reasons.retain(|b| *b != 0);
    reasons.push(0);
    let outcome = RunOutcome {
        reasons,
        route: ac_route_info::from(&r.route),
        info: ac_run_info {
            prompt_tokens: o.prompt_ids.len() as u64,
            tokens: o.ids.len() as u64,
            text_len: o.text.len(),
            cancelled: o.cancelled,
            hit_eos: o.hit_eos,
            prefill_seconds: o.prefill_time.as_secs_f64(),
            decode_seconds: o.decode_time.as_secs_f64(),
        },
        context: (
            o.context as u64,
            o.context_limited,
            o.prompt_tokens_dropped as u64,
        ),
        speculation: o
            .speculation
            .as_ref()
            .map_or([0; 3], |s| [s.drafted, s.accepted, s.verifies]),
        text,
    };
    Ok(RESULTS.insert(outcome)?.cast())
}

/// The generated text of a result: UTF-8, NUL-terminated, never NULL for a live result (NULL,
/// with a message for `ac_last_error()`, when `result` is NULL or not live). The string belongs
/// to the result and stays valid until `ac_result_free(result)`.
#[no_mangle]
pub extern "C" fn ac_result_text(result: *const ac_result) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // The registry keeps the outcome (and its text buffer) alive until ac_result_free.
        Ok(result_of(result)?.text.as_ptr().cast())
    })
}

/// The reasons for the route a result's task took (complexity, expected quality, the chosen
/// variant, alternatives, swap or hit, prefetch), one per line, NUL-terminated; NULL (with a
/// message for `ac_last_error()`) when `result` is NULL or not live. The string belongs to the
/// result and stays valid until `ac_result_free(result)`.
#[no_mangle]
pub extern "C" fn ac_result_reasons(result: *const ac_result) -> *const c_char {
    guard_value(std::ptr::null(), || {
        Ok(result_of(result)?.reasons.as_ptr().cast())
    })
}

/// Stores the route a result's task took in `*out`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_result_route(
    result: *const ac_result,
    out: *mut ac_route_info,
) -> ac_status {
    guard(
        || {},
        || {
            let out = out_ptr(out, "out")?;
            let route = result_of(result)?.route;
            // SAFETY: writable per the contract.
            unsafe { *out = route };
            Ok(())
        },
    )
}

/// Stores a result's counters (tokens, cancelled, timings) in `*out`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_result_info(
    result: *const ac_result,
    out: *mut ac_run_info,
) -> ac_status {
    guard(
        || {},
        || {
            let out = out_ptr(out, "out")?;
            let info = result_of(result)?.info;
            // SAFETY: writable per the contract.
            unsafe { *out = info };
            Ok(())
        },
    )
}

/// How the context bounded a result: `*context` the tokens the run could hold (prompt
/// included), `*limited` whether `max_tokens` asked for more than the context had room for
/// (generation stopped when it filled), `*prompt_dropped` the oldest prompt tokens dropped to
/// fit (only with `truncate_prompt`). Any output pointer may be NULL to skip it. A function of
/// its own rather than fields of `ac_run_info`, whose size hosts compile in.
///
/// # Safety
/// Each output pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_result_context(
    result: *const ac_result,
    context: *mut u64,
    limited: *mut bool,
    prompt_dropped: *mut u64,
) -> ac_status {
    guard(
        || {},
        || {
            let (n, lim, dropped) = result_of(result)?.context;
            // SAFETY: each is NULL or writable per the contract.
            unsafe {
                if !context.is_null() {
                    *context = n;
                }
                if !limited.is_null() {
                    *limited = lim;
                }
                if !prompt_dropped.is_null() {
                    *prompt_dropped = dropped;
                }
            }
            Ok(())
        },
    )
}

/// What speculation did in a result's run (`ac_run_params.speculate`): `*drafted` draft
/// tokens proposed, `*accepted` of them kept by the verifying variant, `*verifies` its
/// multi-row verify forwards; all 0 when the run did not speculate. Acceptance rate is
/// accepted / drafted, tokens per verify (accepted + verifies) / verifies. Any output pointer
/// may be NULL to skip it.
///
/// # Safety
/// Each output pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_result_speculation(
    result: *const ac_result,
    drafted: *mut u64,
    accepted: *mut u64,
    verifies: *mut u64,
) -> ac_status {
    guard(
        || {},
        || {
            let counts = result_of(result)?.speculation;
            for (out, v) in [drafted, accepted, verifies].into_iter().zip(counts) {
                if !out.is_null() {
                    // SAFETY: NULL or writable per the contract.
                    unsafe { *out = v };
                }
            }
            Ok(())
        },
    )
}

/// Frees a result and its text. NULL is ignored. Freeing a result that is not live (freed
/// twice, never returned) frees nothing and records a message for `ac_last_error()`.
/// Thread-safe, but no other thread may be reading the result's text while it is freed.
#[no_mangle]
pub extern "C" fn ac_result_free(result: *mut ac_result) {
    let _ = guard(
        || {},
        || {
            if result.is_null() {
                return Ok(());
            }
            RESULTS.remove(result.cast())
        },
    );
}
