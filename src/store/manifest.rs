//! `manifest.json`: ties the four variant files of one model together with their sizes, bits
//! per weight and measured quality.

use super::listed::ListedVariant;
use crate::model::ModelConfig;
use crate::quant::Quality;
use crate::quant::{Precision, QuantConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the manifest inside a variant directory.
pub use crate::model::load::VARIANT_MANIFEST as MANIFEST_FILE;
/// Manifest schema version.
pub const MANIFEST_VERSION: u32 = 1;

/// One variant of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantInfo {
    /// Its precision.
    pub precision: Precision,
    /// File name relative to the manifest's directory.
    pub file: String,
    /// Size of the file on disk (with alignment padding and header).
    pub file_bytes: u64,
    /// Bytes of all weights (codes, scales, zeros, FP16 tensors), no padding.
    pub weight_bytes: u64,
    /// Bits per weight of the quantized matrices, scales and zeros included.
    pub matrix_bits_per_weight: f64,
    /// Bits per weight over all parameters (FP16 embedding and norms included).
    pub bits_per_weight: f64,
    /// Quality against the FP16 variant, when measured.
    pub quality: Option<Quality>,
}

/// The manifest of a variant directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Where the model came from (the input path).
    pub source: String,
    /// Shape of the model.
    pub config: ModelConfig,
    /// How the variants were quantized.
    pub quant: QuantConfig,
    /// How quality was measured (e.g. "4 self-generated sequences of 128 tokens, seed 7").
    pub quality_text: Option<String>,
    /// The variants, widest first.
    pub variants: Vec<VariantInfo>,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST_FILE);
        let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        let m: Manifest =
            serde_json::from_slice(&b).map_err(|e| Error::corrupt(&p, e.to_string()))?;
        if m.version != MANIFEST_VERSION {
            return Err(Error::corrupt(
                &p,
                format!(
                    "field `version` is {}; this build reads {MANIFEST_VERSION}",
                    m.version
                ),
            ));
        }
        m.validate().map_err(|msg| Error::corrupt(&p, msg))?;
        Ok(m)
    }

    /// Checks what reading alone cannot: every file is a plain name inside the manifest's
    /// directory, and no precision or file is listed twice. The message names the entry.
    fn validate(&self) -> std::result::Result<(), String> {
        self.config
            .validate()
            .map_err(|e| format!("field `config`: {e}"))?;
        for (i, v) in self.variants.iter().enumerate() {
            check_file_name(&v.file)
                .map_err(|why| format!("variant {} (`{}`): file {why}", v.precision, v.file))?;
            if let Some(earlier) = self.variants[..i]
                .iter()
                .find(|e| e.precision == v.precision)
            {
                return Err(format!(
                    "the {} variant is listed twice (`{}` and `{}`)",
                    v.precision, earlier.file, v.file
                ));
            }
            if let Some(earlier) = self.variants[..i].iter().find(|e| e.file == v.file) {
                return Err(format!(
                    "the {} and {} variants both point at `{}`",
                    earlier.precision, v.precision, v.file
                ));
            }
        }
        Ok(())
    }

    /// Writes `dir/manifest.json` (pretty-printed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(MANIFEST_FILE);
        let b = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&p, b).map_err(|e| Error::io(&p, e))
    }

    /// The file of the `p` variant inside `dir` with what its header must say, or an error
    /// naming the manifest when it lists no such variant.
    pub fn listed(&self, dir: &Path, p: Precision) -> Result<ListedVariant> {
        let info = self.variant(p).ok_or_else(|| {
            Error::corrupt(
                dir.join(MANIFEST_FILE),
                format!("the manifest lists no {p} variant"),
            )
        })?;
        check_file_name(&info.file).map_err(|why| {
            Error::corrupt(
                dir.join(MANIFEST_FILE),
                format!("variant {p} (`{}`): file {why}", info.file),
            )
        })?;
        Ok(ListedVariant {
            path: dir.join(&info.file),
            manifest: dir.join(MANIFEST_FILE),
            precision: p,
            config: self.config.clone(),
            quant: self.quant.clone(),
            file_bytes: info.file_bytes,
        })
    }

    /// The entry for `p`, if present.
    pub fn variant(&self, p: Precision) -> Option<&VariantInfo> {
        self.variants.iter().find(|v| v.precision == p)
    }
}

/// Why `name` is not a plain file name inside the manifest's directory, if it is not: empty,
/// `.` or `..`, or holding a path separator (absolute paths included) or a NUL.
fn check_file_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("name is empty")
    } else if name == "." || name == ".." {
        Err("name must not be `.` or `..`")
    } else if name.contains(['/', '\\']) {
        Err("name must be a plain file name in the manifest's directory (no path separators)")
    } else if name.contains('\0') {
        Err("name must not hold a NUL byte")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_file_name;

    #[test]
    fn only_plain_file_names_are_accepted() {
        assert!(check_file_name("int8.acv").is_ok());
        assert!(check_file_name("..int8.acv").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "/etc/passwd",
            "../int8.acv",
            "a/b.acv",
            "a\\b",
            "x\0y",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
