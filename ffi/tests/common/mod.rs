//! Helpers shared by the tests that build and run native code against the library.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root (the workspace that holds `ffi/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ffi/ has a parent")
        .to_path_buf()
}

/// The committed header.
pub fn header_path() -> PathBuf {
    repo_root().join("include").join("agentcompress.h")
}

/// The directory holding the `libagentcompress.so` that belongs to this test build.
///
/// The ffi crate is also an rlib, so the rustc invocation that builds the library these tests
/// link also writes `libagentcompress.so` beside the test binaries (`<target>/<profile>/deps`),
/// with the same features: nothing is rebuilt. If it is missing (an unusual cargo setup), the
/// first call runs `cargo build -p agentcompress-ffi --lib` and uses `<target>/<profile>`.
pub fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_or_build_lib).clone()
}

fn find_or_build_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe
        .parent()
        .expect("test executable has a folder")
        .to_path_buf();
    if deps.join("libagentcompress.so").is_file() {
        return deps;
    }
    let dir = deps
        .parent()
        .expect("test executable is in <target>/<profile>/deps")
        .to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target = dir.parent().expect("target dir");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root())
        .args(["build", "-p", "agentcompress-ffi", "--lib", "--target-dir"])
        .arg(target);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p agentcompress-ffi failed");
    assert!(
        dir.join("libagentcompress.so").is_file(),
        "no libagentcompress.so in {dir:?}"
    );
    dir
}

/// A command running the native program `exe` against the library in `lib` only. Cargo runs
/// tests with `LD_LIBRARY_PATH` naming the target folders, which outranks the program's
/// run path and could load a stale `libagentcompress.so` from an earlier `cargo build`.
pub fn native(exe: &Path, lib: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env("LD_LIBRARY_PATH", lib);
    cmd
}

/// Whether `tool` runs (`tool --version` succeeds).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, panicking with its output when it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and asserts success, showing stdout and stderr otherwise; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Compiles `sources` with `compiler` against the header and the shared library into `exe`.
pub fn compile(compiler: &str, flags: &[&str], sources: &[PathBuf], exe: &Path) {
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.args(flags)
        .arg("-I")
        .arg(repo_root().join("include"))
        .args(sources)
        .arg("-o")
        .arg(exe)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lagentcompress");
    run_ok(&mut cmd);
}

/// The shared model folder (`shared/models` beside the repository or above it), or
/// `$AGENTCOMPRESS_MODELS`.
pub fn models_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("AGENTCOMPRESS_MODELS") {
        return Some(PathBuf::from(d));
    }
    repo_root()
        .ancestors()
        .map(|a| a.join("shared").join("models"))
        .find(|d| d.is_dir())
}
