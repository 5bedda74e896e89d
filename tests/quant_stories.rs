//! Quality of the four precisions of stories260K (the real checkpoint), measured against the
//! FP16 variant on text the FP16 model generates itself.

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::Model;
use agentcompress::model::{llama2c, ModelWeights, Tensor};
use agentcompress::pipeline::variant_quality::{all_logits, compare, self_generated, Quality};
use agentcompress::quant::calib::Calibration;
use agentcompress::quant::{quantize_model, reconstruction_error, Method, Precision, QuantConfig};
mod common;

/// The stories260K checkpoint, or `None` (the test skips) on a clone without the shared models.
fn stories() -> Option<ModelWeights<Tensor>> {
    let p = common::shared_model("stories260K/stories260K.bin")?;
    Some(llama2c::load(&p).expect("stories260K checkpoint"))
}

struct Bench {
    dense: ModelWeights<Tensor>,
    seqs: Vec<Vec<u32>>,
    reference: Vec<Vec<f32>>,
    calib: Calibration,
}

fn bench() -> Option<Bench> {
    let dense = stories()?;
    let cfg = QuantConfig::default();
    let fp16 = quantize_model(&dense, Precision::Fp16, &cfg, None).unwrap();
    let m = Model::new(CpuBackend::new(), &fp16).unwrap();
    let seqs = self_generated(&m, 4, 128, 7).unwrap();
    let reference = all_logits(&m, &seqs).unwrap();
    // Calibrate on different text than the evaluation text.
    let calib_seqs = self_generated(&m, 4, 128, 1000).unwrap();
    let calib = Calibration::collect(&dense, &calib_seqs, true).unwrap();
    Some(Bench {
        dense,
        seqs,
        reference,
        calib,
    })
}

/// Returns the quality and the relative reconstruction error of the projection matrices.
fn quality(b: &Bench, p: Precision, method: Method, calib: bool) -> (Quality, f64) {
    let cfg = QuantConfig {
        method,
        ..QuantConfig::default()
    };
    let w = quantize_model(&b.dense, p, &cfg, calib.then_some(&b.calib)).unwrap();
    let m = Model::new(CpuBackend::new(), &w).unwrap();
    let q = compare(&b.reference, &m, &b.seqs).unwrap();
    let rec = reconstruction_error(&b.dense, &w).unwrap();
    eprintln!(
        "{p} {method}{}: rel. reconstruction error {rec:.5}, KL {:.4}, top-1 {:.4}, ppl {:.3}",
        if calib { "+calib" } else { "" },
        q.mean_kl,
        q.top1_agreement,
        q.perplexity
    );
    (q, rec)
}

#[test]
fn stories260k_precisions_against_fp16() {
    let Some(b) = bench() else {
        return;
    };
    // INT8 weights with an INT8 classifier, multiplied on int8 activations (32-value blocks)
    // where the CPU has VNNI: each adds an error of about the weights' own, still a KL two
    // orders of magnitude under INT4's (asserted below).
    let (int8, _) = quality(&b, Precision::Int8, Method::Rtn, false);
    assert!(
        int8.top1_agreement >= 0.97 && int8.mean_kl < 0.002,
        "{int8:?}"
    );
    let (i4r, e4r) = quality(&b, Precision::Int4, Method::Rtn, false);
    let (i4a, e4a) = quality(&b, Precision::Int4, Method::Als, false);
    let (i4c, _) = quality(&b, Precision::Int4, Method::Als, true);
    let (i2r, e2r) = quality(&b, Precision::Int2, Method::Rtn, false);
    let (i2a, e2a) = quality(&b, Precision::Int2, Method::Als, false);
    let (i2c, _) = quality(&b, Precision::Int2, Method::Als, true);
    let (i4g, _) = quality(&b, Precision::Int4, Method::Gptq, true);
    let (i2g, _) = quality(&b, Precision::Int2, Method::Gptq, true);
    assert!(
        i2g.mean_kl < i2r.mean_kl && i4g.mean_kl < i4r.mean_kl,
        "GPTQ {i4g:?} {i2g:?}"
    );
    // The unweighted fit minimises exactly the reconstruction error, so it must lower it.
    assert!(
        e4a < e4r && e2a < e2r,
        "INT4 {e4a} vs {e4r}, INT2 {e2a} vs {e2r}"
    );
    // Precision order holds, and the error-minimising quantizer beats RTN at INT2.
    assert!(int8.mean_kl < i4r.mean_kl.min(i4a.mean_kl));
    assert!(i4a.mean_kl < i2a.mean_kl);
    assert!(i2a.mean_kl < i2r.mean_kl, "INT2 als {i2a:?} vs rtn {i2r:?}");
    assert!(
        i2c.mean_kl < i2r.mean_kl,
        "INT2 als+calib {i2c:?} vs rtn {i2r:?}"
    );
    let _ = i4c;
}
