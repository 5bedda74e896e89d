//! Format detection: one function that loads any supported checkpoint.

use super::{llama2c, ModelWeights};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Loads a model from a llama2.c `.bin` file.
pub fn load_model(path: &Path) -> Result<ModelWeights> {
    if path.is_file() {
        return llama2c::load(path);
    }
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model file or directory here",
        ),
    ))
}

/// The tokenizer file that belongs to a model, if one sits beside it.
pub fn find_tokenizer(model_path: &Path) -> Option<PathBuf> {
    let dir = if model_path.is_dir() {
        model_path
    } else {
        model_path.parent()?
    };
    ["tokenizer.json", "tokenizer.bin"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}
