//! Picks and loads the right tokenizer for a path.

use super::{gguf_tokenizer_from_file, HfTokenizer, Llama2cTokenizer, Tokenizer};
use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Loads a tokenizer: a Hugging Face `tokenizer.json` (a `.json` name, or content that starts
/// like a JSON object), the metadata of a GGUF model file (a `.gguf` name or the GGUF magic), or
/// otherwise a llama2.c `tokenizer.bin`. A directory is searched for
/// `tokenizer.json`, then `tokenizer.bin`.
pub fn load_tokenizer(path: &Path) -> Result<Box<dyn Tokenizer>> {
    if path.is_dir() {
        for name in ["tokenizer.json", "tokenizer.bin"] {
            let candidate = path.join(name);
            if candidate.is_file() {
                return load_tokenizer(&candidate);
            }
        }
        return Err(Error::invalid(format!(
            "{} holds neither tokenizer.json nor tokenizer.bin",
            path.display()
        )));
    }
    let is_gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        || crate::model::gguf::has_magic(path);
    if is_gguf {
        return Ok(Box::new(gguf_tokenizer_from_file(path)?));
    }
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || starts_like_json(path)?;
    if is_json {
        Ok(Box::new(HfTokenizer::from_file(path)?))
    } else {
        Ok(Box::new(Llama2cTokenizer::from_file(path)?))
    }
}

/// True when the file begins with `{` followed by whitespace or `"` (a llama2.c file starts
/// with a little-endian max_token_length, whose second byte is 0 for any sane length).
fn starts_like_json(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    let (mut file, _) = crate::model::input_file::open_regular(path)?;
    let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(n == 2 && head[0] == b'{' && (head[1].is_ascii_whitespace() || head[1] == b'"'))
}
