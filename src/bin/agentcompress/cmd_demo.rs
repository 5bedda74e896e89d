//! `agentcompress demo`: route a small built-in workflow end to end on an embedded default, with
//! no download and no GPU: a seeded synthetic model in four (simulated) precisions, a controller
//! trained and a router calibrated on a few labelled workflows, then each stage of the demo
//! workflow routed, generated on the chosen variant and scored against FP16.

use agentcompress::api::Device;
use agentcompress::engine::{generate, GenerateParams, SamplingParams};
use agentcompress::eval::labels::measure;
use agentcompress::eval::workflows::{Stage, StageKind};
use agentcompress::eval::{run as run_eval, EvalConfig};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::{ByteTokenizer, Tokenizer};
use agentcompress::model::DType;
use agentcompress::router::{Residency, VariantSet};
use agentcompress::{Error, Result};
use clap::Args;

/// Route a built-in workflow on a seeded synthetic model (no files, no GPU needed).
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the synthetic model, the controller and its training.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Tokens to generate per stage.
    #[arg(short = 'n', long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Device: auto or cpu (the routed demo runs on the CPU backend).
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
    match args.device.parse::<Device>()? {
        Device::Auto | Device::Cpu => {}
        Device::Cuda(_) => {
            return Err(Error::Unsupported(
                "the routed demo runs its variants on the CPU backend".into(),
            ))
        }
    }
    let mut cfg = preset("tiny")?;
    cfg.max_seq_len = 256;
    let weights = synthetic_weights(&cfg, args.seed, DType::F32)?;
    let set = VariantSet::quantize(&weights, &agentcompress::quant::QuantConfig::default())?;
    let tok = ByteTokenizer;
    println!(
        "AgentCompress demo: synthetic LLaMA-shape model ({} layers, dim {}, {:.2}M parameters, seed {}), variants fp16/int8/int4/int2 at {:.2}/{:.2}/{:.2}/{:.2} of fp16's bytes (simulated quantisation)",
        cfg.n_layers,
        cfg.dim,
        cfg.parameter_count() as f64 / 1e6,
        args.seed,
        1.0,
        set.relative_bytes()[1],
        set.relative_bytes()[2],
        set.relative_bytes()[3]
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
    let (controller, router) = (&trained.controller, &trained.router);
    let mut res = Residency::new((1.5 * set.bytes[0] as f64) as u64, set.bytes)?;
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
        let mut ids = tok.encode(&st.text, true)?;
        ids.truncate(ecfg.max_prompt);
        let t = std::time::Instant::now();
        let out = controller.predict(&set.embedding, &ids)?;
        let d = router.decide(&out, &res);
        let overhead = t.elapsed().as_secs_f64() * 1e3;
        let swap = res.use_variant(d.precision);
        cost += router.cost(d.precision, swap);
        fp16_cost += router.cost(agentcompress::quant::Precision::Fp16, i == 0);
        let gen = generate(set.model(d.precision), &tok, &ids, &params, |_| true)?;
        let label = measure(&set, &ids, args.max_tokens.max(1))?;
        let q = label.quality[d.precision.index()];
        quality += q as f64;
        println!(
            "\nstage {} ({:?}): \"{}\"",
            i + 1,
            st.kind,
            st.text.replace('\n', " ")
        );
        println!(
            "  -> {} ({}), complexity {:.3}, controller {:.2} ms, generated {} tokens at {:.0} tokens/s, fidelity to fp16 {:.2}",
            d.precision,
            if swap { "swap" } else { "hit" },
            d.complexity,
            overhead,
            gen.ids.len(),
            gen.decode_tokens_per_s(),
            q
        );
        for r in &d.reasons {
            println!("     {r}");
        }
    }
    println!(
        "\nworkflow: cost {:.3} of running every stage on fp16 ({:.1}% saved, swaps included), mean fidelity {:.3}, swaps {}, hits {}",
        cost / fp16_cost,
        100.0 * (1.0 - cost / fp16_cost),
        quality / stages.len() as f64,
        res.swaps,
        res.hits
    );
    Ok(())
}
