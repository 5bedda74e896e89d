//! `agentcompress quantize`: writes the FP16, INT8, INT4 and INT2 variants of a model plus
//! `manifest.json` into a directory, and prints a table of sizes and quality.

use agentcompress::model::load::ModelFormat;
use agentcompress::pipeline::{build_variants, BuildOptions, SelfText};
use agentcompress::quant::{Method, QuantConfig};
use agentcompress::Result;
use std::path::{Path, PathBuf};

/// Arguments of `quantize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The dense model: a llama2.c `.bin` file, a GGUF file (llama, qwen2; quantized tensors
    /// are dequantized first) or a Hugging Face directory (config.json + *.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// INT4/INT2 rounding: `rtn` (round to nearest), `als` (error-minimising scale/zero fit,
    /// weighted by calibration activations) or `gptq` (error feedback; best quality, small
    /// models only: it needs in x in Gram matrices).
    #[arg(long, default_value = "als")]
    method: Method,
    /// Group size for INT4 and INT2 (default: 128 for INT4, 64 for INT2; 32 for both when the
    /// model is a GGUF file).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    group: Option<usize>,
    /// INT8 group size (default: one scale per output channel; 32 when the model is a GGUF
    /// file).
    #[arg(long, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    int8_group: Option<usize>,
    /// Keep the classifier in FP16 (default: INT8 in the INT8/INT4/INT2 variants).
    #[arg(long)]
    keep_classifier_fp16: bool,
    /// Tokenizer to embed in every variant (`tokenizer.bin`, `tokenizer.json` with the
    /// `tokenizer_config.json` beside it, or a GGUF file's vocabulary); default: the model's
    /// own (a GGUF file's metadata, a Hugging Face directory's `tokenizer.json`, the
    /// `tokenizer.bin` beside a llama2.c file). A `tokenizer.json` or GGUF vocabulary is
    /// embedded with its BOS/EOS, BOS rule and chat template.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Self-generated calibration sequences for `als` (0: unweighted fit).
    #[arg(long, default_value_t = 4, value_parser = crate::numeric::count_or_zero, allow_negative_numbers = true)]
    calib_seqs: usize,
    /// Self-generated evaluation sequences for the manifest's quality (0: skip).
    #[arg(long, default_value_t = 4, value_parser = crate::numeric::count_or_zero, allow_negative_numbers = true)]
    eval_seqs: usize,
    /// Tokens per calibration/evaluation sequence.
    #[arg(long, default_value_t = 128, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    seq_len: usize,
    /// Seed of the evaluation text (calibration uses seed + 1000).
    #[arg(long, default_value_t = 7, value_parser = crate::numeric::seed, allow_negative_numbers = true)]
    seed: u64,
}

/// Default `(int8, int4, int2)` group sizes for the model at `path`. A GGUF model is almost
/// always block-quantized already, in blocks of 32 weights (Q4_0/1, Q5_0/1, Q8_0; the K-quants'
/// sub-blocks divide 32): groups of 32 sit on the grid of the file itself, which on
/// SmolLM2-135M-Instruct (Q4_1) made INT4 and INT8 near-lossless where wider groups were not
/// (the measurement is in the README). Other models keep per-channel INT8, INT4 g128, INT2 g64.
fn default_groups(path: &Path) -> (Option<usize>, usize, usize) {
    match agentcompress::model::load::detect_format(path) {
        Ok(ModelFormat::Gguf) => (Some(32), 32, 32),
        _ => (None, 128, 64),
    }
}

/// Runs `quantize`.
pub fn run(a: Args) -> Result<()> {
    let (int8_group, int4_group, int2_group) = default_groups(&a.model);
    let quant = QuantConfig {
        method: a.method,
        int8_group: a.int8_group.or(int8_group),
        int4_group: a.group.unwrap_or(int4_group),
        int2_group: a.group.unwrap_or(int2_group),
        keep_classifier_fp16: a.keep_classifier_fp16,
    };
    quant.validate()?;
    let tok_path = a
        .tokenizer
        .clone()
        .or_else(|| agentcompress::model::load::find_tokenizer(&a.model));
    let tok = tok_path
        .as_deref()
        .map(agentcompress::model::tokenizer::embeddable_tokenizer)
        .transpose()?;
    eprintln!("loading {}", a.model.display());
    let dense = agentcompress::model::load::load_model(&a.model)?;
    let text = |n: usize, seed: u64| {
        (n > 0).then_some(SelfText {
            n_seqs: n,
            len: a.seq_len,
            seed,
        })
    };
    let opts = BuildOptions {
        quant,
        calibration: text(a.calib_seqs, a.seed.wrapping_add(1000)),
        evaluation: text(a.eval_seqs, a.seed),
    };
    let manifest = build_variants(
        &dense,
        &a.model.display().to_string(),
        &a.out,
        tok.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
        &opts,
        &mut |line| eprintln!("{line}"),
    )?;
    println!(
        "{:<8} {:>12} {:>12} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "variant", "file bytes", "weight bytes", "bits/w", "matrix b/w", "ppl", "top-1", "KL"
    );
    for v in &manifest.variants {
        let (ppl, top1, kl) = match &v.quality {
            Some(q) => (
                format!("{:.3}", q.perplexity),
                format!("{:.4}", q.top1_agreement),
                format!("{:.5}", q.mean_kl),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<8} {:>12} {:>12} {:>10.3} {:>10.3} {:>10} {:>8} {:>10}",
            v.precision.name(),
            v.file_bytes,
            v.weight_bytes,
            v.bits_per_weight,
            v.matrix_bits_per_weight,
            ppl,
            top1,
            kl
        );
    }
    println!("wrote {}", a.out.join("manifest.json").display());
    Ok(())
}
