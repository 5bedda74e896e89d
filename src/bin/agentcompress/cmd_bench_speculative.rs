//! `agentcompress bench speculative`: tokens/s of plain and speculative greedy decode per
//! (target, draft) pair of a variant directory, on chat prompts when the model has a chat
//! template and on plain story openings otherwise; identical output is checked.

use crate::harness::spec_bench::{run_pairs, table};
use agentcompress::api::{ChatMessage, Device, DraftLen, Engine, Precision};
use agentcompress::{Error, Result};
use std::path::PathBuf;

const CHAT_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a CPU does in two sentences.",
    "Give me three tips for learning to cook.",
];

const STORY_PROMPTS: [&str; 4] = [
    "Once upon a time",
    "Lily and Tom went to the park",
    "The cat sat on the mat and",
    "One day, a bird found a shiny stone",
];

/// Arguments of `bench speculative`.
#[derive(clap::Args, Debug)]
pub struct SpeculativeArgs {
    /// A variant directory (written by `agentcompress quantize`).
    #[arg(long)]
    pub model: PathBuf,
    /// A tokenizer file (tokenizer.json, tokenizer.bin or a GGUF model) instead of the one the
    /// variants carry.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Pairs to time, comma-separated `target:draft` (default: every pair with a cheaper
    /// draft).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Greedy tokens per prompt.
    #[arg(long, default_value_t = 96, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Draft tokens per verify (default: adaptive, up to 8).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub draft_len: Option<usize>,
}

fn parse_pairs(s: Option<&str>) -> Result<Vec<(Precision, Precision)>> {
    let Some(s) = s else {
        let mut all = Vec::new();
        for (i, &t) in Precision::ALL.iter().enumerate() {
            for &d in &Precision::ALL[i + 1..] {
                all.push((t, d));
            }
        }
        return Ok(all);
    };
    s.split(',')
        .map(|p| {
            let (t, d) = p.trim().split_once(':').ok_or_else(|| {
                Error::invalid(format!("--pairs entry {p:?} is not target:draft"))
            })?;
            Ok((t.parse()?, d.parse()?))
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(a: SpeculativeArgs) -> Result<()> {
    let pairs = parse_pairs(a.pairs.as_deref())?;
    let mut builder = Engine::builder(&a.model).device(Device::Cpu);
    if let Some(t) = &a.tokenizer {
        builder = builder.tokenizer_path(t);
    }
    let engine = builder.build()?;
    let chat = engine
        .chat_prompt(&[ChatMessage::new("user", "hi")])
        .is_ok();
    let prompts = if chat {
        CHAT_PROMPTS
            .iter()
            .map(|p| engine.encode_chat(&[ChatMessage::new("user", *p)]))
            .collect::<Result<Vec<_>>>()?
    } else {
        STORY_PROMPTS
            .iter()
            .map(|p| engine.encode(p))
            .collect::<Result<Vec<_>>>()?
    };
    let draft_len = a.draft_len.map_or(DraftLen::default(), DraftLen::Fixed);
    println!(
        "{} on {}: {} {} prompts, {} greedy tokens each, draft length {draft_len:?}; plain and \
         speculative runs interleaved per prompt, outputs checked identical",
        a.model.display(),
        engine.backend_name(),
        prompts.len(),
        if chat { "chat" } else { "story" },
        a.max_tokens
    );
    let rows = run_pairs(&engine, &pairs, &prompts, a.max_tokens, draft_len)?;
    println!("{}", table(&rows));
    Ok(())
}
