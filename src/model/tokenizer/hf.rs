//! Hugging Face `tokenizer.json` tokenizers, run by the `tokenizers` crate.
//!
//! The special tokens come, in order of preference, from a sibling `tokenizer_config.json`
//! (`bos_token`, `eos_token`, `add_bos_token`), from the post-processor's template (a special
//! token before `$A` is BOS, one after it is EOS), or from well-known names among the added
//! special tokens (`<s>`, `</s>`, `<|endoftext|>`, ...). BOS is prepended as the config's
//! `add_bos_token` says, and without one as Hugging Face decides (see [`default_add_bos`]).

use super::{ChatTemplate, Tokenizer, MAX_TOKENIZER_BYTES};
use crate::model::input_file::read_bounded;
use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Added-token names taken as BOS when nothing more specific names one.
const BOS_NAMES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
/// Added-token names taken as EOS when nothing more specific names one.
const EOS_NAMES: &[&str] = &["</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"];

/// A tokenizer run by the `tokenizers` crate with its BOS/EOS resolved: a Hugging Face
/// `tokenizer.json`, or the vocabulary a GGUF file describes ([`super::gguf_tokenizer`]).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    /// Vocabulary size including added tokens, computed once: `tokenizers` rebuilds its whole
    /// vocabulary map on every `get_vocab_size` call, which made each decoded token cost a pass
    /// over the vocabulary.
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// What `tokenizer_config.json` says about one special token: absent, explicitly none, or named.
enum Named {
    Absent,
    Null,
    Token(String),
}

impl HfTokenizer {
    /// Loads `tokenizer.json`, reading `tokenizer_config.json` from the same folder if present.
    pub fn from_file(path: &Path) -> Result<Self> {
        let json = read_bounded(path, MAX_TOKENIZER_BYTES, "tokenizer.json")?;
        let config_path = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .filter(|p| p.is_file());
        let config = match &config_path {
            Some(p) => Some((p.clone(), read_json(p)?)),
            None => None,
        };
        Self::from_json(&json, path, config)
    }

    /// Builds from the bytes of a `tokenizer.json` (an embedded copy; `path` names it in
    /// errors), without a `tokenizer_config.json`.
    pub fn from_bytes(json: &[u8], path: &Path) -> Result<Self> {
        Self::from_json(json, path, None)
    }

    /// Builds from the bytes of a `tokenizer.json` (`path` names it in errors) and the parsed
    /// `tokenizer_config.json` that goes with it (an embedded copy of both).
    pub(crate) fn with_config(json: &[u8], path: &Path, config: Value) -> Result<Self> {
        Self::from_json(json, path, Some((path.to_path_buf(), config)))
    }

    /// Builds from the bytes of a `tokenizer.json` (`path` names it in errors) and an optional
    /// parsed `tokenizer_config.json` with its path.
    fn from_json(json: &[u8], path: &Path, config: Option<(PathBuf, Value)>) -> Result<Self> {
        // Plain JSON first: the `tokenizers` library panics on some malformed input (a control
        // character in a decoder's string) instead of returning its error.
        let raw: Value = serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(path, format!("invalid JSON: {e}")))?;
        // What it may still panic on in valid JSON becomes a typed error, never an unwind
        // into the caller.
        let parsed =
            std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(json)).map_err(|_| {
                Error::corrupt(
                    path,
                    "not a valid Hugging Face tokenizer.json (the tokenizer library rejected it \
                     with a panic)",
                )
            })?;
        let inner = parsed.map_err(|e| {
            Error::corrupt(
                path,
                format!("not a valid Hugging Face tokenizer.json: {e}"),
            )
        })?;
        let (template_bos, template_eos) = template_specials(&raw["post_processor"]);
        let specials = special_added_tokens(&raw);
        let by_name = |names: &[&str]| {
            names
                .iter()
                .find(|n| specials.iter().any(|s| s == *n))
                .and_then(|n| inner.token_to_id(n))
        };
        let resolve =
            |key: &str, template: Option<String>, names: &[&str]| -> Result<Option<u32>> {
                let named = match &config {
                    Some((_, cfg)) => special_in_config(cfg.get(key)),
                    None => Named::Absent,
                };
                match named {
                    Named::Null => Ok(None),
                    Named::Token(t) => match inner.token_to_id(&t) {
                        Some(id) => Ok(Some(id)),
                        None => {
                            let cfg_path = config.as_ref().map_or(path, |(p, _)| p.as_path());
                            Err(Error::corrupt(
                                cfg_path,
                                format!("{key} {t:?} is not in the vocabulary"),
                            ))
                        }
                    },
                    Named::Absent => Ok(template
                        .and_then(|t| inner.token_to_id(&t))
                        .or_else(|| by_name(names))),
                }
            };
        let bos = resolve("bos_token", template_bos.clone(), BOS_NAMES)?;
        let eos = resolve("eos_token", template_eos, EOS_NAMES)?;
        let add_bos = match &config {
            Some((_, cfg)) => cfg["add_bos_token"]
                .as_bool()
                .unwrap_or_else(|| default_add_bos(cfg, template_bos.is_some())),
            None => template_bos.is_some(),
        };
        let text = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        let chat = config
            .as_ref()
            .and_then(|(_, cfg)| config_chat_template(&cfg["chat_template"]))
            .map(|t| ChatTemplate::new(t, &text(bos), &text(eos)));
        Ok(Self::from_parts(inner, bos, eos, add_bos, chat))
    }

    /// Wraps a built `tokenizers` tokenizer whose specials are resolved; the Hugging Face and
    /// the GGUF loaders both end here.
    pub(crate) fn from_parts(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        chat: Option<ChatTemplate>,
    ) -> Self {
        let vocab_size = inner.get_vocab_size(true);
        HfTokenizer {
            inner,
            vocab_size,
            bos,
            eos,
            add_bos,
            chat,
        }
    }

    /// The `tokenizers` tokenizer inside.
    pub(crate) fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The `add_bos_token` setting as resolved (whether or not a BOS is known).
    pub fn add_bos_token(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(text, true)` prepends BOS (false when the config's `add_bos_token` is
    /// false or no BOS is known).
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }
}

impl Tokenizer for HfTokenizer {
    /// Encodes without the post-processor's special tokens, then prepends BOS when `add_bos`
    /// is set and the tokenizer [adds one](HfTokenizer::adds_bos).
    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::invalid(format!("tokenizer could not encode the text: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary of {n}"
            )));
        }
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::invalid(format!("tokenizer could not decode ids: {e}")))
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }
}

/// Whether BOS is prepended when `tokenizer_config.json` has no `add_bos_token`, as Hugging
/// Face's fast tokenizers decide: the Llama and Gemma classes default to adding it; any other
/// adds it only when the post-processor's template does. A ChatML config that names
/// `<|im_start|>` as `bos_token` (SmolLM2's GPT-2 class) thus gets no second `<|im_start|>`.
fn default_add_bos(cfg: &Value, template_adds_bos: bool) -> bool {
    let class = cfg["tokenizer_class"].as_str().unwrap_or("");
    template_adds_bos
        || ["Llama", "CodeLlama", "Gemma"]
            .iter()
            .any(|c| class.starts_with(c))
}

/// `chat_template` of `tokenizer_config.json`: a string, or a list of `{name, template}` of
/// which the one named `default` (else the first) is used.
fn config_chat_template(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(items) => items
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| items.first())
            .and_then(|t| t["template"].as_str()),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_bounded(path, MAX_TOKENIZER_BYTES, "tokenizer config")?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(path, format!("invalid JSON: {e}")))
}

/// A `bos_token`/`eos_token` entry: a string, `{"content": ...}`, `null`, or missing.
fn special_in_config(v: Option<&Value>) -> Named {
    match v {
        Some(Value::Null) => Named::Null,
        Some(Value::String(s)) => Named::Token(s.clone()),
        Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
            Some(s) => Named::Token(s.to_string()),
            None => Named::Absent,
        },
        _ => Named::Absent,
    }
}

/// Contents of the added tokens marked special.
fn special_added_tokens(raw: &Value) -> Vec<String> {
    raw["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["special"].as_bool().unwrap_or(false))
                .filter_map(|t| t["content"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The special tokens a `TemplateProcessing` single-sequence template puts before and after
/// `$A` (also inside a `Sequence` of processors).
fn template_specials(pp: &Value) -> (Option<String>, Option<String>) {
    match pp["type"].as_str() {
        Some("TemplateProcessing") => {
            let Some(items) = pp["single"].as_array() else {
                return (None, None);
            };
            let special = |item: &Value| item["SpecialToken"]["id"].as_str().map(str::to_string);
            let seq_at = items.iter().position(|i| i.get("Sequence").is_some());
            let before = seq_at.and_then(|k| items[..k].first().and_then(special));
            let after = seq_at.and_then(|k| items[k + 1..].last().and_then(special));
            (before, after)
        }
        Some("Sequence") => pp["processors"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(template_specials)
                    .fold((None, None), |acc, (b, e)| (acc.0.or(b), acc.1.or(e)))
            })
            .unwrap_or((None, None)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_gives_bos_before_and_eos_after_the_sequence() {
        let pp = json!({"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<eos>", "type_id": 0}}]});
        assert_eq!(
            template_specials(&pp),
            (Some("<bos>".into()), Some("<eos>".into()))
        );
        let seq = json!({"type": "Sequence", "processors": [{"type": "ByteLevel"}, pp]});
        assert_eq!(template_specials(&seq).0.as_deref(), Some("<bos>"));
        let only_seq = json!({"type": "TemplateProcessing", "single": [
            {"Sequence": {"id": "A", "type_id": 0}}]});
        assert_eq!(template_specials(&only_seq), (None, None));
        assert_eq!(template_specials(&Value::Null), (None, None));
    }

    #[test]
    fn chat_template_is_a_string_or_the_default_of_a_list() {
        assert_eq!(config_chat_template(&json!("{{x}}")), Some("{{x}}"));
        let list =
            json!([{"name": "tool_use", "template": "a"}, {"name": "default", "template": "b"}]);
        assert_eq!(config_chat_template(&list), Some("b"));
        assert_eq!(config_chat_template(&Value::Null), None);
    }

    #[test]
    fn bos_without_add_bos_token_follows_the_class_and_the_template() {
        // SmolLM2's tokenizer_config.json: a GPT-2 class naming <|im_start|> as bos_token.
        let chatml = json!({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>"});
        assert!(!default_add_bos(&chatml, false));
        assert!(default_add_bos(&chatml, true));
        for class in ["LlamaTokenizer", "LlamaTokenizerFast", "GemmaTokenizerFast"] {
            assert!(default_add_bos(&json!({ "tokenizer_class": class }), false));
        }
        assert!(!default_add_bos(&json!({}), false));
    }

    #[test]
    fn config_entries_parse_in_all_shapes() {
        let cfg = json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false},
                         "pad_token": null});
        let named = |k: &str| match special_in_config(cfg.get(k)) {
            Named::Token(t) => format!("token {t}"),
            Named::Null => "null".into(),
            Named::Absent => "absent".into(),
        };
        assert_eq!(named("bos_token"), "token <s>");
        assert_eq!(named("eos_token"), "token </s>");
        assert_eq!(named("pad_token"), "null");
        assert_eq!(named("unk_token"), "absent");
    }
}
