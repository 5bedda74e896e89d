//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

mod cmd_bench_controller;
mod cmd_demo;
mod cmd_eval;
mod cmd_generate;
mod cmd_inspect;
mod cmd_logits;
mod cmd_route;
mod cmd_train_controller;
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
    /// Run the multi-stage workflow benchmark (controller vs uniform, random, oracle).
    Eval(cmd_eval::EvalArgs),
    /// Predict a task's complexity and print the routing decision and its reasons.
    Route(cmd_route::RouteArgs),
    /// Train the complexity controller (first-order MAML) and calibrate the router.
    TrainController(cmd_train_controller::TrainControllerArgs),
    /// Benchmarks (`bench controller`: controller overhead).
    Bench(cmd_bench_controller::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd_demo::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Logits(a) => cmd_logits::run(a),
        Command::Inspect(a) => cmd_inspect::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Route(a) => cmd_route::run(a),
        Command::TrainController(a) => cmd_train_controller::run(a),
        Command::Bench(a) => cmd_bench_controller::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
