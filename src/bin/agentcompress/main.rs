//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

mod cmd_eval_variants;
mod cmd_quantize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "agentcompress",
    version,
    about = "Route every task to the cheapest precision of one LLaMA-family model that still does it well"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the FP16/INT8/INT4/INT2 variants of a model and their manifest.
    Quantize(cmd_quantize::Args),
    /// Measure every variant of a directory against its FP16 variant.
    EvalVariants(cmd_eval_variants::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: agentcompress::Result<()> = match cli.command {
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::EvalVariants(a) => cmd_eval_variants::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
