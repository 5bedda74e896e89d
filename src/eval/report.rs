//! The benchmark's outputs for people: a markdown table and an SVG cost-versus-quality plot.

use super::speculation::SpeculationResult;
use super::workflow_bench::{EvalReport, SplitResult};
use crate::quant::Precision;
use std::fmt::Write;

fn split_table(s: &SplitResult, out: &mut String) {
    let _ = writeln!(out, "### {}\n", s.name);
    let _ = writeln!(
        out,
        "{} training tasks, {} test tasks.\n",
        s.train_tasks, s.test_tasks
    );
    let _ = writeln!(
        out,
        "| strategy | cost vs FP16 | cost reduction | quality retained | success rate | swaps | hit rate | fp16/int8/int4/int2 tasks |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in &s.strategies {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.1}% | {:.1}% | {:.1}% | {} | {:.1}% | {}/{}/{}/{} |",
            r.name,
            r.cost,
            100.0 * r.cost_reduction,
            100.0 * r.quality_retained,
            100.0 * r.success_rate,
            r.swaps,
            100.0 * r.hit_rate,
            r.mix[Precision::Fp16],
            r.mix[Precision::Int8],
            r.mix[Precision::Int4],
            r.mix[Precision::Int2]
        );
    }
    let _ = writeln!(
        out,
        "\n`{}` reads the test labels: the cheapest routing with every task's quality known that keeps uniform INT8's quality retained, i.e. the most any controller could save at that quality. `{}` is the controller with the router's target ({:.3}) calibrated on the training split to uniform INT8's quality retained there.",
        super::workflow_bench::MATCHED_ORACLE,
        super::workflow_bench::MATCHED_CONTROLLER,
        s.matched_target
    );
    let _ = writeln!(
        out,
        "\nPearson r (predicted vs true complexity): {:.3}. Controller + router overhead per task: median {:.3} ms, p99 {:.3} ms.\n",
        s.pearson_r, s.overhead_median_ms, s.overhead_p99_ms
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        out,
        "Frontier in bytes of weights read vs FP16 (swaps aside), from uniform INT4's to uniform INT8's quality. APGR (share of the oracle's saving over blind mixing that the controller recovers): {}.\n",
        f(s.apgr)
    );
    let _ = writeln!(
        out,
        "| quality target | blind mix of two uniform variants | per-task oracle | controller sweep |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: |");
    for r in &s.frontier {
        let _ = writeln!(
            out,
            "| {:.3} | {} | {} | {} |",
            r.target,
            f(r.blind),
            f(r.oracle),
            f(r.strategy)
        );
    }
    let _ = writeln!(out);
    if let Some(sp) = &s.speculation {
        speculation_table(sp, out);
    }
}

/// The hard tasks with and without speculation, and the whole benchmark's cost.
fn speculation_table(sp: &SpeculationResult, out: &mut String) {
    let _ = writeln!(
        out,
        "Speculation ({}, same routes): {} hard tasks (routed to FP16 or INT8), {} served through greedy speculation from a cheaper variant resident or loaded into free capacity ({} draft loads; {} draft tokens per verify), the rest decoded plainly; {} target loads in this replay. Mean acceptance {:.1}%, {:.2} tokens per verify.\n",
        sp.strategy,
        sp.hard_tasks,
        sp.speculated,
        sp.draft_loads,
        sp.draft_len,
        sp.swaps,
        100.0 * sp.acceptance,
        sp.tokens_per_verify
    );
    let _ = writeln!(
        out,
        "| | hard tasks' cost vs FP16 | whole-benchmark cost vs FP16 | saving vs uniform FP16 | quality retained | success rate |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        out,
        "| without speculation | {:.3} | {:.3} | {:.1}% | {:.1}% | {:.1}% |",
        sp.hard_cost_plain,
        sp.cost_plain,
        100.0 * sp.cost_reduction_plain,
        100.0 * sp.quality_retained_plain,
        100.0 * sp.success_rate_plain
    );
    let _ = writeln!(
        out,
        "| with speculation | {:.3} | {:.3} | {:.1}% | {:.1}% | {:.1}% |",
        sp.hard_cost,
        sp.cost,
        100.0 * sp.cost_reduction,
        100.0 * sp.quality_retained,
        100.0 * sp.success_rate
    );
    let _ = writeln!(
        out,
        "\n| target | draft | tasks | drafted | accepted | acceptance | tokens per verify | bytes vs plain target |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for p in &sp.pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1}% | {:.2} | {:.3} |",
            p.target,
            p.draft,
            p.tasks,
            p.drafted,
            p.accepted,
            100.0 * p.acceptance,
            p.tokens_per_verify,
            p.bytes_factor
        );
    }
    if sp.mismatches == 0 {
        let _ = writeln!(
            out,
            "\nEvery speculated output equals its target's own greedy output.\n"
        );
    } else {
        let _ = writeln!(
            out,
            "\n**{} of {} speculated outputs differ from their target's own greedy output** (counted as failed tasks above).\n",
            sp.mismatches, sp.speculated
        );
    }
}

/// The report as markdown.
pub fn markdown(r: &EvalReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Workflow benchmark\n");
    let _ = writeln!(
        out,
        "{} workflows, {} tasks; controller {} parameters. Variant sizes vs FP16: int8 {:.3}, int4 {:.3}, int2 {:.3}.\n",
        r.workflows, r.tasks, r.controller_params, r.relative_bytes[Precision::Int8], r.relative_bytes[Precision::Int4], r.relative_bytes[Precision::Int2]
    );
    let _ = writeln!(
        out,
        "| precision | mean quality (top-1 agreement) | meets threshold | variance beyond sampling noise | exact match | mean KL (nats) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for i in Precision::ALL {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.1}% | {:.0}% | {:.1}% | {:.4} |",
            i.name(),
            r.mean_quality[i],
            100.0 * r.adequate[i],
            100.0 * r.signal_share[i],
            100.0 * r.exact_rate[i],
            r.mean_kl[i]
        );
    }
    let _ = writeln!(
        out,
        "\nBy stage kind: mean quality (share of tasks meeting the threshold) per precision\n"
    );
    let _ = writeln!(out, "| stage kind | tasks | int8 | int4 | int2 |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for k in &r.by_kind {
        let cell =
            |p: Precision| format!("{:.3} ({:.1}%)", k.mean_quality[p], 100.0 * k.adequate[p]);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            k.kind,
            k.tasks,
            cell(Precision::Int8),
            cell(Precision::Int4),
            cell(Precision::Int2)
        );
    }
    let _ = writeln!(out);
    split_table(&r.in_domain, &mut out);
    split_table(&r.cross_domain, &mut out);
    let _ = writeln!(
        out,
        "Threshold sweep (in-domain): target -> cost, quality retained, success rate\n"
    );
    let _ = writeln!(
        out,
        "| target | cost vs FP16 | quality retained | success rate |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: |");
    for (t, c, q, s) in &r.in_domain.sweep {
        let _ = writeln!(
            out,
            "| {t:.2} | {c:.3} | {:.1}% | {:.1}% |",
            100.0 * q,
            100.0 * s
        );
    }
    out
}

/// A cost-versus-quality scatter plot (in-domain split): each baseline a point, the
/// controller's threshold sweep a line.
pub fn svg(r: &EvalReport) -> String {
    let s = &r.in_domain;
    let (w, h, m) = (640.0, 420.0, 60.0);
    let qmin = s
        .strategies
        .iter()
        .map(|x| x.quality_retained)
        .chain(s.sweep.iter().map(|x| x.2))
        .fold(1.0f64, f64::min)
        .min(0.9)
        - 0.02;
    let x = |c: f64| m + (c / 1.1).clamp(0.0, 1.0) * (w - 2.0 * m);
    let y = |q: f64| h - m - ((q - qmin) / (1.0 - qmin + 0.01)).clamp(0.0, 1.0) * (h - 2.0 * m);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<line x1="{m}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{}" stroke="black"/>"#,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for i in 0..=5 {
        let c = i as f64 * 0.2;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c:.1}</text>"#,
            x(c),
            h - m + 15.0
        );
        let q = qmin + (1.0 - qmin) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"#,
            m - 5.0,
            y(q) + 4.0,
            100.0 * q
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">cost relative to FP16 (incl. swaps)</text>"#,
        w / 2.0,
        h - 20.0
    );
    let _ = writeln!(
        out,
        r#"<text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">quality retained</text>"#,
        h / 2.0,
        h / 2.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="14">cost vs quality, {} test tasks</text>"#,
        w / 2.0,
        s.test_tasks
    );
    let pts: Vec<String> = s
        .sweep
        .iter()
        .map(|(_, c, q, _)| format!("{:.1},{:.1}", x(*c), y(*q)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="steelblue" stroke-width="2"/>"#,
        pts.join(" ")
    );
    for (_, c, q, _) in &s.sweep {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="steelblue"/>"#,
            x(*c),
            y(*q)
        );
    }
    for st in &s.strategies {
        let color = match st.name.as_str() {
            "oracle" | super::workflow_bench::MATCHED_ORACLE => "green",
            super::workflow_bench::CONTROLLER | super::workflow_bench::MATCHED_CONTROLLER => {
                "steelblue"
            }
            "random" => "gray",
            _ => "crimson",
        };
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x(st.cost),
            y(st.quality_retained),
            x(st.cost) + 7.0,
            y(st.quality_retained) - 6.0,
            st.name
        );
    }
    out.push_str("</svg>\n");
    out
}
