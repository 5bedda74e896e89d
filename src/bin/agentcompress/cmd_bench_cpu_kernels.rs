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
    /// Shapes to time instead of the default ones, comma-separated `OUTxIN` (e.g. `576x576,49152x576`).
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Input row counts to time instead of 1, 8 and 64, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = crate::numeric::count)]
    rows: Vec<usize>,
}

/// Parses `OUTxIN` (both at least 1).
fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (o, i) = s
        .trim()
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not a shape OUTxIN (e.g. 576x576)"))?;
    Ok((crate::numeric::count(o)?, crate::numeric::count(i)?))
}

/// Runs the benchmark and prints its table.
pub fn run(a: Args) -> Result<()> {
    println!(
        "cpu-kernels: {} rayon threads, fastest of {} interleaved samples",
        rayon::current_num_threads(),
        a.iters.max(1)
    );
    let shapes = if !a.shapes.is_empty() {
        &a.shapes[..]
    } else if a.small_only {
        &bench::SHAPES[..4]
    } else {
        &bench::SHAPES[..]
    };
    let rows_list = if a.rows.is_empty() {
        &bench::ROWS[..]
    } else {
        &a.rows[..]
    };
    let rows = bench::run(a.iters.max(1), shapes, rows_list)?;
    println!("{}", bench::table(&rows));
    Ok(())
}
