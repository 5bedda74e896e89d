//! `agentcompress generate --speculate` on a variant directory of stories260K built here:
//! greedy text identical to plain generation on the served variant, the speculation
//! statistics printed, and a draft that is not cheaper than the served variant or a draft
//! length of 0 refused with a clear message and a non-zero exit, without a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const PROMPT: &str = "Lily and Tom went to the park";

/// Runs the binary on the variant directory `dir` with `args` after it.
fn generate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcompress"))
        .arg("generate")
        .arg("-m")
        .arg(dir)
        .args(["-p", PROMPT, "-n", "40", "--ignore-eos", "--device", "cpu"])
        .args(args)
        .output()
        .expect("the agentcompress binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts that `out` failed cleanly with a message containing every one of `parts`.
fn fails_naming(out: &Output, parts: &[&str]) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "must fail; stderr:\n{err}");
    for p in parts {
        assert!(err.contains(p), "no {p:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn speculative_generate_prints_the_served_variants_text_and_its_statistics() {
    let Some(root) = common::stories260k_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("variants");
    common::build_stories_variants(&root, &dir);

    for (target, draft) in [("fp16", "int4"), ("int8", "int2")] {
        let plain = generate(&dir, &["--precision", target]);
        assert!(plain.status.success(), "{}", text(&plain.stderr));
        let plain_text = text(&plain.stdout);
        // Something beyond the prompt was generated, so the comparison is not vacuous.
        assert!(
            plain_text.len() > PROMPT.len() + 20,
            "plain {target}: {plain_text:?}"
        );
        for draft_len in [None, Some("3")] {
            let mut args = vec!["--precision", target, "--speculate", draft];
            if let Some(k) = draft_len {
                args.extend(["--draft-len", k]);
            }
            let spec = generate(&dir, &args);
            let err = text(&spec.stderr);
            assert!(spec.status.success(), "{args:?}: {err}");
            assert_eq!(
                text(&spec.stdout),
                plain_text,
                "{target} via {draft}, draft length {draft_len:?}"
            );
            let line = err
                .lines()
                .find(|l| l.starts_with("speculation: drafted "))
                .unwrap_or_else(|| panic!("{args:?}: no statistics in:\n{err}"));
            // "speculation: drafted D, accepted A (..%), V verifies, ..."
            let num = |after: &str| -> u64 {
                let rest = &line[line.find(after).unwrap() + after.len()..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no number after {after:?} in {line:?}"))
            };
            let (drafted, accepted) = (num("drafted "), num("accepted "));
            assert!(drafted > 0 && accepted <= drafted, "{line}");
            if let Some(k) = draft_len {
                let verifies = num("%), ");
                let k: u64 = k.parse().unwrap();
                assert!(drafted <= k * verifies, "{line}");
            }
            assert!(line.contains("tokens per verify"), "{line}");
        }
        // Plain generation prints no speculation statistics.
        assert!(!text(&plain.stderr).contains("speculation:"));
    }

    // The draft must have fewer bits than the served variant.
    fails_naming(
        &generate(&dir, &["--speculate", "fp16"]),
        &["draft variant fp16", "fewer bits than fp16"],
    );
    fails_naming(
        &generate(&dir, &["--precision", "int4", "--speculate", "int8"]),
        &["draft variant int8", "fewer bits than int4"],
    );
    // A draft length of 0 is refused by name.
    fails_naming(
        &generate(&dir, &["--speculate", "int4", "--draft-len", "0"]),
        &["--draft-len", "at least 1"],
    );
    // --draft-len only applies to speculation.
    fails_naming(
        &generate(&dir, &["--draft-len", "2"]),
        &["--draft-len", "--speculate"],
    );
}
