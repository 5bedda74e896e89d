//! `agentcompress bench decode`: prefill and greedy decode tokens/s of each variant of a real
//! model (`--model`) or of a synthetic model shape (`--preset`, default Llama-2-7B), beside the
//! floor set by reading every weight byte once per token at the device's measured copy
//! bandwidth (measured in the same run).

use crate::harness::decode_bench::{bytes_per_token, host_copy_gbps, random_variant};
use crate::harness::kernel_bench as bench;
use crate::harness::model_decode_bench::{time_prefill_decode, ModelSource, PrefillDecode};
use agentcompress::api::{Device, OpenBackend};
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
}

/// Runs the subcommand.
pub fn run(a: DecodeArgs) -> Result<()> {
    let default = if a.model.is_some() {
        "fp16"
    } else {
        "fp16,int8,int4,int2"
    };
    let precisions = a
        .precisions
        .as_deref()
        .unwrap_or(default)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<Precision>)
        .collect::<Result<Vec<_>>>()?;
    if precisions.is_empty() {
        return Err(Error::invalid("--precisions names no variant"));
    }
    if a.layers == Some(0) {
        return Err(Error::invalid("--layers must be at least 1"));
    }
    let device = a.device.parse::<Device>()?;
    match device.open()? {
        OpenBackend::Cpu(be) => {
            if device == Device::Auto {
                println!("no CUDA device; timing the CPU backend");
            }
            let gbps = host_copy_gbps(3);
            println!("host copy bandwidth: {gbps:.1} GB/s (read + write)");
            bench_all(be, &a, &precisions, gbps)
        }
        OpenBackend::Cuda(be, _) => {
            let (_, gbps) = bench::copy_bandwidth(&be, 20)?;
            println!(
                "{}: copy bandwidth {gbps:.0} GB/s (read + write)",
                be.name()
            );
            bench_all::<CudaBackend>(be, &a, &precisions, gbps)
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

fn bench_all<B: Backend + Clone>(
    be: B,
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
    let mut rows: Vec<PrefillDecode> = Vec::new();
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
        let model = Model::new(be.clone(), &w)?;
        drop(w);
        if a.warmup > 0 {
            time_prefill_decode(&model, p, bytes, a.prompt_tokens, a.warmup, 1)?;
        }
        let r = time_prefill_decode(&model, p, bytes, a.prompt_tokens, a.steps, a.repeats)?;
        println!(
            "{p}: prefill {:.1} tok/s, decode {:.1} tok/s (medians of {}; built in {build_s:.1} s)",
            r.prefill_tok_s, r.decode_tok_s, a.repeats
        );
        rows.push(r);
    }
    println!(
        "\n{what} ({shape}) on {}: prefill of {} tokens, then {} greedy tokens; medians of {} runs",
        be.name(),
        a.prompt_tokens,
        a.steps,
        a.repeats
    );
    print_table(&rows, copy_gbps);
    Ok(())
}

/// One markdown table: a row per variant, its floor and its ratio to the FP16 row.
pub fn print_table(rows: &[PrefillDecode], copy_gbps: f64) {
    println!(
        "| variant | MB/token | prefill tok/s | decode tok/s | ms/token | floor tok/s | % of floor | vs fp16 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let fp16 = rows
        .iter()
        .find(|r| r.precision == Precision::Fp16)
        .map(|r| r.decode_tok_s);
    for r in rows {
        let floor = r.floor_tok_s(copy_gbps);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0}% | {} |",
            r.precision,
            r.bytes_per_token as f64 / 1e6,
            r.prefill_tok_s,
            r.decode_tok_s,
            1e3 / r.decode_tok_s,
            floor,
            100.0 * r.decode_tok_s / floor,
            fp16.map_or("-".into(), |f| format!("{:.2}x", r.decode_tok_s / f))
        );
    }
}
