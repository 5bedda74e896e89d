//! `agentcompress bench ...`: benchmark subcommands. `bench kernels` times every CUDA kernel
//! beside the device's copy bandwidth and cuBLAS; other groups add their own subcommands here.

use crate::harness::kernel_bench as bench;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::Result;

/// The benchmark subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// CUDA kernel microbenchmarks (GEMV, GEMM, attention) and whole-model decode.
    Kernels(KernelsArgs),
    /// Weight streaming: raw O_DIRECT read speed of the variant files, then the full pipeline.
    Stream(crate::cmd_bench_stream::Args),
    /// Swap latency: making a variant resident from a cold page cache, and time to first token.
    Swap(crate::cmd_bench_swap::SwapArgs),
    /// Controller inference latency over k-token tasks (median and p99).
    Controller(crate::cmd_bench_controller::ControllerBenchArgs),
    /// Whole-model decode tokens/s of each variant beside its bandwidth floor.
    Decode(crate::cmd_bench_decode::DecodeArgs),
    /// CPU packed products: int8-activation (VNNI) kernels beside f32-activation and FP16.
    CpuKernels(crate::cmd_bench_cpu_kernels::Args),
    /// Plain vs speculative greedy decode per (target, draft) variant pair, identical output.
    Speculative(crate::cmd_bench_speculative::SpeculativeArgs),
    /// Continuous batching: output tokens/s at several batch sizes against one sequence.
    Batch(crate::cmd_bench_batch::BatchArgs),
    /// The HTTP server under concurrent clients: requests/s, output tokens/s, TTFT, ITL.
    Serve(crate::cmd_bench_serve::ServeBenchArgs),
}

/// Arguments of `bench kernels`.
#[derive(clap::Args, Debug)]
pub struct KernelsArgs {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0, value_parser = crate::numeric::index, allow_negative_numbers = true)]
    pub device: usize,
    /// Timed iterations per kernel (the median is reported).
    #[arg(long, default_value_t = 50, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub iters: usize,
    /// Skip the Llama-2-7B-shaped whole-model decode benchmark.
    #[arg(long)]
    pub no_model: bool,
    /// Decode steps timed in the model benchmark.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub decode_steps: usize,
}

/// Dispatches a bench subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels(a) => kernels(a),
        BenchCommand::Stream(a) => crate::cmd_bench_stream::run(a),
        BenchCommand::Swap(a) => crate::cmd_bench_swap::run(a),
        BenchCommand::Decode(a) => crate::cmd_bench_decode::run(a),
        BenchCommand::CpuKernels(a) => crate::cmd_bench_cpu_kernels::run(a),
        BenchCommand::Speculative(a) => crate::cmd_bench_speculative::run(a),
        BenchCommand::Batch(a) => crate::cmd_bench_batch::run(a),
        BenchCommand::Serve(a) => crate::cmd_bench_serve::run(a),
        BenchCommand::Controller(a) => {
            crate::cmd_bench_controller::run(crate::cmd_bench_controller::BenchArgs {
                what: crate::cmd_bench_controller::BenchWhat::Controller(a),
            })
        }
    }
}

fn kernels(a: KernelsArgs) -> Result<()> {
    let be = CudaBackend::new(a.device)?;
    println!("device: {}", be.name());
    let opt = bench::BenchOptions {
        iters: a.iters,
        model: !a.no_model,
        decode_steps: a.decode_steps.max(1),
    };
    let rows = bench::run_kernels(&be, &opt)?;
    println!("{}", bench::table(&rows));
    Ok(())
}
