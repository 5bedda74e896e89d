//! The flags of `agentcompress serve`.

use agentcompress::engine::DEFAULT_CONTEXT;
use std::path::PathBuf;

/// Serve a model over an OpenAI-compatible HTTP API with continuous batching.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model: a llama2.c `.bin`, a GGUF file, a Hugging Face directory, a variant directory
    /// written by `quantize` (routed per request), or a built-in model (`builtin:demo`,
    /// `builtin:tiny`).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Tokenizer file; default: the one beside (or inside) the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait to join a batch; beyond it requests get 429 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_queue: usize,
    /// Sequences one batch (one variant) decodes together.
    #[arg(long, default_value_t = 16, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_batch: usize,
    /// Seconds a request may take from arrival to its last token: 408 before the first token
    /// of a non-streamed answer; a streamed one ends with finish_reason "length" and
    /// `x_agentcompress.cut_short = "timeout"`.
    #[arg(long, default_value_t = 600.0, value_parser = crate::numeric::positive_f64, allow_negative_numbers = true)]
    pub timeout: f64,
    /// Seconds in-flight requests may take to finish after SIGTERM or Ctrl-C before they are
    /// cancelled.
    #[arg(long, default_value_t = 30.0, value_parser = crate::numeric::non_negative_f64, allow_negative_numbers = true)]
    pub shutdown_grace: f64,
    /// Largest request body in bytes (suffixes K, M); larger ones get 413.
    #[arg(long, default_value = "1M", value_parser = crate::numeric::bytes)]
    pub max_body: u64,
    /// Most tokens a sequence may hold, prompt included (capped by the model's context).
    #[arg(long, default_value_t = DEFAULT_CONTEXT, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub ctx: usize,
    /// Variant directories: bytes of variants kept resident at once (suffixes K, M, G).
    #[arg(long, value_parser = crate::numeric::bytes)]
    pub memory_budget: Option<u64>,
    /// Variant directories: the router's quality target in [0, 1] for requests that set none.
    #[arg(long, value_parser = crate::numeric::fraction)]
    pub quality_target: Option<f32>,
    /// Milliseconds to pause after each batch step (makes requests slow on purpose, for
    /// testing queueing, timeouts and cancellation).
    #[arg(long, default_value_t = 0, hide = true)]
    pub step_delay_ms: u64,
}
