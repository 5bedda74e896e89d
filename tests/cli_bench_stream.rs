//! `agentcompress bench stream` end to end: the default (host memory) report is unchanged,
//! `--device cuda` says clearly when there is no GPU (and reports the pinned figures when
//! there is one), and `--device auto` is refused.

use std::process::{Command, Output};

fn agentcompress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentcompress"))
        .args(args)
        .output()
        .expect("the agentcompress binary runs")
}

/// A 3 MiB file of non-zero bytes in a fresh temporary folder.
fn data_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.bin");
    let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253 + 1) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_string_lossy().into_owned();
    (dir, p)
}

const SMALL: &[&str] = &["--chunk-kib", "256", "--layer-mib", "1", "--repeat", "1"];

#[test]
fn cpu_is_the_default_and_reports_the_host_pipeline() {
    let (_dir, file) = data_file();
    let mut args = vec!["bench", "stream", "--file", file.as_str()];
    args.extend_from_slice(SMALL);
    let out = agentcompress(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3.0 MiB per round"), "{text}");
    assert!(
        text.contains("pipeline (reader + staging + pool -> host memory)"),
        "{text}"
    );
    assert!(
        !text.contains("h2d"),
        "no copy rates without --device cuda: {text}"
    );
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    let (_dir, file) = data_file();
    let mut args = vec![
        "bench",
        "stream",
        "--device",
        "cuda",
        "--file",
        file.as_str(),
    ];
    args.extend_from_slice(SMALL);
    let out = agentcompress(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // A machine with a GPU: the pinned figures are there.
        for want in [
            "h2d pageable",
            "h2d pinned",
            "disk -> pinned staging -> device",
        ] {
            assert!(text.contains(want), "no '{want}' in\n{text}");
        }
        return;
    }
    assert!(
        err.contains("bench stream --device cuda needs a CUDA GPU"),
        "{err}"
    );
    if !agentcompress::backend::cuda::libs::driver_present() {
        assert!(err.contains("libcuda"), "names the missing driver: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn auto_is_refused() {
    let out = agentcompress(&["bench", "stream", "--device", "auto", "--file", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
}
