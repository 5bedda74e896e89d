//! Building a variant directory from a dense model and evaluating it back from disk.

use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::DType;
use agentcompress::pipeline::{build_variants, evaluate_variants, BuildOptions, SelfText};
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::store::{load_variant, LoadOptions, Manifest};

#[test]
fn build_then_evaluate_a_variant_directory() {
    let mut c = preset("tiny").unwrap();
    c.max_seq_len = 24;
    let dense = synthetic_weights(&c, 5, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = SelfText {
        n_seqs: 2,
        len: 16,
        seed: 3,
    };
    let opts = BuildOptions {
        quant: QuantConfig::default(),
        calibration: Some(SelfText { seed: 99, ..text }),
        evaluation: Some(text),
    };
    let mut lines = Vec::new();
    let m = build_variants(
        &dense,
        "synthetic tiny",
        dir.path(),
        Some(("tokenizer.bin", b"abc")),
        &opts,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert!(lines.iter().any(|l| l.contains("[4/4] int2")));
    // The manifest reads back equal (floats to within JSON's last-digit rounding).
    let back = Manifest::read(dir.path()).unwrap();
    assert_eq!(
        (&back.config, &back.quant, back.variants.len()),
        (&m.config, &m.quant, 4)
    );
    for (a, b) in back.variants.iter().zip(&m.variants) {
        assert_eq!(
            (a.precision, &a.file, a.file_bytes),
            (b.precision, &b.file, b.file_bytes)
        );
        let (qa, qb) = (a.quality.unwrap(), b.quality.unwrap());
        assert!((qa.mean_kl - qb.mean_kl).abs() <= 1e-12 * (1.0 + qb.mean_kl));
        assert!((a.bits_per_weight - b.bits_per_weight).abs() < 1e-12);
    }
    let names: Vec<_> = m.variants.iter().map(|v| v.precision).collect();
    assert_eq!(names, Precision::ALL);
    for w in m.variants.windows(2) {
        assert!(
            w[1].weight_bytes < w[0].weight_bytes,
            "{:?}",
            w[1].precision
        );
    }
    for v in &m.variants {
        let len = std::fs::metadata(dir.path().join(&v.file)).unwrap().len();
        assert_eq!(len, v.file_bytes);
        let (_, idx) = load_variant(&dir.path().join(&v.file), LoadOptions::default()).unwrap();
        assert_eq!(idx.tokenizer.as_deref(), Some(&b"abc"[..]));
    }
    let fp16 = m.variant(Precision::Fp16).unwrap().quality.unwrap();
    assert_eq!(fp16.top1_agreement, 1.0);
    // Re-evaluating from disk on the same text reproduces the manifest's figures.
    let rows = evaluate_variants(dir.path(), None, text).unwrap();
    for (r, v) in rows.iter().zip(&m.variants) {
        let q = v.quality.unwrap();
        assert!(
            (r.quality.mean_kl - q.mean_kl).abs() < 1e-9,
            "{:?}",
            v.precision
        );
        assert_eq!(r.quality.positions, q.positions);
        assert_eq!(r.info.weight_bytes, v.weight_bytes);
    }
    // Explicit token ids outside the vocabulary are rejected by name.
    let e = evaluate_variants(dir.path(), Some(vec![vec![1, 9999]]), text).unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
}
