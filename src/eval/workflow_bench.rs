//! The benchmark itself: label every stage of every workflow on the four variants, train and
//! calibrate the controller on one split, then replay the held-out workflows in order through
//! each strategy (uniform FP16/INT8/INT4/INT2, random, oracle, the oracle bound at INT8's
//! quality, controller + router at the threshold and at INT8's quality) with the same residency
//! model, and summarise cost, quality, swaps and controller overhead.

use super::frontier::{self, FrontierRow, Point};
use super::labels::{measure, LabelSet, LabelledTask};
use super::metrics::{pearson, quantile, signal_share};
use super::speculation::{self, SpeculationResult};
use super::workflows::{generate, StageKind, Workflow};
use crate::controller::train::{Sample, TrainConfig, TrainReport};
use crate::controller::{Controller, ControllerConfig, ControllerOutput};
use crate::model::tokenizer::Tokenizer;
use crate::pipeline::VariantSet;
use crate::quant::{PerPrecision, Precision};
use crate::router::{QualityModel, Router, RouterConfig, VariantCache, DEFAULT_PREFETCH_MIN_PROB};
use crate::util::rng::Rng;
use crate::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Workflows to generate.
    pub workflows: usize,
    /// Seed of workflows, controller initialisation, training and the random baseline.
    pub seed: u64,
    /// Tokens generated per task when labelling.
    pub n_gen: usize,
    /// Prompt tokens kept per task (the controller reads the first k of them).
    pub max_prompt: usize,
    /// Quality (fidelity to FP16) a task must keep to count as a success; the router's target.
    pub threshold: f32,
    /// Controller configuration name (`small` or `reference`).
    pub controller: String,
    /// Training settings.
    pub train: TrainConfig,
    /// Device capacity as a multiple of the FP16 variant's size.
    pub capacity: f64,
    /// Cost of a swap per byte, relative to a byte read by compute.
    pub swap_factor: f64,
    /// Tasks over which the router amortises a swap.
    pub horizon: f64,
    /// Calibration bins.
    pub bins: usize,
    /// Router targets swept for the cost-versus-quality curve.
    pub sweep: Vec<f32>,
    /// Serve the controller's hard tasks (routed to FP16 or INT8) through greedy speculation
    /// from a cheaper resident variant, drafting this many tokens per verify (`None`: off);
    /// see [`super::speculation`].
    pub speculation: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            workflows: 290,
            seed: 7,
            n_gen: 20,
            max_prompt: 64,
            threshold: 0.95,
            controller: "small".into(),
            train: TrainConfig {
                iterations: 2000,
                ..TrainConfig::default()
            },
            capacity: 1.5,
            swap_factor: 50.0,
            horizon: 4.0,
            bins: 8,
            sweep: vec![0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99],
            speculation: None,
        }
    }
}

/// One strategy's results on the test workflows.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyResult {
    /// Name.
    pub name: String,
    /// Total cost (compute plus swaps) relative to the FP16 baseline's.
    pub cost: f64,
    /// `1 - cost`.
    pub cost_reduction: f64,
    /// Mean quality relative to FP16's (which is 1 by definition).
    pub quality_retained: f64,
    /// Fraction of tasks whose quality meets the threshold.
    pub success_rate: f64,
    /// Variant loads.
    pub swaps: u64,
    /// Fraction of tasks served by a resident variant.
    pub hit_rate: f64,
    /// Tasks per precision.
    pub mix: PerPrecision<usize>,
}

/// Results of one train/test split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitResult {
    /// Description of the split.
    pub name: String,
    /// Training tasks.
    pub train_tasks: usize,
    /// Test tasks.
    pub test_tasks: usize,
    /// Every strategy.
    pub strategies: Vec<StrategyResult>,
    /// Pearson r of predicted versus true complexity on the test tasks.
    pub pearson_r: f64,
    /// Router target calibrated on the training split to uniform INT8's quality retained
    /// there (used by the strategy named [`MATCHED_CONTROLLER`]).
    pub matched_target: f32,
    /// Controller-plus-router overhead per task, median, milliseconds.
    pub overhead_median_ms: f64,
    /// Same, 99th percentile.
    pub overhead_p99_ms: f64,
    /// `(target, cost, quality retained, success rate)` of the controller per swept target.
    pub sweep: Vec<(f32, f64, f64, f64)>,
    /// The routing frontier in bytes of weights read (swaps aside) at quality targets from
    /// uniform INT4's to uniform INT8's mean quality on the test tasks, costs relative to
    /// FP16; the strategy is the controller. The controller's cost is read off its
    /// threshold sweep (random mixing between two swept targets allowed).
    pub frontier: Vec<FrontierRow>,
    /// APGR: the share of the oracle's saving over blind mixing that the controller recovers
    /// over [`SplitResult::frontier`]'s targets (`None` when the oracle saves nothing).
    pub apgr: Option<f64>,
    /// The controller's hard tasks with and without speculation (`None` unless
    /// [`EvalConfig::speculation`] asks for it).
    pub speculation: Option<SpeculationResult>,
    /// Training loss curve.
    #[serde(skip)]
    pub curve: TrainReport,
}

/// How one stage kind's tasks fare on each variant (all tasks, both splits).
#[derive(Clone, Debug, Serialize)]
pub struct KindStats {
    /// The stage kind.
    pub kind: String,
    /// Tasks of this kind.
    pub tasks: usize,
    /// Mean quality per precision.
    pub mean_quality: PerPrecision<f64>,
    /// Fraction of tasks whose quality meets the threshold, per precision.
    pub adequate: PerPrecision<f64>,
}

/// Everything the benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Workflows run.
    pub workflows: usize,
    /// Tasks (stages) labelled.
    pub tasks: usize,
    /// Controller parameters.
    pub controller_params: usize,
    /// Mean quality per precision over all tasks.
    pub mean_quality: PerPrecision<f64>,
    /// Exact-match rate of greedy continuations per precision.
    pub exact_rate: PerPrecision<f64>,
    /// Mean KL per precision.
    pub mean_kl: PerPrecision<f64>,
    /// Variant sizes relative to FP16.
    pub relative_bytes: PerPrecision<f64>,
    /// Fraction of all tasks whose quality meets the threshold, per precision.
    pub adequate: PerPrecision<f64>,
    /// Share of the across-task variance of each precision's quality that is not per-position
    /// sampling noise (see [`super::metrics::signal_share`]): how much of it any controller
    /// could hope to predict.
    pub signal_share: PerPrecision<f64>,
    /// Per stage kind: mean quality and adequacy per precision.
    pub by_kind: Vec<KindStats>,
    /// In-domain split (held-out workflows from every domain).
    pub in_domain: SplitResult,
    /// Cross-domain split (train on two domains, test on the other two).
    pub cross_domain: SplitResult,
    /// Seconds spent labelling (0 when labels were given).
    pub label_seconds: f64,
}

/// What [`run`] returns besides the report: the artefacts worth saving.
pub struct EvalOutput {
    /// The report.
    pub report: EvalReport,
    /// The workflows.
    pub workflows: Vec<Workflow>,
    /// The labels.
    pub labels: LabelSet,
    /// The controller trained on the in-domain split.
    pub controller: Controller,
    /// The router calibrated on the in-domain split.
    pub router: Router,
}

/// Labels every stage of `wfs` on every variant (in parallel).
pub fn label_workflows(
    set: &VariantSet,
    tok: &dyn Tokenizer,
    wfs: &[Workflow],
    n_gen: usize,
    max_prompt: usize,
    model: &str,
) -> Result<LabelSet> {
    let mut jobs = Vec::new();
    for w in wfs {
        for (i, s) in w.stages.iter().enumerate() {
            let mut ids = tok.encode(&s.text, true)?;
            ids.truncate(max_prompt);
            if ids.is_empty() {
                return Err(Error::invalid(format!(
                    "workflow {} stage {i} encodes to nothing",
                    w.id
                )));
            }
            jobs.push((w.id, i, w.domain, ids));
        }
    }
    let tasks = jobs
        .into_par_iter()
        .map(|(workflow, stage, domain, ids)| {
            let label = measure(set, &ids, n_gen)?;
            Ok(LabelledTask {
                workflow,
                stage,
                domain,
                ids,
                label,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LabelSet {
        model: model.to_string(),
        formats: set.formats.clone(),
        n_gen,
        bytes: set.bytes,
        tasks,
    })
}

struct Ctx<'a> {
    set: &'a VariantSet,
    labels: &'a LabelSet,
    gathered: &'a [Vec<f32>],
    base: &'a Controller,
    cfg: &'a EvalConfig,
    tok: &'a dyn Tokenizer,
    texts: &'a [String],
}

fn headroom(l: &super::labels::TaskLabel, threshold: f32) -> f32 {
    1.0 - l.oracle(threshold).bits() as f32 / 16.0
}

/// One task as a replay served it.
pub(crate) struct Served {
    /// Index of the task in the labels.
    pub task: usize,
    /// The variant chosen.
    pub precision: Precision,
    /// Its cost (compute plus swap share).
    pub cost: f64,
}

/// Replays `order` (task indices, in workflow order) choosing each variant with `choose`.
fn replay(
    name: &str,
    ctx: &Ctx<'_>,
    router: &Router,
    order: &[usize],
    choose: impl FnMut(usize, &VariantCache) -> Precision,
) -> Result<StrategyResult> {
    replay_traced(name, ctx, router, order, choose, None)
}

/// [`replay`], appending each task as served to `trace` when given.
fn replay_traced(
    name: &str,
    ctx: &Ctx<'_>,
    router: &Router,
    order: &[usize],
    mut choose: impl FnMut(usize, &VariantCache) -> Precision,
    mut trace: Option<&mut Vec<Served>>,
) -> Result<StrategyResult> {
    let cap = (ctx.cfg.capacity * ctx.set.bytes[Precision::Fp16] as f64) as u64;
    let mut res = VariantCache::new(cap, ctx.set.bytes)?;
    let (mut cost, mut q, mut ok) = (0.0f64, 0.0f64, 0usize);
    let mut mix = PerPrecision::splat(0usize);
    for &t in order {
        let p = choose(t, &res);
        let swap = res.use_variant(p);
        let c = router.cost(p, swap);
        cost += c;
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(Served {
                task: t,
                precision: p,
                cost: c,
            });
        }
        let qual = ctx.labels.tasks[t].label.quality[p];
        q += qual as f64;
        ok += (qual >= ctx.cfg.threshold) as usize;
        mix[p] += 1;
    }
    let n = order.len().max(1) as f64;
    Ok(StrategyResult {
        name: name.to_string(),
        cost,
        cost_reduction: 0.0,
        quality_retained: q / n,
        success_rate: ok as f64 / n,
        swaps: res.swaps,
        hit_rate: res.hit_rate(),
        mix,
    })
}

/// Trains a copy of `base` (all of it, end to end) on the labelled tasks `idx`, whose gathered
/// embeddings are `gathered` (see [`gather_all`]), and calibrates a router on its predictions
/// for them. `progress` receives `(iteration, loss)`. Needs the `train` cargo feature.
pub fn fit(
    set: &VariantSet,
    labels: &LabelSet,
    base: &Controller,
    gathered: &[Vec<f32>],
    idx: &[usize],
    cfg: &EvalConfig,
    progress: impl FnMut(usize, f32),
) -> Result<(Controller, Router, TrainReport)> {
    let tasks = &labels.tasks;
    if gathered.len() != tasks.len() {
        return Err(Error::invalid(format!(
            "{} gathered inputs for {} labelled tasks",
            gathered.len(),
            tasks.len()
        )));
    }
    if let Some(&bad) = idx.iter().find(|&&i| i >= tasks.len()) {
        return Err(Error::invalid(format!(
            "training task {bad} is outside the {} labelled tasks",
            tasks.len()
        )));
    }
    let rel = set.relative_bytes();
    let samples: Vec<Sample> = idx
        .iter()
        .map(|&i| Sample {
            emb: gathered[i].clone(),
            quality: tasks[i].label.quality,
            cost: rel.map(|r| r as f32),
            complexity: tasks[i].label.complexity(),
            headroom: headroom(&tasks[i].label, cfg.threshold),
            domain: tasks[i].domain,
        })
        .collect();
    let mut controller = base.clone();
    let curve = train_controller(&mut controller, &samples, &cfg.train, progress)?;
    let outs = predict_all(&controller, gathered, idx)?;
    let points: Vec<(f32, PerPrecision<f32>)> = idx
        .iter()
        .zip(&outs)
        .map(|(&i, out)| (out.complexity, tasks[i].label.quality))
        .collect();
    let router = Router {
        config: RouterConfig {
            target: cfg.threshold,
            swap_factor: cfg.swap_factor,
            horizon: cfg.horizon,
            task_bytes: labels.n_gen as f64,
            prefetch_min_prob: DEFAULT_PREFETCH_MIN_PROB,
        },
        quality: QualityModel::fit(&points, cfg.bins)?,
        relative_bytes: rel,
    };
    Ok((controller, router, curve))
}

/// Trains `controller` on `samples` (see [`crate::controller::train::train`]); an
/// Unsupported error without the `train` cargo feature.
#[cfg(feature = "train")]
pub(crate) fn train_controller(
    controller: &mut Controller,
    samples: &[Sample],
    cfg: &TrainConfig,
    progress: impl FnMut(usize, f32),
) -> Result<TrainReport> {
    crate::controller::train::train(controller, samples, cfg, 100, progress)
}

/// Without the `train` cargo feature there is no training: an Unsupported error.
#[cfg(not(feature = "train"))]
pub(crate) fn train_controller(
    _controller: &mut Controller,
    _samples: &[Sample],
    _cfg: &TrainConfig,
    _progress: impl FnMut(usize, f32),
) -> Result<TrainReport> {
    Err(Error::Unsupported(
        "training the controller needs the `train` cargo feature (on by default)".into(),
    ))
}

/// The runtime controller's outputs for the tasks `idx` (in parallel).
pub fn predict_all(
    controller: &Controller,
    gathered: &[Vec<f32>],
    idx: &[usize],
) -> Result<Vec<ControllerOutput>> {
    let heads = controller.config.pool_heads;
    idx.par_iter()
        .map(|&i| {
            let emb = gathered.get(i).ok_or_else(|| {
                Error::invalid(format!("task {i} has no gathered controller input"))
            })?;
            Ok(controller.head.forward(&controller.encode(emb)?, heads))
        })
        .collect()
}

/// Gathers, for every labelled task, the frozen embeddings of its first k tokens (the
/// controller's input; it does not depend on the controller's weights).
pub fn gather_all(set: &VariantSet, base: &Controller, labels: &LabelSet) -> Result<Vec<Vec<f32>>> {
    labels
        .tasks
        .iter()
        .map(|t| base.gather(&set.embedding, &t.ids))
        .collect()
}

/// Name of the perfect-information bound at uniform INT8's quality.
pub const MATCHED_ORACLE: &str = "oracle at int8 quality";

/// Name of the controller routing at the threshold.
pub const CONTROLLER: &str = "controller + router";

/// Name of the controller with its target calibrated to uniform INT8's quality retained.
pub const MATCHED_CONTROLLER: &str = "controller at int8 quality";

/// The cheapest router target (on a grid of 0.005 from 0.5 to 1) at which the controller's
/// routes for the training tasks `idx` keep a mean quality of at least `goal` there (1 when
/// none does).
fn calibrate_target(
    ctx: &Ctx<'_>,
    router: &Router,
    idx: &[usize],
    outs: &[ControllerOutput],
    goal: f64,
) -> Result<f32> {
    let mut best: Option<(f64, f32)> = None;
    for step in 0..=100 {
        let target = 0.5 + 0.005 * step as f32;
        let mut r = router.clone();
        r.config.target = target;
        let s = replay("calibration", ctx, &r, idx, |t, res| {
            r.decide(&outs[t], res).precision
        })?;
        if s.quality_retained >= goal - 1e-9 && best.is_none_or(|(c, _)| s.cost < c) {
            best = Some((s.cost, target));
        }
    }
    Ok(best.map_or(1.0, |(_, t)| t))
}

/// The precision minimising `relative bytes - lambda * quality` for a task of known quality.
fn cheapest_at(quality: &PerPrecision<f32>, rel: &PerPrecision<f64>, lambda: f64) -> Precision {
    Precision::ALL
        .into_iter()
        .min_by(|a, b| {
            let f = |p: &Precision| rel[*p] - lambda * quality[*p] as f64;
            f(a).total_cmp(&f(b))
        })
        .unwrap_or(Precision::Fp16)
}

/// With every task's measured quality known, the cheapest choice of precision per task of
/// `idx` keeping a mean quality of at least `target` (`(task, precision)` pairs): the lowest
/// cost any controller could reach at that quality retention, swaps aside. The price of
/// quality `lambda` of [`cheapest_at`] is bisected to the smallest that meets `target`, then
/// tasks are moved one by one from the choices just below it to those at it until the mean
/// quality meets `target` (so the bound follows the convex hull between them). A bound, not a
/// strategy: it reads the test labels.
fn matched_quality_choices(
    tasks: &[LabelledTask],
    idx: &[usize],
    rel: &PerPrecision<f64>,
    target: f64,
) -> std::collections::HashMap<usize, Precision> {
    let choose = |lambda: f64| -> Vec<Precision> {
        idx.iter()
            .map(|&i| cheapest_at(&tasks[i].label.quality, rel, lambda))
            .collect()
    };
    let total = |ps: &[Precision]| -> f64 {
        idx.iter()
            .zip(ps)
            .map(|(&i, &p)| tasks[i].label.quality[p] as f64)
            .sum()
    };
    let need = (target - 1e-6) * idx.len() as f64;
    let (mut lo, mut hi) = (0.0f64, 1e3f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if total(&choose(mid)) >= need {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let (mut ps, at) = (choose(lo), choose(hi));
    let mut sum = total(&ps);
    for (j, &i) in idx.iter().enumerate() {
        if sum >= need {
            break;
        }
        let q = &tasks[i].label.quality;
        sum += (q[at[j]] - q[ps[j]]) as f64;
        ps[j] = at[j];
    }
    idx.iter().copied().zip(ps).collect()
}

/// The frontier rows and APGR of [`SplitResult`] for the test tasks `idx`, given the
/// controller's swept points.
fn frontier_rows(
    tasks: &[LabelledTask],
    idx: &[usize],
    rel: &PerPrecision<f64>,
    controller: &[Point],
) -> FrontierRows {
    let q: Vec<PerPrecision<f64>> = idx
        .iter()
        .map(|&i| tasks[i].label.quality.map(|v| v as f64))
        .collect();
    let uniform = frontier::uniform_points(&q, rel);
    let at = |p: Precision| uniform[p.index()].quality;
    let targets = frontier::targets_between(at(Precision::Int4), at(Precision::Int8), 6);
    let oracle: Vec<(f64, f64)> = targets
        .iter()
        .filter_map(|&t| frontier::oracle_cost(&q, rel, t).map(|c| (t, c)))
        .collect();
    let rows = targets
        .iter()
        .map(|&t| FrontierRow {
            target: t,
            blind: frontier::mix_cost(&uniform, t),
            oracle: oracle.iter().find(|(ot, _)| *ot == t).map(|(_, c)| *c),
            strategy: frontier::mix_cost(controller, t),
        })
        .collect();
    (
        rows,
        frontier::apgr(&uniform, controller, &oracle, &targets),
    )
}

/// The frontier rows and the APGR over them.
type FrontierRows = (Vec<FrontierRow>, Option<f64>);

fn run_split(
    ctx: &Ctx<'_>,
    name: &str,
    is_train: impl Fn(&LabelledTask) -> bool,
) -> Result<(SplitResult, Controller, Router)> {
    let cfg = ctx.cfg;
    let tasks = &ctx.labels.tasks;
    let train_idx: Vec<usize> = (0..tasks.len()).filter(|&i| is_train(&tasks[i])).collect();
    let test_idx: Vec<usize> = (0..tasks.len()).filter(|&i| !is_train(&tasks[i])).collect();
    if train_idx.is_empty() || test_idx.is_empty() {
        return Err(Error::invalid(format!(
            "split {name} leaves no training or no test tasks"
        )));
    }
    let (controller, mut router, curve) = fit(
        ctx.set,
        ctx.labels,
        ctx.base,
        ctx.gathered,
        &train_idx,
        cfg,
        |_, _| {},
    )?;
    let all: Vec<usize> = (0..tasks.len()).collect();
    let outs = predict_all(&controller, ctx.gathered, &all)?;
    let mut strategies = Vec::new();
    for p in Precision::ALL {
        strategies.push(replay(
            &format!("uniform {p}"),
            ctx,
            &router,
            &test_idx,
            |_, _| p,
        )?);
    }
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    strategies.push(replay("random", ctx, &router, &test_idx, |_, _| {
        Precision::ALL[rng.below(4) as usize]
    })?);
    strategies.push(replay("oracle", ctx, &router, &test_idx, |t, _| {
        tasks[t].label.oracle(cfg.threshold)
    })?);
    let int8_quality = strategies[Precision::Int8.index()].quality_retained;
    let matched = matched_quality_choices(tasks, &test_idx, &router.relative_bytes, int8_quality);
    strategies.push(replay(MATCHED_ORACLE, ctx, &router, &test_idx, |t, _| {
        matched.get(&t).copied().unwrap_or(Precision::Fp16)
    })?);
    let mut served = Vec::new();
    strategies.push(replay_traced(
        CONTROLLER,
        ctx,
        &router,
        &test_idx,
        |t, res| router.decide(&outs[t], res).precision,
        Some(&mut served),
    )?);
    // The router's target calibrated on the training split to keep uniform INT8's quality
    // retained there (what a user asks for when INT8's average quality is the bar).
    let train_int8 = train_idx
        .iter()
        .map(|&i| tasks[i].label.quality[Precision::Int8] as f64)
        .sum::<f64>()
        / train_idx.len() as f64;
    let matched_target = calibrate_target(ctx, &router, &train_idx, &outs, train_int8)?;
    let mut matched_router = router.clone();
    matched_router.config.target = matched_target;
    strategies.push(replay(
        MATCHED_CONTROLLER,
        ctx,
        &matched_router,
        &test_idx,
        |t, res| matched_router.decide(&outs[t], res).precision,
    )?);
    let fp16_cost = strategies[0].cost;
    let speculation = match cfg.speculation {
        Some(draft_len) => {
            let inputs = speculation::Inputs {
                set: ctx.set,
                tok: ctx.tok,
                labels: ctx.labels,
                outs: &outs,
                router: &router,
                capacity: (cfg.capacity * ctx.set.bytes[Precision::Fp16] as f64) as u64,
                threshold: cfg.threshold,
                draft_len,
            };
            Some(speculation::speculate(
                &inputs, CONTROLLER, &served, fp16_cost,
            )?)
        }
        None => None,
    };
    for s in &mut strategies {
        s.cost /= fp16_cost;
        s.cost_reduction = 1.0 - s.cost;
    }
    let mut sweep = Vec::new();
    let rel = &router.relative_bytes;
    let byte_cost = |mix: &PerPrecision<usize>| {
        let n = mix.values().iter().sum::<usize>().max(1) as f64;
        Precision::ALL
            .iter()
            .map(|&p| mix[p] as f64 * rel[p])
            .sum::<f64>()
            / n
    };
    let mut controller_points = Vec::new();
    for &target in &cfg.sweep {
        let mut r = router.clone();
        r.config.target = target;
        let s = replay("sweep", ctx, &r, &test_idx, |t, res| {
            r.decide(&outs[t], res).precision
        })?;
        controller_points.push(Point {
            cost: byte_cost(&s.mix),
            quality: s.quality_retained,
        });
        sweep.push((
            target,
            s.cost / fp16_cost,
            s.quality_retained,
            s.success_rate,
        ));
    }
    let (frontier, apgr) = frontier_rows(tasks, &test_idx, rel, &controller_points);
    router.config.target = cfg.threshold;
    let pred: Vec<f32> = test_idx.iter().map(|&i| outs[i].complexity).collect();
    let truth: Vec<f32> = test_idx
        .iter()
        .map(|&i| tasks[i].label.complexity())
        .collect();
    // Overhead: tokenise, gather, encode, head, route, from the task text.
    let cap = (cfg.capacity * ctx.set.bytes[Precision::Fp16] as f64) as u64;
    let res = VariantCache::new(cap, ctx.set.bytes)?;
    let mut times = Vec::with_capacity(test_idx.len());
    // The inference form the engine routes with (packed once, as the engine does at open).
    let packed = controller.packed();
    for &i in &test_idx {
        let t0 = Instant::now();
        let mut ids = ctx.tok.encode(&ctx.texts[i], true)?;
        ids.truncate(cfg.max_prompt);
        let out = packed.predict(&ctx.set.embedding, &ids)?;
        let d = router.decide(&out, &res);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(d);
    }
    Ok((
        SplitResult {
            name: name.to_string(),
            train_tasks: train_idx.len(),
            test_tasks: test_idx.len(),
            strategies,
            pearson_r: pearson(&pred, &truth),
            matched_target,
            overhead_median_ms: quantile(&times, 0.5),
            overhead_p99_ms: quantile(&times, 0.99),
            sweep,
            frontier,
            apgr,
            speculation,
            curve,
        },
        controller,
        router,
    ))
}

/// Mean quality and adequacy per precision for each stage kind.
fn kind_stats(wfs: &[Workflow], labels: &LabelSet, threshold: f32) -> Result<Vec<KindStats>> {
    let mut out = Vec::new();
    for kind in StageKind::ALL {
        let mut st = KindStats {
            kind: format!("{kind:?}").to_lowercase(),
            tasks: 0,
            mean_quality: PerPrecision::splat(0.0),
            adequate: PerPrecision::splat(0.0),
        };
        for t in &labels.tasks {
            let k = wfs
                .get(t.workflow)
                .and_then(|w| w.stages.get(t.stage))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "labelled task {}/{} is not a stage of the generated workflows",
                        t.workflow, t.stage
                    ))
                })?
                .kind;
            if k != kind {
                continue;
            }
            st.tasks += 1;
            for p in Precision::ALL {
                st.mean_quality[p] += t.label.quality[p] as f64;
                st.adequate[p] += (t.label.quality[p] >= threshold) as u8 as f64;
            }
        }
        let n = st.tasks.max(1) as f64;
        st.mean_quality = st.mean_quality.map(|v| v / n);
        st.adequate = st.adequate.map(|v| v / n);
        out.push(st);
    }
    Ok(out)
}

/// Runs the whole benchmark. `labels`, when given, must come from the same workflows (same
/// count and seed); otherwise every task is labelled here.
pub fn run(
    set: &VariantSet,
    tok: &dyn Tokenizer,
    cfg: &EvalConfig,
    model: &str,
    labels: Option<LabelSet>,
) -> Result<EvalOutput> {
    if cfg.workflows < 4 {
        return Err(Error::invalid(
            "the benchmark needs at least 4 workflows (one per domain)",
        ));
    }
    let wfs = generate(cfg.workflows, cfg.seed);
    let texts: Vec<String> = wfs
        .iter()
        .flat_map(|w| w.stages.iter().map(|s| s.text.clone()))
        .collect();
    let t0 = Instant::now();
    let (labels, label_seconds) = match labels {
        Some(l) => {
            if l.tasks.len() != texts.len() {
                return Err(Error::invalid(format!(
                    "the labels file has {} tasks but {} workflows with seed {} have {}",
                    l.tasks.len(),
                    cfg.workflows,
                    cfg.seed,
                    texts.len()
                )));
            }
            (l, 0.0)
        }
        None => {
            let l = label_workflows(set, tok, &wfs, cfg.n_gen, cfg.max_prompt, model)?;
            (l, t0.elapsed().as_secs_f64())
        }
    };
    let base = Controller::new(
        ControllerConfig::named(&cfg.controller, set.config.dim)?,
        cfg.seed,
    )?;
    let gathered = gather_all(set, &base, &labels)?;
    let ctx = Ctx {
        set,
        labels: &labels,
        gathered: &gathered,
        base: &base,
        cfg,
        tok,
        texts: &texts,
    };
    let (in_domain, controller, router) = run_split(
        &ctx,
        "in-domain: 60% of workflows in every domain train, 40% test",
        |t| t.workflow % 5 < 3,
    )?;
    let (cross_domain, _, _) = run_split(
        &ctx,
        "cross-domain: train on stories + support, test on science + software",
        |t| t.domain < 2,
    )?;
    let n = labels.tasks.len() as f64;
    let mut mean_quality = PerPrecision::splat(0.0);
    let mut exact_rate = PerPrecision::splat(0.0);
    let mut mean_kl = PerPrecision::splat(0.0);
    for t in &labels.tasks {
        for p in Precision::ALL {
            mean_quality[p] += t.label.quality[p] as f64 / n;
            exact_rate[p] += t.label.exact[p] as u8 as f64 / n;
            mean_kl[p] += t.label.kl[p] as f64 / n;
        }
    }
    let mut adequate = PerPrecision::splat(0.0);
    for t in &labels.tasks {
        for (p, a) in adequate.iter_mut() {
            *a += (t.label.quality[p] >= cfg.threshold) as u8 as f64 / n;
        }
    }
    let by_kind = kind_stats(&wfs, &labels, cfg.threshold)?;
    let signal_share = PerPrecision::from_fn(|p| {
        let qs: Vec<f32> = labels.tasks.iter().map(|t| t.label.quality[p]).collect();
        signal_share(&qs, labels.n_gen)
    });
    let report = EvalReport {
        workflows: wfs.len(),
        tasks: labels.tasks.len(),
        controller_params: base.param_count(),
        mean_quality,
        exact_rate,
        mean_kl,
        relative_bytes: set.relative_bytes(),
        adequate,
        signal_share,
        by_kind,
        in_domain,
        cross_domain,
        label_seconds,
    };
    Ok(EvalOutput {
        report,
        workflows: wfs,
        labels,
        controller,
        router,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::labels::TaskLabel;

    fn task(quality: [f32; 4]) -> LabelledTask {
        LabelledTask {
            workflow: 0,
            stage: 0,
            domain: 0,
            ids: vec![1],
            label: TaskLabel {
                quality: quality.into(),
                kl: PerPrecision::splat(0.0),
                exact: PerPrecision::splat(false),
                time_ms: PerPrecision::splat(0.0),
                bytes: PerPrecision::splat(0),
                flops: 0,
            },
        }
    }

    #[test]
    fn the_matched_quality_bound_spends_quality_where_it_is_cheapest() {
        let rel = [1.0, 0.6, 0.4, 0.3].into();
        // Two tasks lose nothing on INT4, one loses a lot; INT2 is useless.
        let tasks = vec![
            task([1.0, 0.95, 0.95, 0.1]),
            task([1.0, 0.95, 0.95, 0.1]),
            task([1.0, 0.95, 0.5, 0.1]),
        ];
        let idx = [0, 1, 2];
        let int8 = 0.95;
        let c = matched_quality_choices(&tasks, &idx, &rel, int8);
        assert_eq!(c[&0], Precision::Int4);
        assert_eq!(c[&1], Precision::Int4);
        assert_eq!(c[&2], Precision::Int8);
        // A higher bar than INT8 everywhere buys FP16 where INT8 falls short.
        let c = matched_quality_choices(&tasks, &idx, &rel, 0.97);
        let mean: f32 = idx
            .iter()
            .map(|&i| tasks[i].label.quality[c[&i]])
            .sum::<f32>()
            / 3.0;
        assert!(mean >= 0.97 - 1e-6, "{mean}");
        assert!(c.values().any(|p| *p == Precision::Fp16));
    }

    #[test]
    fn frontier_rows_place_the_controller_between_blind_mixing_and_the_oracle() {
        let rel = [1.0, 0.5, 0.25, 0.125].into();
        // Half the tasks are easy on INT4, half need INT8.
        let tasks = vec![
            task([1.0, 1.0, 1.0, 0.0]),
            task([1.0, 1.0, 0.0, 0.0]),
            task([1.0, 1.0, 1.0, 0.0]),
            task([1.0, 1.0, 0.0, 0.0]),
        ];
        let idx = [0, 1, 2, 3];
        // A controller that routes like the oracle (failing tasks on INT2, easy ones on INT4,
        // hard ones on INT8), and one that mixes blindly.
        let oracle_like = [
            Point {
                cost: 0.1875,
                quality: 0.5,
            },
            Point {
                cost: 0.375,
                quality: 1.0,
            },
        ];
        let (rows, apgr) = frontier_rows(&tasks, &idx, &rel, &oracle_like);
        assert_eq!(rows.len(), 6);
        assert_eq!((rows[0].target, rows[5].target), (0.5, 1.0));
        for r in &rows {
            let t = r.target;
            let (b, o, c) = (r.blind.unwrap(), r.oracle.unwrap(), r.strategy.unwrap());
            assert!(o <= c + 1e-12 && c <= b + 1e-12, "{t}: {b} {o} {c}");
        }
        assert!((apgr.unwrap() - 1.0).abs() < 1e-9, "{apgr:?}");
        let blind = [
            Point {
                cost: 0.25,
                quality: 0.5,
            },
            Point {
                cost: 0.5,
                quality: 1.0,
            },
        ];
        let (_, apgr) = frontier_rows(&tasks, &idx, &rel, &blind);
        assert!(apgr.unwrap().abs() < 1e-9, "{apgr:?}");
    }
}
