//! The routing decision: from a predicted complexity to a variant, with the quality each
//! variant is expected to keep at that complexity (calibrated on labelled tasks), the cost of
//! each variant, and what is resident.

use super::VariantCache;
use crate::controller::ControllerOutput;
use crate::quant::{PerPrecision, Precision};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Expected quality of each precision as a function of predicted complexity: quantile bins of
/// complexity, each with the mean measured quality per precision, made non-increasing in
/// complexity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityModel {
    /// Upper edges of the complexity bins (the last is +inf in effect).
    pub edges: Vec<f32>,
    /// Expected quality per bin and precision.
    pub quality: Vec<PerPrecision<f32>>,
}

impl QualityModel {
    /// Fits the model to `(predicted complexity, measured quality per precision)` pairs in
    /// `bins` quantile bins.
    pub fn fit(points: &[(f32, PerPrecision<f32>)], bins: usize) -> Result<Self> {
        if points.is_empty() || bins == 0 {
            return Err(Error::invalid(
                "calibration needs labelled tasks and at least one bin",
            ));
        }
        let mut pts = points.to_vec();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bins = bins.min(pts.len());
        let mut edges = Vec::with_capacity(bins);
        let mut quality: Vec<PerPrecision<f32>> = Vec::with_capacity(bins);
        for b in 0..bins {
            let (lo, hi) = (b * pts.len() / bins, (b + 1) * pts.len() / bins);
            let chunk = &pts[lo..hi];
            let mut q = PerPrecision::splat(0.0f32);
            for (_, qs) in chunk {
                for (p, v) in q.iter_mut() {
                    *v += qs[p] / chunk.len() as f32;
                }
            }
            if let Some(prev) = quality.last() {
                for (p, v) in q.iter_mut() {
                    *v = v.min(prev[p]);
                }
            }
            edges.push(chunk.last().map(|c| c.0).unwrap_or(1.0));
            quality.push(q);
        }
        Ok(QualityModel { edges, quality })
    }

    /// Expected quality of each precision at complexity `c`.
    pub fn expected(&self, c: f32) -> PerPrecision<f32> {
        let i = self
            .edges
            .iter()
            .position(|&e| c <= e)
            .unwrap_or(self.edges.len() - 1);
        self.quality[i]
    }
}

/// Router settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// Quality (fidelity to FP16) a route must be expected to keep.
    pub target: f32,
    /// A swap costs this many times the variant's bytes (in units of bytes read by compute).
    pub swap_factor: f64,
    /// Tasks over which a swap's cost is amortised when comparing it with a resident variant.
    pub horizon: f64,
    /// Bytes one task reads per unit of relative variant size (forward calls x FP16 bytes).
    pub task_bytes: f64,
    /// A precision other than the choice is worth prefetching only when the policy head gives
    /// it at least this probability (a near-certain choice prefetches nothing; router files
    /// without the field get [`DEFAULT_PREFETCH_MIN_PROB`]).
    #[serde(default = "default_prefetch_min_prob")]
    pub prefetch_min_prob: f32,
}

/// Default of [`RouterConfig::prefetch_min_prob`].
pub const DEFAULT_PREFETCH_MIN_PROB: f32 = 0.25;

fn default_prefetch_min_prob() -> f32 {
    DEFAULT_PREFETCH_MIN_PROB
}

/// One routing decision and its reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Variant chosen.
    pub precision: Precision,
    /// Predicted complexity.
    pub complexity: f32,
    /// Expected cost of the task on the chosen variant, relative to FP16 (swap included).
    pub expected_cost: f64,
    /// Whether the chosen variant must be loaded.
    pub swap: bool,
    /// The other adequate variants with their expected cost (swap included when not
    /// resident), cheapest first.
    pub alternatives: Vec<(Precision, f64)>,
    /// The variant the router expects to want next, worth prefetching: the cheapest adequate
    /// variant when a resident one was preferred to it, otherwise the policy head's most
    /// probable precision other than the choice if its probability reaches
    /// [`RouterConfig::prefetch_min_prob`] (else none).
    pub next: Option<Precision>,
    /// Why.
    pub reasons: Vec<String>,
}

/// Turns controller predictions into variant choices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Router {
    /// Settings.
    pub config: RouterConfig,
    /// Calibrated expected quality.
    pub quality: QualityModel,
    /// Relative size of each variant (FP16 = 1).
    pub relative_bytes: PerPrecision<f64>,
}

impl Router {
    /// Relative cost of a task on `p`, plus the swap when `swap`.
    pub fn cost(&self, p: Precision, swap: bool) -> f64 {
        let rel = self.relative_bytes[p];
        let swap_cost = if swap {
            self.config.swap_factor * rel / self.config.task_bytes.max(1.0)
        } else {
            0.0
        };
        rel + swap_cost
    }

    /// Chooses a variant for a task with controller output `out` given what is resident.
    pub fn decide(&self, out: &ControllerOutput, residency: &VariantCache) -> Decision {
        self.decide_for(out, residency, self.config.target)
    }

    /// [`Router::decide`] against quality target `t` instead of the configured one (a request
    /// that asks for more, or accepts less, quality than the deployment's default).
    pub fn decide_for(&self, out: &ControllerOutput, residency: &VariantCache, t: f32) -> Decision {
        let c = out.complexity;
        let q = self.quality.expected(c);
        let mut reasons = vec![format!(
            "complexity {c:.3}; policy head prefers {} (p = {:.2}), pruning {:.2}, sparsity {:.2}",
            out.precision(),
            out.precision_probs[out.precision()],
            out.pruning,
            out.sparsity
        )];
        let ok: Vec<Precision> = Precision::ALL
            .into_iter()
            .filter(|p| *p == Precision::Fp16 || q[*p] >= t)
            .collect();
        reasons.push(format!(
            "expected quality fp16 {:.3}, int8 {:.3}, int4 {:.3}, int2 {:.3} vs target {t:.3}: adequate {}",
            q[Precision::Fp16],
            q[Precision::Int8],
            q[Precision::Int4],
            q[Precision::Int2],
            ok.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        ));
        let cheapest = ok
            .iter()
            .copied()
            .min_by(|a, b| self.relative_bytes[*a].total_cmp(&self.relative_bytes[*b]))
            .unwrap_or(Precision::Fp16);
        let mut choice = cheapest;
        if !residency.is_resident(cheapest) {
            let resident_ok = ok
                .iter()
                .copied()
                .filter(|p| residency.is_resident(*p))
                .min_by(|a, b| self.relative_bytes[*a].total_cmp(&self.relative_bytes[*b]));
            if let Some(r) = resident_ok {
                let saving =
                    self.config.horizon * (self.cost(r, false) - self.cost(cheapest, false));
                let swap = self.cost(cheapest, true) - self.cost(cheapest, false);
                if swap > saving {
                    reasons.push(format!(
                        "{r} is resident and adequate: swapping to {cheapest} costs {swap:.3} > saving {saving:.3} over {} tasks",
                        self.config.horizon
                    ));
                    choice = r;
                } else {
                    reasons.push(format!(
                        "swap to {cheapest}: saving {saving:.3} over {} tasks exceeds the swap cost {swap:.3} (resident {r})",
                        self.config.horizon
                    ));
                }
            } else {
                reasons.push(format!(
                    "{cheapest} is the cheapest adequate variant; none adequate is resident"
                ));
            }
        } else {
            reasons.push(format!(
                "{cheapest} is the cheapest adequate variant and is resident"
            ));
        }
        let swap = !residency.is_resident(choice);
        let mut alternatives: Vec<(Precision, f64)> = ok
            .iter()
            .filter(|p| **p != choice)
            .map(|p| (*p, self.cost(*p, !residency.is_resident(*p))))
            .collect();
        alternatives.sort_by(|a, b| a.1.total_cmp(&b.1));
        let others: Vec<String> = alternatives
            .iter()
            .map(|(p, c)| format!("{p} ({c:.3})"))
            .collect();
        let next = if choice != cheapest {
            Some(cheapest)
        } else {
            Precision::ALL
                .into_iter()
                .filter(|p| *p != choice)
                .max_by(|a, b| out.precision_probs[*a].total_cmp(&out.precision_probs[*b]))
                .filter(|p| out.precision_probs[*p] >= self.config.prefetch_min_prob)
        };
        let expected_cost = self.cost(choice, swap);
        reasons.push(format!(
            "chose {choice}: expected cost {expected_cost:.3} of fp16, {}; alternatives {}",
            if swap { "swap" } else { "hit" },
            if others.is_empty() {
                "none".into()
            } else {
                others.join(", ")
            }
        ));
        Decision {
            precision: choice,
            complexity: c,
            expected_cost,
            swap,
            alternatives,
            next,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::*;

    fn out(c: f32) -> ControllerOutput {
        ControllerOutput {
            complexity: c,
            precision_logits: PerPrecision::splat(0.0),
            precision_probs: PerPrecision::splat(0.25),
            pruning: 0.1,
            sparsity: 0.2,
        }
    }

    fn router(horizon: f64) -> Router {
        let pts: Vec<(f32, PerPrecision<f32>)> = (0..100)
            .map(|i| {
                let c = i as f32 / 100.0;
                (c, [1.0, 1.0 - 0.02 * c, 1.0 - 0.3 * c, 0.3].into())
            })
            .collect();
        Router {
            config: RouterConfig {
                target: 0.9,
                swap_factor: 50.0,
                horizon,
                task_bytes: 17.0,
                prefetch_min_prob: DEFAULT_PREFETCH_MIN_PROB,
            },
            quality: QualityModel::fit(&pts, 10).unwrap(),
            relative_bytes: [1.0, 0.56, 0.31, 0.19].into(),
        }
    }

    #[test]
    fn quality_model_is_monotone_and_interpolates_bins() {
        let pts = vec![
            (0.1, [1.0, 0.9, 0.8, 0.1].into()),
            (0.5, [1.0, 0.95, 0.5, 0.0].into()),
            (0.9, [1.0, 0.7, 0.3, 0.0].into()),
        ];
        let m = QualityModel::fit(&pts, 3).unwrap();
        assert_eq!(m.expected(0.0), [1.0, 0.9, 0.8, 0.1]);
        assert_eq!(m.expected(0.5), [1.0, 0.9, 0.5, 0.0]);
        assert_eq!(m.expected(2.0), [1.0, 0.7, 0.3, 0.0]);
        assert!(QualityModel::fit(&[], 3).is_err());
    }

    #[test]
    fn easy_tasks_go_cheap_hard_tasks_go_precise_and_reasons_are_recorded() {
        let r = router(0.0);
        let res = VariantCache::new(100, [100, 56, 31, 19]).unwrap();
        let easy = r.decide(&out(0.05), &res);
        assert_eq!(easy.precision, Int4);
        assert!(easy.swap);
        assert!(easy.alternatives.iter().any(|(p, _)| *p == Int8));
        assert!(easy.alternatives.windows(2).all(|w| w[0].1 <= w[1].1));
        let mut probs = out(0.05);
        probs.precision_probs = [0.1, 0.6, 0.2, 0.1].into();
        assert_eq!(r.decide(&probs, &res).next, Some(Int8));
        // A near-certain choice leaves nothing worth prefetching.
        probs.precision_probs = [0.02, 0.1, 0.85, 0.03].into();
        assert_eq!(r.decide(&probs, &res).next, None);
        let hard = r.decide(&out(0.9), &res);
        assert_eq!(hard.precision, Int8);
        assert!(hard.reasons.iter().any(|s| s.contains("complexity 0.900")));
        assert!(hard.reasons.iter().any(|s| s.contains("chose int8")));
    }

    #[test]
    fn a_resident_adequate_variant_beats_a_swap_that_costs_more_than_it_saves() {
        let mut res = VariantCache::new(100, [100, 56, 31, 19]).unwrap();
        res.use_variant(Int8);
        // Short horizon: the swap to INT4 is not worth it.
        let d = router(1.0).decide(&out(0.05), &res);
        assert_eq!(d.precision, Int8);
        assert!(!d.swap);
        assert!(d
            .reasons
            .iter()
            .any(|s| s.contains("resident and adequate")));
        // The cheaper variant it declined is the one worth prefetching.
        assert_eq!(d.next, Some(Int4));
        assert_eq!(d.alternatives[0].0, Int4);
        // Long horizon: the saving pays for the swap.
        let d = router(1000.0).decide(&out(0.05), &res);
        assert_eq!(d.precision, Int4);
        assert!(d.swap);
    }
}
