//! The tensors of a Hugging Face checkpoint directory: one `model.safetensors`, or the shards
//! named by `model.safetensors.index.json` (`{"weight_map": {tensor: shard file}}`).

use super::safetensors::SafeFile;
use crate::model::input_file::read_text_bounded;
use crate::model::Tensor;
use crate::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Every tensor of a checkpoint, looked up by its Hugging Face name.
pub struct TensorSource {
    /// The opened files (one, or one per shard).
    files: Vec<SafeFile>,
    /// Tensor name to index into `files`.
    owner: HashMap<String, usize>,
    /// The file that lists the tensors (the single file or the index), named in errors.
    listing: PathBuf,
}

impl TensorSource {
    /// Fails unless every file's tensors tile its data section exactly
    /// ([`SafeFile::check_layout`]).
    pub fn check_layout(&self) -> Result<()> {
        self.files.iter().try_for_each(SafeFile::check_layout)
    }

    /// Opens the checkpoint in `dir`, preferring the single file over a shard index.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            Self::single(&single)
        } else if index.is_file() {
            Self::sharded(dir, &index)
        } else {
            Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("model file not found (neither {SINGLE_FILE} nor {INDEX_FILE} exists)"),
                ),
            ))
        }
    }

    /// One unsharded file.
    fn single(path: &Path) -> Result<Self> {
        let file = SafeFile::open(path)?;
        Ok(TensorSource {
            owner: HashMap::new(),
            files: vec![file],
            listing: path.to_path_buf(),
        })
    }

    /// The shards listed by an index file.
    fn sharded(dir: &Path, index: &Path) -> Result<Self> {
        let corrupt = |m: String| Error::corrupt(index, format!("shard index: {m}"));
        let text = read_text_bounded(index, super::MAX_CONFIG_BYTES, "shard index")?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| corrupt("no \"weight_map\" object".into()))?;
        let mut files = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut owner = HashMap::with_capacity(map.len());
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| corrupt(format!("tensor {tensor} maps to a non-string shard")))?;
            let plain =
                !shard.is_empty() && !shard.contains(['/', '\\']) && shard != "." && shard != "..";
            if !plain {
                return Err(corrupt(format!(
                    "shard name \"{shard}\" (tensor {tensor}) is not a plain file name"
                )));
            }
            let i = match by_name.get(shard) {
                Some(&i) => i,
                None => {
                    let path = dir.join(shard);
                    if !path.is_file() {
                        return Err(corrupt(format!(
                            "shard {} (listed for tensor {tensor}) does not exist",
                            path.display()
                        )));
                    }
                    files.push(SafeFile::open(&path)?);
                    by_name.insert(shard.to_string(), files.len() - 1);
                    files.len() - 1
                }
            };
            if !files[i].contains(tensor) {
                return Err(Error::corrupt(
                    files[i].path(),
                    format!(
                        "the shard index lists tensor {tensor} in this shard, but it is not there"
                    ),
                ));
            }
            owner.insert(tensor.clone(), i);
        }
        Ok(TensorSource {
            files,
            owner,
            listing: index.to_path_buf(),
        })
    }

    /// The file holding `name`, if any.
    fn file_of(&self, name: &str) -> Option<&SafeFile> {
        match self.owner.get(name) {
            Some(&i) => self.files.get(i),
            None if self.owner.is_empty() => self.files.first().filter(|f| f.contains(name)),
            None => None,
        }
    }

    /// Whether the checkpoint holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.file_of(name).is_some()
    }

    /// Tensor `name`, which must exist and have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let file = self
            .file_of(name)
            .ok_or_else(|| Error::corrupt(&self.listing, format!("tensor {name} is missing")))?;
        let have = file.shape(name).unwrap_or(&[]);
        if have != shape {
            return Err(Error::corrupt(
                file.path(),
                format!(
                    "tensor {name} has shape {have:?}, but config.json implies {shape:?} (wrong shape)"
                ),
            ));
        }
        file.tensor(name)?
            .ok_or_else(|| Error::corrupt(file.path(), format!("tensor {name} is missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(dir: &Path, weight_map: &str) -> Result<TensorSource> {
        std::fs::write(
            dir.join(INDEX_FILE),
            format!("{{\"weight_map\": {weight_map}}}"),
        )
        .unwrap();
        TensorSource::open(dir)
    }

    #[test]
    fn shard_names_must_be_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x.safetensors", "/etc/passwd", "..", ""] {
            let e = index_with(dir.path(), &format!("{{\"a\": \"{bad}\"}}"))
                .err()
                .unwrap();
            assert!(
                e.to_string().contains("not a plain file name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn index_without_weight_map_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = TensorSource::open(dir.path()).err().unwrap();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains(SINGLE_FILE),
            "{e}"
        );
        std::fs::write(dir.path().join(INDEX_FILE), "{\"metadata\": {}}").unwrap();
        let e = TensorSource::open(dir.path()).err().unwrap();
        assert!(
            e.to_string().contains("weight_map") && e.to_string().contains(INDEX_FILE),
            "{e}"
        );
    }
}
