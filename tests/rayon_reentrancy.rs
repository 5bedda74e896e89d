//! The public `Engine` driven from inside rayon: `generate`, `route` and `run` on resident,
//! routed and streamed engines (stories260K quantized into a temporary variant directory),
//! called from a `par_iter` in thread pools of 16 and 64 threads. While a worker waits for its
//! own parallel product, rayon runs other tasks on it (work stealing), so another engine call
//! re-enters on a thread already inside one. A `RefCell` borrowed across that product panics
//! ("already borrowed"); a lock held across it deadlocks. A watchdog ends the process with a
//! message when a round hangs; every call must give what the same call gives outside rayon.

mod common;

use agentcompress::api::CONTROLLER_FILE;
use agentcompress::api::{open_variant, Device, Engine, VariantOpenOptions};
use agentcompress::controller::{io as controller_io, Controller, ControllerConfig};
use agentcompress::engine::GenerateParams;
use agentcompress::quant::{PerPrecision, Precision};
use agentcompress::store::{load_variant, LoadOptions, Manifest};
use agentcompress::Error;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// Thread counts of the pools the engine is called from.
const THREADS: [usize; 2] = [16, 64];
/// Calls per pool: several per thread of the smaller pool, so stealing nests calls.
const CALLS: usize = 64;
/// How long one round may take before the watchdog calls it a hang (generous: a debug build
/// on a busy two-core machine finishes a round in a small fraction of it).
const HANG: Duration = Duration::from_secs(240);

const TASKS: [&str; 8] = [
    "Once upon a time",
    "Lily and Tom went to the park to play with a big red ball.",
    "The cat sat.",
    "Why did the little dog run to the tree? Think step by step.",
    "One day, a bird found a shiny stone near the river and took it home.",
    "Ben was sad because his toy broke.",
    "Write a list: apples, milk, bread.",
    "The sun was hot and the children wanted ice cream, so mom said yes.",
];

/// stories260K, or `None` (the test says it skipped) when the shared models are absent.
fn model_root() -> Option<PathBuf> {
    common::stories260k_dir()
}

/// The variant directory (built once for the file).
fn variants(root: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = common::fixture_dir("rayon_reentrancy-variants").join("variants");
        common::build_stories_variants(root, &out);
        out
    })
}

/// Ends the process with a message naming `what` unless dropped within [`HANG`]: a deadlock
/// would otherwise hang the test run instead of failing it.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn start(what: String) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HANG) {
                // Straight to stderr: the test harness captures `eprintln!`, and its buffer
                // is lost when the process exits.
                let _ = writeln!(
                    std::io::stderr(),
                    "HANG: {what} did not finish within {HANG:?}: a lock or borrow held \
                     across rayon work deadlocked"
                );
                std::process::exit(101);
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the watchdog with `Disconnected`: finished in time.
        self.0.take();
    }
}

/// Runs `call(i)` for `i` in `0..CALLS` from a `par_iter` in a pool of `threads` threads,
/// under a watchdog.
fn from_rayon(what: &str, threads: usize, call: impl Fn(usize) + Sync) {
    from_rayon_n(what, threads, CALLS, call)
}

/// [`from_rayon`] with `calls` calls.
fn from_rayon_n(what: &str, threads: usize, calls: usize, call: impl Fn(usize) + Sync) {
    let _dog = Watchdog::start(format!("{what} on {threads} rayon threads"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // One call per rayon task: many small tasks queued on every worker make it likely that a
    // worker waiting inside a call's parallel product picks up another call.
    pool.install(|| (0..calls).into_par_iter().with_max_len(1).for_each(&call));
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        stop_at_eos: false,
        ..GenerateParams::default()
    }
}

/// Generated ids of every task on `engine`, called in order outside rayon.
fn serial_ids(engine: &Engine, params: &GenerateParams) -> Vec<Vec<u32>> {
    TASKS
        .iter()
        .map(|t| engine.generate(t, params, |_| true).unwrap().ids)
        .collect()
}

#[test]
fn resident_engines_generate_from_rayon_workers() {
    let Some(root) = model_root() else { return };
    let dir = variants(&root);
    let params = greedy(6);
    // INT4 and INT2 run the packed GEMV with its per-thread scratch; FP16 the dense path.
    for precision in [Precision::Int4, Precision::Int2, Precision::Fp16] {
        let opts = VariantOpenOptions {
            precision,
            device: Device::Cpu,
            ..Default::default()
        };
        let engine = open_variant(dir, &opts).unwrap();
        let want = serial_ids(&engine, &params);
        for threads in THREADS {
            // Many short generations: every one of their products is a chance for a worker
            // to pick up another call while it waits.
            let what = format!("resident {precision} generate");
            from_rayon_n(&what, threads, 4 * CALLS, |i| {
                let t = i % TASKS.len();
                let got = engine.generate(TASKS[t], &greedy(2), |_| true).unwrap();
                assert_eq!(got.ids, want[t][..2], "{precision} task {t} inside rayon");
            });
            from_rayon(&format!("resident {precision} generate"), threads, |i| {
                let t = i % TASKS.len();
                let got = engine.generate(TASKS[t], &params, |_| true).unwrap();
                assert_eq!(got.ids, want[t], "{precision} task {t} inside rayon");
                let ran = engine.run(TASKS[t], &params, |_| true).unwrap();
                assert_eq!(ran.output.ids, want[t], "{precision} run of task {t}");
                assert_eq!(engine.route(TASKS[t]).unwrap().precision, precision);
            });
        }
    }
}

#[test]
fn streamed_engines_generate_from_rayon_workers() {
    let Some(root) = model_root() else { return };
    let dir = variants(&root);
    let params = greedy(4);
    // A pool smaller than the model (blocks load, evict and are waited for), without and with
    // the backend tier of uploaded blocks.
    for upload_budget in [0, 1 << 20] {
        let opts = VariantOpenOptions {
            precision: Precision::Int4,
            device: Device::Cpu,
            pool_budget: Some(256 << 10),
            upload_budget,
            ..Default::default()
        };
        let want = serial_ids(&open_variant(dir, &opts).unwrap(), &params);
        for threads in THREADS {
            // A fresh engine: its pool starts empty, so the loads happen inside rayon.
            let engine = open_variant(dir, &opts).unwrap();
            let served = AtomicUsize::new(0);
            let what = format!("streamed generate (upload budget {upload_budget})");
            from_rayon(&what, threads, |i| {
                let t = i % TASKS.len();
                let got = if i % 2 == 0 {
                    engine.run(TASKS[t], &params, |_| true).map(|r| r.output)
                } else {
                    engine.generate(TASKS[t], &params, |_| true)
                };
                match got {
                    Ok(out) => {
                        assert_eq!(out.ids, want[t], "streamed task {t} inside rayon");
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    // Concurrent passes pin blocks; when the pinned ones fill the pool, a
                    // pass is refused with a typed error (the pool's documented behaviour).
                    Err(Error::OutOfMemory(m)) => assert!(m.contains("pinned"), "{m}"),
                    Err(e) => panic!("streamed task {t} inside rayon: {e}"),
                }
            });
            assert!(served.load(Ordering::Relaxed) > 0, "no streamed pass ran");
            assert!(engine.pool_stats().unwrap().misses > 0);
        }
    }
}

/// A copy of the variant directory with a reference-size controller (its products are large
/// enough to run in parallel) and a router that sends the easier half of [`TASKS`] (by this
/// controller) to INT2 and the harder half to FP16, ignoring residency.
fn routed_dir(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let probe = Engine::builder(dir.path())
        .device(Device::Cpu)
        .build()
        .unwrap();
    let dim = Manifest::read(dir.path()).unwrap().config.dim;
    let controller = Controller::new(ControllerConfig::reference(dim), 5).unwrap();
    controller_io::save(&controller, &dir.path().join(CONTROLLER_FILE)).unwrap();
    let (w, _) = load_variant(&dir.path().join("fp16.acv"), LoadOptions::default()).unwrap();
    let table = w.embedding.to_f32_vec();
    let packed = controller.packed();
    let mut scores: Vec<f32> = TASKS
        .iter()
        .map(|t| {
            let ids = probe.encode(t).unwrap();
            packed.predict(&table, &ids).unwrap().complexity
        })
        .collect();
    scores.sort_by(f32::total_cmp);
    let half = TASKS.len() / 2;
    let points: Vec<(f32, PerPrecision<f32>)> = scores
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let q = if i < half {
                [1.0; 4]
            } else {
                [1.0, 0.5, 0.4, 0.2]
            };
            (c, q.into())
        })
        .collect();
    common::write_router(dir.path(), &points, 1e6);
    dir
}

#[test]
fn routed_engines_route_and_run_from_rayon_workers() {
    let Some(root) = model_root() else { return };
    let dir = routed_dir(variants(&root));
    let fp16 = Manifest::read(dir.path()).unwrap().variants[0].weight_bytes;
    let params = greedy(3);
    // Room for FP16 alone, so tasks routed to INT2 and FP16 swap (loads waited for by other
    // workers); prefetch on and off.
    for prefetch in [false, true] {
        let engine = Engine::builder(dir.path())
            .device(Device::Cpu)
            .memory_budget(fp16)
            .prefetch(prefetch)
            .build()
            .unwrap();
        assert!(engine.has_router());
        let routes: Vec<_> = TASKS.iter().map(|t| engine.route(t).unwrap()).collect();
        let runs: Vec<_> = TASKS
            .iter()
            .map(|t| engine.run(t, &params, |_| true).unwrap())
            .collect();
        let direct = engine.generate(TASKS[0], &params, |_| true).unwrap().ids;
        let chosen: Vec<Precision> = routes.iter().map(|r| r.precision).collect();
        assert!(
            chosen.contains(&Precision::Int2) && chosen.contains(&Precision::Fp16),
            "both variants are used, so runs swap: {chosen:?}"
        );
        for threads in THREADS {
            let what = format!("routed route/run/generate (prefetch {prefetch})");
            from_rayon(&what, threads, |i| {
                let t = i % TASKS.len();
                let r = engine.route(TASKS[t]).unwrap();
                assert_eq!(r.precision, routes[t].precision, "task {t}");
                assert_eq!(r.complexity, routes[t].complexity, "task {t}");
                let ran = engine.run(TASKS[t], &params, |_| true).unwrap();
                assert_eq!(ran.route.precision, runs[t].route.precision, "task {t}");
                assert_eq!(ran.output.ids, runs[t].output.ids, "task {t}");
                if i % 4 == 0 {
                    let got = engine.generate(TASKS[0], &params, |_| true).unwrap();
                    assert_eq!(got.ids, direct, "direct generation on FP16");
                }
            });
        }
        engine.wait_prefetch().unwrap();
        let st = engine.stats();
        assert_eq!(st.tasks as usize, TASKS.len() + THREADS.len() * CALLS);
        assert!(st.swaps > 2, "{st:?}");
    }
}
