//! `agentcompress bench decode`: whole-model greedy decode tokens/s of each variant of a named
//! model shape (default Llama-2-7B), beside the floor set by reading every weight byte once per
//! token at the device's measured copy bandwidth (measured in the same run).

use crate::harness::decode_bench::{
    bytes_per_token, host_copy_gbps, random_variant, time_decode, DecodeResult,
};
use crate::harness::kernel_bench as bench;
use agentcompress::api::{Device, OpenBackend};
use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::engine::Model;
use agentcompress::model::synthetic;
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::{Error, Result};
use std::time::Instant;

/// Arguments of `bench decode`.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Model shape: a synthetic preset (tiny, small, llama2-7b, llama2-13b, llama3-8b, ...).
    #[arg(long, default_value = "llama2-7b")]
    pub preset: String,
    /// Variants to time, comma-separated (fp16,int8,int4,int2).
    #[arg(long, default_value = "fp16,int8,int4,int2")]
    pub precisions: String,
    /// Override the preset's layer count (e.g. a few 7B-shape layers on a small machine).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub layers: Option<usize>,
    /// Timed greedy steps per variant.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub steps: usize,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 4, value_parser = crate::numeric::count_or_zero, allow_negative_numbers = true)]
    pub warmup: usize,
}

/// Runs the subcommand.
pub fn run(a: DecodeArgs) -> Result<()> {
    let precisions = a
        .precisions
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<Precision>)
        .collect::<Result<Vec<_>>>()?;
    if precisions.is_empty() {
        return Err(Error::invalid("--precisions names no variant"));
    }
    let device = a.device.parse::<Device>()?;
    match device.open()? {
        OpenBackend::Cpu(_) => {
            if device == Device::Auto {
                println!("no CUDA device; timing the CPU backend");
            }
            on_cpu(&a, &precisions)
        }
        OpenBackend::Cuda(be, _) => on_cuda(be, &a, &precisions),
    }
}

fn on_cpu(a: &DecodeArgs, ps: &[Precision]) -> Result<()> {
    let gbps = host_copy_gbps(3);
    println!("host copy bandwidth: {gbps:.1} GB/s (read + write)");
    bench_all(CpuBackend::new(), a, ps, gbps)
}

fn on_cuda(be: CudaBackend, a: &DecodeArgs, ps: &[Precision]) -> Result<()> {
    let (_, gbps) = bench::copy_bandwidth(&be, 20)?;
    println!(
        "{}: copy bandwidth {gbps:.0} GB/s (read + write)",
        be.name()
    );
    bench_all(be, a, ps, gbps)
}

fn bench_all<B: Backend + Clone>(
    be: B,
    a: &DecodeArgs,
    ps: &[Precision],
    copy_gbps: f64,
) -> Result<()> {
    let mut cfg = synthetic::preset(&a.preset)?;
    cfg.max_seq_len = cfg.max_seq_len.min(16 + a.warmup + a.steps);
    if let Some(n) = a.layers {
        if n == 0 {
            return Err(Error::invalid("--layers must be at least 1"));
        }
        cfg.n_layers = n;
    }
    let qcfg = QuantConfig::default();
    let mut rows: Vec<(DecodeResult, f64)> = Vec::new();
    for &p in ps {
        let t0 = Instant::now();
        let w = random_variant(&cfg, p, &qcfg, 42)?;
        let bytes = bytes_per_token(&w);
        let model = Model::new(be.clone(), &w)?;
        drop(w);
        let build_s = t0.elapsed().as_secs_f64();
        let r = time_decode(&model, p, bytes, a.warmup, a.steps)?;
        println!(
            "{p}: {:.1} tok/s ({} steps; built and uploaded in {build_s:.1} s)",
            r.tokens_per_s(),
            r.steps
        );
        rows.push((r, build_s));
    }
    println!(
        "\nwhole-model decode, {} shape ({} layers, dim {}), {} on {}",
        a.preset,
        cfg.n_layers,
        cfg.dim,
        if ps.len() == 1 {
            "one variant"
        } else {
            "each variant"
        },
        be.name()
    );
    println!(
        "| variant | MB/token | ms/token | tok/s | weight GB/s | floor tok/s | % of floor | vs fp16 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let fp16 = rows
        .iter()
        .find(|(r, _)| r.precision == Precision::Fp16)
        .map(|(r, _)| r.tokens_per_s());
    for (r, _) in &rows {
        let floor = r.floor_tokens_per_s(copy_gbps);
        println!(
            "| {} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} | {:.0}% | {} |",
            r.precision,
            r.bytes_per_token as f64 / 1e6,
            r.seconds_per_token * 1e3,
            r.tokens_per_s(),
            r.gbps(),
            floor,
            100.0 * r.tokens_per_s() / floor,
            fp16.map_or("-".into(), |f| format!("{:.2}x", r.tokens_per_s() / f))
        );
    }
    Ok(())
}
