//! `agentcompress bench controller`: the controller's per-task overhead (median and p99), the
//! f32 and INT8 packed forms side by side on the same tasks.

use agentcompress::controller::{Controller, ControllerConfig, ControllerPrecision};
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
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub embed_dim: usize,
    /// Vocabulary of the (random) embedding table.
    #[arg(long, default_value_t = 512, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub vocab: usize,
    /// Timed predictions.
    #[arg(long, default_value_t = 200, value_parser = crate::numeric::count, allow_negative_numbers = true)]
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
    let mut rng = Rng::new(2);
    let table = rng.vec_uniform(a.vocab * a.embed_dim, 1.0);
    let tasks: Vec<Vec<u32>> = (0..a.iters + 5)
        .map(|_| {
            (0..cfg.k)
                .map(|_| rng.below(a.vocab as u64) as u32)
                .collect()
        })
        .collect();
    let head = format!(
        "controller '{}' ({} parameters, k = {}, {} threads)",
        a.config,
        c.param_count(),
        cfg.k,
        rayon::current_num_threads()
    );
    if a.unpacked {
        let mut times = Vec::with_capacity(a.iters);
        for (i, ids) in tasks.iter().enumerate() {
            let (out, dt) = timed(|| c.predict(&table, ids))?;
            std::hint::black_box(out);
            if i >= 5 {
                times.push(dt);
            }
        }
        println!(
            "{head}, cpu unpacked dot: median {:.3} ms, p99 {:.3} ms over {} tasks",
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            a.iters
        );
        return Ok(());
    }
    // Both forms on every task, alternating, so load changes hit them alike.
    let (f32c, int8c) = (
        c.packed_with(ControllerPrecision::F32),
        c.packed_with(ControllerPrecision::Int8),
    );
    let (mut tf, mut ti) = (Vec::with_capacity(a.iters), Vec::with_capacity(a.iters));
    let (mut worst, mut agree) = (0f32, 0usize);
    for (i, ids) in tasks.iter().enumerate() {
        let (f, dtf) = timed(|| f32c.predict(&table, ids))?;
        let (q, dti) = timed(|| int8c.predict(&table, ids))?;
        if i >= 5 {
            tf.push(dtf);
            ti.push(dti);
            worst = worst.max((f.complexity - q.complexity).abs());
            agree += usize::from(f.precision() == q.precision());
        }
    }
    let default = ControllerPrecision::detect();
    println!("{head}, default precision {}:", default.name());
    for (name, kernel, t) in [
        ("f32", f32c.gemm_path().name(), &tf),
        ("int8", int8c.int8_path().map_or("?", |p| p.name()), &ti),
    ] {
        println!(
            "  {name:<4} ({kernel}): median {:.3} ms, p99 {:.3} ms over {} tasks",
            quantile(t, 0.5),
            quantile(t, 0.99),
            a.iters
        );
    }
    println!(
        "  int8 / f32: median {:.3}, p99 {:.3}; max |complexity difference| {:.2e}, same argmax precision on {}/{} tasks",
        quantile(&ti, 0.5) / quantile(&tf, 0.5),
        quantile(&ti, 0.99) / quantile(&tf, 0.99),
        worst,
        agree,
        a.iters
    );
    Ok(())
}

/// The result of `f` and its wall time in milliseconds.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t0 = std::time::Instant::now();
    let out = f()?;
    Ok((out, t0.elapsed().as_secs_f64() * 1e3))
}
