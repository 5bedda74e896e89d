//! Opening and closing engines, routing a task, and reading an engine's statistics.

use crate::args::{c_path, c_str, opt_c_str, out_ptr};
use crate::handles::Registry;
use crate::params::{init_params, read_params, SizedParams};
use crate::status::{ac_status, guard};
use ac::api::{Device, Engine, Route};
use ac::quant::Precision;
use ac::{Error, Result};
use std::ffi::c_char;
use std::sync::Arc;

/// An open engine: a model on a device, with its tokenizer. Opaque; created by
/// `ac_engine_open`, released by `ac_engine_close`.
///
/// Thread safety: an engine may be shared by any number of threads. Every function taking an
/// `ac_engine` may be called concurrently on the same engine (each `ac_run` has its own sequence
/// state; statistics are updated atomically). `ac_engine_close` may even be called while other
/// threads are inside `ac_run` on the same engine: those calls finish normally and the engine
/// is freed when the last one returns; later calls with the handle fail with
/// `AC_INVALID_ARGUMENT`.
pub struct ac_engine {
    _private: [u8; 0],
}

/// The live engines.
pub(crate) static ENGINES: Registry<Engine> = Registry::new("engine");

/// The engine behind `engine`, or an error naming why there is none.
pub(crate) fn engine_of(engine: *const ac_engine) -> Result<Arc<Engine>> {
    ENGINES.get(engine.cast())
}

/// Options of `ac_engine_open`. Get the defaults from `ac_engine_default_params()` (or
/// `ac_engine_params_init()`) and change the fields you need; the strings are read during the
/// call only.
///
/// Evolution: `size` is the struct's size in bytes as the host was compiled, set by both
/// initialisers. Later releases only append fields; the library reads `size` bytes and gives
/// the fields a host does not know their defaults, so a host built against an older header
/// keeps working. `size` 0 (a struct not initialised) or below the first layout is
/// `AC_INVALID_ARGUMENT`, as is a larger struct whose bytes beyond this library's are not zero.
/// `ac_engine_default_params()` returns this header's layout by value; a host that may run
/// against a newer library than its header initialises with
/// `ac_engine_params_init(&p, sizeof p)` instead.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ac_engine_params {
    /// Bytes of this struct as the host was compiled (`sizeof(ac_engine_params)`); set by
    /// `ac_engine_default_params()` and `ac_engine_params_init()`.
    pub size: usize,
    /// Where to run: `"auto"` (CUDA when a usable GPU is present, else the CPU), `"cpu"`,
    /// `"cuda"` or `"cuda:N"`. NULL means `"auto"`.
    pub device: *const c_char,
    /// Tokenizer file (llama2.c `tokenizer.bin` or Hugging Face `tokenizer.json`). NULL means
    /// the tokenizer found beside the model. Must be NULL for the built-in models.
    pub tokenizer_path: *const c_char,
    /// Variants directories: bytes of variant weights that may be resident at once; loading a
    /// variant evicts the least recently used ones. 0 means room for all four. A budget
    /// smaller than the largest variant fails `ac_engine_open` with `AC_INVALID_ARGUMENT`.
    /// Ignored for single models.
    pub memory_budget: u64,
    /// Variants directories: after each run, load the variant the router expects next on a
    /// background thread. Ignored for single models.
    pub prefetch: bool,
    /// Variants directories on a GPU: run the routing controller on the GPU (FP16 weights)
    /// instead of the CPU. No effect on the CPU. Default false.
    pub controller_on_device: bool,
}

/// The number of precisions, the length of `ac_stats.per_precision`.
pub const AC_PRECISION_COUNT: usize = 4;

/// One of the four variants of a model, most to least precise. The values index
/// `ac_stats.per_precision`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ac_precision {
    /// 16-bit floating point weights.
    AC_PRECISION_FP16 = 0,
    /// 8-bit integer weights.
    AC_PRECISION_INT8 = 1,
    /// 4-bit integer weights.
    AC_PRECISION_INT4 = 2,
    /// 2-bit integer weights.
    AC_PRECISION_INT2 = 3,
}

impl From<Precision> for ac_precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp16 => ac_precision::AC_PRECISION_FP16,
            Precision::Int8 => ac_precision::AC_PRECISION_INT8,
            Precision::Int4 => ac_precision::AC_PRECISION_INT4,
            Precision::Int2 => ac_precision::AC_PRECISION_INT2,
        }
    }
}

/// A routing decision: which variant would serve a task, and what it would cost.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ac_route_info {
    /// The variant chosen.
    pub precision: ac_precision,
    /// Whether the controller predicted a complexity (false when no controller ran).
    pub has_complexity: bool,
    /// Predicted task complexity in [0, 1]; 0 when `has_complexity` is false.
    pub complexity: f32,
    /// Expected relative cost of the task on the chosen variant (FP16 = 1.0).
    pub expected_cost: f64,
    /// Whether serving the task needs loading a variant that is not resident (a swap).
    pub swap: bool,
}

impl From<&Route> for ac_route_info {
    fn from(r: &Route) -> Self {
        ac_route_info {
            precision: r.precision.into(),
            has_complexity: r.complexity.is_some(),
            complexity: r.complexity.unwrap_or(0.0),
            expected_cost: r.expected_cost,
            swap: r.swap,
        }
    }
}

/// Counters accumulated by an engine since it was opened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ac_stats {
    /// Tasks run (cancelled ones included).
    pub tasks: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Tasks per precision, indexed by `ac_precision`.
    pub per_precision: [u64; AC_PRECISION_COUNT],
    /// Variant loads that were needed (swaps).
    pub swaps: u64,
    /// Tasks served by an already resident variant.
    pub hits: u64,
    /// Bytes read from storage.
    pub bytes_streamed: u64,
    /// Accumulated relative cost (FP16 = 1.0 per task).
    pub cost: f64,
    /// Bytes of variant weights loaded by swaps and prefetches (variants directories).
    pub bytes_loaded: u64,
    /// Seconds tasks spent waiting for their variant to load.
    pub swap_seconds: f64,
    /// Variants loaded in the background and admitted ahead of use.
    pub prefetches: u64,
    /// Tasks served by a variant a prefetch had loaded.
    pub prefetch_hits: u64,
}

impl SizedParams for ac_engine_params {
    const NAME: &'static str = "ac_engine_params";
    // Every field of the first layout (this one) is required; fields appended later are not.
    const MIN_SIZE: usize = std::mem::size_of::<ac_engine_params>();
    fn defaults() -> Self {
        ac_engine_default_params()
    }
    fn set_size(&mut self, size: usize) {
        self.size = size;
    }
}

/// The default `ac_engine_params`: device `"auto"`, the tokenizer beside the model, `size` set
/// to `sizeof(ac_engine_params)`. Safe to call from any thread; never fails.
#[no_mangle]
pub extern "C" fn ac_engine_default_params() -> ac_engine_params {
    ac_engine_params {
        size: std::mem::size_of::<ac_engine_params>(),
        device: std::ptr::null(),
        tokenizer_path: std::ptr::null(),
        memory_budget: 0,
        prefetch: false,
        controller_on_device: false,
    }
}

/// Writes the default `ac_engine_params` into the host's struct of `size` bytes at `params`
/// (pass `sizeof *params`) and sets `params->size` to `size`. Errors: `AC_INVALID_ARGUMENT`
/// for a NULL `params` or a `size` below the first layout. Thread-safe.
///
/// # Safety
/// `params` is NULL or writable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn ac_engine_params_init(
    params: *mut ac_engine_params,
    size: usize,
) -> ac_status {
    guard(|| {}, || unsafe { init_params(params, size) })
}

/// Opens the model at `path` and stores a new engine handle in `*out` (NULL on failure).
///
/// `path` is a llama2.c `.bin` checkpoint, a Hugging Face directory or a variants directory
/// (any bytes but NUL; it need not be UTF-8). Two built-in models need no file, so hosts can
/// smoke-test without downloads: `"builtin:demo"` (the CLI demo's seeded synthetic model, a few
/// million parameters) and `"builtin:tiny"` (a stories260K-shaped synthetic model); both use a
/// byte-level tokenizer and produce deterministic, meaningless text.
///
/// The device is checked here: `"cuda"` or `"cuda:N"` without that usable GPU fails the open
/// with `AC_NO_DEVICE` (`"auto"` falls back to the CPU).
///
/// `params` may be NULL for the defaults. Errors: `AC_INVALID_ARGUMENT` (NULL `path` or `out`,
/// unknown device, bad built-in name, bad `params->size`), `AC_IO` (missing file),
/// `AC_CORRUPT_MODEL`, `AC_UNSUPPORTED`, `AC_NO_DEVICE`, `AC_OUT_OF_MEMORY`. Thread-safe.
///
/// # Safety
/// `path` and the strings in `*params` are NULL or NUL-terminated; `params` is NULL or points
/// to an `ac_engine_params` readable for `params->size` bytes; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_engine_open(
    path: *const c_char,
    params: *const ac_engine_params,
    out: *mut *mut ac_engine,
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
        // SAFETY: NULL or readable for `params->size` bytes per the contract.
        let params = unsafe { read_params(params) }?;
        let path = unsafe { c_path(path, "path") }?;
        let device: Device = unsafe { opt_c_str(params.device, "params->device") }?
            .unwrap_or("auto")
            .parse()?;
        let engine = match path.to_str().filter(|p| Engine::is_builtin(p)) {
            Some(name) => {
                if !params.tokenizer_path.is_null() {
                    return Err(Error::invalid(format!(
                        "{name} uses its own byte tokenizer: params->tokenizer_path must be NULL"
                    )));
                }
                Engine::builtin(name)?.device(device).build()?
            }
            None => {
                let mut b = Engine::builder(&path)
                    .device(device)
                    .prefetch(params.prefetch)
                    .controller_on_device(params.controller_on_device);
                if params.memory_budget > 0 {
                    b = b.memory_budget(params.memory_budget);
                }
                if !params.tokenizer_path.is_null() {
                    b = b.tokenizer_path(unsafe {
                        c_path(params.tokenizer_path, "params->tokenizer_path")
                    }?);
                }
                b.build()?
            }
        };
        let handle = ENGINES.insert(engine)?;
        // SAFETY: writable per the contract.
        unsafe { *out = handle.cast() };
        Ok(())
    })
}

/// Closes an engine. NULL is ignored. Closing a handle that is not live (closed twice, never
/// opened) frees nothing and records a message for `ac_last_error()`. After this call the
/// handle must not be used; calls still running on it on other threads finish normally.
/// Results from `ac_run` stay valid after their engine is closed. Thread-safe.
#[no_mangle]
pub extern "C" fn ac_engine_close(engine: *mut ac_engine) {
    let _ = guard(
        || {},
        || {
            if engine.is_null() {
                return Ok(());
            }
            ENGINES.remove(engine.cast())
        },
    );
}

/// Decides which variant would serve `task`, without running it, and stores the decision in
/// `*out`. `task` must be non-empty UTF-8. Thread-safe.
///
/// # Safety
/// `task` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_route(
    engine: *mut ac_engine,
    task: *const c_char,
    out: *mut ac_route_info,
) -> ac_status {
    guard(
        || {},
        || {
            let out = out_ptr(out, "out")?;
            let engine = engine_of(engine)?;
            let task = unsafe { c_str(task, "task") }?;
            let route = engine.route(task)?;
            // SAFETY: writable per the contract.
            unsafe { *out = ac_route_info::from(&route) };
            Ok(())
        },
    )
}

/// Writes the reasons `ac_route` would give for `task` (complexity, expected quality against
/// the target, the chosen variant, alternatives with their costs, swap or hit), one per line,
/// into `buf` as a NUL-terminated string truncated to `cap` bytes, and the full length
/// (excluding the NUL) into `*len` when `len` is not NULL. `buf` may be NULL when `cap` is 0,
/// to ask for the length. `task` must be non-empty UTF-8. Thread-safe.
///
/// # Safety
/// `task` is NULL or NUL-terminated; `buf` is NULL or writable for `cap` bytes; `len` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_route_reasons(
    engine: *mut ac_engine,
    task: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> ac_status {
    guard(
        || {},
        || {
            if buf.is_null() && cap > 0 {
                return Err(Error::invalid("buf is NULL but cap is not 0"));
            }
            let engine = engine_of(engine)?;
            let task = unsafe { c_str(task, "task") }?;
            let text = engine.route(task)?.reasons.join("\n");
            if cap > 0 {
                let n = text.len().min(cap - 1);
                // SAFETY: `buf` is writable for `cap` bytes per the contract and n < cap.
                unsafe {
                    std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            if !len.is_null() {
                // SAFETY: writable per the contract.
                unsafe { *len = text.len() };
            }
            Ok(())
        },
    )
}

/// Stores the engine's counters since it was opened in `*out`. Thread-safe: the counters are
/// a consistent snapshot.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ac_engine_stats(
    engine: *const ac_engine,
    out: *mut ac_stats,
) -> ac_status {
    guard(
        || {},
        || {
            let out = out_ptr(out, "out")?;
            let s = engine_of(engine)?.stats();
            // SAFETY: writable per the contract.
            unsafe {
                *out = ac_stats {
                    tasks: s.tasks,
                    tokens: s.tokens,
                    per_precision: s.per_precision.into_array(),
                    swaps: s.swaps,
                    hits: s.hits,
                    bytes_streamed: s.bytes_streamed,
                    cost: s.cost,
                    bytes_loaded: s.bytes_loaded,
                    swap_seconds: s.swap_seconds,
                    prefetches: s.prefetches,
                    prefetch_hits: s.prefetch_hits,
                }
            };
            Ok(())
        },
    )
}

/// The lower-case name of a precision (`"fp16"`, `"int8"`, `"int4"`, `"int2"`) as a static
/// string; `"unknown"` for a value outside the enum. Safe to call from any thread.
#[no_mangle]
pub extern "C" fn ac_precision_name(precision: i32) -> *const c_char {
    let name: &'static std::ffi::CStr = match precision {
        0 => c"fp16",
        1 => c"int8",
        2 => c"int4",
        3 => c"int2",
        _ => c"unknown",
    };
    name.as_ptr()
}
