//! Tests through the C ABI: every exported function called the way a C host calls it, with
//! good and bad arguments.

use crate::*;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

/// This thread's last error message.
fn last_error() -> String {
    unsafe { CStr::from_ptr(ac_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Opens a built-in model (`builtin:tiny` unless named) on the CPU.
fn open(path: &str) -> *mut ac_engine {
    let path = CString::new(path).unwrap();
    let mut p = ac_engine_default_params();
    p.device = c"cpu".as_ptr();
    let mut e = null_mut();
    let s = unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) };
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    assert!(!e.is_null());
    e
}

/// What the collecting callback saw.
#[derive(Default)]
struct Collected {
    text: Vec<u8>,
    ids: Vec<u32>,
    indices_in_order: bool,
    saw_tail: bool,
    stop_after: Option<usize>,
}

unsafe extern "C" fn collect(user: *mut c_void, token: *const ac_token) -> bool {
    let c = unsafe { &mut *(user as *mut Collected) };
    let t = unsafe { &*token };
    let text = unsafe { CStr::from_ptr(t.text) }.to_bytes();
    assert_eq!(text.len(), t.text_len);
    c.text.extend_from_slice(text);
    let repeat = c.ids.last() == Some(&t.id) && t.index as usize + 1 == c.ids.len();
    if repeat && !c.saw_tail {
        // The final event of a generation that ended inside a multi-byte character: it repeats
        // the last token and carries the held-back text.
        c.saw_tail = true;
    } else {
        c.indices_in_order &= t.index as usize == c.ids.len() && !c.saw_tail;
        c.ids.push(t.id);
    }
    c.stop_after.is_none_or(|n| c.ids.len() < n)
}

/// Asserts that a call failed with `AC_INVALID_ARGUMENT` and a message containing `want`.
#[track_caller]
fn check(status: ac_status, want: &str) {
    assert_eq!(status, ac_status::AC_INVALID_ARGUMENT, "expected '{want}'");
    let msg = last_error();
    assert!(msg.contains(want), "'{msg}' does not mention '{want}'");
}

fn params(max_tokens: u32) -> ac_run_params {
    let mut p = ac_run_default_params();
    p.max_tokens = max_tokens;
    p.stop_at_eos = false;
    p
}

/// Runs `task` with the collecting callback; returns the status, result and what was seen.
fn run(
    engine: *mut ac_engine,
    task: &CStr,
    p: &ac_run_params,
    stop_after: Option<usize>,
) -> (ac_status, *mut ac_result, Collected) {
    let mut c = Collected {
        indices_in_order: true,
        stop_after,
        ..Default::default()
    };
    let mut r = null_mut();
    let s = unsafe {
        ac_run(
            engine,
            task.as_ptr(),
            p,
            Some(collect),
            (&mut c as *mut Collected).cast(),
            &mut r,
        )
    };
    (s, r, c)
}

fn info(r: *mut ac_result) -> ac_run_info {
    let mut i = ac_run_info::default();
    assert_eq!(unsafe { ac_result_info(r, &mut i) }, ac_status::AC_OK);
    i
}

fn stats(e: *mut ac_engine) -> ac_stats {
    let mut s = ac_stats::default();
    assert_eq!(unsafe { ac_engine_stats(e, &mut s) }, ac_status::AC_OK);
    s
}

fn text(r: *mut ac_result) -> Vec<u8> {
    let p = ac_result_text(r);
    assert!(!p.is_null(), "{}", last_error());
    unsafe { CStr::from_ptr(p) }.to_bytes().to_vec()
}

#[test]
fn version_and_static_names() {
    let v = unsafe { CStr::from_ptr(ac_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let part = |s: &str| s.parse::<u32>().unwrap();
    assert_eq!(
        [AC_VERSION_MAJOR, AC_VERSION_MINOR, AC_VERSION_PATCH],
        [
            part(env!("CARGO_PKG_VERSION_MAJOR")),
            part(env!("CARGO_PKG_VERSION_MINOR")),
            part(env!("CARGO_PKG_VERSION_PATCH"))
        ],
        "ffi/src/version.rs must match the crate version"
    );
    assert_eq!(
        ac_version_number(),
        AC_VERSION_MAJOR * 10000 + AC_VERSION_MINOR * 100 + AC_VERSION_PATCH
    );
    let name = |p: ac_precision| unsafe { CStr::from_ptr(ac_precision_name(p as i32)) };
    assert_eq!(
        name(ac_precision::AC_PRECISION_INT4).to_str().unwrap(),
        "int4"
    );
    assert_eq!(
        unsafe { CStr::from_ptr(ac_precision_name(17)) }
            .to_str()
            .unwrap(),
        "unknown"
    );
}

#[test]
fn run_streams_routes_and_counts() {
    let e = open("builtin:tiny");
    let task = c"Summarise the report in two lines.";
    let mut route = unsafe { std::mem::zeroed::<ac_route_info>() };
    assert_eq!(
        unsafe { ac_route(e, task.as_ptr(), &mut route) },
        ac_status::AC_OK
    );
    assert!(route.expected_cost > 0.0 && route.expected_cost <= 1.0);
    assert!(route.has_complexity || route.complexity == 0.0);

    let (s, r, seen) = run(e, task, &params(12), None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let i = info(r);
    assert_eq!(i.tokens, 12);
    assert_eq!(seen.ids.len(), 12);
    assert!(seen.indices_in_order);
    assert!(!i.cancelled && !i.hit_eos);
    assert_eq!(
        i.prompt_tokens,
        task.to_bytes().len() as u64 + 1,
        "BOS + one id per byte"
    );
    assert_eq!(
        text(r),
        seen.text,
        "the stream concatenates to the result text"
    );
    assert_eq!(i.text_len, seen.text.len());
    let mut taken = unsafe { std::mem::zeroed::<ac_route_info>() };
    assert_eq!(unsafe { ac_result_route(r, &mut taken) }, ac_status::AC_OK);
    assert_eq!(
        taken.precision, route.precision,
        "run takes the variant ac_route predicted"
    );

    let st = stats(e);
    assert_eq!((st.tasks, st.tokens), (1, 12));
    assert_eq!(st.per_precision[taken.precision as usize], 1);
    assert_eq!(st.per_precision.iter().sum::<u64>(), 1);
    assert_eq!(st.hits + st.swaps, 1);
    assert_eq!(st.swaps, u64::from(taken.swap));
    assert!((st.cost - taken.expected_cost).abs() < 1e-9);

    // A greedy rerun is identical; a NULL callback and NULL params are allowed.
    let (_, r2, seen2) = run(e, task, &params(12), None);
    assert_eq!(seen2.ids, seen.ids);
    let mut r3 = null_mut();
    let s = unsafe { ac_run(e, task.as_ptr(), null(), None, null_mut(), &mut r3) };
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    assert!(info(r3).tokens > 0);
    assert_eq!(stats(e).tasks, 3);
    for x in [r, r2, r3] {
        ac_result_free(x);
    }
    ac_engine_close(e);
}

#[test]
fn sampling_is_seeded_and_zero_tokens_is_allowed() {
    let e = open("builtin:tiny");
    let mut p = params(10);
    p.temperature = 0.9;
    p.top_p = 0.95;
    p.seed = 11;
    let (_, a, sa) = run(e, c"write a haiku", &p, None);
    let (_, b, sb) = run(e, c"write a haiku", &p, None);
    assert_eq!(sa.ids, sb.ids);
    let (s, z, sz) = run(e, c"write a haiku", &params(0), None);
    assert_eq!(s, ac_status::AC_OK);
    assert_eq!((info(z).tokens, sz.ids.len()), (0, 0));
    assert_eq!(text(z), b"");
    for x in [a, b, z] {
        ac_result_free(x);
    }
    ac_engine_close(e);
}

#[test]
fn callback_returning_false_cancels_with_ok_and_partial_text() {
    let e = open("builtin:tiny");
    let (s, r, seen) = run(e, c"count to ten", &params(20), Some(3));
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let i = info(r);
    assert!(i.cancelled);
    assert_eq!((i.tokens, seen.ids.len()), (3, 3));
    assert!(seen.indices_in_order);
    assert_eq!(text(r), seen.text);
    assert_eq!(stats(e).tokens, 3);
    ac_result_free(r);
    ac_engine_close(e);
}

#[test]
fn null_arguments_are_invalid_and_named() {
    let e = open("builtin:tiny");
    let task = c"plan";
    let mut out_e = std::ptr::dangling_mut::<ac_engine>();
    let s = unsafe { ac_engine_open(null(), null(), &mut out_e) };
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(out_e.is_null(), "a failed open nulls *out");
    assert!(last_error().contains("path is NULL"));
    let s = unsafe { ac_engine_open(c"builtin:tiny".as_ptr(), null(), null_mut()) };
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(last_error().contains("out is NULL"));

    let mut route = unsafe { std::mem::zeroed::<ac_route_info>() };
    let mut r = null_mut();
    unsafe {
        check(
            ac_route(null_mut(), task.as_ptr(), &mut route),
            "engine handle is NULL",
        );
        check(ac_route(e, null(), &mut route), "task is NULL");
        check(ac_route(e, task.as_ptr(), null_mut()), "out is NULL");
        check(
            ac_engine_stats(null(), &mut ac_stats::default()),
            "engine handle is NULL",
        );
        check(ac_engine_stats(e, null_mut()), "out is NULL");
        check(
            ac_run(null_mut(), task.as_ptr(), null(), None, null_mut(), &mut r),
            "engine handle is NULL",
        );
        check(
            ac_run(e, null(), null(), None, null_mut(), &mut r),
            "task is NULL",
        );
        check(
            ac_run(e, task.as_ptr(), null(), None, null_mut(), null_mut()),
            "out is NULL",
        );
        check(ac_result_route(null(), &mut route), "result handle is NULL");
        check(
            ac_result_info(null(), &mut ac_run_info::default()),
            "result handle is NULL",
        );
    }
    assert!(ac_result_text(null()).is_null());
    assert!(last_error().contains("result handle is NULL"));
    let (_, r, _) = run(e, task, &params(2), None);
    check(unsafe { ac_result_route(r, null_mut()) }, "out is NULL");
    check(unsafe { ac_result_info(r, null_mut()) }, "out is NULL");
    ac_engine_close(null_mut());
    ac_result_free(null_mut());
    assert_eq!(last_error(), "", "closing NULL is a no-op, not an error");
    assert_eq!(stats(e).tasks, 1, "failed calls count nothing");
    ac_result_free(r);
    ac_engine_close(e);
}

#[test]
fn bad_paths_corrupt_models_and_bad_params_are_reported() {
    let open_status = |path: &CStr, device: Option<&CStr>, tok: Option<&CStr>| {
        let mut p = ac_engine_default_params();
        p.device = device.map_or(null(), CStr::as_ptr);
        p.tokenizer_path = tok.map_or(null(), CStr::as_ptr);
        let mut e = null_mut();
        let s = unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) };
        assert!(e.is_null() || s == ac_status::AC_OK);
        (s, last_error())
    };
    let (s, msg) = open_status(c"/nonexistent/model.bin", None, None);
    assert_eq!(s, ac_status::AC_IO);
    assert!(msg.contains("/nonexistent/model.bin"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.bin");
    std::fs::write(&bad, [7u8; 40]).unwrap();
    let bad_c = CString::new(bad.to_str().unwrap()).unwrap();
    let (s, msg) = open_status(&bad_c, Some(c"cpu"), None);
    assert_eq!(s, ac_status::AC_CORRUPT_MODEL, "{msg}");
    assert!(msg.contains("corrupt.bin"), "{msg}");

    let (s, msg) = open_status(c"builtin:tiny", Some(c"tpu"), None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(msg.contains("tpu"), "{msg}");
    let (s, msg) = open_status(c"builtin:nothing", None, None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(msg.contains("builtin:nothing"), "{msg}");
    let (s, msg) = open_status(c"builtin:tiny", None, Some(c"tok.bin"));
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(msg.contains("tokenizer_path"), "{msg}");
    let (s, _) = open_status(c"", None, None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    let (s, msg) = open_status(c"builtin:tiny", Some(c"cu\xffda"), None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(
        msg.contains("params->device") && msg.contains("UTF-8"),
        "{msg}"
    );

    let e = open("builtin:tiny");
    type Spoil = fn(&mut ac_run_params);
    let bads: [(&str, Spoil); 4] = [
        ("temperature", |p| p.temperature = -1.0),
        ("temperature", |p| p.temperature = f32::NAN),
        ("top_p", |p| p.top_p = 0.0),
        ("top_p", |p| p.top_p = 1.5),
    ];
    for (name, spoil) in bads {
        let mut p = params(4);
        spoil(&mut p);
        let mut r = std::ptr::dangling_mut::<ac_result>();
        let s = unsafe { ac_run(e, c"x".as_ptr(), &p, None, null_mut(), &mut r) };
        assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
        assert!(r.is_null());
        assert!(last_error().contains(name), "{}", last_error());
    }
    assert_eq!(stats(e).tasks, 0);
    ac_engine_close(e);
}

#[test]
fn invalid_utf8_and_empty_tasks_are_rejected() {
    let e = open("builtin:tiny");
    let bad: &CStr = c"caf\xc3";
    let mut route = unsafe { std::mem::zeroed::<ac_route_info>() };
    assert_eq!(
        unsafe { ac_route(e, bad.as_ptr(), &mut route) },
        ac_status::AC_INVALID_ARGUMENT
    );
    assert!(last_error().contains("UTF-8"), "{}", last_error());
    let (s, r, seen) = run(e, bad, &params(4), None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(r.is_null() && seen.ids.is_empty());
    assert!(last_error().contains("task is not valid UTF-8"));
    let (s, _, _) = run(e, c"", &params(4), None);
    assert_eq!(s, ac_status::AC_INVALID_ARGUMENT);
    assert!(last_error().contains("empty"), "{}", last_error());
    assert_eq!(stats(e).tasks, 0);
    ac_engine_close(e);
}

#[test]
fn double_close_double_free_and_stale_handles_are_detected() {
    let e = open("builtin:tiny");
    let (_, r, seen) = run(e, c"hello", &params(3), None);
    ac_engine_close(e);
    assert_eq!(last_error(), "");
    ac_engine_close(e);
    assert!(last_error().contains("not live"), "{}", last_error());
    let mut route = unsafe { std::mem::zeroed::<ac_route_info>() };
    assert_eq!(
        unsafe { ac_route(e, c"hello".as_ptr(), &mut route) },
        ac_status::AC_INVALID_ARGUMENT
    );
    assert!(last_error().contains("engine handle"));

    // The result outlives its engine, and a result handle is not an engine handle.
    assert_eq!(text(r), seen.text);
    assert_eq!(
        unsafe { ac_engine_stats(r.cast(), &mut ac_stats::default()) },
        ac_status::AC_INVALID_ARGUMENT
    );
    ac_result_free(r);
    assert_eq!(last_error(), "");
    ac_result_free(r);
    assert!(last_error().contains("result handle") && last_error().contains("not live"));
    assert!(ac_result_text(r).is_null());
    let forged = 0x1234_5670usize as *mut ac_engine;
    ac_engine_close(forged);
    assert!(last_error().contains("not live"));

    // A new engine never reuses a closed handle's value.
    let e2 = open("builtin:tiny");
    assert_ne!(e2, e);
    ac_engine_close(e2);
}

#[test]
fn last_error_is_per_thread() {
    let e = open("builtin:tiny");
    unsafe { ac_route(e, null(), &mut std::mem::zeroed()) };
    let here = last_error();
    let other = std::thread::spawn(|| {
        let before = last_error();
        ac_engine_close(0x10usize as *mut ac_engine);
        (before, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(other.0, "");
    assert!(other.1.contains("not live"));
    assert_eq!(last_error(), here);
    ac_engine_close(e);
}

/// A raw engine handle that may be sent to another thread (ac_engine is documented thread-safe).
#[derive(Clone, Copy)]
struct Shared(*mut ac_engine);
unsafe impl Send for Shared {}

#[test]
fn two_threads_share_one_engine() {
    let e = Shared(open("builtin:tiny"));
    let tasks = [c"first task", c"second, longer task"];
    let solo: Vec<Vec<u32>> = tasks
        .iter()
        .map(|t| {
            let (_, r, seen) = run(e.0, t, &params(8), None);
            ac_result_free(r);
            seen.ids
        })
        .collect();
    let workers: Vec<_> = tasks
        .iter()
        .map(|t| {
            let task = CString::from(*t);
            std::thread::spawn(move || {
                let e = e;
                (0..3)
                    .map(|_| {
                        let (s, r, seen) = run(e.0, &task, &params(8), None);
                        assert_eq!(s, ac_status::AC_OK, "{}", last_error());
                        ac_result_free(r);
                        seen.ids
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (w, expect) in workers.into_iter().zip(&solo) {
        for ids in w.join().unwrap() {
            assert_eq!(&ids, expect, "concurrent runs do not disturb each other");
        }
    }
    let st = stats(e.0);
    assert_eq!((st.tasks, st.tokens), (8, 64));
    ac_engine_close(e.0);
}

/// Shared state of the close-while-running test.
struct Rendezvous {
    started: std::sync::mpsc::Sender<()>,
    closed: std::sync::mpsc::Receiver<()>,
    first: bool,
}

unsafe extern "C" fn wait_for_close(user: *mut c_void, _token: *const ac_token) -> bool {
    let r = unsafe { &mut *(user as *mut Rendezvous) };
    if r.first {
        r.first = false;
        r.started.send(()).unwrap();
        r.closed.recv().unwrap();
    }
    true
}

#[test]
fn closing_while_another_thread_runs_is_safe() {
    let e = Shared(open("builtin:tiny"));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let e = e;
        let mut rv = Rendezvous {
            started: started_tx,
            closed: closed_rx,
            first: true,
        };
        let mut r = null_mut();
        let p = params(6);
        let s = unsafe {
            ac_run(
                e.0,
                c"keep going".as_ptr(),
                &p,
                Some(wait_for_close),
                (&mut rv as *mut Rendezvous).cast(),
                &mut r,
            )
        };
        let tokens = if s == ac_status::AC_OK {
            info(r).tokens
        } else {
            0
        };
        ac_result_free(r);
        (s, tokens)
    });
    started_rx.recv().unwrap();
    ac_engine_close(e.0);
    assert_eq!(last_error(), "");
    closed_tx.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), (ac_status::AC_OK, 6));
    assert_eq!(
        unsafe { ac_engine_stats(e.0, &mut ac_stats::default()) },
        ac_status::AC_INVALID_ARGUMENT
    );
}

#[test]
fn the_demo_model_opens_and_runs() {
    let e = open("builtin:demo");
    let (s, r, seen) = run(
        e,
        c"Plan the steps to summarise a report.",
        &params(3),
        None,
    );
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    assert_eq!(seen.ids.len(), 3);
    assert!(seen.indices_in_order);
    assert!(seen.ids.iter().all(|&id| id < 259));
    assert_eq!(text(r), seen.text);
    ac_result_free(r);
    ac_engine_close(e);
}

/// The stories260K folder under `$AGENTCOMPRESS_MODELS` or the nearest `shared/models` above
/// the crate, or `None` after printing why the test skips.
fn stories260k_dir() -> Option<std::path::PathBuf> {
    let models = match std::env::var_os("AGENTCOMPRESS_MODELS") {
        Some(d) => Some(std::path::PathBuf::from(d)),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .skip(1)
            .map(|a| a.join("shared").join("models"))
            .find(|d| d.is_dir()),
    };
    let found = models.map(|d| d.join("stories260K")).filter(|d| d.is_dir());
    if found.is_none() {
        eprintln!("skipped: stories260K not found (set AGENTCOMPRESS_MODELS)");
    }
    found
}

/// stories260K quantized (RTN) into a temporary variants directory without a controller.
fn variants_dir() -> Option<tempfile::TempDir> {
    use ac::pipeline::{build_variants, BuildOptions};
    let root = stories260k_dir()?;
    let dense = ac::model::llama2c::load(&root.join("stories260K.bin")).unwrap();
    let tok = std::fs::read(root.join("tok512.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        quant: ac::quant::QuantConfig {
            method: ac::quant::Method::Rtn,
            ..Default::default()
        },
        calibration: None,
        evaluation: None,
    };
    build_variants(
        &dense,
        "stories260K",
        dir.path(),
        Some(("tokenizer.bin", &tok)),
        &opts,
        &mut |_| {},
    )
    .unwrap();
    Some(dir)
}

#[test]
fn variants_directory_routes_with_reasons_budget_and_load_counters() {
    let Some(dir) = variants_dir() else {
        return;
    };
    let path = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut p = ac_engine_default_params();
    p.device = c"cpu".as_ptr();
    let mut e = null_mut();
    p.memory_budget = 1000;
    let s = unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) };
    check(s, "cannot hold");
    assert!(e.is_null());
    p.memory_budget = 0;
    p.prefetch = true;
    // Asking for the controller on the device changes nothing on the CPU.
    p.controller_on_device = true;
    assert_eq!(
        unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) },
        ac_status::AC_OK,
        "{}",
        last_error()
    );
    let task = c"Once upon a time";
    let mut len = 0usize;
    assert_eq!(
        unsafe { ac_route_reasons(e, task.as_ptr(), null_mut(), 0, &mut len) },
        ac_status::AC_OK
    );
    let mut buf = vec![0 as std::ffi::c_char; len + 1];
    assert_eq!(
        unsafe { ac_route_reasons(e, task.as_ptr(), buf.as_mut_ptr(), buf.len(), null_mut()) },
        ac_status::AC_OK
    );
    let reasons = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(reasons.len(), len);
    assert!(
        reasons.contains("controller.safetensors") && reasons.contains("\nchose fp16"),
        "{reasons}"
    );
    // Truncated to the buffer, still NUL-terminated.
    let mut small = [1 as std::ffi::c_char; 8];
    assert_eq!(
        unsafe { ac_route_reasons(e, task.as_ptr(), small.as_mut_ptr(), 8, null_mut()) },
        ac_status::AC_OK
    );
    assert_eq!(
        unsafe { CStr::from_ptr(small.as_ptr()) }.to_bytes().len(),
        7
    );
    check(
        unsafe { ac_route_reasons(e, task.as_ptr(), null_mut(), 4, null_mut()) },
        "buf is NULL",
    );

    let (s, r, _) = run(e, task, &params(3), None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let rr = unsafe { CStr::from_ptr(ac_result_reasons(r)) }
        .to_str()
        .unwrap();
    assert!(rr.contains("chose fp16") && rr.contains("swap"), "{rr}");
    ac_result_free(r);
    let (_, r, _) = run(e, task, &params(3), None);
    let rr = unsafe { CStr::from_ptr(ac_result_reasons(r)) }
        .to_str()
        .unwrap();
    assert!(rr.contains("hit"), "{rr}");
    ac_result_free(r);
    assert!(ac_result_reasons(null()).is_null());
    let st = stats(e);
    assert_eq!((st.tasks, st.swaps, st.hits), (2, 1, 1));
    assert!(st.bytes_loaded > 0 && st.swap_seconds > 0.0);
    assert_eq!(st.per_precision[0], 2);
    ac_engine_close(e);
}

#[test]
fn speculative_runs_give_the_plain_output_and_report_their_counters() {
    let Some(dir) = variants_dir() else {
        return;
    };
    let path = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut p = ac_engine_default_params();
    p.device = c"cpu".as_ptr();
    let mut e = null_mut();
    assert_eq!(
        unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) },
        ac_status::AC_OK,
        "{}",
        last_error()
    );
    let task = c"Once upon a time";
    let (s, plain, seen_plain) = run(e, task, &params(40), None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let mut counts = [7u64; 3];
    let [d, a, v] = &mut counts;
    assert_eq!(
        unsafe { ac_result_speculation(plain, d, a, v) },
        ac_status::AC_OK
    );
    assert_eq!(counts, [0; 3]);
    for (draft, k) in [
        (ac_precision::AC_PRECISION_INT4, 3),
        (ac_precision::AC_PRECISION_INT8, 0),
    ] {
        let mut sp = params(40);
        sp.speculate = true;
        sp.draft_precision = draft as i32;
        sp.draft_len = k;
        let (s, r, seen) = run(e, task, &sp, None);
        assert_eq!(s, ac_status::AC_OK, "{}", last_error());
        assert_eq!(seen.ids, seen_plain.ids, "{draft:?}");
        assert_eq!(text(r), text(plain), "{draft:?}");
        let [d, a, v] = &mut counts;
        assert_eq!(
            unsafe { ac_result_speculation(r, d, a, v) },
            ac_status::AC_OK
        );
        let [drafted, accepted, verifies] = counts;
        assert!(
            drafted > 0 && accepted <= drafted && verifies > 0,
            "{counts:?}"
        );
        let rr = unsafe { CStr::from_ptr(ac_result_reasons(r)) }
            .to_str()
            .unwrap();
        assert!(rr.contains("via speculation from"), "{rr}");
        ac_result_free(r);
    }
    ac_result_free(plain);
    // A draft that is not cheaper than the routed variant: runs plainly, and says so.
    let mut sp = params(4);
    sp.speculate = true;
    sp.draft_precision = ac_precision::AC_PRECISION_FP16 as i32;
    let (s, r, _) = run(e, task, &sp, None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let rr = unsafe { CStr::from_ptr(ac_result_reasons(r)) }
        .to_str()
        .unwrap();
    assert!(rr.contains("no speculation"), "{rr}");
    ac_result_free(r);
    sp.draft_precision = 9;
    let (s, r, _) = run(e, task, &sp, None);
    assert!(r.is_null());
    check(s, "draft_precision 9");
    ac_engine_close(e);
    // A single model has nothing to draft with.
    let e = open("builtin:tiny");
    sp.draft_precision = ac_precision::AC_PRECISION_INT4 as i32;
    let (s, _, _) = run(e, task, &sp, None);
    check(s, "speculation needs a variant directory");
    ac_engine_close(e);
}

#[test]
fn params_sizes_are_set_by_the_initialisers_and_checked() {
    assert_eq!(
        ac_engine_default_params().size,
        std::mem::size_of::<ac_engine_params>()
    );
    assert_eq!(
        ac_run_default_params().size,
        std::mem::size_of::<ac_run_params>()
    );
    let mut p = ac_engine_default_params();
    p.device = c"cpu".as_ptr();
    let mut e = null_mut();
    for (size, want) in [(0, "params->size is 0"), (8, "params->size is 8")] {
        p.size = size;
        let s = unsafe { ac_engine_open(c"builtin:tiny".as_ptr(), &p, &mut e) };
        check(s, want);
        assert!(e.is_null());
    }
    // The init form fills a host's struct of its own size.
    let mut q = ac_engine_default_params();
    q.size = 0;
    q.memory_budget = 77;
    let s = unsafe { ac_engine_params_init(&mut q, std::mem::size_of::<ac_engine_params>()) };
    assert_eq!(s, ac_status::AC_OK);
    assert_eq!(
        (q.size, q.memory_budget),
        (std::mem::size_of::<ac_engine_params>(), 0)
    );
    check(
        unsafe { ac_engine_params_init(&mut q, 3) },
        "params->size is 3",
    );
    check(
        unsafe { ac_engine_params_init(null_mut(), 64) },
        "params is NULL",
    );

    let e = open("builtin:tiny");
    let mut r = params(2);
    r.size = 0;
    let mut out = null_mut();
    let s = unsafe { ac_run(e, c"hi".as_ptr(), &r, None, null_mut(), &mut out) };
    check(s, "params->size is 0");
    assert!(out.is_null());
    let mut r2 = params(2);
    assert_eq!(
        unsafe { ac_run_params_init(&mut r2, std::mem::size_of::<ac_run_params>()) },
        ac_status::AC_OK
    );
    assert_eq!(r2.max_tokens, ac_run_default_params().max_tokens);
    ac_engine_close(e);
}

#[test]
fn an_explicit_gpu_that_is_not_there_fails_at_open() {
    let Some(dir) = variants_dir() else {
        return;
    };
    let variants = CString::new(dir.path().to_str().unwrap()).unwrap();
    for path in [c"builtin:tiny", variants.as_c_str()] {
        let mut p = ac_engine_default_params();
        p.device = c"cuda:999".as_ptr();
        let mut e = null_mut();
        let s = unsafe { ac_engine_open(path.as_ptr(), &p, &mut e) };
        assert_eq!(s, ac_status::AC_NO_DEVICE, "{path:?}: {}", last_error());
        assert!(last_error().contains("cuda:999"), "{}", last_error());
        assert!(e.is_null());
    }
}

/// `context` and `truncate_prompt`, appended to `ac_run_params` after its first layout: a host
/// built against the first layout (its `size` ends at `stop_at_eos`, and whatever its padding
/// holds) gets the default context; a small context refuses a long prompt, naming both
/// lengths, unless `truncate_prompt` asks to drop the oldest prompt tokens.
#[test]
fn run_params_carry_the_context_and_truncation() {
    let e = open("builtin:tiny");
    let task = c"one two three four five six seven eight nine ten eleven twelve";
    let (s, r, _) = run(e, task, &params(2), None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let prompt = info(r).prompt_tokens;
    ac_result_free(r);
    assert!(
        prompt > 8,
        "the task should take more than 8 tokens, took {prompt}"
    );

    // The first layout: `size` stops before `context`; bytes past it are never read.
    let mut old = params(2);
    old.size = std::mem::offset_of!(ac_run_params, context);
    old.context = 4;
    old.truncate_prompt = true;
    let (s, r, _) = run(e, task, &old, None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    assert_eq!(info(r).prompt_tokens, prompt);
    ac_result_free(r);

    let mut small = params(2);
    small.context = 8;
    let (s, r, _) = run(e, task, &small, None);
    assert!(r.is_null());
    check(s, "8");
    let msg = last_error();
    assert!(msg.contains(&prompt.to_string()), "{msg}");

    small.truncate_prompt = true;
    small.max_tokens = 50;
    let (s, r, _) = run(e, task, &small, None);
    assert_eq!(s, ac_status::AC_OK, "{}", last_error());
    let i = info(r);
    assert!(i.prompt_tokens < 8 && i.tokens >= 1, "{i:?}");
    let (mut ctx, mut limited, mut dropped) = (0u64, false, 0u64);
    assert_eq!(
        unsafe { ac_result_context(r, &mut ctx, &mut limited, &mut dropped) },
        ac_status::AC_OK
    );
    assert_eq!((ctx, limited), (8, true));
    assert_eq!(dropped + i.prompt_tokens, prompt);
    assert_eq!(i.prompt_tokens + i.tokens, 8);
    ac_result_free(r);
    check(
        unsafe { ac_result_context(r, null_mut(), null_mut(), null_mut()) },
        "result",
    );
    ac_engine_close(e);
}

/// `bos`, appended after the second layout: the default follows the tokenizer (the built-in
/// model's byte tokenizer adds BOS), `AC_BOS_NONE` drops it, `AC_BOS_ADD` keeps exactly one,
/// an unknown value is refused by name, and a host of the second layout (its `size` ends
/// before `bos`) gets the default whatever its padding holds.
#[test]
fn run_params_choose_the_bos_token() {
    let e = open("builtin:tiny");
    let task = c"one two three";
    let prompt_tokens = |p: &ac_run_params| {
        let (s, r, _) = run(e, task, p, None);
        assert_eq!(s, ac_status::AC_OK, "{}", last_error());
        let n = info(r).prompt_tokens;
        ac_result_free(r);
        n
    };
    let default = prompt_tokens(&params(1));
    let mut p = params(1);
    p.bos = AC_BOS_NONE;
    assert_eq!(prompt_tokens(&p), default - 1);
    p.bos = AC_BOS_ADD;
    assert_eq!(prompt_tokens(&p), default);
    let mut old = params(1);
    old.size = std::mem::offset_of!(ac_run_params, bos);
    old.bos = AC_BOS_NONE;
    assert_eq!(prompt_tokens(&old), default);
    p.bos = 7;
    let (s, r, _) = run(e, task, &p, None);
    assert!(r.is_null());
    check(s, "bos 7");
    ac_engine_close(e);
}
