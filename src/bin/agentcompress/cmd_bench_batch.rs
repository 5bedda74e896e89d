//! `agentcompress bench batch`: output tokens/s of continuous batching at several batch sizes,
//! each against one sequence decoding alone in the same run: N sequences joined with prompts of
//! the same length (prefilled in one untimed step), then greedy steps of all N together (one
//! multi-row pass per step).

use crate::harness::decode_bench::random_variant;
use crate::harness::ids_tokenizer::IdsOnly;
use crate::harness::model_decode_bench::{bench_prompt, median, ModelSource};
use agentcompress::api::{Device, OpenBackend};
use agentcompress::backend::Backend;
use agentcompress::engine::{BatchDecoder, GenerateParams, Model};
use agentcompress::model::synthetic;
use agentcompress::model::tokenizer::Tokenizer;
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `bench batch`.
#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// The model (llama2.c `.bin`, GGUF, Hugging Face directory or variant directory).
    #[arg(
        long,
        short = 'm',
        required_unless_present = "preset",
        conflicts_with = "preset"
    )]
    pub model: Option<PathBuf>,
    /// A synthetic model shape instead (tiny, small, llama2-7b, ...; random weights).
    #[arg(long)]
    pub preset: Option<String>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Variants to time, comma-separated (fp16,int8,int4,int2).
    #[arg(long, default_value = "fp16")]
    pub precisions: String,
    /// Batch sizes, comma-separated; 1 is always timed as the baseline.
    #[arg(long, default_value = "1,4,16")]
    pub rows: String,
    /// Prompt tokens of each sequence.
    #[arg(long, default_value_t = 32, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub prompt_tokens: usize,
    /// Timed steps per run (each yields one token per sequence).
    #[arg(long, default_value_t = 32, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub steps: usize,
    /// Timed runs per batch size (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub repeats: usize,
    /// Also time a speculative verify of this many drafted tokens: one sequence's forward of
    /// K + 1 rows with every row's logits (what the target runs per verify), against its
    /// one-row greedy step at the same position.
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub verify: Option<usize>,
}

/// Runs the subcommand.
pub fn run(a: BatchArgs) -> Result<()> {
    let precisions = a
        .precisions
        .split(',')
        .map(|s| s.trim().parse::<Precision>())
        .collect::<Result<Vec<_>>>()?;
    let mut rows = a
        .rows
        .split(',')
        .map(|s| crate::numeric::count(s.trim()).map_err(Error::invalid))
        .collect::<Result<Vec<usize>>>()?;
    rows.push(1);
    rows.sort_unstable();
    rows.dedup();
    let (src, what) = match (&a.model, &a.preset) {
        (Some(m), _) => (Some(ModelSource::open(m)?), m.display().to_string()),
        (None, Some(p)) => (None, format!("{p} shape (random weights)")),
        (None, None) => return Err(Error::invalid("give --model or --preset")),
    };
    let device = a.device.parse::<Device>()?;
    println!(
        "{what}: {} prompt tokens per sequence, {} greedy steps, medians of {}",
        a.prompt_tokens, a.steps, a.repeats
    );
    println!("| variant | batch | ms/step | output tok/s | vs batch 1 |");
    println!("|---|---:|---:|---:|---:|");
    let mut verifies = Vec::new();
    for p in precisions {
        let qcfg = QuantConfig::default();
        let w = match (&src, &a.preset) {
            (Some(src), _) => src.variant(p, &qcfg, None)?,
            (None, Some(name)) => {
                let mut cfg = synthetic::preset(name)?;
                let tail = a.steps.max(a.verify.map_or(0, |k| k + 1));
                cfg.max_seq_len = cfg.max_seq_len.max(a.prompt_tokens + tail + 2);
                random_variant(&cfg, p, &qcfg, 42)?
            }
            (None, None) => return Err(Error::invalid("give --model or --preset")),
        };
        let verify = match device.open()? {
            OpenBackend::Cpu(be) => bench_variant(Arc::new(Model::new(be, &w)?), p, &rows, &a)?,
            OpenBackend::Cuda(be, _) => bench_variant(Arc::new(Model::new(be, &w)?), p, &rows, &a)?,
        };
        verifies.extend(verify.map(|v| (p, v)));
    }
    if let Some(k) = a.verify {
        println!();
        println!("| variant | verify rows | one-row step ms | verify ms | verify / step |");
        println!("|---|---:|---:|---:|---:|");
        for (p, (step, verify)) in verifies {
            println!(
                "| {p} | {} | {:.3} | {:.3} | {:.2}x |",
                k + 1,
                1e3 * step,
                1e3 * verify,
                verify / step
            );
        }
    }
    Ok(())
}

/// Times every batch size of `rows` on `model` and prints a table row each; with `--verify`,
/// returns [`bench_verify`]'s times too.
fn bench_variant<B: Backend + 'static>(
    model: Arc<Model<B>>,
    p: Precision,
    rows: &[usize],
    a: &BatchArgs,
) -> Result<Option<(f64, f64)>> {
    let vocab = model.config().vocab_size;
    let tok: Arc<dyn Tokenizer> = Arc::new(IdsOnly(vocab));
    let params = GenerateParams {
        max_new_tokens: a.steps + 1,
        stop_at_eos: false,
        context: a.prompt_tokens + a.steps + 1,
        ..Default::default()
    };
    let mut base = None;
    for &n in rows {
        let mut times = Vec::with_capacity(a.repeats);
        for _ in 0..a.repeats {
            let mut dec = BatchDecoder::new(model.clone(), tok.clone());
            // One untimed step prefills every prompt, the next emits the first tokens.
            dec.set_prefill_per_step(n * a.prompt_tokens)?;
            for i in 0..n {
                // Distinct prompts: rotate the benchmark prompt per sequence.
                let mut prompt = bench_prompt(a.prompt_tokens, vocab);
                prompt.rotate_left(i % a.prompt_tokens);
                dec.join(&prompt, &params)?;
            }
            dec.step()?;
            dec.step()?;
            model.backend().synchronize()?;
            let t0 = Instant::now();
            for _ in 0..a.steps {
                dec.step()?;
            }
            model.backend().synchronize()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        let t = median(&mut times);
        let tok_s = (n * a.steps) as f64 / t;
        let base_tok_s = *base.get_or_insert(tok_s);
        println!(
            "| {p} | {n} | {:.2} | {tok_s:.1} | {:.2}x |",
            1e3 * t / a.steps as f64,
            tok_s / base_tok_s
        );
    }
    a.verify.map(|k| bench_verify(&model, k, a)).transpose()
}

/// Seconds of a one-row greedy step and of a forward of `k + 1` rows with every row's logits,
/// both for one sequence after its `--prompt-tokens` prompt, each rolled back after it runs
/// (medians of `--repeats` runs of `--steps` each, the two kinds alternating by run).
fn bench_verify<B: Backend + 'static>(
    model: &Model<B>,
    k: usize,
    a: &BatchArgs,
) -> Result<(f64, f64)> {
    let rows = k + 1;
    let prompt = bench_prompt(a.prompt_tokens.max(1), model.config().vocab_size);
    let mut state = model.new_state_with_context(rows.max(prompt.len()), prompt.len() + rows)?;
    let mut logits = Vec::new();
    model.forward_into(&mut state, &prompt, false, &mut logits)?;
    let base = state.pos();
    let ids: Vec<u32> = prompt.iter().cycle().take(rows).copied().collect();
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..a.repeats {
        model.backend().synchronize()?;
        let t0 = Instant::now();
        for _ in 0..a.steps {
            model.step_greedy(&mut state, ids[0])?;
            state.truncate(base);
        }
        model.backend().synchronize()?;
        let t1 = Instant::now();
        for _ in 0..a.steps {
            model.forward_into(&mut state, &ids, true, &mut logits)?;
            state.truncate(base);
        }
        model.backend().synchronize()?;
        let t2 = Instant::now();
        one.push((t1 - t0).as_secs_f64() / a.steps as f64);
        many.push((t2 - t1).as_secs_f64() / a.steps as f64);
    }
    Ok((median(&mut one), median(&mut many)))
}
