//! Building and evaluating a variant directory: the four precisions of one model, their
//! `.acv` files and the manifest. The command line's `quantize` and `eval-variants` call these.

use super::variant_quality::{all_logits, compare, self_generated, Quality};
use crate::backend::cpu::CpuBackend;
use crate::engine::Model;
use crate::model::{ModelWeights, Tensor};
use crate::quant::calib::Calibration;
use crate::quant::{quantize_model, Method, Precision, QuantConfig, WeightMatrix};
use crate::store::manifest::{Manifest, VariantInfo, MANIFEST_VERSION};
use crate::store::{variant_file_name, write_variant, LoadOptions};
use crate::{Error, Result};
use std::path::Path;

/// Evaluation text: `n_seqs` sequences of `len` tokens that the FP16 model samples from BOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfText {
    /// Number of sequences.
    pub n_seqs: usize,
    /// Tokens per sequence (BOS included).
    pub len: usize,
    /// Sampling seed.
    pub seed: u64,
}

impl SelfText {
    /// A one-line description for the manifest.
    pub fn describe(&self) -> String {
        format!(
            "{} sequences of up to {} tokens sampled by the FP16 variant from BOS (temperature 1, seed {})",
            self.n_seqs, self.len, self.seed
        )
    }
}

/// What `quantize` does besides packing.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Formats, groups and method.
    pub quant: QuantConfig,
    /// Calibration text for [`Method::Als`] importances (`None`: unweighted fit). Sampled with
    /// a seed different from the evaluation text's.
    pub calibration: Option<SelfText>,
    /// Evaluation text for the manifest's quality figures (`None`: not measured).
    pub evaluation: Option<SelfText>,
}

/// `(all weight bytes, projection-matrix bytes, projection-matrix parameters)`; the
/// classifier counts as a projection only when it is quantized (as in
/// [`crate::quant::size_report`]).
fn sizes(w: &ModelWeights<WeightMatrix>) -> (u64, u64, u64) {
    let mut total = (w.embedding.bytes().len() + w.final_norm.bytes().len()) as u64;
    let (mut qb, mut qp) = (0u64, 0u64);
    let mut mats: Vec<&WeightMatrix> = Vec::new();
    match &w.classifier {
        Some(c @ WeightMatrix::Dense(_)) => total += c.byte_len() as u64,
        Some(c) => mats.push(c),
        None => {}
    }
    for l in &w.layers {
        total += (l.attn_norm.bytes().len() + l.ffn_norm.bytes().len()) as u64;
        for b in [&l.bq, &l.bk, &l.bv].into_iter().flatten() {
            total += b.bytes().len() as u64;
        }
        mats.extend(l.matrices().map(|(_, m)| m));
    }
    for m in mats {
        total += m.byte_len() as u64;
        let (o, i) = m.dims();
        qb += m.byte_len() as u64;
        qp += (o * i) as u64;
    }
    (total, qb, qp)
}

/// Quantizes `dense` to all four precisions, writes `DIR/{fp16,int8,int4,int2}.acv` and
/// `DIR/manifest.json`, and returns the manifest. `progress` receives one line per step.
pub fn build_variants(
    dense: &ModelWeights<Tensor>,
    source: &str,
    dir: &Path,
    tokenizer: Option<(&str, &[u8])>,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let fp16 = quantize_model(dense, Precision::Fp16, &opts.quant, None)?;
    let calib = match (opts.calibration, opts.quant.method) {
        (Some(t), Method::Als | Method::Gptq) => {
            progress(&format!("calibrating on {}", t.describe()));
            let m = Model::new(CpuBackend::new(), &fp16)?;
            let seqs = self_generated(&m, t.n_seqs, t.len, t.seed)?;
            let grams = opts.quant.method == Method::Gptq;
            Some(Calibration::collect(dense, &seqs, grams)?)
        }
        _ => None,
    };
    let eval = match opts.evaluation {
        Some(t) => {
            let m = Model::new(CpuBackend::new(), &fp16)?;
            let seqs = self_generated(&m, t.n_seqs, t.len, t.seed)?;
            let reference = all_logits(&m, &seqs)?;
            Some((seqs, reference))
        }
        None => None,
    };
    let mut variants = Vec::new();
    for (i, p) in Precision::ALL.into_iter().enumerate() {
        progress(&format!("[{}/4] {p}: quantizing", i + 1));
        let w = if p == Precision::Fp16 {
            fp16.clone()
        } else {
            quantize_model(dense, p, &opts.quant, calib.as_ref())?
        };
        let file = variant_file_name(p);
        let path = dir.join(&file);
        progress(&format!("[{}/4] {p}: writing {}", i + 1, path.display()));
        let idx = write_variant(&path, &w, p.name(), &opts.quant, tokenizer)?;
        let quality = match &eval {
            Some((seqs, reference)) => {
                progress(&format!("[{}/4] {p}: measuring quality", i + 1));
                let m = Model::new(CpuBackend::new(), &w)?;
                Some(compare(reference, &m, seqs)?)
            }
            None => None,
        };
        variants.push(info(p, file, idx.file_len, &w, quality));
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        source: source.to_string(),
        config: dense.config.clone(),
        quant: opts.quant.clone(),
        quality_text: opts.evaluation.map(|t| t.describe()),
        variants,
    };
    manifest.write(dir)?;
    Ok(manifest)
}

fn info(
    p: Precision,
    file: String,
    file_bytes: u64,
    w: &ModelWeights<WeightMatrix>,
    quality: Option<Quality>,
) -> VariantInfo {
    let (total, qb, qp) = sizes(w);
    let params = w.config.parameter_count();
    VariantInfo {
        precision: p,
        file,
        file_bytes,
        weight_bytes: total,
        matrix_bits_per_weight: qb as f64 * 8.0 / qp.max(1) as f64,
        bits_per_weight: total as f64 * 8.0 / params.max(1) as f64,
        quality,
    }
}

/// One row of `eval-variants`.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantEval {
    /// Sizes from the file itself.
    pub info: VariantInfo,
    /// Quality against the directory's FP16 variant on the chosen text.
    pub quality: Quality,
}

/// Loads every variant listed in `dir/manifest.json` and measures it against the FP16 variant
/// on `seqs` (or, when `None`, on text the FP16 variant samples itself per `text`).
pub fn evaluate_variants(
    dir: &Path,
    seqs: Option<Vec<Vec<u32>>>,
    text: SelfText,
) -> Result<Vec<VariantEval>> {
    let manifest = Manifest::read(dir)?;
    if manifest.variant(Precision::Fp16).is_none() {
        return Err(Error::corrupt(
            dir.join(crate::store::MANIFEST_FILE),
            "no fp16 variant listed",
        ));
    }
    let (fp16, _) = manifest
        .listed(dir, Precision::Fp16)?
        .load(LoadOptions::default())?;
    let reference_model = Model::new(CpuBackend::new(), &fp16)?;
    let seqs = match seqs {
        Some(s) => s,
        None => self_generated(&reference_model, text.n_seqs, text.len, text.seed)?,
    };
    let vocab = manifest.config.vocab_size;
    if let Some(bad) = seqs.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::invalid(format!(
            "token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let reference = all_logits(&reference_model, &seqs)?;
    let mut out = Vec::new();
    for v in &manifest.variants {
        let (w, idx) = manifest
            .listed(dir, v.precision)?
            .load(LoadOptions::default())?;
        let m = Model::new(CpuBackend::new(), &w)?;
        let quality = compare(&reference, &m, &seqs)?;
        out.push(VariantEval {
            info: info(v.precision, v.file.clone(), idx.file_len, &w, Some(quality)),
            quality,
        });
    }
    Ok(out)
}
