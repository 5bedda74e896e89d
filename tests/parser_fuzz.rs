//! Seeded mutation fuzzing of every file parser: llama2.c checkpoints, Hugging Face
//! safetensors + config.json, variant files (`.acv`), llama2.c `tokenizer.bin` and Hugging Face
//! `tokenizer.json`. Each starts from a valid file and feeds thousands of mutants (byte flips,
//! truncations, insertions, deletions, header field edits, JSON value edits, duplicated keys).
//! Every mutant must give a typed error or a model that then runs a forward pass (a tokenizer
//! that encodes and decodes); never a panic, and never a single allocation beyond a bound set
//! by the input's size. Failures print the parser, the seed and the case number.

mod alloc_support;
mod common;

use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::Model;
use agentcompress::model::llama2c::{expected_len, parse_header, HEADER_BYTES};
use agentcompress::model::synthetic::{preset, synthetic_weights};
use agentcompress::model::tokenizer::{HfTokenizer, Llama2cTokenizer, Tokenizer};
use agentcompress::model::{load_model, DType, ModelWeights};
use agentcompress::quant::{quantize_model, Precision, QuantConfig, WeightMatrix};
use agentcompress::store::{load_variant, read_index, LoadOptions};
use agentcompress::util::rng::Rng;
use agentcompress::Result;
use alloc_support::{measure, serial, CountingAlloc};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Mutants per parser.
const CASES: usize = 1500;

/// The largest single allocation a parser may make for an input of `input_len` bytes: a few
/// times the input (decoding expands packed or half-precision data) plus a fixed allowance
/// for scratch and the forward pass of a small model.
fn alloc_bound(input_len: usize) -> usize {
    8 * input_len + (4 << 20)
}

/// Values that tend to sit on a boundary of some check.
const INTERESTING_I32: [i32; 14] = [
    0,
    1,
    -1,
    2,
    7,
    255,
    4096,
    1 << 20,
    (1 << 20) + 1,
    1 << 22,
    1 << 24,
    i32::MAX,
    i32::MIN,
    -(1 << 22),
];

/// One random byte-level mutation of `b`; `fields` are offsets of 4-byte header fields that a
/// field edit may target (random aligned offsets are used as well).
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, fields: &[usize]) {
    let len = b.len().max(1) as u64;
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] ^= 1 + rng.below(255) as u8;
                }
            }
        }
        1 => b.truncate(rng.below(len) as usize),
        2 => {
            let at = rng.below(len) as usize;
            let n = 1 + rng.below(16) as usize;
            let junk: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            let at = at.min(b.len());
            b.splice(at..at, junk);
        }
        3 => {
            let at = rng.below(len) as usize;
            let end = (at + 1 + rng.below(64) as usize).min(b.len());
            if at < end {
                b.drain(at..end);
            }
        }
        4 | 5 => {
            let at = if !fields.is_empty() && rng.below(2) == 0 {
                fields[rng.below(fields.len() as u64) as usize]
            } else {
                (rng.below(len) as usize) & !3
            };
            let v = INTERESTING_I32[rng.below(INTERESTING_I32.len() as u64) as usize];
            if at + 4 <= b.len() {
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            // Duplicate a slice in place (repeated records, repeated keys).
            let at = rng.below(len) as usize;
            let end = (at + 1 + rng.below(32) as usize).min(b.len());
            if at < end {
                let copy = b[at..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }
}

/// A JSON value likely to break a check somewhere.
fn interesting_json(rng: &mut Rng) -> Value {
    use serde_json::json;
    match rng.below(16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1),
        3 => json!(1u64 << 24),
        4 => json!(1u64 << 31),
        5 => json!(u64::MAX),
        6 => json!(1e308),
        7 => json!(-0.5),
        8 => json!("x"),
        9 => Value::Null,
        10 => json!([]),
        11 => json!({}),
        12 => json!(true),
        13 => json!([0, 1u64 << 40]),
        14 => json!(i64::MIN),
        _ => json!(rng.below(1 << 12)),
    }
}

/// One structural mutation somewhere inside `v`: replace a value, delete a key or element,
/// or duplicate an array element.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let descend = rng.below(4) != 0;
    match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(rng.below(m.len() as u64) as usize).cloned();
            let Some(key) = key else { return };
            if descend {
                if let Some(child) = m.get_mut(&key) {
                    mutate_json(rng, child);
                }
            } else if rng.below(3) == 0 {
                m.remove(&key);
            } else {
                m.insert(key, interesting_json(rng));
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len() as u64) as usize;
            match (descend, rng.below(3)) {
                (true, _) => mutate_json(rng, &mut a[i]),
                (false, 0) => {
                    a.remove(i);
                }
                (false, 1) => {
                    let dup = a[i].clone();
                    a.insert(i, dup);
                }
                _ => a[i] = interesting_json(rng),
            }
        }
        _ => *v = interesting_json(rng),
    }
}

/// Runs one case: `f` must not panic, and its largest allocation must stay within the bound
/// for `input_len` bytes. Returns whether `f` accepted the input.
fn check_case(
    what: &str,
    seed: u64,
    case: usize,
    input_len: usize,
    f: impl FnOnce() -> Result<()>,
) -> bool {
    let (outcome, largest) = measure(|| catch_unwind(AssertUnwindSafe(f)));
    let accepted = match outcome {
        Ok(r) => r.is_ok(),
        Err(_) => panic!("{what}: seed {seed} case {case} panicked (input of {input_len} bytes)"),
    };
    let bound = alloc_bound(input_len);
    assert!(
        largest <= bound,
        "{what}: seed {seed} case {case} made an allocation of {largest} bytes for an input of \
         {input_len} bytes (bound {bound})"
    );
    accepted
}

/// Uploads `w` to the CPU and runs a short forward pass; a loaded model must run or fail with
/// a typed error.
fn run_model<M: Clone + Into<WeightMatrix>>(w: &ModelWeights<M>) -> Result<()> {
    let m = Model::new(CpuBackend::new(), w)?;
    let mut st = m.new_state(4)?;
    let vocab = m.config().vocab_size as u32;
    m.forward(&mut st, &[1 % vocab, 2 % vocab, 3 % vocab], true)?;
    Ok(())
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

// ---------------------------------------------------------------- llama2.c checkpoints

/// A valid tiny llama2.c checkpoint (dim 8, 1 layer, vocab 16, seq_len 4).
fn llama2c_seed() -> Vec<u8> {
    let header = [8i32, 16, 1, 2, 2, 16, 4];
    let mut bytes: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (config, _) = parse_header(Path::new("seed"), &bytes).unwrap();
    let floats = (expected_len(&config).unwrap() - HEADER_BYTES) / 4;
    bytes.extend((0..floats).flat_map(|i| (0.01 * (i % 89) as f32 - 0.4).to_le_bytes()));
    bytes
}

#[test]
fn llama2c_checkpoints_never_panic_or_over_allocate() {
    let _g = serial();
    let seed_bytes = llama2c_seed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    let fields: Vec<usize> = (0..7).map(|i| 4 * i).collect();
    let seed = 0x11a2;
    let mut rng = Rng::new(seed);
    let mut loaded = 0;
    for case in 0..CASES {
        let mut b = seed_bytes.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(&mut rng, &mut b, &fields);
        }
        std::fs::write(&path, &b).unwrap();
        let ok = check_case("llama2.c", seed, case, b.len(), || {
            run_model(&load_model(&path)?)
        });
        loaded += usize::from(ok);
    }
    // Flips inside the float data keep a file valid: both outcomes must have been exercised.
    assert!(loaded > 0 && loaded < CASES, "{loaded} of {CASES} loaded");
}

// ---------------------------------------------------------------- safetensors + config.json

/// Splits a safetensors file into its JSON header object and data section, when an earlier
/// mutation left that much intact.
fn split_safetensors(b: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = usize::try_from(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)).ok()?;
    let header = b.get(8..8usize.checked_add(n)?)?;
    let v: Value = serde_json::from_slice(header).ok()?;
    v.as_object().filter(|o| !o.is_empty())?;
    Some((v, b[8 + n..].to_vec()))
}

/// A safetensors file from a header text (padded to 8 bytes) and a data section.
fn join_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// One mutation of a checkpoint: of the safetensors bytes, of its header's JSON, of its header
/// length, a duplicated tensor key, or of config.json.
fn mutate_checkpoint(rng: &mut Rng, st: &mut Vec<u8>, config: &mut Value) {
    let split = split_safetensors(st);
    match (rng.below(6), split) {
        (0, _) | (1 | 2 | 4, None) => mutate_bytes(rng, st, &[0, 4]),
        (1 | 2, Some((mut h, data))) => {
            mutate_json(rng, &mut h);
            *st = join_safetensors(&h.to_string(), &data);
        }
        (3, _) if st.len() >= 8 => {
            // Header length off by a little: the data section shifts.
            let n = u64::from_le_bytes(st[..8].try_into().unwrap());
            let d = 1 + rng.below(8);
            let n = if rng.below(2) == 0 {
                n.saturating_sub(d)
            } else {
                n + d
            };
            st[..8].copy_from_slice(&n.to_le_bytes());
        }
        (4, Some((h, data))) => {
            // A tensor entry repeated under its own name, with other offsets.
            let obj = h.as_object().unwrap();
            let (name, entry) = obj
                .iter()
                .nth(rng.below(obj.len() as u64) as usize)
                .unwrap();
            let mut dup = entry.clone();
            mutate_json(rng, &mut dup);
            let text = h.to_string();
            let extra = format!(
                "{},{}:{}}}",
                &text[..text.len() - 1],
                Value::from(name.as_str()),
                dup
            );
            *st = join_safetensors(&extra, &data);
        }
        _ => mutate_json(rng, config),
    }
}

#[test]
fn safetensors_checkpoints_never_panic_or_over_allocate() {
    let _g = serial();
    let src = fixture("hf/llama2_tied_f32");
    let st_seed = std::fs::read(src.join("model.safetensors")).unwrap();
    let config_seed: Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = 0x5afe;
    let mut rng = Rng::new(seed);
    let mut loaded = 0;
    for case in 0..CASES {
        let (mut st, mut config) = (st_seed.clone(), config_seed.clone());
        for _ in 0..1 + rng.below(2) {
            mutate_checkpoint(&mut rng, &mut st, &mut config);
        }
        let config_text = config.to_string();
        std::fs::write(dir.path().join("model.safetensors"), &st).unwrap();
        std::fs::write(dir.path().join("config.json"), &config_text).unwrap();
        let ok = check_case(
            "safetensors",
            seed,
            case,
            st.len() + config_text.len(),
            || run_model(&load_model(dir.path())?),
        );
        loaded += usize::from(ok);
    }
    assert!(loaded > 0 && loaded < CASES, "{loaded} of {CASES} loaded");
}

// ---------------------------------------------------------------- variant files

/// A valid one-layer variant file of precision `p`.
fn variant_seed(dir: &Path, p: Precision) -> Vec<u8> {
    let mut c = preset("tiny").unwrap();
    c.n_layers = 1;
    c.max_seq_len = 16;
    let w = synthetic_weights(&c, 5, DType::F32).unwrap();
    let q = quantize_model(&w, p, &QuantConfig::default(), None).unwrap();
    let path = dir.join("seed.acv");
    agentcompress::store::write_variant(
        &path,
        &q,
        p.name(),
        &QuantConfig::default(),
        Some(("tokenizer.bin", b"tok")),
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

/// Offsets of the variant header's length and offset fields (see `store::format`).
const VARIANT_FIELDS: [usize; 12] = [8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52];

#[test]
fn variant_files_never_panic_or_over_allocate() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let seeds = [
        variant_seed(dir.path(), Precision::Fp16),
        variant_seed(dir.path(), Precision::Int4),
    ];
    let path = dir.path().join("m.acv");
    let seed = 0xacf;
    let mut rng = Rng::new(seed);
    let mut loaded = 0;
    for case in 0..CASES {
        let mut b = seeds[case % 2].clone();
        // Mutate the header and directory region more often than the payload: that is where
        // the parser makes its decisions.
        let head = 4096.min(b.len());
        for _ in 0..1 + rng.below(3) {
            if rng.below(3) == 0 {
                mutate_bytes(&mut rng, &mut b, &VARIANT_FIELDS);
            } else {
                let mut h = b[..head].to_vec();
                mutate_bytes(&mut rng, &mut h, &VARIANT_FIELDS);
                b.splice(..head, h);
            }
        }
        std::fs::write(&path, &b).unwrap();
        // Half the cases skip checksums, so mutants reach the checks behind them.
        let verify = case % 4 < 2;
        let ok = check_case("variant", seed, case, b.len(), || {
            read_index(&path)?;
            let (w, _) = load_variant(
                &path,
                LoadOptions {
                    verify_checksums: verify,
                },
            )?;
            run_model(&w)
        });
        loaded += usize::from(ok);
    }
    assert!(loaded > 0 && loaded < CASES, "{loaded} of {CASES} loaded");
}

// ---------------------------------------------------------------- tokenizers

/// Encodes and decodes a little text and some raw ids: a loaded tokenizer must answer or
/// fail with a typed error.
fn exercise_tokenizer(t: &dyn Tokenizer) -> Result<()> {
    let ids = t.encode("Once upon a time, a tiny robot said \u{e9}\u{4e16}!", true)?;
    t.decode(&ids)?;
    let vocab = t.vocab_size() as u32;
    let _ = t.decode(&[0, 1, 2, vocab.saturating_sub(1), vocab, u32::MAX]);
    Ok(())
}

/// `stories260K/tok512.bin` from the shared models, or `None` (the test skips) without them.
fn llama2c_tokenizer_seed() -> Option<Vec<u8>> {
    let path = common::shared_model("stories260K/tok512.bin")?;
    Some(std::fs::read(path).unwrap())
}

#[test]
fn llama2c_tokenizers_never_panic_or_over_allocate() {
    let _g = serial();
    let Some(seed_bytes) = llama2c_tokenizer_seed() else {
        return;
    };
    let seed = 0x70c;
    let mut rng = Rng::new(seed);
    let mut loaded = 0;
    for case in 0..CASES {
        let mut b = seed_bytes.clone();
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(&mut rng, &mut b, &[0, 4, 8]);
        }
        let ok = check_case("tokenizer.bin", seed, case, b.len(), || {
            exercise_tokenizer(&Llama2cTokenizer::from_bytes(&b, Path::new("tok.bin"))?)
        });
        loaded += usize::from(ok);
    }
    assert!(loaded > 0 && loaded < CASES, "{loaded} of {CASES} loaded");
}

#[test]
fn hf_tokenizers_never_panic_or_over_allocate() {
    let _g = serial();
    let text = std::fs::read(fixture("tokenizer/hf_bpe/tokenizer.json")).unwrap();
    let json: Value = serde_json::from_slice(&text).unwrap();
    let seed = 0x4f;
    let mut rng = Rng::new(seed);
    let mut loaded = 0;
    for case in 0..CASES {
        let b = if rng.below(4) == 0 {
            let mut b = text.clone();
            mutate_bytes(&mut rng, &mut b, &[]);
            b
        } else {
            let mut v = json.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_json(&mut rng, &mut v);
            }
            v.to_string().into_bytes()
        };
        let ok = check_case("tokenizer.json", seed, case, b.len(), || {
            exercise_tokenizer(&HfTokenizer::from_bytes(&b, Path::new("tokenizer.json"))?)
        });
        loaded += usize::from(ok);
    }
    assert!(loaded > 0 && loaded < CASES, "{loaded} of {CASES} loaded");
}
