//! `agentcompress eval-variants`: measures every variant of a directory against its FP16
//! variant under teacher forcing (perplexity, top-1 agreement, mean KL).

use agentcompress::pipeline::{evaluate_variants, SelfText};
use agentcompress::{Error, Result};
use std::path::PathBuf;

/// Arguments of `eval-variants`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A directory written by `quantize` (holds `manifest.json`).
    #[arg(long)]
    variants: PathBuf,
    /// Evaluation text as token ids (whitespace-separated; one sequence per line). Default:
    /// sequences the FP16 variant samples itself from BOS.
    #[arg(long, conflicts_with = "text")]
    tokens: Option<PathBuf>,
    /// Evaluation text, tokenized with the variants' own tokenizer (or `--tokenizer`) and cut
    /// into sequences of `--seq-len` tokens.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokenizer for `--text` instead of the one the variants carry.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Self-generated sequences (when no `--tokens`).
    #[arg(long, default_value_t = 8, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    seqs: usize,
    /// Tokens per self-generated sequence.
    #[arg(long, default_value_t = 128, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    seq_len: usize,
    /// Sampling seed of the self-generated text.
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    seed: u64,
}

fn read_tokens(p: &PathBuf) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    let mut seqs = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let seq = line
            .split_whitespace()
            .map(|t| {
                t.parse::<u32>().map_err(|_| {
                    Error::corrupt(p, format!("line {}: '{t}' is not a token id", i + 1))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        if seq.len() < 2 {
            return Err(Error::corrupt(
                p,
                format!("line {}: needs at least 2 tokens", i + 1),
            ));
        }
        seqs.push(seq);
    }
    if seqs.is_empty() {
        return Err(Error::corrupt(p, "no token sequences"));
    }
    Ok(seqs)
}

/// Tokenizes a text file and cuts it into sequences of `len` tokens (each starting with BOS).
fn read_text(a: &Args, p: &PathBuf) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    let tok = match &a.tokenizer {
        Some(t) => agentcompress::model::tokenizer::load_tokenizer(t)?,
        None => agentcompress::api::variant_tokenizer(&a.variants)?.ok_or_else(|| {
            Error::invalid(format!(
                "{} carries no tokenizer: pass --tokenizer",
                a.variants.display()
            ))
        })?,
    };
    let ids = tok.encode(&text, false)?;
    let len = a.seq_len.max(2);
    let seqs: Vec<Vec<u32>> = ids
        .chunks(len - 1)
        .filter(|c| c.len() >= 2)
        .map(|c| tok.bos_id().into_iter().chain(c.iter().copied()).collect())
        .collect();
    if seqs.is_empty() {
        return Err(Error::corrupt(p, "the text encodes to fewer than 2 tokens"));
    }
    Ok(seqs)
}

/// Runs `eval-variants`.
pub fn run(a: Args) -> Result<()> {
    let seqs = match (&a.tokens, &a.text) {
        (Some(t), _) => Some(read_tokens(t)?),
        (None, Some(t)) => Some(read_text(&a, t)?),
        (None, None) => None,
    };
    let text = SelfText {
        n_seqs: a.seqs,
        len: a.seq_len,
        seed: a.seed,
    };
    match &seqs {
        Some(s) => eprintln!(
            "evaluating on {} ({} sequences)",
            a.tokens
                .as_ref()
                .or(a.text.as_ref())
                .map_or(String::new(), |p| p.display().to_string()),
            s.len()
        ),
        None => eprintln!("evaluating on {}", text.describe()),
    }
    let rows = evaluate_variants(&a.variants, seqs, text)?;
    println!(
        "{:<8} {:>12} {:>10} {:>10} {:>8} {:>10} {:>9}",
        "variant", "weight bytes", "bits/w", "ppl", "top-1", "KL", "positions"
    );
    for r in rows {
        println!(
            "{:<8} {:>12} {:>10.3} {:>10.3} {:>8.4} {:>10.5} {:>9}",
            r.info.precision.name(),
            r.info.weight_bytes,
            r.info.bits_per_weight,
            r.quality.perplexity,
            r.quality.top1_agreement,
            r.quality.mean_kl,
            r.quality.positions
        );
    }
    Ok(())
}
