//! Golden test: stories260K reproduces llama2.c's published greedy sample token for token,
//! and prompted runs are deterministic.

mod common;

use agentcompress::api::{Device, Engine};
use agentcompress::engine::{GenerateParams, SamplingParams};
use std::path::PathBuf;

/// The stories260K folder, or `None` (the test skips) on a clone without the shared models.
fn models() -> Option<PathBuf> {
    common::stories260k_dir()
}

/// The sample published in llama2.c's documentation (temperature 0, 256 steps, no prompt).
const PUBLISHED: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"
Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"
Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" Her mom said, \"Don't worry, Lily. We can help you.";

fn engine() -> Option<Engine> {
    let models = models()?;
    let e = Engine::builder(models.join("stories260K.bin"))
        .tokenizer_path(models.join("tok512.bin"))
        .device(Device::Cpu)
        .build()
        .expect("stories260K loads");
    Some(e)
}

#[test]
fn greedy_256_steps_reproduce_the_published_sample() {
    let Some(e) = engine() else {
        return;
    };
    let params = GenerateParams {
        max_new_tokens: 256,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        stop_at_eos: false,
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = e
        .generate("", &params, |t| {
            streamed.push_str(t.text);
            true
        })
        .unwrap();
    assert_eq!(out.ids.len(), 256);
    assert_eq!(out.text, streamed, "streamed text equals the final text");
    assert!(out.text.starts_with(PUBLISHED), "got:\n{}", out.text);
}

#[test]
fn prompted_and_sampled_runs_are_deterministic() {
    let Some(e) = engine() else {
        return;
    };
    for temperature in [0.0, 0.8] {
        let params = GenerateParams {
            max_new_tokens: 40,
            sampling: SamplingParams {
                temperature,
                top_p: 0.9,
                seed: 123,
            },
            ..Default::default()
        };
        let a = e.generate("Tom had a dog", &params, |_| true).unwrap();
        let b = e.generate("Tom had a dog", &params, |_| true).unwrap();
        assert_eq!(a.ids, b.ids);
        assert!(!a.ids.is_empty());
    }
    let p = |seed| GenerateParams {
        max_new_tokens: 40,
        sampling: SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed,
        },
        ..Default::default()
    };
    let x = e.generate("Tom had a dog", &p(1), |_| true).unwrap();
    let y = e.generate("Tom had a dog", &p(2), |_| true).unwrap();
    assert_ne!(x.ids, y.ids, "different seeds sample differently");
}

#[test]
fn callback_can_stop_generation() {
    let Some(e) = engine() else {
        return;
    };
    let mut n = 0;
    let out = e
        .generate(
            "Lily",
            &GenerateParams {
                max_new_tokens: 50,
                ..Default::default()
            },
            |_| {
                n += 1;
                n < 5
            },
        )
        .unwrap();
    assert!(out.cancelled);
    assert_eq!(out.ids.len(), 5);
}
