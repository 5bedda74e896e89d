//! `agentcompress logits`: print logits as JSON, for checking against other engines.

use crate::common::ModelArgs;
use agentcompress::{Error, Result};
use clap::Args;
use std::io::Write;

/// Print the logits of a token sequence as JSON: `{"logits": [[...]]}`.
#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, e.g. `1,2,3`.
    #[arg(long)]
    pub ids: String,
    /// Print every position's logits instead of the last one only.
    #[arg(long)]
    pub all: bool,
}

/// Parses `1,2,3` into ids, naming the first bad entry.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>().map_err(|_| {
                Error::invalid(format!("token id '{x}' is not a non-negative integer"))
            })
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(args: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&args.ids)?;
    if ids.is_empty() {
        return Err(Error::invalid("--ids is empty"));
    }
    let engine = args.model.open()?;
    let logits = engine.logits(&ids, args.all)?;
    let json = serde_json::json!({ "logits": logits });
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{json}");
    Ok(())
}
