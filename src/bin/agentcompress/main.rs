//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

mod cmd_demo;
mod cmd_generate;
mod cmd_inspect;
mod cmd_logits;
mod common;

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
    /// Run the built-in demo (no download, no GPU needed).
    Demo(cmd_demo::DemoArgs),
    /// Generate text from a prompt, streaming it.
    Generate(cmd_generate::GenerateArgs),
    /// Print logits for token ids as JSON.
    Logits(cmd_logits::LogitsArgs),
    /// Print a model's configuration and tensor table.
    Inspect(cmd_inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd_demo::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Logits(a) => cmd_logits::run(a),
        Command::Inspect(a) => cmd_inspect::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
