//! `agentcompress bench controller --device cuda[:N]|cpu-backend`: the per-task overhead of the
//! controller written over the `Backend` trait (`DeviceController`): token ids in, prediction
//! on the host out, so each timed task includes the token copy, every kernel and the final
//! read-back with its synchronisation.

use crate::cmd_bench_controller::ControllerBenchArgs;
use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::controller::{Controller, ControllerConfig, DeviceController};
use agentcompress::eval::metrics::quantile;
use agentcompress::util::rng::Rng;
use agentcompress::{Error, Result};

/// Which backend `--device` names (anything but `cpu`, the packed CPU path).
enum Target {
    /// The CPU backend through the trait (the oracle of the CUDA path).
    CpuBackend,
    /// CUDA device `ordinal`.
    Cuda(usize),
}

fn parse(device: &str) -> Result<Target> {
    match device {
        "cpu-backend" => Ok(Target::CpuBackend),
        "cuda" => Ok(Target::Cuda(0)),
        _ => match device.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => Ok(Target::Cuda(n)),
            _ => Err(Error::invalid(format!(
                "unknown controller device '{device}' (expected cpu, cpu-backend, cuda or cuda:N)"
            ))),
        },
    }
}

/// Times the backend controller on the device `a.device` names.
pub fn run(a: &ControllerBenchArgs) -> Result<()> {
    let target = parse(&a.device)?;
    if a.iters == 0 || a.vocab == 0 {
        return Err(Error::invalid("--iters and --vocab must be non-zero"));
    }
    match target {
        Target::CpuBackend => time(CpuBackend::new(), "f32 weights", a),
        Target::Cuda(n) => {
            let be = CudaBackend::new(n).map_err(|e| match e {
                Error::NoDevice(m) => Error::NoDevice(format!(
                    "bench controller --device {} needs a CUDA GPU: {m}",
                    a.device
                )),
                other => other,
            })?;
            time(be, "FP16 weights, f32 activations", a)
        }
    }
}

fn time<B: Backend>(be: B, precision: &str, a: &ControllerBenchArgs) -> Result<()> {
    let cfg = ControllerConfig::named(&a.config, a.embed_dim)?;
    let c = Controller::new(cfg.clone(), 1)?;
    let mut rng = Rng::new(2);
    let table = rng.vec_uniform(a.vocab * a.embed_dim, 1.0);
    let name = be.name();
    let t0 = std::time::Instant::now();
    let dc = DeviceController::new(be, &c, &table)?;
    let upload_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(a.iters);
    for i in 0..a.iters + 5 {
        let ids: Vec<u32> = (0..cfg.k)
            .map(|_| rng.below(a.vocab as u64) as u32)
            .collect();
        let t0 = std::time::Instant::now();
        let out = dc.predict(&ids)?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(out);
        if i >= 5 {
            times.push(dt);
        }
    }
    println!(
        "controller '{}' ({} parameters, k = {}, backend {name}, {precision}; upload {upload_ms:.1} ms): median {:.3} ms, p99 {:.3} ms over {} tasks",
        a.config,
        c.param_count(),
        cfg.k,
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        a.iters
    );
    Ok(())
}
