//! The tokenizer a variant file embeds, as bytes with a name saying how to read them back.
//!
//! A llama2.c `tokenizer.bin` is embedded as it is. Every tokenizer run by the `tokenizers`
//! crate (a Hugging Face `tokenizer.json`, or the vocabulary in a GGUF file's metadata) is
//! embedded as one JSON document named [`EMBEDDED_HF_NAME`]:
//! `{"tokenizer": <tokenizer.json>, "tokenizer_config": {bos_token, eos_token, add_bos_token,
//! chat_template}}`. The second half is what `tokenizer_config.json` would say, so the
//! special tokens, the BOS rule and the chat template survive (embedding a whole GGUF file
//! for its vocabulary would copy the weights into every variant).

use super::{gguf_tokenizer_from_file, HfTokenizer, Llama2cTokenizer, Tokenizer};
use crate::model::input_file::read_bounded;
use crate::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Name under which a [`HfTokenizer`] with its settings is embedded.
pub const EMBEDDED_HF_NAME: &str = "tokenizer+config.json";

impl HfTokenizer {
    /// The tokenizer and its special-token settings as one document, read back by
    /// [`HfTokenizer::from_embedded`].
    pub fn to_embedded(&self) -> Result<Vec<u8>> {
        let tokenizer: Value = serde_json::from_str(
            &self
                .inner()
                .to_string(false)
                .map_err(|e| Error::Internal(format!("serializing the tokenizer: {e}")))?,
        )
        .map_err(|e| Error::Internal(format!("serialized tokenizer is not JSON: {e}")))?;
        let text = |id: Option<u32>| id.and_then(|i| self.inner().id_to_token(i));
        let mut config = json!({
            "bos_token": text(self.bos_id()),
            "eos_token": text(self.eos_id()),
            "add_bos_token": self.add_bos_token(),
        });
        if let Some(t) = self.chat_template() {
            config["chat_template"] = Value::String(t.source().to_string());
        }
        serde_json::to_vec(&json!({"tokenizer": tokenizer, "tokenizer_config": config}))
            .map_err(|e| Error::Internal(format!("embedded tokenizer document: {e}")))
    }

    /// Reads a document written by [`HfTokenizer::to_embedded`]; `path` names it in errors.
    pub fn from_embedded(bytes: &[u8], path: &Path) -> Result<Self> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(path, format!("invalid JSON: {e}")))?;
        let (Some(tokenizer), Some(config)) = (doc.get("tokenizer"), doc.get("tokenizer_config"))
        else {
            return Err(Error::corrupt(
                path,
                "an embedded tokenizer needs both `tokenizer` and `tokenizer_config`",
            ));
        };
        let json = serde_json::to_vec(tokenizer)
            .map_err(|e| Error::Internal(format!("embedded tokenizer.json: {e}")))?;
        Self::with_config(&json, path, config.clone())
    }
}

/// `(name, bytes)` of the tokenizer at `path` as a variant file embeds it: a GGUF file's
/// vocabulary or a `tokenizer.json` (with the `tokenizer_config.json` beside it) as one
/// [`EMBEDDED_HF_NAME`] document; any other file (a llama2.c `tokenizer.bin`) as it is.
pub fn embeddable_tokenizer(path: &Path) -> Result<(String, Vec<u8>)> {
    let tok = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        || crate::model::gguf::has_magic(path)
    {
        Some(gguf_tokenizer_from_file(path)?)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        Some(HfTokenizer::from_file(path)?)
    } else {
        None
    };
    match tok {
        Some(t) => Ok((EMBEDDED_HF_NAME.to_string(), t.to_embedded()?)),
        None => {
            let bytes = read_bounded(path, super::MAX_TOKENIZER_BYTES, "tokenizer")?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "tokenizer.bin".into());
            Ok((name, bytes))
        }
    }
}

/// Reads back a tokenizer embedded under `name` (see [`embeddable_tokenizer`]); `origin`
/// names it in errors.
pub fn embedded_tokenizer(
    name: Option<&str>,
    bytes: &[u8],
    origin: &Path,
) -> Result<Box<dyn Tokenizer>> {
    match name {
        Some(EMBEDDED_HF_NAME) => Ok(Box::new(HfTokenizer::from_embedded(bytes, origin)?)),
        Some(n) if n.ends_with(".json") => Ok(Box::new(HfTokenizer::from_bytes(bytes, origin)?)),
        _ => Ok(Box::new(Llama2cTokenizer::from_bytes(bytes, origin)?)),
    }
}
