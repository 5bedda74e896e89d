//! Routing proven on chat labels: the controller is trained on the chat suite's labels (task
//! success for checkable kinds, fidelity for open-ended ones), its router's target is swept,
//! and the sweep is put on the cost/quality frontier beside the uniform variants, a blind mix
//! of two of them and the per-task oracle, in-domain and cross-domain.
//!
//! Definitions (all on the test tasks of a split):
//! - **quality** of a task on a variant: 1 or 0 for success on a checkable task, top-1
//!   agreement with the base for an open-ended one; **quality retained** of a routing: its
//!   mean quality over the base's (uniform FP16's) on the same tasks.
//! - **relative quality** of a variant on a task: its quality over the task's best quality
//!   on any variant (1 everywhere when no variant succeeds: nothing can be lost). The
//!   controller is trained on it and the router's expected quality is calibrated on it, so a
//!   router target is a share of what the task can reach.
//! - **true complexity**: the mean relative quality lost by INT8, INT4 and INT2.
//! - **cost**, two ways: bytes of weights read per forward call relative to the base's (the
//!   variant's size; swaps aside), and measured time (prefill plus decode of each variant's
//!   own answer, as labelled) relative to uniform FP16's total; prefill and decode are also
//!   reported apart.
//! - routings are replayed as workflows: the test tasks of each domain in order, through one
//!   [`VariantCache`], counting swaps and hits; the controller's replays prefetch the
//!   router's `next` variant after each task, as the engine does with prefetching on.
//! - the router is calibrated on out-of-fold predictions for the training tasks (see
//!   [`super::cross_fit`]), which are distributed like its predictions for unseen tasks.

use super::chat_labels::ChatLabel;
use super::chat_tasks::ChatKind;
use super::cross_fit::out_of_fold;
use super::frontier::{self, FrontierRow, Point};
use super::metrics::pearson;
use super::workflow_bench::{predict_all, train_controller};
use crate::controller::train::{Sample, TrainConfig};
use crate::controller::{Controller, ControllerConfig, ControllerOutput};
use crate::quant::{PerPrecision, Precision};
use crate::router::{QualityModel, Router, RouterConfig, VariantCache, DEFAULT_PREFETCH_MIN_PROB};
use crate::{Error, Result};
use serde::Serialize;

/// What the routing experiment reads of one labelled chat task.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTask {
    /// Index in the suite.
    pub id: usize,
    /// Domain index.
    pub domain: usize,
    /// Kind.
    pub kind: ChatKind,
    /// Quality per variant (success, or agreement for open-ended tasks).
    pub quality: PerPrecision<f64>,
    /// Wall time of each variant's prefill, milliseconds.
    pub prefill_ms: PerPrecision<f64>,
    /// Wall time of each variant's decode, milliseconds.
    pub decode_ms: PerPrecision<f64>,
    /// Forward calls of the base's answer (prompt pass plus one per further token).
    pub forwards: usize,
}

impl RouteTask {
    /// The task's quality and times from its label.
    pub fn from_label(l: &ChatLabel) -> Self {
        let check = l.task.checkable();
        RouteTask {
            id: l.task.id,
            domain: l.task.domain,
            kind: l.task.kind,
            quality: PerPrecision::from_fn(|p| match l.success[p] {
                Some(s) if check => s as u8 as f64,
                _ => l.fidelity.quality[p] as f64,
            }),
            prefill_ms: l.prefill_ms.map(|v| v as f64),
            decode_ms: l.decode_ms.map(|v| v as f64),
            forwards: l.answer_tokens[Precision::Fp16].max(1),
        }
    }

    /// Quality over the task's best on any variant (1 for every variant when none scores).
    pub fn relative_quality(&self) -> PerPrecision<f32> {
        let best = self.quality.values().iter().copied().fold(0.0f64, f64::max);
        if best <= 0.0 {
            return PerPrecision::splat(1.0);
        }
        self.quality.map(|q| (q / best) as f32)
    }

    /// True complexity: the mean relative quality lost by INT8, INT4 and INT2.
    pub fn complexity(&self) -> f32 {
        let r = self.relative_quality();
        (3.0 - r[Precision::Int8] - r[Precision::Int4] - r[Precision::Int2]) / 3.0
    }

    /// Prefill plus decode time of each variant, milliseconds.
    pub fn time_ms(&self) -> PerPrecision<f64> {
        PerPrecision::from_fn(|p| self.prefill_ms[p] + self.decode_ms[p])
    }

    /// The cheapest variant (by `rel_bytes`) that keeps the task's best quality.
    pub fn oracle(&self, rel_bytes: &PerPrecision<f64>) -> Precision {
        let r = self.relative_quality();
        Precision::ALL
            .into_iter()
            .filter(|p| r[*p] >= 1.0 - 1e-6)
            .min_by(|a, b| rel_bytes[*a].total_cmp(&rel_bytes[*b]))
            .unwrap_or(Precision::Fp16)
    }
}

/// How a split divides the tasks into training and test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChatSplit {
    /// Blocks of ten consecutive tasks (one of every kind, domains rotating): three blocks of
    /// every five train, two test; every domain and kind is on both sides.
    InDomain,
    /// Whole domains held out: the two domains named test, the other two train.
    CrossDomain {
        /// The held-out domains.
        test: [usize; 2],
    },
}

impl ChatSplit {
    /// Whether task `t` trains under this split.
    pub fn is_train(&self, t: &RouteTask) -> bool {
        match self {
            ChatSplit::InDomain => (t.id / ChatKind::ALL.len()) % 5 < 3,
            ChatSplit::CrossDomain { test } => !test.contains(&t.domain),
        }
    }

    /// A description for reports.
    pub fn describe(&self) -> String {
        let names = super::chat_tasks::CHAT_DOMAINS;
        match self {
            ChatSplit::InDomain => {
                "in-domain: 3 of every 5 blocks of ten tasks train, 2 test".to_string()
            }
            ChatSplit::CrossDomain { test } => {
                let name = |d: usize| names.get(d).copied().unwrap_or("?");
                let train: Vec<&str> = (0..names.len())
                    .filter(|d| !test.contains(d))
                    .map(name)
                    .collect();
                format!(
                    "cross-domain: train on {}, test on {} + {}",
                    train.join(" + "),
                    name(test[0]),
                    name(test[1])
                )
            }
        }
    }

    /// Training and test task indices (in suite order).
    pub fn indices(&self, tasks: &[RouteTask]) -> (Vec<usize>, Vec<usize>) {
        (0..tasks.len()).partition(|&i| self.is_train(&tasks[i]))
    }
}

/// The test tasks in replay order: each domain's tasks in suite order, domain after domain
/// (a user working through one domain's tasks, then the next).
pub fn workflow_order(tasks: &[RouteTask], idx: &[usize]) -> Vec<usize> {
    let mut order = idx.to_vec();
    order.sort_by_key(|&i| (tasks[i].domain, tasks[i].id));
    order
}

/// One routing of the test tasks, measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutePoint {
    /// Strategy name.
    pub name: String,
    /// Router target (relative quality) for the controller's points.
    pub target: Option<f32>,
    /// Mean bytes of weights read per forward call, relative to the base's.
    pub bytes: f64,
    /// Measured prefill plus decode time relative to uniform FP16's on the same tasks.
    pub time: f64,
    /// Measured prefill time relative to uniform FP16's.
    pub prefill: f64,
    /// Measured decode time relative to uniform FP16's.
    pub decode: f64,
    /// Mean quality.
    pub quality: f64,
    /// Mean quality relative to uniform FP16's.
    pub retained: f64,
    /// Variant loads a task waited for when replayed as workflows.
    pub swaps: u64,
    /// Variants loaded in the background ahead of use (the router's `next`), when the replay
    /// prefetches.
    pub prefetches: u64,
    /// Share of tasks served by a resident variant.
    pub hit_rate: f64,
    /// Tasks per variant.
    pub mix: PerPrecision<usize>,
}

/// A replay's choices and what the residency did.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// The variant of each task, in replay order.
    pub choices: Vec<Precision>,
    /// Loads a task waited for.
    pub swaps: u64,
    /// Loads ahead of use.
    pub prefetches: u64,
    /// Share of tasks served by a resident variant.
    pub hit_rate: f64,
}

/// Variant choices for `order`, replayed through a [`VariantCache`] of `capacity` times the
/// base's bytes. `choose` gives each task's variant and the variant to prefetch after it (as
/// the engine built with `prefetch(true)` loads the router's `next` in the background while
/// the task runs: admitted beside the most recently used variant, evicting older ones).
pub fn replay(
    order: &[usize],
    bytes: &PerPrecision<u64>,
    capacity: f64,
    mut choose: impl FnMut(usize, &VariantCache) -> (Precision, Option<Precision>),
) -> Result<Replay> {
    let cap = (capacity * bytes[Precision::Fp16] as f64) as u64;
    let mut cache = VariantCache::new(cap, *bytes)?;
    let mut choices = Vec::with_capacity(order.len());
    for &t in order {
        let (p, next) = choose(t, &cache);
        cache.use_variant(p);
        if let Some(n) = next {
            cache.prefetch(n);
        }
        choices.push(p);
    }
    Ok(Replay {
        choices,
        swaps: cache.swaps,
        prefetches: cache.prefetches,
        hit_rate: cache.hit_rate(),
    })
}

/// Measures the routing `choices` of the tasks `order` (same length): cost both ways and
/// quality, relative to uniform FP16 on the same tasks; swaps and hit rate are left 0 for the
/// caller.
pub fn measure_routing(
    name: &str,
    tasks: &[RouteTask],
    order: &[usize],
    choices: &[Precision],
    rel_bytes: &PerPrecision<f64>,
) -> Result<RoutePoint> {
    if order.is_empty() || order.len() != choices.len() {
        return Err(Error::invalid(format!(
            "a routing of {} tasks with {} choices",
            order.len(),
            choices.len()
        )));
    }
    let n = order.len() as f64;
    let sum = |f: &dyn Fn(&RouteTask, Precision) -> f64| -> f64 {
        order
            .iter()
            .zip(choices)
            .map(|(&i, &p)| f(&tasks[i], p))
            .sum()
    };
    let base = |f: &dyn Fn(&RouteTask, Precision) -> f64| -> f64 {
        order.iter().map(|&i| f(&tasks[i], Precision::Fp16)).sum()
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let prefill = |t: &RouteTask, p: Precision| t.prefill_ms[p];
    let decode = |t: &RouteTask, p: Precision| t.decode_ms[p];
    let time = |t: &RouteTask, p: Precision| t.prefill_ms[p] + t.decode_ms[p];
    let quality = |t: &RouteTask, p: Precision| t.quality[p];
    let mut mix = PerPrecision::splat(0usize);
    for &p in choices {
        mix[p] += 1;
    }
    Ok(RoutePoint {
        name: name.to_string(),
        target: None,
        bytes: sum(&|_, p| rel_bytes[p]) / n,
        time: ratio(sum(&time), base(&time)),
        prefill: ratio(sum(&prefill), base(&prefill)),
        decode: ratio(sum(&decode), base(&decode)),
        quality: sum(&quality) / n,
        retained: ratio(sum(&quality), base(&quality)),
        swaps: 0,
        prefetches: 0,
        hit_rate: 0.0,
        mix,
    })
}

/// One quality target of the frontier, costed both ways.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ChatFrontierRow {
    /// The target as quality retained (mean quality over the base's).
    pub retained: f64,
    /// Costs in bytes of weights read (the strategy: the controller's sweep).
    pub bytes: FrontierRow,
    /// Costs in measured time.
    pub time: FrontierRow,
}

/// The frontier of one cost measure: rows at `targets` (mean quality) for blind mixing of the
/// uniform variants, the per-task oracle and `strategy`'s points, and the APGR over them.
/// `costs[i]` is task `i`'s cost per variant.
pub fn frontier_of(
    quality: &[PerPrecision<f64>],
    costs: &[PerPrecision<f64>],
    strategy: &[Point],
    targets: &[f64],
) -> (Vec<FrontierRow>, Option<f64>) {
    let uniform = frontier::uniform_points_per_task(quality, costs);
    let oracle: Vec<(f64, f64)> = targets
        .iter()
        .filter_map(|&t| frontier::oracle_cost_per_task(quality, costs, t).map(|c| (t, c)))
        .collect();
    let rows = targets
        .iter()
        .map(|&t| FrontierRow {
            target: t,
            blind: frontier::mix_cost(&uniform, t),
            oracle: oracle.iter().find(|(ot, _)| *ot == t).map(|(_, c)| *c),
            strategy: frontier::mix_cost(strategy, t),
        })
        .collect();
    (rows, frontier::apgr(&uniform, strategy, &oracle, targets))
}

/// Whether the goals of routing were met on a split (costs in bytes of weights read).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goals {
    /// The controller's sweep is cheaper than blind mixing at every frontier target (INT4's
    /// to INT8's quality).
    pub beats_blind: bool,
    /// APGR (bytes) is at least 50%.
    pub apgr_half: bool,
    /// Quality retained asked for by the cost goal.
    pub retained_goal: f64,
    /// The controller's cost (its sweep's hull) at that quality.
    pub controller_cost: Option<f64>,
    /// The cheapest uniform variant meeting it, with its cost.
    pub cheapest_uniform: Option<(Precision, f64)>,
    /// The controller's cost there is below that variant's.
    pub below_cheapest_uniform: bool,
}

/// Checks the goals on `rows` (bytes) and the APGR, and at `retained_goal` of `base_quality`
/// compares the controller's swept points with the uniform ones.
pub fn goals(
    rows: &[FrontierRow],
    apgr: Option<f64>,
    uniform: &[Point],
    controller: &[Point],
    base_quality: f64,
    retained_goal: f64,
) -> Goals {
    let need = retained_goal * base_quality;
    let controller_cost = frontier::mix_cost(controller, need);
    let cheapest_uniform =
        frontier::cheapest_reaching(uniform, need).map(|(i, c)| (Precision::ALL[i], c));
    Goals {
        beats_blind: frontier::beats_blind_everywhere(rows),
        apgr_half: apgr.is_some_and(|a| a >= 0.5),
        retained_goal,
        controller_cost,
        cheapest_uniform,
        below_cheapest_uniform: match (controller_cost, cheapest_uniform) {
            (Some(c), Some((_, u))) => c < u - 1e-12,
            _ => false,
        },
    }
}

/// Settings of the routing experiment.
#[derive(Clone, Debug)]
pub struct ChatRouteConfig {
    /// Seed of the controller's initialisation (training has its own in `train`).
    pub seed: u64,
    /// Controller configuration name (`small` or `reference`).
    pub controller: String,
    /// Training settings (`threshold` applies to relative quality).
    pub train: TrainConfig,
    /// Calibration bins of the router's quality model.
    pub bins: usize,
    /// Folds of the router's calibration: with k >= 2, controllers trained without each k-th
    /// of the training tasks predict it and the router is calibrated on those out-of-fold
    /// predictions (its target set on them too); with 0 or 1, on the final controller's
    /// predictions for the tasks it was trained on (which it has memorised).
    pub calibration_folds: usize,
    /// Router targets (relative quality) swept for the controller's frontier.
    pub sweep: Vec<f32>,
    /// Device capacity as a multiple of the base's bytes.
    pub capacity: f64,
    /// Cost of a swap per byte relative to a byte read by compute.
    pub swap_factor: f64,
    /// Tasks over which the router amortises a swap.
    pub horizon: f64,
    /// Replay the controller's routes with prefetching: after each task the router's `next`
    /// is loaded in the background (what the engine does with `prefetch(true)`), so a
    /// cheaper variant passed over because loading it would have cost more than it saves is
    /// resident for the next task that wants it.
    pub prefetch: bool,
    /// Quality retained of the cost goal (0.96).
    pub retained_goal: f64,
    /// Frontier targets from INT4's to INT8's quality.
    pub n_targets: usize,
}

impl Default for ChatRouteConfig {
    fn default() -> Self {
        ChatRouteConfig {
            seed: 7,
            controller: "small".into(),
            train: TrainConfig {
                iterations: 1000,
                threshold: 0.99,
                ..TrainConfig::default()
            },
            bins: 4,
            calibration_folds: 3,
            sweep: vec![
                0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0,
            ],
            capacity: 1.5,
            swap_factor: 50.0,
            horizon: 4.0,
            prefetch: true,
            retained_goal: 0.96,
            n_targets: 6,
        }
    }
}

/// Results of one split.
#[derive(Clone, Debug, Serialize)]
pub struct ChatSplitResult {
    /// Description of the split.
    pub name: String,
    /// Training tasks.
    pub train_tasks: usize,
    /// Test tasks.
    pub test_tasks: usize,
    /// Uniform FP16's mean quality on the test tasks.
    pub base_quality: f64,
    /// Pearson r of predicted versus true complexity on the test tasks.
    pub pearson_r: f64,
    /// What the router's quality model was calibrated on.
    pub calibration: String,
    /// Pearson r of the calibration predictions vs true complexity on the training tasks.
    pub calibration_pearson_r: f64,
    /// The router's calibrated quality model (complexity bins, expected relative quality).
    pub quality_model: QualityModel,
    /// The controller's prediction for every test task, in suite order.
    pub predictions: Vec<TaskPrediction>,
    /// The predictions the router was calibrated on, one per training task in suite order.
    pub calibration_predictions: Vec<TaskPrediction>,
    /// Each uniform variant, then the per-task oracle (cheapest variant keeping the task's
    /// best quality) and the controller with its target calibrated on the training split to
    /// the retained goal.
    pub baselines: Vec<RoutePoint>,
    /// The controller at each swept target.
    pub sweep: Vec<RoutePoint>,
    /// The frontier from uniform INT4's to uniform INT8's quality.
    pub rows: Vec<ChatFrontierRow>,
    /// APGR in bytes of weights read.
    pub apgr_bytes: Option<f64>,
    /// APGR in measured time.
    pub apgr_time: Option<f64>,
    /// The goals, in bytes.
    pub goals: Goals,
}

/// A prediction for one task (a test task's by the final controller, a training task's as the
/// router was calibrated on it) beside the truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskPrediction {
    /// Index in the suite.
    pub id: usize,
    /// Domain index.
    pub domain: usize,
    /// Kind.
    pub kind: ChatKind,
    /// Predicted complexity.
    pub predicted: f32,
    /// True complexity (mean relative quality lost by INT8, INT4 and INT2).
    pub truth: f32,
    /// The cheapest variant keeping the task's best quality.
    pub oracle: Precision,
}

/// Everything the experiment measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChatRouteReport {
    /// Labelled tasks.
    pub tasks: usize,
    /// Variant sizes relative to the base.
    pub relative_bytes: PerPrecision<f64>,
    /// Controller parameters.
    pub controller_params: usize,
    /// One result per split (in-domain first).
    pub splits: Vec<ChatSplitResult>,
}

/// The splits the experiment runs: in-domain, then each half of the domains held out.
pub const SPLITS: [ChatSplit; 3] = [
    ChatSplit::InDomain,
    ChatSplit::CrossDomain { test: [2, 3] },
    ChatSplit::CrossDomain { test: [0, 1] },
];

/// The headroom target of the training loss: 1 - bits of the task's oracle variant / 16.
fn headroom(t: &RouteTask, rel_bytes: &PerPrecision<f64>) -> f32 {
    1.0 - t.oracle(rel_bytes).bits() as f32 / 16.0
}

/// What training a controller on some of the labelled tasks needs.
struct Trainer<'a> {
    /// The untrained controller every training starts from.
    base: &'a Controller,
    tasks: &'a [RouteTask],
    /// Each task's gathered controller input.
    gathered: &'a [Vec<f32>],
    /// Variant sizes relative to the base.
    rel_bytes: &'a PerPrecision<f64>,
    cfg: &'a ChatRouteConfig,
}

impl Trainer<'_> {
    /// A copy of the base trained on the tasks `idx` (relative quality as the quality label).
    fn train(&self, idx: &[usize]) -> Result<Controller> {
        let samples: Vec<Sample> = idx
            .iter()
            .map(|&i| Sample {
                emb: self.gathered[i].clone(),
                quality: self.tasks[i].relative_quality(),
                cost: self.rel_bytes.map(|r| r as f32),
                complexity: self.tasks[i].complexity(),
                headroom: headroom(&self.tasks[i], self.rel_bytes),
                domain: self.tasks[i].domain,
            })
            .collect();
        let mut controller = self.base.clone();
        train_controller(&mut controller, &samples, &self.cfg.train, |_, _| {})?;
        Ok(controller)
    }
}

/// A controller trained on a split's training tasks and its router.
struct Fitted {
    /// Trained on every training task; it predicts the test tasks.
    controller: Controller,
    /// Calibrated on `calibration`.
    router: Router,
    /// The predictions the router is calibrated on, one per training task (in the training
    /// indices' order): out-of-fold with `cfg.calibration_folds >= 2`, else the controller's
    /// own.
    calibration: Vec<ControllerOutput>,
}

/// Trains a controller on the tasks `idx` and calibrates a router on predictions for them:
/// out-of-fold ones (see [`super::cross_fit`]) when `calibration_folds >= 2`, the trained
/// controller's own otherwise. The folds and the final controller train in parallel.
fn fit(t: &Trainer<'_>, idx: &[usize]) -> Result<Fitted> {
    let (tasks, gathered, cfg) = (t.tasks, t.gathered, t.cfg);
    let (controller, calibration) = if cfg.calibration_folds >= 2 && idx.len() >= 2 {
        let (controller, oof) = rayon::join(
            || t.train(idx),
            || {
                out_of_fold(idx, cfg.calibration_folds, |fit, held| {
                    predict_all(&t.train(fit)?, gathered, held)
                })
            },
        );
        (controller?, oof?)
    } else {
        let controller = t.train(idx)?;
        let own = predict_all(&controller, gathered, idx)?;
        (controller, own)
    };
    let points: Vec<(f32, PerPrecision<f32>)> = idx
        .iter()
        .zip(&calibration)
        .map(|(&i, o)| (o.complexity, tasks[i].relative_quality()))
        .collect();
    let forwards = idx.iter().map(|&i| tasks[i].forwards).sum::<usize>() as f64 / idx.len() as f64;
    let router = Router {
        config: RouterConfig {
            target: 1.0,
            swap_factor: cfg.swap_factor,
            horizon: cfg.horizon,
            task_bytes: forwards,
            prefetch_min_prob: DEFAULT_PREFETCH_MIN_PROB,
        },
        quality: QualityModel::fit(&points, cfg.bins)?,
        relative_bytes: *t.rel_bytes,
    };
    Ok(Fitted {
        controller,
        router,
        calibration,
    })
}

/// What replaying the controller's routes needs: the tasks, the controller's outputs for
/// every task, the calibrated router and the residency model.
struct Routes<'a> {
    tasks: &'a [RouteTask],
    outs: &'a [ControllerOutput],
    router: &'a Router,
    bytes: &'a PerPrecision<u64>,
    capacity: f64,
    /// Whether the replay prefetches the router's `next`.
    prefetch: bool,
}

impl Routes<'_> {
    /// The router at `target` replayed over `order`, measured.
    fn point(&self, name: &str, order: &[usize], target: f32) -> Result<RoutePoint> {
        let mut r = self.router.clone();
        r.config.target = target;
        let run = replay(order, self.bytes, self.capacity, |t, cache| {
            let d = r.decide(&self.outs[t], cache);
            (d.precision, d.next.filter(|_| self.prefetch))
        })?;
        let mut pt = measure_routing(name, self.tasks, order, &run.choices, &r.relative_bytes)?;
        pt.target = Some(target);
        (pt.swaps, pt.prefetches, pt.hit_rate) = (run.swaps, run.prefetches, run.hit_rate);
        Ok(pt)
    }
}

fn run_split(
    split: ChatSplit,
    tasks: &[RouteTask],
    gathered: &[Vec<f32>],
    base: &Controller,
    bytes: &PerPrecision<u64>,
    cfg: &ChatRouteConfig,
) -> Result<ChatSplitResult> {
    let (train_idx, test_idx) = split.indices(tasks);
    if train_idx.is_empty() || test_idx.is_empty() {
        return Err(Error::invalid(format!(
            "split '{}' leaves no training or no test tasks ({} tasks labelled)",
            split.describe(),
            tasks.len()
        )));
    }
    let fp16 = bytes[Precision::Fp16].max(1) as f64;
    let rel = bytes.map(|b| b as f64 / fp16);
    let trainer = Trainer {
        base,
        tasks,
        gathered,
        rel_bytes: &rel,
        cfg,
    };
    let fitted = fit(&trainer, &train_idx)?;
    let router = fitted.router;
    // Test tasks are predicted by the controller trained on every training task; training
    // tasks keep the predictions the router was calibrated on, so that setting the target
    // on them replays what the router was fitted to.
    let all: Vec<usize> = (0..tasks.len()).collect();
    let mut outs = predict_all(&fitted.controller, gathered, &all)?;
    for (&i, o) in train_idx.iter().zip(&fitted.calibration) {
        outs[i] = o.clone();
    }
    let order = workflow_order(tasks, &test_idx);
    let mut baselines = Vec::new();
    for p in Precision::ALL {
        let run = replay(&order, bytes, cfg.capacity, |_, _| (p, None))?;
        let mut pt = measure_routing(&format!("uniform {p}"), tasks, &order, &run.choices, &rel)?;
        (pt.swaps, pt.hit_rate) = (run.swaps, run.hit_rate);
        baselines.push(pt);
    }
    let base_quality = baselines[0].quality;
    if base_quality <= 0.0 {
        return Err(Error::invalid(format!(
            "split '{}': the base scores nothing on the test tasks",
            split.describe()
        )));
    }
    let run = replay(&order, bytes, cfg.capacity, |t, _| {
        (tasks[t].oracle(&rel), None)
    })?;
    let mut oracle = measure_routing("oracle", tasks, &order, &run.choices, &rel)?;
    (oracle.swaps, oracle.hit_rate) = (run.swaps, run.hit_rate);
    baselines.push(oracle);
    // The target a user would set without the test labels: the cheapest swept target whose
    // routes keep the retained goal on the training tasks.
    let train_order = workflow_order(tasks, &train_idx);
    let routes = Routes {
        tasks,
        outs: &outs,
        router: &router,
        bytes,
        capacity: cfg.capacity,
        prefetch: cfg.prefetch,
    };
    let mut calibrated: Option<(f64, f32)> = None;
    for &target in &cfg.sweep {
        let pt = routes.point("calibration", &train_order, target)?;
        if pt.retained >= cfg.retained_goal - 1e-9 && calibrated.is_none_or(|(c, _)| pt.bytes < c) {
            calibrated = Some((pt.bytes, target));
        }
    }
    let goal_target = calibrated.map_or(1.0, |(_, t)| t);
    let name = format!(
        "controller at {:.0}% (target set on training)",
        100.0 * cfg.retained_goal
    );
    baselines.push(routes.point(&name, &order, goal_target)?);
    let sweep = cfg
        .sweep
        .iter()
        .map(|&t| routes.point("controller", &order, t))
        .collect::<Result<Vec<_>>>()?;
    let q: Vec<PerPrecision<f64>> = test_idx.iter().map(|&i| tasks[i].quality).collect();
    let byte_costs = vec![rel; test_idx.len()];
    let fp16_ms = test_idx
        .iter()
        .map(|&i| tasks[i].time_ms()[Precision::Fp16])
        .sum::<f64>()
        / test_idx.len() as f64;
    let time_costs: Vec<PerPrecision<f64>> = test_idx
        .iter()
        .map(|&i| tasks[i].time_ms().map(|t| t / fp16_ms.max(1e-9)))
        .collect();
    let at = |p: Precision| baselines[p.index()].quality;
    let (lo, hi) = (at(Precision::Int4), at(Precision::Int8));
    let targets = frontier::targets_between(lo.min(hi), lo.max(hi), cfg.n_targets);
    let pts = |f: fn(&RoutePoint) -> f64| -> Vec<Point> {
        sweep
            .iter()
            .map(|s| Point {
                cost: f(s),
                quality: s.quality,
            })
            .collect()
    };
    let (bytes_rows, apgr_bytes) = frontier_of(&q, &byte_costs, &pts(|s| s.bytes), &targets);
    let (time_rows, apgr_time) = frontier_of(&q, &time_costs, &pts(|s| s.time), &targets);
    let uniform = frontier::uniform_points(&q, &rel);
    let goals = goals(
        &bytes_rows,
        apgr_bytes,
        &uniform,
        &pts(|s| s.bytes),
        base_quality,
        cfg.retained_goal,
    );
    let rows = bytes_rows
        .into_iter()
        .zip(time_rows)
        .map(|(b, t)| ChatFrontierRow {
            retained: b.target / base_quality,
            bytes: b,
            time: t,
        })
        .collect();
    let r_of = |idx: &[usize]| {
        let pred: Vec<f32> = idx.iter().map(|&i| outs[i].complexity).collect();
        let truth: Vec<f32> = idx.iter().map(|&i| tasks[i].complexity()).collect();
        pearson(&pred, &truth)
    };
    let predictions_of = |idx: &[usize]| -> Vec<TaskPrediction> {
        idx.iter()
            .map(|&i| TaskPrediction {
                id: tasks[i].id,
                domain: tasks[i].domain,
                kind: tasks[i].kind,
                predicted: outs[i].complexity,
                truth: tasks[i].complexity(),
                oracle: tasks[i].oracle(&rel),
            })
            .collect()
    };
    let calibration = match cfg.calibration_folds.min(train_idx.len()) {
        k if k >= 2 => format!("out-of-fold predictions ({k} folds)"),
        _ => "the controller's own predictions for its training tasks".to_string(),
    };
    Ok(ChatSplitResult {
        name: split.describe(),
        train_tasks: train_idx.len(),
        test_tasks: test_idx.len(),
        base_quality,
        pearson_r: r_of(&test_idx),
        calibration,
        calibration_pearson_r: r_of(&train_idx),
        quality_model: router.quality.clone(),
        predictions: predictions_of(&test_idx),
        calibration_predictions: predictions_of(&train_idx),
        baselines,
        sweep,
        rows,
        apgr_bytes,
        apgr_time,
        goals,
    })
}

/// Runs the experiment on `labels` (with `prompts[i]` the prompt ids of `labels[i]`, the
/// controller's input) over the variants' `bytes` and the base's token `embedding` table of
/// width `dim`. Needs the `train` cargo feature.
pub fn run(
    labels: &[ChatLabel],
    prompts: &[Vec<u32>],
    embedding: &[f32],
    dim: usize,
    bytes: &PerPrecision<u64>,
    cfg: &ChatRouteConfig,
) -> Result<ChatRouteReport> {
    if labels.len() != prompts.len() {
        return Err(Error::invalid(format!(
            "{} chat labels with {} prompts",
            labels.len(),
            prompts.len()
        )));
    }
    let tasks: Vec<RouteTask> = labels.iter().map(RouteTask::from_label).collect();
    let base = Controller::new(ControllerConfig::named(&cfg.controller, dim)?, cfg.seed)?;
    let gathered = prompts
        .iter()
        .map(|ids| base.gather(embedding, ids))
        .collect::<Result<Vec<_>>>()?;
    let splits = SPLITS
        .iter()
        .map(|&s| run_split(s, &tasks, &gathered, &base, bytes, cfg))
        .collect::<Result<Vec<_>>>()?;
    let fp16 = bytes[Precision::Fp16].max(1) as f64;
    Ok(ChatRouteReport {
        tasks: tasks.len(),
        relative_bytes: bytes.map(|b| b as f64 / fp16),
        controller_params: base.param_count(),
        splits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::chat_tasks::{generate, ChatTask};
    use crate::pipeline::labels::TaskLabel;
    use Precision::*;

    fn label(task: ChatTask, success: [bool; 4], agree: [f32; 4], ms: [f32; 4]) -> ChatLabel {
        let check = task.checkable();
        ChatLabel {
            task,
            prompt_tokens: 10,
            answers: PerPrecision::from_fn(|_| String::new()),
            success: PerPrecision::from(success).map(|s| check.then_some(s)),
            prefill_ms: PerPrecision::from(ms).map(|m| m / 4.0),
            decode_ms: PerPrecision::from(ms),
            answer_tokens: PerPrecision::splat(9),
            fidelity: TaskLabel {
                quality: agree.into(),
                kl: PerPrecision::splat(0.0),
                exact: PerPrecision::splat(false),
                time_ms: PerPrecision::splat(0.0),
                bytes: PerPrecision::splat(0),
                flops: 0,
            },
        }
    }

    fn rel() -> PerPrecision<f64> {
        [1.0, 0.75, 0.55, 0.45].into()
    }

    #[test]
    fn task_quality_is_success_or_fidelity_and_complexity_is_relative() {
        let tasks = generate(10, 1);
        let (copy, plan) = (tasks[0].clone(), tasks[7].clone());
        let t = RouteTask::from_label(&label(
            copy.clone(),
            [true, true, false, false],
            [1.0, 0.9, 0.5, 0.1],
            [8.0, 6.0, 4.0, 3.0],
        ));
        assert_eq!(t.quality.into_array(), [1.0, 1.0, 0.0, 0.0]);
        assert!((t.complexity() - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(t.oracle(&rel()), Int8);
        assert_eq!(t.time_ms()[Fp16], 10.0);
        assert_eq!(t.forwards, 9);
        // The base fails, INT4 succeeds: the task's best is INT4's, FP16 keeps nothing of it.
        let odd = RouteTask::from_label(&label(
            copy.clone(),
            [false, false, true, false],
            [1.0; 4],
            [1.0; 4],
        ));
        assert_eq!(odd.relative_quality().into_array(), [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(odd.oracle(&rel()), Int4);
        // Nobody succeeds: nothing to lose, the cheapest variant will do.
        let none = RouteTask::from_label(&label(copy, [false; 4], [1.0; 4], [1.0; 4]));
        assert_eq!(none.relative_quality(), PerPrecision::splat(1.0));
        assert_eq!(none.complexity(), 0.0);
        assert_eq!(none.oracle(&rel()), Int2);
        // Open-ended: fidelity.
        let open = RouteTask::from_label(&label(plan, [false; 4], [1.0, 0.9, 0.6, 0.3], [1.0; 4]));
        assert!((open.quality[Int4] - 0.6).abs() < 1e-6);
        assert!((open.complexity() - 0.4).abs() < 1e-6);
        assert_eq!(open.oracle(&rel()), Fp16);
    }

    fn route_tasks(n: usize) -> Vec<RouteTask> {
        generate(n, 3)
            .into_iter()
            .map(|t| RouteTask::from_label(&label(t, [true; 4], [1.0; 4], [1.0; 4])))
            .collect()
    }

    #[test]
    fn in_domain_split_keeps_every_domain_and_kind_on_both_sides() {
        let tasks = route_tasks(80);
        let (train, test) = ChatSplit::InDomain.indices(&tasks);
        assert_eq!((train.len(), test.len()), (60, 20));
        for side in [&train, &test] {
            for d in 0..4 {
                assert!(side.iter().any(|&i| tasks[i].domain == d), "domain {d}");
            }
            for k in ChatKind::ALL {
                assert!(side.iter().any(|&i| tasks[i].kind == k), "{k:?}");
            }
        }
        assert!(train.iter().all(|i| !test.contains(i)));
    }

    #[test]
    fn cross_domain_split_holds_out_whole_domains() {
        let tasks = route_tasks(80);
        let split = ChatSplit::CrossDomain { test: [2, 3] };
        let (train, test) = split.indices(&tasks);
        assert_eq!(train.len() + test.len(), 80);
        assert!(test.iter().all(|&i| tasks[i].domain >= 2));
        assert!(train.iter().all(|&i| tasks[i].domain < 2));
        assert!(split.describe().contains("test on software + travel"));
        let order = workflow_order(&tasks, &test);
        let keys: Vec<(usize, usize)> = order
            .iter()
            .map(|&i| (tasks[i].domain, tasks[i].id))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(order.len(), test.len());
    }

    #[test]
    fn replay_counts_swaps_and_measure_routing_costs_both_ways() {
        let tasks: Vec<RouteTask> = generate(4, 1)
            .into_iter()
            .zip([
                ([true, true, true, false], [10.0, 8.0, 6.0, 5.0]),
                ([true, false, false, false], [10.0, 8.0, 6.0, 5.0]),
                ([false, false, true, false], [20.0, 16.0, 4.0, 2.0]),
                ([true, true, true, true], [10.0, 8.0, 6.0, 5.0]),
            ])
            .map(|(t, (s, ms))| RouteTask::from_label(&label(t, s, [1.0; 4], ms)))
            .collect();
        let bytes: PerPrecision<u64> = [100, 75, 55, 45].into();
        let order = [0, 1, 2, 3];
        // Room for one variant only: every change of variant is a swap.
        let pick = [Int4, Fp16, Int4, Int4];
        let run = replay(&order, &bytes, 1.0, |t, _| (pick[t], None)).unwrap();
        let choices = run.choices;
        assert_eq!(choices, pick);
        assert_eq!((run.swaps, run.prefetches), (3, 0));
        assert!((run.hit_rate - 0.25).abs() < 1e-12);
        // INT4 and INT2 fit together: alternating between them loads each once; prefetching
        // the other after each task loads INT2 ahead of its first use.
        let alt = [Int4, Int2, Int4, Int2];
        let plain = replay(&order, &bytes, 1.0, |t, _| (alt[t], None)).unwrap();
        assert_eq!((plain.swaps, plain.prefetches), (2, 0));
        let ahead = replay(&order, &bytes, 1.0, |t, cache| {
            assert_eq!(cache.is_resident(Int2), t > 0);
            (alt[t], Some(alt[(t + 1) % 4]))
        })
        .unwrap();
        assert_eq!((ahead.swaps, ahead.prefetches), (1, 1));
        assert!((ahead.hit_rate - 0.75).abs() < 1e-12);
        // FP16 does not fit beside INT4: never prefetched.
        let no_room = replay(&order, &bytes, 1.0, |_, _| (Int4, Some(Fp16))).unwrap();
        assert_eq!((no_room.swaps, no_room.prefetches), (1, 0));
        let pt = measure_routing("r", &tasks, &order, &choices, &rel()).unwrap();
        assert!((pt.bytes - (0.55 * 3.0 + 1.0) / 4.0).abs() < 1e-12);
        // Every routed task succeeds, the base solves 3 of 4 (INT4 does task 2 it fails).
        assert_eq!(pt.quality, 1.0);
        assert!((pt.retained - 4.0 / 3.0).abs() < 1e-12);
        // Decode: 6 + 10 + 4 + 6 = 26 against 50; prefill the same ratio (a quarter of each).
        assert!((pt.decode - 26.0 / 50.0).abs() < 1e-6);
        assert!((pt.prefill - pt.decode).abs() < 1e-6);
        assert!((pt.time - 26.0 / 50.0).abs() < 1e-6);
        assert_eq!(pt.mix.into_array(), [1, 0, 3, 0]);
        assert!(measure_routing("r", &tasks, &order, &choices[..3], &rel()).is_err());
        assert!(measure_routing("r", &tasks, &[], &[], &rel()).is_err());
    }

    #[test]
    fn frontier_of_time_uses_each_tasks_own_costs() {
        // Two tasks: INT4 keeps task 0 only; in time INT4 is cheap on task 1 alone.
        let q = vec![
            PerPrecision::from([1.0, 1.0, 1.0, 0.0]),
            PerPrecision::from([1.0, 1.0, 0.0, 0.0]),
        ];
        let costs = vec![
            PerPrecision::from([1.0, 0.8, 0.8, 0.5]),
            PerPrecision::from([1.0, 0.8, 0.2, 0.1]),
        ];
        let targets = frontier::targets_between(0.5, 1.0, 3);
        let blind_like = frontier::uniform_points_per_task(&q, &costs);
        let (rows, apgr) = frontier_of(&q, &costs, &blind_like, &targets);
        assert_eq!(rows.len(), 3);
        // At 0.5 the oracle runs task 0 on INT4 (0.8) and task 1 on INT2 (0.1).
        assert!((rows[0].oracle.unwrap() - 0.45).abs() < 1e-12, "{rows:?}");
        // Blind mixing: INT4's point (cost 0.5, quality 0.5).
        assert!((rows[0].blind.unwrap() - 0.5).abs() < 1e-12);
        for r in &rows {
            assert!(r.oracle.unwrap() <= r.blind.unwrap() + 1e-12);
            assert_eq!(r.strategy, r.blind);
        }
        assert!(apgr.unwrap().abs() < 1e-9);
    }

    #[test]
    fn goals_compare_the_sweep_with_blind_mixing_and_uniform_variants() {
        let p = |cost: f64, quality: f64| Point { cost, quality };
        let uniform = [p(1.0, 0.5), p(0.75, 0.5), p(0.55, 0.4), p(0.45, 0.0)];
        let row = |blind: f64, strategy: f64| FrontierRow {
            target: 0.45,
            blind: Some(blind),
            oracle: Some(0.3),
            strategy: Some(strategy),
        };
        let good = [p(0.45, 0.0), p(0.5, 0.49)];
        let g = goals(&[row(0.6, 0.5)], Some(0.6), &uniform, &good, 0.5, 0.96);
        assert!(
            g.beats_blind && g.apgr_half && g.below_cheapest_uniform,
            "{g:?}"
        );
        assert_eq!(g.cheapest_uniform, Some((Int8, 0.75)));
        let bad = goals(
            &[row(0.6, 0.5), row(0.6, 0.6)],
            Some(0.4),
            &uniform,
            &[p(0.45, 0.0), p(1.0, 0.5)],
            0.5,
            0.96,
        );
        assert!(!bad.beats_blind && !bad.apgr_half && !bad.below_cheapest_uniform);
        assert_eq!(
            goals(&[], None, &uniform, &good, 0.5, 1.2).cheapest_uniform,
            None
        );
    }

    /// Labels where success depends on the kind (copy and logic survive INT4, extraction and
    /// arithmetic need INT8, the rest fail everywhere) and the prompt's tokens name the kind.
    fn synthetic(n: usize) -> (Vec<ChatLabel>, Vec<Vec<u32>>) {
        let tasks = generate(n, 5);
        let mut labels = Vec::new();
        let mut prompts = Vec::new();
        for t in tasks {
            let k = ChatKind::ALL.iter().position(|k| *k == t.kind).unwrap_or(0) as u32;
            let s = match t.kind {
                ChatKind::Copy | ChatKind::Logic => [true, true, true, false],
                ChatKind::Extract | ChatKind::Arithmetic => [true, true, false, false],
                _ => [false; 4],
            };
            prompts.push(vec![1, 2, 10 + k, 20 + k, 30 + t.domain as u32, 3]);
            labels.push(label(t, s, [1.0, 0.95, 0.7, 0.2], [10.0, 7.0, 5.0, 4.0]));
        }
        (labels, prompts)
    }

    /// Embedding width, a seeded table of 64 token embeddings, and the default settings with
    /// a controller training of `iterations` short steps.
    fn brief_training(iterations: usize) -> (usize, Vec<f32>, ChatRouteConfig) {
        let dim = 16;
        let mut rng = crate::util::rng::Rng::new(9);
        let table = rng.vec_uniform(64 * dim, 1.0);
        let cfg = ChatRouteConfig {
            train: TrainConfig {
                iterations,
                batch: 8,
                outer_lr: 3e-3,
                ..ChatRouteConfig::default().train
            },
            ..ChatRouteConfig::default()
        };
        (dim, table, cfg)
    }

    #[cfg(feature = "train")]
    #[test]
    fn the_experiment_runs_every_split_and_reports_it() {
        let (labels, prompts) = synthetic(80);
        let (dim, table, cfg) = brief_training(40);
        let bytes: PerPrecision<u64> = [1000, 740, 570, 440].into();
        let r = run(&labels, &prompts, &table, dim, &bytes, &cfg).unwrap();
        assert_eq!((r.tasks, r.splits.len()), (80, 3));
        for s in &r.splits {
            assert_eq!(s.train_tasks + s.test_tasks, 80);
            assert_eq!(s.calibration, "out-of-fold predictions (3 folds)");
            assert_eq!(s.quality_model.edges.len(), cfg.bins);
            assert_eq!(s.predictions.len(), s.test_tasks);
            assert_eq!(s.calibration_predictions.len(), s.train_tasks);
            // The bins are fitted on the calibration predictions: the first edge is the
            // largest prediction of the lowest quarter.
            let mut cal: Vec<f32> = s
                .calibration_predictions
                .iter()
                .map(|p| p.predicted)
                .collect();
            cal.sort_by(f32::total_cmp);
            assert_eq!(s.quality_model.edges[0], cal[cal.len() / cfg.bins - 1]);
            assert!(s.predictions.windows(2).all(|w| w[0].id < w[1].id));
            assert!((-1.0..=1.0).contains(&s.calibration_pearson_r));
            assert_eq!(s.baselines.len(), 6);
            assert_eq!(s.sweep.len(), cfg.sweep.len());
            assert_eq!(s.baselines[0].retained, 1.0);
            // The oracle keeps every task's best quality, so at least the base's.
            assert!(
                s.baselines[4].retained >= 1.0 - 1e-9,
                "{:?}",
                s.baselines[4]
            );
            // Target 0: every variant is adequate, so everything runs on INT2.
            assert_eq!(s.sweep[0].mix[Int2], s.test_tasks);
            assert!((-1.0..=1.0).contains(&s.pearson_r));
            assert_eq!(s.rows.len(), cfg.n_targets);
            for row in &s.rows {
                let (b, o) = (row.bytes.blind.unwrap(), row.bytes.oracle.unwrap());
                assert!(o <= b + 1e-12, "{row:?}");
            }
        }
        let md = crate::eval::chat_route_report::markdown(&r);
        assert!(md.contains("test on software + travel"), "{md}");
        assert!(md.contains("Router calibrated on out-of-fold predictions (3 folds)"));
        assert!(md.contains("| uniform int4 |"), "{md}");
        let svg = crate::eval::chat_route_report::svg(&r);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2 + r.splits.len());
        assert!(run(&labels, &prompts[1..], &table, dim, &bytes, &cfg).is_err());
    }

    #[cfg(feature = "train")]
    #[test]
    fn the_router_is_calibrated_on_predictions_of_controllers_that_never_trained_on_the_task() {
        use crate::eval::cross_fit::fold_sets;
        let (labels, prompts) = synthetic(40);
        let tasks: Vec<RouteTask> = labels.iter().map(RouteTask::from_label).collect();
        let (dim, table, cfg) = brief_training(30);
        let base = Controller::new(ControllerConfig::named("small", dim).unwrap(), 7).unwrap();
        let gathered: Vec<Vec<f32>> = prompts
            .iter()
            .map(|ids| base.gather(&table, ids).unwrap())
            .collect();
        let rel = rel();
        let idx: Vec<usize> = (0..24).collect();
        let complexities =
            |o: &[ControllerOutput]| -> Vec<f32> { o.iter().map(|o| o.complexity).collect() };
        let close = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
        };
        let trainer = Trainer {
            base: &base,
            tasks: &tasks,
            gathered: &gathered,
            rel_bytes: &rel,
            cfg: &cfg,
        };
        let crossed = fit(&trainer, &idx).unwrap();
        assert_eq!(crossed.calibration.len(), idx.len());
        // Fold 1 holds out positions 1, 4, 7...: the controller trained on the other two
        // thirds predicts them, and those are the router's calibration points there.
        let (fit1, held1) = &fold_sets(&idx, 3).unwrap()[1];
        assert_eq!(held1[..3], [1, 4, 7]);
        let c1 = trainer.train(fit1).unwrap();
        let want = complexities(&predict_all(&c1, &gathered, held1).unwrap());
        let got: Vec<f32> = held1
            .iter()
            .map(|&i| crossed.calibration[i].complexity)
            .collect();
        assert!(close(&got, &want), "{got:?} vs {want:?}");
        // In-sample calibration: the same final controller, calibrated on its own predictions
        // for the tasks it trained on, which differ from the out-of-fold ones.
        let own_cfg = ChatRouteConfig {
            calibration_folds: 1,
            ..cfg.clone()
        };
        let own = fit(
            &Trainer {
                cfg: &own_cfg,
                ..trainer
            },
            &idx,
        )
        .unwrap();
        let final_preds = complexities(&predict_all(&crossed.controller, &gathered, &idx).unwrap());
        assert!(close(&complexities(&own.calibration), &final_preds));
        assert!(!close(
            &complexities(&own.calibration),
            &complexities(&crossed.calibration)
        ));
        let points: Vec<(f32, PerPrecision<f32>)> = idx
            .iter()
            .map(|&i| {
                (
                    crossed.calibration[i].complexity,
                    tasks[i].relative_quality(),
                )
            })
            .collect();
        assert_eq!(
            crossed.router.quality,
            QualityModel::fit(&points, cfg.bins).unwrap()
        );
    }
}
