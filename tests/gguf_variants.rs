//! Variants of a GGUF model: `agentcompress quantize --model X.gguf` writes the four variants
//! with the GGUF's tokenizer (its BOS/EOS, BOS rule and chat template) embedded, so a variant
//! directory tokenizes, chats and (at FP16) generates exactly as the GGUF file does. The small
//! chat model `tests/fixtures/gguf/tiny_chat.gguf` (scripts/make_gguf_fixtures.py) stands in
//! for SmolLM2; the SmolLM2 checks run when the shared model is present and skip visibly
//! otherwise. Also: the BOS choice (`--bos`/`--no-bos`, `GenerateParams::add_bos`) and the
//! hint printed when a model ends at once.

mod common;

use agentcompress::api::CONTROLLER_FILE;
use agentcompress::api::{open_variant, ChatMessage, Device, Engine, VariantOpenOptions};
use agentcompress::controller::{io as controller_io, Controller, ControllerConfig};
use agentcompress::engine::{GenerateParams, SamplingParams};
use agentcompress::model::tokenizer::{
    embeddable_tokenizer, embedded_tokenizer, gguf_tokenizer_from_file, Tokenizer, EMBEDDED_HF_NAME,
};
use agentcompress::quant::{PerPrecision, Precision};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny_chat() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/tiny_chat.gguf")
}

fn smollm2() -> Option<PathBuf> {
    common::shared_model("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Runs the binary; returns (success, stdout, stderr).
fn agentcompress(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentcompress"))
        .args(args)
        .output()
        .expect("the agentcompress binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        stop_at_eos: false,
        ..Default::default()
    }
}

/// Texts that exercise control tokens, digits, spaces and non-ASCII bytes.
const TEXTS: &[&str] = &[
    "Hello, the assistant says 12 + 34 = 46.",
    "<|im_start|>user\nhi you<|im_end|>\n<|im_start|>assistant\n",
    "  two  spaces, tabs\tand ünïcode ✓",
];

/// Both tokenizers encode, decode and describe their special tokens alike.
fn assert_same_tokenizer(a: &dyn Tokenizer, b: &dyn Tokenizer) {
    assert_eq!(a.vocab_size(), b.vocab_size());
    assert_eq!((a.bos_id(), a.eos_id()), (b.bos_id(), b.eos_id()));
    for text in TEXTS {
        for add_bos in [false, true] {
            let ids = a.encode(text, add_bos).unwrap();
            assert_eq!(ids, b.encode(text, add_bos).unwrap(), "{text:?}");
            assert_eq!(a.decode(&ids).unwrap(), b.decode(&ids).unwrap());
        }
    }
    let (ta, tb) = (a.chat_template().unwrap(), b.chat_template().unwrap());
    assert_eq!(ta.source(), tb.source());
    let chat = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Say hello"),
    ];
    assert_eq!(
        ta.render(&chat, true).unwrap(),
        tb.render(&chat, true).unwrap()
    );
}

#[test]
fn an_embedded_gguf_tokenizer_reads_back_with_its_settings() {
    let path = tiny_chat();
    let original = gguf_tokenizer_from_file(&path).unwrap();
    assert!(!original.add_bos_token());
    let (name, bytes) = embeddable_tokenizer(&path).unwrap();
    assert_eq!(name, EMBEDDED_HF_NAME);
    // The vocabulary only, not the weights of the file.
    let file_len = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(bytes.len() < file_len / 4, "{} of {file_len}", bytes.len());
    let back = embedded_tokenizer(Some(&name), &bytes, Path::new("embedded")).unwrap();
    assert_same_tokenizer(&original, back.as_ref());
    // add_bos_token false survives: asking for BOS adds none.
    assert_eq!(
        back.encode("hi", true).unwrap(),
        back.encode("hi", false).unwrap()
    );
    let e = embedded_tokenizer(Some(&name), b"{\"tokenizer\": {}}", Path::new("bad"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer_config"), "{e}");
}

#[test]
fn quantize_writes_variants_of_a_gguf_that_chat_like_the_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("variants");
    let gguf = tiny_chat();
    let (ok, stdout, stderr) = agentcompress(&[
        "quantize",
        "--model",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--calib-seqs",
        "2",
        "--eval-seqs",
        "1",
        "--seq-len",
        "16",
    ]);
    assert!(ok, "{stderr}");
    for p in ["fp16", "int8", "int4", "int2"] {
        assert!(stdout.contains(p), "{stdout}");
    }
    // Each variant file embeds the vocabulary, not the whole GGUF file.
    let fp16_file = std::fs::metadata(out.join("fp16.acv")).unwrap().len();
    let gguf_len = std::fs::metadata(&gguf).unwrap().len();
    assert!(fp16_file < 2 * gguf_len, "{fp16_file} vs {gguf_len}");

    let reference = Engine::builder(&gguf).device(Device::Cpu).build().unwrap();
    let open = |p: Precision| {
        open_variant(
            &out,
            &VariantOpenOptions {
                precision: p,
                device: Device::Cpu,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let fp16 = open(Precision::Fp16);
    assert_eq!(fp16.config().eos_tokens, reference.config().eos_tokens);
    assert_eq!(fp16.config().bos_token, reference.config().bos_token);
    assert_same_tokenizer(reference.tokenizer().unwrap(), fp16.tokenizer().unwrap());

    // The fixture's matrices are F16, so the FP16 variant holds exactly the GGUF's weights.
    let chat = [ChatMessage::new("user", "hello you 12")];
    let want_ids = reference.encode_chat(&chat).unwrap();
    assert_eq!(fp16.encode_chat(&chat).unwrap(), want_ids);
    assert_eq!(
        want_ids.first(),
        Some(&1),
        "the template writes <|im_start|>"
    );
    assert_ne!(want_ids.get(1), Some(&1), "no second <|im_start|>");
    let want = reference.chat(&chat, &greedy(24), |_| true).unwrap().output;
    let got = fp16.chat(&chat, &greedy(24), |_| true).unwrap().output;
    assert_eq!(got.ids, want.ids);
    assert_eq!(got.text, want.text);

    // Chat from the variant directory on the command line, on INT4.
    let (ok, stdout, stderr) = agentcompress(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--precision",
        "int4",
        "--device",
        "cpu",
        "--chat",
        "hello you",
        "-n",
        "8",
    ]);
    assert!(ok, "{stderr}");
    let n_prompt = fp16
        .encode_chat(&[ChatMessage::new("user", "hello you")])
        .unwrap()
        .len();
    assert!(
        stderr.contains(&format!("prompt {n_prompt} tokens")),
        "{stderr}"
    );
    let int4 = open(Precision::Int4);
    let r = int4
        .chat(&[ChatMessage::new("user", "hello you")], &greedy(8), |_| {
            true
        })
        .unwrap();
    assert_eq!(stdout, r.output.text);
}

/// A variant directory of the tiny chat model with a seeded controller and a router whose
/// quality falls with complexity, so routes carry the controller's prediction.
fn routed_tiny_chat(dir: &Path) -> Engine {
    let out = dir.join("variants");
    let (ok, _, stderr) = agentcompress(&[
        "quantize",
        "--model",
        tiny_chat().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--method",
        "rtn",
        "--eval-seqs",
        "0",
    ]);
    assert!(ok, "{stderr}");
    let dim = Engine::builder(&out)
        .device(Device::Cpu)
        .build()
        .unwrap()
        .config()
        .dim;
    let controller = Controller::new(ControllerConfig::small(dim), 5).unwrap();
    controller_io::save(&controller, &out.join(CONTROLLER_FILE)).unwrap();
    let points: Vec<(f32, PerPrecision<f32>)> = (0..8)
        .map(|i| {
            let c = i as f32 / 7.0;
            (c, [1.0, 1.0 - 0.2 * c, 1.0 - 0.5 * c, 1.0 - c].into())
        })
        .collect();
    common::write_router(&out, &points, 4.0);
    Engine::builder(&out).device(Device::Cpu).build().unwrap()
}

#[test]
fn a_chat_routes_on_its_last_user_message_not_on_the_system_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let engine = routed_tiny_chat(dir.path());
    // A system prompt longer than the controller's 32 tokens, as an agent framework's is.
    let system = "you are a helpful agent with tools. ".repeat(6);
    let (a, b) = ("hello you 12", "you you hello 3 4 5");
    let conv = |task: &str| {
        [
            ChatMessage::new("system", system.clone()),
            ChatMessage::new("user", task),
        ]
    };
    let rendered = |task: &str| engine.encode_chat(&conv(task)).unwrap();
    assert!(rendered(a).len() > 40 && rendered(a)[..32] == rendered(b)[..32]);
    // On the rendered text the controller would read the same 32 tokens for both tasks.
    let blind = |task: &str| engine.route_ids(&rendered(task), None).unwrap().complexity;
    assert_eq!(blind(a), blind(b));
    for task in [a, b] {
        assert_eq!(
            engine.chat_routing_ids(&conv(task)).unwrap(),
            engine.encode(task).unwrap()
        );
        let want = engine.route(task).unwrap();
        let got = engine.route_chat(&conv(task)).unwrap();
        assert_eq!(got.complexity, want.complexity);
        assert_eq!(got.precision, want.precision);
        let run = engine.chat(&conv(task), &greedy(2), |_| true).unwrap();
        assert_eq!(run.route.complexity, want.complexity);
        // The generation itself reads the whole conversation.
        assert_eq!(run.output.prompt_ids, rendered(task));
    }
    assert_ne!(
        engine.route(a).unwrap().complexity,
        engine.route(b).unwrap().complexity,
        "the controller tells these tasks apart"
    );
    // Without a user message with text, the rendered conversation is what there is to read.
    let only_system = [ChatMessage::new("system", system.clone())];
    assert_eq!(
        engine.chat_routing_ids(&only_system).unwrap(),
        engine.encode_chat(&only_system).unwrap()
    );
}

#[test]
fn bos_follows_the_tokenizer_unless_asked() {
    let engine = Engine::builder(tiny_chat())
        .device(Device::Cpu)
        .build()
        .unwrap();
    let plain = engine.encode("hello").unwrap();
    assert_ne!(plain.first(), Some(&1), "add_bos_token is false");
    assert_eq!(engine.encode_with("hello", Some(false)).unwrap(), plain);
    let with = engine.encode_with("hello", Some(true)).unwrap();
    assert_eq!(with[0], 1);
    assert_eq!(&with[1..], &plain[..]);
    // The chat template writes <|im_start|> itself: asking for BOS adds no second one.
    let chat = [ChatMessage::new("user", "hi")];
    let ids = engine.encode_chat(&chat).unwrap();
    assert_eq!(engine.encode_chat_with(&chat, Some(true)).unwrap(), ids);
    assert_eq!(engine.encode_chat_with(&chat, Some(false)).unwrap(), ids);
    let r = engine
        .generate(
            "hello",
            &GenerateParams {
                add_bos: Some(true),
                ..greedy(2)
            },
            |_| true,
        )
        .unwrap();
    assert_eq!(r.prompt_ids, with);

    let model = tiny_chat();
    let m = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", m, "--device", "cpu", "-p", "hello"];
        args.extend_from_slice(&["-n", "1"]);
        args.extend_from_slice(extra);
        let (ok, _, stderr) = agentcompress(&args);
        assert!(ok, "{extra:?}: {stderr}");
        stderr
    };
    let n = plain.len();
    assert!(run(&[]).contains(&format!("prompt {n} tokens")));
    assert!(run(&["--no-bos"]).contains(&format!("prompt {n} tokens")));
    assert!(run(&["--bos"]).contains(&format!("prompt {} tokens", n + 1)));
    let (ok, _, stderr) = agentcompress(&["generate", "--model", m, "--bos", "--no-bos"]);
    assert!(!ok && stderr.contains("--no-bos"), "{stderr}");
}

#[test]
fn quantize_help_names_every_model_format() {
    let (ok, stdout, _) = agentcompress(&["quantize", "--help"]);
    assert!(ok);
    for part in ["llama2.c", "GGUF", "Hugging Face"] {
        assert!(stdout.contains(part), "no {part:?} in:\n{stdout}");
    }
}

#[test]
fn smollm2_tokenizer_survives_embedding() {
    let Some(path) = smollm2() else { return };
    let original = gguf_tokenizer_from_file(&path).unwrap();
    let (name, bytes) = embeddable_tokenizer(&path).unwrap();
    assert!(bytes.len() < 8 << 20, "{} bytes embedded", bytes.len());
    let back = embedded_tokenizer(Some(&name), &bytes, Path::new("embedded")).unwrap();
    assert_same_tokenizer(&original, back.as_ref());
    assert_eq!((back.bos_id(), back.eos_id()), (Some(1), Some(2)));
}

#[test]
fn smollm2_without_its_chat_template_ends_at_once_with_a_hint() {
    let Some(path) = smollm2() else { return };
    let (ok, stdout, stderr) = agentcompress(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--device",
        "cpu",
        "-p",
        "What is the capital of France?",
        "-n",
        "4",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("generated 0 tokens"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the model ended at once") && stderr.contains("--chat"),
        "{stderr}"
    );
    // With the template it answers, and no hint is printed.
    let (ok, stdout, stderr) = agentcompress(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--device",
        "cpu",
        "--chat",
        "What is the capital of France?",
        "-n",
        "4",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        !stdout.is_empty() && !stderr.contains("ended at once"),
        "{stderr}"
    );
}
