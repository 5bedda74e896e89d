//! The layering rule of `docs/ARCHITECTURE.md`: a room of the library (a top-level module of
//! `src/`) may use itself and the rooms below it in [`ORDER`], never one above. This reads every
//! `crate::...` path (and `super::` paths that climb to the crate root) in the library's source
//! files, outside comments, and lists each import that goes up as `file:line`.

use std::path::{Path, PathBuf};

/// The rooms from the bottom up. `error` also stands for the crate-root `Error` and `Result`;
/// `internal` (the hidden facade for the command line's harnesses) sits on top so no room can
/// lean on it.
const ORDER: &[&str] = &[
    "util",
    "error",
    "io",
    "model",
    "quant",
    "store",
    "pool",
    "backend",
    "engine",
    "controller",
    "router",
    "pipeline",
    "eval",
    "api",
    "internal",
];

fn rank(room: &str) -> Option<usize> {
    ORDER.iter().position(|r| *r == room)
}

/// The room a crate-root path segment names: a module, or `error` for the root re-exports.
fn room_of_segment(seg: &str) -> &str {
    if seg.starts_with(|c: char| c.is_ascii_uppercase()) {
        "error"
    } else {
        seg
    }
}

/// A line without its `//` comment (string literals in this code base hold no `//` before a
/// `crate::` path, so a plain cut is enough).
fn code_part(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path in a `{a::b, c, d::{e, f}}` group that starts at `s[0] == '{'`
/// (`s` runs to the end of the file, so a group may span lines).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut start_of_item = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                start_of_item = depth == 1;
            }
            '}' => {
                if depth <= 1 {
                    break;
                }
                depth -= 1;
            }
            ',' if depth == 1 => start_of_item = true,
            c if c.is_whitespace() => {}
            _ => {
                if start_of_item && depth == 1 {
                    let id = ident_at(&s[i..]);
                    if !id.is_empty() {
                        heads.push(id.to_string());
                    }
                }
                start_of_item = false;
            }
        }
    }
    heads
}

/// Rooms named through `crate::` in `code` (the code of one file, comments removed), with the
/// 1-based line of each path.
fn crate_paths(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("crate::") {
        // `agentcompress_crate::` or `$crate::` are not ours.
        let before = code[..pos].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[pos + "crate::".len()..];
        if rest.starts_with('{') {
            for h in group_heads(rest) {
                out.push((line_of(pos), room_of_segment(&h).to_string()));
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                out.push((line_of(pos), room_of_segment(id).to_string()));
            }
        }
    }
    // `super::super::x` that climbs out of the room to the crate root names room `x`.
    for (pos, _) in code.match_indices("super::") {
        let before = code[..pos].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &code[pos..];
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            ups += 1;
            rest = r;
        }
        if ups >= module.len() {
            let id = ident_at(rest);
            if !id.is_empty() {
                out.push((line_of(pos), room_of_segment(id).to_string()));
            }
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The offending imports of the library under `src`, as `file:line: room -> room (text)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin" || parts[0] == "lib.rs" {
            continue; // the command line sits above every room; lib.rs only declares them
        }
        let room = parts[0].trim_end_matches(".rs").to_string();
        let mut module: Vec<String> = parts
            .iter()
            .map(|p| p.trim_end_matches(".rs").to_string())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let text = std::fs::read_to_string(&file).expect("source file reads");
        let code: String = text.lines().map(code_part).collect::<Vec<_>>().join("\n");
        let lines: Vec<&str> = text.lines().collect();
        let Some(own) = rank(&room) else {
            bad.push(format!(
                "src/{}: room `{room}` is not in the documented order",
                rel.display()
            ));
            continue;
        };
        for (line, target) in crate_paths(&code, &module) {
            if target == room {
                continue;
            }
            let shown = lines.get(line - 1).map_or("", |l| l.trim());
            match rank(&target) {
                Some(t) if t < own => {}
                Some(_) => bad.push(format!(
                    "src/{}:{line}: {room} -> {target} goes up ({shown})",
                    rel.display()
                )),
                None => bad.push(format!(
                    "src/{}:{line}: {room} -> unknown room `{target}` ({shown})",
                    rel.display()
                )),
            }
        }
    }
    bad
}

#[test]
fn no_room_imports_a_room_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(
        bad.is_empty(),
        "imports that go up the order {ORDER:?}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_room_of_lib_rs_is_in_the_order() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs reads");
    let rooms: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .map(|r| r.trim_end_matches(';'))
        })
        .collect();
    assert!(!rooms.is_empty(), "no modules found in lib.rs");
    for r in &rooms {
        assert!(rank(r).is_some(), "lib.rs declares `{r}`, not in {ORDER:?}");
    }
}

/// The checker itself flags an upward import, a grouped one, one through `super::` and an
/// unknown room, and passes a downward one, each with its file and line.
#[test]
fn the_checker_flags_upward_imports_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod model;\npub mod engine;\n");
    write(
        "model/load.rs",
        "//! crate::api in a comment is fine\nuse crate::util::rng::Rng;\nuse crate::{Error, engine::Model};\n",
    );
    write("model/mod.rs", "pub mod load;\nuse super::api::Engine;\n");
    write("model/hf/x.rs", "fn f() { crate::store::read(); }\n");
    write(
        "engine/mod.rs",
        "use crate::model::Tensor;\nuse crate::nowhere::X;\n",
    );
    let bad = violations(dir.path());
    let has = |s: &str| bad.iter().any(|b| b.contains(s));
    assert!(has("src/model/load.rs:3: model -> engine"), "{bad:#?}");
    assert!(has("src/model/mod.rs:2: model -> api"), "{bad:#?}");
    assert!(has("src/model/hf/x.rs:1: model -> store"), "{bad:#?}");
    assert!(
        has("src/engine/mod.rs:2: engine -> unknown room `nowhere`"),
        "{bad:#?}"
    );
    assert_eq!(bad.len(), 4, "only those four: {bad:#?}");
}
