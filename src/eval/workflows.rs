//! Multi-stage agent workflows, generated deterministically from a seed: each workflow belongs
//! to one domain and chains stages of five kinds, whose texts are filled from per-domain
//! vocabularies. Two kinds are open-ended (planning, reasoning); three are structured the way
//! many agent stages are (quoting or summarising a passage the prompt gives, rewriting a record
//! the prompt holds, completing a repeated template). Difficulty is never assigned here: the
//! labels measure it on the real variants.

use crate::util::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The domains workflows are drawn from.
pub const DOMAINS: [&str; 4] = ["stories", "support", "science", "software"];

/// What a stage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageKind {
    /// Break a goal into steps (open-ended).
    Planning,
    /// Quote or summarise a passage given in the prompt (retrieval).
    Summarise,
    /// Reason to a conclusion (open-ended).
    Reasoning,
    /// Rewrite a record the prompt already holds in another layout.
    Formatting,
    /// Complete a repeated template (code-like calls or sentences).
    Code,
}

impl StageKind {
    /// All kinds.
    pub const ALL: [StageKind; 5] = [
        StageKind::Planning,
        StageKind::Summarise,
        StageKind::Reasoning,
        StageKind::Formatting,
        StageKind::Code,
    ];
}

/// One stage of a workflow: a task text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Its kind.
    pub kind: StageKind,
    /// The task text given to the model.
    pub text: String,
}

/// A workflow: stages run in order, in one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Index in the generated set.
    pub id: usize,
    /// Index into [`DOMAINS`].
    pub domain: usize,
    /// Stages, in order.
    pub stages: Vec<Stage>,
}

struct Vocab {
    nouns: &'static [&'static str],
    people: &'static [&'static str],
    verbs: &'static [&'static str],
    adjectives: &'static [&'static str],
}

const VOCABS: [Vocab; 4] = [
    Vocab {
        nouns: &[
            "ball", "park", "cat", "tree", "cake", "boat", "garden", "toy", "dog", "sun",
        ],
        people: &[
            "Lily",
            "Tom",
            "Ben",
            "Mia",
            "Sue",
            "the little girl",
            "the old man",
        ],
        verbs: &["play", "find", "share", "build", "jump", "help", "run"],
        adjectives: &["big", "red", "happy", "small", "shiny", "sad", "kind"],
    },
    Vocab {
        nouns: &[
            "order", "refund", "account", "password", "delivery", "invoice", "ticket", "router",
        ],
        people: &[
            "the customer",
            "the agent",
            "a user",
            "the manager",
            "Anna",
            "Raj",
        ],
        verbs: &[
            "reset", "cancel", "track", "update", "escalate", "confirm", "replace",
        ],
        adjectives: &[
            "late",
            "broken",
            "urgent",
            "missing",
            "duplicate",
            "new",
            "locked",
        ],
    },
    Vocab {
        nouns: &[
            "cell", "planet", "enzyme", "magnet", "river", "photon", "gene", "volcano",
        ],
        people: &[
            "the scientist",
            "a student",
            "the team",
            "Dr. Chen",
            "Marie",
            "the lab",
        ],
        verbs: &[
            "measure", "observe", "compare", "explain", "predict", "heat", "test",
        ],
        adjectives: &["hot", "tiny", "dense", "bright", "rare", "stable", "fast"],
    },
    Vocab {
        nouns: &[
            "function", "parser", "cache", "server", "queue", "buffer", "index", "thread",
        ],
        people: &[
            "the reviewer",
            "a developer",
            "the build bot",
            "Alice",
            "Bob",
            "the team",
        ],
        verbs: &[
            "refactor", "debug", "deploy", "sort", "parse", "merge", "profile",
        ],
        adjectives: &["slow", "null", "async", "stale", "sorted", "empty", "hot"],
    },
];

fn pick<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

/// A short passage of three sentences from the domain's vocabulary: the material that
/// retrieval and formatting stages work on.
fn passage(rng: &mut Rng, v: &Vocab) -> String {
    let (n1, n2, n3) = (pick(rng, v.nouns), pick(rng, v.nouns), pick(rng, v.nouns));
    let (p1, p2) = (pick(rng, v.people), pick(rng, v.people));
    let (vb1, vb2) = (pick(rng, v.verbs), pick(rng, v.verbs));
    let (a1, a2) = (pick(rng, v.adjectives), pick(rng, v.adjectives));
    match rng.below(3) {
        0 => format!(
            "{p1} had a {a1} {n1}. {p2} wanted to {vb1} the {n2}. Then they {vb2} the {a2} {n3}."
        ),
        1 => {
            format!("The {n1} was {a1}. {p1} went to {vb1} the {n2} with {p2}. The {n3} was {a2}.")
        }
        _ => format!(
            "{p1} saw a {a1} {n1} near the {n2}. {p2} said to {vb1} it. They {vb2} the {a2} {n3}."
        ),
    }
}

/// The first `words` words of `text`.
fn prefix(text: &str, words: usize) -> String {
    text.split(' ').take(words).collect::<Vec<_>>().join(" ")
}

/// The text of one stage of kind `kind` in domain `domain`. Planning and reasoning stages are
/// open-ended; retrieval (`Summarise`), formatting and code stages are structured the way agent
/// stages often are: quoting from a passage the prompt gives, rewriting a record the prompt
/// already holds, completing a repeated template. How hard each one is for a quantized variant
/// is not assumed here: it is measured by the labels.
fn stage_text(rng: &mut Rng, domain: usize, kind: StageKind) -> String {
    let v = &VOCABS[domain];
    let (n1, n2, n3) = (pick(rng, v.nouns), pick(rng, v.nouns), pick(rng, v.nouns));
    let (p1, p2) = (pick(rng, v.people), pick(rng, v.people));
    let (vb1, vb2) = (pick(rng, v.verbs), pick(rng, v.verbs));
    let (a1, a2) = (pick(rng, v.adjectives), pick(rng, v.adjectives));
    let k = rng.below(3);
    match kind {
        StageKind::Planning => match k {
            0 => format!("Plan the steps. First {p1} will {vb1} the {a1} {n1}. Then {p2} will {vb2} the {n2}. Last, check the {n3}."),
            1 => format!("Make a plan for {p1}: {vb1} the {n1}, {vb2} the {a2} {n2}, and tell {p2} about the {n3}."),
            _ => format!("Step one: {vb1} the {n1}. Step two: {vb2} the {a1} {n2}. Step three: {p2} looks at the {n3}."),
        },
        StageKind::Summarise => {
            let text = passage(rng, v);
            match k {
                0 => format!("Read this: {text} Now say it again: {}", prefix(&text, 3)),
                1 => format!("Text: {text}\nQuote the text: {}", prefix(&text, 2)),
                _ => format!("Here is what we found: {text} In short,"),
            }
        }
        StageKind::Reasoning => match k {
            0 => format!("If the {n1} is {a1} and every {a1} {n1} can {vb1} the {n2}, can {p1} {vb2} the {n3}? Think step by step, because {p2} is not sure."),
            1 => format!("{p1} has 3 {n1}s and gives 2 to {p2}. Then {p2} finds 4 more {n2}s. Why is the {n3} {a2}, and how many are left?"),
            _ => format!("Why would {p1} {vb1} the {a1} {n1} before the {n2}? Explain what happens to the {n3} if {p2} does not {vb2} it."),
        },
        StageKind::Formatting => match k {
            0 => format!("Record: who {p1}, item {n1}, state {a1}, next {vb1}.\nRecord: who {p1}, item {n1}, state"),
            1 => format!("- {n1}: {a1}\n- {n2}: {a2}\n- {n3}: done by {p2}\nAs a list again:\n- {n1}: {a1}\n- {n2}:"),
            _ => format!("{{\"who\": \"{p1}\", \"item\": \"{n1}\", \"state\": \"{a1}\"}} Write it as text: {p1} has the"),
        },
        StageKind::Code => match k {
            0 => format!("{p1} can {vb1} the {n1}. {p2} can {vb1} the {n2}. {p1} can {vb1} the {n3}. {p2} can {vb1} the"),
            1 => format!("The {n1} is {a1}. The {n2} is {a1}. The {n3} is {a1}. The {n1} is"),
            _ => format!("{vb1}({n1}); {vb1}({n2}); {vb2}({n3}); {vb1}({n1}); {vb1}("),
        },
    }
}

/// Generates `n` workflows of 3 to 6 stages, domains round-robin, from `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<Workflow> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|id| {
            let domain = id % DOMAINS.len();
            let stages = 3 + rng.below(4) as usize;
            let mut kinds: Vec<StageKind> = vec![StageKind::Planning];
            for _ in 1..stages {
                kinds.push(StageKind::ALL[1 + rng.below(4) as usize]);
            }
            let stages = kinds
                .into_iter()
                .map(|kind| Stage {
                    kind,
                    text: stage_text(&mut rng, domain, kind),
                })
                .collect();
            Workflow { id, domain, stages }
        })
        .collect()
}

/// Writes workflows as JSON lines.
pub fn write(path: &Path, wfs: &[Workflow]) -> Result<()> {
    let mut s = String::new();
    for w in wfs {
        s.push_str(&serde_json::to_string(w).map_err(|e| Error::Internal(e.to_string()))?);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

/// Reads workflows written by [`write()`].
pub fn read(path: &Path) -> Result<Vec<Workflow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::corrupt(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_covers_domains_and_kinds_and_round_trips() {
        let a = generate(40, 9);
        assert_eq!(a, generate(40, 9));
        assert_ne!(a, generate(40, 10));
        for d in 0..DOMAINS.len() {
            assert_eq!(a.iter().filter(|w| w.domain == d).count(), 10);
        }
        for k in StageKind::ALL {
            assert!(
                a.iter().flat_map(|w| &w.stages).any(|s| s.kind == k),
                "{k:?}"
            );
        }
        assert!(a.iter().all(|w| (3..=6).contains(&w.stages.len())));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.jsonl");
        write(&p, &a).unwrap();
        assert_eq!(read(&p).unwrap(), a);
        std::fs::write(&p, "{oops\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("line 1"));
    }
}
