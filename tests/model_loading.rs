//! Loads every Hugging Face fixture (tests/fixtures/hf, made by scripts/make_hf_fixtures.py with
//! `transformers`) through `load_model`, runs our CPU forward pass over all positions and compares
//! with the logits transformers computed. Also loads the real stories260K llama2.c checkpoint.

mod common;

use agentcompress::backend::cpu::{CpuBackend, KvPrecision};
use agentcompress::engine::Model;
use agentcompress::model::{
    find_tokenizer, load_model, DType, ModelConfig, ModelWeights, RopeStyle,
};
use std::path::{Path, PathBuf};

/// Largest allowed |ours - transformers| over all logits.
///
/// The same bound holds for the float16 and bfloat16 fixtures: their references were computed by
/// transformers from the stored (already rounded) weights upcast to float32, and our CPU backend
/// also upcasts them exactly to float32, so both sides do float32 arithmetic on identical values
/// and differ only by summation order (~1e-6 at these sizes).
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// Tokens and row-major `[tokens, vocab]` logits from a fixture's `logits.json`.
fn reference(dir: &Path) -> (Vec<u32>, usize, Vec<f32>) {
    let text = std::fs::read_to_string(dir.join("logits.json")).expect("read logits.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse logits.json");
    let tokens = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("token id") as u32)
        .collect::<Vec<_>>();
    let vocab = v["vocab_size"].as_u64().expect("vocab_size") as usize;
    let rows = v["logits"].as_array().expect("logits");
    assert_eq!(rows.len(), tokens.len());
    let logits = rows
        .iter()
        .flat_map(|r| r.as_array().expect("logit row").iter())
        .map(|x| x.as_f64().expect("logit") as f32)
        .collect::<Vec<_>>();
    assert_eq!(logits.len(), tokens.len() * vocab);
    (tokens, vocab, logits)
}

/// Loads `name`, checks dtype and zero-copy mapping, and compares all-position logits.
fn check_fixture(name: &str, dtype: DType) -> ModelWeights {
    let dir = fixture(name);
    let weights = load_model(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(weights.config.rope_style, RopeStyle::RotateHalf);
    assert_eq!(weights.embedding.dtype(), dtype, "{name}");
    assert!(weights.embedding.is_mapped(), "{name}: embedding copied");
    assert!(weights.layers[0].wq.is_mapped(), "{name}: wq copied");
    let (tokens, vocab, want) = reference(&dir);
    assert_eq!(vocab, weights.config.vocab_size);
    // The exact f32 key/value cache: this compares the loader, not the FP16 cache (tested in
    // the backend), against the reference.
    let model = Model::new(CpuBackend::with_kv(KvPrecision::F32), &weights).expect("upload");
    let mut state = model.new_state(tokens.len()).expect("state");
    let got = model.forward(&mut state, &tokens, true).expect("forward");
    assert_eq!(got.len(), want.len());
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = want.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    assert!(
        scale > 0.5,
        "{name}: reference logits are too small to test anything"
    );
    assert!(
        max_diff <= TOL,
        "{name}: max |diff| {max_diff} > {TOL} (logit scale {scale})"
    );
    weights
}

#[test]
fn llama2_style_tied_f32_matches_transformers() {
    let w = check_fixture("llama2_tied_f32", DType::F32);
    let c = &w.config;
    assert!(c.tied_embeddings && w.classifier.is_none());
    assert_eq!((c.n_heads, c.n_kv_heads, c.rope_theta), (4, 4, 10000.0));
    assert_eq!((c.bos_token, c.eos_tokens.as_slice()), (Some(1), &[2][..]));
}

#[test]
fn llama3_style_gqa_untied_f32_matches_transformers() {
    let w = check_fixture("llama3_gqa_f32", DType::F32);
    let c = &w.config;
    assert!(!c.tied_embeddings && w.classifier.is_some());
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (6, 2, 8));
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.eos_tokens, vec![2, 3]);
    assert_eq!((c.max_seq_len, c.norm_eps), (64, 1e-5));
}

#[test]
fn qwen2_with_qkv_bias_f32_matches_transformers() {
    let w = check_fixture("qwen2_bias_f32", DType::F32);
    assert!(w.config.qkv_bias);
    let l = &w.layers[1];
    assert_eq!(l.bk.as_ref().map(|b| b.shape().to_vec()), Some(vec![16]));
    assert!(l.bq.is_some() && l.bv.is_some());
}

#[test]
fn llama_f16_with_explicit_head_dim_matches_transformers() {
    let w = check_fixture("llama_headdim_f16", DType::F16);
    assert_eq!(
        (w.config.head_dim, w.config.q_dim(), w.config.dim),
        (12, 48, 32)
    );
}

#[test]
fn qwen2_bf16_tied_matches_transformers() {
    let w = check_fixture("qwen2_tied_bf16", DType::BF16);
    assert!(w.config.qkv_bias && w.config.tied_embeddings);
}

#[test]
fn sharded_checkpoint_matches_transformers() {
    let dir = fixture("llama_sharded_f32");
    assert!(dir.join("model.safetensors.index.json").is_file());
    assert!(!dir.join("model.safetensors").exists());
    let w = check_fixture("llama_sharded_f32", DType::F32);
    assert!(w.classifier.is_some());
}

#[test]
fn stories260k_loads_zero_copy_with_published_config() {
    let Some(path) = common::shared_model("stories260K/stories260K.bin") else {
        return;
    };
    let w = load_model(&path).expect("load stories260K");
    let want = ModelConfig {
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        head_dim: 8,
        vocab_size: 512,
        max_seq_len: 512,
        rope_theta: 10000.0,
        rope_style: RopeStyle::Interleaved,
        norm_eps: 1e-5,
        tied_embeddings: true,
        qkv_bias: false,
        bos_token: Some(1),
        eos_tokens: vec![2],
    };
    assert_eq!(w.config, want);
    assert_eq!(w.config.parameter_count(), 260_032);
    assert!(w.embedding.is_mapped() && w.final_norm.is_mapped());
    for l in &w.layers {
        for (name, m) in l.matrices() {
            assert!(m.is_mapped(), "{name} was copied");
        }
    }
    let tok = find_tokenizer(&path).expect("tokenizer next to stories260K");
    assert_eq!(tok.file_name().and_then(|n| n.to_str()), Some("tok512.bin"));
}
