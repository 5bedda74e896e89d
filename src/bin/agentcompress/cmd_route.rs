//! `agentcompress route`: open a variant directory as an [`Engine`], predict a task's
//! complexity and print the routing decision with its reasons.

use agentcompress::api::{Device, Engine};
use agentcompress::quant::Precision;
use agentcompress::{Error, Result};
use clap::Args;
use std::path::PathBuf;

/// Route one task and print the decision and its reasons.
#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Variant directory (from `quantize`); its `controller.safetensors` and `router.json`
    /// (from `eval -m DIR --out DIR` or `train-controller`) route the task.
    #[arg(long)]
    pub variants: PathBuf,
    /// Read `controller.safetensors` and `router.json` from this directory instead (e.g. the
    /// `--out` directory of `eval`).
    #[arg(long)]
    pub router_dir: Option<PathBuf>,
    /// The task text.
    #[arg(long)]
    pub task: String,
    /// Variants to make resident first, comma-separated (e.g. `int8,int4`); they are loaded,
    /// within the budget, in that order.
    #[arg(long, default_value = "")]
    pub resident: String,
    /// Memory budget for resident variants in bytes (default: all four).
    #[arg(long, value_parser = crate::numeric::bytes, allow_negative_numbers = true)]
    pub budget: Option<u64>,
    /// Override the router's quality target.
    #[arg(long, value_parser = crate::numeric::fraction, allow_negative_numbers = true)]
    pub target: Option<f32>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(a: RouteArgs) -> Result<()> {
    if a.task.is_empty() {
        return Err(Error::invalid("--task is empty"));
    }
    let mut b = Engine::builder(&a.variants).device(a.device.parse::<Device>()?);
    if let Some(d) = &a.router_dir {
        b = b.router_dir(d);
    }
    if let Some(t) = a.target {
        b = b.router_target(t);
    }
    if let Some(x) = a.budget {
        b = b.memory_budget(x);
    }
    let engine = b.build()?;
    for name in a
        .resident
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        engine.make_resident(name.parse::<Precision>()?)?;
    }
    let t0 = std::time::Instant::now();
    let route = engine.route(&a.task)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if a.json {
        let mut v = serde_json::to_value(&route).map_err(|e| Error::Internal(e.to_string()))?;
        v["overhead_ms"] = serde_json::json!(ms);
        println!("{v}");
    } else {
        let complexity = route.complexity.map_or("no controller".to_string(), |c| {
            format!("complexity {c:.3}")
        });
        println!(
            "route: {} ({complexity}, expected cost {:.3} of fp16, {}) in {ms:.2} ms",
            route.precision,
            route.expected_cost,
            if route.swap { "swap" } else { "hit" }
        );
        for r in &route.reasons {
            println!("  - {r}");
        }
    }
    Ok(())
}
