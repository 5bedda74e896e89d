//! Tokenizers described by GGUF metadata (`tokenizer.ggml.*`), run by the `tokenizers` crate.
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, with the pre-tokenizer named by
//!   `tokenizer.ggml.pre` (`smollm` splits every digit on its own before the GPT-2 regex;
//!   `llama-bpe` and `qwen2` use their own regexes).
//! - `llama`: SentencePiece BPE from `tokens` and `scores` (merges ranked by the score of the
//!   merged piece), with byte fallback and the `▁` word prefix.
//!
//! Control and user-defined tokens (`token_type` 3 and 4) are matched whole inside the text;
//! control tokens decode to nothing. `tokenizer.ggml.add_bos_token` decides whether BOS is
//! prepended (by default yes for `llama`, no for `gpt2`). The vocabulary is written as a
//! `tokenizer.json` document and loaded by the `tokenizers` crate, which does the encoding.

use super::chat::ChatTemplate;
use super::HfTokenizer;
use crate::model::gguf::{GgufFile, Value};
use crate::{Error, Result};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;
use std::path::Path;

/// Llama 3's pre-tokenizer regex (`llama-bpe`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex: as Llama 3's, but every digit on its own.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `token_type` of a control token (`<|im_start|>`, `<s>`).
const CONTROL: i64 = 3;
/// `token_type` of a user-defined token, matched whole but decoded as text.
const USER_DEFINED: i64 = 4;

/// Reads the tokenizer keys of one file; errors name the file and the key.
struct Meta<'a> {
    file: &'a GgufFile,
}

impl Meta<'_> {
    fn corrupt(&self, msg: String) -> Error {
        Error::corrupt(self.file.path(), format!("GGUF tokenizer: {msg}"))
    }

    fn array(&self, key: &str) -> Result<&[Value]> {
        self.file
            .get(key)
            .ok_or_else(|| self.corrupt(format!("{key} is missing")))?
            .as_array()
            .ok_or_else(|| self.corrupt(format!("{key} is not an array")))
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.corrupt(format!("{key} holds a non-string")))
            })
            .collect()
    }

    fn opt_id(&self, key: &str, vocab: usize) -> Result<Option<u32>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
                // llama.cpp writes -1 (as u32::MAX) for "none" in some files.
                Some(id) if id == u32::MAX as u64 => Ok(None),
                _ => Err(self.corrupt(format!("{key} = {v} is not a token id below {vocab}"))),
            },
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("{key} = {v} is not a bool"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("{key} = {v} is not a string"))),
        }
    }
}

/// Opens the GGUF file at `path` and builds its tokenizer.
pub fn gguf_tokenizer_from_file(path: &Path) -> Result<HfTokenizer> {
    gguf_tokenizer(&GgufFile::open(path)?)
}

/// Builds the tokenizer an open GGUF file describes (run by the `tokenizers` crate, as a
/// Hugging Face `tokenizer.json` is).
pub fn gguf_tokenizer(file: &GgufFile) -> Result<HfTokenizer> {
    let m = Meta { file };
    let model = m
        .opt_str("tokenizer.ggml.model")?
        .ok_or_else(|| m.corrupt("tokenizer.ggml.model is missing".into()))?;
    let tokens = m.strings("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
        None => vec![1; n],
        Some(_) => m
            .array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| v.as_f64().map(|x| x as i64))
            .collect::<Option<_>>()
            .ok_or_else(|| m.corrupt("tokenizer.ggml.token_type holds a non-integer".into()))?,
    };
    if types.len() != n {
        return Err(m.corrupt(format!("{} token types for {n} tokens", types.len())));
    }
    let (doc, default_add_bos) = match model {
        "gpt2" => (gpt2_json(&m, &tokens, &types)?, false),
        "llama" => (llama_json(&m, &tokens, &types)?, true),
        other => {
            return Err(Error::Unsupported(format!(
                "tokenizer model \"{other}\" in {} (supported: gpt2, llama)",
                file.path().display()
            )))
        }
    };
    let bytes = serde_json::to_vec(&doc)
        .map_err(|e| Error::Internal(format!("tokenizer document: {e}")))?;
    let inner = tokenizers::Tokenizer::from_bytes(&bytes)
        .map_err(|e| m.corrupt(format!("the vocabulary does not build a tokenizer: {e}")))?;
    let bos = m.opt_id("tokenizer.ggml.bos_token_id", n)?;
    let eos = m.opt_id("tokenizer.ggml.eos_token_id", n)?;
    let add_bos = m
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_add_bos);
    let text = |id: Option<u32>| {
        id.map(|i| tokens[i as usize].to_string())
            .unwrap_or_default()
    };
    let chat = m
        .opt_str("tokenizer.chat_template")?
        .map(|t| ChatTemplate::new(t, &text(bos), &text(eos)));
    Ok(HfTokenizer::from_parts(inner, bos, eos, add_bos, chat))
}

fn added_tokens(tokens: &[&str], types: &[i64]) -> Vec<Json> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| t == CONTROL || t == USER_DEFINED)
        .map(|(id, (tok, &t))| {
            json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": t == CONTROL})
        })
        .collect()
}

/// The vocabulary as a `{token: id}` object (the first id wins for a repeated string).
fn vocab_object(tokens: &[&str]) -> Json {
    let mut vocab = Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        if !vocab.contains_key(*tok) {
            vocab.insert(tok.to_string(), json!(id));
        }
    }
    Json::Object(vocab)
}

fn byte_level(use_regex: bool) -> Json {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
           "use_regex": use_regex})
}

/// The `tokenizer.json` document of a byte-level BPE (`gpt2`) vocabulary.
fn gpt2_json(m: &Meta, tokens: &[&str], types: &[i64]) -> Result<Json> {
    let merges = m
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|s| {
            s.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| m.corrupt(format!("merge {s:?} is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = m.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let split = |pattern: &str| {
        json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
               "invert": false})
    };
    let (pre_tokenizer, ignore_merges) = match pre {
        "default" | "gpt2" | "gpt-2" => (byte_level(true), false),
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            false,
        ),
        "llama-bpe" | "llama3" | "smaug-bpe" => (
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_PATTERN), byte_level(false)]}),
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]}),
            false,
        ),
        other => {
            return Err(Error::Unsupported(format!(
                "pre-tokenizer \"{other}\" (tokenizer.ggml.pre) in {}; supported: default, gpt2, \
                 smollm, llama-bpe, qwen2",
                m.file.path().display()
            )))
        }
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(tokens, types),
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level(true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                  "vocab": vocab_object(tokens), "merges": merges}
    }))
}

/// The `tokenizer.json` document of a SentencePiece BPE (`llama`) vocabulary: merges of two
/// pieces whose concatenation is a piece, ranked by that piece's score (best first).
fn llama_json(m: &Meta, tokens: &[&str], types: &[i64]) -> Result<Json> {
    let scores: Vec<f64> = m
        .array("tokenizer.ggml.scores")?
        .iter()
        .map(Value::as_f64)
        .collect::<Option<_>>()
        .ok_or_else(|| m.corrupt("tokenizer.ggml.scores holds a non-number".into()))?;
    if scores.len() != tokens.len() {
        return Err(m.corrupt(format!(
            "{} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (*t, i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        if types[id] != 1 {
            continue;
        }
        for (cut, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(cut);
            if let (Some(&ia), Some(&ib)) = (ids.get(a), ids.get(b)) {
                merges.push((scores[id], id, ia, ib));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.2, x.3).cmp(&(y.2, y.3))));
    let merges: Vec<Json> = merges
        .iter()
        .map(|&(_, _, a, b)| json!([tokens[a], tokens[b]]))
        .collect();
    let unk = m
        .opt_id("tokenizer.ggml.unknown_token_id", tokens.len())?
        .map(|i| tokens[i as usize]);
    let add_prefix = m
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let mut normalizers = Vec::new();
    if add_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(tokens, types),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab_object(tokens), "merges": merges}
    }))
}
