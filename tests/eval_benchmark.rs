//! A reduced workflow benchmark on stories260K (packed RTN variants, byte-encoded task text until
//! the llama2.c tokenizer is wired in): every strategy is reported, the uniform baselines are
//! ordered by cost, the oracle meets the threshold everywhere, and the controller + router
//! is never dearer than both FP16 and the swap-blind per-task oracle. Rerun from the saved
//! labels with speculation on, no strategy changes, and the hard tasks' speculation costs are
//! recomputed from the report's JSON (recorded forwards of target and draft) with no output
//! differing from the target's.
//! The benchmark trains the controller, so it needs the `train` feature.
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
        // A test split this small holds six tasks, so one variant swap weighs about as much
        // as a task and a mixed route can cost more than uniform FP16 (the oracle's often
        // does); the router, which weighs swaps, must not be dearer than both.
        let bound = s[0].cost.max(s[5].cost);
        assert!(
            s[7].cost <= bound + 1e-9,
            "controller cost {} above FP16 and the oracle ({bound})",
            s[7].cost
        );
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
    assert!(r.in_domain.speculation.is_none() && !md.contains("Speculation ("));
    // Labels are reusable: the same run from the saved labels gives the same report; with
    // speculation on, every strategy's cost and quality stay as they were.
    let mut spec_cfg = cfg.clone();
    spec_cfg.speculation = Some(3);
    let again = run(
        &set,
        &ByteTokenizer,
        &spec_cfg,
        "stories260K",
        Some(out.labels.clone()),
    )
    .unwrap();
    assert_eq!(again.report.in_domain.pearson_r, r.in_domain.pearson_r);
    for (a, b) in [
        (&again.report.in_domain, &r.in_domain),
        (&again.report.cross_domain, &r.cross_domain),
    ] {
        for (x, y) in a.strategies.iter().zip(&b.strategies) {
            assert_eq!(
                (x.cost, x.quality_retained, x.success_rate),
                (y.cost, y.quality_retained, y.success_rate),
                "{}",
                x.name
            );
        }
    }
    let md = report::markdown(&again.report);
    assert!(md.contains("| with speculation |") && md.contains("| without speculation |"));
    check_speculation(&again.report, out.labels.n_gen, 3);
}

/// Recomputes the speculation results of `report` from its JSON: every hard task's cost from
/// its recorded forwards, the hard tasks' and the whole benchmark's cost from them, and the
/// quality (which must not change: no speculated output may differ from its target's).
fn check_speculation(report: &agentcompress::eval::EvalReport, n_gen: usize, draft_len: u64) {
    let json = serde_json::to_value(report).unwrap();
    let rel: Vec<f64> = json["relative_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let index = |v: &serde_json::Value| -> usize {
        let name = v.as_str().unwrap();
        Precision::ALL
            .iter()
            .position(|p| p.name() == name)
            .unwrap_or_else(|| panic!("unknown precision {name}"))
    };
    let f = |v: &serde_json::Value, k: &str| -> f64 {
        v[k].as_f64().unwrap_or_else(|| panic!("no number {k}"))
    };
    let u = |v: &serde_json::Value, k: &str| -> u64 {
        v[k].as_u64().unwrap_or_else(|| panic!("no count {k}"))
    };
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-9, "{what}: {a} vs {b}");
    let mut speculated = 0;
    for (key, split) in [
        ("in_domain", &report.in_domain),
        ("cross_domain", &report.cross_domain),
    ] {
        let sp = &json[key]["speculation"];
        let controller = split
            .strategies
            .iter()
            .find(|s| s.name == "controller + router")
            .unwrap();
        assert_eq!(sp["strategy"], "controller + router");
        close(
            f(sp, "cost_plain"),
            controller.cost,
            "cost without speculation",
        );
        close(
            f(sp, "quality_retained_plain"),
            controller.quality_retained,
            "quality without speculation",
        );
        let hard = controller.mix[Precision::Fp16] + controller.mix[Precision::Int8];
        let tasks = sp["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), hard);
        assert_eq!(u(sp, "hard_tasks") as usize, hard);
        let uniform = f(sp, "uniform_fp16_cost");
        let (mut plain_sum, mut sum, mut spec_n, mut loads) = (0.0, 0.0, 0, 0);
        let (mut drafted_all, mut accepted_all) = (0, 0);
        for t in tasks {
            let target = index(&t["target"]);
            assert!(target <= 1, "hard tasks are fp16 or int8: {t}");
            let (swap, load) = (f(t, "swap_cost"), f(t, "draft_load_cost"));
            assert!(swap >= 0.0 && load >= 0.0, "{t}");
            assert!(f(t, "cost_plain") >= rel[target] - 1e-12, "{t}");
            let (tf, df) = (u(t, "target_forwards"), u(t, "draft_forwards"));
            let compute = if t["draft"].is_null() {
                assert_eq!((tf, df, load), (n_gen as u64, 0, 0.0), "{t}");
                rel[target]
            } else {
                let draft = index(&t["draft"]);
                assert!(draft > target, "the draft is cheaper: {t}");
                let (d, a, v) = (u(t, "drafted"), u(t, "accepted"), u(t, "verifies"));
                // Prefill plus verifies, prefill plus one forward per draft token; every
                // token but the prefill's is decided by a verify.
                assert_eq!((tf, df), (v + 1, d + 1), "{t}");
                assert_eq!(a + v + 1, n_gen as u64, "{t}");
                assert!(a <= d && d <= draft_len * v, "{t}");
                assert_eq!(t["matches_target"], true, "{t}");
                spec_n += 1;
                loads += (load > 0.0) as u64;
                drafted_all += d;
                accepted_all += a;
                (tf as f64 * rel[target] + df as f64 * rel[draft]) / n_gen as f64
            };
            close(compute + swap + load, f(t, "cost"), "task cost");
            plain_sum += f(t, "cost_plain");
            sum += f(t, "cost");
        }
        assert_eq!(u(sp, "draft_loads"), loads);
        assert_eq!(u(sp, "speculated"), spec_n);
        assert_eq!(u(sp, "mismatches"), 0);
        close(
            plain_sum / uniform,
            f(sp, "hard_cost_plain"),
            "hard cost plain",
        );
        close(sum / uniform, f(sp, "hard_cost"), "hard cost");
        close(
            f(sp, "cost"),
            sum / uniform + f(sp, "other_cost"),
            "whole-benchmark cost",
        );
        close(1.0 - f(sp, "cost"), f(sp, "cost_reduction"), "saving");
        if drafted_all > 0 {
            close(
                accepted_all as f64 / drafted_all as f64,
                f(sp, "acceptance"),
                "acceptance",
            );
        }
        close(
            f(sp, "quality_retained"),
            f(sp, "quality_retained_plain"),
            "quality with and without",
        );
        close(
            f(sp, "success_rate"),
            f(sp, "success_rate_plain"),
            "success with and without",
        );
        speculated += spec_n;
    }
    assert!(
        speculated > 0,
        "no hard task had a cheaper variant resident: nothing was speculated"
    );
}
