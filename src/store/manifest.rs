//! `manifest.json`: ties the four variant files of one model together with their sizes, bits
//! per weight and measured quality.

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
        Ok(m)
    }

    /// Writes `dir/manifest.json` (pretty-printed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = dir.join(MANIFEST_FILE);
        let b = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&p, b).map_err(|e| Error::io(&p, e))
    }

    /// The entry for `p`, if present.
    pub fn variant(&self, p: Precision) -> Option<&VariantInfo> {
        self.variants.iter().find(|v| v.precision == p)
    }
}
