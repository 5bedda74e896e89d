//! `agentcompress demo`: the main job on an embedded default, with no download and no GPU.

use agentcompress::api::{Device, Engine};
use agentcompress::engine::{GenerateParams, SamplingParams};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::{ByteTokenizer, BYTE_VOCAB};
use agentcompress::model::DType;
use agentcompress::Result;
use clap::Args;

/// Run the built-in demo on a seeded synthetic model (no files, no GPU needed).
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the synthetic model and the sampler.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 48)]
    pub max_tokens: usize,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Runs the subcommand.
pub fn run(args: DemoArgs) -> Result<()> {
    let mut cfg = preset("small")?;
    cfg.vocab_size = BYTE_VOCAB;
    let weights = synthetic_weights(&cfg, args.seed, DType::F32)?;
    let engine = Engine::from_weights(weights)
        .device(args.device.parse::<Device>()?)
        .tokenizer(Box::new(ByteTokenizer))
        .build()?;
    println!(
        "AgentCompress demo: synthetic LLaMA-shape model ({} layers, dim {}, {:.1}M parameters, seed {}) on {}",
        cfg.n_layers,
        cfg.dim,
        cfg.parameter_count() as f64 / 1e6,
        args.seed,
        engine.backend_name()
    );
    let params = GenerateParams {
        max_new_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            seed: args.seed,
        },
        ..Default::default()
    };
    let task = "Plan the steps to summarise a report.";
    let out = engine.generate(task, &params, |_| true)?;
    println!("task: {task}");
    println!(
        "generated {} token ids: {:?}",
        out.ids.len(),
        &out.ids[..out.ids.len().min(16)]
    );
    println!(
        "prefill {:.1} ms, decode {:.1} tokens/s",
        out.prefill_time.as_secs_f64() * 1e3,
        out.decode_tokens_per_s()
    );
    Ok(())
}
