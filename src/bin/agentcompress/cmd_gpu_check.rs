//! `agentcompress gpu-check`: every differential check of the CUDA backend against the CPU
//! oracle (kernels at aligned and odd sizes, whole models), one table, non-zero exit on failure.

use crate::harness::check;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::{Error, Result};
use std::path::PathBuf;

/// Arguments of `gpu-check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0, value_parser = crate::numeric::index, allow_negative_numbers = true)]
    pub device: usize,
    /// Path of stories260K.bin (default: searched in .gpu/, shared/models/, ../shared/models/).
    #[arg(long)]
    pub stories: Option<PathBuf>,
    /// Seed of every random input.
    #[arg(long, default_value_t = 20261127, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    pub seed: u64,
}

/// Runs the checks and prints the table; an error when any check failed.
pub fn run(args: Args) -> Result<()> {
    let t0 = std::time::Instant::now();
    let be = CudaBackend::new(args.device)?;
    println!("device: {}", be.name());
    println!(
        "kernels ready in {:.2} s (NVRTC {:?})",
        t0.elapsed().as_secs_f64(),
        agentcompress::backend::cuda::nvrtc::version().ok()
    );
    let rep = check::run_all(&be, args.stories.as_deref(), args.seed);
    println!("{}", rep.table());
    println!("{}", rep.failures());
    println!("{}", rep.summary());
    let (failed, skipped) = (
        rep.failed(),
        rep.rows
            .iter()
            .filter(|r| r.status == check::Status::Skip)
            .count(),
    );
    println!(
        "gpu-check: {} checks, {} failed, {} skipped, {:.1} s",
        rep.rows.len(),
        failed,
        skipped,
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 {
        return Err(Error::Cuda(format!(
            "{failed} differential check(s) failed"
        )));
    }
    Ok(())
}
