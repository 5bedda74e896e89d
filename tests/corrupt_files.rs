//! Broken checkpoints give a typed error that names the file and the problem, never a panic.
//! Each test writes one corrupt file into a temporary directory and loads it with `load_model`.

use agentcompress::model::llama2c::{expected_len, parse_header, HEADER_BYTES};
use agentcompress::model::load_model;
use agentcompress::Error;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The error's message must name `file` and contain every phrase of `problem`.
fn assert_names(e: &Error, file: &Path, problem: &[&str]) {
    let msg = e.to_string();
    assert!(
        msg.contains(&file.display().to_string()),
        "message does not name {}: {msg}",
        file.display()
    );
    for p in problem {
        assert!(msg.contains(p), "message does not say {p:?}: {msg}");
    }
}

// ---------------------------------------------------------------- llama2.c

/// A complete, valid tiny llama2.c checkpoint (dim 8, 1 layer, vocab 16) with non-zero floats.
fn llama2c_bytes(header: [i32; 7]) -> Vec<u8> {
    let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (config, _) = parse_header(Path::new("x"), &bytes).expect("valid test header");
    let floats = (expected_len(&config).unwrap() - HEADER_BYTES) / 4;
    bytes.extend((0..floats).flat_map(|i| (0.01 * (i % 97) as f32 - 0.3).to_le_bytes()));
    bytes
}

const TINY: [i32; 7] = [8, 16, 1, 2, 2, 16, 4];

fn write_file(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

#[test]
fn llama2c_valid_tiny_file_loads() {
    // The baseline the corruptions below start from is itself valid.
    let dir = TempDir::new().unwrap();
    let p = write_file(&dir, "m.bin", &llama2c_bytes(TINY));
    let w = load_model(&p).expect("valid tiny llama2.c file");
    assert_eq!(w.config.dim, 8);
}

#[test]
fn llama2c_truncated_file() {
    let dir = TempDir::new().unwrap();
    let mut b = llama2c_bytes(TINY);
    b.truncate(b.len() - 10);
    let p = write_file(&dir, "m.bin", &b);
    let e = load_model(&p).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &p, &["truncated"]);
}

#[test]
fn llama2c_bad_header_negative_dim() {
    let dir = TempDir::new().unwrap();
    let mut b = llama2c_bytes(TINY);
    b[..4].copy_from_slice(&(-8i32).to_le_bytes());
    let p = write_file(&dir, "m.bin", &b);
    let e = load_model(&p).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &p, &["dim = -8", "out of range"]);
}

#[test]
fn llama2c_trailing_garbage() {
    let dir = TempDir::new().unwrap();
    let mut b = llama2c_bytes(TINY);
    b.extend_from_slice(b"garbage!");
    let p = write_file(&dir, "m.bin", &b);
    let e = load_model(&p).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &p, &["trailing data"]);
}

// ---------------------------------------------------------------- Hugging Face

/// A temporary copy of a fixture directory from tests/fixtures/hf.
fn copy_fixture(name: &str) -> TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    let dir = TempDir::new().unwrap();
    for entry in std::fs::read_dir(&src).expect("fixture directory") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// The JSON header and the data section of a safetensors file.
fn read_safetensors(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), b[8 + n..].to_vec())
}

/// Writes a safetensors file from a header and data, padding the header to 8 bytes.
fn write_safetensors(path: &Path, header: &Map<String, Value>, data: &[u8]) {
    let mut h = serde_json::to_string(header).unwrap();
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// Copies the tied Llama fixture and applies `edit` to its safetensors header.
fn edited_checkpoint(edit: impl FnOnce(&mut Map<String, Value>)) -> (TempDir, PathBuf) {
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    let (mut header, data) = read_safetensors(&st);
    edit(&mut header);
    write_safetensors(&st, &header, &data);
    (dir, st)
}

#[test]
fn hf_unmodified_copy_loads() {
    // The baseline the corruptions below start from is itself valid.
    let (dir, _) = edited_checkpoint(|_| {});
    assert!(load_model(dir.path()).is_ok());
}

#[test]
fn safetensors_header_length_past_eof() {
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    let mut b = std::fs::read(&st).unwrap();
    let len = b.len() as u64;
    b[..8].copy_from_slice(&(len * 2).to_le_bytes());
    std::fs::write(&st, &b).unwrap();
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &["header length", "past the end"]);
}

#[test]
fn safetensors_data_offsets_out_of_range() {
    let name = "model.layers.0.mlp.up_proj.weight";
    let (dir, st) = edited_checkpoint(|h| {
        h[name]["data_offsets"] = serde_json::json!([0, 1u64 << 40]);
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &[name, "out of range"]);
}

#[test]
fn missing_tensor() {
    let name = "model.layers.1.mlp.up_proj.weight";
    let (dir, st) = edited_checkpoint(|h| {
        h.remove(name);
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &[name, "missing"]);
}

#[test]
fn wrong_tensor_shape() {
    let name = "model.layers.0.self_attn.k_proj.weight";
    let (dir, st) = edited_checkpoint(|h| {
        // Same byte count, transposed-looking shape: only the shape check can catch it.
        h[name]["shape"] = serde_json::json!([16, 64]);
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &[name, "[16, 64]", "[32, 32]", "wrong shape"]);
}

/// Copies the tied Llama fixture and replaces its config.json with `text`.
fn with_config(text: &str) -> (TempDir, PathBuf) {
    let dir = copy_fixture("llama2_tied_f32");
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, text).unwrap();
    (dir, cfg)
}

/// The fixture's config.json with `key` set to `value`.
fn config_with(key: &str, value: Value) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama2_tied_f32/config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key] = value;
    v.to_string()
}

#[test]
fn unknown_architecture() {
    let text = config_with("architectures", serde_json::json!(["MistralForCausalLM"]));
    let text = text.replace("\"llama\"", "\"mistral\"");
    let (dir, cfg) = with_config(&text);
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_names(&e, &cfg, &["MistralForCausalLM", "architecture"]);
}

#[test]
fn unimplemented_rope_scaling_is_unsupported() {
    let scaling = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    let (dir, cfg) = with_config(&config_with("rope_scaling", scaling));
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert_names(&e, &cfg, &["rope_scaling", "llama3"]);
}

#[test]
fn malformed_config_json() {
    let (dir, cfg) = with_config("{\"hidden_size\": 32, ");
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &cfg, &["not valid JSON"]);
}

#[test]
fn missing_model_file() {
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    std::fs::remove_file(&st).unwrap();
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_names(&e, &st, &["not found"]);
}

#[test]
fn shard_index_points_to_missing_shard() {
    let dir = copy_fixture("llama_sharded_f32");
    let shard = dir.path().join("model-00002-of-00003.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let index = dir.path().join("model.safetensors.index.json");
    assert_names(
        &e,
        &index,
        &["model-00002-of-00003.safetensors", "does not exist"],
    );
}

#[test]
fn random_truncations_and_byte_flips_never_panic() {
    use agentcompress::util::rng::Rng;
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut rng = Rng::new(7);
    let mut failures = 0;
    for round in 0..150 {
        let mut b = good.clone();
        match round % 3 {
            // Truncate anywhere: a complete checkpoint can never load from fewer bytes.
            0 => b.truncate(rng.below(good.len() as u64) as usize),
            // Flip a byte of the header (length field or JSON).
            1 => b[rng.below(header_end as u64) as usize] ^= 1 + rng.below(255) as u8,
            // Overwrite a header byte with a digit, which tends to keep the JSON valid but
            // changes a shape or an offset.
            _ => b[8 + rng.below(header_end as u64 - 8) as usize] = b'0' + rng.below(10) as u8,
        }
        std::fs::write(&st, &b).unwrap();
        match load_model(dir.path()) {
            Ok(_) => assert_ne!(round % 3, 0, "a truncated file loaded"),
            Err(e) => {
                failures += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty());
            }
        }
    }
    assert!(failures >= 50, "only {failures} corruptions were detected");

    let mut good_bin = llama2c_bytes(TINY);
    let bin_dir = TempDir::new().unwrap();
    let p = write_file(&bin_dir, "m.bin", &good_bin);
    for _ in 0..50 {
        let mut b = good_bin.clone();
        b.truncate(rng.below(good_bin.len() as u64) as usize);
        std::fs::write(&p, &b).unwrap();
        assert!(load_model(&p).is_err(), "a truncated llama2.c file loaded");
    }
    good_bin[rng.below(HEADER_BYTES as u64) as usize] ^= 0x80;
    std::fs::write(&p, &good_bin).unwrap();
    assert!(
        load_model(&p).is_err(),
        "a header with a flipped high bit loaded"
    );
}

/// Rewrites the tied fixture's safetensors with `edit` applied to the raw header text and the
/// header length field set to the edited text's length plus `len_delta`.
fn raw_header_checkpoint(
    edit: impl FnOnce(String) -> String,
    len_delta: i64,
) -> (TempDir, PathBuf) {
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    let b = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header = edit(String::from_utf8(b[8..8 + n].to_vec()).unwrap());
    let mut out = ((header.len() as i64 + len_delta) as u64)
        .to_le_bytes()
        .to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&b[8 + n..]);
    std::fs::write(&st, out).unwrap();
    (dir, st)
}

#[test]
fn safetensors_header_one_byte_short() {
    // The JSON still parses (its padding absorbs the byte), but the data section now starts
    // one byte early and no tensor covers its last byte.
    let (dir, st) = raw_header_checkpoint(|h| format!("{} ", h.trim_end()), -1);
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &["cover", "data bytes"]);
}

#[test]
fn safetensors_overlapping_data_offsets() {
    let (a, b) = (
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
    );
    let (dir, st) = edited_checkpoint(|h| {
        // Same size, so only the tiling check can see that `b` now reuses `a`'s bytes.
        let offsets = h[a]["data_offsets"].clone();
        h[b]["data_offsets"] = offsets;
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &["overlap"]);
}

#[test]
fn safetensors_duplicate_tensor_name() {
    let name = "model.norm.weight";
    let (dir, st) = raw_header_checkpoint(
        |h| {
            let v: Value = serde_json::from_str(&h).unwrap();
            let entry = v[name].to_string();
            let body = h.trim_end();
            format!("{},\"{name}\":{entry}}}", &body[..body.len() - 1])
        },
        0,
    );
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &["duplicate key", name]);
}

#[test]
fn safetensors_hole_in_data() {
    // Every tensor moved 4 bytes later: a hole at the start and the last tensor out of range
    // are both wrong; growing the data keeps the offsets in range so only the hole remains.
    let dir = copy_fixture("llama2_tied_f32");
    let st = dir.path().join("model.safetensors");
    let (mut header, mut data) = read_safetensors(&st);
    for (k, v) in header.iter_mut() {
        if k != "__metadata__" {
            let o = v["data_offsets"].as_array().unwrap().clone();
            let s = o[0].as_u64().unwrap() + 4;
            let e = o[1].as_u64().unwrap() + 4;
            v["data_offsets"] = serde_json::json!([s, e]);
        }
    }
    data.splice(0..0, [0u8; 4]);
    write_safetensors(&st, &header, &data);
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &["hole of 4 bytes at 0"]);
}

#[test]
fn safetensors_length_not_shape_times_dtype() {
    let name = "model.norm.weight";
    let (dir, st) = edited_checkpoint(|h| {
        let o = h[name]["data_offsets"].as_array().unwrap().clone();
        let end = o[1].as_u64().unwrap() - 4;
        h[name]["data_offsets"] = serde_json::json!([o[0], end]);
    });
    let e = load_model(dir.path()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &st, &[name, "needs"]);
}

#[test]
fn llama2c_header_with_huge_dims_does_not_wrap() {
    // Every field within its own range, but the file these dims describe has more bytes than
    // a usize can count.
    let mut b: Vec<u8> = [
        1i32 << 20,
        1 << 20,
        1 << 20,
        1 << 10,
        1 << 10,
        1 << 22,
        1 << 20,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect();
    b.extend([0u8; 64]);
    let dir = TempDir::new().unwrap();
    let p = write_file(&dir, "huge.bin", &b);
    let (config, _) = parse_header(&p, &b).unwrap();
    assert_eq!(expected_len(&config), None);
    let e = load_model(&p).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_names(&e, &p, &["too large to address"]);
}

#[test]
fn non_regular_model_and_tokenizer_files_are_refused() {
    use agentcompress::model::llama2c;
    use agentcompress::model::tokenizer::load_tokenizer;
    let dev = Path::new("/dev/zero");
    let e = llama2c::load(dev).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e = load_tokenizer(dev).err().unwrap();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let e = load_model(dev).unwrap_err();
    assert!(e.to_string().contains("/dev/zero"), "{e}");
}
