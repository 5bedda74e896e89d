//! How many tokens the draft model proposes per verify step, and the counters of a
//! speculative run.
//!
//! With a per-token acceptance rate `a`, a round of `k` drafts yields on average
//! `(1 - a^(k+1)) / (1 - a)` tokens and costs `k` draft steps plus one verify of `k + 1` rows.
//! The adaptive choice keeps running estimates of `a` and of both costs (measured on this
//! run) and picks the `k` with the most tokens per second; a `k` whose verify has not been
//! timed yet is assumed to cost what the nearest smaller timed one did, so larger drafts get
//! tried once and then judged on their measured cost.

use serde::Serialize;
use std::time::Duration;

/// How the draft length is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftLen {
    /// Always this many draft tokens per verify (at least 1).
    Fixed(usize),
    /// Chosen per round from the running acceptance rate and the measured costs, between 1
    /// and this many tokens.
    Adaptive(usize),
}

impl Default for DraftLen {
    fn default() -> Self {
        DraftLen::Adaptive(8)
    }
}

impl DraftLen {
    /// The largest draft this choice can make.
    pub fn max(&self) -> usize {
        match *self {
            DraftLen::Fixed(k) | DraftLen::Adaptive(k) => k.max(1),
        }
    }
}

/// What one speculative run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpeculationStats {
    /// Draft tokens proposed.
    pub drafted: u64,
    /// Draft tokens the target accepted.
    pub accepted: u64,
    /// Multi-row verify forwards of the target.
    pub verifies: u64,
    /// Verifies whose draft the target first rejected at position `i` (0-based), by `i`.
    pub rejections_at: Vec<u64>,
    /// Time spent in draft steps.
    #[serde(serialize_with = "secs")]
    pub draft_time: Duration,
    /// Time spent in verify forwards.
    #[serde(serialize_with = "secs")]
    pub verify_time: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl SpeculationStats {
    /// Fraction of draft tokens accepted (0 before any draft).
    pub fn acceptance_rate(&self) -> f64 {
        ratio(self.accepted, self.drafted)
    }

    /// Draft tokens accepted per verify.
    pub fn mean_accepted_len(&self) -> f64 {
        ratio(self.accepted, self.verifies)
    }

    /// Tokens each verify decided: the accepted drafts plus the target's own next token.
    pub fn tokens_per_verify(&self) -> f64 {
        ratio(self.accepted + self.verifies, self.verifies)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Weight of the newest observation in the running estimates.
const SMOOTHING: f64 = 0.25;

/// The running estimates behind [`DraftLen::Adaptive`].
#[derive(Debug)]
pub(crate) struct DraftLenChooser {
    choice: DraftLen,
    /// Per-token acceptance rate.
    acceptance: f64,
    /// Seconds per draft step (`None` until measured).
    draft_step: Option<f64>,
    /// Seconds per verify of `k + 1` rows, indexed by `k` (`None` until measured).
    verify: Vec<Option<f64>>,
}

impl DraftLenChooser {
    /// A chooser starting from an acceptance rate of 0.7.
    pub(crate) fn new(choice: DraftLen) -> Self {
        DraftLenChooser {
            choice,
            acceptance: 0.7,
            draft_step: None,
            verify: vec![None; choice.max() + 1],
        }
    }

    /// The draft length of the next round.
    pub(crate) fn next(&self) -> usize {
        let max = self.choice.max();
        if let DraftLen::Fixed(k) = self.choice {
            return k.max(1);
        }
        let a = self.acceptance.clamp(0.0, 0.999);
        let step = self.draft_step.unwrap_or(0.0);
        let mut best = (1, f64::NEG_INFINITY);
        let mut known = None;
        for k in 1..=max {
            let verify = self.verify[k].or(known);
            known = verify.or(known);
            let Some(verify) = verify else {
                // Nothing timed yet: start at a middle length.
                return max.min(4);
            };
            let tokens = (1.0 - a.powi(k as i32 + 1)) / (1.0 - a);
            let rate = tokens / (verify + step * k as f64).max(1e-12);
            if rate > best.1 {
                best = (k, rate);
            }
        }
        best.0
    }

    /// Records a round: `k` drafts of which `accepted` were kept, the draft steps' time and
    /// the verify's time.
    pub(crate) fn record(&mut self, k: usize, accepted: usize, draft: Duration, verify: Duration) {
        if k == 0 {
            return;
        }
        // Acceptance per token: a rejection at position accepted+1 observed accepted+1
        // tokens; a full acceptance observed k.
        let seen = (accepted + 1).min(k) as f64;
        let rate = accepted as f64 / seen;
        self.acceptance += SMOOTHING * (rate - self.acceptance);
        let step = draft.as_secs_f64() / k as f64;
        self.draft_step = Some(ema(self.draft_step, step));
        if let Some(v) = self.verify.get_mut(k) {
            *v = Some(ema(*v, verify.as_secs_f64()));
        }
    }
}

fn ema(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + SMOOTHING * (new - o),
        None => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn fixed_length_is_kept() {
        let mut c = DraftLenChooser::new(DraftLen::Fixed(3));
        c.record(3, 0, ms(3), ms(10));
        assert_eq!(c.next(), 3);
    }

    #[test]
    fn high_acceptance_and_cheap_verify_draw_long_drafts() {
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for k in 1..=8 {
            c.record(k, k, ms(k as u64), ms(10 + k as u64));
        }
        assert!(c.next() >= 6, "{}", c.next());
    }

    #[test]
    fn rejections_and_costly_drafts_shorten_them() {
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for _ in 0..20 {
            for k in 1..=8 {
                c.record(k, 0, ms(8 * k as u64), ms(10 * (k as u64 + 1)));
            }
        }
        assert_eq!(c.next(), 1);
    }

    #[test]
    fn stats_ratios() {
        let s = SpeculationStats {
            drafted: 10,
            accepted: 6,
            verifies: 3,
            ..Default::default()
        };
        assert!((s.acceptance_rate() - 0.6).abs() < 1e-12);
        assert!((s.mean_accepted_len() - 2.0).abs() < 1e-12);
        assert!((s.tokens_per_verify() - 3.0).abs() < 1e-12);
        assert_eq!(SpeculationStats::default().acceptance_rate(), 0.0);
    }
}
