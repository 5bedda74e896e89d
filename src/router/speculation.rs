//! Speculation as a serving mode the router chooses: a task routed to a precise variant
//! (FP16 or INT8) may be served through speculation from a cheaper variant that is resident,
//! with the precise variant's own output. Whether that pays depends on how often the draft is
//! accepted on tasks of this kind and on what a draft step and a verify cost on this device,
//! so the choice rests on measurements: a [`SpeculationBook`] keeps, per target, draft and
//! complexity bin (the router's quality bins are its task kinds), what speculative runs
//! achieved, and per target what plain decoding cost per token.
//!
//! [`SpeculationBook::plan`] first measures what it lacks (a plain run of the target, then one
//! speculative run per draft and bin) and then serves through speculation only from a draft
//! whose measured time per token beats the target's plain time per token.

use crate::engine::SpeculationStats;
use crate::quant::{PerPrecision, Precision};
use serde::Serialize;
use std::collections::HashMap;

/// Verify forwards a (target, draft, bin) needs before its measurement decides.
pub const MIN_VERIFIES: u64 = 8;

/// Generated tokens of plain decoding a target needs before its time per token is trusted.
pub const MIN_PLAIN_TOKENS: u64 = 16;

/// Accumulated speculative runs of one (target, draft, bin).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct SpecTally {
    drafted: u64,
    accepted: u64,
    verifies: u64,
    seconds: f64,
}

/// Accumulated plain decoding of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct PlainTally {
    tokens: u64,
    seconds: f64,
}

/// What the book expects of serving `target` through speculation from `draft`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpeculationEstimate {
    /// The drafting variant.
    pub draft: Precision,
    /// Fraction of draft tokens accepted on tasks of this kind.
    pub acceptance: f64,
    /// Tokens each verify decided (accepted drafts plus the target's own token).
    pub tokens_per_verify: f64,
    /// Weight bytes read per output token, relative to plain decoding on the target.
    pub bytes_factor: f64,
    /// Seconds per output token, relative to plain decoding on the target (`None` until the
    /// target's plain decoding has been timed).
    pub time_factor: Option<f64>,
    /// Verify forwards measured.
    pub verifies: u64,
}

/// How the router serves a task through speculation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpeculationPlan {
    /// The drafting variant (resident when planned).
    pub draft: Precision,
    /// The measurement behind the plan (`None` while exploring a pair not measured yet).
    pub estimate: Option<SpeculationEstimate>,
}

/// The router's plan for one task and why.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanDecision {
    /// Speculation to serve with, or `None` to decode plainly.
    pub plan: Option<SpeculationPlan>,
    /// What was weighed.
    pub reason: String,
}

/// Measured speculation per target, draft and complexity bin, and plain decoding per
/// target; see the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpeculationBook {
    /// Upper edges of the complexity bins (the last bin takes everything above).
    edges: Vec<f32>,
    spec: HashMap<(Precision, Precision, usize), SpecTally>,
    plain: HashMap<Precision, PlainTally>,
}

impl SpeculationBook {
    /// A book over complexity bins with upper `edges` (the router's quality bins; none for
    /// one bin).
    pub fn new(edges: Vec<f32>) -> Self {
        SpeculationBook {
            edges,
            ..Default::default()
        }
    }

    /// The bin of a complexity (`None`, no controller: bin 0).
    pub fn bin(&self, complexity: Option<f32>) -> usize {
        let Some(c) = complexity else { return 0 };
        self.edges
            .iter()
            .position(|&e| c <= e)
            .unwrap_or(self.edges.len().saturating_sub(1))
    }

    /// Adds a speculative run of `target` drafted by `draft` on a task of `complexity`.
    pub fn record_speculative(
        &mut self,
        target: Precision,
        draft: Precision,
        complexity: Option<f32>,
        stats: &SpeculationStats,
    ) {
        let bin = self.bin(complexity);
        let t = self.spec.entry((target, draft, bin)).or_default();
        t.drafted += stats.drafted;
        t.accepted += stats.accepted;
        t.verifies += stats.verifies;
        t.seconds += (stats.draft_time + stats.verify_time).as_secs_f64();
    }

    /// Adds a plain decoding run of `target`: `tokens` generated in `seconds`.
    pub fn record_plain(&mut self, target: Precision, tokens: u64, seconds: f64) {
        let t = self.plain.entry(target).or_default();
        t.tokens += tokens;
        t.seconds += seconds.max(0.0);
    }

    /// What serving `target` from `draft` on a task of `complexity` is expected to cost, from
    /// the runs recorded (`None` before any verify). `relative_bytes` are the variants'
    /// sizes (any common unit).
    pub fn estimate(
        &self,
        target: Precision,
        draft: Precision,
        complexity: Option<f32>,
        relative_bytes: &PerPrecision<f64>,
    ) -> Option<SpeculationEstimate> {
        let t = self.spec.get(&(target, draft, self.bin(complexity)))?;
        if t.verifies == 0 {
            return None;
        }
        let produced = (t.accepted + t.verifies) as f64;
        let bytes_t = relative_bytes[target].max(f64::MIN_POSITIVE);
        let bytes = t.drafted as f64 * relative_bytes[draft] + t.verifies as f64 * bytes_t;
        let time_factor = self.plain_seconds_per_token(target).and_then(|plain| {
            (plain > 0.0 && produced > 0.0).then(|| t.seconds / produced / plain)
        });
        Some(SpeculationEstimate {
            draft,
            acceptance: if t.drafted == 0 {
                0.0
            } else {
                t.accepted as f64 / t.drafted as f64
            },
            tokens_per_verify: produced / t.verifies as f64,
            bytes_factor: bytes / (produced * bytes_t),
            time_factor,
            verifies: t.verifies,
        })
    }

    /// Seconds per token of plain decoding on `target`, once enough tokens were timed.
    fn plain_seconds_per_token(&self, target: Precision) -> Option<f64> {
        let p = self.plain.get(&target)?;
        (p.tokens >= MIN_PLAIN_TOKENS).then(|| p.seconds / p.tokens as f64)
    }

    /// Whether to serve a task routed to `target` (complexity `complexity`) through
    /// speculation, given which variants are resident: only variants with fewer bits than
    /// the target draft, only resident ones are considered (a draft is never worth a
    /// swap), and the choice goes by measured time per token (see the module docs).
    pub fn plan(
        &self,
        target: Precision,
        complexity: Option<f32>,
        resident: &PerPrecision<bool>,
        relative_bytes: &PerPrecision<f64>,
    ) -> PlanDecision {
        let drafts: Vec<Precision> = Precision::ALL
            .into_iter()
            .filter(|d| d.bits() < target.bits() && resident[*d])
            .collect();
        let none = |reason: String| PlanDecision { plan: None, reason };
        if drafts.is_empty() {
            return none(format!(
                "no speculation: no variant cheaper than {target} is resident"
            ));
        }
        if self.plain_seconds_per_token(target).is_none() {
            return none(format!(
                "no speculation yet: timing plain {target} decoding first"
            ));
        }
        let bin = self.bin(complexity);
        if let Some(d) = drafts.iter().copied().find(|d| {
            self.spec
                .get(&(target, *d, bin))
                .is_none_or(|t| t.verifies < MIN_VERIFIES)
        }) {
            return PlanDecision {
                plan: Some(SpeculationPlan {
                    draft: d,
                    estimate: None,
                }),
                reason: format!(
                    "speculation from {d} not measured on tasks of this kind (bin {bin}): \
                     trying it"
                ),
            };
        }
        let best = drafts
            .iter()
            .filter_map(|d| self.estimate(target, *d, complexity, relative_bytes))
            .filter_map(|e| e.time_factor.map(|f| (e, f)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((e, f)) if f < 1.0 => PlanDecision {
                plan: Some(SpeculationPlan {
                    draft: e.draft,
                    estimate: Some(e),
                }),
                reason: format!(
                    "serve {target} via speculation from {}: measured {:.0}% acceptance, {:.2} \
                     tokens per verify, {f:.2}x the time and {:.2}x the weight bytes of plain \
                     {target} per token",
                    e.draft,
                    100.0 * e.acceptance,
                    e.tokens_per_verify,
                    e.bytes_factor
                ),
            },
            Some((e, f)) => none(format!(
                "no speculation: the best draft, {}, measured {f:.2}x the time of plain {target} \
                 per token ({:.0}% acceptance)",
                e.draft,
                100.0 * e.acceptance
            )),
            None => none(format!(
                "no speculation: no measurement for {target} on tasks of this kind"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Precision::*;

    fn bytes() -> PerPrecision<f64> {
        [1.0, 0.5, 0.25, 0.125].into()
    }

    fn resident(ps: &[Precision]) -> PerPrecision<bool> {
        let mut r = PerPrecision::splat(false);
        for p in ps {
            r[*p] = true;
        }
        r
    }

    fn stats(drafted: u64, accepted: u64, verifies: u64, seconds: f64) -> SpeculationStats {
        SpeculationStats {
            drafted,
            accepted,
            verifies,
            draft_time: Duration::from_secs_f64(seconds / 2.0),
            verify_time: Duration::from_secs_f64(seconds / 2.0),
            ..Default::default()
        }
    }

    #[test]
    fn bins_follow_the_edges() {
        let b = SpeculationBook::new(vec![0.2, 0.5, 1.0]);
        assert_eq!(b.bin(Some(0.1)), 0);
        assert_eq!(b.bin(Some(0.3)), 1);
        assert_eq!(b.bin(Some(0.9)), 2);
        assert_eq!(b.bin(Some(7.0)), 2);
        assert_eq!(b.bin(None), 0);
        assert_eq!(SpeculationBook::new(vec![]).bin(Some(0.5)), 0);
    }

    #[test]
    fn estimates_come_from_the_recorded_counts_and_times() {
        let mut b = SpeculationBook::new(vec![0.5, 1.0]);
        // 40 drafted, 30 accepted over 10 verifies: 40 tokens in 2 s; plain: 20 tok/s.
        b.record_speculative(Fp16, Int4, Some(0.9), &stats(40, 30, 10, 2.0));
        b.record_plain(Fp16, 100, 5.0);
        let e = b.estimate(Fp16, Int4, Some(0.8), &bytes()).unwrap();
        assert!((e.acceptance - 0.75).abs() < 1e-12);
        assert!((e.tokens_per_verify - 4.0).abs() < 1e-12);
        // Bytes: 40 * 0.25 + 10 * 1.0 = 20 over 40 tokens at 1.0 each.
        assert!((e.bytes_factor - 0.5).abs() < 1e-12);
        // Time: 2 s / 40 tokens = 0.05 s against 0.05 s plain.
        assert!((e.time_factor.unwrap() - 1.0).abs() < 1e-12);
        // Another bin has no measurement.
        assert!(b.estimate(Fp16, Int4, Some(0.1), &bytes()).is_none());
    }

    #[test]
    fn the_plan_times_plain_first_then_explores_then_follows_the_measurement() {
        let mut b = SpeculationBook::new(vec![0.5, 1.0]);
        let res = resident(&[Fp16, Int4]);
        let c = Some(0.9);
        // Nothing cheaper resident.
        let d = b.plan(Fp16, c, &resident(&[Fp16]), &bytes());
        assert!(d.plan.is_none() && d.reason.contains("no variant cheaper"));
        // A draft needs fewer bits than its target.
        assert!(b.plan(Int4, c, &resident(&[Int4]), &bytes()).plan.is_none());
        // Plain FP16 not timed yet.
        let d = b.plan(Fp16, c, &res, &bytes());
        assert!(d.plan.is_none() && d.reason.contains("timing plain"));
        b.record_plain(Fp16, 64, 3.2); // 0.05 s per token
                                       // Then it tries INT4 once on this kind of task.
        let d = b.plan(Fp16, c, &res, &bytes());
        assert_eq!(
            d.plan,
            Some(SpeculationPlan {
                draft: Int4,
                estimate: None
            })
        );
        // Measured slower than plain: decode plainly.
        b.record_speculative(Fp16, Int4, c, &stats(40, 10, 10, 1.5)); // 1.5 s / 20 tokens
        let d = b.plan(Fp16, c, &res, &bytes());
        assert!(d.plan.is_none(), "{}", d.reason);
        assert!(d.reason.contains("1.50x"), "{}", d.reason);
        // Another kind of task (bin 0) is explored on its own.
        assert!(b.plan(Fp16, Some(0.1), &res, &bytes()).plan.is_some());
        // Measured faster: serve through it, with the estimate.
        let mut b2 = SpeculationBook::new(vec![0.5, 1.0]);
        b2.record_plain(Fp16, 64, 3.2);
        b2.record_speculative(Fp16, Int4, c, &stats(40, 36, 10, 1.0)); // 1 s / 46 tokens
        let d = b2.plan(Fp16, c, &res, &bytes());
        let plan = d.plan.expect("faster speculation is planned");
        assert_eq!(plan.draft, Int4);
        let e = plan.estimate.unwrap();
        assert!(e.time_factor.unwrap() < 0.5);
        assert!(
            d.reason.contains("via speculation from int4"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_fastest_measured_draft_wins() {
        let mut b = SpeculationBook::new(vec![]);
        let res = resident(&[Fp16, Int8, Int4]);
        b.record_plain(Fp16, 100, 5.0); // 0.05 s per token
        b.record_speculative(Fp16, Int8, None, &stats(40, 38, 10, 1.2)); // 1.2 / 48 = 0.025
        b.record_speculative(Fp16, Int4, None, &stats(40, 30, 10, 1.6)); // 1.6 / 40 = 0.04
        let d = b.plan(Fp16, None, &res, &bytes());
        assert_eq!(d.plan.unwrap().draft, Int8, "{}", d.reason);
    }
}
