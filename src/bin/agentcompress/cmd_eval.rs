//! `agentcompress eval`: the workflow benchmark (see `agentcompress::eval`).

use agentcompress::api::variant_tokenizer;
use agentcompress::controller::train::TrainConfig;
use agentcompress::eval::labels::LabelSet;
use agentcompress::eval::speculation::DEFAULT_DRAFT_LEN;
use agentcompress::eval::{report, workflow_bench as bench, workflows, EvalConfig};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::{load_tokenizer, ByteTokenizer, Tokenizer, BYTE_VOCAB};
use agentcompress::model::DType;
use agentcompress::pipeline::SelfText;
use agentcompress::pipeline::VariantSet;
use agentcompress::quant::QuantConfig;
use agentcompress::store::MANIFEST_FILE;
use agentcompress::{Error, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Which model's variants to use and how to tokenise task text.
#[derive(Args, Debug, Clone)]
pub struct VariantArgs {
    /// Model file (llama2.c `.bin`, quantised in memory to packed INT8/INT4/INT2 with
    /// `--method`), or a variant directory written by `agentcompress quantize` (its four
    /// `.acv` files are loaded as they are).
    #[arg(long, short = 'm', conflicts_with = "synthetic")]
    pub model: Option<PathBuf>,
    /// Quantisation method of the in-memory variants: rtn, als or gptq (the most accurate at
    /// INT4/INT2 on stories260K); als and gptq are calibrated on `--calib-seqs` sequences the
    /// FP16 model samples from BOS, never on the benchmark's tasks.
    #[arg(long, default_value = "gptq")]
    pub method: String,
    /// INT4 group size of the in-memory variants (rows shorter than it form one group). 32
    /// costs 3% more INT4 bytes than 128 on stories260K and raises its top-1 agreement.
    #[arg(long, default_value_t = 32, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub int4_group: usize,
    /// INT2 group size of the in-memory variants (32 is both smaller, with the compact INT2
    /// parameters, and more accurate than 64 on stories260K).
    #[arg(long, default_value_t = 32, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub int2_group: usize,
    /// Calibration sequences (128 tokens each) for als and gptq.
    #[arg(long, default_value_t = 16, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub calib_seqs: usize,
    /// Use a seeded synthetic model of this preset instead (`tiny`, `small`, ...).
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Tokenizer file; default: the one beside the model. When it cannot be loaded, task text is
    /// encoded byte by byte (llama2.c `<0xNN>` ids).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl VariantArgs {
    /// Opens the variants and a tokenizer; returns them with a description of the model.
    pub fn open(&self) -> Result<(VariantSet, Box<dyn Tokenizer>, String)> {
        if let Some(dir) = self
            .model
            .as_deref()
            .filter(|p| p.join(MANIFEST_FILE).is_file())
        {
            let set = VariantSet::open_dir(dir, true)?;
            let tok = match &self.tokenizer {
                Some(p) => load_tokenizer(p)?,
                None => variant_tokenizer(dir)?.ok_or_else(|| {
                    Error::invalid(format!(
                        "{} carries no tokenizer: pass --tokenizer",
                        dir.display()
                    ))
                })?,
            };
            return Ok((set, tok, dir.display().to_string()));
        }
        let (weights, name) = match (&self.model, &self.synthetic) {
            (Some(p), _) => (
                agentcompress::model::load::load_model(p)?,
                p.display().to_string(),
            ),
            (None, Some(name)) => {
                let mut cfg = preset(name)?;
                cfg.vocab_size = cfg.vocab_size.max(BYTE_VOCAB);
                cfg.max_seq_len = cfg.max_seq_len.min(256);
                (
                    synthetic_weights(&cfg, 7, DType::F32)?,
                    format!("synthetic {name}"),
                )
            }
            (None, None) => return Err(Error::invalid("give --model FILE or --synthetic PRESET")),
        };
        let tok_path = self.tokenizer.clone().or_else(|| {
            self.model
                .as_deref()
                .and_then(agentcompress::model::load::find_tokenizer)
        });
        let tok: Box<dyn Tokenizer> = match tok_path.as_deref().map(load_tokenizer) {
            Some(Ok(t)) => t,
            other => {
                match other {
                    Some(Err(e)) => eprintln!("note: {e}; encoding task text byte by byte"),
                    _ => eprintln!(
                        "note: no tokenizer given or found; encoding task text byte by byte"
                    ),
                }
                if weights.config.vocab_size < BYTE_VOCAB {
                    return Err(Error::invalid(format!(
                        "the model's vocabulary of {} is too small for byte encoding and no tokenizer loaded",
                        weights.config.vocab_size
                    )));
                }
                Box::new(ByteTokenizer)
            }
        };
        let quant = QuantConfig {
            method: self.method.parse()?,
            int4_group: self.int4_group,
            int2_group: self.int2_group,
            ..QuantConfig::default()
        };
        quant.validate()?;
        let set = if self.calib_seqs == 0 {
            VariantSet::quantize(&weights, &quant)?
        } else {
            // The same calibration text `agentcompress quantize` uses by default.
            let text = SelfText {
                n_seqs: self.calib_seqs,
                len: 128,
                seed: 1007,
            };
            VariantSet::quantize_calibrated(&weights, &quant, text)?
        };
        Ok((set, tok, name))
    }
}

/// Run the multi-stage workflow benchmark and write its report.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub variants: VariantArgs,
    /// Workflows to generate.
    #[arg(long, default_value_t = 290, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub workflows: usize,
    /// Seed of everything random.
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Tokens generated per task when labelling.
    #[arg(long, default_value_t = 20, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub n_gen: usize,
    /// Controller training iterations.
    #[arg(long, default_value_t = 2000, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub iterations: usize,
    /// Controller configuration: small or reference.
    #[arg(long, default_value = "small")]
    pub controller: String,
    /// Outer (Adam) learning rate of controller training.
    #[arg(long, default_value_t = 1e-3, value_parser = crate::numeric::positive_f32, allow_negative_numbers = true)]
    pub lr: f32,
    /// Weight of the complexity regression term of the training loss.
    #[arg(long, default_value_t = 1.0, value_parser = crate::numeric::non_negative_f32, allow_negative_numbers = true)]
    pub w_complexity: f32,
    /// Quality threshold (fidelity to FP16) and router target.
    #[arg(long, default_value_t = 0.95, value_parser = crate::numeric::fraction, allow_negative_numbers = true)]
    pub threshold: f32,
    /// Device capacity as a multiple of the FP16 variant's size.
    #[arg(long, default_value_t = 1.5, value_parser = crate::numeric::positive_f64, allow_negative_numbers = true)]
    pub capacity: f64,
    /// Cost of a swap per byte relative to a byte read by compute.
    #[arg(long, default_value_t = 50.0, value_parser = crate::numeric::non_negative_f64, allow_negative_numbers = true)]
    pub swap_factor: f64,
    /// Reuse a labels file written by an earlier run (same workflows and seed); with
    /// `--chat-tasks`, a `chat_labels.json` of the same seed (any number of tasks: the rest
    /// are labelled).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// Run the checkable chat task suite with this many tasks instead of the workflow
    /// benchmark: every variant answers each task greedily, its answer is checked (task
    /// success) and its fidelity to FP16 measured over `--n-gen` tokens; then the controller
    /// is trained on these labels (`--iterations` per split) and its routing frontier written
    /// (`chat_route.md`, `chat_frontier.svg`). Needs a tokenizer with a chat template (a
    /// variant directory of an instruct GGUF model); routing needs more than 30 tasks (the
    /// in-domain split tests on the fourth and fifth block of ten).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub chat_tasks: Option<usize>,
    /// With --chat-tasks: folds of the router's calibration. With k >= 2, k controllers each
    /// trained without one k-th of the training tasks predict it, and the router's quality
    /// bins (and the target set for the 96% goal) are calibrated on those out-of-fold
    /// predictions, which are distributed like the test tasks'; 0 or 1 calibrates on the
    /// controller's own predictions for the tasks it was trained on. Each fold is one more
    /// training per split; folds train in parallel.
    #[arg(long, requires = "chat_tasks", default_value_t = 3, value_parser = crate::numeric::count_or_zero, allow_negative_numbers = true)]
    pub calibration_folds: usize,
    /// With --chat-tasks: replay the controller's routes without prefetching (by default the
    /// variant the router expects next is loaded ahead after each task, as the engine does
    /// with prefetching on).
    #[arg(long, requires = "chat_tasks")]
    pub no_prefetch: bool,
    /// Most tokens of each variant's answer in the chat task suite.
    #[arg(long, default_value_t = 48, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub max_answer: usize,
    /// Also serve the controller's hard tasks (routed to FP16 or INT8) through greedy
    /// speculation from a cheaper variant resident at that point of the replay, and report
    /// their cost and the whole benchmark's with and without it (identical outputs, checked).
    #[arg(long, conflicts_with = "chat_tasks")]
    pub speculate: bool,
    /// With --speculate: draft tokens per verify (fixed, so the byte counts do not depend on
    /// timing).
    #[arg(long, requires = "speculate", default_value_t = DEFAULT_DRAFT_LEN, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub draft_len: usize,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Runs the subcommand.
pub fn run(a: EvalArgs) -> Result<()> {
    if let Some(n) = a.chat_tasks {
        return crate::cmd_eval_chat::run(&a, n);
    }
    crate::cmd_train_controller::single_threaded_candle();
    if !cfg!(feature = "train") {
        return Err(Error::Unsupported(
            "eval trains the controller and needs the `train` cargo feature (candle); rebuild without --no-default-features".into(),
        ));
    }
    let t0 = std::time::Instant::now();
    let (set, tok, name) = a.variants.open()?;
    let mut cfg = EvalConfig {
        workflows: a.workflows,
        seed: a.seed,
        n_gen: a.n_gen,
        threshold: a.threshold,
        controller: a.controller.clone(),
        capacity: a.capacity,
        swap_factor: a.swap_factor,
        speculation: a.speculate.then_some(a.draft_len),
        ..EvalConfig::default()
    };
    cfg.train.iterations = a.iterations;
    cfg.train.outer_lr = a.lr;
    cfg.train.w_complexity = a.w_complexity;
    cfg.train.threshold = a.threshold;
    cfg.train.seed = a.seed;
    let labels = a.labels.as_deref().map(LabelSet::load).transpose()?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    eprintln!(
        "eval: {} workflows on {name} ({}), labelling and training...",
        a.workflows, set.formats
    );
    let full = TrainConfig::default().iterations;
    if a.iterations < full {
        eprintln!(
            "note: the controller trains for {} iterations per split here, fewer than the {full} of train-controller, to keep the benchmark short (--iterations)",
            a.iterations
        );
    }
    let out = bench::run(&set, tok.as_ref(), &cfg, &name, labels)?;
    workflows::write(&a.out.join("workflows.jsonl"), &out.workflows)?;
    out.labels.save(&a.out.join("labels.json"))?;
    agentcompress::controller::io::save(&out.controller, &a.out.join("controller.safetensors"))?;
    let router =
        serde_json::to_string_pretty(&out.router).map_err(|e| Error::Internal(e.to_string()))?;
    write(&a.out.join("router.json"), &router)?;
    let json =
        serde_json::to_string_pretty(&out.report).map_err(|e| Error::Internal(e.to_string()))?;
    write(&a.out.join("report.json"), &json)?;
    let mut csv = String::from("iteration,loss\n");
    for (i, l) in &out.report.in_domain.curve.curve {
        csv.push_str(&format!("{i},{l}\n"));
    }
    write(&a.out.join("loss.csv"), &csv)?;
    let md = report::markdown(&out.report);
    write(&a.out.join("report.md"), &md)?;
    write(&a.out.join("plot.svg"), &report::svg(&out.report))?;
    println!("{md}");
    println!(
        "labelling {:.1} s, total {:.1} s; outputs in {}",
        out.report.label_seconds,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
