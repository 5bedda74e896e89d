//! The committed `include/agentcompress.h` is exactly what cbindgen generates from `ffi/src`,
//! and the shared library exports exactly the functions the header declares.
//!
//! Regenerate the header after changing the C ABI with
//! `AC_UPDATE_HEADER=1 cargo test -p agentcompress-ffi --test header`.

mod common;

use common::{header_path, lib_dir, output, repo_root};
use std::collections::BTreeSet;
use std::process::Command;

/// The header cbindgen generates from the crate's sources now.
fn generate_header() -> String {
    let ffi = repo_root().join("ffi");
    let config = cbindgen::Config::from_file(ffi.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(ffi.join("src").join("lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut bytes = Vec::new();
    bindings.write(&mut bytes);
    String::from_utf8(bytes).expect("cbindgen writes UTF-8")
}

#[test]
fn committed_header_matches_cbindgen() {
    let generated = generate_header();
    let path = header_path();
    if std::env::var_os("AC_UPDATE_HEADER").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/agentcompress.h drifted from ffi/src at line {} (committed: {:?}, generated: \
             {:?}); regenerate it with AC_UPDATE_HEADER=1 cargo test -p agentcompress-ffi --test header",
            first + 1,
            committed.lines().nth(first),
            generated.lines().nth(first)
        );
    }
}

/// `text` with C comments removed.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let block = rest.find("/*");
        let line = rest.find("//");
        match (block, line) {
            (Some(b), l) if l.is_none_or(|l| b < l) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |e| &rest[b + e + 2..]);
            }
            (_, Some(l)) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |e| &rest[l + e..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The functions the header declares: identifiers starting with `ac_` directly followed by
/// `(` outside comments and preprocessor lines (a function-pointer typedef's name is followed
/// by `)`, so it is not counted).
fn declared_functions(header: &str) -> BTreeSet<String> {
    let code = strip_comments(header);
    let mut names = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(pos) = line[i..].find("ac_") {
            let start = i + pos;
            let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = start
                + line[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(line.len() - start);
            if boundary && bytes.get(end) == Some(&b'(') {
                names.insert(line[start..end].to_string());
            }
            i = end;
        }
    }
    names
}

#[test]
fn header_parser_finds_declarations_only() {
    let h = "/* ac_fake(void) in a comment */\n#define AC_X 4\ntypedef bool (*ac_cb)(void *u);\n\
             ac_status ac_one(const char *p,\n                 int x); // ac_two(\nvoid ac_three(void);\n";
    let got: Vec<String> = declared_functions(h).into_iter().collect();
    assert_eq!(got, ["ac_one", "ac_three"]);
}

#[test]
fn library_exports_exactly_the_declared_functions() {
    if !common::have("nm") {
        println!("SKIP: nm (binutils) is not installed; cannot list the library's symbols");
        return;
    }
    let header = std::fs::read_to_string(header_path()).expect("read include/agentcompress.h");
    let declared = declared_functions(&header);
    assert!(declared.len() >= 15, "parsed too few declarations: {declared:?}");
    let so = lib_dir().join("libagentcompress.so");
    let out = output(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    assert!(out.status.success(), "nm failed on {so:?}");
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|name| name.starts_with("ac_"))
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && undeclared.is_empty(),
        "declared but not exported: {missing:?}; exported but not declared: {undeclared:?}"
    );
}
