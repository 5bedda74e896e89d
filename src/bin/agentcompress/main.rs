//! The `agentcompress` command line. Each subcommand lives in its own `cmd_*.rs` file with a
//! clap `Args` struct and a `run` function; this file only dispatches.

mod cmd_bench;
mod cmd_bench_batch;
mod cmd_bench_controller;
mod cmd_bench_controller_device;
mod cmd_bench_cpu_kernels;
mod cmd_bench_decode;
mod cmd_bench_serve;
mod cmd_bench_speculative;
mod cmd_bench_stream;
mod cmd_bench_swap;
mod cmd_demo;
mod cmd_eval;
mod cmd_eval_chat;
mod cmd_eval_variants;
mod cmd_generate;
mod cmd_gpu_check;
mod cmd_inspect;
mod cmd_logits;
mod cmd_quantize;
mod cmd_route;
mod cmd_train_controller;
mod common;
mod harness;
mod numeric;
mod serve;

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
    /// Differential checks of the CUDA backend against the CPU oracle (needs a GPU).
    GpuCheck(cmd_gpu_check::Args),
    /// Benchmarks (`bench kernels`, ...).
    #[command(subcommand)]
    Bench(cmd_bench::BenchCommand),
    /// Write the FP16/INT8/INT4/INT2 variants of a model and their manifest.
    Quantize(cmd_quantize::Args),
    /// Measure every variant of a directory against its FP16 variant.
    EvalVariants(cmd_eval_variants::Args),
    /// Run the multi-stage workflow benchmark (controller vs uniform, random, oracle).
    Eval(cmd_eval::EvalArgs),
    /// Predict a task's complexity and print the routing decision and its reasons.
    Route(cmd_route::RouteArgs),
    /// Train the complexity controller (first-order MAML) and calibrate the router.
    TrainController(cmd_train_controller::TrainControllerArgs),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd_demo::run(a),
        Command::Generate(a) => cmd_generate::run(a),
        Command::Logits(a) => cmd_logits::run(a),
        Command::Inspect(a) => cmd_inspect::run(a),
        Command::GpuCheck(a) => cmd_gpu_check::run(a),
        Command::Bench(c) => cmd_bench::run(c),
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::EvalVariants(a) => cmd_eval_variants::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Route(a) => cmd_route::run(a),
        Command::TrainController(a) => cmd_train_controller::run(a),
        Command::Serve(a) => serve::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
