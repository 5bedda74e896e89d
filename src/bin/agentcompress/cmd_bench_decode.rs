//! `agentcompress bench decode`: prefill and greedy decode tokens/s of each variant of a real
//! model (`--model`) or of a synthetic model shape (`--preset`, default Llama-2-7B), beside the
//! floor set by reading every weight byte once per token at the device's measured copy
//! bandwidth (measured in the same run).

use crate::harness::decode_bench::{bytes_per_token, host_copy_gbps, random_variant};
use crate::harness::kernel_bench as bench;
use crate::harness::model_decode_bench::{time_interleaved, time_run, ModelSource, PrefillDecode};
use agentcompress::api::{Device, OpenBackend};
use agentcompress::backend::cpu::{CpuBackend, KvPrecision, Threading};
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::backend::Backend;
use agentcompress::engine::Model;
use agentcompress::model::synthetic;
use agentcompress::model::ModelWeights;
use agentcompress::quant::{Precision, QuantConfig, WeightMatrix};
use agentcompress::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `bench decode`.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// A real model to time (llama2.c `.bin`, GGUF, Hugging Face directory or variant
    /// directory) instead of a synthetic shape; variants other than a variant directory's are
    /// quantized from its weights first.
    #[arg(long, short = 'm', conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Model shape: a synthetic preset (tiny, small, llama2-7b, llama2-13b, llama3-8b, ...).
    #[arg(long)]
    pub preset: Option<String>,
    /// Variants to time, comma-separated (fp16,int8,int4,int2); default all four for a
    /// synthetic shape, fp16 for --model.
    #[arg(long)]
    pub precisions: Option<String>,
    /// Keep only the first N layers (e.g. a few 7B-shape layers on a small machine, or one
    /// layer to expose the per-token overhead).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub layers: Option<usize>,
    /// Timed greedy steps per run.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub steps: usize,
    /// Prompt tokens prefilled (one chunk) before the steps.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub prompt_tokens: usize,
    /// Timed runs per variant (each a fresh sequence); the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub repeats: usize,
    /// Untimed greedy steps of one run before the timed runs (0: none).
    #[arg(long, default_value_t = 4, value_parser = crate::numeric::count_or_zero, allow_negative_numbers = true)]
    pub warmup: usize,
    /// CPU: key/value cache precisions to time, comma-separated (f16,f32); every setup of
    /// --kv x --threading is timed on each variant, run by run interleaved.
    #[arg(long, default_value = "f16")]
    pub kv: String,
    /// CPU: how decode products are spread over threads, comma-separated (pool,rayon).
    #[arg(long, default_value = "pool")]
    pub threading: String,
}

/// The values of a comma-separated list flag.
fn list<T: std::str::FromStr<Err = Error>>(flag: &str, s: &str) -> Result<Vec<T>> {
    let v = s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<T>)
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        return Err(Error::invalid(format!("{flag} names nothing")));
    }
    Ok(v)
}

/// Runs the subcommand.
pub fn run(a: DecodeArgs) -> Result<()> {
    let default = if a.model.is_some() {
        "fp16"
    } else {
        "fp16,int8,int4,int2"
    };
    let precisions: Vec<Precision> =
        list("--precisions", a.precisions.as_deref().unwrap_or(default))?;
    let kvs: Vec<KvPrecision> = list("--kv", &a.kv)?;
    let threadings: Vec<Threading> = list("--threading", &a.threading)?;
    if a.layers == Some(0) {
        return Err(Error::invalid("--layers must be at least 1"));
    }
    let device = a.device.parse::<Device>()?;
    match device.open()? {
        OpenBackend::Cpu(_) => {
            if device == Device::Auto {
                println!("no CUDA device; timing the CPU backend");
            }
            let gbps = host_copy_gbps(3);
            println!("host copy bandwidth: {gbps:.1} GB/s (read + write)");
            let setups = kvs
                .iter()
                .flat_map(|&kv| {
                    threadings.iter().map(move |&t| {
                        (
                            format!("kv {kv}, {t}"),
                            CpuBackend::with_kv(kv).with_threading(t),
                        )
                    })
                })
                .collect();
            bench_all(setups, &a, &precisions, gbps)
        }
        OpenBackend::Cuda(be, _) => {
            let (_, gbps) = bench::copy_bandwidth(&be, 20)?;
            println!(
                "{}: copy bandwidth {gbps:.0} GB/s (read + write)",
                be.name()
            );
            let name = be.name();
            bench_all::<CudaBackend>(vec![(name, be)], &a, &precisions, gbps)
        }
    }
}

/// The weights of each variant, built on demand (a real model's dense weights are loaded once).
enum Weights<'a> {
    Real(ModelSource<'a>),
    Synthetic(agentcompress::model::ModelConfig),
}

impl Weights<'_> {
    fn variant(&self, p: Precision, a: &DecodeArgs) -> Result<ModelWeights<WeightMatrix>> {
        let qcfg = QuantConfig::default();
        match self {
            Weights::Real(src) => src.variant(p, &qcfg, a.layers),
            Weights::Synthetic(cfg) => random_variant(cfg, p, &qcfg, 42),
        }
    }
}

/// Times every variant on every backend setup (`(label, backend)`), interleaved.
fn bench_all<B: Backend + Clone>(
    setups: Vec<(String, B)>,
    a: &DecodeArgs,
    ps: &[Precision],
    copy_gbps: f64,
) -> Result<()> {
    let (weights, what) = match &a.model {
        Some(path) => (
            Weights::Real(ModelSource::open(path)?),
            path.display().to_string(),
        ),
        None => {
            let preset = a.preset.as_deref().unwrap_or("llama2-7b");
            let mut cfg = synthetic::preset(preset)?;
            if let Some(n) = a.layers {
                cfg.n_layers = n;
            }
            (Weights::Synthetic(cfg), format!("{preset} shape"))
        }
    };
    let mut rows: Vec<(PrefillDecode, String)> = Vec::new();
    let mut shape = String::new();
    for &p in ps {
        let t0 = Instant::now();
        let mut w = weights.variant(p, a)?;
        let need = a.prompt_tokens + a.steps.max(a.warmup);
        if matches!(weights, Weights::Synthetic(_)) {
            w.config.max_seq_len = need;
        }
        shape = format!("{} layers, dim {}", w.config.n_layers, w.config.dim);
        let build_s = t0.elapsed().as_secs_f64();
        let bytes = bytes_per_token(&w);
        let models = setups
            .iter()
            .map(|(_, be)| Model::new(be.clone(), &w))
            .collect::<Result<Vec<_>>>()?;
        drop(w);
        if a.warmup > 0 {
            for m in &models {
                time_run(m, a.prompt_tokens, a.warmup)?;
            }
        }
        let rs = time_interleaved(&models, p, bytes, a.prompt_tokens, a.steps, a.repeats)?;
        for (r, (label, _)) in rs.into_iter().zip(&setups) {
            println!(
                "{p} ({label}): prefill {:.1} tok/s, decode {:.1} tok/s (medians of {}; built in {build_s:.1} s)",
                r.prefill_tok_s, r.decode_tok_s, a.repeats
            );
            rows.push((r, label.clone()));
        }
    }
    println!(
        "\n{what} ({shape}) on {}: prefill of {} tokens, then {} greedy tokens; medians of {} interleaved runs",
        setups.first().map_or(String::new(), |(_, be)| be.name()),
        a.prompt_tokens,
        a.steps,
        a.repeats
    );
    print_table(&rows, copy_gbps);
    Ok(())
}

/// One markdown table: a row per variant and setup, its floor, its ratio to the FP16 row of
/// the same setup and to the same variant on the first setup.
pub fn print_table(rows: &[(PrefillDecode, String)], copy_gbps: f64) {
    println!(
        "| variant | MB/token | prefill tok/s | decode tok/s | ms/token | floor tok/s | % of floor | vs fp16 | setup | decode vs first setup |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for (r, label) in rows {
        let fp16 = rows
            .iter()
            .find(|(f, l)| f.precision == Precision::Fp16 && l == label)
            .map(|(f, _)| f.decode_tok_s);
        let first = rows
            .iter()
            .find(|(f, _)| f.precision == r.precision)
            .map(|(f, _)| f.decode_tok_s);
        let ratio =
            |base: Option<f64>| base.map_or("-".into(), |b| format!("{:.2}x", r.decode_tok_s / b));
        let floor = r.floor_tok_s(copy_gbps);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0}% | {} | {label} | {} |",
            r.precision,
            r.bytes_per_token as f64 / 1e6,
            r.prefill_tok_s,
            r.decode_tok_s,
            1e3 / r.decode_tok_s,
            floor,
            100.0 * r.decode_tok_s / floor,
            ratio(fp16),
            ratio(first),
        );
    }
}
