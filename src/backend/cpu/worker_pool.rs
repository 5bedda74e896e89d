//! A persistent worker pool for the decode step's products: a decode token runs a few hundred
//! small products, and a rayon fork-join per product costs more than some of them. The pool's
//! workers stay hot between products (spinning briefly on an epoch counter, then parking on a
//! condition variable) and claim fixed chunks of the output with one atomic counter; the
//! calling thread takes chunks too and returns when every chunk is done.
//!
//! Safety rules, in order of how they are met:
//! - One product at a time: a caller that finds the pool busy (another engine, or a product
//!   started from inside a pool task) does not wait for it but runs its product on rayon, as
//!   before the pool, so nothing ever blocks on the pool and no lock is held across rayon work.
//! - Pool workers never call into rayon or wait on anything but the pool, so a caller that is
//!   itself a rayon worker (an engine driven from `par_iter`) cannot deadlock on them.
//! - A job lives on its caller's stack: workers announce themselves (`active`) before using
//!   the published job and re-check it, and the caller withdraws it and waits for `active` to
//!   drain before returning.
//!
//! Threads: `AGENTCOMPRESS_CPU_THREADS` when set (exactly), else `RAYON_NUM_THREADS` capped by
//! the cores available, else the cores available; the caller counts as one, so the pool
//! starts one worker fewer. With one thread every product runs on the caller.

use rayon::prelude::*;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, OnceLock};

/// How the CPU backend spreads one decode product over threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// The persistent worker pool of this module (the default).
    #[default]
    Pool,
    /// A rayon fork-join per product (the behaviour before the pool; kept for comparison).
    Rayon,
}

impl std::str::FromStr for Threading {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "pool" => Ok(Threading::Pool),
            "rayon" => Ok(Threading::Rayon),
            _ => Err(crate::Error::invalid(format!(
                "unknown threading '{s}' (pool or rayon)"
            ))),
        }
    }
}

impl std::fmt::Display for Threading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Threading::Pool => "pool",
            Threading::Rayon => "rayon",
        })
    }
}

thread_local! {
    /// The threading of the backend operation running on this thread (a plain `Cell` of a
    /// `Copy` value: nothing is borrowed across the product).
    static MODE: Cell<Threading> = const { Cell::new(Threading::Pool) };
}

/// Restores the previous [`Threading`] of this thread when dropped.
pub struct ModeGuard(Threading);

impl Drop for ModeGuard {
    fn drop(&mut self) {
        MODE.set(self.0);
    }
}

/// Makes the products started on this thread use `t` until the guard drops.
pub fn use_threading(t: Threading) -> ModeGuard {
    ModeGuard(MODE.replace(t))
}

/// Calls `f(i, chunk)` for every `chunk`-element chunk of `out` (the last may be shorter), in
/// parallel: on the worker pool under [`Threading::Pool`] (rayon when the pool is busy), else
/// on rayon. `f` must not block on other threads' work (a pool task never waits).
pub fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    if MODE.get() == Threading::Pool {
        let len = out.len();
        let base = SendPtr(out.as_mut_ptr());
        let task = |i: usize| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: every index `i < n` is run exactly once, so the chunks handed out are
            // disjoint sub-slices of `out`, which outlives the run.
            let part =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, part);
        };
        if pool().run(len.div_ceil(chunk), &task) {
            return;
        }
    }
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
}

/// Calls `f(i)` for every `i < n` in parallel: on the worker pool under [`Threading::Pool`]
/// (rayon when the pool is busy), else on rayon. `f` must not block on other threads' work.
pub fn for_each_task(n: usize, f: impl Fn(usize) + Sync) {
    if MODE.get() == Threading::Pool && pool().run(n, &f) {
        return;
    }
    (0..n).into_par_iter().for_each(&f);
}

/// Calls `f(i, j)` for every item `j < counts[i]` of every list `i`, in parallel: the items
/// of all lists, in order, are cut into contiguous runs ([`stream_chunk`]), one task each, so
/// several products of one input (a layer's Q, K and V) run as one parallel job.
pub fn for_each_in_runs(counts: &[usize], f: impl Fn(usize, usize) + Sync) {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return;
    }
    let chunk = stream_chunk(total, 1);
    for_each_task(total.div_ceil(chunk), |t| {
        let (mut list, mut base) = (0, 0);
        for item in t * chunk..((t + 1) * chunk).min(total) {
            while item >= base + counts[list] {
                base += counts[list];
                list += 1;
            }
            f(list, item - base);
        }
    });
}

/// A raw pointer shared with the pool's threads (the chunks it yields are disjoint).
struct SendPtr<T>(*mut T);
// SAFETY: only used to rebuild disjoint sub-slices of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// One parallel loop `for i in 0..n { f(i) }` being run.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Claims and runs indices until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, Relaxed);
            }
            self.done.fetch_add(1, Release);
        }
    }
}

/// Spins of a worker waiting for the next job before it parks: a few microseconds, the gap
/// between the products of one token. Longer spinning costs more than it saves on a machine
/// whose cores are shared with other work (a spinning worker is preempted, then late).
const SPINS_BEFORE_PARK: u32 = 2_000;

/// The pool's shared state.
struct Pool {
    /// The job being run, or null.
    job: AtomicPtr<Job<'static>>,
    /// Bumped once per published job; workers wait for it to change.
    epoch: AtomicU64,
    /// Workers currently holding a reference to the published job.
    active: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    /// Set while a caller owns the pool.
    busy: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    workers: usize,
}

/// Outputs per task of a one-row product over `n_out` outputs: about four tasks per thread, in
/// multiples of `unit`, so each thread streams long contiguous runs of weight rows (the
/// hardware prefetcher restarts at every jump) and the claims on the counter stay few.
pub fn stream_chunk(n_out: usize, unit: usize) -> usize {
    let unit = unit.max(1);
    let tasks = 4 * threads();
    n_out.div_ceil(tasks).div_ceil(unit).max(1) * unit
}

/// The threads a product may use (see the module docs).
pub fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
        };
        match (var("AGENTCOMPRESS_CPU_THREADS"), var("RAYON_NUM_THREADS")) {
            (Some(n), _) => n,
            (None, Some(n)) => n.min(cores),
            (None, None) => cores,
        }
    })
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let p: &'static Pool = Box::leak(Box::new(Pool {
            job: AtomicPtr::new(ptr::null_mut()),
            epoch: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            workers: threads() - 1,
        }));
        let mut started = 0;
        for i in 0..p.workers {
            let spawned = std::thread::Builder::new()
                .name(format!("agentcompress-cpu-{i}"))
                .spawn(move || p.worker());
            if spawned.is_ok() {
                started += 1;
            }
        }
        if started < p.workers {
            // A worker that did not start is never waited for: the loop's counters only
            // count claimed chunks, so the caller and the others finish the work.
            eprintln!(
                "warning: the CPU worker pool started {started} of {} threads",
                p.workers
            );
        }
        p
    })
}

impl Pool {
    /// A worker: waits for each new job, helps run it, and goes back to waiting.
    fn worker(&self) {
        let mut seen = 0u64;
        loop {
            let mut spins = 0u32;
            loop {
                let e = self.epoch.load(Acquire);
                if e != seen {
                    seen = e;
                    break;
                }
                if spins < SPINS_BEFORE_PARK {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, SeqCst);
                while self.epoch.load(SeqCst) == seen {
                    g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, SeqCst);
                spins = 0;
            }
            let p = self.job.load(SeqCst);
            if p.is_null() {
                continue;
            }
            self.active.fetch_add(1, SeqCst);
            if self.job.load(SeqCst) == p {
                // SAFETY: the job is still published and we are counted in `active`, so its
                // caller is still waiting (it withdraws the job, then waits for `active`).
                unsafe { &*p }.work();
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }

    /// Runs `f(i)` for `i in 0..n` on the caller and the workers. False (nothing run) when
    /// another caller owns the pool.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        if n <= 1 || self.workers == 0 {
            (0..n).for_each(f);
            return true;
        }
        if self
            .busy
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
        {
            return false;
        }
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // The lifetime is erased for publication; `job` outlives every use (see `worker`).
        self.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        self.epoch.fetch_add(1, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        job.work();
        let mut spins = 0u32;
        while job.done.load(Acquire) < n {
            spin_or_yield(&mut spins);
        }
        self.job.store(ptr::null_mut(), SeqCst);
        while self.active.load(SeqCst) != 0 {
            spin_or_yield(&mut spins);
        }
        self.busy.store(false, Release);
        if job.panicked.load(Relaxed) {
            panic!("a task of the CPU worker pool panicked");
        }
        true
    }
}

/// Spins a while, then yields the core (a worker holding a chunk may be descheduled on a
/// loaded machine).
fn spin_or_yield(spins: &mut u32) {
    if *spins < 20_000 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_chunks_are_whole_units_and_few() {
        for unit in [1, 4, 16] {
            for n_out in [1, 5, 16, 17, 576, 1536, 49_152] {
                let c = stream_chunk(n_out, unit);
                assert!(c >= unit && c % unit == 0, "n_out {n_out} unit {unit}: {c}");
                // At most four tasks per thread (plus one for rounding), never a task of
                // more than one unit beyond an even split.
                assert!(n_out.div_ceil(c) <= 4 * threads() + 1, "n_out {n_out}: {c}");
                assert!(
                    c <= n_out.div_ceil(4 * threads()) + unit,
                    "n_out {n_out}: {c}"
                );
            }
        }
        assert_eq!(
            stream_chunk(10, 0),
            stream_chunk(10, 1),
            "a zero unit counts as one"
        );
    }

    #[test]
    fn every_chunk_runs_once_with_its_index() {
        for mode in [Threading::Pool, Threading::Rayon] {
            let _g = use_threading(mode);
            for (len, chunk) in [
                (0usize, 4usize),
                (1, 4),
                (4, 4),
                (17, 4),
                (1000, 16),
                (33, 1),
            ] {
                let mut out = vec![0usize; len];
                for_each_chunk(&mut out, chunk, |i, c| {
                    for (j, v) in c.iter_mut().enumerate() {
                        *v += i * chunk + j + 1;
                    }
                });
                let want: Vec<usize> = (1..=len).collect();
                assert_eq!(out, want, "{mode} len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn concurrent_and_nested_callers_fall_back_and_finish() {
        // Several threads (rayon workers among them) run products at once, and every task
        // starts a nested product: callers that find the pool busy run on rayon instead.
        let sums: Vec<u64> = (0..32u64)
            .into_par_iter()
            .map(|s| {
                let mut out = vec![0u64; 257];
                for_each_chunk(&mut out, 8, |i, c| {
                    let mut inner = vec![0u64; c.len()];
                    for_each_chunk(&mut inner, 2, |k, d| {
                        d.iter_mut().for_each(|v| *v = (k + 1) as u64)
                    });
                    for (v, w) in c.iter_mut().zip(&inner) {
                        *v = s + i as u64 + w;
                    }
                });
                out.iter().sum()
            })
            .collect();
        for (s, got) in sums.iter().enumerate() {
            let want: u64 = (0..257u64)
                .map(|j| s as u64 + j / 8 + (j % 8) / 2 + 1)
                .sum();
            assert_eq!(*got, want, "caller {s}");
        }
    }

    #[test]
    fn a_panicking_task_is_reported_to_the_caller_and_the_pool_recovers() {
        let r = std::panic::catch_unwind(|| {
            let mut out = vec![0u8; 64];
            for_each_chunk(&mut out, 4, |i, _| assert!(i != 9, "task 9 fails"));
        });
        assert!(r.is_err());
        let mut out = vec![0u8; 64];
        for_each_chunk(&mut out, 4, |_, c| c.fill(1));
        assert!(out.iter().all(|&v| v == 1));
    }

    #[test]
    fn thread_names_parse() {
        assert_eq!("pool".parse::<Threading>().unwrap(), Threading::Pool);
        assert!("openmp".parse::<Threading>().is_err());
        assert!(threads() >= 1);
    }
}
