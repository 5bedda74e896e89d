//! The cost/quality frontier of routing, as pure functions of measured labels: the points of
//! the uniform variants, a blind random mix of two of them at a quality target, the per-task
//! oracle at that target, the cost of a strategy's own sweep of points at that target, and
//! APGR: the share of the oracle's advantage over blind mixing that a strategy recovers
//! (RouteLLM's average performance gap recovered, here over quality targets).
//!
//! Costs are relative (bytes of weights read against the base variant's); qualities are task
//! means in 0..=1 (success, or quality retained, or fidelity). Mixing at random between two
//! strategies gives every point on the segment between them, so each strategy's cost at a
//! target is read off the lower convex hull of its points.

use crate::quant::{PerPrecision, Precision};
use serde::Serialize;

/// Mean cost and mean quality of a strategy over a set of tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Mean relative cost.
    pub cost: f64,
    /// Mean quality.
    pub quality: f64,
}

/// Costs of the strategies compared at one quality target (`None` where a strategy cannot
/// reach it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FrontierRow {
    /// The mean quality asked for.
    pub target: f64,
    /// A blind random mix of two uniform variants.
    pub blind: Option<f64>,
    /// The per-task oracle.
    pub oracle: Option<f64>,
    /// The strategy under test (the controller's sweep), when there is one.
    pub strategy: Option<f64>,
}

/// The point of running every task on one variant, for each variant.
pub fn uniform_points(quality: &[PerPrecision<f64>], cost: &PerPrecision<f64>) -> Vec<Point> {
    let n = quality.len().max(1) as f64;
    Precision::ALL
        .into_iter()
        .map(|p| Point {
            cost: cost[p],
            quality: quality.iter().map(|q| q[p]).sum::<f64>() / n,
        })
        .collect()
}

/// [`uniform_points`] with each task's own cost per variant (`costs[i]` for `quality[i]`,
/// e.g. measured time): each variant's mean cost and mean quality.
pub fn uniform_points_per_task(
    quality: &[PerPrecision<f64>],
    costs: &[PerPrecision<f64>],
) -> Vec<Point> {
    let n = quality.len().max(1) as f64;
    Precision::ALL
        .into_iter()
        .map(|p| Point {
            cost: costs.iter().map(|c| c[p]).sum::<f64>() / n,
            quality: quality.iter().map(|q| q[p]).sum::<f64>() / n,
        })
        .collect()
}

/// The cheapest of `points` whose quality reaches `target`: its index and cost (`None` when
/// none reaches it).
pub fn cheapest_reaching(points: &[Point], target: f64) -> Option<(usize, f64)> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.quality >= target - 1e-12)
        .map(|(i, p)| (i, p.cost))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Whether the strategy is strictly cheaper than blind mixing at every row (false when a row
/// lacks either cost, or there are no rows).
pub fn beats_blind_everywhere(rows: &[FrontierRow]) -> bool {
    !rows.is_empty()
        && rows.iter().all(|r| match (r.strategy, r.blind) {
            (Some(s), Some(b)) => s < b - 1e-12,
            _ => false,
        })
}

/// The lowest mean cost at which a random mix of at most two of `points` (the same mix for
/// every task, blind to the task) reaches a mean quality of at least `target`; `None` when no
/// point reaches it.
pub fn mix_cost(points: &[Point], target: f64) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut consider = |c: f64| {
        if best.is_none_or(|b| c < b) {
            best = Some(c);
        }
    };
    for a in points {
        if a.quality >= target {
            consider(a.cost);
        }
        for b in points {
            if a.quality < target && b.quality > target {
                let w = (target - a.quality) / (b.quality - a.quality);
                consider(a.cost + w * (b.cost - a.cost));
            }
        }
    }
    best
}

/// The lowest mean cost at which choosing a variant per task, knowing every task's quality on
/// every variant, reaches a mean quality of at least `target` (one task may be split between
/// two variants at random): the bound any router can reach. `None` when even the best variant
/// of every task misses `target`. Every task costs `cost` per variant (bytes of weights); see
/// [`oracle_cost_per_task`] for costs that differ between tasks (measured time).
pub fn oracle_cost(
    quality: &[PerPrecision<f64>],
    cost: &PerPrecision<f64>,
    target: f64,
) -> Option<f64> {
    let costs = vec![*cost; quality.len()];
    oracle_cost_per_task(quality, &costs, target)
}

/// [`oracle_cost`] with each task's own cost per variant (`costs[i]` for `quality[i]`);
/// `None` also when the two lists differ in length.
///
/// Exact for this relaxation: each task starts on its cheapest variant; the upgrades along
/// each task's lower convex hull of (cost, quality) are then taken across all tasks in order of
/// quality gained per cost until the target is met, the last one in part.
pub fn oracle_cost_per_task(
    quality: &[PerPrecision<f64>],
    costs: &[PerPrecision<f64>],
    target: f64,
) -> Option<f64> {
    if quality.is_empty() || quality.len() != costs.len() {
        return None;
    }
    let n = quality.len() as f64;
    let need = target * n;
    let (mut q_sum, mut c_sum) = (0.0, 0.0);
    let mut upgrades: Vec<(f64, f64, f64)> = Vec::new(); // (slope, dq, dc)
    for (q, cost) in quality.iter().zip(costs) {
        // The task's hull: from its cheapest variant (ties: the better), repeatedly the
        // steepest gain.
        let start = Precision::ALL
            .into_iter()
            .min_by(|a, b| cost[*a].total_cmp(&cost[*b]).then(q[*b].total_cmp(&q[*a])))?;
        let mut at = start;
        q_sum += q[at];
        c_sum += cost[at];
        loop {
            let next = Precision::ALL
                .into_iter()
                .filter(|p| q[*p] > q[at])
                .map(|p| {
                    let dc = (cost[p] - cost[at]).max(0.0);
                    let slope = if dc == 0.0 {
                        f64::INFINITY
                    } else {
                        (q[p] - q[at]) / dc
                    };
                    (p, slope)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((p, slope)) = next else { break };
            upgrades.push((slope, q[p] - q[at], (cost[p] - cost[at]).max(0.0)));
            at = p;
        }
    }
    // Along one task's hull slopes fall, so taking all upgrades by falling slope keeps each
    // task's upgrades in order.
    upgrades.sort_by(|a, b| b.0.total_cmp(&a.0));
    const EPS: f64 = 1e-12;
    for (_, dq, dc) in upgrades {
        if q_sum >= need - EPS {
            break;
        }
        let part = ((need - q_sum) / dq).min(1.0);
        q_sum += part * dq;
        c_sum += part * dc;
    }
    (q_sum >= need - 1e-9).then_some(c_sum / n)
}

/// APGR over `targets`: the summed cost saving of a strategy against blind mixing, divided by
/// the oracle's summed saving, at the targets where all three are defined. 1 means the
/// strategy is as cheap as the oracle, 0 no better than blind mixing, below 0 worse. `None`
/// when the oracle saves nothing there.
pub fn apgr(
    uniform: &[Point],
    strategy: &[Point],
    oracle: &[(f64, f64)],
    targets: &[f64],
) -> Option<f64> {
    let (mut gained, mut possible) = (0.0, 0.0);
    for &t in targets {
        let (Some(blind), Some(own), Some(&(_, best))) = (
            mix_cost(uniform, t),
            mix_cost(strategy, t),
            oracle.iter().find(|(ot, _)| (ot - t).abs() < 1e-12),
        ) else {
            continue;
        };
        gained += blind - own;
        possible += blind - best;
    }
    (possible > 1e-12).then(|| gained / possible)
}

/// `n` evenly spaced quality targets from `lo` to `hi` inclusive (just `lo` when `n < 2`).
pub fn targets_between(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![lo];
    }
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Quality retained per variant on the tasks with a checkable answer: the variant's successes
/// over the base's (FP16's) on the same tasks. `None` for every variant when the base solves
/// none.
pub fn quality_retained(success: &[PerPrecision<bool>]) -> PerPrecision<Option<f64>> {
    let count = |p: Precision| success.iter().filter(|s| s[p]).count() as f64;
    let base = count(Precision::Fp16);
    PerPrecision::from_fn(|p| (base > 0.0).then(|| count(p) / base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::*;

    fn pp(v: [f64; 4]) -> PerPrecision<f64> {
        PerPrecision::from(v)
    }

    /// Costs of FP16, INT8, INT4, INT2.
    fn costs() -> PerPrecision<f64> {
        pp([1.0, 0.5, 0.25, 0.125])
    }

    #[test]
    fn uniform_points_average_each_variant() {
        let q = vec![pp([1.0, 1.0, 1.0, 0.0]), pp([1.0, 1.0, 0.0, 0.0])];
        let pts = uniform_points(&q, &costs());
        assert_eq!(
            pts[0],
            Point {
                cost: 1.0,
                quality: 1.0
            }
        );
        assert_eq!(
            pts[2],
            Point {
                cost: 0.25,
                quality: 0.5
            }
        );
        assert_eq!(pts[3].quality, 0.0);
        assert_eq!(pts.len(), 4);
    }

    #[test]
    fn blind_mix_interpolates_between_the_best_pair() {
        let pts = [
            Point {
                cost: 1.0,
                quality: 1.0,
            },
            Point {
                cost: 0.5,
                quality: 0.9,
            },
            Point {
                cost: 0.25,
                quality: 0.5,
            },
        ];
        assert_eq!(mix_cost(&pts, 0.9), Some(0.5));
        // Halfway from INT4 to INT8 in quality: halfway in cost.
        assert!((mix_cost(&pts, 0.7).unwrap() - 0.375).abs() < 1e-12);
        assert_eq!(mix_cost(&pts, 0.4), Some(0.25));
        assert!((mix_cost(&pts, 0.95).unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(mix_cost(&pts, 1.01), None);
    }

    #[test]
    fn oracle_spends_where_quality_is_cheapest() {
        // Task 0 is easy (INT2 suffices), task 1 needs INT8, task 2 needs FP16.
        let q = vec![
            pp([1.0, 1.0, 1.0, 1.0]),
            pp([1.0, 1.0, 0.0, 0.0]),
            pp([1.0, 0.0, 0.0, 0.0]),
        ];
        let c = costs();
        let all = oracle_cost(&q, &c, 1.0).unwrap();
        assert!((all - (0.125 + 0.5 + 1.0) / 3.0).abs() < 1e-12, "{all}");
        // Two of three: skip the expensive task.
        let two = oracle_cost(&q, &c, 2.0 / 3.0).unwrap();
        assert!((two - (0.125 + 0.5 + 0.125) / 3.0).abs() < 1e-12, "{two}");
        // Half of a task more than one: the INT8 upgrade of task 1 taken half way.
        let half = oracle_cost(&q, &c, 0.5).unwrap();
        assert!((half - (0.125 + 0.125 + 0.125 + 0.5 * 0.375) / 3.0).abs() < 1e-12);
        assert!(oracle_cost(&q, &c, 1.01).is_none());
        assert!(oracle_cost(&[], &c, 0.5).is_none());
        // Never above blind mixing of the uniform variants.
        let pts = uniform_points(&q, &c);
        for t in targets_between(0.4, 1.0, 13) {
            assert!(oracle_cost(&q, &c, t).unwrap() <= mix_cost(&pts, t).unwrap() + 1e-12);
        }
    }

    #[test]
    fn oracle_skips_variants_off_the_hull() {
        // INT4 is dominated by the mix of INT2 and INT8: the oracle jumps over it.
        let q = vec![pp([1.0, 1.0, 0.3, 0.2])];
        let c = costs();
        let cost = oracle_cost(&q, &c, 0.6).unwrap();
        let hull = 0.125 + (0.6 - 0.2) / 0.8 * (0.5 - 0.125);
        assert!((cost - hull).abs() < 1e-12, "{cost} vs {hull}");
        assert!(cost < 0.25 + (0.6 - 0.3) / 0.7 * 0.25);
    }

    #[test]
    fn oracle_with_per_task_costs_spends_where_each_task_is_cheap() {
        // Both tasks need INT8 or better; INT8 is cheap on task 1 only, FP16 cheap on task 0.
        let q = vec![pp([1.0, 1.0, 0.0, 0.0]), pp([1.0, 1.0, 0.0, 0.0])];
        let task_costs = vec![pp([0.4, 0.6, 0.3, 0.2]), pp([1.0, 0.5, 0.3, 0.2])];
        let c = oracle_cost_per_task(&q, &task_costs, 1.0).unwrap();
        assert!((c - (0.4 + 0.5) / 2.0).abs() < 1e-12, "{c}");
        // Shared costs give the same answer through either entry point.
        let shared = vec![costs(); 2];
        assert_eq!(
            oracle_cost_per_task(&q, &shared, 0.5),
            oracle_cost(&q, &costs(), 0.5)
        );
        assert_eq!(oracle_cost_per_task(&q, &task_costs[..1], 0.5), None);
        let pts = uniform_points_per_task(&q, &task_costs);
        assert_eq!(
            pts[0],
            Point {
                cost: 0.7,
                quality: 1.0
            }
        );
        assert!((pts[1].cost - 0.55).abs() < 1e-12);
        assert_eq!(pts[3].quality, 0.0);
    }

    #[test]
    fn cheapest_reaching_and_beating_blind_mixing() {
        let pts = [
            Point {
                cost: 1.0,
                quality: 1.0,
            },
            Point {
                cost: 0.5,
                quality: 0.9,
            },
            Point {
                cost: 0.25,
                quality: 0.5,
            },
        ];
        assert_eq!(cheapest_reaching(&pts, 0.9), Some((1, 0.5)));
        assert_eq!(cheapest_reaching(&pts, 0.95), Some((0, 1.0)));
        assert_eq!(cheapest_reaching(&pts, 0.1), Some((2, 0.25)));
        assert_eq!(cheapest_reaching(&pts, 1.5), None);
        let row = |blind, strategy| FrontierRow {
            target: 0.7,
            blind,
            oracle: Some(0.3),
            strategy,
        };
        assert!(beats_blind_everywhere(&[
            row(Some(0.4), Some(0.35)),
            row(Some(0.5), Some(0.3))
        ]));
        assert!(!beats_blind_everywhere(&[
            row(Some(0.4), Some(0.35)),
            row(Some(0.5), Some(0.5))
        ]));
        assert!(!beats_blind_everywhere(&[row(Some(0.4), None)]));
        assert!(!beats_blind_everywhere(&[]));
    }

    #[test]
    fn apgr_measures_the_share_of_the_oracle_saving() {
        let uniform = [
            Point {
                cost: 0.5,
                quality: 1.0,
            },
            Point {
                cost: 0.25,
                quality: 0.5,
            },
        ];
        let targets = targets_between(0.5, 1.0, 6);
        // Oracle at cost 0.25 everywhere below 1.0.
        let oracle: Vec<(f64, f64)> = targets.iter().map(|&t| (t, 0.25)).collect();
        assert_eq!(apgr(&uniform, &uniform, &oracle, &targets), Some(0.0));
        let as_oracle: Vec<Point> = targets
            .iter()
            .map(|&t| Point {
                cost: 0.25,
                quality: t,
            })
            .collect();
        let full = apgr(&uniform, &as_oracle, &oracle, &targets).unwrap();
        assert!((full - 1.0).abs() < 1e-12, "{full}");
        // A strategy half way between blind mixing and the oracle recovers half.
        let half: Vec<Point> = targets
            .iter()
            .map(|&t| Point {
                cost: 0.5 * (mix_cost(&uniform, t).unwrap() + 0.25),
                quality: t,
            })
            .collect();
        let h = apgr(&uniform, &half, &oracle, &targets).unwrap();
        assert!((h - 0.5).abs() < 1e-9, "{h}");
        assert_eq!(apgr(&uniform, &uniform, &[], &targets), None);
    }

    #[test]
    fn quality_retained_is_relative_to_the_base_on_the_same_tasks() {
        let s = |v: [bool; 4]| PerPrecision::from(v);
        let rows = vec![
            s([true, true, true, false]),
            s([true, true, false, false]),
            s([false, true, true, false]),
            s([true, false, false, false]),
        ];
        let r = quality_retained(&rows);
        assert_eq!(r[Fp16], Some(1.0));
        assert_eq!(r[Int8], Some(1.0));
        assert_eq!(r[Int4], Some(2.0 / 3.0));
        assert_eq!(r[Int2], Some(0.0));
        let none = quality_retained(&[s([false, true, true, true])]);
        assert_eq!(none[Int8], None);
    }
}
