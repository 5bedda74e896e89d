//! SmolLM2-135M-Instruct (Q4_1 GGUF) through the engine against independent references:
//! token ids from the reference tokenizer (`scripts/gguf_tokenizer_reference.py`) and greedy
//! chat replies from a plain numpy forward pass (`scripts/gguf_reference.py`), token for token.
//! Skipped, with a message, when the model file is absent (it lives beside the project, in
//! `../shared/models`).

mod common;

use agentcompress::api::{ChatMessage, Device, Engine};
use agentcompress::engine::{GenerateParams, SamplingParams};
use agentcompress::model::tokenizer::load_tokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn model_path() -> Option<PathBuf> {
    common::shared_model("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    let Some(path) = model_path() else { return };
    let tok = load_tokenizer(&path).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    let cases = fixture("smollm2_tokens.json");
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        // add_bos_token is false: asking for BOS adds none.
        assert_eq!(tok.encode(text, true).unwrap(), want, "{text:?}");
        let back = tok.decode(&want).unwrap();
        let plain: String = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
            .iter()
            .fold(text.to_string(), |s, sp| s.replace(sp, ""));
        assert_eq!(back, plain, "decode of {text:?} skips control tokens");
    }
}

#[test]
fn greedy_chat_equals_the_independent_reference() {
    let Some(path) = model_path() else { return };
    let engine = Engine::builder(&path).device(Device::Cpu).build().unwrap();
    let c = engine.config();
    assert_eq!(
        (c.dim, c.n_layers, c.n_heads, c.n_kv_heads),
        (576, 30, 9, 3)
    );
    assert!(c.tied_embeddings && c.eos_tokens.contains(&2));
    let cases = fixture("smollm2_greedy.json");
    for case in cases["cases"].as_array().unwrap() {
        let mut messages = Vec::new();
        if let Some(s) = case["system"].as_str() {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", case["user"].as_str().unwrap()));
        let prompt = ids(&case["prompt_ids"]);
        assert_eq!(
            engine.encode_chat(&messages).unwrap(),
            prompt,
            "{messages:?}"
        );
        let expected = ids(&case["expected"]);
        let params = GenerateParams {
            max_new_tokens: expected.len(),
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            stop_at_eos: true,
            ..Default::default()
        };
        let r = engine.chat(&messages, &params, |_| true).unwrap();
        let mut got = r.output.ids.clone();
        if r.output.hit_eos {
            got.push(2);
        }
        assert_eq!(got, expected, "{messages:?}: {:?}", r.output.text);
    }
}
