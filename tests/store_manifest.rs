//! A variant directory whose manifest and files disagree: each way of opening a listed variant
//! (resident, streamed, routed engine, variant set, evaluation) refuses a file whose header
//! says another precision, model or length, and the manifest accepts only plain file names
//! inside its directory, one file per precision, each precision once. Errors never echo the
//! bytes of the file opened.

mod common;

use agentcompress::api::{open_variant, Device, Engine, VariantOpenOptions};
use agentcompress::pipeline::{evaluate_variants, SelfText, VariantSet};
use agentcompress::quant::Precision;
use agentcompress::store::Manifest;
use agentcompress::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// stories260K quantized (RTN) into a temporary directory, built once.
fn built(root: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = common::fixture_dir("store_manifest-built").join("variants");
        common::build_stories_variants(root, &out);
        out
    })
}

/// A copy of the built directory inside a fresh temporary directory (`root/variants`), so a
/// test can also place files beside it.
fn copy() -> Option<(tempfile::TempDir, PathBuf)> {
    let stories = common::stories260k_dir()?;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("variants");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(built(&stories)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    Some((root, dir))
}

fn opts(p: Precision, pool_budget: Option<u64>) -> VariantOpenOptions {
    VariantOpenOptions {
        precision: p,
        device: Device::Cpu,
        pool_budget,
        ..Default::default()
    }
}

fn open_err(dir: &Path, p: Precision, pool_budget: Option<u64>) -> Error {
    match open_variant(dir, &opts(p, pool_budget)) {
        Ok(_) => panic!("the {p} variant of {} must not open", dir.display()),
        Err(e) => e,
    }
}

fn engine_err(dir: &Path) -> Error {
    match Engine::builder(dir).device(Device::Cpu).build() {
        Ok(_) => panic!("{} must not open as an engine", dir.display()),
        Err(e) => e,
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn is_corrupt_naming(e: &Error, parts: &[&str]) -> bool {
    let s = e.to_string();
    matches!(e, Error::Corrupt { .. }) && parts.iter().all(|p| s.contains(p))
}

#[test]
fn a_variant_copied_over_another_is_refused_on_every_load_path() {
    let Some((_root, dir)) = copy() else {
        return;
    };
    std::fs::copy(dir.join("int2.acv"), dir.join("int8.acv")).unwrap();
    let want = ["holds the int2 variant", "lists it as int8", "int8.acv"];
    for budget in [None, Some(1 << 20)] {
        let e = open_err(&dir, Precision::Int8, budget);
        assert!(is_corrupt_naming(&e, &want), "{budget:?}: {e}");
    }
    let e = engine_err(&dir);
    assert!(is_corrupt_naming(&e, &want), "{e}");
    let e = VariantSet::open_dir(&dir, true)
        .err()
        .expect("a variant set");
    assert!(is_corrupt_naming(&e, &want), "{e}");
    let e = evaluate_variants(
        &dir,
        None,
        SelfText {
            n_seqs: 1,
            len: 4,
            seed: 1,
        },
    )
    .unwrap_err();
    assert!(is_corrupt_naming(&e, &want), "{e}");
    // The precisions the manifest lists correctly still open.
    assert!(open_variant(&dir, &opts(Precision::Int4, None)).is_ok());
}

#[test]
fn manifest_config_and_file_length_are_checked_against_the_headers() {
    let Some((_root, dir)) = copy() else {
        return;
    };
    edit_manifest(&dir, |v| v["config"]["max_seq_len"] = 128.into());
    for budget in [None, Some(1 << 20)] {
        let e = open_err(&dir, Precision::Fp16, budget);
        assert!(
            is_corrupt_naming(&e, &["model config", "`max_seq_len`"]),
            "{e}"
        );
    }
    assert!(is_corrupt_naming(&engine_err(&dir), &["`max_seq_len`"]));

    let Some((_root, dir)) = copy() else {
        return;
    };
    edit_manifest(&dir, |v| v["quant"]["int4_group"] = 32.into());
    let e = open_err(&dir, Precision::Int4, None);
    assert!(
        is_corrupt_naming(&e, &["quantization", "`int4_group`"]),
        "{e}"
    );

    let Some((_root, dir)) = copy() else {
        return;
    };
    edit_manifest(&dir, |v| v["variants"][2]["file_bytes"] = 4096.into());
    let e = open_err(&dir, Precision::Int4, Some(1 << 20));
    assert!(is_corrupt_naming(&e, &["manifest says 4096"]), "{e}");
}

#[test]
fn manifest_file_names_must_be_plain_names_in_the_directory() {
    let Some((root, dir)) = copy() else {
        return;
    };
    // A file outside the directory that is not a variant: its bytes must not be echoed.
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "SECRET-BYTES-0123456789 ".repeat(20)).unwrap();
    for name in [
        secret.to_str().unwrap().to_string(),
        "../secret.txt".to_string(),
        "sub/int8.acv".to_string(),
        "..".to_string(),
        String::new(),
    ] {
        edit_manifest(&dir, |v| v["variants"][1]["file"] = name.clone().into());
        for e in [
            Manifest::read(&dir).unwrap_err(),
            open_err(&dir, Precision::Fp16, None),
            engine_err(&dir),
        ] {
            assert!(
                is_corrupt_naming(&e, &["manifest.json", "file"]),
                "{name:?}: {e}"
            );
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }
    // A plain name inside the directory that is not a variant: refused without its bytes.
    std::fs::copy(&secret, dir.join("notes.txt")).unwrap();
    edit_manifest(&dir, |v| v["variants"][1]["file"] = "notes.txt".into());
    let e = open_err(&dir, Precision::Int8, None);
    assert!(is_corrupt_naming(&e, &["`magic`", "notes.txt"]), "{e}");
    assert!(!e.to_string().contains("SECRET"), "{e}");
}

#[test]
fn one_file_for_two_precisions_or_a_duplicate_entry_is_an_error() {
    let Some((_root, dir)) = copy() else {
        return;
    };
    edit_manifest(&dir, |v| v["variants"][1]["file"] = "int2.acv".into());
    let e = Manifest::read(&dir).unwrap_err();
    assert!(
        is_corrupt_naming(&e, &["int8 and int2 variants both point at `int2.acv`"]),
        "{e}"
    );
    assert!(is_corrupt_naming(&engine_err(&dir), &["both point at"]));

    let Some((_root, dir)) = copy() else {
        return;
    };
    edit_manifest(&dir, |v| {
        let first = v["variants"][0].clone();
        v["variants"].as_array_mut().unwrap().push(first);
    });
    let e = open_err(&dir, Precision::Fp16, Some(1 << 20));
    assert!(
        is_corrupt_naming(&e, &["fp16 variant is listed twice"]),
        "{e}"
    );
}
