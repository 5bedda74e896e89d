//! Memory follows the caller's context, not the file: models declaring huge contexts
//! (a Hugging Face `max_position_embeddings`, a variant's `max_seq_len`, a llama2.c `seq_len`)
//! generate with small allocations; prompts longer than the context are errors naming both
//! lengths (or are truncated on request); `max_new_tokens` beyond the room left is reported;
//! the KV cache grows without changing the logits; impossible allocations are typed errors.

mod alloc_support;

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::backend::Backend;
use agentcompress::engine::{generate, GenerateOutput, GenerateParams, Model};
use agentcompress::model::llama2c::{expected_len, parse_header, HEADER_BYTES};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::ByteTokenizer;
use agentcompress::model::{load_model, DType};
use agentcompress::quant::{quantize_model, Precision, QuantConfig};
use agentcompress::store::{load_variant, write_variant, LoadOptions};
use agentcompress::Error;
use alloc_support::{measure, serial, CountingAlloc};
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The largest single allocation a short generation on these tiny models may make.
const SMALL: usize = 8 << 20;

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        stop_at_eos: false,
        ..Default::default()
    }
}

/// Generates `n` tokens from a short prompt with the default (caller-side) context and
/// returns the output with the largest single allocation made.
fn generate_measured<B: Backend>(m: &Model<B>, n: usize) -> (GenerateOutput, usize) {
    let (out, largest) = measure(|| generate(m, &ByteTokenizer, &[1, 5, 9], &greedy(n), |_| true));
    (out.unwrap(), largest)
}

#[test]
fn hf_checkpoint_declaring_2_pow_24_positions_runs_in_small_memory() {
    let _g = serial();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/llama2_tied_f32");
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = (1u64 << 24).into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let w = load_model(dir.path()).unwrap();
    assert_eq!(w.config.max_seq_len, 1 << 24);
    let m = Model::new(CpuBackend::new(), &w).unwrap();
    let (out, largest) = generate_measured(&m, 8);
    assert_eq!(out.ids.len(), 8);
    assert_eq!(out.context, 4096, "the default context caps the file's");
    assert!(largest < SMALL, "largest allocation {largest} bytes");
    // Logits of a fresh sequence with the model's own context: the cache still grows lazily.
    let (logits, largest) = measure(|| {
        let mut st = m.new_state(256).unwrap();
        m.forward(&mut st, &[1, 2, 3], true).unwrap()
    });
    assert_eq!(logits.len(), 3 * 128);
    assert!(largest < SMALL, "largest allocation {largest} bytes");
}

#[test]
fn variant_declaring_2_pow_24_positions_runs_in_small_memory() {
    let _g = serial();
    let mut c = preset("tiny").unwrap();
    c.n_layers = 2;
    c.max_seq_len = 1 << 24;
    let w = synthetic_weights(&c, 3, DType::F32).unwrap();
    let q = quantize_model(&w, Precision::Int8, &QuantConfig::default(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int8.acv");
    write_variant(&path, &q, "int8", &QuantConfig::default(), None).unwrap();
    let (back, idx) = load_variant(&path, LoadOptions::default()).unwrap();
    assert_eq!(idx.meta.config.max_seq_len, 1 << 24);
    let m = Model::new(CpuBackend::new(), &back).unwrap();
    let (out, largest) = generate_measured(&m, 4);
    assert_eq!(out.ids.len(), 4);
    assert!(largest < SMALL, "largest allocation {largest} bytes");
}

/// A valid llama2.c checkpoint with this header (its legacy RoPE tables sized by seq_len).
fn llama2c_file(dir: &Path, header: [i32; 7]) -> PathBuf {
    let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (config, _) = parse_header(Path::new("x"), &bytes).unwrap();
    let floats = (expected_len(&config).unwrap() - HEADER_BYTES) / 4;
    bytes.extend((0..floats).flat_map(|i| (0.01 * (i % 97) as f32 - 0.3).to_le_bytes()));
    let p = dir.join("m.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn llama2c_checkpoint_declaring_2_pow_20_positions_runs_in_small_memory() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = llama2c_file(dir.path(), [8, 16, 1, 2, 2, 16, 1 << 20]);
    let w = load_model(&p).unwrap();
    assert_eq!(w.config.max_seq_len, 1 << 20);
    let m = Model::new(CpuBackend::new(), &w).unwrap();
    let (out, largest) = generate_measured(&m, 6);
    assert_eq!(out.ids.len(), 6);
    assert!(largest < SMALL, "largest allocation {largest} bytes");
}

fn tiny_model(max_seq_len: usize) -> Model<CpuBackend> {
    let mut c = preset("tiny").unwrap();
    c.n_layers = 2;
    c.max_seq_len = max_seq_len;
    Model::new(
        CpuBackend::new(),
        &synthetic_weights(&c, 9, DType::F32).unwrap(),
    )
    .unwrap()
}

#[test]
fn prompt_longer_than_the_context_is_an_error_naming_both_lengths() {
    let m = tiny_model(64);
    let prompt: Vec<u32> = (1..=20).collect();
    let params = GenerateParams {
        context: 16,
        ..greedy(4)
    };
    let e = generate(&m, &ByteTokenizer, &prompt, &params, |_| true).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("20 tokens") && msg.contains("16 tokens"),
        "{msg}"
    );
    // A prompt that fills the model's own context exactly leaves no room either.
    let full: Vec<u32> = (0..64).map(|i| 1 + i % 100).collect();
    let e = generate(&m, &ByteTokenizer, &full, &greedy(1), |_| true).unwrap_err();
    assert!(e.to_string().contains("64 tokens"), "{e}");
}

#[test]
fn prompt_is_truncated_only_on_request_keeping_bos() {
    let m = tiny_model(64);
    let prompt: Vec<u32> = (1..=20).collect();
    let params = GenerateParams {
        context: 16,
        truncate_prompt: true,
        ..greedy(4)
    };
    let out = generate(&m, &ByteTokenizer, &prompt, &params, |_| true).unwrap();
    assert_eq!(out.prompt_tokens_dropped, 8);
    assert_eq!(out.prompt_ids.len(), 12);
    assert_eq!(out.prompt_ids[0], 1, "the leading BOS is kept");
    assert_eq!(&out.prompt_ids[1..], &prompt[9..]);
    assert_eq!(out.ids.len(), 4);
    assert!(!out.context_limited);
}

#[test]
fn max_new_tokens_beyond_the_room_left_is_reported() {
    let m = tiny_model(64);
    let prompt: Vec<u32> = (1..=10).collect();
    let tight = GenerateParams {
        context: 16,
        ..greedy(50)
    };
    let out = generate(&m, &ByteTokenizer, &prompt, &tight, |_| true).unwrap();
    assert_eq!(
        out.ids.len(),
        6,
        "generation stops when the context is full"
    );
    assert!(out.context_limited);
    assert_eq!(out.context, 16);
    let roomy = GenerateParams {
        context: 16,
        ..greedy(6)
    };
    let out = generate(&m, &ByteTokenizer, &prompt, &roomy, |_| true).unwrap();
    assert_eq!(out.ids.len(), 6);
    assert!(!out.context_limited);
    // The caller's context also bounds a bare sequence state.
    let mut st = m.new_state_with_context(4, 8).unwrap();
    assert_eq!(st.context(), 8);
    let e = m.forward(&mut st, &[1; 9], false).unwrap_err().to_string();
    assert!(
        e.contains("9 tokens") && e.contains("context of 8 tokens"),
        "{e}"
    );
}

#[test]
fn a_growing_kv_cache_gives_the_same_logits() {
    let m = tiny_model(600);
    let tokens: Vec<u32> = (0..300).map(|i| 1 + (i * 7) % 500).collect();
    // One chunk of 300 sizes the cache for all of it; chunks of 8 grow it past 256 rows.
    let mut whole = m.new_state(300).unwrap();
    let a = m.forward(&mut whole, &tokens, true).unwrap();
    let mut grown = m.new_state(8).unwrap();
    let b = m.forward(&mut grown, &tokens, true).unwrap();
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "max diff {diff}");
    // Stepping one token at a time past the initial cache agrees too.
    let mut stepped = m.new_state(1).unwrap();
    m.forward(&mut stepped, &tokens[..299], false).unwrap();
    let mut last = vec![0.0; 512];
    m.step(&mut stepped, tokens[299], &mut last).unwrap();
    let tail = &a[299 * 512..];
    let diff = tail
        .iter()
        .zip(&last)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "max diff {diff}");
}

#[test]
fn impossible_allocations_are_out_of_memory_errors() {
    let e = CpuBackend::new().alloc(usize::MAX / 8).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
    assert!(e.to_string().contains("bytes"), "{e}");
}
