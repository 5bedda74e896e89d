//! An engine over a variant directory: the four variants, the controller and router that
//! choose between them, which variants are resident under a memory budget, and router-driven
//! prefetch.
//!
//! VariantCache is real: the engine keeps loaded exactly the variants that
//! [`crate::router::VariantCache`] lists, so a variant it evicts is dropped (a generation still
//! running on it keeps it alive until it ends). A swap loads the variant file and uploads it
//! to the device on the caller's thread; a prefetch does the same on a background thread and
//! admits the variant only beside the most recently used one.
//!
//! Callers may be rayon workers (an `Engine` shared by a `par_iter`), so the residency lock is
//! never held across rayon work: the controller predicts before the lock is taken, and loads
//! and waits for a background load run with it released. Loads run on their own thread pool
//! (see [`on_load_pool`]), so a thread waiting for a load never holds a worker the load needs.

use super::route_controller::RouteController;
use super::types::Route;
use super::{Device, DynModel};
use crate::controller::io as controller_io;
use crate::engine::GenerateOutput;
use crate::quant::{PerPrecision, Precision};
use crate::router::{PlanDecision, Router, SpeculationBook, VariantCache};
use crate::store::{read_globals, ListedVariant, Manifest, MANIFEST_FILE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// File name of the trained controller inside a variant directory.
pub const CONTROLLER_FILE: &str = "controller.safetensors";
/// File name of the calibrated router inside a variant directory.
pub const ROUTER_FILE: &str = "router.json";

/// How tasks are routed: by the trained controller and router, or by the documented fallback
/// (one fixed variant) when the directory carries neither.
enum Brain {
    /// Controller, router and the frozen embedding table the controller reads.
    Trained {
        controller: RouteController,
        router: Box<Router>,
        embedding: Vec<f32>,
    },
    /// Every task goes to `precision`; `why` says what was missing.
    Fallback { precision: Precision, why: String },
}

/// A background load of one variant.
struct InFlight {
    precision: Precision,
    handle: JoinHandle<Result<(Arc<dyn DynModel>, f64)>>,
}

/// Load counters beside the residency's own swap/hit/prefetch counts.
#[derive(Default)]
struct Loads {
    swap_seconds: f64,
    bytes_loaded: u64,
    prefetch_hits: u64,
}

/// What the lock guards: residency, the loaded models, and prefetch bookkeeping.
struct State {
    residency: VariantCache,
    models: PerPrecision<Option<Arc<dyn DynModel>>>,
    /// Admitted by a prefetch and not used since.
    prefetched: PerPrecision<bool>,
    inflight: Option<InFlight>,
    /// A load running outside the lock (see [`Routed::acquire`]).
    loading: Option<Precision>,
    loads: Loads,
}

/// Marks a load running outside the lock. [`LoadingMark::finish`] clears the mark under the
/// lock, in the same critical section that admits the loaded model, so no thread sees the
/// variant neither loading nor loaded; if the load panics, dropping the mark clears it.
/// Either way the threads waiting for the load are woken.
struct LoadingMark<'a> {
    routed: &'a Routed,
    armed: bool,
}

impl LoadingMark<'_> {
    /// Clears the mark (the caller holds the lock) and wakes the waiting threads.
    fn finish(mut self, st: &mut State) {
        st.loading = None;
        self.armed = false;
        self.routed.loaded.notify_all();
    }
}

impl Drop for LoadingMark<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A poisoned lock leaves nothing to clear: every later call reports the poisoning.
        if let Ok(mut st) = self.routed.state.lock() {
            st.loading = None;
        }
        self.routed.loaded.notify_all();
    }
}

/// Load counters of a routed engine (see [`super::EngineStats`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoadStats {
    pub swap_seconds: f64,
    pub bytes_loaded: u64,
    pub prefetches: u64,
    pub prefetch_hits: u64,
}

/// Options of a routed engine (set on [`super::EngineBuilder`]).
#[derive(Clone, Debug)]
pub(crate) struct RoutedOptions {
    pub device: Device,
    pub budget: Option<u64>,
    pub prefetch: bool,
    pub fallback: Precision,
    pub verify_checksums: bool,
    /// Where `controller.safetensors` and `router.json` are (default: the variant directory).
    pub router_dir: Option<PathBuf>,
    /// Overrides the router's quality target.
    pub target: Option<f32>,
    /// Runs the controller on the engine's device when that is a GPU.
    pub controller_on_device: bool,
}

/// The routed part of an engine.
pub(crate) struct Routed {
    files: PerPrecision<ListedVariant>,
    bytes: PerPrecision<u64>,
    config: crate::model::ModelConfig,
    device: Device,
    verify: bool,
    prefetch: bool,
    brain: Brain,
    state: Mutex<State>,
    /// Signalled when a load outside the lock finishes.
    loaded: Condvar,
    /// What speculation and plain decoding measured on this engine (its own lock, taken
    /// only for bookkeeping).
    book: Mutex<SpeculationBook>,
}

/// Resolves [`Device::Auto`] once, so every variant lands on the same backend.
fn resolve(device: Device) -> Result<Device> {
    device.resolve()
}

/// Loads one variant file (checking its header against the manifest) and uploads it;
/// returns the model and the seconds it took.
fn load(file: &ListedVariant, device: Device, verify: bool) -> Result<(Arc<dyn DynModel>, f64)> {
    let t0 = Instant::now();
    on_load_pool(|| {
        let model: Arc<dyn DynModel> =
            Arc::from(super::device_choice::load_listed(device, file, verify)?);
        Ok((model, t0.elapsed().as_secs_f64()))
    })
}

/// Runs `f` (a variant load) on a thread pool reserved for loads and blocks the calling
/// thread until it returns (a panic in `f` resumes on the caller).
///
/// Why a pool of its own: a load may run rayon work (the CUDA upload converts weights in
/// parallel, kernels compile in parallel), while the threads that need the variant wait for
/// it (on `loaded`, or joining a prefetch). When those waiting threads are rayon workers of
/// the pool the load would use, the load can wait for workers that all wait for it. Here the
/// load needs none of the callers' workers, and load-pool threads never wait for a load, so
/// every wait ends. Why a plain thread in between: `install` called on a worker of another
/// pool waits by running that pool's other tasks on the calling thread; one of them could be
/// a task waiting for this very load, which would then block above the load's own
/// completion on the same stack. Joining a plain thread blocks without running anything.
fn on_load_pool<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    static POOL: OnceLock<std::result::Result<rayon::ThreadPool, String>> = OnceLock::new();
    let pool = POOL
        .get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .thread_name(|i| format!("ac-load-{i}"))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Internal(format!("cannot start the load threads: {e}")))?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("ac-load".into())
            .spawn_scoped(s, || pool.install(f))
            .map_err(|e| Error::Internal(format!("cannot start a load thread: {e}")))?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Reads the controller and router of `dir`, or says why there are none.
fn read_brain(
    dir: &Path,
    manifest: &Manifest,
    fp16_file: &Path,
    bytes: &PerPrecision<u64>,
    opts: &RoutedOptions,
    device: Device,
) -> Result<Brain> {
    let dir = opts.router_dir.as_deref().unwrap_or(dir);
    let (cp, rp) = (dir.join(CONTROLLER_FILE), dir.join(ROUTER_FILE));
    match (cp.is_file(), rp.is_file()) {
        (false, false) => {
            return Ok(Brain::Fallback {
                precision: opts.fallback,
                why: format!(
                    "no {CONTROLLER_FILE} or {ROUTER_FILE} in {} (write them with `agentcompress eval -m {0} --out {0}`): every task goes to the fallback variant {}",
                    dir.display(),
                    opts.fallback
                ),
            })
        }
        (true, false) | (false, true) => {
            let (have, missing) = if cp.is_file() {
                (CONTROLLER_FILE, &rp)
            } else {
                (ROUTER_FILE, &cp)
            };
            return Err(Error::invalid(format!(
                "{} has {have} but not {}: routing needs both",
                dir.display(),
                missing.display()
            )));
        }
        (true, true) => {}
    }
    let controller = controller_io::load(&cp)?;
    let text = std::fs::read_to_string(&rp).map_err(|e| Error::io(&rp, e))?;
    let mut router: Router =
        serde_json::from_str(&text).map_err(|e| Error::corrupt(&rp, e.to_string()))?;
    if controller.config.embed_dim != manifest.config.dim {
        return Err(Error::corrupt(
            &cp,
            format!(
                "the controller reads {}-wide embeddings but the model's are {}",
                controller.config.embed_dim, manifest.config.dim
            ),
        ));
    }
    if let Some(t) = opts.target {
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::invalid(format!(
                "quality target {t} is not in [0, 1]"
            )));
        }
        router.config.target = t;
    }
    // Costs are this directory's real variant sizes.
    let fp16 = bytes[Precision::Fp16].max(1) as f64;
    router.relative_bytes = bytes.map(|b| b as f64 / fp16);
    // Only the globals entry: the controller needs the embedding table, not the blocks.
    let embedding = read_globals(fp16_file, opts.verify_checksums)?
        .embedding
        .to_f32_vec();
    Ok(Brain::Trained {
        controller: RouteController::new(
            &controller,
            &embedding,
            device,
            opts.controller_on_device,
        )?,
        router: Box::new(router),
        embedding,
    })
}

impl Routed {
    /// Opens the variant directory `dir`: its manifest (all four variants), controller and
    /// router (or the fallback), and an empty residency of `opts.budget` bytes (default: room
    /// for all four variants).
    pub fn open(dir: &Path, opts: &RoutedOptions) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let mut bytes = PerPrecision::splat(0u64);
        let mut files = Vec::with_capacity(4);
        for p in Precision::ALL {
            let info = manifest.variant(p).ok_or_else(|| {
                Error::corrupt(
                    dir.join(MANIFEST_FILE),
                    format!("the manifest lists no {p} variant (the engine routes over all four)"),
                )
            })?;
            let listed = manifest.listed(dir, p)?;
            if !listed.path.is_file() {
                return Err(Error::corrupt(
                    dir.join(MANIFEST_FILE),
                    format!(
                        "the {p} variant's file {} is missing",
                        listed.path.display()
                    ),
                ));
            }
            // The header is checked against the manifest now, so a mislabelled file fails the
            // open rather than a later swap (each load checks it again).
            listed.read_index()?;
            bytes[p] = info.weight_bytes;
            files.push(listed);
        }
        let files = PerPrecision::try_from(files)
            .map_err(|_| Error::Internal("a routed engine needs four variants".into()))?;
        let budget = opts.budget.unwrap_or(bytes.values().iter().sum());
        let residency = VariantCache::new(budget, bytes).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::invalid(format!("memory budget for {}: {m}", dir.display()))
            }
            other => other,
        })?;
        let device = resolve(opts.device)?;
        let brain = read_brain(
            dir,
            &manifest,
            &files[Precision::Fp16].path,
            &bytes,
            opts,
            device,
        )?;
        let edges = match &brain {
            Brain::Trained { router, .. } => router.quality.edges.clone(),
            Brain::Fallback { .. } => Vec::new(),
        };
        Ok(Routed {
            book: Mutex::new(SpeculationBook::new(edges)),
            files,
            bytes,
            config: manifest.config.clone(),
            device,
            verify: opts.verify_checksums,
            prefetch: opts.prefetch,
            brain,
            state: Mutex::new(State {
                residency,
                models: Default::default(),
                prefetched: PerPrecision::splat(false),
                inflight: None,
                loading: None,
                loads: Loads::default(),
            }),
            loaded: Condvar::new(),
        })
    }

    /// Whether to serve a task routed to `target` with `complexity` through speculation,
    /// from what is resident now and what the engine has measured (see
    /// [`SpeculationBook::plan`]).
    pub fn plan_speculation(
        &self,
        target: Precision,
        complexity: Option<f32>,
    ) -> Result<PlanDecision> {
        let resident = {
            let mut st = self.lock()?;
            self.harvest(&mut st)?;
            let mut r = PerPrecision::splat(false);
            for p in st.residency.resident() {
                r[p] = true;
            }
            r
        };
        let rel = PerPrecision::from_fn(|p| self.bytes[p] as f64);
        let book = self.book_lock()?;
        Ok(book.plan(target, complexity, &resident, &rel))
    }

    /// Records what a finished run on `target` measured: its speculation counters, or its
    /// plain decoding time.
    pub fn record_outcome(
        &self,
        target: Precision,
        draft: Option<Precision>,
        complexity: Option<f32>,
        output: &GenerateOutput,
    ) -> Result<()> {
        let mut book = self.book_lock()?;
        match (&output.speculation, draft) {
            (Some(st), Some(d)) => book.record_speculative(target, d, complexity, st),
            _ => book.record_plain(
                target,
                output.ids.len() as u64,
                output.decode_time.as_secs_f64(),
            ),
        }
        Ok(())
    }

    fn book_lock(&self) -> Result<MutexGuard<'_, SpeculationBook>> {
        self.book
            .lock()
            .map_err(|_| Error::Internal("speculation book lock poisoned".into()))
    }

    /// The model's configuration.
    pub fn config(&self) -> &crate::model::ModelConfig {
        &self.config
    }

    /// Bytes of each variant's weights.
    pub fn bytes(&self) -> PerPrecision<u64> {
        self.bytes
    }

    /// The backend's name, as the device was resolved.
    pub fn backend_name(&self) -> String {
        match self.device {
            Device::Cuda(n) => format!("cuda:{n}"),
            _ => "cpu".to_string(),
        }
    }

    /// Whether a controller and router route the tasks (false: the fallback variant).
    pub fn has_router(&self) -> bool {
        matches!(self.brain, Brain::Trained { .. })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("engine residency lock poisoned".into()))
    }

    /// Drops the models the residency no longer lists (and their prefetch marks).
    fn sync_models(st: &mut State) {
        for p in Precision::ALL {
            if !st.residency.is_resident(p) {
                st.models[p] = None;
                st.prefetched[p] = false;
            }
        }
    }

    /// Admits a background load that has finished (never waits, so it may run under the
    /// lock). A load that cannot be admitted any more (the device filled up meanwhile) is
    /// returned instead of dropped.
    fn harvest(&self, st: &mut State) -> Result<Option<(Precision, Arc<dyn DynModel>)>> {
        let done = st.inflight.as_ref().is_some_and(|f| f.handle.is_finished());
        let Some(f) = st.inflight.take_if(|_| done) else {
            return Ok(None);
        };
        Ok(self.admit_background(st, f.precision, f.handle.join()))
    }

    /// Admits the result of a background load of `p` (see [`Self::harvest`]).
    fn admit_background(
        &self,
        st: &mut State,
        p: Precision,
        joined: std::thread::Result<Result<(Arc<dyn DynModel>, f64)>>,
    ) -> Option<(Precision, Arc<dyn DynModel>)> {
        // A failed background load is dropped: it was only a guess, and a task that needs the
        // variant loads it on demand, which reports the error to that task.
        let Ok(Ok((model, _))) = joined else {
            return None;
        };
        st.loads.bytes_loaded += self.bytes[p];
        if !st.residency.prefetch(p) {
            return Some((p, model));
        }
        Self::sync_models(st);
        st.models[p] = Some(model);
        st.prefetched[p] = true;
        None
    }

    /// Marks a load of `p` running outside the lock (see [`LoadingMark`]).
    fn mark_loading<'a>(&'a self, st: &mut State, p: Precision) -> LoadingMark<'a> {
        st.loading = Some(p);
        LoadingMark {
            routed: self,
            armed: true,
        }
    }

    /// The resident variants, most recently used first.
    pub fn resident(&self) -> Result<Vec<Precision>> {
        let mut st = self.lock()?;
        self.harvest(&mut st)?;
        Ok(st.residency.resident())
    }

    /// Decides which variant serves a task whose prompt encodes to `ids`.
    pub fn route(&self, ids: &[u32]) -> Result<Route> {
        self.route_for(ids, None)
    }

    /// [`Routed::route`] against quality target `target` (the router's own when `None`).
    pub fn route_for(&self, ids: &[u32], target: Option<f32>) -> Result<Route> {
        // The controller runs rayon products: predict before taking the lock. (Under it, a
        // worker waiting for those products could run another route on this thread, which
        // would then block on the lock this thread holds.)
        let predicted = match &self.brain {
            Brain::Trained {
                controller,
                embedding,
                ..
            } => Some(controller.predict(embedding, ids)?),
            Brain::Fallback { .. } => None,
        };
        let mut st = self.lock()?;
        self.harvest(&mut st)?;
        let res = &st.residency;
        match &self.brain {
            Brain::Fallback { precision, why } => {
                Ok(self.fixed_route(*precision, res.is_resident(*precision), why.clone()))
            }
            Brain::Trained { router, .. } => {
                let out = predicted.ok_or_else(|| {
                    Error::Internal("the trained router has no prediction".into())
                })?;
                let d = match target {
                    Some(t) => router.decide_for(&out, res, t),
                    None => router.decide(&out, res),
                };
                Ok(Route {
                    precision: d.precision,
                    complexity: Some(d.complexity),
                    expected_cost: d.expected_cost,
                    swap: d.swap,
                    alternatives: d.alternatives,
                    next: d.next,
                    reasons: d.reasons,
                    speculation: None,
                })
            }
        }
    }

    /// The route to `p` whatever the task (`why` says who decided): no controller, no
    /// alternatives, `p`'s relative bytes as the cost, a hit or a swap.
    fn fixed_route(&self, p: Precision, resident: bool, why: String) -> Route {
        let swap = !resident;
        let rel = self.bytes[p] as f64 / self.bytes[Precision::Fp16].max(1) as f64;
        Route {
            precision: p,
            complexity: None,
            expected_cost: rel,
            swap,
            alternatives: Vec::new(),
            next: None,
            speculation: None,
            reasons: vec![
                why,
                format!(
                    "chose {p}: expected cost {rel:.3} of fp16, {}",
                    if swap { "swap" } else { "hit" }
                ),
            ],
        }
    }

    /// The route of a request that pins variant `p`.
    pub fn pinned(&self, p: Precision) -> Result<Route> {
        let mut st = self.lock()?;
        self.harvest(&mut st)?;
        let resident = st.residency.is_resident(p);
        Ok(self.fixed_route(p, resident, format!("pinned to {p} by the request")))
    }

    /// Makes `p` resident (a hit, a prefetch hit, or a swap that loads it) and returns its
    /// model and whether a swap happened. Loads run outside the residency lock: routes and
    /// hits on resident variants go on meanwhile; a thread needing a variant that is not
    /// resident waits for the load in progress (one load at a time, so two loads never hold
    /// memory beyond the budget together) and never loads the same variant twice.
    pub fn acquire(&self, p: Precision) -> Result<(Arc<dyn DynModel>, bool)> {
        let t0 = Instant::now();
        let mut st = self.lock()?;
        let mut waited = false;
        loop {
            let rejected = self.harvest(&mut st)?;
            if let Some((q, model)) = rejected.filter(|(q, _)| *q == p) {
                // Loaded in the background but not admitted beside the most recent variant:
                // use it as a swap (its bytes are counted already).
                st.residency.use_variant(q);
                Self::sync_models(&mut st);
                st.models[q] = Some(model.clone());
                st.loads.swap_seconds += t0.elapsed().as_secs_f64();
                return Ok((model, true));
            }
            if let Some(m) = st.models[p].clone() {
                st.residency.use_variant(p);
                if std::mem::take(&mut st.prefetched[p]) {
                    st.loads.prefetch_hits += 1;
                }
                if waited {
                    st.loads.swap_seconds += t0.elapsed().as_secs_f64();
                }
                return Ok((m, false));
            }
            if st.loading.is_some() {
                st = self
                    .loaded
                    .wait(st)
                    .map_err(|_| Error::Internal("engine residency lock poisoned".into()))?;
                waited = true;
                continue;
            }
            if let Some(f) = st.inflight.take_if(|f| f.precision == p) {
                // The prefetch of `p` is still running: wait for it without the lock.
                let mark = self.mark_loading(&mut st, p);
                drop(st);
                let joined = f.handle.join();
                st = self.lock()?;
                mark.finish(&mut st);
                if let Some((q, model)) = self.admit_background(&mut st, p, joined) {
                    st.residency.use_variant(q);
                    Self::sync_models(&mut st);
                    st.models[q] = Some(model.clone());
                    st.loads.swap_seconds += t0.elapsed().as_secs_f64();
                    return Ok((model, true));
                }
                waited = true;
                continue;
            }
            break;
        }
        let mark = self.mark_loading(&mut st, p);
        drop(st);
        let loaded = load(&self.files[p], self.device, self.verify);
        let mut st = self.lock()?;
        mark.finish(&mut st);
        let (model, secs) = loaded?;
        st.residency.use_variant(p);
        Self::sync_models(&mut st);
        st.models[p] = Some(model.clone());
        st.loads.swap_seconds += secs;
        st.loads.bytes_loaded += self.bytes[p];
        Ok((model, true))
    }

    /// Starts loading `p` in the background when prefetch is on, nothing else is loading, and
    /// `p` would be admitted (not resident, fits beside the most recently used variant).
    /// Returns whether a load started.
    pub fn prefetch(&self, p: Precision) -> Result<bool> {
        if !self.prefetch {
            return Ok(false);
        }
        let mut st = self.lock()?;
        self.harvest(&mut st)?;
        if st.inflight.is_some() || st.loading.is_some() || !st.residency.can_prefetch(p) {
            return Ok(false);
        }
        let (file, device, verify) = (self.files[p].clone(), self.device, self.verify);
        let handle = std::thread::Builder::new()
            .name(format!("ac-prefetch-{p}"))
            .spawn(move || load(&file, device, verify))
            .map_err(|e| Error::Internal(format!("cannot start the prefetch thread: {e}")))?;
        st.inflight = Some(InFlight {
            precision: p,
            handle,
        });
        Ok(true)
    }

    /// Waits for a background load, if any, and admits it. The wait runs without the lock
    /// (marked as a load in progress, as in [`Self::acquire`]).
    pub fn wait_prefetch(&self) -> Result<()> {
        let mut st = self.lock()?;
        self.harvest(&mut st)?;
        let Some(f) = st.inflight.take() else {
            return Ok(());
        };
        let mark = self.mark_loading(&mut st, f.precision);
        drop(st);
        let joined = f.handle.join();
        let mut st = self.lock()?;
        mark.finish(&mut st);
        // A load that cannot be admitted any more is dropped, as a failed prefetch is.
        let _ = self.admit_background(&mut st, f.precision, joined);
        Ok(())
    }

    /// Load counters so far.
    pub fn load_stats(&self) -> LoadStats {
        match self.state.lock() {
            Ok(st) => LoadStats {
                swap_seconds: st.loads.swap_seconds,
                bytes_loaded: st.loads.bytes_loaded,
                prefetches: st.residency.prefetches,
                prefetch_hits: st.loads.prefetch_hits,
            },
            Err(_) => LoadStats::default(),
        }
    }
}
