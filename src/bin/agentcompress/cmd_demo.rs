//! `agentcompress demo`: route a small built-in workflow end to end on an embedded default, with
//! no download and no GPU: a seeded synthetic model quantised into a temporary variant
//! directory (packed FP16/INT8/INT4/INT2), a controller trained and a router calibrated on a
//! few labelled workflows and saved beside the variants, then an [`Engine`] over that directory
//! (memory budget 1.5 x FP16, prefetch on) runs each stage of the demo workflow: routed,
//! swapped in if needed, generated, and scored against FP16.

use agentcompress::api::{Device, Engine, CONTROLLER_FILE, ROUTER_FILE};
use agentcompress::engine::{GenerateParams, SamplingParams};
use agentcompress::eval::labels::measure;
use agentcompress::eval::workflows::{Stage, StageKind};
use agentcompress::eval::{run as run_eval, EvalConfig};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::ByteTokenizer;
use agentcompress::model::DType;
use agentcompress::pipeline::VariantSet;
use agentcompress::pipeline::{build_variants, BuildOptions};
use agentcompress::quant::{Method, Precision, QuantConfig};
use agentcompress::{Error, Result};
use clap::Args;

/// Route a built-in workflow on a seeded synthetic model (no files, no GPU needed).
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the synthetic model, the controller and its training.
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Tokens to generate per stage.
    #[arg(short = 'n', long, default_value_t = 16, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_tokens: usize,
    /// Device of the engine: auto, cpu, cuda or cuda:N (labels are measured on the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

fn demo_workflow() -> Vec<Stage> {
    let s = |kind, text: &str| Stage {
        kind,
        text: text.to_string(),
    };
    vec![
        s(StageKind::Planning, "Plan the steps to summarise a report: read it, list the main points, write two lines."),
        s(StageKind::Summarise, "Summarise: the delivery was late, the customer asked for a refund, the agent confirmed it."),
        s(StageKind::Reasoning, "If every late order gets a refund and this order is late, does it get a refund? Why?"),
        s(StageKind::Formatting, "Write as a list: - order: late\n- refund: yes\n- owner: the agent"),
        s(StageKind::Code, "fn refund(late: bool) -> bool { if late { return true; } false }"),
    ]
}

/// Runs the subcommand.
pub fn run(args: DemoArgs) -> Result<()> {
    let device = args.device.parse::<Device>()?;
    if let Device::Cuda(_) = device {
        // An explicit GPU that is not there fails now, not after the labelling work.
        device.resolve()?;
    }
    let mut cfg = preset("tiny")?;
    cfg.max_seq_len = 256;
    let weights = synthetic_weights(&cfg, args.seed, DType::F32)?;
    let dir = DemoDir::new()?;
    let quant = QuantConfig {
        method: Method::Rtn,
        ..QuantConfig::default()
    };
    let build = BuildOptions {
        quant,
        calibration: None,
        evaluation: None,
    };
    build_variants(
        &weights,
        "synthetic tiny",
        &dir.0,
        None,
        &build,
        &mut |_| {},
    )?;
    let set = VariantSet::open_dir(&dir.0, true)?;
    let tok = ByteTokenizer;
    let rel = set.relative_bytes();
    println!(
        "AgentCompress demo: synthetic LLaMA-shape model ({} layers, dim {}, {:.2}M parameters, seed {}), packed variants fp16/int8/int4/int2 ({}) at {:.2}/{:.2}/{:.2}/{:.2} of fp16's bytes",
        cfg.n_layers,
        cfg.dim,
        cfg.parameter_count() as f64 / 1e6,
        args.seed,
        set.formats,
        rel[Precision::Fp16],
        rel[Precision::Int8],
        rel[Precision::Int4],
        rel[Precision::Int2]
    );
    let mut ecfg = EvalConfig {
        workflows: 8,
        seed: args.seed,
        n_gen: 12,
        max_prompt: 48,
        threshold: 0.9,
        ..EvalConfig::default()
    };
    ecfg.train.iterations = 300;
    ecfg.train.batch = 8;
    ecfg.train.threshold = ecfg.threshold;
    let t0 = std::time::Instant::now();
    let trained = run_eval(&set, &tok, &ecfg, "synthetic tiny", None)?;
    println!(
        "controller ({} parameters) trained and router calibrated on {} labelled tasks in {:.1} s; quality target {:.2}",
        trained.controller.param_count(),
        trained.labels.tasks.len(),
        t0.elapsed().as_secs_f64(),
        ecfg.threshold
    );
    agentcompress::controller::io::save(&trained.controller, &dir.0.join(CONTROLLER_FILE))?;
    let router_json = serde_json::to_string_pretty(&trained.router)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let rp = dir.0.join(ROUTER_FILE);
    std::fs::write(&rp, router_json).map_err(|e| Error::io(&rp, e))?;
    let budget = (1.5 * set.bytes[Precision::Fp16] as f64) as u64;
    let engine = Engine::builder(&dir.0)
        .device(device)
        .tokenizer(Box::new(ByteTokenizer))
        .memory_budget(budget)
        .prefetch(true)
        .build()?;
    println!(
        "engine on {}: memory budget {budget} bytes (1.5 x fp16), prefetch on",
        engine.backend_name()
    );
    let params = GenerateParams {
        max_new_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        ..Default::default()
    };
    let (mut cost, mut fp16_cost, mut quality) = (0.0, 0.0, 0.0);
    let stages = demo_workflow();
    for (i, st) in stages.iter().enumerate() {
        let t = std::time::Instant::now();
        let r = engine.run(&st.text, &params, |_| true)?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let d = &r.route;
        cost += trained.router.cost(d.precision, false);
        fp16_cost += trained.router.cost(Precision::Fp16, i == 0);
        let ids = engine.encode(&st.text)?;
        let label = measure(&set, &ids, args.max_tokens.max(1))?;
        let q = label.quality[d.precision];
        quality += q as f64;
        println!(
            "\nstage {} ({:?}): \"{}\"",
            i + 1,
            st.kind,
            st.text.replace('\n', " ")
        );
        println!(
            "  -> {} ({}), complexity {:.3}, generated {} tokens at {:.0} tokens/s ({wall:.1} ms in all), fidelity to fp16 {:.2}",
            d.precision,
            if d.swap { "swap" } else { "hit" },
            d.complexity.unwrap_or(f32::NAN),
            r.output.ids.len(),
            r.output.decode_tokens_per_s(),
            q
        );
        for reason in &d.reasons {
            println!("     {reason}");
        }
    }
    let s = engine.stats();
    // Every load is charged, background prefetches included, at the router's swap price.
    let rc = &trained.router.config;
    cost += rc.swap_factor * (s.bytes_loaded as f64 / set.bytes[Precision::Fp16] as f64)
        / rc.task_bytes.max(1.0);
    println!(
        "\nworkflow: cost {:.3} of running every stage on fp16 ({:.1}% saved, every load included), mean fidelity {:.3}; swaps {}, hits {} (hit rate {:.2}), prefetches {} ({} used), {} bytes loaded in {:.1} ms",
        cost / fp16_cost,
        100.0 * (1.0 - cost / fp16_cost),
        quality / stages.len() as f64,
        s.swaps,
        s.hits,
        s.hit_rate(),
        s.prefetches,
        s.prefetch_hits,
        s.bytes_loaded,
        s.swap_seconds * 1e3
    );
    Ok(())
}

/// A temporary variant directory, removed when dropped.
struct DemoDir(std::path::PathBuf);

impl DemoDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("agentcompress-demo-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        Ok(DemoDir(p))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        // Best effort: a leftover temporary directory is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
