//! One entry point that loads a model from a path, whatever its on-disk format, and finds the
//! tokenizer that ships beside it.

use super::{gguf, hf, llama2c, ModelWeights};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The on-disk formats [`load_model`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single llama2.c `.bin` checkpoint file.
    Llama2c,
    /// A single GGUF file (llama.cpp's format), its tokenizer in its metadata.
    Gguf,
    /// A Hugging Face directory: `config.json` plus safetensors.
    HuggingFace,
    /// A variant-store directory (`manifest.json` plus `.acv` files, written by
    /// `agentcompress quantize`). Its matrices are packed, so [`load_model`] does not read it:
    /// `crate::store` (one level above this module) does, and `crate::api::open_variant` opens
    /// it as an engine.
    VariantStore,
}

/// The marker file of a variant-store directory. Defined here, in the lowest room that needs
/// it; `crate::store` re-exports it as `MANIFEST_FILE`.
pub const VARIANT_MANIFEST: &str = "manifest.json";

/// True when `dir` holds a variant manifest and at least one `.acv` variant file.
fn is_variant_dir(dir: &Path) -> bool {
    dir.join(VARIANT_MANIFEST).is_file()
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("acv"))
            })
        })
}

/// Decides the format of `path` from what is there (a file, or a directory and its contents).
pub fn detect_format(path: &Path) -> Result<ModelFormat> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        let gguf_name = path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("gguf"));
        if gguf_name || gguf::has_magic(path) {
            return Ok(ModelFormat::Gguf);
        }
        return Ok(ModelFormat::Llama2c);
    }
    if meta.is_dir() {
        // Directory formats, most specific marker first.
        if is_variant_dir(path) {
            return Ok(ModelFormat::VariantStore);
        }
        if path.join(hf::CONFIG_FILE).is_file() {
            return Ok(ModelFormat::HuggingFace);
        }
        return Err(Error::invalid(format!(
            "{} is a directory but not a model: it has no {} (Hugging Face checkpoint) and no \
             {VARIANT_MANIFEST} with .acv files (variant store)",
            path.display(),
            hf::CONFIG_FILE
        )));
    }
    Err(Error::invalid(format!(
        "{} is neither a model file nor a model directory",
        path.display()
    )))
}

/// Loads the model at `path`: a llama2.c `.bin` file, a GGUF file or a Hugging Face directory. A variant
/// directory is recognised but refused with a message naming what opens it (its matrices are
/// packed, not dense tensors).
pub fn load_model(path: &Path) -> Result<ModelWeights> {
    match detect_format(path)? {
        ModelFormat::Llama2c => llama2c::load(path),
        ModelFormat::Gguf => gguf::load(path),
        ModelFormat::HuggingFace => hf::load(path),
        ModelFormat::VariantStore => Err(Error::Unsupported(format!(
            "{} is a variant directory: open one precision of it with \
             agentcompress::api::open_variant or agentcompress::store::load_variant",
            path.display()
        ))),
    }
}

/// The tokenizer shipped with the model at `path`, if one is there: `tokenizer.json` inside a
/// Hugging Face directory; a GGUF file itself (its metadata holds the vocabulary); beside a
/// llama2.c file, `tok<vocab>.bin` (vocab from its header), then `tokenizer.bin`.
pub fn find_tokenizer(model_path: &Path) -> Option<PathBuf> {
    match detect_format(model_path).ok()? {
        ModelFormat::HuggingFace => Some(model_path.join("tokenizer.json")).filter(|p| p.is_file()),
        // The vocabulary is part of the file's metadata.
        ModelFormat::Gguf => Some(model_path.to_path_buf()),
        // Variant files embed their tokenizer; a loose file beside them is a fallback.
        ModelFormat::VariantStore => ["tokenizer.json", "tokenizer.bin"]
            .into_iter()
            .map(|n| model_path.join(n))
            .find(|p| p.is_file()),
        ModelFormat::Llama2c => {
            let dir = model_path.parent()?;
            let mut candidates = Vec::new();
            if let Some(vocab) = llama2c_vocab(model_path) {
                candidates.push(dir.join(format!("tok{vocab}.bin")));
            }
            candidates.push(dir.join("tokenizer.bin"));
            candidates.into_iter().find(|p| p.is_file())
        }
    }
}

/// The vocabulary size in a llama2.c header, when the file has a plausible one.
fn llama2c_vocab(path: &Path) -> Option<usize> {
    use std::io::Read;
    let mut head = [0u8; llama2c::HEADER_BYTES];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    llama2c::parse_header(path, &head)
        .ok()
        .map(|(c, _)| c.vocab_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_and_rejects_other_directories() {
        let dir = tempfile::tempdir().unwrap();
        let e = detect_format(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert_eq!(detect_format(dir.path()).unwrap(), ModelFormat::HuggingFace);
        let f = dir.path().join("m.bin");
        std::fs::write(&f, [0u8; 4]).unwrap();
        assert_eq!(detect_format(&f).unwrap(), ModelFormat::Llama2c);
        let vdir = dir.path().join("variants");
        std::fs::create_dir(&vdir).unwrap();
        std::fs::write(vdir.join(VARIANT_MANIFEST), "{}").unwrap();
        assert!(detect_format(&vdir).is_err(), "a manifest without variants");
        std::fs::write(vdir.join("fp16.acv"), "x").unwrap();
        assert_eq!(detect_format(&vdir).unwrap(), ModelFormat::VariantStore);
        let e = load_model(&vdir).unwrap_err().to_string();
        assert!(e.contains("variant directory"), "{e}");
        assert!(matches!(
            detect_format(&dir.path().join("nope")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn finds_tokenizers_by_vocab_then_generic_name() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.bin");
        let header: Vec<u8> = [64i32, 172, 5, 8, 4, 512, 512]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&model, header).unwrap();
        assert_eq!(find_tokenizer(&model), None);
        std::fs::write(dir.path().join("tokenizer.bin"), b"x").unwrap();
        assert_eq!(
            find_tokenizer(&model),
            Some(dir.path().join("tokenizer.bin"))
        );
        std::fs::write(dir.path().join("tok512.bin"), b"x").unwrap();
        assert_eq!(find_tokenizer(&model), Some(dir.path().join("tok512.bin")));

        let hfdir = dir.path().join("hf");
        std::fs::create_dir(&hfdir).unwrap();
        std::fs::write(hfdir.join("config.json"), "{}").unwrap();
        assert_eq!(find_tokenizer(&hfdir), None);
        std::fs::write(hfdir.join("tokenizer.json"), "{}").unwrap();
        assert_eq!(find_tokenizer(&hfdir), Some(hfdir.join("tokenizer.json")));
    }
}
