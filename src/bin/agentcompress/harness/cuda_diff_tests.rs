//! Differential tests of the CUDA backend against the CPU oracle (the same checks as
//! `agentcompress gpu-check`). Without a CUDA device this prints `SKIPPED: no CUDA device
//! (reason)`; it never passes silently.

use super::check;
use agentcompress::backend::cuda::CudaBackend;
use agentcompress::Error;
use std::io::Write;

#[test]
fn cuda_matches_cpu_oracle() {
    let be = match CudaBackend::new(0) {
        Ok(be) => be,
        Err(Error::NoDevice(reason)) => {
            // Written to the stderr handle directly so the harness does not capture it: a skip is
            // always visible in the test output.
            let _ = writeln!(std::io::stderr(), "SKIPPED: no CUDA device ({reason})");
            return;
        }
        Err(e) => panic!("CUDA device present but the backend failed to start: {e}"),
    };
    let rep = check::run_all(&be, None, 7);
    println!("{}", rep.table());
    assert_eq!(
        rep.failed(),
        0,
        "differential checks failed:\n{}",
        rep.table()
    );
}

#[test]
fn compare_flags_unwritten_and_wrong_outputs() {
    let cpu = [1.0f32, -2.0, 3.0, 0.5];
    assert_eq!(
        check::compare("k", "c", &cpu, &cpu, 0.0).status,
        check::Status::Pass
    );
    let mut poisoned = cpu;
    poisoned[2] = f32::NAN;
    let r = check::compare("k", "c", &poisoned, &cpu, 1e-3);
    assert_eq!(r.status, check::Status::Fail);
    assert!(r.note.contains("[2]"), "{}", r.note);
    let mut off = cpu;
    off[1] = -2.1;
    assert_eq!(
        check::compare("k", "c", &off, &cpu, 1e-3).status,
        check::Status::Fail
    );
    assert_eq!(
        check::compare("k", "c", &cpu[..3], &cpu, 1e-3).status,
        check::Status::Fail
    );
}
