//! `agentcompress train-controller`: label workflows on the model's variants (or reuse a labels
//! file), train the controller with first-order MAML across domains, calibrate the router, and
//! write `controller.safetensors`, `router.json` and `loss.csv`.

use crate::cmd_eval::VariantArgs;
use agentcompress::controller::{io, Controller, ControllerConfig};
use agentcompress::eval::labels::LabelSet;
use agentcompress::eval::workflow_bench::{fit, gather_all, label_workflows};
use agentcompress::eval::workflows::generate;
use agentcompress::eval::EvalConfig;
use agentcompress::{Error, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Train the complexity controller and calibrate the router.
#[derive(Args, Debug)]
pub struct TrainControllerArgs {
    #[command(flatten)]
    pub variants: VariantArgs,
    /// Workflows to label (ignored with --labels).
    #[arg(long, default_value_t = 290, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub workflows: usize,
    /// Seed of workflows, initialisation and training.
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Reuse a labels file (from `eval` or an earlier run).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Meta-iterations.
    #[arg(long, default_value_t = 8700, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub iterations: usize,
    /// Batch size (support and query).
    #[arg(long, default_value_t = 16, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub batch: usize,
    /// Controller configuration: small or reference.
    #[arg(long, default_value = "small")]
    pub controller: String,
    /// Outer (Adam) learning rate of controller training.
    #[arg(long, default_value_t = 1e-3, value_parser = crate::numeric::positive_f32, allow_negative_numbers = true)]
    pub lr: f32,
    /// Quality threshold of the loss and router target.
    #[arg(long, default_value_t = 0.95, value_parser = crate::numeric::fraction, allow_negative_numbers = true)]
    pub threshold: f32,
    /// Weight of cost in the loss.
    #[arg(long, default_value_t = 0.3, value_parser = crate::numeric::non_negative_f32, allow_negative_numbers = true)]
    pub w_cost: f32,
    /// Weight of the quality shortfall in the loss.
    #[arg(long, default_value_t = 0.7, value_parser = crate::numeric::non_negative_f32, allow_negative_numbers = true)]
    pub w_quality: f32,
    /// Output directory.
    #[arg(long, default_value = "controller-out")]
    pub out: PathBuf,
}

/// Runs the subcommand.
pub fn run(a: TrainControllerArgs) -> Result<()> {
    single_threaded_candle();
    if !cfg!(feature = "train") {
        return Err(Error::Unsupported(
            "train-controller needs the `train` cargo feature (candle); rebuild without --no-default-features".into(),
        ));
    }
    let (set, tok, name) = a.variants.open()?;
    let mut cfg = EvalConfig {
        workflows: a.workflows,
        seed: a.seed,
        threshold: a.threshold,
        controller: a.controller.clone(),
        ..EvalConfig::default()
    };
    cfg.train.iterations = a.iterations;
    cfg.train.outer_lr = a.lr;
    cfg.train.batch = a.batch;
    cfg.train.threshold = a.threshold;
    cfg.train.w_cost = a.w_cost;
    cfg.train.w_quality = a.w_quality;
    cfg.train.seed = a.seed;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let labels = match &a.labels {
        Some(p) => LabelSet::load(p)?,
        None => {
            eprintln!("labelling {} workflows on {name}...", a.workflows);
            let wfs = generate(a.workflows, a.seed);
            let l = label_workflows(&set, tok.as_ref(), &wfs, cfg.n_gen, cfg.max_prompt, &name)?;
            l.save(&a.out.join("labels.json"))?;
            l
        }
    };
    let base = Controller::new(
        ControllerConfig::named(&a.controller, set.config.dim)?,
        a.seed,
    )?;
    eprintln!(
        "controller '{}': {} parameters; {} labelled tasks",
        a.controller,
        base.param_count(),
        labels.tasks.len()
    );
    let gathered = gather_all(&set, &base, &labels)?;
    let idx: Vec<usize> = (0..labels.tasks.len()).collect();
    let total = a.iterations.max(1);
    let (controller, router, curve) =
        fit(&set, &labels, &base, &gathered, &idx, &cfg, |it, loss| {
            let width = 40;
            let done = it * width / total;
            eprint!(
                "\r[{}{}] {it}/{total} loss {loss:.4}",
                "#".repeat(done),
                ".".repeat(width - done)
            );
            let _ = std::io::stderr().flush();
        })?;
    eprintln!();
    io::save(&controller, &a.out.join("controller.safetensors"))?;
    let json = serde_json::to_string_pretty(&router).map_err(|e| Error::Internal(e.to_string()))?;
    let rp = a.out.join("router.json");
    std::fs::write(&rp, json).map_err(|e| Error::io(&rp, e))?;
    let mut csv = String::from("iteration,loss\n");
    for (i, l) in &curve.curve {
        csv.push_str(&format!("{i},{l}\n"));
    }
    let lp = a.out.join("loss.csv");
    std::fs::write(&lp, csv).map_err(|e| Error::io(&lp, e))?;
    if let (Some(first), Some(last)) = (curve.curve.first(), curve.curve.last()) {
        println!(
            "loss {:.4} -> {:.4} over {} iterations",
            first.1, last.1, last.0
        );
    }
    println!(
        "wrote controller.safetensors, router.json, loss.csv to {}",
        a.out.display()
    );
    Ok(())
}

/// Runs candle's CPU kernels on one thread unless `CANDLE_NUM_THREADS` says otherwise: the
/// controller's matrices are small, and candle's spinning thread barrier costs more than the
/// work it splits (a third of the training time on two cores). Called before any thread
/// starts, so setting the variable races with nothing.
pub fn single_threaded_candle() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
