//! Speculative decoding over stories260K's variants: greedy output identical to the target's
//! own for every (target, draft) pair and draft length; roll-backs at every draft position,
//! EOS inside drafts, the context and `max_new_tokens` ending inside a draft, cancellation;
//! and with sampling, the distribution of the tokens decided by the acceptance rule checked
//! against the target's exact distribution (chi-square), with the draft's own distribution as
//! a control the test must reject.

mod common;

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::{
    generate, generate_speculative, DraftLen, DraftLenMemory, GenerateOutput, GenerateParams,
    Model, SamplingParams, SpeculativeParams,
};
use agentcompress::model::tokenizer::{load_tokenizer, Tokenizer};
use agentcompress::model::{ModelWeights, Tensor};
use agentcompress::quant::{quantize_model, Precision, QuantConfig};
use std::sync::OnceLock;

const PROMPTS: [&str; 8] = [
    "Once upon a time",
    "Lily and Tom went to the park to play with a big red ball.",
    "The cat sat.",
    "Why did the little dog run to the tree?",
    "One day, a bird found a shiny stone near the river and took it home.",
    "Ben was sad because his toy broke.",
    "Mom said",
    "The sun was hot and the children wanted ice cream, so mom said yes.",
];

struct Stories {
    dense: ModelWeights<Tensor>,
    tok: Box<dyn Tokenizer>,
}

fn stories() -> Option<&'static Stories> {
    static S: OnceLock<Option<Stories>> = OnceLock::new();
    S.get_or_init(|| {
        let root = common::stories260k_dir()?;
        Some(Stories {
            dense: agentcompress::model::llama2c::load(&root.join("stories260K.bin")).unwrap(),
            tok: load_tokenizer(&root.join("tok512.bin")).unwrap(),
        })
    })
    .as_ref()
}

/// The four variants (RTN), each with `eos` as its end-of-sequence tokens when given.
fn variants(s: &Stories, eos: Option<&[u32]>) -> Vec<(Precision, Model<CpuBackend>)> {
    Precision::ALL
        .iter()
        .map(|&p| {
            let mut w = quantize_model(&s.dense, p, &QuantConfig::default(), None).unwrap();
            if let Some(e) = eos {
                w.config.eos_tokens = e.to_vec();
            }
            (p, Model::new(CpuBackend::new(), &w).unwrap())
        })
        .collect()
}

fn ids(s: &Stories, prompt: &str) -> Vec<u32> {
    s.tok.encode(prompt, true).unwrap()
}

fn spec(k: DraftLen) -> SpeculativeParams {
    SpeculativeParams {
        draft_len: k,
        memory: None,
    }
}

/// Plain and speculative generation with their token events; asserts they agree in every
/// observable: ids, text, end reason, limits, events.
fn assert_same(
    s: &Stories,
    (t, d): (&Model<CpuBackend>, &Model<CpuBackend>),
    prompt: &[u32],
    params: &GenerateParams,
    k: DraftLen,
    stop_after: Option<usize>,
    what: &str,
) -> GenerateOutput {
    let mut plain_events = Vec::new();
    let plain = generate(t, s.tok.as_ref(), prompt, params, |e| {
        plain_events.push((e.id, e.text.to_string(), e.index));
        stop_after != Some(e.index + 1)
    })
    .unwrap();
    let mut spec_events = Vec::new();
    let fast = generate_speculative(t, d, s.tok.as_ref(), prompt, params, &spec(k), |e| {
        spec_events.push((e.id, e.text.to_string(), e.index));
        stop_after != Some(e.index + 1)
    })
    .unwrap();
    assert_eq!(plain.ids, fast.ids, "{what}");
    assert_eq!(plain.text, fast.text, "{what}");
    assert_eq!(plain_events, spec_events, "{what}");
    assert_eq!(
        (plain.hit_eos, plain.cancelled, plain.context_limited),
        (fast.hit_eos, fast.cancelled, fast.context_limited),
        "{what}"
    );
    assert_eq!(plain.context, fast.context, "{what}");
    assert_eq!(plain.prompt_ids, fast.prompt_ids, "{what}");
    assert!(plain.speculation.is_none());
    let st = fast.speculation.as_ref().unwrap();
    assert!(st.accepted <= st.drafted, "{what}");
    assert!(st.drafted <= st.verifies * k.max() as u64, "{what}");
    fast
}

fn greedy(max_new_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens,
        ..Default::default()
    }
}

#[test]
fn greedy_output_is_the_targets_for_every_pair_and_draft_length() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    for (tp, t) in &models {
        for (dp, d) in &models {
            for k in [
                DraftLen::Fixed(1),
                DraftLen::Fixed(3),
                DraftLen::Adaptive(8),
            ] {
                let mut drafted = 0;
                for p in PROMPTS {
                    let what = format!("target {tp}, draft {dp}, {k:?}, prompt {p:?}");
                    let out = assert_same(s, (t, d), &ids(s, p), &greedy(48), k, None, &what);
                    assert_eq!(out.ids.len(), 48, "{what}");
                    drafted += out.speculation.unwrap().drafted;
                }
                assert!(
                    drafted > 0,
                    "target {tp}, draft {dp}, {k:?}: nothing drafted"
                );
            }
        }
    }
}

#[test]
fn a_draft_length_memory_shared_by_runs_keeps_the_targets_output() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let (t, d) = (&models[0].1, &models[2].1);
    let memory = DraftLenMemory::new();
    let params = SpeculativeParams {
        draft_len: DraftLen::Adaptive(8),
        memory: Some(memory.clone()),
    };
    for p in PROMPTS {
        let prompt = ids(s, p);
        let plain = generate(t, s.tok.as_ref(), &prompt, &greedy(48), |_| true).unwrap();
        let fast =
            generate_speculative(t, d, s.tok.as_ref(), &prompt, &greedy(48), &params, |_| {
                true
            })
            .unwrap();
        assert_eq!(plain.ids, fast.ids, "{p:?}");
        // Each run leaves what it learnt for the next.
        assert!(!memory.is_empty(), "{p:?}");
    }
}

#[test]
fn rejections_at_every_draft_position_roll_back_exactly() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let t = &models[0].1;
    let k = 6;
    let mut rejections = vec![0u64; k];
    let mut full = 0;
    for (dp, d) in &models[1..] {
        for p in PROMPTS {
            let what = format!("draft {dp}, prompt {p:?}");
            let out = assert_same(
                s,
                (t, d),
                &ids(s, p),
                &greedy(96),
                DraftLen::Fixed(k),
                None,
                &what,
            );
            let st = out.speculation.unwrap();
            for (i, n) in st.rejections_at.iter().enumerate() {
                rejections[i] += n;
            }
            full += st.verifies - st.rejections_at.iter().sum::<u64>();
        }
    }
    // Every rejection position (and a fully accepted draft) happened, so each roll-back
    // length was exercised by the identity checks above.
    assert!(rejections.iter().all(|&n| n > 0), "{rejections:?}");
    assert!(full > 0);
}

#[test]
fn eos_inside_drafts_ends_where_plain_generation_does() {
    let Some(s) = stories() else { return };
    // Frequent tokens as end-of-sequence, so generation stops at many draft positions.
    let mut eos_hits = 0;
    for word in [".", ",", " the", " was"] {
        let eos = *s.tok.encode(word, false).unwrap().last().unwrap();
        let models = variants(s, Some(&[eos]));
        let t = &models[0].1;
        for (dp, d) in &models[1..3] {
            for k in [DraftLen::Fixed(1), DraftLen::Fixed(4), DraftLen::Fixed(8)] {
                for p in PROMPTS {
                    let what = format!("eos {eos}, draft {dp}, {k:?}, prompt {p:?}");
                    let out = assert_same(s, (t, d), &ids(s, p), &greedy(64), k, None, &what);
                    eos_hits += usize::from(out.hit_eos);
                }
            }
        }
    }
    assert!(eos_hits > 50, "{eos_hits}");
}

#[test]
fn limits_and_context_end_inside_a_draft() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let (t, d) = (&models[0].1, &models[1].1);
    let prompt = ids(s, PROMPTS[1]);
    for k in [DraftLen::Fixed(1), DraftLen::Fixed(5), DraftLen::Fixed(8)] {
        for n in 0..14 {
            let what = format!("{k:?}, max_new_tokens {n}");
            let out = assert_same(s, (t, d), &prompt, &greedy(n), k, None, &what);
            assert_eq!(out.ids.len(), n, "{what}");
            if n == 0 {
                continue;
            }
            // The context ends `n` tokens after the prompt while 40 are asked for.
            let params = GenerateParams {
                context: prompt.len() + n,
                ..greedy(40)
            };
            let what = format!("{k:?}, context {} + {n}", prompt.len());
            let out = assert_same(s, (t, d), &prompt, &params, k, None, &what);
            assert_eq!(out.ids.len(), n, "{what}");
            assert!(out.context_limited, "{what}");
        }
        // The model's own context (512) ending inside a draft.
        let long: Vec<u32> = std::iter::once(1)
            .chain(prompt.iter().copied().cycle().take(500))
            .collect();
        let what = format!("{k:?}, model context");
        let out = assert_same(s, (t, d), &long, &greedy(100), k, None, &what);
        assert_eq!(out.ids.len(), 512 - long.len(), "{what}");
    }
}

#[test]
fn cancellation_inside_a_draft_stops_at_the_same_token() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let (t, d) = (&models[0].1, &models[2].1);
    let prompt = ids(s, PROMPTS[0]);
    for stop in 1..12 {
        let what = format!("stop after {stop}");
        let out = assert_same(
            s,
            (t, d),
            &prompt,
            &greedy(30),
            DraftLen::Fixed(4),
            Some(stop),
            &what,
        );
        assert_eq!(out.ids.len(), stop, "{what}");
        assert!(out.cancelled, "{what}");
    }
}

#[test]
fn bad_draft_settings_are_named() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let (t, d) = (&models[0].1, &models[1].1);
    let prompt = ids(s, PROMPTS[0]);
    let e = generate_speculative(
        t,
        d,
        s.tok.as_ref(),
        &prompt,
        &greedy(4),
        &spec(DraftLen::Fixed(0)),
        |_| true,
    )
    .unwrap_err();
    assert!(e.to_string().contains("draft length"), "{e}");
    let mut w = quantize_model(&s.dense, Precision::Int4, &QuantConfig::default(), None).unwrap();
    w.config.max_seq_len = 16;
    let short = Model::new(CpuBackend::new(), &w).unwrap();
    let e = generate_speculative(
        t,
        &short,
        s.tok.as_ref(),
        &prompt,
        &greedy(4),
        &spec(DraftLen::Fixed(2)),
        |_| true,
    )
    .unwrap_err();
    assert!(e.to_string().contains("draft model's context"), "{e}");
}

/// The target's exact distribution of the next token after `prefix` under `sampling`.
fn exact(model: &Model<CpuBackend>, prefix: &[u32], sampling: &SamplingParams) -> Vec<f64> {
    let mut st = model.new_state(64).unwrap();
    let logits = model.forward(&mut st, prefix, false).unwrap();
    probabilities(&logits, sampling)
}

/// The sampler's distribution, recomputed here independently: softmax at the temperature,
/// then the smallest set of most likely tokens reaching `top_p`, renormalised.
fn probabilities(logits: &[f32], sampling: &SamplingParams) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / sampling.temperature as f64).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    let mut order: Vec<usize> = (0..e.len()).collect();
    order.sort_by(|&a, &b| e[b].total_cmp(&e[a]).then(a.cmp(&b)));
    let mut p = vec![0.0; e.len()];
    let mut kept = 0.0;
    for &i in &order {
        p[i] = e[i];
        kept += e[i];
        if kept >= sampling.top_p as f64 * sum {
            break;
        }
    }
    p.iter().map(|x| x / kept).collect()
}

/// Pearson's chi-square of `counts` against `expected` probabilities, pooling bins expected
/// below 5; returns the statistic and its critical value at significance 1e-4.
fn chi_square(counts: &[u64], expected: &[f64]) -> (f64, f64) {
    let n: u64 = counts.iter().sum();
    let (mut stat, mut df) = (0.0, 0usize);
    let (mut pool_o, mut pool_e) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(expected) {
        let e = p * n as f64;
        if e >= 5.0 {
            stat += (c as f64 - e).powi(2) / e;
            df += 1;
        } else {
            pool_o += c as f64;
            pool_e += e;
        }
    }
    if pool_e > 0.0 {
        // An observation where the distribution puts (almost) nothing weighs heavily.
        stat += (pool_o - pool_e).powi(2) / pool_e.max(1e-9);
        df += 1;
    }
    let df = (df.max(2) - 1) as f64;
    // Wilson-Hilferty approximation of the chi-square quantile; z(1 - 1e-4) = 3.719.
    let a = 2.0 / (9.0 * df);
    let crit = df * (1.0 - a + 3.719 * a.sqrt()).powi(3);
    (stat, crit)
}

#[test]
fn sampled_tokens_follow_the_targets_distribution() {
    let Some(s) = stories() else { return };
    let models = variants(s, None);
    let prompt = ids(s, "Lily saw a");
    for (dp, sampling) in [
        (
            3,
            SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                seed: 0,
            },
        ),
        (
            2,
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed: 0,
            },
        ),
    ] {
        let (t, d) = (&models[0].1, &models[dp].1);
        let n = 3000u64;
        let vocab = t.config().vocab_size;
        // Second and third generated tokens: the first draft position and the one after.
        let mut second = vec![0u64; vocab];
        let mut third: std::collections::HashMap<(u32, u32), Vec<u64>> = Default::default();
        for seed in 0..n {
            let params = GenerateParams {
                max_new_tokens: 3,
                stop_at_eos: false,
                sampling: SamplingParams {
                    seed,
                    ..sampling.clone()
                },
                ..Default::default()
            };
            let out = generate_speculative(
                t,
                d,
                s.tok.as_ref(),
                &prompt,
                &params,
                &spec(DraftLen::Fixed(2)),
                |_| true,
            )
            .unwrap();
            second[out.ids[1] as usize] += 1;
            third
                .entry((out.ids[0], out.ids[1]))
                .or_insert_with(|| vec![0; vocab])[out.ids[2] as usize] += 1;
        }
        // Exact marginals of the second token under the target and under the draft.
        let first = exact(t, &prompt, &sampling);
        let (mut want, mut control) = (vec![0.0; vocab], vec![0.0; vocab]);
        for (t1, &p1) in first.iter().enumerate().filter(|(_, &p)| p > 1e-7) {
            let mut prefix = prompt.clone();
            prefix.push(t1 as u32);
            let pt = exact(t, &prefix, &sampling);
            let pd = exact(d, &prefix, &sampling);
            for v in 0..vocab {
                want[v] += p1 * pt[v];
                control[v] += p1 * pd[v];
            }
        }
        let what = format!("draft {}, {sampling:?}", Precision::ALL[dp]);
        let (stat, crit) = chi_square(&second, &want);
        assert!(
            stat < crit,
            "{what}: second token chi2 {stat:.1} >= {crit:.1}"
        );
        let (stat, crit) = chi_square(&second, &control);
        assert!(
            stat > crit,
            "{what}: the control (draft) was not rejected: {stat:.1}"
        );
        // The third token given the most frequent first two.
        let ((t1, t2), counts) = third
            .iter()
            .max_by_key(|(_, c)| c.iter().sum::<u64>())
            .unwrap();
        let mut prefix = prompt.clone();
        prefix.extend([*t1, *t2]);
        let (stat, crit) = chi_square(counts, &exact(t, &prefix, &sampling));
        assert!(
            stat < crit,
            "{what}: third token chi2 {stat:.1} >= {crit:.1}"
        );
    }
}

#[test]
fn engine_api_serves_each_variant_through_speculation() {
    use agentcompress::api::{Engine, Speculation};
    let Some(root) = common::stories260k_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("variants");
    common::build_stories_variants(&root, &dir);
    let engine = Engine::builder(&dir)
        .device(agentcompress::api::Device::Cpu)
        .build()
        .unwrap();
    let prompt = engine.encode(PROMPTS[3]).unwrap();
    let params = greedy(40);
    for (target, draft) in [
        (Precision::Fp16, Precision::Int4),
        (Precision::Int8, Precision::Int4),
        (Precision::Int4, Precision::Int2),
    ] {
        let plain = engine
            .generate_ids_on(target, &prompt, &params, |_| true)
            .unwrap();
        let spec = Speculation {
            target,
            draft,
            draft_len: DraftLen::Fixed(4),
        };
        let fast = engine
            .generate_ids_speculative(&prompt, &params, &spec, |_| true)
            .unwrap();
        assert_eq!(plain.ids, fast.ids, "{target} via {draft}");
        assert!(fast.speculation.unwrap().drafted > 0);
    }
    // A routed run (every task goes to the FP16 fallback here) says how it was served.
    let r = engine
        .run_speculative(
            PROMPTS[0],
            &params,
            &Speculation::new(Precision::Int8),
            |_| true,
        )
        .unwrap();
    assert_eq!(r.route.precision, Precision::Fp16);
    assert!(
        r.route
            .reasons
            .iter()
            .any(|x| x.contains("via speculation from int8")),
        "{:?}",
        r.route.reasons
    );
    let e = engine
        .generate_ids_speculative(
            &prompt,
            &params,
            &Speculation {
                target: Precision::Int4,
                draft: Precision::Int8,
                draft_len: DraftLen::Fixed(2),
            },
            |_| true,
        )
        .unwrap_err();
    assert!(e.to_string().contains("fewer bits"), "{e}");
}

#[test]
fn the_router_times_plain_decoding_tries_each_draft_then_follows_its_measurements() {
    use agentcompress::api::Engine;
    let Some(root) = common::stories260k_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("variants");
    common::build_stories_variants(&root, &dir);
    // No controller in the directory: every task goes to the FP16 fallback.
    let engine = Engine::builder(&dir)
        .device(agentcompress::api::Device::Cpu)
        .build()
        .unwrap();
    let params = GenerateParams {
        max_new_tokens: 40,
        stop_at_eos: false,
        ..Default::default()
    };
    let has =
        |r: &agentcompress::api::RunResult, s: &str| r.route.reasons.iter().any(|x| x.contains(s));
    // Nothing cheaper resident: plain, and said so.
    let first = engine.run_planned(PROMPTS[1], &params, |_| true).unwrap();
    assert_eq!(first.route.precision, Precision::Fp16);
    assert!(first.route.speculation.is_none());
    assert!(
        has(&first, "no variant cheaper than fp16 is resident"),
        "{:?}",
        first.route.reasons
    );
    engine.make_resident(Precision::Int4).unwrap();
    // The first run timed plain FP16 (40 tokens), so the router now tries INT4 as a draft.
    let tried = engine.run_planned(PROMPTS[1], &params, |_| true).unwrap();
    let plan = tried.route.speculation.expect("an untried draft is tried");
    assert_eq!(plan.draft, Precision::Int4);
    assert!(plan.estimate.is_none());
    assert!(has(&tried, "trying it"), "{:?}", tried.route.reasons);
    assert_eq!(
        tried.output.ids, first.output.ids,
        "speculation keeps FP16's own output"
    );
    assert!(tried.output.speculation.as_ref().unwrap().verifies >= 8);
    // Measured now: the next task follows the measurement, either way, with its numbers.
    let judged = engine.run_planned(PROMPTS[1], &params, |_| true).unwrap();
    assert_eq!(judged.output.ids, first.output.ids);
    match judged.route.speculation {
        Some(p) => {
            let e = p.estimate.expect("a measured plan carries its estimate");
            assert!(e.time_factor.unwrap() < 1.0 && e.verifies >= 8, "{e:?}");
            assert!(
                has(&judged, "via speculation from int4: measured"),
                "{:?}",
                judged.route.reasons
            );
        }
        None => assert!(
            has(&judged, "the time of plain fp16"),
            "{:?}",
            judged.route.reasons
        ),
    }
    let st = engine.stats();
    assert_eq!(st.tasks, 3);
    assert!(st.speculated >= 1 && st.speculated <= 2, "{st:?}");
}
