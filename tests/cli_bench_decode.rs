//! `agentcompress bench decode` and `bench batch` end to end on the CPU backend: one table row per
//! variant (per batch size), and
//! a typed error for a bad variant name; a real model timed with its prefill.

mod common;

use std::process::Command;

fn agentcompress(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentcompress"))
        .args(args)
        .output()
        .expect("the agentcompress binary runs")
}

#[test]
fn bench_decode_prints_a_row_per_variant_with_its_floor() {
    let out = agentcompress(&[
        "bench", "decode", "--device", "cpu", "--preset", "tiny", "--steps", "3", "--warmup", "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host copy bandwidth"), "{text}");
    for p in ["fp16", "int8", "int4", "int2"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {p} |")))
            .unwrap_or_else(|| panic!("no {p} row in\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let tok_s: f64 = cells[4].parse().expect("tok/s is a number");
        let floor: f64 = cells[6].parse().expect("floor is a number");
        assert!(tok_s > 0.0 && floor > 0.0, "{row}");
    }
}

#[test]
fn bench_decode_rejects_an_unknown_variant() {
    let out = agentcompress(&["bench", "decode", "--device", "cpu", "--precisions", "int3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown precision 'int3'"), "{err}");
}

#[test]
fn bench_decode_times_a_real_model_with_prefill_and_decode() {
    let Some(dir) = common::stories260k_dir() else {
        return;
    };
    let model = dir.join("stories260K.bin");
    let out = agentcompress(&[
        "bench",
        "decode",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
        "--precisions",
        "fp16,int8",
        "--prompt-tokens",
        "16",
        "--steps",
        "8",
        "--repeats",
        "2",
        "--warmup",
        "0",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("stories260K.bin (5 layers, dim 64)"),
        "{text}"
    );
    for p in ["fp16", "int8"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| {p} |")))
            .unwrap_or_else(|| panic!("no {p} row in\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let prefill: f64 = cells[3].parse().expect("prefill tok/s is a number");
        let decode: f64 = cells[4].parse().expect("decode tok/s is a number");
        assert!(prefill > 0.0 && decode > 0.0, "{row}");
    }
}

#[test]
fn bench_decode_rejects_a_model_with_a_preset_and_zero_layers() {
    let out = agentcompress(&[
        "bench", "decode", "--device", "cpu", "--model", "x.gguf", "--preset", "tiny",
    ]);
    assert!(!out.status.success());
    let out = agentcompress(&[
        "bench", "decode", "--device", "cpu", "--preset", "tiny", "--layers", "0",
    ]);
    assert!(!out.status.success());
}

#[test]
fn bench_decode_times_every_cache_and_threading_setup() {
    let out = agentcompress(&[
        "bench",
        "decode",
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--precisions",
        "fp16",
        "--kv",
        "f16,f32",
        "--threading",
        "pool,rayon",
        "--prompt-tokens",
        "8",
        "--steps",
        "3",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for setup in [
        "kv f16, pool",
        "kv f16, rayon",
        "kv f32, pool",
        "kv f32, rayon",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with("| fp16 |") && l.contains(&format!("| {setup} |")))
            .unwrap_or_else(|| panic!("no fp16 row for {setup} in\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[10].ends_with('x'), "{row}");
    }
    let bad = agentcompress(&["bench", "decode", "--device", "cpu", "--kv", "f8"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown KV cache precision 'f8'"));
}

/// `bench batch` on the tiny preset, CPU, two steps after a three-token prompt, one run, with
/// `extra` arguments; its output, after checking that it succeeded.
fn bench_batch_tiny(extra: &[&str]) -> String {
    let mut args = vec!["bench", "batch", "--device", "cpu", "--preset", "tiny"];
    args.extend(["--steps", "2", "--prompt-tokens", "3", "--repeats", "1"]);
    args.extend_from_slice(extra);
    let out = agentcompress(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn bench_batch_prints_every_batch_size_against_one_sequence() {
    let text = bench_batch_tiny(&["--precisions", "fp16,int4", "--rows", "3,2"]);
    for p in ["fp16", "int4"] {
        // Batch 1 is always timed first, as the baseline; the others in increasing order.
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with(&format!("| {p} |")))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        let sizes: Vec<&str> = rows.iter().map(|c| c[2]).collect();
        assert_eq!(sizes, ["1", "2", "3"], "{text}");
        assert_eq!(rows[0][5], "1.00x", "{text}");
        for c in &rows {
            let tok_s: f64 = c[4].parse().expect("tok/s is a number");
            assert!(tok_s > 0.0, "{text}");
        }
    }
    for bad in [
        &["bench", "batch", "--device", "cpu"][..],
        &["bench", "batch", "--preset", "tiny", "--rows", "0"],
        &["bench", "batch", "--preset", "tiny", "--precisions", "int3"],
    ] {
        let out = agentcompress(bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{bad:?}: {err}");
    }
}

#[test]
fn bench_batch_times_a_speculative_verify_against_a_one_row_step() {
    let text = bench_batch_tiny(&["--precisions", "fp16,int8", "--rows", "2", "--verify", "40"]);
    assert!(text.contains("| variant | verify rows |"), "{text}");
    for p in ["fp16", "int8"] {
        // The verify table's row: 41 rows (40 drafted + the last kept token).
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(&format!("| {p} | 41 |")))
            .unwrap_or_else(|| panic!("no {p} verify row in\n{text}"))
            .split('|')
            .map(str::trim)
            .collect();
        let (step, verify): (f64, f64) = (row[3].parse().unwrap(), row[4].parse().unwrap());
        assert!(step > 0.0 && verify > 0.0, "{text}");
        assert!(row[5].ends_with('x'), "{text}");
    }
    let bad = agentcompress(&["bench", "batch", "--preset", "tiny", "--verify", "-1"]);
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("panicked"));
}
