//! Checkers for chat task answers: pure functions that decide whether a model's reply did the
//! task. Each accepts the right answer in the formats a chat model commonly writes it (quoted,
//! in a code fence, after a short preamble, with a trailing full stop) and rejects a wrong one.

use serde_json::Value;

/// The text with surrounding whitespace, code fences, quotes and backticks removed.
fn strip_wrapping(answer: &str) -> &str {
    let mut s = answer.trim();
    loop {
        let before = s;
        if let Some(rest) = s.strip_prefix("```") {
            // A fence may name a language on its first line.
            let rest = rest.split_once('\n').map_or("", |(first, body)| {
                if first.trim().chars().all(|c| c.is_ascii_alphanumeric()) {
                    body
                } else {
                    rest
                }
            });
            s = rest.trim_end().strip_suffix("```").unwrap_or(rest).trim();
        }
        for (open, close) in [
            ("\"", "\""),
            ("'", "'"),
            ("`", "`"),
            ("\u{201c}", "\u{201d}"),
        ] {
            if s.len() >= open.len() + close.len() {
                if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
                    s = inner.trim();
                }
            }
        }
        if s == before {
            return s;
        }
    }
}

/// Whether `answer` reproduces `expected` exactly: the reply, unwrapped of quotes and fences,
/// is the text itself, or holds it verbatim after a short preamble ("Here it is: ...") of at
/// most 40 extra characters. A final full stop may be dropped or added; any other changed
/// character rejects.
pub fn check_copy(answer: &str, expected: &str) -> bool {
    const SLACK: usize = 40;
    let body = strip_wrapping(answer).trim_end_matches('.');
    let expected = expected.trim_end_matches('.');
    if body == expected {
        return true;
    }
    body.len() <= expected.len() + SLACK && body.contains(expected)
}

/// The first balanced JSON object in `answer` that parses, if any (code fences and prose
/// around it are ignored).
pub fn first_json_object(answer: &str) -> Option<serde_json::Map<String, Value>> {
    let bytes = answer.as_bytes();
    for (start, _) in answer.match_indices('{') {
        let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            if in_str {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if let Ok(Value::Object(m)) = serde_json::from_str(&answer[start..=i]) {
                            return Some(m);
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// Whether a JSON value matches the expected one: strings equal ignoring case and surrounding
/// space, numbers equal as numbers (a numeric string is accepted for a number).
pub fn value_matches(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::String(g), Value::String(w)) => g.trim().eq_ignore_ascii_case(w.trim()),
        (Value::Number(g), Value::Number(w)) => g.as_f64() == w.as_f64(),
        (Value::String(g), Value::Number(w)) => g.trim().parse::<f64>().ok() == w.as_f64(),
        (g, w) => g == w,
    }
}

/// Whether the first JSON object in `answer` has every expected field (key matched ignoring
/// case) with a matching value; extra fields are allowed.
pub fn check_json_fields(answer: &str, fields: &[(String, Value)]) -> bool {
    first_json_object(answer).is_some_and(|obj| fields_match(&obj, fields))
}

fn fields_match(obj: &serde_json::Map<String, Value>, fields: &[(String, Value)]) -> bool {
    fields.iter().all(|(k, want)| {
        obj.iter()
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(k))
            .is_some_and(|(_, got)| value_matches(got, want))
    })
}

/// Whether `answer` is a tool call to `name` with the expected arguments: a JSON object with
/// the tool's name under `name`, `tool` or `function` (or `function.name`) and the arguments
/// under `arguments`, `args`, `parameters` or `input` (also as a JSON string, as OpenAI's
/// format writes them). The name must match exactly.
pub fn check_tool_call(answer: &str, name: &str, args: &[(String, Value)]) -> bool {
    let Some(obj) = first_json_object(answer) else {
        return false;
    };
    let (called, holder) = match obj.get("function") {
        Some(Value::Object(f)) => (f.get("name"), f.clone()),
        _ => (
            obj.get("name").or(obj.get("tool")).or(obj.get("function")),
            obj.clone(),
        ),
    };
    if called.and_then(Value::as_str).map(str::trim) != Some(name) {
        return false;
    }
    let found = ["arguments", "args", "parameters", "input"]
        .iter()
        .find_map(|k| holder.get(*k));
    match found {
        Some(Value::Object(a)) => fields_match(a, args),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(a)) => fields_match(&a, args),
            _ => false,
        },
        _ => false,
    }
}

/// `key: value` pairs of a record written one per line (list markers, bold markers and a
/// `=` separator tolerated), keys lower-cased.
fn record_lines(answer: &str) -> Vec<(String, String)> {
    strip_wrapping(answer)
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches(['-', '*', '•']).trim();
            let (k, v) = l.split_once(':').or_else(|| l.split_once('='))?;
            let clean = |s: &str| {
                s.replace("**", "")
                    .trim()
                    .trim_matches(['"', '\''])
                    .to_string()
            };
            Some((clean(k).to_lowercase(), clean(v)))
        })
        .collect()
}

/// Whether `answer` rewrites a record as one `key: value` per line with every expected pair
/// (keys ignoring case; values equal ignoring case, a trailing full stop or comma allowed).
pub fn check_record(answer: &str, fields: &[(String, String)]) -> bool {
    let got = record_lines(answer);
    fields.iter().all(|(k, want)| {
        got.iter().any(|(gk, gv)| {
            gk == &k.to_lowercase()
                && gv
                    .trim_end_matches(['.', ','])
                    .trim()
                    .eq_ignore_ascii_case(want)
        })
    })
}

/// The numbers written in `text`, in order (thousands separators and a leading minus kept).
pub fn numbers_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let neg = i > 0 && chars[i - 1] == '-' && (i < 2 || !chars[i - 2].is_alphanumeric());
            let mut s = String::new();
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], ',' | '.')
                        && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                if chars[i] != ',' {
                    s.push(chars[i]);
                }
                i += 1;
            }
            if let Ok(v) = s.parse::<f64>() {
                out.push(if neg { -v } else { v });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Whether the final answer of `answer` is `expected`: the number after the last "answer"
/// when the reply names one, else the last number it writes (working before it is allowed).
pub fn check_final_number(answer: &str, expected: f64) -> bool {
    let lower = answer.to_lowercase();
    let tail = lower
        .rfind("answer")
        .map(|i| &answer[i..])
        .filter(|t| !numbers_in(t).is_empty())
        .unwrap_or(answer);
    let nums = numbers_in(tail);
    let pick = if tail.len() < answer.len() {
        nums.first()
    } else {
        nums.last()
    };
    pick.is_some_and(|v| (v - expected).abs() < 1e-9)
}

/// Whether the last of `options` that `answer` names (as a whole word, ignoring case) is
/// `expected`; `false` when it names none. A reply that weighs options and then concludes is
/// judged by its conclusion.
pub fn check_choice(answer: &str, expected: &str, options: &[String]) -> bool {
    let lower = answer.to_lowercase();
    let mut last: Option<(usize, &str)> = None;
    for o in options {
        let o_low = o.to_lowercase();
        for (i, _) in lower.match_indices(&o_low) {
            let before = lower[..i].chars().next_back();
            let after = lower[i + o_low.len()..].chars().next();
            let word = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
            if word(before) && word(after) && last.is_none_or(|(j, _)| i >= j) {
                last = Some((i, o.as_str()));
            }
        }
    }
    last.is_some_and(|(_, o)| o.eq_ignore_ascii_case(expected))
}

/// Whether `answer` states the program output `expected`: the unwrapped reply is it, or
/// holds it as a whole token (not inside a longer word or number) and no other line of
/// output-like text contradicts it.
pub fn check_output(answer: &str, expected: &str) -> bool {
    let body = strip_wrapping(answer);
    if body == expected {
        return true;
    }
    let bounded = |s: &str| {
        s.match_indices(expected).any(|(i, _)| {
            let before = s[..i].chars().next_back();
            let after = s[i + expected.len()..].chars().next();
            let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
            edge(before) && edge(after)
        })
    };
    bounded(body) && body.len() <= expected.len() + 60
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &[(&str, Value)]) -> Vec<(String, Value)> {
        v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn copy_accepts_wrapped_exact_text_and_rejects_changes() {
        let want = "Ann moved the router to Oslo on day 4.";
        assert!(check_copy(want, want));
        assert!(check_copy(&format!("\"{want}\""), want));
        assert!(check_copy(&format!("```\n{want}\n```"), want));
        assert!(check_copy(&format!("Here is the sentence: {want}"), want));
        assert!(check_copy("Ann moved the router to Oslo on day 4", want));
        assert!(!check_copy("Ann moved the router to Oslo on day 5.", want));
        assert!(!check_copy("Ann moved the router to Oslo on day", want));
        assert!(!check_copy("ann moved the router to Oslo on day 4.", want));
        assert!(!check_copy(
            &format!("{want} And then a long story follows about many other things entirely."),
            want
        ));
        assert!(!check_copy("", want));
    }

    #[test]
    fn json_fields_parse_objects_inside_prose_and_fences() {
        let f = fields(&[("name", json!("Ann")), ("age", json!(31))]);
        assert!(check_json_fields(r#"{"name": "Ann", "age": 31}"#, &f));
        assert!(check_json_fields(
            "Sure:\n```json\n{\"Name\": \"ann \", \"age\": \"31\", \"city\": \"Oslo\"}\n```",
            &f
        ));
        // The first object is judged, braces inside its strings included.
        assert!(!check_json_fields(
            r#"{"name": "A}n", "x": 1} {"name": "Ann", "age": 31.0}"#,
            &f
        ));
        assert!(check_json_fields(
            r#"{"name": "Ann", "age": 31.0, "note": "a { b"}"#,
            &f
        ));
        assert!(!check_json_fields(r#"{"name": "Ann", "age": 32}"#, &f));
        assert!(!check_json_fields(r#"{"name": "Ann"}"#, &f));
        assert!(!check_json_fields("name: Ann, age: 31", &f));
        assert!(!check_json_fields(r#"{"name": "Ann", "age": 31"#, &f));
    }

    #[test]
    fn tool_calls_need_the_right_name_and_arguments() {
        let a = fields(&[("city", json!("Oslo")), ("nights", json!(3))]);
        assert!(check_tool_call(
            r#"{"name": "book_hotel", "arguments": {"city": "Oslo", "nights": 3}}"#,
            "book_hotel",
            &a
        ));
        assert!(check_tool_call(
            r#"Calling: {"tool": "book_hotel", "args": {"nights": "3", "city": "oslo"}}"#,
            "book_hotel",
            &a
        ));
        assert!(check_tool_call(
            r#"{"function": {"name": "book_hotel", "arguments": "{\"city\": \"Oslo\", \"nights\": 3}"}}"#,
            "book_hotel",
            &a
        ));
        assert!(!check_tool_call(
            r#"{"name": "book_flight", "arguments": {"city": "Oslo", "nights": 3}}"#,
            "book_hotel",
            &a
        ));
        assert!(!check_tool_call(
            r#"{"name": "book_hotel", "arguments": {"city": "Oslo", "nights": 2}}"#,
            "book_hotel",
            &a
        ));
        assert!(!check_tool_call(
            r#"{"name": "book_hotel"}"#,
            "book_hotel",
            &a
        ));
        assert!(!check_tool_call(
            "book_hotel(city=Oslo, nights=3)",
            "book_hotel",
            &a
        ));
    }

    #[test]
    fn records_accept_list_markers_and_reject_wrong_values() {
        let f = vec![
            ("id".to_string(), "17".to_string()),
            ("owner".to_string(), "Ann".to_string()),
        ];
        assert!(check_record("id: 17\nowner: Ann", &f));
        assert!(check_record("- **ID**: 17\n- Owner: ann.", &f));
        assert!(check_record("Here you go:\nid = 17\nowner = Ann\n", &f));
        assert!(!check_record("id: 18\nowner: Ann", &f));
        assert!(!check_record("id: 17", &f));
        assert!(!check_record("id=17; owner=Ann", &f));
    }

    #[test]
    fn final_numbers_follow_the_stated_answer() {
        assert!(check_final_number("42", 42.0));
        assert!(check_final_number(
            "5 + 3 = 8, then 8 * 2 = 16. The answer is 16.",
            16.0
        ));
        assert!(check_final_number("Answer: 1,250 apples", 1250.0));
        assert!(check_final_number("She has -3 left", -3.0));
        assert!(!check_final_number(
            "The answer is 15, since 5 + 3 = 8.",
            16.0
        ));
        assert!(!check_final_number("5 + 3 = 8, so 17", 16.0));
        assert!(!check_final_number("I do not know", 16.0));
        assert_eq!(
            numbers_in("a 3.5, b 1,000 and 2-1"),
            vec![3.5, 1000.0, 2.0, 1.0]
        );
    }

    #[test]
    fn choices_are_judged_by_the_conclusion() {
        let opts: Vec<String> = ["Ann", "Bo", "Cy"].map(String::from).to_vec();
        assert!(check_choice("Ann", "Ann", &opts));
        assert!(check_choice(
            "Bo is shorter than Ann, so the tallest is Ann.",
            "Ann",
            &opts
        ));
        assert!(!check_choice("Ann is taller than Bo, so Bo.", "Ann", &opts));
        assert!(!check_choice("Annie", "Ann", &opts));
        assert!(!check_choice("nobody", "Ann", &opts));
        let yn: Vec<String> = ["yes", "no"].map(String::from).to_vec();
        assert!(check_choice("Yes.", "yes", &yn));
        assert!(!check_choice("No, it is not.", "yes", &yn));
        assert!(!check_choice("I know the answer", "no", &yn));
    }

    #[test]
    fn program_output_must_appear_as_a_whole_token() {
        assert!(check_output("13", "13"));
        assert!(check_output("`13`", "13"));
        assert!(check_output("The code prints 13.", "13"));
        assert!(check_output("```\nabab\n```", "abab"));
        assert!(!check_output("The code prints 130.", "13"));
        assert!(!check_output("It prints 12.", "13"));
        assert!(!check_output("ababab", "abab"));
        assert!(check_output("[1, 2, 3]", "[1, 2, 3]"));
    }
}
