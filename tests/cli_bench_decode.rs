//! `agentcompress bench decode` end to end on the CPU backend: one table row per variant, and
//! a typed error for a bad variant name.

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
