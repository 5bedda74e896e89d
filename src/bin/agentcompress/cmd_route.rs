//! `agentcompress route`: predict a task's complexity and print the routing decision with its
//! reasons.

use crate::cmd_eval::VariantArgs;
use agentcompress::controller::io;
use agentcompress::quant::Precision;
use agentcompress::router::{Residency, Router};
use agentcompress::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// Route one task and print the decision and its reasons.
#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Directory holding `controller.safetensors` and `router.json` (from `train-controller`
    /// or `eval`).
    #[arg(long)]
    pub variants: PathBuf,
    #[command(flatten)]
    pub model: VariantArgs,
    /// The task text.
    #[arg(long)]
    pub task: String,
    /// Variants already resident, comma-separated (e.g. `int8,int4`).
    #[arg(long, default_value = "")]
    pub resident: String,
    /// Override the router's quality target.
    #[arg(long)]
    pub target: Option<f32>,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(a: RouteArgs) -> Result<()> {
    if a.task.is_empty() {
        return Err(Error::invalid("--task is empty"));
    }
    let controller = io::load(&a.variants.join("controller.safetensors"))?;
    let rp = a.variants.join("router.json");
    let text = std::fs::read_to_string(&rp).map_err(|e| Error::io(&rp, e))?;
    let mut router: Router =
        serde_json::from_str(&text).map_err(|e| Error::corrupt(&rp, e.to_string()))?;
    if let Some(t) = a.target {
        router.config.target = t;
    }
    let (set, tok, _) = a.model.open()?;
    if controller.config.embed_dim != set.config.dim {
        return Err(Error::invalid(format!(
            "the controller reads {}-wide embeddings but the model's are {}",
            controller.config.embed_dim, set.config.dim
        )));
    }
    let mut res = Residency::new(set.bytes.iter().sum(), set.bytes)?;
    for name in a
        .resident
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        res.use_variant(name.parse::<Precision>()?);
    }
    let t0 = std::time::Instant::now();
    let ids = tok.encode(&a.task, true)?;
    let out = controller.predict(&set.embedding, &ids)?;
    let d = router.decide(&out, &res);
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if a.json {
        let v = serde_json::json!({
            "precision": d.precision,
            "complexity": d.complexity,
            "expected_cost": d.expected_cost,
            "swap": d.swap,
            "reasons": d.reasons,
            "pruning": out.pruning,
            "sparsity": out.sparsity,
            "overhead_ms": ms,
        });
        println!("{v}");
    } else {
        println!(
            "route: {} (complexity {:.3}, expected cost {:.3} of fp16, {}) in {ms:.2} ms",
            d.precision,
            d.complexity,
            d.expected_cost,
            if d.swap { "swap" } else { "hit" }
        );
        for r in &d.reasons {
            println!("  - {r}");
        }
    }
    Ok(())
}
