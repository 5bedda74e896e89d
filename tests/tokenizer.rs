//! Tokenizer integration tests: llama2.c vocabularies against an independent Python reference,
//! a Hugging Face BPE tokenizer against the Python `tokenizers` library, corrupt files, and
//! streaming decoding. Fixtures come from `scripts/make_tokenizer_fixtures.py`.

mod common;

use agentcompress::model::tokenizer::{
    load_tokenizer, HfTokenizer, Llama2cTokenizer, StreamDecoder, Tokenizer,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(rel)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A llama2.c vocabulary from the shared models, or `None` (the test skips) without them.
fn llama2c(name: &str) -> Option<Llama2cTokenizer> {
    let rel = match name {
        "tok512" => "stories260K/tok512.bin",
        "llama2" => "llama2-tokenizer/tokenizer.bin",
        other => panic!("unknown vocabulary {other}"),
    };
    let path = common::shared_model(rel)?;
    Some(Llama2cTokenizer::from_file(&path).unwrap())
}

const ROUND_TRIP: &[&str] = &[
    "Once upon a time, there was a little girl named Lily.",
    "She said, \"Let's go!\" and ran.\nThe end.\n\n",
    "He counted 1, 2, 3... up to 1024 & then 99%.",
    "A café, a jalapeño, crème brûlée and naïve Zoë.",
    "Emoji need byte fallback: 😀🐶🚀 and 🇫🇷.",
    "Tabs\tand  double  spaces  ",
    " leading space",
    "日本語 한국어 Ελληνικά",
    "x",
];

#[test]
fn llama2c_round_trips_both_vocabularies() {
    for name in ["tok512", "llama2"] {
        let Some(t) = llama2c(name) else {
            return;
        };
        for text in ROUND_TRIP {
            let ids = t.encode(text, true).unwrap();
            assert_eq!(ids[0], 1, "{name}: BOS first");
            assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
            assert_eq!(&t.decode(&ids).unwrap(), text, "{name}: {ids:?}");
        }
    }
}

#[test]
fn llama2c_matches_reference_encoder() {
    let expected = read_json(&fixture("llama2c_expected.json"));
    let vocabs = expected["vocabs"].as_object().unwrap();
    assert_eq!(vocabs.len(), 2);
    let mut checked = 0;
    for (name, v) in vocabs {
        let Some(t) = llama2c(name) else {
            return;
        };
        let cases = v["cases"].as_array().unwrap();
        let by_hand = v["by_hand"].as_array().unwrap();
        assert!(!by_hand.is_empty());
        for case in cases.iter().chain(by_hand) {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                t.encode(text, true).unwrap(),
                ids_of(&case["ids"]),
                "{name}: {text:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 24, "only {checked} cases");
}

#[test]
fn llama2c_vocabularies_have_expected_sizes_and_specials() {
    let Some(small) = llama2c("tok512") else {
        return;
    };
    assert_eq!(small.vocab_size(), 512);
    let Some(big) = llama2c("llama2") else {
        return;
    };
    assert_eq!(big.vocab_size(), 32000);
    for t in [&small, &big] {
        assert_eq!(t.bos_id(), Some(1));
        assert_eq!(t.eos_id(), Some(2));
        assert_eq!(t.decode(&[1, 2]).unwrap(), "");
    }
}

/// Writes `bytes` to a temporary tokenizer.bin and returns the load error's message.
fn load_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.bin");
    std::fs::write(&path, bytes).unwrap();
    let err = Llama2cTokenizer::from_file(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, agentcompress::Error::Corrupt { .. }),
        "not Corrupt: {msg}"
    );
    assert!(msg.contains("tokenizer.bin"), "{msg}");
    msg
}

/// Byte offset of token `index` in a tokenizer.bin.
fn token_offset(bytes: &[u8], index: usize) -> usize {
    let mut off = 4;
    for _ in 0..index {
        let len = i32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
        off += 8 + len as usize;
    }
    off
}

#[test]
fn llama2c_truncated_mid_token_is_corrupt() {
    let Some(tok512) = common::shared_model("stories260K/tok512.bin") else {
        return;
    };
    let good = std::fs::read(&tok512).unwrap();
    let at = token_offset(&good, 300);
    // Keep the score and length of token 300 and one byte of its piece (its pieces are 2+ bytes).
    let msg = load_error(&good[..at + 9]);
    assert!(msg.contains("token 300"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn llama2c_absurd_length_is_corrupt() {
    let Some(tok512) = common::shared_model("stories260K/tok512.bin") else {
        return;
    };
    let mut bad = std::fs::read(&tok512).unwrap();
    let at = token_offset(&bad, 42);
    bad[at + 4..at + 8].copy_from_slice(&1_000_000_000i32.to_le_bytes());
    let msg = load_error(&bad);
    assert!(
        msg.contains("token 42") && msg.contains("1000000000"),
        "{msg}"
    );
    bad[at + 4..at + 8].copy_from_slice(&(-5i32).to_le_bytes());
    assert!(load_error(&bad).contains("token 42"));
}

#[test]
fn llama2c_missing_file_is_io_error() {
    let err = Llama2cTokenizer::from_file(Path::new("/nonexistent/tokenizer.bin")).unwrap_err();
    assert!(matches!(err, agentcompress::Error::Io { .. }), "{err}");
}

/// Pushes ids one at a time and returns the concatenated deltas plus the final flush.
fn stream(t: &dyn Tokenizer, prompt: &[u32], ids: &[u32]) -> String {
    let mut d = StreamDecoder::new(prompt);
    let mut out = String::new();
    for &id in ids {
        out.push_str(&d.push(t, id).unwrap());
    }
    out.push_str(&d.finish(t).unwrap());
    out
}

#[test]
fn stream_decoder_matches_whole_decode() {
    for name in ["tok512", "llama2"] {
        let Some(t) = llama2c(name) else {
            return;
        };
        for text in ROUND_TRIP {
            let ids = t.encode(text, true).unwrap();
            // Prompt = BOS only, then every other id streamed.
            assert_eq!(&stream(&t, &ids[..1], &ids[1..]), text, "{name}");
            // Longer prompts, split anywhere the prompt's own text is complete: the streamed
            // text is what the rest adds to it.
            let whole = t.decode(&ids).unwrap();
            for split in 2..ids.len() {
                let head = t.decode(&ids[..split]).unwrap();
                if head.ends_with('\u{FFFD}') {
                    continue;
                }
                let tail = stream(&t, &ids[..split], &ids[split..]);
                assert_eq!(
                    format!("{head}{tail}"),
                    whole,
                    "{name}: {text:?} at {split}"
                );
            }
        }
    }
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let Some(t) = llama2c("tok512") else {
        return;
    };
    // U+1F600 is four byte tokens: nothing is emitted until the last arrives.
    let ids = t.encode("a😀b", true).unwrap();
    let mut d = StreamDecoder::new(&ids[..1]);
    let deltas: Vec<String> = ids[1..].iter().map(|&i| d.push(&t, i).unwrap()).collect();
    assert!(deltas.iter().all(|s| !s.contains('\u{FFFD}')), "{deltas:?}");
    assert_eq!(deltas.concat(), "a😀b");
    let emoji_at = deltas.iter().position(|s| s.contains('😀')).unwrap();
    assert_eq!(deltas[emoji_at - 3..emoji_at], ["", "", ""]);
    // A stream that ends inside a character flushes the replacement character at the end.
    let partial = &ids[..ids.len() - 2];
    assert_eq!(
        stream(&t, &ids[..1], &partial[1..]),
        t.decode(partial).unwrap()
    );
}

fn hf_expected() -> Value {
    read_json(&fixture("hf_expected.json"))
}

#[test]
fn hf_matches_python_tokenizers() {
    let expected = hf_expected();
    let t = HfTokenizer::from_file(&fixture("hf_bpe/tokenizer.json")).unwrap();
    assert_eq!(
        t.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(t.bos_id().map(u64::from), expected["bos_id"].as_u64());
    assert_eq!(t.eos_id().map(u64::from), expected["eos_id"].as_u64());
    assert!(t.adds_bos());
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let plain = t.encode(text, false).unwrap();
        assert_eq!(plain, ids_of(&case["ids"]), "{text:?}");
        let with_bos = t.encode(text, true).unwrap();
        assert_eq!(with_bos, ids_of(&case["ids_with_bos"]), "{text:?}");
        assert_eq!(t.decode(&with_bos).unwrap(), text);
        assert_eq!(t.decode(&plain).unwrap(), text);
    }
}

#[test]
fn hf_round_trips_and_streams() {
    let t = load_tokenizer(&fixture("hf_bpe")).unwrap();
    for text in ROUND_TRIP {
        let ids = t.encode(text, true).unwrap();
        assert_eq!(&t.decode(&ids).unwrap(), text);
        assert_eq!(&stream(t.as_ref(), &ids[..1], &ids[1..]), text);
    }
    // EOS produces no text; an id past the vocabulary is an error, not a panic.
    let eos = t.eos_id().unwrap();
    assert_eq!(t.decode(&[eos]).unwrap(), "");
    assert!(t.decode(&[t.vocab_size() as u32]).is_err());
}

/// Copies the fixture tokenizer.json into a fresh folder beside `config` (if any).
fn hf_with_config(config: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::copy(fixture("hf_bpe/tokenizer.json"), &path).unwrap();
    if let Some(c) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), c).unwrap();
    }
    (dir, path)
}

#[test]
fn hf_tokenizer_config_overrides_specials() {
    let (_d, path) = hf_with_config(Some(
        r#"{"bos_token": {"content": "</s>"}, "eos_token": "<unk>", "add_bos_token": true}"#,
    ));
    let t = HfTokenizer::from_file(&path).unwrap();
    assert_eq!((t.bos_id(), t.eos_id()), (Some(2), Some(0)));
    assert_eq!(t.encode("the", true).unwrap()[0], 2);

    let (_d, path) = hf_with_config(Some(r#"{"add_bos_token": false, "bos_token": "<s>"}"#));
    let t = HfTokenizer::from_file(&path).unwrap();
    assert_eq!(t.bos_id(), Some(1));
    assert!(!t.adds_bos());
    assert_eq!(
        t.encode("the", true).unwrap(),
        t.encode("the", false).unwrap()
    );

    let (_d, path) = hf_with_config(Some(r#"{"bos_token": null}"#));
    let t = HfTokenizer::from_file(&path).unwrap();
    assert_eq!((t.bos_id(), t.eos_id()), (None, Some(2)));
}

#[test]
fn hf_bad_files_are_corrupt() {
    let (_d, path) = hf_with_config(Some(r#"{"bos_token": "<nope>"}"#));
    let msg = HfTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("<nope>"),
        "{msg}"
    );

    let (_d, path) = hf_with_config(Some("{not json"));
    let err = HfTokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, agentcompress::Error::Corrupt { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, r#"{"model": {"type": "Nonsense"}}"#).unwrap();
    let Err(err) = load_tokenizer(&path) else {
        panic!("a tokenizer.json with an unknown model loaded");
    };
    assert!(matches!(err, agentcompress::Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn load_tokenizer_picks_the_format() {
    let Some(tok512) = common::shared_model("stories260K/tok512.bin") else {
        return;
    };
    let small = load_tokenizer(&tok512).unwrap();
    assert_eq!(small.vocab_size(), 512);
    let hf = load_tokenizer(&fixture("hf_bpe/tokenizer.json")).unwrap();
    assert_eq!(hf.vocab_size(), 400);
    // JSON content under another name is still recognised.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("vocab.model");
    std::fs::copy(fixture("hf_bpe/tokenizer.json"), &renamed).unwrap();
    assert_eq!(load_tokenizer(&renamed).unwrap().vocab_size(), 400);
    // A folder with a tokenizer.bin.
    std::fs::remove_file(&renamed).unwrap();
    std::fs::copy(&tok512, dir.path().join("tokenizer.bin")).unwrap();
    assert_eq!(load_tokenizer(dir.path()).unwrap().vocab_size(), 512);
    let empty = tempfile::tempdir().unwrap();
    assert!(load_tokenizer(empty.path()).is_err());
}

#[test]
fn stream_decoder_matches_decode_on_random_ids() {
    use agentcompress::util::rng::Rng;
    let Some(t) = llama2c("tok512") else {
        return;
    };
    let mut rng = Rng::new(2024);
    for _ in 0..300 {
        let len = rng.below(24) as usize;
        // Mostly byte tokens (3..259, often invalid UTF-8), some pieces, BOS and EOS.
        let ids: Vec<u32> = (0..len)
            .map(|_| match rng.below(10) {
                0 => 1,
                1 => 2,
                2..=6 => 3 + rng.below(256) as u32,
                _ => 259 + rng.below(253) as u32,
            })
            .collect();
        assert_eq!(stream(&t, &[], &ids), t.decode(&ids).unwrap(), "{ids:?}");
    }
}

#[test]
fn llama2c_long_text_round_trips() {
    // 60k characters: a quadratic merge loop would take minutes here; the heap takes milliseconds.
    let text = ROUND_TRIP.concat().repeat(150);
    let Some(t) = llama2c("llama2") else {
        return;
    };
    let start = std::time::Instant::now();
    let ids = t.encode(&text, true).unwrap();
    let took = start.elapsed();
    assert!(ids.len() < text.len() / 2, "{} ids", ids.len());
    assert_eq!(t.decode(&ids).unwrap(), text);
    eprintln!("encoded {} chars in {took:?}", text.chars().count());
}

/// A word-level `tokenizer.json` with `n` tokens `w0 .. w{n-1}`.
fn word_level_json(n: usize) -> Vec<u8> {
    let vocab: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("w{i}"), Value::from(i as u64)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"},
    }))
    .unwrap()
}

/// Fastest of `reps` runs of streaming 16 ids through a decoder, in seconds.
fn fastest_stream_decode(t: &dyn Tokenizer, reps: usize) -> f64 {
    let ids: Vec<u32> = (1..=16).collect();
    (0..reps)
        .map(|_| {
            let start = std::time::Instant::now();
            let mut d = StreamDecoder::new(&ids[..1]);
            for &id in &ids[1..] {
                std::hint::black_box(d.push(t, id).unwrap());
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Decoding a token must not cost a pass over the vocabulary: streaming the same 16 ids
/// through a 65,536-token vocabulary takes about as long as through a 256-token one. (Each
/// `get_vocab_size` call of the `tokenizers` crate rebuilds the whole vocabulary map; called
/// per decoded token it made the large vocabulary hundreds of times slower.) The fastest of
/// many runs is compared, so scheduling noise cannot fail it; the margin is wide.
#[test]
fn hf_decode_cost_does_not_grow_with_vocabulary() {
    let small = HfTokenizer::from_bytes(&word_level_json(256), Path::new("small.json")).unwrap();
    let large = HfTokenizer::from_bytes(&word_level_json(65_536), Path::new("large.json")).unwrap();
    assert_eq!(large.vocab_size(), 65_536);
    assert_eq!(large.decode(&[3, 65_535]).unwrap(), "w3 w65535");
    let (mut t_small, mut t_large) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        t_small = t_small.min(fastest_stream_decode(&small, 10));
        t_large = t_large.min(fastest_stream_decode(&large, 10));
    }
    assert!(
        t_large < 8.0 * t_small + 200e-6,
        "decoding through a 65,536-token vocabulary took {:.1} us against {:.1} us for 256 \
         tokens: decode cost grows with the vocabulary",
        t_large * 1e6,
        t_small * 1e6
    );
}

/// Without `add_bos_token`, BOS follows Hugging Face: a GPT-2-class ChatML config whose
/// `bos_token` is the turn opener, over a tokenizer.json whose post-processor adds nothing,
/// gets no BOS (it would double `<|im_start|>`); the same files with the template's BOS, or
/// with a Llama class, get one.
#[test]
fn hf_bos_without_add_bos_token_follows_the_post_processor_and_class() {
    let build = |template: bool, class: &str| {
        let (d, path) = hf_with_config(Some(&format!(
            r#"{{"bos_token": "<s>", "tokenizer_class": "{class}"}}"#
        )));
        if !template {
            let mut doc = read_json(&path);
            doc["post_processor"] = Value::Null;
            std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        }
        (d, HfTokenizer::from_file(&path).unwrap())
    };
    let (_d, t) = build(false, "GPT2Tokenizer");
    assert_eq!(t.bos_id(), Some(1));
    assert!(!t.adds_bos());
    assert_eq!(
        t.encode("the", true).unwrap(),
        t.encode("the", false).unwrap()
    );
    let (_d, t) = build(true, "GPT2Tokenizer");
    assert!(t.adds_bos());
    let (_d, t) = build(false, "LlamaTokenizerFast");
    assert!(t.adds_bos());
    assert_eq!(t.encode("the", true).unwrap()[0], 1);
}

/// A tokenizer.json with its tokenizer_config.json embeds as one document that keeps the
/// config's specials, BOS rule and chat template.
#[test]
fn hf_tokenizer_embeds_with_its_config() {
    use agentcompress::model::tokenizer::{embeddable_tokenizer, embedded_tokenizer};
    let (_d, path) = hf_with_config(Some(
        r#"{"bos_token": "</s>", "eos_token": "<unk>", "add_bos_token": false,
            "chat_template": "{% for m in messages %}[{{ m.content }}]{% endfor %}"}"#,
    ));
    let original = HfTokenizer::from_file(&path).unwrap();
    let (name, bytes) = embeddable_tokenizer(&path).unwrap();
    let back = embedded_tokenizer(Some(&name), &bytes, &path).unwrap();
    assert_eq!((back.bos_id(), back.eos_id()), (Some(2), Some(0)));
    assert_eq!(
        back.encode("the cat", true).unwrap(),
        original.encode("the cat", true).unwrap()
    );
    assert_eq!(
        back.encode("the cat", true).unwrap(),
        back.encode("the cat", false).unwrap()
    );
    let chat = [agentcompress::model::tokenizer::ChatMessage::new(
        "user", "hi",
    )];
    assert_eq!(
        back.chat_template().unwrap().render(&chat, true).unwrap(),
        "[hi]"
    );
}
