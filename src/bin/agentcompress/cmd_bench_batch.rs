//! `agentcompress bench batch`: output tokens/s of continuous batching at several batch sizes,
//! each against one sequence decoding alone in the same run: N sequences joined with prompts of
//! the same length (prefilled in one untimed step), then greedy steps of all N together (one
//! multi-row pass per step).

use crate::harness::decode_bench::random_variant;
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
    for p in precisions {
        let qcfg = QuantConfig::default();
        let w = match (&src, &a.preset) {
            (Some(src), _) => src.variant(p, &qcfg, None)?,
            (None, Some(name)) => {
                let mut cfg = synthetic::preset(name)?;
                cfg.max_seq_len = cfg.max_seq_len.max(a.prompt_tokens + a.steps + 2);
                random_variant(&cfg, p, &qcfg, 42)?
            }
            (None, None) => return Err(Error::invalid("give --model or --preset")),
        };
        match device.open()? {
            OpenBackend::Cpu(be) => bench_variant(Arc::new(Model::new(be, &w)?), p, &rows, &a)?,
            OpenBackend::Cuda(be, _) => bench_variant(Arc::new(Model::new(be, &w)?), p, &rows, &a)?,
        }
    }
    Ok(())
}

/// Times every batch size of `rows` on `model` and prints a table row each.
fn bench_variant<B: Backend + 'static>(
    model: Arc<Model<B>>,
    p: Precision,
    rows: &[usize],
    a: &BatchArgs,
) -> Result<()> {
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
    Ok(())
}

/// A tokenizer that decodes every id to nothing: the benchmark times ids, not text, and its
/// prompts are ids of the model's whole vocabulary.
struct IdsOnly(usize);

impl Tokenizer for IdsOnly {
    fn encode(&self, _: &str, _: bool) -> Result<Vec<u32>> {
        Err(Error::invalid(
            "the batch benchmark feeds token ids, not text",
        ))
    }
    fn decode(&self, _: &[u32]) -> Result<String> {
        Ok(String::new())
    }
    fn vocab_size(&self) -> usize {
        self.0
    }
    fn bos_id(&self) -> Option<u32> {
        None
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
}
