//! GGUF reading: every block type against the `gguf` Python package's reference dequantizer
//! (fixtures from `scripts/make_gguf_fixtures.py`), every metadata value type, alignment,
//! versions, the `llama` / `qwen2` mappings, and malformed files as typed errors.

use agentcompress::model::gguf::{GgmlType, GgufFile, Value};
use agentcompress::model::load::{detect_format, load_model, ModelFormat};
use agentcompress::model::RopeStyle;
use agentcompress::Error;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

const TYPES: [&str; 13] = [
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k",
];

#[test]
fn every_block_type_matches_the_reference_dequantizer_bit_for_bit() {
    let f = GgufFile::open(&fixture("blocks.gguf")).unwrap();
    for name in TYPES {
        let info = f.info(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.ty.name().to_lowercase(), name);
        let got = f.tensor_f32(name).unwrap().unwrap();
        let want: Vec<f32> = std::fs::read(fixture(&format!("expected/{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} vs {w}");
        }
        // The engine's view: [out, in] over the same row-major data.
        let t = f.tensor(name).unwrap().unwrap();
        assert_eq!(t.shape(), &[info.dims[1] as usize, info.dims[0] as usize]);
        assert_eq!(t.to_f32_vec(), got, "{name}");
        if matches!(info.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            assert!(t.is_mapped(), "{name} is a zero-copy view");
        }
    }
}

#[test]
fn every_metadata_value_type_reads_back() {
    let f = GgufFile::open(&fixture("blocks.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(get("test.u8"), Value::U8(200));
    assert_eq!(get("test.i8"), Value::I8(-100));
    assert_eq!(get("test.u16"), Value::U16(60000));
    assert_eq!(get("test.i16"), Value::I16(-30000));
    assert_eq!(get("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(get("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), Value::F32(0.15625));
    assert_eq!(get("test.bool"), Value::Bool(true));
    assert_eq!(get("test.string").as_str(), Some("héllo, wörld"));
    assert_eq!(get("test.u64"), Value::U64((1 << 63) + 5));
    assert_eq!(get("test.i64"), Value::I64(-(1 << 62)));
    assert_eq!(get("test.f64"), Value::F64(-1.0e300));
    let ints: Vec<i64> = get("test.array_i32")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as i64)
        .collect();
    assert_eq!(ints, [1, -2, 3]);
    let strs: Vec<&str> = f
        .get("test.array_string")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "bc", ""]);
    let nested = get("test.array_nested");
    let inner: Vec<usize> = nested
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_array().unwrap().len())
        .collect();
    assert_eq!(inner, [2, 1]);
    assert_eq!(get("general.architecture").as_str(), Some("fixture"));
}

#[test]
fn version_2_reads_like_version_3() {
    let mut bytes = std::fs::read(fixture("blocks.gguf")).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v2.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensor_f32("q6_k").unwrap().unwrap().len(), 512);
}

/// A minimal GGUF writer for the structural tests.
mod writer {
    pub enum Kv {
        U32(u32),
        F32(f32),
        Str(&'static str),
        Bool(bool),
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// Tensors are `(name, dims innermost first, ggml type id, data)`.
    pub fn gguf(kvs: &[(&str, Kv)], tensors: &[(String, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            string(&mut out, k);
            match v {
                Kv::U32(x) => {
                    out.extend(4u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::F32(x) => {
                    out.extend(6u32.to_le_bytes());
                    out.extend(x.to_le_bytes());
                }
                Kv::Bool(b) => {
                    out.extend(7u32.to_le_bytes());
                    out.push(*b as u8);
                }
                Kv::Str(s) => {
                    out.extend(8u32.to_le_bytes());
                    string(&mut out, s);
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for (_, _, _, data) in tensors {
            out.extend(data);
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        out
    }
}

use writer::{gguf, Kv};

/// f32 bytes of `n` distinct values starting at `seed`.
fn f32_data(n: usize, seed: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (seed + i as f32 * 0.001).to_le_bytes())
        .collect()
}

/// A tiny model of architecture `arch` (dim 8, hidden 16, 2 layers, 2 heads, 1 KV head,
/// vocab 10) in f32, with or without `output.weight`.
fn tiny_model(arch: &'static str, untied: bool) -> Vec<u8> {
    let key = |k: &str| -> &'static str { Box::leak(format!("{arch}.{k}").into_boxed_str()) };
    let kvs = vec![
        ("general.architecture", Kv::Str(arch)),
        (key("block_count"), Kv::U32(2)),
        (key("context_length"), Kv::U32(64)),
        (key("embedding_length"), Kv::U32(8)),
        (key("feed_forward_length"), Kv::U32(16)),
        (key("attention.head_count"), Kv::U32(2)),
        (key("attention.head_count_kv"), Kv::U32(1)),
        (key("rope.freq_base"), Kv::F32(5000.0)),
        (key("attention.layer_norm_rms_epsilon"), Kv::F32(1e-6)),
        ("tokenizer.ggml.bos_token_id", Kv::U32(1)),
        ("tokenizer.ggml.eos_token_id", Kv::U32(2)),
        ("tokenizer.ggml.eot_token_id", Kv::U32(3)),
        ("tokenizer.ggml.add_bos_token", Kv::Bool(false)),
    ];
    let mut t: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>| {
        let n = dims.iter().product::<u64>() as usize;
        let seed = t.len() as f32;
        t.push((name, dims, 0, f32_data(n, seed)));
    };
    // Sorted by name as text, as converters write them: blk.0, blk.1, then the rest.
    for i in [1, 0] {
        for (s, dims) in [
            ("attn_k.weight", vec![8, 4]),
            ("attn_norm.weight", vec![8]),
            ("attn_output.weight", vec![8, 8]),
            ("attn_q.weight", vec![8, 8]),
            ("attn_v.weight", vec![8, 4]),
            ("ffn_down.weight", vec![16, 8]),
            ("ffn_gate.weight", vec![8, 16]),
            ("ffn_norm.weight", vec![8]),
            ("ffn_up.weight", vec![8, 16]),
        ] {
            add(format!("blk.{i}.{s}"), dims);
        }
        if arch == "qwen2" {
            add(format!("blk.{i}.attn_q.bias"), vec![8]);
            add(format!("blk.{i}.attn_k.bias"), vec![4]);
            add(format!("blk.{i}.attn_v.bias"), vec![4]);
        }
    }
    add("output_norm.weight".into(), vec![8]);
    if untied {
        add("output.weight".into(), vec![8, 10]);
    }
    add("token_embd.weight".into(), vec![8, 10]);
    gguf(&kvs, &t)
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn llama_maps_onto_the_engine_config_with_a_tied_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(dir.path(), "tiny.gguf", &tiny_model("llama", false));
    assert_eq!(detect_format(&p).unwrap(), ModelFormat::Gguf);
    let w = load_model(&p).unwrap();
    let c = &w.config;
    assert_eq!(
        (
            c.dim,
            c.hidden_dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim
        ),
        (8, 16, 2, 2, 1, 4)
    );
    assert_eq!((c.vocab_size, c.max_seq_len), (10, 64));
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    assert_eq!((c.rope_theta, c.norm_eps), (5000.0, 1e-6));
    assert!(c.tied_embeddings && w.classifier.is_none() && !c.qkv_bias);
    assert_eq!((c.bos_token, c.eos_tokens.clone()), (Some(1), vec![2, 3]));
    // File dims [in, out] = [8, 16] become [out, in] = [16, 8] over the same bytes: row r of
    // the engine's matrix is elements r*8 .. r*8+8 of the data.
    let f = GgufFile::open(&p).unwrap();
    let raw = f.tensor_f32("blk.1.ffn_gate.weight").unwrap().unwrap();
    let gate = &w.layers[1].w_gate;
    assert_eq!(gate.shape(), &[16, 8]);
    assert_eq!(gate.to_f32_vec(), raw);
    assert_eq!(w.layers[0].wk.shape(), &[4, 8]);
    assert_eq!(w.embedding.shape(), &[10, 8]);
}

#[test]
fn qwen2_has_biases_rotate_half_and_an_untied_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(dir.path(), "q.gguf", &tiny_model("qwen2", true));
    let w = load_model(&p).unwrap();
    assert_eq!(w.config.rope_style, RopeStyle::RotateHalf);
    assert!(w.config.qkv_bias && w.layers[0].bq.is_some());
    assert!(!w.config.tied_embeddings);
    assert_eq!(w.classifier.as_ref().unwrap().shape(), &[10, 8]);
}

#[test]
fn a_missing_tensor_and_an_unknown_architecture_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model("llama", false);
    let p = write_tmp(dir.path(), "m.gguf", &bytes.clone());
    let w = load_model(&p).unwrap();
    assert_eq!(w.layers.len(), 2);
    // Same-length replacements keep the file well-formed apart from the name.
    let p = write_tmp(
        dir.path(),
        "m2.gguf",
        &same_len_replace(&bytes, "blk.1.attn_q.weight", "blk.1.attn_x.weight"),
    );
    let e = load_model(&p).unwrap_err().to_string();
    assert!(
        e.contains("blk.1.attn_q.weight") && e.contains("missing"),
        "{e}"
    );
    let p = write_tmp(
        dir.path(),
        "m3.gguf",
        &same_len_replace(&bytes, "llama", "gpt-j"),
    );
    let e = load_model(&p).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("gpt-j"),
        "{e}"
    );
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn same_len_replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// Opening `bytes` must fail with a typed error (never a panic); returns its message.
fn open_err(bytes: &[u8]) -> (Error, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_tmp(dir.path(), "bad.gguf", bytes);
    let e = GgufFile::open(&p).unwrap_err();
    let s = e.to_string();
    (e, s)
}

#[test]
fn every_truncation_of_a_file_is_a_corrupt_error() {
    let bytes = std::fs::read(fixture("blocks.gguf")).unwrap();
    for len in (0..bytes.len()).step_by(7) {
        let dir = tempfile::tempdir().unwrap();
        let p = write_tmp(dir.path(), "t.gguf", &bytes[..len]);
        match GgufFile::open(&p) {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("length {len}: unexpected error kind {e}"),
            // Cutting only trailing padding leaves a valid file.
            Ok(g) => assert!(
                g.tensors().iter().all(|t| g.tensor_f32(&t.name).is_ok()),
                "length {len}"
            ),
        }
    }
}

#[test]
fn malformed_headers_are_typed_errors_naming_the_problem() {
    let good = tiny_model("llama", false);
    let (_, e) = open_err(b"GGUX\x03\0\0\0");
    assert!(e.contains("magic"), "{e}");
    let mut v = good.clone();
    v[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(open_err(&v).0, Error::Unsupported(_)));
    v[4..8].copy_from_slice(&3u32.to_be_bytes());
    let (e, s) = open_err(&v);
    assert!(
        matches!(e, Error::Unsupported(_)) && s.contains("big-endian"),
        "{s}"
    );
    v[4..8].copy_from_slice(&77u32.to_le_bytes());
    assert!(open_err(&v).1.contains("version 77"));
    // A tensor count far beyond the file's size is refused before allocating.
    let mut v = good.clone();
    v[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err(&v).1.contains("tensor count"));
    let mut v = good.clone();
    v[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(open_err(&v).1.contains("metadata count"));
    // The first key's length, then its value type.
    let mut v = good.clone();
    v[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(open_err(&v).1.contains("length of key"));
    let mut v = good.clone();
    let key_len = "general.architecture".len();
    v[32 + key_len..36 + key_len].copy_from_slice(&99u32.to_le_bytes());
    assert!(open_err(&v).1.contains("unknown value type 99"));
    // A bool that is neither 0 nor 1.
    let at = good
        .windows(b"add_bos_token".len())
        .position(|w| w == b"add_bos_token")
        .unwrap()
        + b"add_bos_token".len()
        + 4;
    let mut v = good.clone();
    v[at] = 7;
    assert!(open_err(&v).1.contains("bool of value 7"));
}

#[test]
fn bad_tensor_infos_are_typed_errors() {
    let t = |dims: Vec<u64>, ty: u32, data: Vec<u8>| vec![("w".to_string(), dims, ty, data)];
    let arch = [("general.architecture", Kv::Str("llama"))];
    // Innermost dimension not a whole number of blocks.
    let (_, e) = open_err(&gguf(&arch, &t(vec![33], 8, vec![0; 64])));
    assert!(e.contains("not a multiple of the Q8_0 block"), "{e}");
    // Data running past the end.
    let (_, e) = open_err(&gguf(&arch, &t(vec![64, 64], 0, vec![0; 64])));
    assert!(e.contains("runs past the end"), "{e}");
    // Five dimensions.
    let (_, e) = open_err(&gguf(&arch, &t(vec![1, 1, 1, 1, 1], 0, vec![0; 4])));
    assert!(e.contains("5 dimensions"), "{e}");
    // Dimensions whose product overflows.
    let (_, e) = open_err(&gguf(&arch, &t(vec![1 << 40, 1 << 40], 0, vec![0; 4])));
    assert!(e.contains("overflow"), "{e}");
    // Two tensors with one name.
    let two = vec![
        ("w".to_string(), vec![8], 0, vec![0; 32]),
        ("w".to_string(), vec![8], 0, vec![0; 32]),
    ];
    assert!(open_err(&gguf(&arch, &two)).1.contains("appears twice"));
    // A misaligned offset: it follows the dimension count (4 bytes), the dimension (8) and
    // the type (4).
    let mut v = gguf(&arch, &t(vec![8], 0, vec![0; 32]));
    let at = v
        .windows(9)
        .position(|w| w == b"\x01\0\0\0\x08\0\0\0\0")
        .unwrap()
        + 16;
    v[at..at + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(open_err(&v).1.contains("not aligned"), "offset patch");
}

#[test]
fn a_type_that_cannot_be_dequantized_is_unsupported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gguf(
        &[("general.architecture", Kv::Str("llama"))],
        &[("iq".to_string(), vec![256], 23, vec![0; 136])],
    );
    let p = write_tmp(dir.path(), "iq.gguf", &bytes);
    let f = GgufFile::open(&p).unwrap();
    let e = f.tensor("iq").unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert!(
        e.to_string().contains("IQ4_XS") && e.to_string().contains("iq"),
        "{e}"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random byte edits of a valid file never panic: the file opens (and every tensor
        /// then dequantizes or is refused), or opening fails with a typed error.
        #[test]
        fn mutated_files_never_panic(edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
            let mut bytes = std::fs::read(fixture("blocks.gguf")).unwrap();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let dir = tempfile::tempdir().unwrap();
            let p = write_tmp(dir.path(), "fuzz.gguf", &bytes);
            if let Ok(f) = GgufFile::open(&p) {
                for t in f.tensors() {
                    let _ = f.tensor(&t.name);
                }
            }
        }
    }
}
