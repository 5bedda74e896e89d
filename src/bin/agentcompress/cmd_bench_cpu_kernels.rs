//! `agentcompress bench cpu-kernels`: the CPU's packed products on int8 activations (VNNI)
//! beside the f32-activation kernels and FP16, at SmolLM2-135M and Llama-2-7B shapes.

use crate::harness::cpu_kernel_bench as bench;
use agentcompress::Result;

/// Arguments of `bench cpu-kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interleaved samples per kernel (the fastest is reported).
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    iters: usize,
    /// Only the SmolLM2-135M shapes (skip the 4096x4096 one).
    #[arg(long)]
    small_only: bool,
}

/// Runs the benchmark and prints its table.
pub fn run(a: Args) -> Result<()> {
    println!(
        "cpu-kernels: {} rayon threads, fastest of {} interleaved samples",
        rayon::current_num_threads(),
        a.iters.max(1)
    );
    let shapes = if a.small_only {
        &bench::SHAPES[..4]
    } else {
        &bench::SHAPES[..]
    };
    let rows = bench::run(a.iters.max(1), shapes, &bench::ROWS)?;
    println!("{}", bench::table(&rows));
    Ok(())
}
