//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "agentcompress", version, about = "Route every task to the cheapest precision of one LLaMA-family model that still does it well")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: agentcompress::Result<()> = match cli.command {};
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
