//! A chat task suite whose answers can be checked: tasks in four domains and ten kinds,
//! generated deterministically from a seed (templates filled from per-domain slots). Seven
//! kinds carry an expected answer that [`ChatTask::check`] verifies on the reply (see
//! [`super::task_checks`]); three are open-ended and are scored by fidelity to the base model
//! only.

use super::task_checks as checks;
use crate::model::tokenizer::ChatMessage;
use crate::util::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The domains tasks are drawn from.
pub const CHAT_DOMAINS: [&str; 4] = ["support", "science", "software", "travel"];

/// What a chat task asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatKind {
    /// Repeat a sentence exactly.
    Copy,
    /// Extract fields from a sentence into a JSON object.
    Extract,
    /// Rewrite an inline record as one `key: value` per line.
    Reformat,
    /// Arithmetic word problem with a final number.
    Arithmetic,
    /// Logic question with a final choice (a name, or yes/no).
    Logic,
    /// Call a described tool as a JSON object with the right arguments.
    ToolCall,
    /// Say what a one-line Python program prints.
    Code,
    /// Plan steps toward a goal (open-ended).
    Plan,
    /// Summarise a passage (open-ended).
    Summarise,
    /// Write a short text (open-ended).
    Write,
}

impl ChatKind {
    /// All kinds, checkable ones first.
    pub const ALL: [ChatKind; 10] = [
        ChatKind::Copy,
        ChatKind::Extract,
        ChatKind::Reformat,
        ChatKind::Arithmetic,
        ChatKind::Logic,
        ChatKind::ToolCall,
        ChatKind::Code,
        ChatKind::Plan,
        ChatKind::Summarise,
        ChatKind::Write,
    ];

    /// Short lower-case name for tables.
    pub fn name(self) -> &'static str {
        match self {
            ChatKind::Copy => "copy",
            ChatKind::Extract => "extract",
            ChatKind::Reformat => "reformat",
            ChatKind::Arithmetic => "arithmetic",
            ChatKind::Logic => "logic",
            ChatKind::ToolCall => "tool_call",
            ChatKind::Code => "code",
            ChatKind::Plan => "plan",
            ChatKind::Summarise => "summarise",
            ChatKind::Write => "write",
        }
    }
}

/// The answer a task expects, with the rule that checks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expected {
    /// This exact text ([`checks::check_copy`]).
    Exact(String),
    /// A JSON object with these fields ([`checks::check_json_fields`]).
    JsonFields(Vec<(String, Value)>),
    /// These `key: value` lines ([`checks::check_record`]).
    Record(Vec<(String, String)>),
    /// This final number ([`checks::check_final_number`]).
    Number(f64),
    /// This one of the options ([`checks::check_choice`]).
    Choice {
        /// The right option.
        answer: String,
        /// Every option the question names.
        options: Vec<String>,
    },
    /// A call of this tool with these arguments ([`checks::check_tool_call`]).
    Tool {
        /// Tool name.
        name: String,
        /// Expected arguments.
        args: Vec<(String, Value)>,
    },
    /// This program output ([`checks::check_output`]).
    Output(String),
    /// Nothing to check: scored by fidelity only.
    Open,
}

/// One chat task: a system and a user message, and what a right answer is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTask {
    /// Index in the generated suite.
    pub id: usize,
    /// Index into [`CHAT_DOMAINS`].
    pub domain: usize,
    /// Its kind.
    pub kind: ChatKind,
    /// The system message.
    pub system: String,
    /// The user message.
    pub user: String,
    /// The expected answer.
    pub expected: Expected,
}

impl ChatTask {
    /// Whether `answer` does the task; `None` for open-ended tasks.
    pub fn check(&self, answer: &str) -> Option<bool> {
        Some(match &self.expected {
            Expected::Exact(t) => checks::check_copy(answer, t),
            Expected::JsonFields(f) => checks::check_json_fields(answer, f),
            Expected::Record(f) => checks::check_record(answer, f),
            Expected::Number(v) => checks::check_final_number(answer, *v),
            Expected::Choice { answer: a, options } => checks::check_choice(answer, a, options),
            Expected::Tool { name, args } => checks::check_tool_call(answer, name, args),
            Expected::Output(o) => checks::check_output(answer, o),
            Expected::Open => return None,
        })
    }

    /// The conversation that asks it: the system message, then the user message.
    pub fn messages(&self) -> [ChatMessage; 2] {
        [
            ChatMessage::new("system", self.system.clone()),
            ChatMessage::new("user", self.user.clone()),
        ]
    }

    /// Whether the task has a checkable answer.
    pub fn checkable(&self) -> bool {
        self.expected != Expected::Open
    }
}

/// Per-domain slot values.
struct Slots {
    people: &'static [&'static str],
    items: &'static [&'static str],
    places: &'static [&'static str],
    verbs: &'static [&'static str],
    /// Tool name, its string argument, its integer argument, and the request template
    /// (`{s}` and `{n}` are replaced).
    tool: (&'static str, &'static str, &'static str, &'static str),
}

const SLOTS: [Slots; 4] = [
    Slots {
        people: &["Anna", "Omar", "Lena", "Raj", "Sofia", "Ben"],
        items: &[
            "router", "invoice", "headset", "account", "parcel", "charger",
        ],
        places: &["Oslo", "Lyon", "Denver", "Porto", "Kyoto", "Cairo"],
        verbs: &[
            "replaced", "refunded", "shipped", "reset", "checked", "returned",
        ],
        tool: (
            "lookup_order",
            "customer",
            "order_id",
            "Please look up order {n} for the customer {s}.",
        ),
    },
    Slots {
        people: &["Marie", "Ivan", "Grace", "Ahmed", "Chen", "Nora"],
        items: &["sample", "crystal", "enzyme", "probe", "filter", "magnet"],
        places: &["Geneva", "Boston", "Uppsala", "Perth", "Leiden", "Quito"],
        verbs: &[
            "measured", "heated", "cooled", "weighed", "stained", "tested",
        ],
        tool: (
            "get_measurement",
            "sample",
            "day",
            "Fetch the measurement of sample {s} taken on day {n}.",
        ),
    },
    Slots {
        people: &["Linus", "Ada", "Ken", "Grace", "Tim", "Rosa"],
        items: &["parser", "cache", "scheduler", "logger", "socket", "kernel"],
        places: &["Berlin", "Austin", "Dublin", "Seoul", "Toronto", "Zurich"],
        verbs: &[
            "refactored",
            "tested",
            "deployed",
            "profiled",
            "patched",
            "reviewed",
        ],
        tool: (
            "run_tests",
            "module",
            "retries",
            "Run the tests of the module {s} with {n} retries.",
        ),
    },
    Slots {
        people: &["Elena", "Jonas", "Priya", "Tomas", "Yuki", "Maya"],
        items: &[
            "ticket", "suitcase", "passport", "map", "camera", "backpack",
        ],
        places: &["Rome", "Lisbon", "Vienna", "Hanoi", "Lima", "Tunis"],
        verbs: &["booked", "packed", "lost", "found", "carried", "cancelled"],
        tool: (
            "book_hotel",
            "city",
            "nights",
            "Book a hotel in {s} for {n} nights.",
        ),
    },
];

const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";

fn pick<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len() as u64) as usize]
}

/// Three distinct entries of `xs` (which holds at least three).
fn three<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> [&'a str; 3] {
    let n = xs.len() as u64;
    let a = rng.below(n) as usize;
    let b = (a + 1 + rng.below(n - 1) as usize) % xs.len();
    let c = (0..xs.len())
        .map(|k| (b + 1 + k) % xs.len())
        .find(|&k| k != a && k != b)
        .unwrap_or(a);
    [xs[a], xs[b], xs[c]]
}

fn num(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi - lo + 1)
}

fn sentence(rng: &mut Rng, s: &Slots) -> String {
    format!(
        "{} {} the {} in {} on day {}.",
        pick(rng, s.people),
        pick(rng, s.verbs),
        pick(rng, s.items),
        pick(rng, s.places),
        num(rng, 2, 28)
    )
}

fn fields(v: &[(&str, Value)]) -> Vec<(String, Value)> {
    v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The user message and the expected answer of one task.
fn make(rng: &mut Rng, s: &Slots, kind: ChatKind) -> (String, Expected) {
    let variant = rng.below(2);
    match kind {
        ChatKind::Copy => {
            let t = sentence(rng, s);
            (
                format!("Repeat the following sentence exactly, and write nothing else:\n{t}"),
                Expected::Exact(t),
            )
        }
        ChatKind::Extract => {
            let (p, c, n) = (pick(rng, s.people), pick(rng, s.places), num(rng, 19, 70));
            let it = pick(rng, s.items);
            (
                format!(
                    "Extract the person's name, city and age from this text as a JSON object \
                     with the keys \"name\", \"city\" and \"age\".\nText: {p} is {n} years old, \
                     lives in {c} and asked about the {it}."
                ),
                Expected::JsonFields(fields(&[
                    ("name", json!(p)),
                    ("city", json!(c)),
                    ("age", json!(n)),
                ])),
            )
        }
        ChatKind::Reformat => {
            let (id, p, it) = (num(rng, 100, 999), pick(rng, s.people), pick(rng, s.items));
            (
                format!(
                    "Rewrite this record with one \"key: value\" pair per line:\n\
                     id={id}; owner={p}; item={it}"
                ),
                Expected::Record(vec![
                    ("id".into(), id.to_string()),
                    ("owner".into(), p.into()),
                    ("item".into(), it.into()),
                ]),
            )
        }
        ChatKind::Arithmetic => {
            let (p, it) = (pick(rng, s.people), pick(rng, s.items));
            let (a, b, c) = (num(rng, 3, 20), num(rng, 2, 9), num(rng, 1, 3));
            if variant == 0 {
                (
                    format!(
                        "{p} has {a} {it}s, gets {b} more and then gives away {c}. How many \
                         {it}s does {p} have now? Give the final number."
                    ),
                    Expected::Number((a + b - c) as f64),
                )
            } else {
                (
                    format!(
                        "There are {b} boxes with {a} {it}s in each box. How many {it}s are \
                         there in total? Give the final number."
                    ),
                    Expected::Number((a * b) as f64),
                )
            }
        }
        ChatKind::Logic => {
            if variant == 0 {
                let [a, b, c] = three(rng, s.people);
                (
                    format!(
                        "{a} is taller than {b}. {b} is taller than {c}. Who is the tallest? \
                         Answer with a name."
                    ),
                    Expected::Choice {
                        answer: a.into(),
                        options: vec![a.into(), b.into(), c.into()],
                    },
                )
            } else {
                let (x, y) = (num(rng, 10, 99), num(rng, 10, 99));
                let y = if y == x { y + 1 } else { y };
                (
                    format!("Is {x} greater than {y}? Answer yes or no."),
                    Expected::Choice {
                        answer: if x > y { "yes" } else { "no" }.into(),
                        options: vec!["yes".into(), "no".into()],
                    },
                )
            }
        }
        ChatKind::ToolCall => {
            let (name, sarg, narg, ask) = s.tool;
            let sv = match sarg {
                "city" => pick(rng, s.places),
                "customer" => pick(rng, s.people),
                _ => pick(rng, s.items),
            };
            let n = num(rng, 1, 9);
            let request = ask.replace("{s}", sv).replace("{n}", &n.to_string());
            (
                format!(
                    "You can call the tool `{name}` with the arguments \"{sarg}\" (a string) \
                     and \"{narg}\" (an integer). Reply only with the call as a JSON object \
                     {{\"name\": ..., \"arguments\": {{...}}}}.\nRequest: {request}"
                ),
                Expected::Tool {
                    name: name.into(),
                    args: fields(&[(sarg, json!(sv)), (narg, json!(n))]),
                },
            )
        }
        ChatKind::Code => {
            let w = pick(rng, s.items);
            let (a, b, c) = (num(rng, 2, 9), num(rng, 2, 9), num(rng, 1, 9));
            let (program, out) = match rng.below(4) {
                0 => (format!("print({a} * {b} + {c})"), (a * b + c).to_string()),
                1 => (format!("print(\"{w}\" * 2)"), w.repeat(2)),
                2 => (format!("print(len(\"{w}\"))"), w.len().to_string()),
                _ => (format!("print(\"{w}\".upper())"), w.to_uppercase()),
            };
            (
                format!(
                    "What does this Python program print? Reply with the output only.\n\
                     ```python\n{program}\n```"
                ),
                Expected::Output(out),
            )
        }
        ChatKind::Plan => {
            let (p, v, it, pl) = (
                pick(rng, s.people),
                pick(rng, s.verbs),
                pick(rng, s.items),
                pick(rng, s.places),
            );
            (
                format!(
                    "{p} needs to get the {it} {v} in {pl} by Friday. Write a plan of three \
                     short steps."
                ),
                Expected::Open,
            )
        }
        ChatKind::Summarise => {
            let text = (0..3)
                .map(|_| sentence(rng, s))
                .collect::<Vec<_>>()
                .join(" ");
            (
                format!("Summarise this in one sentence:\n{text}"),
                Expected::Open,
            )
        }
        ChatKind::Write => {
            let (it, pl) = (pick(rng, s.items), pick(rng, s.places));
            let what = if variant == 0 {
                "a short friendly message"
            } else {
                "two sentences"
            };
            (
                format!("Write {what} about a {it} in {pl}."),
                Expected::Open,
            )
        }
    }
}

/// `n` tasks from `seed`: kinds and domains cycle so that every (kind, domain) pair appears
/// once in every 40 consecutive tasks from id 0 (kind = id mod 10, domain =
/// (id / 10 + id) mod 4); slots are drawn from
/// the seed.
pub fn generate(n: usize, seed: u64) -> Vec<ChatTask> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|id| {
            let kind = ChatKind::ALL[id % ChatKind::ALL.len()];
            let domain = (id / ChatKind::ALL.len() + id) % CHAT_DOMAINS.len();
            let (user, expected) = make(&mut rng, &SLOTS[domain], kind);
            ChatTask {
                id,
                domain,
                kind,
                system: SYSTEM.to_string(),
                user,
                expected,
            }
        })
        .collect()
}

/// The reply a correct solver would give (for tests of the checkers against the generator);
/// `None` for open-ended tasks.
pub fn reference_answer(task: &ChatTask) -> Option<String> {
    Some(match &task.expected {
        Expected::Exact(t) => t.clone(),
        Expected::JsonFields(f) => Value::Object(f.iter().cloned().collect()).to_string(),
        Expected::Record(f) => f
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Expected::Number(v) => format!("The answer is {v}."),
        Expected::Choice { answer, .. } => answer.clone(),
        Expected::Tool { name, args } => json!({
            "name": name,
            "arguments": Value::Object(args.iter().cloned().collect()),
        })
        .to_string(),
        Expected::Output(o) => o.clone(),
        Expected::Open => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn suite_is_deterministic_and_covers_domains_and_kinds() {
        let a = generate(80, 7);
        assert_eq!(a, generate(80, 7));
        assert_ne!(a, generate(80, 8));
        let pairs: HashSet<(usize, ChatKind)> = a.iter().map(|t| (t.domain, t.kind)).collect();
        assert_eq!(pairs.len(), CHAT_DOMAINS.len() * ChatKind::ALL.len());
        let checkable = a.iter().filter(|t| t.checkable()).count();
        assert_eq!(checkable, 56, "seven of ten kinds are checkable");
    }

    #[test]
    fn reference_answers_pass_and_corrupted_answers_fail() {
        for t in generate(200, 3) {
            let Some(good) = reference_answer(&t) else {
                assert_eq!(t.check("anything"), None);
                continue;
            };
            assert_eq!(t.check(&good), Some(true), "{t:?}\n{good}");
            assert_eq!(t.check(""), Some(false), "{t:?}");
            // Change one digit or one letter of the answer: it must fail.
            let bad = corrupt(&good, &t);
            assert_eq!(t.check(&bad), Some(false), "{t:?}\n{bad}");
        }
    }

    /// The answer with its key content changed: a digit shifted or a value's first letter
    /// replaced.
    fn corrupt(good: &str, t: &ChatTask) -> String {
        match &t.expected {
            Expected::Choice { answer, options } => options
                .iter()
                .find(|o| *o != answer)
                .cloned()
                .unwrap_or_default(),
            Expected::Tool { name, .. } => good.replace(name.as_str(), "other_tool"),
            _ => {
                let pos = good
                    .char_indices()
                    .rev()
                    .find(|(_, c)| c.is_ascii_digit())
                    .or_else(|| good.char_indices().find(|(_, c)| c.is_ascii_alphabetic()));
                let Some((i, c)) = pos else {
                    return String::new();
                };
                let r = match c {
                    '0'..='8' => (c as u8 + 1) as char,
                    '9' => '0',
                    'q' | 'Q' => 'x',
                    _ => 'q',
                };
                format!("{}{r}{}", &good[..i], &good[i + c.len_utf8()..])
            }
        }
    }
}
