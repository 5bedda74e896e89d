//! Continuous batching: sequences decoded together in one multi-row step per iteration, joining
//! in waves and leaving (finished or cancelled) between steps, produce exactly what each
//! produces alone (greedy and seeded sampling), on stories260K's four variants and on the
//! built-in model; the decoder's limits and bad input; the API's session, pinned and
//! target-overridden routes and served-request counters.

mod common;

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::{
    generate, BatchDecoder, FinishReason, GenerateOutput, GenerateParams, Model, SamplingParams,
    SeqId,
};
use agentcompress::model::tokenizer::{load_tokenizer, Tokenizer};
use agentcompress::quant::{quantize_model, Precision, QuantConfig};
use agentcompress::{Device, Engine};
use std::collections::HashMap;
use std::sync::Arc;

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

/// What a batched sequence produced.
#[derive(Default, Debug)]
struct Collected {
    ids: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
    events: usize,
}

/// Steps `dec` until no sequence is live, collecting every event per sequence; checks that a
/// finished sequence never yields again.
fn drain<B: agentcompress::backend::Backend>(
    dec: &mut BatchDecoder<B>,
    out: &mut HashMap<SeqId, Collected>,
) {
    while !dec.is_empty() {
        step_once(dec, out);
    }
}

fn step_once<B: agentcompress::backend::Backend>(
    dec: &mut BatchDecoder<B>,
    out: &mut HashMap<SeqId, Collected>,
) {
    let live = dec.len();
    let events = dec.step().unwrap();
    assert!(events.len() <= live, "at most one event per live sequence");
    for e in events {
        let c = out.entry(e.id).or_default();
        assert!(
            c.finish.is_none(),
            "sequence {} yielded after finishing",
            e.id
        );
        c.ids.extend(e.token);
        c.text.push_str(&e.text);
        c.finish = e.finish;
        c.events += 1;
    }
}

fn alone<B: agentcompress::backend::Backend>(
    m: &Model<B>,
    tok: &dyn Tokenizer,
    ids: &[u32],
    params: &GenerateParams,
) -> GenerateOutput {
    generate(m, tok, ids, params, |_| true).unwrap()
}

/// Joins `prompts` in three waves with steps in between, cancels one sequence midway, and
/// checks every other sequence's ids, text and end reason against generation alone.
fn check_waves<B: agentcompress::backend::Backend + 'static>(
    m: Arc<Model<B>>,
    tok: Arc<dyn Tokenizer>,
    prompts: &[Vec<u32>],
    params: &dyn Fn(usize) -> GenerateParams,
    prefill_per_step: Option<usize>,
    what: &str,
) -> usize {
    let mut dec = BatchDecoder::new(m.clone(), tok.clone());
    if let Some(n) = prefill_per_step {
        dec.set_prefill_per_step(n).unwrap();
    }
    let mut out = HashMap::new();
    let mut ids = Vec::new();
    let waves = [0..3, 3..6, 6..prompts.len()];
    let mut cancelled = None;
    for (w, range) in waves.into_iter().enumerate() {
        for i in range {
            ids.push((dec.join(&prompts[i], &params(i)).unwrap(), i));
        }
        step_once(&mut dec, &mut out);
        step_once(&mut dec, &mut out);
        if w == 1 {
            let victim = ids[4].0;
            if dec.cancel(victim) {
                cancelled = Some(victim);
            }
            assert!(!dec.cancel(victim), "a cancelled sequence is gone");
        }
    }
    drain(&mut dec, &mut out);
    assert!(
        dec.max_step_rows() > 1,
        "{what}: no step ran more than one row"
    );
    for (id, i) in ids {
        if Some(id) == cancelled {
            assert!(
                out.get(&id).is_none_or(|c| c.finish.is_none()),
                "{what}: cancelled sequence finished"
            );
            continue;
        }
        let want = alone(&m, tok.as_ref(), &prompts[i], &params(i));
        let got = &out[&id];
        assert_eq!(got.ids, want.ids, "{what}: prompt {i}");
        assert_eq!(got.text, want.text, "{what}: prompt {i}");
        let reason = if want.hit_eos {
            FinishReason::Stop
        } else {
            FinishReason::Length
        };
        assert_eq!(got.finish, Some(reason), "{what}: prompt {i}");
    }
    dec.max_step_rows()
}

struct Stories {
    dense: agentcompress::model::ModelWeights,
    tok: Arc<dyn Tokenizer>,
}

fn stories() -> Option<Stories> {
    let root = common::stories260k_dir()?;
    Some(Stories {
        dense: agentcompress::model::llama2c::load(&root.join("stories260K.bin")).unwrap(),
        tok: Arc::from(load_tokenizer(&root.join("tok512.bin")).unwrap()),
    })
}

#[test]
fn batched_decoding_equals_each_sequence_alone_on_every_variant() {
    let Some(s) = stories() else { return };
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| s.tok.encode(p, true).unwrap())
        .collect();
    for p in Precision::ALL {
        let w = quantize_model(&s.dense, p, &QuantConfig::default(), None).unwrap();
        let m = Arc::new(Model::new(CpuBackend::new(), &w).unwrap());
        // Different lengths so sequences leave at different steps.
        let greedy = |i: usize| GenerateParams {
            max_new_tokens: 10 + 5 * i,
            ..Default::default()
        };
        let sampled = |i: usize| GenerateParams {
            max_new_tokens: 24,
            sampling: SamplingParams {
                temperature: 0.9,
                top_p: 0.9,
                seed: 100 + i as u64,
            },
            ..Default::default()
        };
        // Steps of fewer than the backend's batched-product threshold (8 rows): six prompts,
        // one prompt token per step, so at most five decoding rows and one prompt row. Every
        // product is then bit-identical to one-row products, so every variant must match.
        let small = &prompts[..6];
        for (params, name) in [
            (&greedy as &dyn Fn(usize) -> _, "greedy"),
            (&sampled, "sampled"),
        ] {
            let what = format!("{p} {name}, small steps");
            check_waves(m.clone(), s.tok.clone(), small, params, Some(1), &what);
        }
        // Default prompt chunks: steps reach the blocked products, whose rounding differs
        // from one-row products; FP16's differs only in the order of f32 sums, which leaves
        // these greedy and sampled outputs unchanged. Packed variants quantize activations
        // per block there (as prefill does); their agreement is checked on logits in
        // `a_sixteen_row_step_takes_the_batched_products_and_agrees_with_one_row_steps`.
        // A step whose sequences all decode greedily takes each row's argmax on the backend;
        // one with any sampling sequence reads the logits: mixing the two covers both.
        let mixed = |i: usize| if i % 2 == 0 { greedy(i) } else { sampled(i) };
        if p == Precision::Fp16 {
            for (params, name) in [
                (&greedy as &dyn Fn(usize) -> _, "greedy"),
                (&sampled, "sampled"),
                (&mixed, "mixed"),
            ] {
                let what = format!("{p} {name}, default chunks");
                check_waves(m.clone(), s.tok.clone(), &prompts, params, None, &what);
            }
        }
    }
}

/// Five story prompts, four of them after one shared sentence (prompts 0 and 2 equal, 3
/// apart), and the shared sentence's token count.
fn shared_prefix_prompts(s: &Stories) -> (Vec<Vec<u32>>, usize) {
    let shared = "Once upon a time, there was a little girl named Lily. She liked to play outside.";
    let texts = [
        format!("{shared} One day"),
        format!("{shared} Her mom said"),
        format!("{shared} One day"),
        "The cat sat.".to_string(),
        format!("{shared} The sun was hot"),
    ];
    let prompts = texts
        .iter()
        .map(|t| s.tok.encode(t, true).unwrap())
        .collect();
    (prompts, s.tok.encode(shared, true).unwrap().len())
}

/// Prompts that share a long prefix (as chat requests share a system prompt) take it from a
/// sequence that already holds it instead of feeding it again, and still produce exactly what
/// each produces alone: joined in one wave (the later ones reuse once the first has fed the
/// prefix) and in a second wave while the first decodes; a prompt equal to a held one reuses
/// all but its last token.
#[test]
fn prompts_sharing_a_prefix_reuse_its_cached_rows_and_match_generation_alone() {
    let Some(s) = stories() else { return };
    let (prompts, prefix) = shared_prefix_prompts(&s);
    for p in [Precision::Fp16, Precision::Int8, Precision::Int4] {
        let w = quantize_model(&s.dense, p, &QuantConfig::default(), None).unwrap();
        let m = Arc::new(Model::new(CpuBackend::new(), &w).unwrap());
        let params = GenerateParams {
            max_new_tokens: 12,
            ..Default::default()
        };
        let mut dec = BatchDecoder::new(m.clone(), s.tok.clone());
        // A budget below the first prompt's length: it alone is fed in the first steps.
        dec.set_prefill_per_step(prefix).unwrap();
        let mut out = HashMap::new();
        let mut ids = Vec::new();
        for (i, prompt) in prompts.iter().enumerate().take(4) {
            ids.push((dec.join(prompt, &params).unwrap(), i));
        }
        step_once(&mut dec, &mut out);
        step_once(&mut dec, &mut out);
        ids.push((dec.join(&prompts[4], &params).unwrap(), 4));
        drain(&mut dec, &mut out);
        // Prompts 1, 2 and 4 each take at least the shared prefix but its first token's
        // worth of slack; prompt 2 (equal to 0) all but its last token.
        let least = 3 * (prefix - 1) + (prompts[2].len() - prefix);
        assert!(
            dec.reused_prompt_tokens() >= least,
            "{p}: {} prompt tokens reused, expected at least {least}",
            dec.reused_prompt_tokens()
        );
        for (id, i) in ids {
            let want = alone(&m, s.tok.as_ref(), &prompts[i], &params);
            assert_eq!(out[&id].ids, want.ids, "{p}: prompt {i}");
            assert_eq!(out[&id].text, want.text, "{p}: prompt {i}");
        }
    }
}

/// A burst of prompts that share a prefix, joined at once with room in the step for all of
/// them: the first computes the prefix, the others wait a step and copy it (an identical
/// prompt all but its last token) instead of computing it alongside, and every output is
/// still what the prompt produces alone.
#[test]
fn a_burst_sharing_a_prefix_computes_it_once_and_matches_generation_alone() {
    let Some(s) = stories() else { return };
    let (prompts, prefix) = shared_prefix_prompts(&s);
    let w = quantize_model(&s.dense, Precision::Fp16, &QuantConfig::default(), None).unwrap();
    let m = Arc::new(Model::new(CpuBackend::new(), &w).unwrap());
    let params = GenerateParams {
        max_new_tokens: 10,
        ..Default::default()
    };
    let mut dec = BatchDecoder::new(m.clone(), s.tok.clone());
    let all: usize = prompts.iter().map(Vec::len).sum();
    dec.set_prefill_per_step(all).unwrap();
    let ids: Vec<_> = prompts
        .iter()
        .map(|p| dec.join(p, &params).unwrap())
        .collect();
    let mut out = HashMap::new();
    drain(&mut dec, &mut out);
    // Prompts 1 and 4 take the shared prefix but its first token's worth of slack (the
    // tokenizer may merge across the join); prompt 2 (equal to 0) all but its last token.
    let least = 2 * (prefix - 1) + (prompts[2].len() - 1);
    assert!(
        dec.reused_prompt_tokens() >= least,
        "{} prompt tokens reused, expected at least {least}",
        dec.reused_prompt_tokens()
    );
    for (i, id) in ids.into_iter().enumerate() {
        let want = alone(&m, s.tok.as_ref(), &prompts[i], &params);
        assert_eq!(out[&id].ids, want.ids, "prompt {i}");
        assert_eq!(out[&id].text, want.text, "prompt {i}");
    }
}

#[test]
fn sequences_end_at_eos_their_limit_or_the_context_and_bad_prompts_are_refused() {
    let Some(s) = stories() else { return };
    let mut w = s.dense.clone();
    let prompt = s.tok.encode(PROMPTS[0], true).unwrap();
    // Make the token greedy decoding produces third the end of sequence.
    let plain = Model::new(CpuBackend::new(), &w).unwrap();
    let free = alone(&plain, s.tok.as_ref(), &prompt, &GenerateParams::default());
    w.config.eos_tokens = vec![free.ids[2]];
    let m = Arc::new(Model::new(CpuBackend::new(), &w).unwrap());
    let mut dec = BatchDecoder::new(m.clone(), s.tok.clone());
    let eos = dec.join(&prompt, &GenerateParams::default()).unwrap();
    let none = dec
        .join(
            &prompt,
            &GenerateParams {
                max_new_tokens: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let ctx = dec
        .join(
            &prompt,
            &GenerateParams {
                context: prompt.len() + 2,
                stop_at_eos: false,
                ..Default::default()
            },
        )
        .unwrap();
    let mut out = HashMap::new();
    drain(&mut dec, &mut out);
    let want = alone(&m, s.tok.as_ref(), &prompt, &GenerateParams::default());
    assert!(want.hit_eos);
    assert_eq!(out[&eos].ids, want.ids);
    assert_eq!(out[&eos].finish, Some(FinishReason::Stop));
    assert_eq!(
        out[&eos].ids.len(),
        free.ids.iter().position(|&t| t == free.ids[2]).unwrap()
    );
    assert_eq!((out[&none].ids.len(), out[&none].events), (0, 1));
    assert_eq!(out[&none].finish, Some(FinishReason::Length));
    assert_eq!(out[&ctx].ids, free.ids[..2]);
    assert_eq!(out[&ctx].finish, Some(FinishReason::Length));

    // Bad prompts are refused with a reason, and the decoder is unchanged.
    let live = dec.join(&prompt, &GenerateParams::default()).unwrap();
    let bad = [
        (vec![], "no tokens"),
        (vec![1, 100_000], "outside the vocabulary"),
        (vec![1; 40], "does not fit the context"),
    ];
    for (ids, why) in bad {
        let params = GenerateParams {
            context: 16,
            ..Default::default()
        };
        let e = dec.join(&ids, &params).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let e = dec
        .join(
            &prompt,
            &GenerateParams {
                context: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
    assert_eq!(dec.len(), 1);
    assert!(dec.cancel(live));
    assert!(
        dec.step().unwrap().is_empty(),
        "a step with no sequence does nothing"
    );
    assert_eq!(dec.last_step_rows(), 0);
}

#[test]
fn a_session_of_the_builtin_engine_batches_requests_and_counts_them() {
    let engine = Engine::builtin("builtin:tiny")
        .unwrap()
        .device(Device::Cpu)
        .build()
        .unwrap();
    let params = GenerateParams {
        max_new_tokens: 12,
        stop_at_eos: false,
        ..Default::default()
    };
    let tasks = ["Say hello.", "Count to three.", "Name a colour.", "Why?"];
    let ids: Vec<Vec<u32>> = tasks.iter().map(|t| engine.encode(t).unwrap()).collect();
    let route = engine.route_ids(&ids[0], None).unwrap();
    let mut session = engine.batch_session(route.precision).unwrap();
    assert_eq!(session.precision(), route.precision);
    let seqs: Vec<SeqId> = ids
        .iter()
        .map(|i| session.join(i, &params).unwrap())
        .collect();
    let mut got: HashMap<SeqId, Vec<u32>> = HashMap::new();
    while !session.is_empty() {
        for e in session.step().unwrap() {
            got.entry(e.id).or_default().extend(e.token);
        }
    }
    assert_eq!(session.max_step_rows(), tasks.len());
    for (seq, i) in seqs.iter().zip(&ids) {
        let want = engine.generate_ids(i, &params, |_| true).unwrap();
        assert_eq!(got[seq], want.ids);
        engine.record_served(&route, got[seq].len()).unwrap();
    }
    let st = engine.stats();
    assert_eq!(st.tasks, tasks.len() as u64);
    assert_eq!(st.tokens, (tasks.len() * 12) as u64);
    assert_eq!(st.per_precision[route.precision], tasks.len() as u64);

    // A single-model engine serves only its own variant; targets must lie in [0, 1].
    let other = Precision::ALL
        .into_iter()
        .find(|p| *p != route.precision)
        .unwrap();
    for e in [
        engine.batch_session(other).err().unwrap(),
        engine.pinned_route(other).unwrap_err(),
    ] {
        assert!(e.to_string().contains("holds only"), "{e}");
    }
    let pinned = engine.pinned_route(route.precision).unwrap();
    assert!(pinned.reasons[0].contains("pinned"), "{:?}", pinned.reasons);
    for t in [-0.1, 1.5, f32::NAN] {
        let e = engine.route_ids(&ids[0], Some(t)).unwrap_err();
        assert!(e.to_string().contains("quality target"), "{e}");
    }
    assert!(engine.route_ids(&[], None).is_err());
}

#[test]
fn a_routed_engine_pins_sets_targets_and_opens_sessions_on_any_variant() {
    let Some(root) = common::stories260k_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::build_stories_variants(&root, dir.path());
    let engine = Engine::builder(dir.path())
        .device(Device::Cpu)
        .build()
        .unwrap();
    let ids = engine.encode(PROMPTS[1]).unwrap();
    let params = GenerateParams {
        max_new_tokens: 8,
        ..Default::default()
    };
    for p in Precision::ALL {
        let pinned = engine.pinned_route(p).unwrap();
        assert_eq!(pinned.precision, p);
        let mut session = engine.batch_session(p).unwrap();
        let a = session.join(&ids, &params).unwrap();
        let b = session.join(&ids, &params).unwrap();
        let mut got: HashMap<SeqId, Vec<u32>> = HashMap::new();
        while !session.is_empty() {
            for e in session.step().unwrap() {
                got.entry(e.id).or_default().extend(e.token);
            }
        }
        assert_eq!(got[&a], got[&b], "{p}: two equal requests in one batch");
        assert!(!got[&a].is_empty());
        assert!(engine.resident().unwrap().contains(&p), "{p} resident");
    }
    // The fallback router ignores targets but checks them; a trained one would use them.
    assert!(engine.route_ids(&ids, Some(0.5)).is_ok());
    assert!(engine.route_ids(&ids, Some(2.0)).is_err());
}

#[test]
fn a_sixteen_row_step_takes_the_batched_products_and_agrees_with_one_row_steps() {
    let Some(s) = stories() else { return };
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .chain(PROMPTS.iter())
        .enumerate()
        .map(|(i, p)| {
            let mut ids = s.tok.encode(p, true).unwrap();
            ids.truncate(2 + i % 7);
            ids
        })
        .collect();
    for p in Precision::ALL {
        let w = quantize_model(&s.dense, p, &QuantConfig::default(), None).unwrap();
        let m = Model::new(CpuBackend::new(), &w).unwrap();
        let vocab = m.config().vocab_size;
        let prefilled = || -> Vec<_> {
            prompts
                .iter()
                .map(|ids| {
                    let mut st = m.new_state(8).unwrap();
                    m.forward(&mut st, ids, false).unwrap();
                    st
                })
                .collect()
        };
        let (mut batched, mut single) = (prefilled(), prefilled());
        let tokens: Vec<u32> = (0..prompts.len() as u32).map(|i| 10 + 3 * i).collect();
        let segments: Vec<&[u32]> = tokens.iter().map(std::slice::from_ref).collect();
        let mut scratch = m.new_batch_scratch(prompts.len(), prompts.len()).unwrap();
        let mut refs: Vec<_> = batched.iter_mut().collect();
        m.step_batch(&mut refs, &segments, &mut scratch).unwrap();
        let mut got = vec![0.0f32; prompts.len() * vocab];
        m.read_batch_logits(&scratch, prompts.len(), &mut got)
            .unwrap();
        let mut want = vec![0.0f32; vocab];
        for (i, st) in single.iter_mut().enumerate() {
            m.step(st, tokens[i], &mut want).unwrap();
            let row = &got[i * vocab..(i + 1) * vocab];
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let diff = row
                .iter()
                .zip(&want)
                .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
            // FP16: only the order of f32 sums differs. Packed: the blocked product quantizes
            // the activations in its own blocks (as prefill does), a different rounding of
            // the same product.
            let tol = if p == Precision::Fp16 { 1e-4 } else { 2e-2 };
            assert!(
                diff <= tol * scale,
                "{p} row {i}: batched logits differ by {diff} (scale {scale})"
            );
            assert_eq!(batched[i].pos(), st.pos(), "{p} row {i}");
        }
        // Bad shapes are refused by name.
        let mut two: Vec<_> = batched.iter_mut().take(2).collect();
        let e = m
            .step_batch(&mut two, &segments[..3], &mut scratch)
            .unwrap_err();
        assert!(e.to_string().contains("one non-empty token segment"), "{e}");
        let e = m
            .step_batch(&mut two, &[&tokens[..1], &[]], &mut scratch)
            .unwrap_err();
        assert!(e.to_string().contains("one non-empty token segment"), "{e}");
        let e = m
            .step_batch(&mut two, &[&tokens[..9], &tokens[..1]], &mut scratch)
            .unwrap_err();
        assert!(
            e.to_string().contains("exceeds its sequence's scratch"),
            "{e}"
        );
        let mut small = m.new_batch_scratch(1, 1).unwrap();
        let e = m
            .step_batch(&mut two, &segments[..2], &mut small)
            .unwrap_err();
        assert!(e.to_string().contains("exceeds the scratch"), "{e}");
        assert!(m.new_batch_scratch(0, 0).is_err());
        assert!(m.new_batch_scratch(2, 3).is_err());
    }
}
