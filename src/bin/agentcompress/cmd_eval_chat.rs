//! `agentcompress eval --chat-tasks N`: the checkable chat task suite on every variant (see
//! `agentcompress::eval::chat_labels`), then the controller trained on its labels and its
//! routing frontier (see `agentcompress::eval::chat_route`).

use crate::cmd_eval::EvalArgs;
use agentcompress::eval::chat_labels::{
    chat_routing_ids, label_chat_task, markdown, success_frontier, summarise, ChatLabel,
};
use agentcompress::eval::chat_route::{self, ChatRouteConfig};
use agentcompress::eval::chat_route_report;
use agentcompress::eval::chat_tasks::generate;
use agentcompress::eval::frontier::targets_between;
use agentcompress::quant::Precision;
use agentcompress::{Error, Result};
use std::path::Path;

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn save_labels(path: &Path, labels: &[ChatLabel]) -> Result<()> {
    let json = serde_json::to_string(labels).map_err(|e| Error::Internal(e.to_string()))?;
    write(path, &json)
}

/// Labels read from `path` (written by an earlier run, possibly of more or fewer tasks): each
/// must be for the task of the same index in the suite generated from `seed`.
fn load_labels(path: &Path, seed: u64) -> Result<Vec<ChatLabel>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let labels: Vec<ChatLabel> = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(format!("{} is not a chat labels file: {e}", path.display()))
    })?;
    let tasks = generate(labels.len(), seed);
    if let Some(i) = labels.iter().zip(&tasks).position(|(l, t)| l.task != *t) {
        return Err(Error::invalid(format!(
            "{}: label {i} is for another task than the suite's (a different --seed?)",
            path.display()
        )));
    }
    Ok(labels)
}

/// Labels `n` chat tasks on the variants of `a` (reusing the labels of `--labels` when given),
/// writes `chat_labels.json` (after every task, with every label known) and `chat_report.md`, then trains the controller on
/// the labels and writes `chat_route.md`, `chat_route.json` and `chat_frontier.svg` to `a.out`.
pub fn run(a: &EvalArgs, n: usize) -> Result<()> {
    let t0 = std::time::Instant::now();
    let (set, tok, name) = a.variants.open()?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let mut labels = match &a.labels {
        Some(p) => load_labels(p, a.seed)?,
        None => Vec::new(),
    };
    eprintln!(
        "eval: {n} chat tasks on {name} ({}), {} labelled already",
        set.formats,
        labels.len().min(n)
    );
    let labels_path = a.out.join("chat_labels.json");
    let t_label = std::time::Instant::now();
    let tasks = generate(n, a.seed);
    for t in tasks.iter().skip(labels.len()) {
        let l = label_chat_task(&set, tok.as_ref(), t, a.max_answer, a.n_gen)?;
        let mark = |p: Precision| match l.success[p] {
            Some(true) => "ok",
            Some(false) => "no",
            None => "-",
        };
        eprintln!(
            "task {:>3} {:<10} fp16 {} int8 {} int4 {} int2 {}  ({:.1} s) fp16 answer: {:?}",
            t.id,
            t.kind.name(),
            mark(Precision::Fp16),
            mark(Precision::Int8),
            mark(Precision::Int4),
            mark(Precision::Int2),
            t_label.elapsed().as_secs_f64(),
            l.answers[Precision::Fp16]
        );
        labels.push(l);
        // Saved after every task (all labels known, beyond `n` too), so that an interrupted
        // run loses nothing.
        save_labels(&labels_path, &labels)?;
    }
    save_labels(&labels_path, &labels)?;
    labels.truncate(n);
    let summaries = summarise(&labels);
    let rel = set.relative_bytes();
    let all = summaries.last().map(|s| s.success_rate);
    let (lo, hi) = all.map_or((0.0, 1.0), |r| (r[Precision::Int4], r[Precision::Int8]));
    let (uniform, rows) =
        success_frontier(&labels, &rel, &targets_between(lo.min(hi), hi.max(lo), 5));
    let mut md = markdown(&summaries, &uniform, &rows);
    let time = |f: &dyn Fn(&ChatLabel) -> f32| labels.iter().map(f).sum::<f32>();
    md.push_str("\n| variant | prefill ms (sum) | decode ms (sum) | answer tokens (sum) |\n|---|---:|---:|---:|\n");
    for p in Precision::ALL {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} |\n",
            p.name(),
            time(&|l| l.prefill_ms[p]),
            time(&|l| l.decode_ms[p]),
            labels.iter().map(|l| l.answer_tokens[p]).sum::<usize>()
        ));
    }
    write(&a.out.join("chat_report.md"), &md)?;
    println!("{md}");
    if cfg!(feature = "train") {
        route(a, &set, tok.as_ref(), &labels)?;
    } else {
        eprintln!("note: routing needs the `train` cargo feature (candle); skipped");
    }
    println!(
        "total {:.1} s; outputs in {}",
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Trains the controller on `labels` and writes the routing report.
fn route(
    a: &EvalArgs,
    set: &agentcompress::pipeline::VariantSet,
    tok: &dyn agentcompress::model::tokenizer::Tokenizer,
    labels: &[ChatLabel],
) -> Result<()> {
    crate::cmd_train_controller::single_threaded_candle();
    let t0 = std::time::Instant::now();
    let mut cfg = ChatRouteConfig {
        seed: a.seed,
        controller: a.controller.clone(),
        capacity: a.capacity,
        swap_factor: a.swap_factor,
        calibration_folds: a.calibration_folds,
        prefetch: !a.no_prefetch,
        ..ChatRouteConfig::default()
    };
    cfg.train.iterations = a.iterations;
    cfg.train.outer_lr = a.lr;
    cfg.train.w_complexity = a.w_complexity;
    cfg.train.seed = a.seed;
    let prompts = labels
        .iter()
        .map(|l| chat_routing_ids(tok, &l.task, set.config.bos_token))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "routing: training the {} controller ({} iterations) on each of {} splits, and {} more per split for the router's calibration...",
        cfg.controller,
        cfg.train.iterations,
        chat_route::SPLITS.len(),
        if cfg.calibration_folds >= 2 { cfg.calibration_folds } else { 0 }
    );
    let report = chat_route::run(
        labels,
        &prompts,
        &set.embedding,
        set.config.dim,
        &set.bytes,
        &cfg,
    )?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
    write(&a.out.join("chat_route.json"), &json)?;
    let md = chat_route_report::markdown(&report);
    write(&a.out.join("chat_route.md"), &md)?;
    write(
        &a.out.join("chat_frontier.svg"),
        &chat_route_report::svg(&report),
    )?;
    println!("{md}");
    eprintln!("routing: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
