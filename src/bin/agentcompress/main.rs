//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd_bench;
mod cmd_gpu_check;

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
    /// Differential checks of the CUDA backend against the CPU oracle (needs a GPU).
    GpuCheck(cmd_gpu_check::Args),
    /// Benchmarks (`bench kernels`, ...).
    #[command(subcommand)]
    Bench(cmd_bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: agentcompress::Result<()> = match cli.command {
        Command::GpuCheck(a) => cmd_gpu_check::run(a),
        Command::Bench(c) => cmd_bench::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
