//! `agentcompress inspect`: print a model's configuration and tensor table.

use agentcompress::model::gguf::GgufFile;
use agentcompress::model::load::{detect_format, load_model, ModelFormat};
use agentcompress::quant::Precision;
use agentcompress::store::{read_index, Manifest};
use agentcompress::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// Print the configuration and the tensor table of a model.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model: a llama2.c `.bin` file, a GGUF file, a Hugging Face directory or a variant
    /// directory.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Precision to show from a variant directory.
    #[arg(long, default_value = "fp16")]
    pub precision: Precision,
}

/// Prints the config and tensor directory of one variant of a variant directory.
fn inspect_variant(args: &InspectArgs) -> Result<()> {
    let manifest = Manifest::read(&args.model)?;
    let info = manifest.variant(args.precision).ok_or_else(|| {
        Error::invalid(format!(
            "{} has no {} variant",
            args.model.display(),
            args.precision
        ))
    })?;
    let idx = read_index(&args.model.join(&info.file))?;
    let c = &idx.meta.config;
    println!(
        "variant: {} ({})",
        args.model.join(&info.file).display(),
        args.precision
    );
    println!("{}", serde_json::to_string_pretty(c).unwrap_or_default());
    println!("parameters: {}", c.parameter_count());
    println!(
        "{:<28} {:>6} {:>16} {:>6} {:>12} {:>12}",
        "tensor", "format", "shape", "group", "offset", "bytes"
    );
    for t in &idx.tensors {
        println!(
            "{:<28} {:>6} {:>16} {:>6} {:>12} {:>12}",
            t.name,
            format!("{:?}", t.format).to_lowercase(),
            format!("{:?}", t.shape),
            t.group,
            t.offset,
            t.len
        );
    }
    Ok(())
}

/// Prints a GGUF file's metadata, the engine config it maps to, and its tensor directory
/// (without dequantizing anything).
fn inspect_gguf(args: &InspectArgs) -> Result<()> {
    let f = GgufFile::open(&args.model)?;
    println!(
        "GGUF v{}: {} (alignment {})",
        f.version(),
        args.model.display(),
        f.alignment()
    );
    for (key, value) in f.metadata() {
        println!("  {key} = {value}");
    }
    match agentcompress::model::gguf::arch::config(&f) {
        Ok(c) => {
            println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
            println!("parameters: {}", c.parameter_count());
        }
        Err(e) => println!("engine config: {e}"),
    }
    println!(
        "{:<28} {:>8} {:>16} {:>12} {:>12}",
        "tensor", "type", "dims [in, out]", "offset", "bytes"
    );
    for t in f.tensors() {
        println!(
            "{:<28} {:>8} {:>16} {:>12} {:>12}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.offset,
            t.len
        );
    }
    Ok(())
}

/// Runs the subcommand.
pub fn run(args: InspectArgs) -> Result<()> {
    match detect_format(&args.model)? {
        ModelFormat::VariantStore => return inspect_variant(&args),
        ModelFormat::Gguf => return inspect_gguf(&args),
        _ => {}
    }
    let w = load_model(&args.model)?;
    let c = &w.config;
    println!("model: {}", args.model.display());
    println!("{}", serde_json::to_string_pretty(c).unwrap_or_default());
    println!("parameters: {}", c.parameter_count());
    println!(
        "{:<28} {:>6} {:>16} {:>12}",
        "tensor", "dtype", "shape", "bytes"
    );
    let row = |name: String, t: &agentcompress::model::Tensor| {
        println!(
            "{:<28} {:>6} {:>16} {:>12}",
            name,
            format!("{:?}", t.dtype()),
            format!("{:?}", t.shape()),
            t.bytes().len()
        );
    };
    row("embedding".into(), &w.embedding);
    for (i, l) in w.layers.iter().enumerate() {
        row(format!("layers.{i}.attn_norm"), &l.attn_norm);
        for (name, m) in l.matrices() {
            row(format!("layers.{i}.{name}"), m);
        }
        for (name, b) in [("bq", &l.bq), ("bk", &l.bk), ("bv", &l.bv)] {
            if let Some(b) = b {
                row(format!("layers.{i}.{name}"), b);
            }
        }
        row(format!("layers.{i}.ffn_norm"), &l.ffn_norm);
    }
    row("final_norm".into(), &w.final_norm);
    if let Some(cls) = &w.classifier {
        row("classifier".into(), cls);
    }
    Ok(())
}
