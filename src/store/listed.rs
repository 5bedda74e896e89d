//! A variant file as its manifest lists it: where the file is and what its own header must say
//! (precision, model config, quantization, file length). Every way of opening a listed variant
//! (resident load, header-only read for streaming) checks the header against the listing, so a
//! file copied over another precision's, or one from another model, is refused with an error
//! naming both sides instead of being served under the wrong name.

use super::format::VariantIndex;
use super::read::{load_variant_checked, read_index, LoadOptions};
use crate::model::{ModelConfig, ModelWeights};
use crate::quant::{Precision, QuantConfig, WeightMatrix};
use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;

/// One variant of a manifest (see [`super::Manifest::listed`]).
#[derive(Clone, Debug)]
pub struct ListedVariant {
    /// The `.acv` file (inside the manifest's directory).
    pub path: PathBuf,
    /// The manifest that lists it (named in errors).
    pub manifest: PathBuf,
    /// The precision the manifest lists it as.
    pub precision: Precision,
    /// The model config the manifest states.
    pub config: ModelConfig,
    /// The quantization the manifest states.
    pub quant: QuantConfig,
    /// The file length the manifest states.
    pub file_bytes: u64,
}

impl ListedVariant {
    /// Checks the header `idx` of this file against the listing; the error names the field
    /// and both values.
    pub fn check(&self, idx: &VariantIndex) -> Result<()> {
        let bad = |m: String| {
            Error::corrupt(
                &self.path,
                format!("{m} (listed in {})", self.manifest.display()),
            )
        };
        if idx.meta.precision != self.precision.name() {
            return Err(bad(format!(
                "holds the {} variant, the manifest lists it as {}",
                idx.meta.precision, self.precision
            )));
        }
        if let Some(field) = first_difference(&idx.meta.config, &self.config) {
            return Err(bad(format!(
                "the header's model config differs from the manifest's in `{field}`"
            )));
        }
        if let Some(field) = first_difference(&idx.meta.quant, &self.quant) {
            return Err(bad(format!(
                "the header's quantization differs from the manifest's in `{field}`"
            )));
        }
        if idx.file_len != self.file_bytes {
            return Err(bad(format!(
                "the header says the file is {} bytes, the manifest says {}",
                idx.file_len, self.file_bytes
            )));
        }
        Ok(())
    }

    /// Reads the header and directory (no payloads) and checks them against the listing.
    pub fn read_index(&self) -> Result<VariantIndex> {
        let idx = read_index(&self.path)?;
        self.check(&idx)?;
        Ok(idx)
    }

    /// Loads the whole variant, checking its header against the listing before any tensor
    /// is decoded.
    pub fn load(&self, opts: LoadOptions) -> Result<(ModelWeights<WeightMatrix>, VariantIndex)> {
        load_variant_checked(&self.path, opts, |idx| self.check(idx))
    }
}

/// The name of the first top-level field where `a` and `b` serialize differently (`"(value)"`
/// when they are not structs), or `None` when they agree.
fn first_difference<T: Serialize + PartialEq>(a: &T, b: &T) -> Option<String> {
    if a == b {
        return None;
    }
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Some("(value)".into());
    };
    x.keys()
        .chain(y.keys())
        .find(|k| x.get(*k) != y.get(*k))
        .cloned()
        .or_else(|| Some("(value)".into()))
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn the_differing_config_field_is_named() {
        let a = crate::model::synthetic::preset("tiny").unwrap();
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b.n_layers += 1;
        assert_eq!(first_difference(&a, &b).as_deref(), Some("n_layers"));
    }
}
