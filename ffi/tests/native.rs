//! Native hosts: a C99 program and the C++ example compiled with the system compilers against
//! the header and `libagentcompress.so`, and the install layout found through pkg-config and
//! CMake.

mod common;

use common::{compile, have, lib_dir, models_dir, native, output, repo_root, run_ok};
use std::path::Path;
use std::process::Command;

/// `ac_status` values the tests look for in exit codes.
const AC_UNSUPPORTED: i32 = 4;

fn cpp_example() -> std::path::PathBuf {
    repo_root()
        .join("examples")
        .join("cpp")
        .join("route_and_run.cpp")
}

/// Builds the C++ example into `dir`.
fn build_example(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("route_and_run");
    compile(
        "g++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[cpp_example()],
        &exe,
    );
    exe
}

/// The value of `key=` in `line`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Checks the example's report: a route, a matching stream, and statistics of one task.
fn check_report(stdout: &str, max_tokens: u64) {
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{stdout}"))
    };
    let precision = field(line("route:"), "precision");
    assert!(precision.is_some_and(|p| p != "unknown"), "{stdout}");
    assert_eq!(field(line("taken:"), "precision"), precision, "{stdout}");
    let stats = line("stats:");
    assert_eq!(field(stats, "tasks"), Some("1"), "{stats}");
    let tokens: u64 = field(stats, "tokens").unwrap().parse().unwrap();
    assert!(tokens > 0 && tokens <= max_tokens, "{stats}");
    let per: u64 = ["fp16", "int8", "int4", "int2"]
        .iter()
        .map(|p| field(stats, p).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per, 1, "{stats}");
    assert!(line("result:").contains(&format!(" {tokens} tokens")));
}

#[test]
fn c99_program_checks_every_failure_mode() {
    if !have("cc") {
        println!("SKIP: no C compiler (cc) on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("abi_check");
    let src = repo_root().join("ffi/tests/c/abi_check.c");
    compile(
        "cc",
        &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[src],
        &exe,
    );
    let out = run_ok(&mut native(&exe, &lib_dir()));
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn header_version_macros_match_the_library() {
    if !have("cc") {
        println!("SKIP: no C compiler (cc) on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("version_check");
    let src = repo_root().join("ffi/tests/c/version_check.c");
    compile(
        "cc",
        &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[src],
        &exe,
    );
    let out = run_ok(&mut native(&exe, &lib_dir()));
    assert!(out.contains("version ok"), "{out}");
}

#[test]
fn cpp_example_routes_and_runs_the_demo_model() {
    if !have("g++") {
        println!("SKIP: no C++ compiler (g++) on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_example(dir.path());
    let stdout =
        run_ok(native(&exe, &lib_dir()).args(["builtin:demo", "-", "Plan a short trip.", "6"]));
    check_report(&stdout, 6);
}

#[test]
fn cpp_example_runs_stories260k_when_the_tokenizer_loads() {
    if !have("g++") {
        println!("SKIP: no C++ compiler (g++) on this machine");
        return;
    }
    let Some(models) = models_dir() else {
        println!("SKIP: no shared/models folder above the repository (set AGENTCOMPRESS_MODELS)");
        return;
    };
    let model = models.join("stories260K/stories260K.bin");
    let tok = models.join("stories260K/tok512.bin");
    if !model.is_file() || !tok.is_file() {
        println!("SKIP: {model:?} or {tok:?} is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_example(dir.path());
    let out = output(
        native(&exe, &lib_dir())
            .arg(&model)
            .arg(&tok)
            .args(["Once upon a time", "64"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(AC_UNSUPPORTED) && stderr.contains("tokenizer") {
        println!("SKIP: stories260K: the llama2.c tokenizer format is not supported yet: {stderr}");
        return;
    }
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    check_report(&stdout, 64);
    // The real model continues its training distribution (greedy decoding).
    assert!(stdout.contains("Lily"), "unexpected story:\n{stdout}");
}

/// Installs the library built for these tests into `prefix` with `ffi/install.sh`.
fn install(prefix: &Path) {
    run_ok(
        Command::new("bash")
            .arg(repo_root().join("ffi/install.sh"))
            .arg(prefix)
            .arg(lib_dir()),
    );
}

#[test]
fn pkg_config_finds_the_installed_library_in_one_line() {
    if !have("pkg-config") || !have("g++") {
        println!("SKIP: pkg-config or g++ is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    install(&prefix);
    let pc_path = prefix.join("lib/pkgconfig");
    let flags = run_ok(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--cflags", "--libs", "agentcompress"]),
    );
    assert!(flags.contains("-lagentcompress"), "{flags}");
    let version = run_ok(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", &pc_path)
            .args(["--modversion", "agentcompress"]),
    );
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));
    let exe = dir.path().join("route_and_run");
    let mut cmd = Command::new("g++");
    cmd.arg("-std=c++17")
        .arg(cpp_example())
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
    run_ok(&mut cmd);
    let stdout =
        run_ok(native(&exe, &prefix.join("lib")).args(["builtin:tiny", "-", "hello", "4"]));
    check_report(&stdout, 4);
}

#[test]
fn cmake_finds_the_installed_library() {
    if !have("cmake") || !have("g++") {
        println!("SKIP: cmake is not installed; AgentCompressConfig.cmake not exercised");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    install(&prefix);
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.16)\nproject(host CXX)\n\
             find_package(AgentCompress REQUIRED)\n\
             add_executable(route_and_run \"{}\")\n\
             target_compile_features(route_and_run PRIVATE cxx_std_17)\n\
             target_link_libraries(route_and_run PRIVATE AgentCompress::agentcompress)\n",
            cpp_example().display()
        ),
    )
    .unwrap();
    let build = dir.path().join("build");
    run_ok(
        Command::new("cmake")
            .arg("-S")
            .arg(&project)
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())),
    );
    run_ok(Command::new("cmake").arg("--build").arg(&build));
    let stdout = run_ok(
        native(&build.join("route_and_run"), &prefix.join("lib")).args([
            "builtin:tiny",
            "-",
            "hi",
            "3",
        ]),
    );
    check_report(&stdout, 3);
}
