//! Labels of the chat task suite on every variant: task success (the task's checker on the
//! variant's own greedy answer), fidelity to the base (the workflow labels' agreement and KL,
//! see [`crate::pipeline::labels::measure`]) and the measured prefill and decode time, then
//! summaries per kind and the uniform/blind-mix/oracle frontier on task success.

use super::chat_tasks::{ChatKind, ChatTask};
use super::frontier::{self, FrontierRow, Point};
use crate::model::tokenizer::{routing_text, Tokenizer};
use crate::pipeline::labels::{greedy_until, measure, TaskLabel};
use crate::pipeline::VariantSet;
use crate::quant::{PerPrecision, Precision};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One chat task measured on the four variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatLabel {
    /// The task.
    pub task: ChatTask,
    /// Prompt length in tokens (chat template applied).
    pub prompt_tokens: usize,
    /// Each variant's greedy answer text.
    pub answers: PerPrecision<String>,
    /// Whether each variant's answer does the task (`None` for open-ended tasks).
    pub success: PerPrecision<Option<bool>>,
    /// Wall time of each variant's prefill, milliseconds.
    pub prefill_ms: PerPrecision<f32>,
    /// Wall time of each variant's decode steps, milliseconds.
    pub decode_ms: PerPrecision<f32>,
    /// Tokens each variant generated.
    pub answer_tokens: PerPrecision<usize>,
    /// Fidelity to the base over its first `n_fid` greedy tokens.
    pub fidelity: TaskLabel,
}

/// The task's prompt ids: system and user messages rendered with the tokenizer's chat
/// template (ending with the opening of the assistant's turn); BOS is prepended only when
/// the tokenizer has one and the template does not write it.
pub fn chat_prompt_ids(tok: &dyn Tokenizer, task: &ChatTask) -> Result<Vec<u32>> {
    let template = tok.chat_template().ok_or_else(|| {
        Error::invalid("the chat task suite needs a tokenizer with a chat template")
    })?;
    let msgs = task.messages();
    let text = template.render(&msgs, true)?;
    let bos_in_text = !template.bos_token().is_empty() && text.starts_with(template.bos_token());
    tok.encode(&text, !bos_in_text && tok.bos_id().is_some())
}

/// The ids the controller reads for `task`, as the engine's chat routing reads a
/// conversation (`Engine::chat_routing_ids`): the user message encoded as a task, with BOS when
/// the model (`model_bos`) or the tokenizer has one.
pub fn chat_routing_ids(
    tok: &dyn Tokenizer,
    task: &ChatTask,
    model_bos: Option<u32>,
) -> Result<Vec<u32>> {
    let msgs = task.messages();
    let text = routing_text(&msgs)
        .ok_or_else(|| Error::invalid(format!("chat task {} has no user text", task.id)))?;
    let ids = tok.encode(text, model_bos.or(tok.bos_id()).is_some())?;
    if ids.is_empty() {
        return Err(Error::invalid(format!(
            "chat task {} encodes to no tokens",
            task.id
        )));
    }
    Ok(ids)
}

/// Labels `task` on every variant of `set`: each variant answers greedily (at most
/// `max_answer` tokens, stopping at the model's end tokens) and is checked; fidelity is
/// measured over `n_fid` tokens.
pub fn label_chat_task(
    set: &VariantSet,
    tok: &dyn Tokenizer,
    task: &ChatTask,
    max_answer: usize,
    n_fid: usize,
) -> Result<ChatLabel> {
    let ids = chat_prompt_ids(tok, task)?;
    let stop = set.config.eos_tokens.clone();
    let mut label = ChatLabel {
        task: task.clone(),
        prompt_tokens: ids.len(),
        answers: PerPrecision::from_fn(|_| String::new()),
        success: PerPrecision::splat(None),
        prefill_ms: PerPrecision::splat(0.0),
        decode_ms: PerPrecision::splat(0.0),
        answer_tokens: PerPrecision::splat(0),
        fidelity: measure(set, &ids, n_fid)?,
    };
    for p in Precision::ALL {
        let a = greedy_until(set.model(p), &ids, max_answer, &stop)?;
        let text = tok.decode(&a.ids)?;
        label.success[p] = task.check(&text);
        label.answers[p] = text;
        label.prefill_ms[p] = a.prefill_ms;
        label.decode_ms[p] = a.decode_ms;
        label.answer_tokens[p] = a.ids.len();
    }
    Ok(label)
}

/// Success, quality retained and fidelity of one group of tasks (a kind, or all).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuccessSummary {
    /// The group's name.
    pub name: String,
    /// Tasks in the group.
    pub tasks: usize,
    /// Tasks with a checkable answer.
    pub checkable: usize,
    /// Share of checkable tasks solved, per variant.
    pub success_rate: PerPrecision<f64>,
    /// Successes relative to the base's on the same tasks (`None` when the base solves none).
    pub retained: PerPrecision<Option<f64>>,
    /// Mean top-1 agreement with the base.
    pub agreement: PerPrecision<f64>,
}

fn summarise_group(name: &str, labels: &[&ChatLabel]) -> SuccessSummary {
    let checked: Vec<PerPrecision<bool>> = labels
        .iter()
        .filter(|l| l.task.checkable())
        .map(|l| l.success.map(|s| s.unwrap_or(false)))
        .collect();
    let n = checked.len().max(1) as f64;
    let m = labels.len().max(1) as f64;
    SuccessSummary {
        name: name.to_string(),
        tasks: labels.len(),
        checkable: checked.len(),
        success_rate: PerPrecision::from_fn(|p| checked.iter().filter(|s| s[p]).count() as f64 / n),
        retained: frontier::quality_retained(&checked),
        agreement: PerPrecision::from_fn(|p| {
            labels
                .iter()
                .map(|l| l.fidelity.quality[p] as f64)
                .sum::<f64>()
                / m
        }),
    }
}

/// Summaries per kind (in [`ChatKind::ALL`] order, kinds without tasks left out), then one
/// of all tasks.
pub fn summarise(labels: &[ChatLabel]) -> Vec<SuccessSummary> {
    let mut out: Vec<SuccessSummary> = ChatKind::ALL
        .iter()
        .filter_map(|k| {
            let group: Vec<&ChatLabel> = labels.iter().filter(|l| l.task.kind == *k).collect();
            (!group.is_empty()).then(|| summarise_group(k.name(), &group))
        })
        .collect();
    out.push(summarise_group("all", &labels.iter().collect::<Vec<_>>()));
    out
}

/// The uniform points and blind mixing against the per-task oracle on task success
/// (checkable tasks) at quality targets, costs relative to the base's bytes.
pub fn success_frontier(
    labels: &[ChatLabel],
    rel_bytes: &PerPrecision<f64>,
    targets: &[f64],
) -> (Vec<Point>, Vec<FrontierRow>) {
    let q: Vec<PerPrecision<f64>> = labels
        .iter()
        .filter(|l| l.task.checkable())
        .map(|l| l.success.map(|s| s.unwrap_or(false) as u8 as f64))
        .collect();
    let uniform = frontier::uniform_points(&q, rel_bytes);
    let rows = targets
        .iter()
        .map(|&t| FrontierRow {
            target: t,
            blind: frontier::mix_cost(&uniform, t),
            oracle: frontier::oracle_cost(&q, rel_bytes, t),
            strategy: None,
        })
        .collect();
    (uniform, rows)
}

/// A markdown report of the summaries and the success frontier.
pub fn markdown(summaries: &[SuccessSummary], uniform: &[Point], rows: &[FrontierRow]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut s = String::from(
        "## Chat tasks: success per variant\n\n| kind | tasks | checkable | success fp16/int8/int4/int2 | retained int8/int4/int2 | agreement int8/int4/int2 |\n|---|---:|---:|---|---|---|\n",
    );
    for k in summaries {
        let sr = k.success_rate.values();
        let r = k.retained.values();
        let a = k.agreement.values();
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} / {:.2} / {:.2} / {:.2} | {} / {} / {} | {:.3} / {:.3} / {:.3} |\n",
            k.name, k.tasks, k.checkable, sr[0], sr[1], sr[2], sr[3], f(r[1]), f(r[2]), f(r[3]), a[1], a[2], a[3]
        ));
    }
    s.push_str("\n## Success frontier (checkable tasks; cost = bytes of weights vs FP16)\n\n| strategy | cost | success |\n|---|---:|---:|\n");
    for (p, pt) in Precision::ALL.iter().zip(uniform) {
        s.push_str(&format!(
            "| uniform {} | {:.3} | {:.3} |\n",
            p.name(),
            pt.cost,
            pt.quality
        ));
    }
    s.push_str("\n| success target | blind mix cost | oracle cost |\n|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {:.3} | {} | {} |\n",
            r.target,
            f(r.blind),
            f(r.oracle)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::chat_tasks::generate;
    use Precision::*;

    #[test]
    fn the_controller_reads_the_user_message_not_the_system_prompt() {
        use crate::model::tokenizer::ByteTokenizer;
        let mut task = generate(1, 4).remove(0);
        let tok = ByteTokenizer;
        let want = |bos: bool| tok.encode(&task.user, bos).unwrap();
        assert_eq!(chat_routing_ids(&tok, &task, None).unwrap(), want(true));
        task.system = "A different, much longer system prompt. ".repeat(4);
        assert_eq!(chat_routing_ids(&tok, &task, Some(1)).unwrap(), want(true));
        task.user = " \n ".into();
        let e = chat_routing_ids(&tok, &task, None).unwrap_err().to_string();
        assert!(e.contains("no user text"), "{e}");
    }

    fn label(task: ChatTask, success: [bool; 4], agree: [f32; 4]) -> ChatLabel {
        let check = task.checkable();
        ChatLabel {
            task,
            prompt_tokens: 10,
            answers: PerPrecision::from_fn(|_| String::new()),
            success: PerPrecision::from(success).map(|s| check.then_some(s)),
            prefill_ms: PerPrecision::splat(1.0),
            decode_ms: PerPrecision::splat(1.0),
            answer_tokens: PerPrecision::splat(4),
            fidelity: TaskLabel {
                quality: agree.into(),
                kl: PerPrecision::splat(0.0),
                exact: PerPrecision::splat(false),
                time_ms: PerPrecision::splat(0.0),
                bytes: PerPrecision::splat(0),
                flops: 0,
            },
        }
    }

    #[test]
    fn summaries_count_success_relative_to_the_base_per_kind() {
        let tasks = generate(20, 1);
        let (copy_a, copy_b, plan) = (tasks[0].clone(), tasks[10].clone(), tasks[7].clone());
        assert_eq!((copy_a.kind, plan.kind), (ChatKind::Copy, ChatKind::Plan));
        let labels = vec![
            label(copy_a, [true, true, false, false], [1.0, 1.0, 0.5, 0.0]),
            label(copy_b, [true, true, true, false], [1.0, 0.9, 0.7, 0.1]),
            label(plan, [true; 4], [1.0, 0.8, 0.3, 0.0]),
        ];
        let s = summarise(&labels);
        assert_eq!(s.len(), 3);
        let copy = &s[0];
        assert_eq!(
            (copy.name.as_str(), copy.tasks, copy.checkable),
            ("copy", 2, 2)
        );
        assert_eq!(copy.retained[Int4], Some(0.5));
        assert_eq!(copy.success_rate[Int8], 1.0);
        assert!((copy.agreement[Int8] - 0.95).abs() < 1e-6);
        let plan = &s[1];
        assert_eq!((plan.checkable, plan.retained[Int8]), (0, None));
        let all = &s[2];
        assert_eq!((all.tasks, all.checkable), (3, 2));
        let (uniform, rows) =
            success_frontier(&labels, &[1.0, 0.5, 0.25, 0.125].into(), &[0.5, 1.0]);
        assert_eq!(uniform[2].quality, 0.5);
        // At 0.5 the oracle runs copy_b on INT4 and copy_a on INT2: cheaper than INT4 alone.
        assert_eq!(rows[0].blind, Some(0.25));
        assert!((rows[0].oracle.unwrap() - (0.25 + 0.125) / 2.0).abs() < 1e-12);
        let md = markdown(&s, &uniform, &rows);
        assert!(md.contains("| copy | 2 | 2 |"), "{md}");
    }
}
