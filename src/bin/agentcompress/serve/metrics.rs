//! Counters and histograms of the server, rendered as Prometheus text beside the engine's own
//! counters (tasks per precision, swaps, hits, bytes loaded).

use agentcompress::api::{EngineStats, Precision};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why a sequence ended before its own finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CancelReason {
    /// The client went away.
    Disconnect,
    /// The request ran past `--timeout`.
    Timeout,
    /// The server shut down before it finished.
    Shutdown,
}

impl CancelReason {
    fn label(self) -> &'static str {
        match self {
            CancelReason::Disconnect => "disconnect",
            CancelReason::Timeout => "timeout",
            CancelReason::Shutdown => "shutdown",
        }
    }
}

/// Cumulative histogram with fixed upper bounds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow bucket.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b);
        self.counts[i.unwrap_or(self.bounds.len())] += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            acc += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        acc += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {acc}");
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {acc}", self.sum);
    }
}

/// Latency buckets in seconds: from sub-millisecond steps of a tiny model to minutes of queueing.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Rows of one batch step.
const ROWS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The server's metrics. Every method is cheap: the scheduler calls them between steps.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cancelled: Mutex<BTreeMap<CancelReason, u64>>,
    steps: AtomicU64,
    rows_max: AtomicUsize,
    reused: AtomicU64,
    live: AtomicUsize,
    rows: Mutex<Histogram>,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            cancelled: Mutex::default(),
            steps: AtomicU64::new(0),
            rows_max: AtomicUsize::new(0),
            reused: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            rows: Mutex::new(Histogram::new(ROWS)),
            ttft: Mutex::new(Histogram::new(SECONDS)),
            itl: Mutex::new(Histogram::new(SECONDS)),
        }
    }
}

/// Runs `f` on a histogram; a poisoned lock (a panic elsewhere) only loses that observation.
fn with<T>(m: &Mutex<T>, f: impl FnOnce(&mut T)) {
    if let Ok(mut g) = m.lock() {
        f(&mut g);
    }
}

impl Metrics {
    /// A response of `status` on `endpoint`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        with(&self.requests, |r| {
            *r.entry((endpoint, status)).or_default() += 1
        });
    }

    /// A finished (or ended) sequence's token counts.
    pub fn tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    /// A sequence ended early.
    pub fn cancelled(&self, why: CancelReason) {
        with(&self.cancelled, |c| *c.entry(why).or_default() += 1);
    }

    /// One batch step of `rows` rows; `session_max` is the most any step of its session ran.
    pub fn step(&self, rows: usize, session_max: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.rows_max
            .fetch_max(session_max.max(rows), Ordering::Relaxed);
        with(&self.rows, |h| h.observe(rows as f64));
    }

    /// `n` more prompt tokens taken from other sequences' caches instead of being fed.
    pub fn reused(&self, n: usize) {
        self.reused.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Time from a request's arrival to its first token.
    pub fn ttft(&self, secs: f64) {
        with(&self.ttft, |h| h.observe(secs));
    }

    /// Time between two tokens of one sequence.
    pub fn itl(&self, secs: f64) {
        with(&self.itl, |h| h.observe(secs));
    }

    /// Sequences decoding now.
    pub fn set_live(&self, n: usize) {
        self.live.store(n, Ordering::Relaxed);
    }

    /// The most rows any batch step has run.
    pub fn rows_max(&self) -> usize {
        self.rows_max.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition of the server's and the engine's counters.
    pub fn render(&self, engine: &EngineStats, queued: usize, resident: &[Precision]) -> String {
        let mut o = String::new();
        let mut put = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        let requests: Vec<_> = self
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|((e, s), n)| {
                (
                    format!("{{endpoint=\"{e}\",status=\"{s}\"}}"),
                    n.to_string(),
                )
            })
            .collect();
        put(
            "agentcompress_requests_total",
            "counter",
            "HTTP responses by endpoint and status.",
            &requests,
        );
        put(
            "agentcompress_prompt_tokens_total",
            "counter",
            "Prompt tokens of served requests.",
            &one(self.prompt_tokens.load(Ordering::Relaxed).to_string()),
        );
        put(
            "agentcompress_completion_tokens_total",
            "counter",
            "Tokens generated for requests.",
            &one(self.completion_tokens.load(Ordering::Relaxed).to_string()),
        );
        let cancelled: Vec<_> = [
            CancelReason::Disconnect,
            CancelReason::Timeout,
            CancelReason::Shutdown,
        ]
        .into_iter()
        .map(|r| {
            let n = self
                .cancelled
                .lock()
                .ok()
                .and_then(|c| c.get(&r).copied())
                .unwrap_or(0);
            (format!("{{reason=\"{}\"}}", r.label()), n.to_string())
        })
        .collect();
        put(
            "agentcompress_cancelled_total",
            "counter",
            "Sequences ended early, by reason.",
            &cancelled,
        );
        put(
            "agentcompress_queue_depth",
            "gauge",
            "Requests waiting to join a batch.",
            &one(queued.to_string()),
        );
        put(
            "agentcompress_live_sequences",
            "gauge",
            "Sequences decoding now.",
            &one(self.live.load(Ordering::Relaxed).to_string()),
        );
        put(
            "agentcompress_batch_steps_total",
            "counter",
            "Batch decode steps run.",
            &one(self.steps.load(Ordering::Relaxed).to_string()),
        );
        put(
            "agentcompress_batch_rows_max",
            "gauge",
            "Most rows any batch step ran.",
            &one(self.rows_max().to_string()),
        );
        put(
            "agentcompress_prompt_tokens_reused_total",
            "counter",
            "Prompt tokens taken from another sequence's cache (a shared prefix) instead of prefilled.",
            &one(self.reused.load(Ordering::Relaxed).to_string()),
        );
        let tasks: Vec<_> = Precision::ALL
            .into_iter()
            .map(|p| {
                (
                    format!("{{precision=\"{p}\"}}"),
                    engine.per_precision[p].to_string(),
                )
            })
            .collect();
        put(
            "agentcompress_tasks_total",
            "counter",
            "Requests served, by the precision that served them.",
            &tasks,
        );
        put(
            "agentcompress_engine_tokens_total",
            "counter",
            "Tokens the engine generated.",
            &one(engine.tokens.to_string()),
        );
        put(
            "agentcompress_swaps_total",
            "counter",
            "Requests whose variant had to be loaded.",
            &one(engine.swaps.to_string()),
        );
        put(
            "agentcompress_hits_total",
            "counter",
            "Requests served by a resident variant.",
            &one(engine.hits.to_string()),
        );
        put(
            "agentcompress_bytes_loaded_total",
            "counter",
            "Bytes of variant weights loaded.",
            &one(engine.bytes_loaded.to_string()),
        );
        put(
            "agentcompress_bytes_streamed_total",
            "counter",
            "Bytes read from storage.",
            &one(engine.bytes_streamed.to_string()),
        );
        put(
            "agentcompress_cost_total",
            "counter",
            "Accumulated relative cost (FP16 = 1 per request).",
            &one(engine.cost.to_string()),
        );
        let resident: Vec<_> = Precision::ALL
            .into_iter()
            .map(|p| {
                (
                    format!("{{precision=\"{p}\"}}"),
                    u8::from(resident.contains(&p)).to_string(),
                )
            })
            .collect();
        put(
            "agentcompress_resident",
            "gauge",
            "Whether each variant is resident.",
            &resident,
        );
        with(&self.rows, |h| {
            h.render(&mut o, "agentcompress_batch_rows", "Rows per batch step.")
        });
        with(&self.ttft, |h| {
            h.render(
                &mut o,
                "agentcompress_time_to_first_token_seconds",
                "Request arrival to first token.",
            )
        });
        with(&self.itl, |h| {
            h.render(
                &mut o,
                "agentcompress_inter_token_latency_seconds",
                "Time between consecutive tokens of a sequence.",
            )
        });
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_render() {
        let m = Metrics::default();
        m.request("chat", 200);
        m.request("chat", 200);
        m.step(3, 3);
        m.step(1, 3);
        m.reused(40);
        m.reused(2);
        m.ttft(0.003);
        m.ttft(100.0);
        m.cancelled(CancelReason::Timeout);
        let text = m.render(&EngineStats::default(), 2, &[Precision::Fp16]);
        assert!(text.contains("agentcompress_requests_total{endpoint=\"chat\",status=\"200\"} 2"));
        assert!(text.contains("agentcompress_batch_rows_max 3\n"));
        assert!(text.contains("agentcompress_prompt_tokens_reused_total 42\n"));
        assert!(text.contains("agentcompress_batch_rows_bucket{le=\"2\"} 1\n"));
        assert!(text.contains("agentcompress_batch_rows_bucket{le=\"4\"} 2\n"));
        assert!(text.contains("agentcompress_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("agentcompress_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("agentcompress_cancelled_total{reason=\"timeout\"} 1"));
        assert!(text.contains("agentcompress_queue_depth 2\n"));
        assert!(text.contains("agentcompress_resident{precision=\"fp16\"} 1"));
    }
}
