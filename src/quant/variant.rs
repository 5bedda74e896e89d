//! Whole-model quantization: one [`Precision`] of a model from its dense weights.
//!
//! What is quantized: the seven projection matrices of every layer, and (unless
//! [`QuantConfig::keep_classifier_fp16`] is on) the classifier, always to INT8 whatever the
//! variant's precision: its errors feed straight into the logits, and INT8 costs little
//! there, while FP16 made it the largest matrix of small models (SmolLM2-135M's 56 MB). What
//! stays FP16 in every variant: the token embedding (a gather, not a matmul, and small next to
//! the layers at 7B) and all RMSNorm weights and biases (tiny). With tied embeddings a
//! quantized classifier is untied into an INT8 copy of the embedding (the embedding itself
//! stays FP16, so the lookup reads dense rows).

use super::calib::Calibration;
use super::fp16::to_f16;
use super::gptq::gptq_asym;
use super::packed::packed_byte_len;
pub use super::precision::Precision;
use super::quantizer::{quantize_matrix, Method};
use super::WeightMatrix;
use crate::model::{MatrixSite, ModelConfig, ModelWeights, Tensor};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How a model is quantized. The defaults are the project's shipped choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Rounding method for INT4/INT2 (INT8 is always absmax RTN, which is near-lossless).
    pub method: Method,
    /// INT8 group size; `None` = one scale per output channel.
    pub int8_group: Option<usize>,
    /// INT4 group size (32, 64 or 128; default 128).
    pub int4_group: usize,
    /// INT2 group size (32 or 64; default 64).
    pub int2_group: usize,
    /// Keep the classifier in FP16 (default false: INT8, per output channel or
    /// `int8_group`, in the INT8/INT4/INT2 variants).
    pub keep_classifier_fp16: bool,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            method: Method::Als,
            int8_group: None,
            int4_group: 128,
            int2_group: 64,
            keep_classifier_fp16: false,
        }
    }
}

impl QuantConfig {
    /// Checks the group sizes, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, g: usize, rule: &str| {
            Err(Error::invalid(format!(
                "{what} group size {g} is not {rule}"
            )))
        };
        if let Some(g) = self.int8_group {
            if g == 0 || g % 16 != 0 {
                return bad("INT8", g, "a multiple of 16");
            }
        }
        if self.int4_group == 0 || self.int4_group % 32 != 0 {
            return bad("INT4", self.int4_group, "a multiple of 32 (32, 64, 128)");
        }
        if self.int2_group == 0 || self.int2_group % 32 != 0 {
            return bad("INT2", self.int2_group, "a multiple of 32 (32, 64)");
        }
        Ok(())
    }

    /// The group size used for `p` on rows of `inp` weights (`None` for FP16). A row shorter
    /// than the configured group is one group, rounded up to a multiple of 32 (16 for INT8),
    /// so short rows (stories260K's 64) are not padded to twice their width.
    pub fn group(&self, p: Precision, inp: usize) -> Option<usize> {
        let fit = |g: usize, m: usize| g.min(inp.div_ceil(m) * m);
        match p {
            Precision::Fp16 => None,
            Precision::Int8 => Some(self.int8_group.map_or(inp, |g| fit(g, 16))),
            Precision::Int4 => Some(fit(self.int4_group, 32)),
            Precision::Int2 => Some(fit(self.int2_group, 32)),
        }
    }
}

/// Quantizes a dense model to precision `p`. `calib`, when given, supplies per-input-channel
/// importances that [`Method::Als`] weights its fit with.
pub fn quantize_model(
    w: &ModelWeights<Tensor>,
    p: Precision,
    cfg: &QuantConfig,
    calib: Option<&Calibration>,
) -> Result<ModelWeights<WeightMatrix>> {
    w.check_shapes()?;
    cfg.validate()?;
    let quant_at =
        |p: Precision, site: MatrixSite, name: &str, t: &Tensor| -> Result<WeightMatrix> {
            let full = match site {
                MatrixSite::Classifier => name.to_string(),
                MatrixSite::Layer(layer) => format!("layers.{layer}.{name}"),
            };
            let (out, inp) = (t.shape()[0], t.shape()[1]);
            match cfg.group(p, inp) {
                None => Ok(WeightMatrix::Dense(to_f16(&full, t)?)),
                Some(g) if cfg.method == Method::Gptq && p != Precision::Int8 => {
                    let gram = calib.and_then(|c| c.gram(site, name)).ok_or_else(|| {
                        Error::invalid(format!(
                            "{full}: GPTQ needs a calibration with Gram matrices"
                        ))
                    })?;
                    let w = t.to_f32_vec();
                    Ok(match p.bits() {
                        4 => WeightMatrix::Int4(gptq_asym::<4>(&w, out, inp, g, gram)?),
                        _ => WeightMatrix::Int2(gptq_asym::<2>(&w, out, inp, g, gram)?),
                    })
                }
                Some(g) => {
                    let imp = calib.and_then(|c| c.importance(site, name));
                    quantize_matrix(&t.to_f32_vec(), out, inp, p.bits(), g, cfg.method, imp)
                        .map_err(|e| match e {
                            Error::InvalidArgument(m) => Error::invalid(format!("{full}: {m}")),
                            other => other,
                        })
                }
            }
        };
    let quant = |site: MatrixSite, name: &str, t: &Tensor| quant_at(p, site, name, t);
    // The classifier of a quantized variant is INT8 (module docs).
    let cls_p = if p == Precision::Fp16 {
        p
    } else {
        Precision::Int8
    };
    let quant_cls = |t: &Tensor| quant_at(cls_p, MatrixSite::Classifier, "classifier", t);
    let f16 = |name: &str, t: &Tensor| to_f16(name, t);
    let mut layers = Vec::with_capacity(w.layers.len());
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("layers.{i}.{s}");
        let opt = |s: &str, b: &Option<Tensor>| b.as_ref().map(|b| f16(&n(s), b)).transpose();
        let site = MatrixSite::Layer(i);
        layers.push(crate::model::LayerWeights {
            attn_norm: f16(&n("attn_norm"), &l.attn_norm)?,
            wq: quant(site, "wq", &l.wq)?,
            wk: quant(site, "wk", &l.wk)?,
            wv: quant(site, "wv", &l.wv)?,
            wo: quant(site, "wo", &l.wo)?,
            bq: opt("bq", &l.bq)?,
            bk: opt("bk", &l.bk)?,
            bv: opt("bv", &l.bv)?,
            ffn_norm: f16(&n("ffn_norm"), &l.ffn_norm)?,
            w_gate: quant(site, "w_gate", &l.w_gate)?,
            w_up: quant(site, "w_up", &l.w_up)?,
            w_down: quant(site, "w_down", &l.w_down)?,
        });
    }
    let embedding = f16("embedding", &w.embedding)?;
    let classifier = match (&w.classifier, cfg.keep_classifier_fp16) {
        (Some(c), true) => Some(WeightMatrix::Dense(f16("classifier", c)?)),
        (Some(c), false) => Some(quant_cls(c)?),
        (None, true) => None,
        (None, false) if p == Precision::Fp16 => None,
        (None, false) => Some(quant_cls(&w.embedding)?),
    };
    Ok(ModelWeights {
        config: w.config.clone(),
        embedding,
        layers,
        final_norm: f16("final_norm", &w.final_norm)?,
        classifier,
    })
}

/// Sizes of a variant, computed from its shape alone (no weights needed).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeReport {
    /// Parameters in quantized matrices.
    pub quantized_params: u64,
    /// Bytes of those matrices (codes + scales + zeros).
    pub quantized_bytes: u64,
    /// All parameters.
    pub total_params: u64,
    /// All weight bytes (quantized matrices + FP16 embedding, norms, classifier).
    pub total_bytes: u64,
}

impl SizeReport {
    /// Bits per weight of the quantized matrices, scales and zeros included.
    pub fn quantized_bits_per_weight(&self) -> f64 {
        self.quantized_bytes as f64 * 8.0 / self.quantized_params.max(1) as f64
    }

    /// Bits per weight of the whole model (FP16 embedding and norms included).
    pub fn total_bits_per_weight(&self) -> f64 {
        self.total_bytes as f64 * 8.0 / self.total_params.max(1) as f64
    }
}

/// Computes a variant's sizes arithmetically from the model shape.
pub fn size_report(c: &ModelConfig, p: Precision, cfg: &QuantConfig) -> SizeReport {
    let (d, h, q, kv, v) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.vocab_size);
    let mut mats: Vec<(usize, usize)> = Vec::new();
    for _ in 0..c.n_layers {
        mats.extend([(q, d), (kv, d), (kv, d), (d, q), (h, d), (h, d), (d, h)]);
    }
    let quant_cls = !cfg.keep_classifier_fp16 && p != Precision::Fp16;
    let mut r = SizeReport {
        quantized_params: 0,
        quantized_bytes: 0,
        total_params: 0,
        total_bytes: 0,
    };
    let mut mats: Vec<(Precision, usize, usize)> =
        mats.into_iter().map(|(o, i)| (p, o, i)).collect();
    if quant_cls {
        mats.push((Precision::Int8, v, d));
    }
    for (p, out, inp) in mats {
        r.quantized_params += (out * inp) as u64;
        r.quantized_bytes += match cfg.group(p, inp) {
            None => (out * inp * 2) as u64,
            Some(g) => packed_byte_len(p.bits(), out, inp, g) as u64,
        };
    }
    let bias = if c.qkv_bias { q + 2 * kv } else { 0 };
    let mut dense = v * d + c.n_layers * (2 * d + bias) + d;
    if !c.tied_embeddings && !quant_cls {
        dense += v * d;
    }
    r.total_params = r.quantized_params + dense as u64;
    r.total_bytes = r.quantized_bytes + 2 * dense as u64;
    r
}

/// Relative reconstruction error of the projection matrices of a quantized model:
/// `||W - W'||_F^2 / ||W||_F^2` summed over every layer matrix.
pub fn reconstruction_error(
    dense: &ModelWeights<Tensor>,
    quantized: &ModelWeights<WeightMatrix>,
) -> Result<f64> {
    if dense.layers.len() != quantized.layers.len() {
        return Err(Error::invalid("models differ in layer count"));
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (d, q) in dense.layers.iter().zip(&quantized.layers) {
        for ((name, a), (_, b)) in d.matrices().iter().zip(q.matrices()) {
            let (a, b) = (a.to_f32_vec(), b.dequantize());
            if a.len() != b.len() {
                return Err(Error::invalid(format!("{name}: shapes differ")));
            }
            for (x, y) in a.iter().zip(&b) {
                num += ((x - y) as f64).powi(2);
                den += (*x as f64).powi(2);
            }
        }
    }
    Ok(num / den.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{preset, synthetic_weights};
    use crate::model::DType;

    #[test]
    fn groups_are_validated_and_short_rows_form_one_group() {
        let mut c = QuantConfig::default();
        assert_eq!(c.group(Precision::Int4, 64), Some(64));
        assert_eq!(c.group(Precision::Int4, 172), Some(128));
        assert_eq!(c.group(Precision::Int2, 40), Some(64));
        assert_eq!(c.group(Precision::Int8, 172), Some(172));
        c.int2_group = 48;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("INT2 group size 48"));
    }

    #[test]
    fn size_report_matches_a_quantized_model_and_classifier_choice_applies() {
        let mut c = preset("tiny").unwrap();
        c.max_seq_len = 8;
        let dense = synthetic_weights(&c, 2, DType::F32).unwrap();
        for keep in [true, false] {
            let cfg = QuantConfig {
                method: Method::Rtn,
                keep_classifier_fp16: keep,
                ..QuantConfig::default()
            };
            for p in Precision::ALL {
                let w = quantize_model(&dense, p, &cfg, None).unwrap();
                let mut bytes = w.embedding.bytes().len() + w.final_norm.bytes().len();
                for l in &w.layers {
                    bytes += l.attn_norm.bytes().len() + l.ffn_norm.bytes().len();
                    bytes += l
                        .matrices()
                        .iter()
                        .map(|(_, m)| m.byte_len())
                        .sum::<usize>();
                }
                bytes += w.classifier.as_ref().map_or(0, |m| m.byte_len());
                assert_eq!(
                    size_report(&c, p, &cfg).total_bytes,
                    bytes as u64,
                    "{p} {keep}"
                );
                // A quantized classifier is INT8 whatever the variant's precision.
                let quantized_cls = matches!(w.classifier, Some(WeightMatrix::Int8(_)));
                assert_eq!(quantized_cls, !keep && p != Precision::Fp16, "{p} {keep}");
                if keep || p == Precision::Fp16 {
                    assert!(matches!(w.classifier, None | Some(WeightMatrix::Dense(_))));
                }
            }
        }
    }
}
