//! The four variants of one model as the router, the labels and the benchmark use them: real
//! packed models (FP16 tensors, INT8/INT4/INT2 packed matrices) running on the CPU backend's
//! packed kernels, either quantised in memory with [`crate::quant::quantize_model`] or loaded
//! from a variant directory written by `agentcompress quantize`. Sizes are the packed bytes
//! of the weights (codes, scales, zeros and FP16 tensors), so costs measure the real formats.

use super::build_variants::SelfText;
use super::variant_quality::self_generated;
use crate::backend::cpu::CpuBackend;
use crate::engine::Model;
use crate::model::{ModelConfig, ModelWeights};
use crate::quant::calib::Calibration;
use crate::quant::{
    quantize_model, size_report, Method, PerPrecision, Precision, QuantConfig, WeightMatrix,
};
use crate::store::{LoadOptions, Manifest};
use crate::{Error, Result};
use std::path::Path;

/// The four variants of one model, on the CPU backend, with their sizes.
pub struct VariantSet {
    /// Shape of the model.
    pub config: ModelConfig,
    /// The frozen token-embedding table `[vocab, dim]` the controller reads (the FP16
    /// variant's embedding, widened to f32).
    pub embedding: Vec<f32>,
    /// One model per precision.
    pub models: PerPrecision<Model<CpuBackend>>,
    /// Bytes of each variant's weights (packed codes, scales, zeros, FP16 tensors).
    pub bytes: PerPrecision<u64>,
    /// How the variants were made (method and group sizes, or the directory they came from).
    pub formats: String,
}

/// A one-line description of a quantisation configuration.
fn describe(cfg: &QuantConfig) -> String {
    format!(
        "packed {} (int8 {}, int4 g{}, int2 g{}, classifier {})",
        cfg.method,
        cfg.int8_group
            .map_or("per channel".to_string(), |g| format!("g{g}")),
        cfg.int4_group,
        cfg.int2_group,
        if cfg.keep_classifier_fp16 {
            "fp16"
        } else {
            "int8"
        }
    )
}

impl VariantSet {
    /// Quantises `weights` to all four precisions in memory with `cfg` (no calibration: ALS
    /// fits unweighted, GPTQ is refused since it needs calibration Gram matrices).
    pub fn quantize(weights: &ModelWeights, cfg: &QuantConfig) -> Result<Self> {
        let variants = Precision::ALL
            .iter()
            .map(|&p| quantize_model(weights, p, cfg, None))
            .collect::<Result<Vec<_>>>()?;
        let bytes = PerPrecision::from_fn(|p| size_report(&weights.config, p, cfg).total_bytes);
        Self::from_packed(variants, bytes, describe(cfg))
    }

    /// Quantises `weights` as `agentcompress quantize` does: ALS and GPTQ are calibrated on
    /// `text`, sequences the FP16 variant samples from BOS (never the benchmark's tasks); RTN
    /// ignores it.
    pub fn quantize_calibrated(
        weights: &ModelWeights,
        cfg: &QuantConfig,
        text: SelfText,
    ) -> Result<Self> {
        if cfg.method == Method::Rtn {
            return Self::quantize(weights, cfg);
        }
        let fp16 = quantize_model(weights, Precision::Fp16, cfg, None)?;
        let seqs = self_generated(
            &Model::new(CpuBackend::new(), &fp16)?,
            text.n_seqs,
            text.len,
            text.seed,
        )?;
        let calib = Calibration::collect(weights, &seqs, cfg.method == Method::Gptq)?;
        let variants = Precision::ALL
            .iter()
            .map(|&p| quantize_model(weights, p, cfg, Some(&calib)))
            .collect::<Result<Vec<_>>>()?;
        let bytes = PerPrecision::from_fn(|p| size_report(&weights.config, p, cfg).total_bytes);
        let formats = format!("{}, calibrated on {}", describe(cfg), text.describe());
        Self::from_packed(variants, bytes, formats)
    }

    /// Loads the four variants of the variant directory `dir` (its `manifest.json` and `.acv`
    /// files), verifying checksums when `verify`.
    pub fn open_dir(dir: &Path, verify: bool) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let mut variants = Vec::with_capacity(4);
        let mut bytes = PerPrecision::splat(0u64);
        for p in Precision::ALL {
            let info = manifest.variant(p).ok_or_else(|| {
                Error::corrupt(
                    dir.join(crate::store::MANIFEST_FILE),
                    format!("the manifest lists no {p} variant (routing needs all four)"),
                )
            })?;
            let (w, _) = manifest.listed(dir, p)?.load(LoadOptions {
                verify_checksums: verify,
            })?;
            bytes[p] = info.weight_bytes;
            variants.push(w);
        }
        let formats = format!("{} from {}", describe(&manifest.quant), dir.display());
        Self::from_packed(variants, bytes, formats)
    }

    /// Uploads four packed variants (in [`Precision::ALL`] order) to the CPU backend.
    fn from_packed(
        variants: Vec<ModelWeights<WeightMatrix>>,
        bytes: PerPrecision<u64>,
        formats: String,
    ) -> Result<Self> {
        let fp16 = variants
            .first()
            .ok_or_else(|| Error::invalid("a variant set needs four variants"))?;
        let config = fp16.config.clone();
        if let Some(w) = variants.iter().find(|w| w.config != config) {
            return Err(Error::invalid(format!(
                "variants disagree on the model shape ({} layers, dim {} vs {} layers, dim {})",
                config.n_layers, config.dim, w.config.n_layers, w.config.dim
            )));
        }
        let embedding = fp16.embedding.to_f32_vec();
        let models = variants
            .iter()
            .map(|w| Model::new(CpuBackend::new(), w))
            .collect::<Result<Vec<_>>>()?;
        let models = PerPrecision::try_from(models).map_err(|v| {
            Error::invalid(format!(
                "a variant set needs four variants, got {}",
                v.len()
            ))
        })?;
        Ok(VariantSet {
            config,
            embedding,
            models,
            bytes,
            formats,
        })
    }

    /// The model of precision `p`.
    pub fn model(&self, p: Precision) -> &Model<CpuBackend> {
        &self.models[p]
    }

    /// Size of each variant relative to FP16.
    pub fn relative_bytes(&self) -> PerPrecision<f64> {
        let fp16 = self.bytes[Precision::Fp16] as f64;
        self.bytes.map(|b| b as f64 / fp16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{preset, synthetic_weights};
    use crate::model::DType;
    use crate::quant::Method;

    #[test]
    fn packed_sizes_shrink_with_precision_and_models_differ() {
        let mut cfg = preset("tiny").unwrap();
        cfg.max_seq_len = 64;
        let w = synthetic_weights(&cfg, 3, DType::F32).unwrap();
        let q = QuantConfig {
            method: Method::Rtn,
            ..QuantConfig::default()
        };
        let set = VariantSet::quantize(&w, &q).unwrap();
        assert!(set.formats.contains("rtn"), "{}", set.formats);
        let rel = set.relative_bytes();
        assert_eq!(rel[Precision::Fp16], 1.0);
        assert!(
            rel[Precision::Int8] < 0.75
                && rel[Precision::Int4] < rel[Precision::Int8]
                && rel[Precision::Int2] < rel[Precision::Int4],
            "{rel:?}"
        );
        // The FP16 variant stores every weight in two bytes.
        assert_eq!(set.bytes[Precision::Fp16], 2 * cfg.parameter_count());
        let ids = [1u32, 5, 9, 13];
        let run = |p: Precision| {
            let m = set.model(p);
            let mut st = m.new_state(8).unwrap();
            m.forward(&mut st, &ids, false).unwrap()
        };
        let (a, b) = (run(Precision::Fp16), run(Precision::Int2));
        assert_ne!(a, b);
        let d8: f32 = run(Precision::Int8)
            .iter()
            .zip(&a)
            .map(|(x, y)| (x - y).abs())
            .sum();
        let d2: f32 = b.iter().zip(&a).map(|(x, y)| (x - y).abs()).sum();
        assert!(d8 < d2, "int8 error {d8} not below int2 error {d2}");
    }

    #[test]
    fn gptq_without_calibration_and_missing_directories_are_typed_errors() {
        let mut cfg = preset("tiny").unwrap();
        cfg.max_seq_len = 16;
        let w = synthetic_weights(&cfg, 3, DType::F32).unwrap();
        let q = QuantConfig {
            method: Method::Gptq,
            ..QuantConfig::default()
        };
        let err = VariantSet::quantize(&w, &q).err().unwrap().to_string();
        assert!(err.contains("GPTQ needs a calibration"), "{err}");
        // Calibrated on self-generated text, GPTQ works and says how it was calibrated.
        let text = SelfText {
            n_seqs: 2,
            len: 12,
            seed: 3,
        };
        let set = VariantSet::quantize_calibrated(&w, &q, text).unwrap();
        assert!(
            set.formats.contains("gptq") && set.formats.contains("calibrated on 2 sequences"),
            "{}",
            set.formats
        );
        assert_eq!(
            set.bytes,
            VariantSet::quantize(&w, &QuantConfig::default())
                .unwrap()
                .bytes
        );
        let err = VariantSet::open_dir(Path::new("/nonexistent/variants"), true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }
}
