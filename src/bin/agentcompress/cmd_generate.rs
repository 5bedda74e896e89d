//! `agentcompress generate`: stream text from a prompt, then report tokens/s.

use crate::common::ModelArgs;
use agentcompress::api::{ChatMessage, Device, DraftLen, Engine, Precision, Speculation};
use agentcompress::engine::{GenerateParams, SamplingParams, TokenEvent, DEFAULT_CONTEXT};
use agentcompress::Result;
use clap::Args;
use std::io::Write;

/// Generate text from a prompt, streaming it as it is produced.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (empty: start from BOS alone).
    #[arg(long, short = 'p', default_value = "", conflicts_with = "chat")]
    pub prompt: String,
    /// Chat: this user message, rendered with the model's chat template; prints the
    /// assistant's reply, which ends at the end-of-turn token.
    #[arg(long)]
    pub chat: Option<String>,
    /// With --chat: a system message before the user's (default: the template's own, if any).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Maximum number of new tokens.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (argmax).
    #[arg(long, short = 't', default_value_t = 0.0, value_parser = crate::numeric::non_negative_f32, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables it.
    #[arg(long, default_value_t = 0.9, value_parser = crate::numeric::top_p, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, short = 's', default_value_t = 42, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Most tokens the sequence may hold, prompt included (capped by the model's context);
    /// the KV cache grows with the sequence up to this limit.
    #[arg(long = "ctx", default_value_t = DEFAULT_CONTEXT, value_parser = parse_ctx)]
    pub ctx: usize,
    /// Drop the oldest prompt tokens when the prompt does not fit the context (otherwise
    /// that is an error).
    #[arg(long)]
    pub truncate_prompt: bool,
    /// Start the prompt (or the rendered chat) with the model's BOS token even when the
    /// tokenizer does not add one (default: as the tokenizer's `add_bos_token` says).
    #[arg(long, conflicts_with = "no_bos")]
    pub bos: bool,
    /// Never add a BOS token (default: as the tokenizer's `add_bos_token` says).
    #[arg(long)]
    pub no_bos: bool,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Variant directories: stream the layers through a weight pool of this many bytes
    /// (suffixes K, M, G) instead of loading them all (offloaded execution), then print the
    /// pool's statistics.
    #[arg(long, value_parser = parse_budget)]
    pub pool_budget: Option<u64>,
    /// With --pool-budget: keep up to this many bytes of uploaded blocks on the device (GPU
    /// memory on CUDA) between uses, by the pool's priority policy, then print its statistics.
    #[arg(long, value_parser = parse_budget, requires = "pool_budget")]
    pub device_cache: Option<u64>,
    /// Variant directories: generate the output of the --precision variant (default fp16)
    /// through speculation, drafting with this cheaper variant (int8, int4, int2), then print
    /// the acceptance statistics.
    #[arg(long, conflicts_with = "pool_budget")]
    pub speculate: Option<Precision>,
    /// With --speculate: draft tokens per verify (default: adaptive, up to 8).
    #[arg(long, requires = "speculate", value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub draft_len: Option<usize>,
}

/// The variant directory `m` names, all variants available (for speculation).
fn open_variants(m: &crate::common::ModelArgs) -> Result<Engine> {
    let device: Device = m.device.parse()?;
    let mut b = Engine::builder(&m.model).device(device);
    if let Some(t) = &m.tokenizer {
        b = b.tokenizer_path(t);
    }
    b.build()
}

/// What to tell a user whose generation ended before its first token.
fn ended_at_once_hint(chat: bool, engine: &agentcompress::api::Engine) -> String {
    let has_template = engine
        .tokenizer()
        .is_some_and(|t| t.chat_template().is_some());
    if !chat && has_template {
        "hint: the model ended at once; an instruct model usually needs its chat template: \
         pass the message with --chat \"...\" (and --system \"...\")"
            .to_string()
    } else {
        "hint: the model ended at once (its first token was end-of-sequence); try another \
         prompt, --bos/--no-bos, or --ignore-eos to see what follows"
            .to_string()
    }
}

fn parse_ctx(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "--ctx must be a whole number of tokens >= 1, got {s:?}"
        )),
    }
}

fn parse_budget(s: &str) -> std::result::Result<u64, String> {
    crate::common::parse_bytes(s).map_err(|e| e.to_string())
}

/// Runs the subcommand.
pub fn run(args: GenerateArgs) -> Result<()> {
    let engine = match args.speculate {
        // Speculation needs the draft variant beside the served one: the whole directory.
        Some(_) => open_variants(&args.model)?,
        None => args
            .model
            .open_with(args.pool_budget, args.device_cache.unwrap_or(0))?,
    };
    let params = GenerateParams {
        max_new_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_at_eos: !args.ignore_eos,
        context: args.ctx,
        truncate_prompt: args.truncate_prompt,
        add_bos: match (args.bos, args.no_bos) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        ..Default::default()
    };
    params.sampling.validate()?;
    let messages = args.chat.as_ref().map(|user| {
        let mut m = Vec::new();
        if let Some(system) = &args.system {
            m.push(ChatMessage::new("system", system.as_str()));
        }
        m.push(ChatMessage::new("user", user.as_str()));
        m
    });
    let mut stdout = std::io::stdout().lock();
    if messages.is_none() {
        let _ = write!(stdout, "{}", args.prompt);
    }
    let print = |t: TokenEvent<'_>| {
        let _ = write!(stdout, "{}", t.text);
        let _ = stdout.flush();
        true
    };
    let out = match (&messages, args.speculate) {
        (Some(m), None) => engine.chat(m, &params, print)?.output,
        (None, None) => engine.generate(&args.prompt, &params, print)?,
        (m, Some(draft)) => {
            let spec = Speculation {
                target: args.model.precision.unwrap_or(Precision::Fp16),
                draft,
                draft_len: args.draft_len.map_or(DraftLen::default(), DraftLen::Fixed),
            };
            let ids = match m {
                Some(m) => engine.encode_chat(m)?,
                None => engine.encode(&args.prompt)?,
            };
            engine.generate_ids_speculative(&ids, &params, &spec, print)?
        }
    };
    drop(stdout);
    if out.prompt_tokens_dropped > 0 {
        eprintln!(
            "\nnotice: dropped the oldest {} prompt tokens to fit the context of {} tokens",
            out.prompt_tokens_dropped, out.context
        );
    }
    if out.context_limited && !out.hit_eos && !out.cancelled {
        eprintln!(
            "\nnotice: stopped at the context of {} tokens before --max-tokens {}",
            out.context, args.max_tokens
        );
    }
    eprintln!(
        "\n[{}] prompt {} tokens in {:.1} ms, generated {} tokens at {:.1} tokens/s",
        engine.backend_name(),
        out.prompt_ids.len(),
        out.prefill_time.as_secs_f64() * 1e3,
        out.ids.len(),
        out.decode_tokens_per_s()
    );
    if out.ids.is_empty() && out.hit_eos {
        eprintln!("{}", ended_at_once_hint(messages.is_some(), &engine));
    }
    if let Some(s) = &out.speculation {
        eprintln!(
            "speculation: drafted {}, accepted {} ({:.1}%), {} verifies, {:.2} accepted per verify, {:.2} tokens per verify",
            s.drafted,
            s.accepted,
            100.0 * s.acceptance_rate(),
            s.verifies,
            s.mean_accepted_len(),
            s.tokens_per_verify()
        );
    }
    if let Some(s) = engine.upload_stats() {
        eprintln!(
            "\nuploaded-block tier (--device-cache): {} hits, {} misses ({} uncached), {} evictions, {:.1} MB uploaded in {:.3} s, {:.1} of {:.1} MB used",
            s.hits,
            s.misses,
            s.uncached,
            s.evictions,
            s.bytes_uploaded as f64 / 1e6,
            s.upload_s,
            s.used as f64 / 1e6,
            s.budget as f64 / 1e6
        );
    }
    if let Some(stats) = engine.pool_stats() {
        eprintln!("\nweight pool:\n{stats}");
    }
    Ok(())
}
