//! `agentcompress eval --chat-tasks N`: the checkable chat task suite on every variant (see
//! `agentcompress::eval::chat_labels`).

use crate::cmd_eval::EvalArgs;
use agentcompress::eval::chat_labels::{
    label_chat_task, markdown, success_frontier, summarise, ChatLabel,
};
use agentcompress::eval::chat_tasks::generate;
use agentcompress::eval::frontier::targets_between;
use agentcompress::quant::Precision;
use agentcompress::{Error, Result};

/// Labels `n` chat tasks on the variants of `a`, writes `chat_labels.json` and
/// `chat_report.md` to `a.out` and prints the report.
pub fn run(a: &EvalArgs, n: usize) -> Result<()> {
    let t0 = std::time::Instant::now();
    let (set, tok, name) = a.variants.open()?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let tasks = generate(n, a.seed);
    eprintln!("eval: {n} chat tasks on {name} ({})", set.formats);
    let mut labels = Vec::with_capacity(tasks.len());
    for t in &tasks {
        let l = label_chat_task(&set, tok.as_ref(), t, a.max_answer, a.n_gen)?;
        let mark = |p: Precision| match l.success[p] {
            Some(true) => "ok",
            Some(false) => "no",
            None => "-",
        };
        eprintln!(
            "task {:>3} {:<10} fp16 {} int8 {} int4 {} int2 {}  fp16 answer: {:?}",
            t.id,
            t.kind.name(),
            mark(Precision::Fp16),
            mark(Precision::Int8),
            mark(Precision::Int4),
            mark(Precision::Int2),
            l.answers[Precision::Fp16]
        );
        labels.push(l);
    }
    let summaries = summarise(&labels);
    let rel = set.relative_bytes();
    let all = summaries.last().map(|s| s.success_rate);
    let (lo, hi) = all.map_or((0.0, 1.0), |r| (r[Precision::Int4], r[Precision::Int8]));
    let (uniform, rows) =
        success_frontier(&labels, &rel, &targets_between(lo.min(hi), hi.max(lo), 5));
    let json = serde_json::to_string(&labels).map_err(|e| Error::Internal(e.to_string()))?;
    let path = a.out.join("chat_labels.json");
    std::fs::write(&path, json).map_err(|e| Error::io(&path, e))?;
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
    let path = a.out.join("chat_report.md");
    std::fs::write(&path, &md).map_err(|e| Error::io(&path, e))?;
    println!("{md}");
    println!(
        "total {:.1} s; outputs in {}",
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
