//! How many tokens the draft model proposes per verify step, and the counters of a
//! speculative run.
//!
//! A round of `k` drafts yields the target's own token plus every draft kept before the first
//! rejection, and costs `k` draft steps plus one verify of `k + 1` rows. The adaptive choice
//! keeps running estimates, measured on this run, of the chance that draft `i` is kept given
//! that the ones before it were (per position: acceptance is higher deep into a round) and of
//! both costs, and picks the `k` with the most tokens per second; a `k` whose verify has not
//! been timed yet is assumed to cost what the nearest smaller timed one did, so larger drafts
//! get tried once and then judged on their measured cost.

use serde::Serialize;
use std::sync::{Arc, Mutex};
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

/// Weight of the newest observation in the running cost estimates.
const SMOOTHING: f64 = 0.25;

/// Per-round decay of the acceptance counts: about the last 10 rounds decide a position's
/// estimate, so a task whose text turns harder is followed and a position the drafts no longer
/// reach is soon tried again.
const COUNT_DECAY: f64 = 0.9;

/// Pseudo-rounds of the prior behind each position's acceptance: the estimate of the position
/// before it ([`PRIOR_ACCEPTANCE`] for the first), so a position seldom reached leans on its neighbour.
const PRIOR_ROUNDS: f64 = 2.0;

/// The acceptance assumed before any round: drafts from a variant of the target's own model
/// are mostly kept (90-98% measured on SmolLM2), and starting low keeps drafts short until
/// enough rounds have shown otherwise.
const PRIOR_ACCEPTANCE: f64 = 0.9;

/// The running estimates behind [`DraftLen::Adaptive`].
#[derive(Clone, Debug)]
pub(crate) struct DraftLenChooser {
    choice: DraftLen,
    /// Per draft position `i`: decayed count of rounds whose verify reached position `i`
    /// (every earlier draft kept).
    reached: Vec<f64>,
    /// Per draft position `i`: decayed count of those rounds that also kept draft `i`.
    kept: Vec<f64>,
    /// Seconds per draft step (`None` until measured).
    draft_step: Option<f64>,
    /// Seconds per verify of `k + 1` rows, indexed by `k` (`None` until measured).
    verify: Vec<Option<f64>>,
}

impl DraftLenChooser {
    /// A chooser starting from an acceptance of 0.9 at every position.
    pub(crate) fn new(choice: DraftLen) -> Self {
        let max = choice.max();
        DraftLenChooser {
            choice,
            reached: vec![0.0; max],
            kept: vec![0.0; max],
            draft_step: None,
            verify: vec![None; max + 1],
        }
    }

    /// The chance that draft `i` is kept given that every draft before it was, per position.
    /// Acceptance is not the same at every position: drafts that got past the first tokens of
    /// a round tend to be on easy text (a name, a set phrase) and are kept more often, so one
    /// rate for all positions undervalues long drafts.
    fn acceptance_by_position(&self) -> Vec<f64> {
        let mut prior = PRIOR_ACCEPTANCE;
        self.reached
            .iter()
            .zip(&self.kept)
            .map(|(&n, &k)| {
                let a = ((k + PRIOR_ROUNDS * prior) / (n + PRIOR_ROUNDS)).clamp(0.0, 0.999);
                prior = a;
                a
            })
            .collect()
    }

    /// The expected tokens a round of `k` drafts yields, `k` = 0 ..= max: the target's own
    /// token plus each draft times the chance that it and all before it are kept.
    pub(crate) fn expected_tokens(&self) -> Vec<f64> {
        let mut out = vec![1.0];
        let mut all_kept = 1.0;
        for a in self.acceptance_by_position() {
            all_kept *= a;
            let last = out[out.len() - 1];
            out.push(last + all_kept);
        }
        out
    }

    /// The draft length of the next round.
    pub(crate) fn next(&self) -> usize {
        let max = self.choice.max();
        if let DraftLen::Fixed(k) = self.choice {
            return k.max(1);
        }
        let Some(shortest_timed) = self.verify.iter().flatten().next().copied() else {
            // Nothing timed yet: start at a middle length.
            return max.min(4);
        };
        let step = self.draft_step.unwrap_or(0.0);
        let tokens = self.expected_tokens();
        let mut best = (1, f64::NEG_INFINITY);
        let mut known = shortest_timed;
        for (k, (&expected, timed)) in tokens.iter().zip(&self.verify).enumerate().skip(1) {
            // A length not timed yet is assumed to cost what the nearest shorter timed one
            // did (or the shortest timed one, below it), so it gets tried once and is then
            // judged on its own cost.
            let verify = timed.unwrap_or(known);
            known = verify;
            let rate = expected / (verify + step * k as f64).max(1e-12);
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
        // The verify reached positions 0..=accepted (all of them on a full acceptance) and
        // kept the first `accepted`.
        // Every position's counts decay each round, reached or not: a position that shorter
        // drafts stopped reaching drifts back to its neighbour's estimate and gets tried again,
        // rather than one early rejection there keeping the drafts short for the whole run.
        let reached = (accepted + 1).min(k);
        for (i, (n, kept)) in self.reached.iter_mut().zip(&mut self.kept).enumerate() {
            *n *= COUNT_DECAY;
            *kept *= COUNT_DECAY;
            if i < reached {
                *n += 1.0;
                *kept += f64::from(u8::from(i < accepted));
            }
        }
        let step = draft.as_secs_f64() / k as f64;
        self.draft_step = Some(ema(self.draft_step, step));
        if let Some(v) = self.verify.get_mut(k) {
            *v = Some(ema(*v, verify.as_secs_f64()));
        }
    }
}

/// What the adaptive draft length learnt in earlier runs of one (target, draft) pair, for the
/// next run to start from: the costs of a draft step and of each verify length (a property of
/// the machine and the pair) and the acceptance per position at half weight (a new task's
/// text may be harder or easier, so its own rounds soon outweigh it). Without it every run
/// starts from the prior and spends its first rounds learning, which on short replies is a good
/// part of the run. Clones share one memory; the lock is held only to copy the estimates in or
/// out.
#[derive(Clone, Debug, Default)]
pub struct DraftLenMemory(Arc<Mutex<Option<DraftLenChooser>>>);

impl PartialEq for DraftLenMemory {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DraftLenMemory {}

impl DraftLenMemory {
    /// An empty memory: the first run starts from the prior.
    pub fn new() -> Self {
        Self::default()
    }

    /// A chooser for a new run: the remembered one when it was made for the same `choice`,
    /// with its acceptance counts halved, else a fresh one.
    pub(crate) fn chooser(&self, choice: DraftLen) -> DraftLenChooser {
        let saved = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match saved {
            Some(mut c) if c.choice == choice => {
                c.reached.iter_mut().for_each(|n| *n *= 0.5);
                c.kept.iter_mut().for_each(|k| *k *= 0.5);
                c
            }
            _ => DraftLenChooser::new(choice),
        }
    }

    /// Remembers `chooser` for the next run.
    pub(crate) fn keep(&self, chooser: &DraftLenChooser) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(chooser.clone());
    }

    /// Whether a run has been remembered.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_none()
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
    fn acceptance_is_estimated_per_position() {
        // Every fifth round rejects the first draft; the others keep all eight.
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for r in 0..200 {
            let accepted = if r % 5 == 0 { 0 } else { 8 };
            c.record(8, accepted, ms(8), ms(20));
        }
        let a = c.acceptance_by_position();
        assert!((a[0] - 0.8).abs() < 0.05, "{a:?}");
        assert!(a[1..].iter().all(|&x| x > 0.95), "{a:?}");
        let t = c.expected_tokens();
        assert!((t[1] - 1.8).abs() < 0.05, "{t:?}");
        assert!((t[8] - (1.0 + 0.8 * 8.0)).abs() < 0.3, "{t:?}");
    }

    #[test]
    fn lengths_other_than_the_first_get_tried() {
        // The first round drafts 4; with everything kept and cheap drafts, the next rounds
        // must move on to longer drafts rather than wait for a shorter length to be timed.
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        assert_eq!(c.next(), 4);
        c.record(4, 4, ms(4), ms(10));
        assert!(c.next() > 4, "{}", c.next());
        // And with every draft rejected, shorter ones.
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for _ in 0..20 {
            c.record(4, 0, ms(40), ms(10));
        }
        assert!(c.next() < 4, "{}", c.next());
    }

    #[test]
    fn a_rejection_deep_in_a_draft_does_not_keep_drafts_short() {
        // Costs as measured on a CPU: a draft step about a third of a verify.
        let us = Duration::from_micros;
        let draft = |k: usize| us(4_500 * k as u64);
        let verify = |k: usize| us(14_000 + 400 * k as u64);
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for _ in 0..3 {
            c.record(6, 6, draft(6), verify(6));
        }
        // Rejections at position 3 make drafts of 3 look best ...
        for _ in 0..3 {
            c.record(6, 3, draft(6), verify(6));
        }
        assert!(c.next() <= 3, "{}", c.next());
        // ... then every draft is kept, but rounds of 3 never reach position 3 again; its
        // estimate must still recover so that longer drafts come back.
        let mut longest = 0;
        for _ in 0..40 {
            let k = c.next();
            longest = longest.max(k);
            c.record(k, k, draft(k), verify(k));
        }
        assert!(longest > 3, "{longest}");
    }

    #[test]
    fn a_position_never_reached_leans_on_the_one_before() {
        let mut c = DraftLenChooser::new(DraftLen::Adaptive(8));
        for _ in 0..50 {
            c.record(2, 2, ms(2), ms(10));
        }
        let a = c.acceptance_by_position();
        assert!(a[1] > 0.95, "{a:?}");
        // Positions 2.. were never reached: they inherit position 1's estimate, not the
        // starting prior, so longer drafts get tried.
        assert!(a[2..].iter().all(|&x| (x - a[1]).abs() < 1e-9), "{a:?}");
        assert!(c.next() > 2, "{}", c.next());
    }

    #[test]
    fn a_memory_carries_costs_and_half_the_acceptance_counts() {
        let m = DraftLenMemory::new();
        assert!(m.is_empty());
        let mut c = m.chooser(DraftLen::Adaptive(8));
        assert_eq!(c.next(), 4);
        for _ in 0..20 {
            c.record(6, 6, ms(12), ms(15));
        }
        m.keep(&c);
        assert!(!m.is_empty());
        let d = m.chooser(DraftLen::Adaptive(8));
        // The next run starts where this one ended instead of at the prior's length ...
        assert_eq!(d.next(), c.next());
        assert_ne!(d.next(), 4);
        assert_eq!(d.verify, c.verify);
        assert_eq!(d.draft_step, c.draft_step);
        for (a, b) in d.reached.iter().zip(&c.reached) {
            assert!((a - 0.5 * b).abs() < 1e-12);
        }
        // ... and a run with another maximum starts afresh.
        assert_eq!(m.chooser(DraftLen::Adaptive(6)).next(), 4);
        assert_eq!(m.clone(), m);
        assert_ne!(DraftLenMemory::new(), m);
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
