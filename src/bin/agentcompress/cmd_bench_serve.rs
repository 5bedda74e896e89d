//! `agentcompress bench serve`: throughput and latency of `serve` under concurrent clients.
//! The server runs in this process on a loopback port; for each concurrency, that many client
//! threads send the requests (streamed chat completions of a fixed length) over HTTP and time
//! the first token and the gaps between tokens as a client sees them.

use crate::serve::{self, client, ServeArgs};
use agentcompress::api::Precision;
use agentcompress::engine::DEFAULT_CONTEXT;
use agentcompress::{Error, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a short story about a cat who finds a shiny stone.",
    "Explain what a CPU does in two sentences.",
    "Give me three tips for learning to cook.",
];

/// Arguments of `bench serve`.
#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    /// Model to serve (as `serve --model`).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Tokenizer file; default: the one beside (or inside) the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Concurrencies to measure, comma-separated.
    #[arg(long, default_value = "1,4,16")]
    pub clients: String,
    /// Requests per concurrency.
    #[arg(long, default_value_t = 32, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub requests: usize,
    /// Tokens generated per request (end-of-sequence ignored, so every request is this long).
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Pin every request to this variant of a variant directory (`x_agentcompress.precision`);
    /// default: the route the engine picks.
    #[arg(long)]
    pub precision: Option<Precision>,
}

/// What one request saw.
struct Sample {
    ttft: f64,
    gaps: Vec<f64>,
    tokens: usize,
}

/// One concurrency's figures.
struct Level {
    clients: usize,
    requests: usize,
    wall: f64,
    tokens: usize,
    ttft: Vec<f64>,
    itl: Vec<f64>,
}

fn parse_clients(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|c| match c.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::invalid(format!(
                "--clients entry {c:?} is not a count of at least 1"
            ))),
        })
        .collect()
}

/// One streamed request: time to the first text, gaps between texts, tokens from `usage`.
fn one_request(addr: &str, body: &str) -> Result<Sample> {
    let io = |e: std::io::Error| Error::Internal(format!("request to {addr}: {e}"));
    let t0 = Instant::now();
    let mut s = client::open(addr, "POST", "/v1/chat/completions", Some(body)).map_err(io)?;
    if s.status != 200 {
        let status = s.status;
        let text = s.read_body().map_err(io)?;
        return Err(Error::Internal(format!("server answered {status}: {text}")));
    }
    let (mut first, mut last, mut gaps, mut tokens) = (None, t0, Vec::new(), 0);
    while let Some(data) = s.next_event().map_err(io)? {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&data)
            .map_err(|e| Error::Internal(format!("bad chunk {data:?}: {e}")))?;
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = n as usize;
        }
        let text = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        if text.is_empty() {
            continue;
        }
        let now = Instant::now();
        match first {
            None => first = Some(now.duration_since(t0).as_secs_f64()),
            Some(_) => gaps.push(now.duration_since(last).as_secs_f64()),
        }
        last = now;
    }
    Ok(Sample {
        ttft: first.unwrap_or_else(|| last.duration_since(t0).as_secs_f64()),
        gaps,
        tokens,
    })
}

fn run_level(
    addr: &str,
    clients: usize,
    requests: usize,
    max_tokens: usize,
    pin: Option<Precision>,
) -> Result<Level> {
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= requests {
                            return Ok(());
                        }
                        let mut body = json!({
                            "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}],
                            "max_tokens": max_tokens,
                            "temperature": 0,
                            "ignore_eos": true,
                            "stream": true,
                            "stream_options": {"include_usage": true},
                        });
                        if let Some(p) = pin {
                            body["x_agentcompress"] = json!({"precision": p});
                        }
                        let sample = one_request(addr, &body.to_string())?;
                        if let Ok(mut v) = samples.lock() {
                            v.push(sample);
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| Error::Internal("a client thread panicked".into()))?
        })
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let samples = samples
        .into_inner()
        .map_err(|_| Error::Internal("client results lock poisoned".into()))?;
    Ok(Level {
        clients,
        requests,
        wall,
        tokens: samples.iter().map(|s| s.tokens).sum(),
        ttft: samples.iter().map(|s| s.ttft).collect(),
        itl: samples
            .iter()
            .flat_map(|s| s.gaps.iter().copied())
            .collect(),
    })
}

/// The `p`-th percentile (nearest rank) in milliseconds.
fn pct_ms(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i] * 1e3
}

/// Runs the subcommand.
pub fn run(a: ServeBenchArgs) -> Result<()> {
    let levels = parse_clients(&a.clients)?;
    let most = levels.iter().copied().max().unwrap_or(1);
    let args = ServeArgs {
        model: a.model.clone(),
        tokenizer: a.tokenizer.clone(),
        device: a.device.clone(),
        host: "127.0.0.1".into(),
        port: 0,
        max_queue: a.requests.max(most),
        max_batch: most,
        timeout: 24.0 * 3600.0,
        shutdown_grace: 0.0,
        max_body: 1 << 20,
        ctx: DEFAULT_CONTEXT,
        memory_budget: None,
        quality_target: None,
        step_delay_ms: 0,
    };
    let engine = Arc::new(serve::open_engine(&args)?);
    println!(
        "{} on {}: {} streamed chat requests per concurrency, {} tokens each (EOS ignored), \
         greedy, max batch {most}, {}",
        a.model.display(),
        engine.backend_name(),
        a.requests,
        a.max_tokens,
        a.precision
            .map_or("routed by the engine".to_string(), |p| format!(
                "pinned to {p}"
            ))
    );
    let server = serve::start(args, engine)?;
    let addr = server.addr.to_string();
    // Warm-up: first-touch costs (page faults, lazy initialisation) stay out of the figures.
    run_level(&addr, 1, 1, a.max_tokens.min(8), a.precision)?;
    let mut rows = Vec::new();
    for &c in &levels {
        rows.push(run_level(&addr, c, a.requests, a.max_tokens, a.precision)?);
    }
    let metrics = client::request(&addr, "GET", "/metrics", None)
        .map_err(|e| Error::Internal(format!("metrics: {e}")))?;
    server.stop()?;
    let base = rows
        .iter()
        .find(|r| r.clients == 1)
        .or(rows.first())
        .map_or(f64::NAN, |r| r.tokens as f64 / r.wall);
    println!(
        "| clients | requests | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | tok/s vs 1 client |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let tps = r.tokens as f64 / r.wall;
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2}x |",
            r.clients,
            r.requests,
            r.requests as f64 / r.wall,
            tps,
            pct_ms(&r.ttft, 50.0),
            pct_ms(&r.ttft, 99.0),
            pct_ms(&r.itl, 50.0),
            pct_ms(&r.itl, 99.0),
            tps / base
        );
    }
    if let Some(line) = metrics
        .body
        .lines()
        .find(|l| l.starts_with("agentcompress_batch_rows_max "))
    {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_percentiles() {
        assert_eq!(parse_clients("1, 4,16").unwrap(), [1, 4, 16]);
        assert!(parse_clients("1,0").is_err() && parse_clients("x").is_err());
        let v: Vec<f64> = (1..=100).map(|i| i as f64 / 1e3).collect();
        assert_eq!(pct_ms(&v, 50.0).round(), 51.0);
        assert_eq!(pct_ms(&v, 99.0).round(), 99.0);
    }
}
