//! `agentcompress bench controller`: the controller's per-task overhead (median and p99).

use agentcompress::controller::{Controller, ControllerConfig};
use agentcompress::eval::metrics::quantile;
use agentcompress::util::rng::Rng;
use agentcompress::{Error, Result};
use clap::{Args, Subcommand};

/// Benchmarks.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// What to benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Controller inference latency over k-token tasks.
    Controller(ControllerBenchArgs),
}

/// Settings of the controller benchmark.
#[derive(Args, Debug)]
pub struct ControllerBenchArgs {
    /// Configuration: reference or small.
    #[arg(long, default_value = "reference")]
    pub config: String,
    /// Width of the served model's embeddings.
    #[arg(long, default_value_t = 64)]
    pub embed_dim: usize,
    /// Vocabulary of the (random) embedding table.
    #[arg(long, default_value_t = 512)]
    pub vocab: usize,
    /// Timed predictions.
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// Device: cpu (the packed CPU path), or cuda, cuda:N or cpu-backend (the controller
    /// over the Backend trait, see `cmd_bench_controller_device`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Time the unpacked training-form forward instead of the packed inference form.
    #[arg(long)]
    pub unpacked: bool,
}

/// Runs the subcommand.
pub fn run(a: BenchArgs) -> Result<()> {
    let BenchWhat::Controller(a) = a.what;
    if a.device != "cpu" {
        return crate::cmd_bench_controller_device::run(&a);
    }
    if a.iters == 0 || a.vocab == 0 {
        return Err(Error::invalid("--iters and --vocab must be non-zero"));
    }
    let cfg = ControllerConfig::named(&a.config, a.embed_dim)?;
    let c = Controller::new(cfg.clone(), 1)?;
    let packed = c.packed();
    let mut rng = Rng::new(2);
    let table = rng.vec_uniform(a.vocab * a.embed_dim, 1.0);
    let mut times = Vec::with_capacity(a.iters);
    for i in 0..a.iters + 5 {
        let ids: Vec<u32> = (0..cfg.k)
            .map(|_| rng.below(a.vocab as u64) as u32)
            .collect();
        let t0 = std::time::Instant::now();
        let out = if a.unpacked {
            c.predict(&table, &ids)?
        } else {
            packed.predict(&table, &ids)?
        };
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(out);
        if i >= 5 {
            times.push(dt);
        }
    }
    println!(
        "controller '{}' ({} parameters, k = {}, cpu {}, {} threads): median {:.3} ms, p99 {:.3} ms over {} tasks",
        a.config,
        c.param_count(),
        cfg.k,
        if a.unpacked {
            "unpacked dot"
        } else {
            packed.gemm_path().name()
        },
        rayon::current_num_threads(),
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        a.iters
    );
    Ok(())
}
