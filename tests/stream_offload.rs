//! Offloaded execution: stories260K quantized into a temporary variant directory, every
//! precision streamed through a pool smaller than the model, against the fully resident model;
//! pool statistics of repeated passes; a corrupt tensor fails the streamed pass by name and a
//! retry after repairing the file works.

mod common;

use agentcompress::api::{open_variant, Device, VariantOpenOptions};
use agentcompress::backend::cpu::CpuBackend;
use agentcompress::engine::{GenerateParams, Model, StreamOptions};
use agentcompress::io::{
    open_reader, HostStagingAlloc, ReaderConfig, StagingConfig, StagingPipeline,
};
use agentcompress::model::llama2c;
use agentcompress::pipeline::{build_variants, BuildOptions};
use agentcompress::pool::{variant_pool, Pool, VariantPoolConfig, VariantSource};
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::store::{load_variant, EntryPart, LoadOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const TOKENS: [u32; 6] = [1, 403, 407, 261, 378, 260];

/// The variant directory, built once for all tests of this file.
fn variants() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = common::stories260k_dir().expect("tests return early without stories260K");
        let dense = llama2c::load(&root.join("stories260K.bin")).unwrap();
        let tok = std::fs::read(root.join("tok512.bin")).unwrap();
        let out = common::fixture_dir("stream_offload-variants").join("variants");
        // The tied classifier stays the FP16 embedding here: an untied INT8 copy would be the
        // largest INT2 entry, and a pool of two entries would then hold the whole model.
        let opts = BuildOptions {
            quant: QuantConfig {
                keep_classifier_fp16: true,
                ..QuantConfig::default()
            },
            calibration: None,
            evaluation: None,
        };
        build_variants(
            &dense,
            "stories260K",
            &out,
            Some(("tokenizer.bin", &tok)),
            &opts,
            &mut |_| {},
        )
        .unwrap();
        out
    })
}

fn resident(dir: &Path, p: Precision) -> Model<CpuBackend> {
    let (w, _) = load_variant(&dir.join(format!("{p}.acv")), LoadOptions::default()).unwrap();
    Model::new(CpuBackend::new(), &w).unwrap()
}

fn streamed(
    source: &Arc<VariantSource>,
    p: Precision,
    budget: u64,
    prefetch: bool,
) -> (Model<CpuBackend>, Arc<Pool>) {
    let pool =
        Arc::new(variant_pool(source.clone(), &VariantPoolConfig::with_budget(budget)).unwrap());
    let m = Model::streamed(
        CpuBackend::new(),
        pool.clone(),
        source.clone(),
        p,
        StreamOptions {
            prefetch,
            ..StreamOptions::default()
        },
    )
    .unwrap();
    (m, pool)
}

fn all_logits(m: &Model<CpuBackend>, chunk: usize) -> Vec<f32> {
    let mut st = m.new_state(chunk).unwrap();
    m.forward(&mut st, &TOKENS, true).unwrap()
}

fn greedy(m: &Model<CpuBackend>) -> Vec<u32> {
    let mut st = m.new_state(4).unwrap();
    let logits = m.forward(&mut st, &TOKENS, false).unwrap();
    let mut next = agentcompress::backend::cpu::argmax(&logits) as u32;
    let mut out = vec![next];
    for _ in 0..12 {
        next = m.step_greedy(&mut st, next).unwrap();
        out.push(next);
    }
    out
}

#[test]
fn streamed_model_matches_resident_bit_for_bit_in_every_precision() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let source = Arc::new(VariantSource::open_dir(dir, true).unwrap());
    for p in Precision::ALL {
        let layer = source.entry_bytes(p, EntryPart::Layer(0)).unwrap();
        let budget = 2 * source.max_entry_bytes(p).unwrap();
        let n_layers = source.variant(p).unwrap().layers.len() as u64;
        assert!(
            budget < n_layers * layer,
            "{p}: the pool must be smaller than the model"
        );
        let full = resident(dir, p);
        for prefetch in [false, true] {
            let (m, pool) = streamed(&source, p, budget, prefetch);
            assert!(m.is_streamed());
            let a = all_logits(&full, 4);
            let b = all_logits(&m, 4);
            assert_eq!(a.len(), b.len());
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{p} (prefetch {prefetch}): streamed logits differ"
            );
            assert_eq!(greedy(&full), greedy(&m), "{p}: greedy tokens differ");
            let s = pool.stats();
            assert!(s.device_used <= budget && s.evictions > 0, "{p}: {s:?}");
            assert_eq!(s.load_failures, 0);
        }
    }
}

/// A model loaded entry by entry through the streaming pipeline ([`Model::load`]).
fn loaded(source: &VariantSource, p: Precision) -> agentcompress::Result<Model<CpuBackend>> {
    let pipeline = StagingPipeline::new(
        open_reader(&ReaderConfig::default())?,
        Arc::new(HostStagingAlloc),
        StagingConfig::default(),
    )?;
    Model::load(CpuBackend::new(), source.variant(p)?, &pipeline, true)
}

#[test]
fn a_model_loaded_entry_by_entry_is_the_resident_model_in_every_precision() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let source = VariantSource::open_dir(dir, true).unwrap();
    for p in Precision::ALL {
        let full = resident(dir, p);
        let m = loaded(&source, p).unwrap();
        assert!(!m.is_streamed());
        let (a, b) = (all_logits(&full, 4), all_logits(&m, 4));
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{p}: logits of the loaded model differ"
        );
        assert_eq!(greedy(&full), greedy(&m), "{p}: greedy tokens differ");
    }
}

#[test]
fn a_corrupt_tensor_fails_the_entry_by_entry_load_by_name() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(variants()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let p = Precision::Int4;
    let source = VariantSource::open_dir(tmp.path(), true).unwrap();
    let v = source.variant(p).unwrap();
    for (name, entry) in [
        ("layers.3.w_up", "layer 3"),
        ("embedding", "embedding/head"),
    ] {
        let t = v.index.tensor(name).unwrap().clone();
        let original = std::fs::read(&v.path).unwrap();
        let mut bad = original.clone();
        bad[(t.offset + t.len / 3) as usize] ^= 0x10;
        std::fs::write(&v.path, &bad).unwrap();
        let err = loaded(&source, p)
            .err()
            .expect("a corrupt tensor must fail the load");
        let text = err.to_string();
        assert!(
            matches!(err, agentcompress::Error::Corrupt { .. })
                && text.contains(name)
                && text.contains(entry),
            "the error must name the tensor and the entry: {text}"
        );
        std::fs::write(&v.path, &original).unwrap();
    }
    // Repaired, the same file loads.
    assert!(loaded(&source, p).is_ok());
}

#[test]
fn pool_statistics_of_repeated_passes() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let p = Precision::Int4;
    let source = Arc::new(VariantSource::open_dir(dir, true).unwrap());
    let n = source.variant(p).unwrap().layers.len() as u64;
    let layer_bytes: u64 = (0..n as usize)
        .map(|i| source.entry_bytes(p, EntryPart::Layer(i)).unwrap())
        .sum();
    let globals = source.entry_bytes(p, EntryPart::Globals).unwrap();
    let largest = source.max_entry_bytes(p).unwrap();

    // Budget of two entries, no prefetch: a cyclic scan of n > 2 blocks. Every block is used
    // once per pass, so no resident entry ever has more uses than a newcomer and the older use
    // is evicted first (LRU order): every acquire of a pass misses.
    let (m, pool) = streamed(&source, p, 2 * largest, false);
    let after_open = pool.stats();
    assert_eq!((after_open.misses, after_open.bytes_read), (1, globals));
    let one_pass = |m: &Model<CpuBackend>| {
        let mut st = m.new_state(8).unwrap();
        m.forward(&mut st, &TOKENS, false).unwrap();
    };
    one_pass(&m);
    let first = pool.stats();
    assert_eq!(first.misses - after_open.misses, n);
    assert_eq!(first.hits, 0);
    assert_eq!(first.bytes_read - after_open.bytes_read, layer_bytes);
    one_pass(&m);
    let second = pool.stats();
    assert_eq!(second.misses - first.misses, n, "{second}");
    assert_eq!(
        second.evictions - first.evictions,
        n,
        "each miss evicts one block"
    );
    assert_eq!(second.hits, 0);
    assert_eq!(second.bytes_read - first.bytes_read, layer_bytes);
    assert!(second.load_s > 0.0 && second.disk_gbps > 0.0 && second.copy_gbps > 0.0);

    // A budget that holds the whole model: the second pass is all hits and reads nothing.
    let (m, pool) = streamed(&source, p, layer_bytes + globals, false);
    one_pass(&m);
    let first = pool.stats();
    one_pass(&m);
    let second = pool.stats();
    assert_eq!(second.hits - first.hits, n);
    assert_eq!(second.misses, first.misses);
    assert_eq!(second.bytes_read, first.bytes_read);
    assert_eq!(second.evictions, 0);
}

#[test]
fn backend_tier_keeps_uploaded_blocks_and_stays_bit_identical() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let p = Precision::Int2;
    let source = Arc::new(VariantSource::open_dir(dir, true).unwrap());
    let n = source.variant(p).unwrap().layers.len();
    let full = resident(dir, p);
    // One chunk: each pass uses every block once.
    let want = all_logits(&full, 8);
    let pool_budget = 2 * source.max_entry_bytes(p).unwrap();
    let open = |upload_budget: u64| {
        let pool = Arc::new(
            variant_pool(source.clone(), &VariantPoolConfig::with_budget(pool_budget)).unwrap(),
        );
        let opts = StreamOptions {
            prefetch: true,
            upload_budget,
        };
        let m = Model::streamed(CpuBackend::new(), pool.clone(), source.clone(), p, opts).unwrap();
        (m, pool)
    };
    let same = |m: &Model<CpuBackend>| {
        let got = all_logits(m, 8);
        got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    };

    // Room for every block: the first pass uploads each once, later passes hit only and
    // read nothing more from the pool.
    let (m, pool) = open(1 << 30);
    assert!(same(&m), "first pass");
    let first = m.upload_stats().unwrap();
    assert_eq!(
        (first.misses, first.hits, first.evictions),
        (n as u64, 0, 0)
    );
    let pool_first = pool.stats();
    assert!(same(&m) && same(&m), "cached passes");
    let later = m.upload_stats().unwrap();
    assert_eq!(
        (later.misses, later.hits),
        (n as u64, 2 * n as u64),
        "{later:?}"
    );
    assert_eq!(pool.stats().bytes_read, pool_first.bytes_read);
    assert!(later.used > 0 && later.used == later.bytes_uploaded);
    assert_eq!(greedy(&full), greedy(&m));

    // Room for two blocks: the policy evicts, the logits stay identical, and the tier never
    // holds more than its budget.
    let budget = 2 * later.used / n as u64 + 1;
    let (m, _) = open(budget);
    assert!(same(&m) && same(&m), "two-block tier");
    let s = m.upload_stats().unwrap();
    assert!(s.evictions > 0 && s.used <= budget, "{s:?}");

    // Smaller than one block: every use is uncached, still correct.
    let (m, _) = open(16);
    assert!(same(&m), "uncached");
    let s = m.upload_stats().unwrap();
    assert_eq!((s.uncached, s.used), (n as u64, 0), "{s:?}");

    // No budget: no backend tier.
    assert!(open(0).0.upload_stats().is_none());
}

#[test]
fn corrupt_tensor_fails_the_streamed_pass_by_name_and_a_retry_after_repair_works() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let src_dir = variants();
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src_dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let dir = tmp.path();
    let p = Precision::Int8;
    let source = Arc::new(VariantSource::open_dir(dir, true).unwrap());
    let v = source.variant(p).unwrap();
    let wq = v.index.tensor("layers.2.wq").unwrap().clone();
    let file = v.path.clone();
    let budget = 2 * source.max_entry_bytes(p).unwrap();
    let (m, pool) = streamed(&source, p, budget, false);
    let good = all_logits(&resident(dir, p), 8);

    let original = std::fs::read(&file).unwrap();
    let mut bad = original.clone();
    bad[(wq.offset + wq.len / 2) as usize] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    let mut st = m.new_state(8).unwrap();
    let err = m.forward(&mut st, &TOKENS, true).unwrap_err().to_string();
    assert!(
        err.contains("layers.2.wq") && err.contains("layer 2"),
        "error must name the tensor and layer: {err}"
    );
    let key = VariantSource::key(p, EntryPart::Layer(2));
    assert!(
        !pool.is_resident(&key),
        "nothing half-loaded stays resident"
    );
    assert_eq!(pool.stats().load_failures, 1);

    std::fs::write(&file, &original).unwrap();
    let mut st = m.new_state(8).unwrap();
    let again = m.forward(&mut st, &TOKENS, true).unwrap();
    assert!(good
        .iter()
        .zip(&again)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn api_opens_variant_directories_resident_and_streamed() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let params = GenerateParams {
        max_new_tokens: 10,
        ..Default::default()
    };
    let mut texts = Vec::new();
    for (budget, upload_budget) in [(None, 0), (Some(256 << 10), 0), (Some(256 << 10), 1 << 20)] {
        let opts = VariantOpenOptions {
            precision: Precision::Int4,
            device: Device::Cpu,
            pool_budget: budget,
            upload_budget,
            ..Default::default()
        };
        let engine = open_variant(dir, &opts).unwrap();
        assert_eq!(engine.pool_stats().is_some(), budget.is_some());
        assert_eq!(engine.upload_stats().is_some(), upload_budget > 0);
        let out = engine
            .generate("Once upon a time", &params, |_| true)
            .unwrap();
        assert!(!out.ids.is_empty());
        texts.push(out.text);
        if let Some(u) = engine.upload_stats() {
            // Every block fits in 1 MiB: each is uploaded once, then every later use hits.
            assert!(u.hits > u.misses && u.evictions == 0, "{u:?}");
        }
        if let Some(s) = engine.pool_stats() {
            assert!(s.misses > 0 && s.bytes_read > 0, "{s:?}");
            let ran = engine.run("Once upon a time", &params, |_| true).unwrap();
            assert!(!ran.output.ids.is_empty());
            let after = engine.pool_stats().unwrap();
            assert_eq!(
                engine.stats().bytes_streamed,
                after.bytes_read,
                "engine stats report the pool's bytes"
            );
        } else {
            assert_eq!(engine.stats().bytes_streamed, 0);
        }
    }
    assert!(
        texts[1..].iter().all(|t| *t == texts[0]),
        "embedded tokenizer, same tokens every way"
    );
    let too_small = VariantOpenOptions {
        device: Device::Cpu,
        pool_budget: Some(4096),
        ..Default::default()
    };
    let err = open_variant(dir, &too_small).err().unwrap().to_string();
    assert!(err.contains("budget"), "{err}");
    assert!(agentcompress::model::load_model(dir)
        .unwrap_err()
        .to_string()
        .contains("variant directory"));
}

#[test]
fn engine_builder_opens_a_variant_directory_at_fp16() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let dir = variants();
    let params = GenerateParams {
        max_new_tokens: 12,
        ..Default::default()
    };
    let built = agentcompress::api::Engine::builder(dir)
        .device(Device::Cpu)
        .build()
        .unwrap();
    let opened = open_variant(
        dir,
        &VariantOpenOptions {
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let a = built
        .generate("Once upon a time", &params, |_| true)
        .unwrap();
    let b = opened
        .generate("Once upon a time", &params, |_| true)
        .unwrap();
    assert_eq!(a.ids, b.ids);
    assert_eq!(built.route("a task").unwrap().precision, Precision::Fp16);
}
