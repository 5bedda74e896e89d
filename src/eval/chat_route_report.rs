//! The chat routing experiment's outputs for people: markdown tables per split and an SVG of
//! the frontier (bytes of weights read against quality retained).

use super::chat_route::{ChatRouteReport, ChatSplitResult, RoutePoint, TaskPrediction};
use super::chat_tasks::ChatKind;
use super::frontier::{self, Point};
use super::metrics::quantile;
use crate::quant::Precision;
use std::fmt::Write;

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.3}"))
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn point_row(out: &mut String, p: &RoutePoint) {
    let _ = writeln!(
        out,
        "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1}% | {} | {:.1}% | {}/{}/{}/{} |",
        p.name,
        p.target.map_or("-".to_string(), |t| format!("{t:.2}")),
        p.bytes,
        p.time,
        p.prefill,
        p.decode,
        100.0 * p.retained,
        if p.prefetches > 0 {
            format!("{} (+{} ahead)", p.swaps, p.prefetches)
        } else {
            p.swaps.to_string()
        },
        100.0 * p.hit_rate,
        p.mix[Precision::Fp16],
        p.mix[Precision::Int8],
        p.mix[Precision::Int4],
        p.mix[Precision::Int2]
    );
}

/// The goal line of a split: the controller's cost at the retained goal against the cheapest
/// uniform variant meeting it.
fn goal_cost(s: &ChatSplitResult) -> String {
    let g = &s.goals;
    let uniform = g
        .cheapest_uniform
        .map_or("none".to_string(), |(p, c)| format!("{p} {c:.3}"));
    format!(
        "{} vs {} ({})",
        opt(g.controller_cost),
        uniform,
        if g.below_cheapest_uniform {
            "below"
        } else {
            "not below"
        }
    )
}

/// What the controller predicted for the tasks of one kind, beside where the per-task oracle
/// sends them: whether the controller tells the kinds INT2 can take from those it cannot.
#[derive(Clone, Debug, PartialEq)]
pub struct KindPredictions {
    /// The kind.
    pub kind: ChatKind,
    /// Tasks of the kind.
    pub tasks: usize,
    /// Smallest, median and largest predicted complexity (nearest-rank quantiles, as
    /// [`quantile`]: of an even count, the lower middle one).
    pub predicted: [f32; 3],
    /// Tasks the oracle sends to INT2 (INT2 keeps all the task's best quality).
    pub oracle_int2: usize,
    /// The smallest predicted complexity among the tasks the oracle keeps off INT2: a kind
    /// INT2 can take is separable only if its tasks are predicted below this in every kind.
    pub lowest_needing_more: Option<f32>,
}

/// `preds` grouped by kind, in [`ChatKind::ALL`]'s order (kinds without tasks left out).
pub fn by_kind(preds: &[TaskPrediction]) -> Vec<KindPredictions> {
    ChatKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let mine: Vec<&TaskPrediction> = preds.iter().filter(|p| p.kind == kind).collect();
            if mine.is_empty() {
                return None;
            }
            let values: Vec<f64> = mine.iter().map(|p| p.predicted as f64).collect();
            let at = |q: f64| quantile(&values, q) as f32;
            Some(KindPredictions {
                kind,
                tasks: mine.len(),
                predicted: [at(0.0), at(0.5), at(1.0)],
                oracle_int2: mine.iter().filter(|p| p.oracle == Precision::Int2).count(),
                lowest_needing_more: mine
                    .iter()
                    .filter(|p| p.oracle != Precision::Int2)
                    .map(|p| p.predicted)
                    .min_by(f32::total_cmp),
            })
        })
        .collect()
}

fn kind_table(out: &mut String, preds: &[TaskPrediction]) {
    let _ = writeln!(
        out,
        "Test tasks by kind: the controller's predicted complexity, and the tasks the per-task oracle sends to INT2 (a task INT2 does as well as any variant).\n"
    );
    let _ = writeln!(
        out,
        "| kind | tasks | predicted min / median / max | oracle sends to INT2 | lowest prediction of a task that needs more |"
    );
    let _ = writeln!(out, "| --- | ---: | --- | ---: | ---: |");
    for k in by_kind(preds) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} / {:.4} / {:.4} | {} | {} |",
            k.kind.name(),
            k.tasks,
            k.predicted[0],
            k.predicted[1],
            k.predicted[2],
            k.oracle_int2,
            k.lowest_needing_more
                .map_or("-".to_string(), |v| format!("{v:.4}"))
        );
    }
    out.push('\n');
}

fn split_section(out: &mut String, s: &ChatSplitResult) {
    let _ = writeln!(out, "### {}\n", s.name);
    let _ = writeln!(
        out,
        "{} training tasks, {} test tasks; the base's mean quality on them {:.3}. Pearson r of predicted vs true complexity: {:.3}.\n",
        s.train_tasks, s.test_tasks, s.base_quality, s.pearson_r
    );
    let bins: Vec<String> = s
        .quality_model
        .edges
        .iter()
        .zip(&s.quality_model.quality)
        .map(|(e, q)| {
            format!(
                "<= {e:.3}: {:.2}/{:.2}/{:.2}/{:.2}",
                q[Precision::Fp16],
                q[Precision::Int8],
                q[Precision::Int4],
                q[Precision::Int2]
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Router calibrated on {} (Pearson r {:.3} on the training tasks); expected relative quality FP16/INT8/INT4/INT2 per predicted-complexity bin: {}.\n",
        s.calibration,
        s.calibration_pearson_r,
        bins.join("; ")
    );
    let _ = writeln!(
        out,
        "| strategy | router target | bytes vs FP16 | time vs FP16 | prefill | decode | quality retained | swaps | hit rate | fp16/int8/int4/int2 tasks |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for p in s.baselines.iter().chain(&s.sweep) {
        point_row(out, p);
    }
    let _ = writeln!(
        out,
        "\nFrontier from uniform INT4's to uniform INT8's quality (cost of each strategy at the target; the controller's read off the hull of its sweep). APGR: bytes {}, time {}.\n",
        opt(s.apgr_bytes),
        opt(s.apgr_time)
    );
    let _ = writeln!(
        out,
        "| quality retained | bytes: blind mix | bytes: oracle | bytes: controller | time: blind mix | time: oracle | time: controller |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &s.rows {
        let _ = writeln!(
            out,
            "| {:.1}% | {} | {} | {} | {} | {} | {} |",
            100.0 * r.retained,
            opt(r.bytes.blind),
            opt(r.bytes.oracle),
            opt(r.bytes.strategy),
            opt(r.time.blind),
            opt(r.time.oracle),
            opt(r.time.strategy)
        );
    }
    let g = &s.goals;
    let _ = writeln!(
        out,
        "\nGoals (bytes): beats blind mixing at every target: {}; APGR >= 50%: {}; at {:.0}% retained the controller costs {}.\n",
        yes(g.beats_blind),
        yes(g.apgr_half),
        100.0 * g.retained_goal,
        goal_cost(s)
    );
    kind_table(out, &s.predictions);
}

/// The report as markdown: a summary line per split, then each split's tables.
pub fn markdown(r: &ChatRouteReport) -> String {
    let mut out = String::from("## Routing on chat tasks\n\n");
    let b = &r.relative_bytes;
    let _ = writeln!(
        out,
        "{} labelled tasks; bytes per forward vs FP16: INT8 {:.3}, INT4 {:.3}, INT2 {:.3}; controller of {} parameters. Quality: success on checkable tasks, top-1 agreement with FP16 on open-ended ones; retained = mean quality over FP16's on the same tasks. Time: measured prefill + decode of each variant's own answer (labelling run), relative to FP16's. Swaps: loads a task waited for when the test tasks are replayed domain by domain; \"+N ahead\": loads of the router's next variant in the background.\n",
        r.tasks,
        b[Precision::Int8],
        b[Precision::Int4],
        b[Precision::Int2],
        r.controller_params
    );
    let _ = writeln!(
        out,
        "| split | test tasks | Pearson r | APGR bytes | APGR time | beats blind (bytes) | bytes at the retained goal: controller vs cheapest uniform |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- | --- |");
    for s in &r.splits {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {} | {} | {} | {} |",
            s.name,
            s.test_tasks,
            s.pearson_r,
            opt(s.apgr_bytes),
            opt(s.apgr_time),
            yes(s.goals.beats_blind),
            goal_cost(s)
        );
    }
    out.push('\n');
    for s in &r.splits {
        split_section(&mut out, s);
    }
    out
}

/// A split's name for a legend: the held-out part of a cross-domain split, else the part
/// before the colon.
fn short_name(name: &str) -> &str {
    match name.find("test on") {
        Some(i) => &name[i..],
        None => name.split(':').next().unwrap_or(name),
    }
}

/// Frontier plot: for the first split, the uniform variants, blind mixing and the per-task
/// oracle (bytes); the controller's sweep hull for every split.
pub fn svg(r: &ChatRouteReport) -> String {
    let (w, h, m) = (640.0, 440.0, 60.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let Some(first) = r.splits.first() else {
        out.push_str("</svg>\n");
        return out;
    };
    let uniform: Vec<&RoutePoint> = first.baselines.iter().take(4).collect();
    let qmax = r
        .splits
        .iter()
        .flat_map(|s| s.baselines.iter().chain(&s.sweep))
        .map(|p| p.retained)
        .fold(1.0f64, f64::max)
        + 0.05;
    let cmin = (r
        .relative_bytes
        .values()
        .iter()
        .copied()
        .fold(1.0, f64::min)
        - 0.05)
        .max(0.0);
    let x = |c: f64| m + ((c - cmin) / (1.05 - cmin)).clamp(0.0, 1.0) * (w - 2.0 * m);
    // The routing happens between INT4 and INT8, near the base's quality: the axis starts at
    // QMIN and points below it sit on the axis with their value in the label.
    const QMIN: f64 = 0.8;
    let y = |q: f64| h - m - ((q - QMIN) / (qmax - QMIN)).clamp(0.0, 1.0) * (h - 2.0 * m);
    let _ = writeln!(
        out,
        r#"<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{b}" stroke="black"/>"#,
        b = h - m,
        r = w - m
    );
    for i in 0..=5 {
        let c = cmin + (1.05 - cmin) * i as f64 / 5.0;
        let q = QMIN + (qmax - QMIN) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{c:.2}</text><text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"#,
            x(c),
            h - m + 15.0,
            m - 5.0,
            y(q) + 4.0,
            100.0 * q
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">bytes of weights read per token, relative to FP16</text><text x="15" y="{}" transform="rotate(-90 15 {})" text-anchor="middle">quality retained</text>"#,
        w / 2.0,
        h - 20.0,
        h / 2.0,
        h / 2.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="14">chat tasks: routing frontier ({} test tasks, {})</text>"#,
        w / 2.0,
        first.test_tasks,
        short_name(&first.name)
    );
    // Curves over a dense grid of quality targets, each strategy's cost read off its hull.
    let base = first.base_quality.max(1e-9);
    let line = |out: &mut String, pts: &[(f64, f64)], color: &str, dash: &str| {
        let s: Vec<String> = pts
            .iter()
            .filter(|(_, q)| *q >= QMIN)
            .map(|(c, q)| format!("{:.1},{:.1}", x(*c), y(*q)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
            s.join(" ")
        );
    };
    let grid = |pts: &[Point]| -> Vec<(f64, f64)> {
        let top = pts.iter().map(|p| p.quality).fold(0.0, f64::max);
        (0..=60)
            .map(|i| top * i as f64 / 60.0)
            .filter_map(|t| frontier::mix_cost(pts, t).map(|c| (c, t / base)))
            .collect()
    };
    let as_points = |ps: &[&RoutePoint]| -> Vec<Point> {
        ps.iter()
            .map(|p| Point {
                cost: p.bytes,
                quality: p.quality,
            })
            .collect()
    };
    line(&mut out, &grid(&as_points(&uniform)), "gray", "6,3");
    let oracle: Vec<(f64, f64)> = first
        .rows
        .iter()
        .filter_map(|r| r.bytes.oracle.map(|c| (c, r.retained)))
        .collect();
    line(&mut out, &oracle, "green", "2,2");
    let colors = ["steelblue", "darkorange", "purple"];
    for (s, color) in r.splits.iter().zip(colors.iter().copied().cycle()) {
        let sweep: Vec<&RoutePoint> = s.sweep.iter().collect();
        let hull: Vec<(f64, f64)> = grid(&as_points(&sweep))
            .into_iter()
            .map(|(c, q)| (c, q * base / s.base_quality.max(1e-9)))
            .collect();
        line(&mut out, &hull, color, "none");
        for p in &s.sweep {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                x(p.bytes),
                y(p.retained)
            );
        }
    }
    for p in &uniform {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="crimson"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x(p.bytes),
            y(p.retained),
            x(p.bytes) + 7.0,
            y(p.retained) - 6.0,
            if p.retained < QMIN {
                format!("{} ({:.0}%, off scale)", p.name, 100.0 * p.retained)
            } else {
                p.name.clone()
            }
        );
    }
    let legend = [
        ("gray", "blind mix of two uniform variants"),
        ("green", "per-task oracle (INT4..INT8 targets)"),
    ]
    .into_iter()
    .chain(
        r.splits
            .iter()
            .zip(colors)
            .map(|(s, c)| (c, short_name(&s.name))),
    );
    for (i, (color, text)) in legend.enumerate() {
        let ly = m + 10.0 + 15.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{}" y="{:.1}">{}</text>"#,
            w - m - 210.0,
            ly - 3.0,
            w - m - 193.0,
            ly + 1.0,
            if color == "gray" || color == "green" {
                text.to_string()
            } else {
                format!("controller sweep, {text}")
            }
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(id: usize, kind: ChatKind, predicted: f32, oracle: Precision) -> TaskPrediction {
        TaskPrediction {
            id,
            domain: 0,
            kind,
            predicted,
            truth: 0.0,
            oracle,
        }
    }

    #[test]
    fn by_kind_summarises_each_kind_in_suite_order() {
        let preds = [
            pred(0, ChatKind::Logic, 0.30, Precision::Int4),
            pred(1, ChatKind::Code, 0.002, Precision::Int2),
            pred(2, ChatKind::Logic, 0.001, Precision::Int4),
            pred(3, ChatKind::Logic, 0.0005, Precision::Int2),
            pred(4, ChatKind::Code, 0.001, Precision::Int2),
        ];
        let rows = by_kind(&preds);
        // Code comes after Logic in ChatKind::ALL; kinds without tasks are left out.
        assert_eq!(
            rows.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [ChatKind::Logic, ChatKind::Code]
        );
        let logic = &rows[0];
        assert_eq!(logic.tasks, 3);
        assert_eq!(logic.predicted, [0.0005, 0.001, 0.30]);
        assert_eq!(logic.oracle_int2, 1);
        // The logic task predicted 0.001 needs INT4: below every code task's prediction, so
        // no threshold sends the code tasks to INT2 without it.
        assert_eq!(logic.lowest_needing_more, Some(0.001));
        let code = &rows[1];
        assert_eq!((code.tasks, code.oracle_int2), (2, 2));
        // Even count: the lower middle value.
        assert_eq!(code.predicted, [0.001, 0.001, 0.002]);
        assert_eq!(code.lowest_needing_more, None);
        assert!(by_kind(&[]).is_empty());
        let mut md = String::new();
        kind_table(&mut md, &preds);
        assert!(
            md.contains("| logic | 3 | 0.0005 / 0.0010 / 0.3000 | 1 | 0.0010 |"),
            "{md}"
        );
        assert!(
            md.contains("| code | 2 | 0.0010 / 0.0010 / 0.0020 | 2 | - |"),
            "{md}"
        );
    }
}
