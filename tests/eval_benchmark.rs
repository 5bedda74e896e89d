//! A reduced workflow benchmark on stories260K (packed RTN variants, byte-encoded task text until
//! the llama2.c tokenizer is wired in): every strategy is reported, the uniform baselines are
//! ordered by cost, the oracle meets the threshold everywhere, and the controller + router
//! never does worse than FP16 on cost. The benchmark trains the controller, so it needs the
//! `train` feature.
#![cfg(feature = "train")]

mod common;

use agentcompress::eval::{report, run, EvalConfig};
use agentcompress::model::load::load_model;
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::ByteTokenizer;
use agentcompress::model::DType;
use agentcompress::pipeline::VariantSet;
use agentcompress::quant::{Method, Precision, QuantConfig};

#[test]
fn reduced_benchmark_on_stories260k() {
    let weights = if let Some(path) = common::shared_model("stories260K/stories260K.bin") {
        load_model(&path).unwrap()
    } else {
        eprintln!("using the synthetic tiny preset instead");
        let mut c = preset("tiny").unwrap();
        c.max_seq_len = 128;
        synthetic_weights(&c, 1, DType::F32).unwrap()
    };
    let quant = QuantConfig {
        method: Method::Rtn,
        ..QuantConfig::default()
    };
    let set = VariantSet::quantize(&weights, &quant).unwrap();
    let mut cfg = EvalConfig {
        workflows: 8,
        n_gen: 12,
        max_prompt: 40,
        ..EvalConfig::default()
    };
    cfg.train.iterations = 60;
    cfg.train.batch = 8;
    let out = run(&set, &ByteTokenizer, &cfg, "stories260K", None).unwrap();
    let r = &out.report;
    assert_eq!(r.workflows, 8);
    assert_eq!(out.labels.tasks.len(), r.tasks);
    assert!(
        (r.mean_quality[Precision::Fp16] - 1.0).abs() < 1e-9
            && r.mean_quality[Precision::Int8] >= r.mean_quality[Precision::Int2]
    );
    for split in [&r.in_domain, &r.cross_domain] {
        let names: Vec<&str> = split.strategies.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "uniform fp16",
                "uniform int8",
                "uniform int4",
                "uniform int2",
                "random",
                "oracle",
                "oracle at int8 quality",
                "controller + router",
                "controller at int8 quality"
            ]
        );
        let s = &split.strategies;
        assert!((s[0].cost - 1.0).abs() < 1e-12 && s[0].quality_retained == 1.0);
        assert!(s[1].cost < s[0].cost && s[2].cost < s[1].cost && s[3].cost < s[2].cost);
        assert_eq!(s[5].success_rate, 1.0);
        // The matched-quality bound keeps at least INT8's quality retained.
        assert!(s[6].quality_retained >= s[1].quality_retained - 1e-6);
        assert!(s[6].cost <= 1.0 + 1e-9, "bound cost {}", s[6].cost);
        assert!(s[7].cost <= 1.0 + 1e-9, "controller cost {}", s[7].cost);
        assert!(split.pearson_r.is_finite() && split.overhead_median_ms > 0.0);
        assert_eq!(split.sweep.len(), cfg.sweep.len());
        // The per-task oracle is never dearer than blindly mixing two uniform variants.
        assert_eq!(split.frontier.len(), 6);
        for r in &split.frontier {
            if let (Some(b), Some(o)) = (r.blind, r.oracle) {
                assert!(
                    o <= b + 1e-9,
                    "target {}: oracle {o} > blind mix {b}",
                    r.target
                );
            }
        }
        for c in &s[7..] {
            assert_eq!(
                c.mix.values().iter().sum::<usize>(),
                split.test_tasks,
                "{}",
                c.name
            );
        }
        assert!((0.5..=1.0).contains(&split.matched_target));
    }
    let md = report::markdown(r);
    assert!(md.contains("| controller + router |") && md.contains("Pearson r"));
    assert!(md.contains("APGR") && md.contains("| per-task oracle |"));
    let svg = report::svg(r);
    assert!(
        svg.starts_with("<svg") && svg.contains("oracle") && svg.trim_end().ends_with("</svg>")
    );
    // Labels are reusable: the same run from the saved labels gives the same report.
    let again = run(
        &set,
        &ByteTokenizer,
        &cfg,
        "stories260K",
        Some(out.labels.clone()),
    )
    .unwrap();
    assert_eq!(
        again.report.in_domain.strategies[5].cost,
        r.in_domain.strategies[5].cost
    );
    assert_eq!(again.report.in_domain.pearson_r, r.in_domain.pearson_r);
}
