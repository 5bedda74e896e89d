//! The command line refuses what does not apply or is out of range, naming the flag: numeric
//! flags out of range, NaN or negative; `--precision` on a model that holds one precision; an
//! explicit GPU that is not there (at open, on every command that opens a model); a tokenizer
//! that is not a regular file.

mod common;

use agentcompress::model::llama2c;
use agentcompress::pipeline::{build_variants, BuildOptions};
use agentcompress::quant::{Method, QuantConfig};
use std::path::PathBuf;
use std::process::Command;

/// A GPU ordinal no machine has, so the check is the same with or without a GPU.
const NO_SUCH_GPU: &str = "cuda:999";

fn stories() -> Option<PathBuf> {
    common::stories260k_dir()
}

/// Runs the binary; returns (success, stderr).
fn agentcompress(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentcompress"))
        .args(args)
        .output()
        .expect("the agentcompress binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fails_naming(args: &[&str], parts: &[&str]) {
    let (ok, err) = agentcompress(args);
    assert!(!ok, "{args:?} must fail");
    for p in parts {
        assert!(err.contains(p), "{args:?}: no {p:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn numeric_flags_out_of_range_are_named() {
    fails_naming(&["eval", "--threshold", "2"], &["--threshold", "[0, 1]"]);
    fails_naming(&["eval", "--threshold", "NaN"], &["--threshold", "finite"]);
    fails_naming(
        &["eval", "--chat-tasks", "40", "--calibration-folds", "-2"],
        &["--calibration-folds", "0 or more"],
    );
    // The chat routing's flags mean nothing to the workflow benchmark.
    fails_naming(&["eval", "--no-prefetch"], &["--chat-tasks"]);
    fails_naming(&["eval", "--calibration-folds", "2"], &["--chat-tasks"]);
    fails_naming(&["train-controller", "--lr", "-1"], &["--lr", "above 0"]);
    fails_naming(
        &["train-controller", "--batch", "0"],
        &["--batch", "at least 1"],
    );
    fails_naming(
        &["eval-variants", "--variants", "x", "--seqs", "0"],
        &["--seqs"],
    );
    fails_naming(
        &["eval-variants", "--variants", "x", "--seqs", "-1"],
        &["--seqs", "negative"],
    );
    let Some(root) = stories() else {
        return;
    };
    let model = root.join("stories260K.bin");
    let m = model.to_str().unwrap();
    fails_naming(
        &["generate", "-m", m, "-n", "-1"],
        &["--max-tokens", "negative"],
    );
    fails_naming(
        &["generate", "-m", m, "--top-p", "0"],
        &["--top-p", "(0, 1]"],
    );
    fails_naming(
        &["generate", "-m", m, "-t", "inf"],
        &["--temperature", "finite"],
    );
    fails_naming(
        &["route", "--variants", "x", "--task", "t", "--target", "1.5"],
        &["--target"],
    );
    fails_naming(
        &["route", "--variants", "x", "--task", "t", "--budget", "-5"],
        &["--budget"],
    );
    fails_naming(
        &["bench", "stream", "--repeat", "0"],
        &["--repeat", "at least 1"],
    );
}

#[test]
fn flags_that_do_not_apply_and_bad_files_are_errors() {
    let Some(root) = stories() else {
        return;
    };
    let model = root.join("stories260K.bin");
    let m = model.to_str().unwrap();
    fails_naming(
        &["generate", "-m", m, "--precision", "int2", "-n", "2"],
        &["--precision int2 needs a variant directory"],
    );
    fails_naming(
        &["generate", "-m", m, "--tokenizer", "/dev/zero", "-n", "2"],
        &["--tokenizer /dev/zero is not a regular file"],
    );
}

#[test]
fn an_explicit_gpu_that_is_not_there_fails_every_command_at_open() {
    let Some(root) = stories() else {
        return;
    };
    let dense = llama2c::load(&root.join("stories260K.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        quant: QuantConfig {
            method: Method::Rtn,
            ..QuantConfig::default()
        },
        calibration: None,
        evaluation: None,
    };
    let tok = std::fs::read(root.join("tok512.bin")).unwrap();
    build_variants(
        &dense,
        "stories260K",
        dir.path(),
        Some(("tokenizer.bin", &tok)),
        &opts,
        &mut |_| {},
    )
    .unwrap();
    let v = dir.path().to_str().unwrap();
    let model = root.join("stories260K.bin");
    let m = model.to_str().unwrap();
    let no_gpu = ["no CUDA device", "cuda:999"];
    fails_naming(
        &[
            "route",
            "--variants",
            v,
            "--task",
            "hi",
            "--device",
            NO_SUCH_GPU,
        ],
        &no_gpu,
    );
    fails_naming(
        &["generate", "-m", v, "-n", "1", "--device", NO_SUCH_GPU],
        &no_gpu,
    );
    fails_naming(
        &["generate", "-m", m, "-n", "1", "--device", NO_SUCH_GPU],
        &no_gpu,
    );
    fails_naming(
        &["logits", "-m", m, "--ids", "1", "--device", NO_SUCH_GPU],
        &no_gpu,
    );
    fails_naming(&["demo", "--device", NO_SUCH_GPU], &no_gpu);
    // The same route on the CPU works.
    let (ok, err) = agentcompress(&["route", "--variants", v, "--task", "hi", "--device", "cpu"]);
    assert!(ok, "{err}");
}
