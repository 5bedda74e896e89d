//! Speculation in the workflow benchmark: the held-out tasks a strategy routes to a precise
//! variant T (FP16 or INT8), the **hard tasks**, served through greedy speculation of T from a
//! cheaper variant, and what that saves in the benchmark's unit at unchanged quality.
//!
//! - **Routes** are the strategy's own (taken from its replay), so every task runs on the
//!   same variant with and without speculation. The tasks are replayed again in order with
//!   their own residency model (same capacity, LRU and swap cost), because drafts occupy
//!   device memory too: every swap this costs is counted.
//! - **Drafts**: variants with fewer bits than T that are resident once T is loaded, or that
//!   fit in the free capacity beside everything resident (loading one evicts nothing, and its
//!   swap cost is charged to the task that loads it; a strategy that routes every hard task
//!   to one variant never loads a cheaper one by itself). Which of them drafts is decided
//!   online, in replay order, by a [`SpeculationBook`] over the router's complexity bins, by
//!   weight bytes instead of time (so the benchmark does not depend on the machine's load):
//!   each (T, D, bin) is tried, resident drafts first, until it has [`MIN_VERIFIES`]
//!   verifies; then the draft with the lowest measured bytes per token drafts when that is
//!   below plain T's, and otherwise T decodes plainly. Only the runs that served a task are
//!   recorded, so no decision reads the outcome of a run that did not happen.
//! - **Draft length**: fixed (not the engine's adaptive default), because the adaptive
//!   choice follows measured times and would make the counts, and so the costs, vary from run
//!   to run.
//! - **Cost** of a speculated task, in the benchmark's unit (weight bytes read per token
//!   relative to FP16's size, a plain FP16 task = 1): `(target forwards x bytes_T + draft
//!   forwards x bytes_D) / (tokens x bytes_FP16)` plus the task's swap shares, where the
//!   target's forwards are its prefill and its verifies (a verify reads the weights once for
//!   all its rows) and the draft's are its prefill and one per drafted token. Plain decoding
//!   of T is `tokens` forwards of T (prefill plus one step per further token), as the labels
//!   count it.
//! - **Quality**: greedy speculation reproduces T's greedy output, so a task keeps its
//!   label's quality. Every speculated output is compared with T's own greedy output on the
//!   same prompt; a task where they differ is counted in
//!   [`SpeculationResult::mismatches`] and scored as failed (quality 0), never hidden.

use super::labels::{greedy_until, LabelSet};
use super::workflow_bench::Served;
use crate::controller::ControllerOutput;
use crate::engine::{
    generate_speculative, DraftLen, GenerateParams, SamplingParams, SpeculationStats,
    SpeculativeParams,
};
use crate::model::tokenizer::Tokenizer;
use crate::pipeline::VariantSet;
use crate::quant::{PerPrecision, Precision};
use crate::router::{Router, SpeculationBook, VariantCache, MIN_VERIFIES};
use crate::{Error, Result};
use serde::Serialize;

/// Draft tokens per verify when the benchmark speculates and none is given: where the
/// engine's adaptive choice starts.
pub const DEFAULT_DRAFT_LEN: usize = 4;

/// Why a hard task was or was not served through speculation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftChoice {
    /// No variant cheaper than the target was resident or fitted beside it: plain decoding.
    NoneAvailable,
    /// The draft had fewer than [`MIN_VERIFIES`] verifies on tasks of this bin: tried.
    Exploring,
    /// The draft with the lowest measured bytes per token, below plain decoding's.
    Measured,
    /// Every resident draft measured at least plain decoding's bytes per token: plain.
    Dearer,
}

/// One hard task of the replay.
#[derive(Clone, Debug, Serialize)]
pub struct HardTask {
    /// Index of the task in the labels.
    pub task: usize,
    /// The variant the strategy routed it to.
    pub target: Precision,
    /// The drafting variant (`None`: decoded plainly).
    pub draft: Option<Precision>,
    /// Why.
    pub choice: DraftChoice,
    /// Tokens generated.
    pub tokens: usize,
    /// Draft tokens proposed.
    pub drafted: u64,
    /// Draft tokens the target accepted.
    pub accepted: u64,
    /// Verify forwards of the target.
    pub verifies: u64,
    /// Forwards of the target (each reads its weights once): prefill plus verifies, or
    /// `tokens` when decoded plainly.
    pub target_forwards: u64,
    /// Forwards of the draft: prefill plus one per drafted token (0 when decoded plainly).
    pub draft_forwards: u64,
    /// The task's cost in the strategy's own replay, decoded plainly (compute plus swap
    /// share, a plain FP16 task = 1).
    pub cost_plain: f64,
    /// The target's swap share in the speculative replay (0 when it was resident).
    pub swap_cost: f64,
    /// The swap share of loading the draft for this task (0 when it was resident).
    pub draft_load_cost: f64,
    /// The task's cost as served in the speculative replay: compute plus both swap shares.
    pub cost: f64,
    /// Whether the output equals the target's own greedy output (true when decoded plainly).
    pub matches_target: bool,
}

/// What speculation measured for one (target, draft) pair over the tasks it served.
#[derive(Clone, Debug, Serialize)]
pub struct PairStats {
    /// The verifying variant.
    pub target: Precision,
    /// The drafting variant.
    pub draft: Precision,
    /// Tasks served.
    pub tasks: usize,
    /// Draft tokens proposed.
    pub drafted: u64,
    /// Draft tokens accepted.
    pub accepted: u64,
    /// Verify forwards.
    pub verifies: u64,
    /// `accepted / drafted`.
    pub acceptance: f64,
    /// `(accepted + verifies) / verifies`.
    pub tokens_per_verify: f64,
    /// Weight bytes read, relative to plain decoding of the target on the same tasks.
    pub bytes_factor: f64,
}

/// A strategy's hard tasks with and without speculation, and the whole benchmark's cost.
/// Costs are relative to uniform FP16's on the same test tasks, as in the strategy table.
#[derive(Clone, Debug, Serialize)]
pub struct SpeculationResult {
    /// The strategy whose routes were replayed.
    pub strategy: String,
    /// Draft tokens per verify.
    pub draft_len: usize,
    /// Uniform FP16's total cost on the test tasks, in task units (the divisor of every cost
    /// below).
    pub uniform_fp16_cost: f64,
    /// Tasks routed to FP16 or INT8.
    pub hard_tasks: usize,
    /// Of them, served through speculation.
    pub speculated: usize,
    /// Speculated tasks whose output differs from the target's own greedy output.
    pub mismatches: usize,
    /// Drafts loaded into free capacity for a task.
    pub draft_loads: usize,
    /// Target loads (swaps) in the speculative replay.
    pub swaps: u64,
    /// The other tasks' cost in the speculative replay (their swaps may differ from the
    /// strategy's own replay).
    pub other_cost: f64,
    /// The hard tasks' cost decoded plainly.
    pub hard_cost_plain: f64,
    /// The hard tasks' cost as served.
    pub hard_cost: f64,
    /// Acceptance over the speculated tasks (`accepted / drafted`).
    pub acceptance: f64,
    /// Tokens per verify over the speculated tasks.
    pub tokens_per_verify: f64,
    /// The strategy's whole-benchmark cost without speculation.
    pub cost_plain: f64,
    /// With speculation.
    pub cost: f64,
    /// `1 - cost_plain`: saving versus uniform FP16 without speculation.
    pub cost_reduction_plain: f64,
    /// `1 - cost`: saving versus uniform FP16 with speculation.
    pub cost_reduction: f64,
    /// Mean quality without speculation.
    pub quality_retained_plain: f64,
    /// Mean quality with speculation (mismatched tasks count 0).
    pub quality_retained: f64,
    /// Success rate without speculation.
    pub success_rate_plain: f64,
    /// Success rate with speculation (mismatched tasks fail).
    pub success_rate: f64,
    /// Per (target, draft) pair that served tasks.
    pub pairs: Vec<PairStats>,
    /// Every hard task, in replay order.
    pub tasks: Vec<HardTask>,
}

/// What the speculation pass reads.
pub(crate) struct Inputs<'a> {
    /// The variants.
    pub set: &'a VariantSet,
    /// Decodes generated ids (speculative generation streams text).
    pub tok: &'a dyn Tokenizer,
    /// The labelled tasks (prompts, `n_gen`, qualities).
    pub labels: &'a LabelSet,
    /// The controller's output per labelled task (its complexity picks the bin).
    pub outs: &'a [ControllerOutput],
    /// The router of the replay: swap costs, variant sizes and complexity bins.
    pub router: &'a Router,
    /// Device capacity in bytes.
    pub capacity: u64,
    /// Success threshold.
    pub threshold: f32,
    /// Draft tokens per verify.
    pub draft_len: usize,
}

/// Whether tasks routed to `p` are hard ones, served through speculation where it pays.
fn is_target(p: Precision) -> bool {
    matches!(p, Precision::Fp16 | Precision::Int8)
}

/// The draft for a task routed to `target` among `candidates` (variants with fewer bits,
/// resident ones first); see the module docs.
fn choose_draft(
    book: &SpeculationBook,
    target: Precision,
    complexity: f32,
    candidates: &[Precision],
    rel: &PerPrecision<f64>,
) -> (Option<Precision>, DraftChoice) {
    if candidates.is_empty() {
        return (None, DraftChoice::NoneAvailable);
    }
    let c = Some(complexity);
    if let Some(d) = candidates.iter().copied().find(|d| {
        book.estimate(target, *d, c, rel)
            .is_none_or(|e| e.verifies < MIN_VERIFIES)
    }) {
        return (Some(d), DraftChoice::Exploring);
    }
    let best = candidates
        .iter()
        .filter_map(|d| book.estimate(target, *d, c, rel))
        .min_by(|a, b| a.bytes_factor.total_cmp(&b.bytes_factor));
    match best {
        Some(e) if e.bytes_factor < 1.0 => (Some(e.draft), DraftChoice::Measured),
        _ => (None, DraftChoice::Dearer),
    }
}

/// Cheaper variants than `target` that could draft now: the resident ones, then those that
/// fit in the free capacity.
fn candidates(
    cache: &VariantCache,
    bytes: &PerPrecision<u64>,
    capacity: u64,
    target: Precision,
) -> Vec<Precision> {
    let cheaper = || {
        Precision::ALL
            .into_iter()
            .filter(move |d| d.bits() < target.bits())
    };
    let free = capacity.saturating_sub(cache.used());
    cheaper()
        .filter(|d| cache.is_resident(*d))
        .chain(cheaper().filter(|d| !cache.is_resident(*d) && bytes[*d] <= free))
        .collect()
}

/// Greedy speculation of `target` from `draft` on `prompt` for `n_gen` tokens, and whether
/// its output equals `target`'s own greedy output.
fn speculate_one(
    inp: &Inputs<'_>,
    prompt: &[u32],
    target: Precision,
    draft: Precision,
) -> Result<(SpeculationStats, bool)> {
    let n_gen = inp.labels.n_gen;
    let (t, d) = (inp.set.model(target), inp.set.model(draft));
    let params = GenerateParams {
        max_new_tokens: n_gen,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        // The labels generate exactly n_gen tokens, EOS or not.
        stop_at_eos: false,
        context: inp.set.config.max_seq_len,
        ..GenerateParams::default()
    };
    let spec = SpeculativeParams {
        draft_len: DraftLen::Fixed(inp.draft_len),
        memory: None,
    };
    let out = generate_speculative(t, d, inp.tok, prompt, &params, &spec, |_| true)?;
    let stats = out.speculation.ok_or_else(|| {
        Error::Internal("speculative generation returned no speculation statistics".into())
    })?;
    let own = greedy_until(t, prompt, n_gen, &[])?;
    Ok((stats, own.ids == out.ids))
}

/// Serves the hard tasks of a replay (`served`, in replay order, of the strategy named
/// `strategy`) through speculation where the book says it pays; `uniform_fp16_cost` is
/// uniform FP16's total cost on the same tasks.
pub(crate) fn speculate(
    inp: &Inputs<'_>,
    strategy: &str,
    served: &[Served],
    uniform_fp16_cost: f64,
) -> Result<SpeculationResult> {
    if inp.draft_len == 0 {
        return Err(Error::invalid("the draft length must be at least 1 token"));
    }
    if uniform_fp16_cost.is_nan() || uniform_fp16_cost <= 0.0 {
        return Err(Error::invalid(format!(
            "uniform FP16's cost {uniform_fp16_cost} must be positive"
        )));
    }
    let rel = inp.router.relative_bytes;
    let bytes = inp.set.bytes;
    let n_gen = inp.labels.n_gen;
    let mut book = SpeculationBook::new(inp.router.quality.edges.clone());
    let mut cache = VariantCache::new(inp.capacity, bytes)?;
    let mut tasks = Vec::new();
    let (mut q_plain, mut q_spec, mut ok_plain, mut ok_spec) = (0.0f64, 0.0f64, 0usize, 0usize);
    let (mut cost_plain, mut other_cost, mut draft_loads) = (0.0f64, 0.0f64, 0usize);
    for s in served {
        let task = inp.labels.tasks.get(s.task).ok_or_else(|| {
            Error::invalid(format!("replayed task {} is not a labelled task", s.task))
        })?;
        let quality = task.label.quality[s.precision] as f64;
        q_plain += quality;
        ok_plain += (quality >= inp.threshold as f64) as usize;
        cost_plain += s.cost;
        let target = s.precision;
        let swap = cache.use_variant(target);
        let base = inp.router.cost(target, swap);
        if !is_target(target) {
            other_cost += base;
            q_spec += quality;
            ok_spec += (quality >= inp.threshold as f64) as usize;
            continue;
        }
        let complexity = inp
            .outs
            .get(s.task)
            .ok_or_else(|| Error::invalid(format!("task {} has no controller output", s.task)))?
            .complexity;
        let cands = candidates(&cache, &bytes, inp.capacity, target);
        let (draft, choice) = choose_draft(&book, target, complexity, &cands, &rel);
        let mut rec = HardTask {
            task: s.task,
            target,
            draft,
            choice,
            tokens: n_gen,
            drafted: 0,
            accepted: 0,
            verifies: 0,
            target_forwards: n_gen as u64,
            draft_forwards: 0,
            cost_plain: s.cost,
            swap_cost: base - rel[target],
            draft_load_cost: 0.0,
            cost: base,
            matches_target: true,
        };
        if let Some(d) = draft {
            if cache.is_resident(d) {
                cache.use_variant(d);
            } else if cache.prefetch(d) {
                rec.draft_load_cost = inp.router.cost(d, true) - rel[d];
                draft_loads += 1;
            } else {
                return Err(Error::Internal(format!(
                    "the {d} draft fitted the free capacity but was not admitted"
                )));
            }
            let (stats, same) = speculate_one(inp, &task.ids, target, d)?;
            book.record_speculative(target, d, Some(complexity), &stats);
            rec.drafted = stats.drafted;
            rec.accepted = stats.accepted;
            rec.verifies = stats.verifies;
            rec.target_forwards = 1 + stats.verifies;
            rec.draft_forwards = 1 + stats.drafted;
            rec.cost = (rec.target_forwards as f64 * rel[target]
                + rec.draft_forwards as f64 * rel[d])
                / n_gen as f64
                + rec.swap_cost
                + rec.draft_load_cost;
            rec.matches_target = same;
        }
        if rec.matches_target {
            q_spec += quality;
            ok_spec += (quality >= inp.threshold as f64) as usize;
        }
        tasks.push(rec);
    }
    let mut r = summarise(
        strategy,
        inp.draft_len,
        uniform_fp16_cost,
        served.len(),
        [cost_plain, other_cost, q_plain, q_spec],
        [ok_plain, ok_spec],
        &rel,
        tasks,
    );
    r.draft_loads = draft_loads;
    r.swaps = cache.swaps;
    Ok(r)
}

/// The result from the per-task records and the whole-benchmark sums (`sums`: cost in the
/// strategy's replay, the other tasks' cost in the speculative replay, quality plain,
/// quality; `ok`: successes plain, with speculation); the replay's counters are left 0.
#[allow(clippy::too_many_arguments)]
fn summarise(
    strategy: &str,
    draft_len: usize,
    uniform_fp16_cost: f64,
    n: usize,
    sums: [f64; 4],
    ok: [usize; 2],
    rel: &PerPrecision<f64>,
    tasks: Vec<HardTask>,
) -> SpeculationResult {
    let spec: Vec<&HardTask> = tasks.iter().filter(|t| t.draft.is_some()).collect();
    let (drafted, accepted, verifies) = spec.iter().fold((0, 0, 0), |a, t| {
        (a.0 + t.drafted, a.1 + t.accepted, a.2 + t.verifies)
    });
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut pairs = Vec::new();
    for target in Precision::ALL.into_iter().filter(|p| is_target(*p)) {
        for draft in Precision::ALL {
            let on: Vec<&&HardTask> = spec
                .iter()
                .filter(|t| t.target == target && t.draft == Some(draft))
                .collect();
            if on.is_empty() {
                continue;
            }
            let sum = |f: fn(&HardTask) -> u64| on.iter().map(|t| f(t)).sum::<u64>();
            let (d, a, v) = (sum(|t| t.drafted), sum(|t| t.accepted), sum(|t| t.verifies));
            let read = sum(|t| t.target_forwards) as f64 * rel[target]
                + sum(|t| t.draft_forwards) as f64 * rel[draft];
            let plain = on.iter().map(|t| t.tokens as f64).sum::<f64>() * rel[target];
            pairs.push(PairStats {
                target,
                draft,
                tasks: on.len(),
                drafted: d,
                accepted: a,
                verifies: v,
                acceptance: ratio(a as f64, d as f64),
                tokens_per_verify: ratio((a + v) as f64, v as f64),
                bytes_factor: ratio(read, plain),
            });
        }
    }
    let n = n.max(1) as f64;
    let [cost_plain, other_cost, q_plain, q_spec] = sums;
    let hard_cost = tasks.iter().map(|t| t.cost).sum::<f64>();
    let cost = hard_cost + other_cost;
    SpeculationResult {
        strategy: strategy.to_string(),
        draft_len,
        uniform_fp16_cost,
        hard_tasks: tasks.len(),
        speculated: spec.len(),
        mismatches: spec.iter().filter(|t| !t.matches_target).count(),
        draft_loads: 0,
        swaps: 0,
        other_cost: other_cost / uniform_fp16_cost,
        hard_cost_plain: tasks.iter().map(|t| t.cost_plain).sum::<f64>() / uniform_fp16_cost,
        hard_cost: hard_cost / uniform_fp16_cost,
        acceptance: ratio(accepted as f64, drafted as f64),
        tokens_per_verify: ratio((accepted + verifies) as f64, verifies as f64),
        cost_plain: cost_plain / uniform_fp16_cost,
        cost: cost / uniform_fp16_cost,
        cost_reduction_plain: 1.0 - cost_plain / uniform_fp16_cost,
        cost_reduction: 1.0 - cost / uniform_fp16_cost,
        quality_retained_plain: q_plain / n,
        quality_retained: q_spec / n,
        success_rate_plain: ok[0] as f64 / n,
        success_rate: ok[1] as f64 / n,
        pairs,
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Precision::*;

    fn rel() -> PerPrecision<f64> {
        [1.0, 0.5, 0.25, 0.125].into()
    }

    fn stats(drafted: u64, accepted: u64, verifies: u64) -> SpeculationStats {
        SpeculationStats {
            drafted,
            accepted,
            verifies,
            draft_time: Duration::from_millis(1),
            verify_time: Duration::from_millis(1),
            ..Default::default()
        }
    }

    #[test]
    fn candidates_are_cheaper_resident_ones_first_then_those_fitting_the_free_space() {
        let bytes: PerPrecision<u64> = [100, 50, 30, 20].into();
        let mut cache = VariantCache::new(150, bytes).unwrap();
        cache.use_variant(Int4);
        cache.use_variant(Fp16);
        // 130 used, 20 free: INT4 is resident, INT2 fits, INT8 does not.
        assert_eq!(candidates(&cache, &bytes, 150, Fp16), [Int4, Int2]);
        // Only variants with fewer bits than the target.
        assert_eq!(candidates(&cache, &bytes, 150, Int4), [Int2]);
        assert!(candidates(&cache, &bytes, 150, Int2).is_empty());
        let mut full = VariantCache::new(100, bytes).unwrap();
        full.use_variant(Fp16);
        assert!(candidates(&full, &bytes, 100, Fp16).is_empty());
    }

    #[test]
    fn drafts_are_tried_in_order_then_chosen_by_measured_bytes() {
        let mut book = SpeculationBook::new(vec![0.5, 1.0]);
        let r = rel();
        assert_eq!(
            choose_draft(&book, Fp16, 0.9, &[], &r),
            (None, DraftChoice::NoneAvailable)
        );
        // Untried drafts are tried in the order given.
        let cands = [Int8, Int4];
        assert_eq!(
            choose_draft(&book, Fp16, 0.9, &cands, &r),
            (Some(Int8), DraftChoice::Exploring)
        );
        // INT8: 40 drafted, 36 accepted in 10 verifies: (40 * 0.5 + 10) / 46 = 0.65.
        book.record_speculative(Fp16, Int8, Some(0.9), &stats(40, 36, 10));
        assert_eq!(
            choose_draft(&book, Fp16, 0.9, &cands, &r),
            (Some(Int4), DraftChoice::Exploring)
        );
        // INT4: 40 drafted, 30 accepted in 10 verifies: (40 * 0.25 + 10) / 40 = 0.5.
        book.record_speculative(Fp16, Int4, Some(0.9), &stats(40, 30, 10));
        assert_eq!(
            choose_draft(&book, Fp16, 0.9, &cands, &r),
            (Some(Int4), DraftChoice::Measured)
        );
        // Only candidates count: without INT4, INT8.
        assert_eq!(
            choose_draft(&book, Fp16, 0.9, &[Int8], &r),
            (Some(Int8), DraftChoice::Measured)
        );
        // Another bin is explored on its own.
        assert_eq!(
            choose_draft(&book, Fp16, 0.1, &cands, &r).1,
            DraftChoice::Exploring
        );
        // A draft dearer than plain decoding is not used: INT2 for INT8 accepting nothing,
        // 40 drafted in 10 verifies: (40 * 0.125 + 10 * 0.5) / (10 * 0.5) = 2.
        book.record_speculative(Int8, Int2, Some(0.9), &stats(40, 0, 10));
        assert_eq!(
            choose_draft(&book, Int8, 0.9, &[Int2], &r),
            (None, DraftChoice::Dearer)
        );
    }

    fn hard(target: Precision, draft: Option<Precision>, counts: [u64; 3]) -> HardTask {
        let [drafted, accepted, verifies] = counts;
        HardTask {
            task: 0,
            target,
            draft,
            choice: DraftChoice::Exploring,
            tokens: 10,
            drafted,
            accepted,
            verifies,
            target_forwards: if draft.is_some() { 1 + verifies } else { 10 },
            draft_forwards: if draft.is_some() { 1 + drafted } else { 0 },
            cost_plain: 1.0,
            swap_cost: 0.0,
            draft_load_cost: 0.0,
            cost: 0.5,
            matches_target: true,
        }
    }

    #[test]
    fn pairs_sum_the_counts_of_the_tasks_they_served() {
        let tasks = vec![
            hard(Fp16, Some(Int4), [8, 6, 2]),
            hard(Fp16, Some(Int4), [4, 4, 1]),
            hard(Fp16, None, [0, 0, 0]),
            hard(Int8, Some(Int2), [4, 0, 4]),
        ];
        // The one other task cost 2 in the speculative replay.
        let r = summarise("s", 4, 10.0, 5, [5.0, 2.0, 5.0, 5.0], [5, 5], &rel(), tasks);
        assert_eq!((r.hard_tasks, r.speculated, r.mismatches), (4, 3, 0));
        assert_eq!(r.pairs.len(), 2);
        let p = &r.pairs[0];
        assert_eq!((p.target, p.draft, p.tasks), (Fp16, Int4, 2));
        assert_eq!((p.drafted, p.accepted, p.verifies), (12, 10, 3));
        // Target: 3 + 2 forwards at 1.0; draft: 9 + 5 at 0.25; plain: 20 tokens at 1.0.
        assert!((p.bytes_factor - (5.0 + 14.0 * 0.25) / 20.0).abs() < 1e-12);
        assert!((p.tokens_per_verify - 13.0 / 3.0).abs() < 1e-12);
        assert!((r.acceptance - 10.0 / 16.0).abs() < 1e-12);
        assert!((r.hard_cost - 2.0 / 10.0).abs() < 1e-12);
        assert!((r.hard_cost_plain - 4.0 / 10.0).abs() < 1e-12);
        assert!((r.cost - 0.4).abs() < 1e-12 && (r.cost_reduction - 0.6).abs() < 1e-12);
        assert!((r.cost_plain - 0.5).abs() < 1e-12 && (r.other_cost - 0.2).abs() < 1e-12);
    }
}
