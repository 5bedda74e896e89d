//! `agentcompress inspect`: print a model's configuration and tensor table.

use agentcompress::model::load::load_model;
use agentcompress::Result;
use clap::Args;
use std::path::PathBuf;

/// Print the configuration and the tensor table of a model.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model: a llama2.c `.bin` file or a Hugging Face directory.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: InspectArgs) -> Result<()> {
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
