//! The engine over a variant directory: stories260K quantized (RTN) into a temporary
//! directory, a controller and a router calibrated on that controller's own predictions so
//! that easy tasks go to INT2 and hard ones to FP16; routing, swaps under a small budget, hits
//! when resident, prefetch hits, the fallback without a controller, and typed errors for bad
//! directories.

mod common;

use agentcompress::api::{open_variant, Device, Engine, VariantOpenOptions};
use agentcompress::api::{CONTROLLER_FILE, ROUTER_FILE};
use agentcompress::controller::{io as controller_io, Controller, ControllerConfig};
use agentcompress::engine::GenerateParams;
use agentcompress::quant::{PerPrecision, Precision};
use agentcompress::store::{load_variant, LoadOptions, Manifest};
use agentcompress::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TASKS: [&str; 8] = [
    "Once upon a time",
    "Lily and Tom went to the park to play with a big red ball.",
    "The cat sat.",
    "Why did the little dog run to the tree? Think step by step.",
    "One day, a bird found a shiny stone near the river and took it home.",
    "Ben was sad because his toy broke.",
    "Write a list: apples, milk, bread.",
    "The sun was hot and the children wanted ice cream, so mom said yes.",
];

/// The variant directory without a controller (built once).
fn bare() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = common::stories260k_dir().expect("tests return early without stories260K");
        let out = common::fixture_dir("engine_routing-bare").join("variants");
        common::build_stories_variants(&root, &out);
        out
    })
}

/// A copy of the bare directory in a fresh temporary directory.
fn copy_of(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// The tasks sorted by the controller's predicted complexity, easiest first.
struct Routed {
    dir: tempfile::TempDir,
    easy: Vec<&'static str>,
    hard: Vec<&'static str>,
}

/// A routed directory: a seeded controller, and a router whose quality model says INT2/INT4/
/// INT8 are adequate for the easier half of [`TASKS`] (by this controller's prediction) and
/// only FP16 for the harder half. `horizon` 1e6 always swaps to the cheapest adequate
/// variant; 0 keeps a resident adequate one.
fn routed(horizon: f64) -> Routed {
    let dir = copy_of(bare());
    let probe = Engine::builder(dir.path())
        .device(Device::Cpu)
        .build()
        .unwrap();
    let controller = Controller::new(ControllerConfig::small(64), 5).unwrap();
    controller_io::save(&controller, &dir.path().join(CONTROLLER_FILE)).unwrap();
    let (w, _) = load_variant(&dir.path().join("fp16.acv"), LoadOptions::default()).unwrap();
    let table = w.embedding.to_f32_vec();
    let mut scored: Vec<(f32, &'static str)> = TASKS
        .iter()
        .map(|t| {
            let ids = probe.encode(t).unwrap();
            (controller.predict(&table, &ids).unwrap().complexity, *t)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        scored[0].0 < scored[TASKS.len() - 1].0,
        "the controller must tell tasks apart: {scored:?}"
    );
    let half = TASKS.len() / 2;
    let points: Vec<(f32, PerPrecision<f32>)> = scored
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            let q = if i < half {
                [1.0, 1.0, 1.0, 1.0]
            } else {
                [1.0, 0.5, 0.4, 0.2]
            };
            (*c, q.into())
        })
        .collect();
    common::write_router(dir.path(), &points, horizon);
    Routed {
        dir,
        easy: scored[..half].iter().map(|s| s.1).collect(),
        hard: scored[half..].iter().map(|s| s.1).collect(),
    }
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: n,
        stop_at_eos: false,
        ..GenerateParams::default()
    }
}

#[test]
fn routes_by_complexity_swaps_under_a_small_budget_and_hits_when_resident() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let r = routed(1e6);
    let bytes = Manifest::read(r.dir.path())
        .unwrap()
        .variants
        .iter()
        .map(|v| v.weight_bytes)
        .collect::<Vec<_>>();
    // Room for FP16 alone: FP16 and INT2 cannot be resident together.
    let engine = Engine::builder(r.dir.path())
        .device(Device::Cpu)
        .memory_budget(bytes[0])
        .build()
        .unwrap();
    assert!(engine.has_router());
    assert!(engine.resident().unwrap().is_empty());

    let easy = engine.route(r.easy[0]).unwrap();
    assert_eq!(easy.precision, Precision::Int2, "{:?}", easy.reasons);
    assert!(easy.swap && easy.complexity.is_some());
    assert!(
        easy.reasons[0].starts_with("complexity "),
        "{:?}",
        easy.reasons
    );
    assert!(easy.reasons.iter().any(|s| s.contains("chose int2")));
    let alts: Vec<Precision> = easy.alternatives.iter().map(|a| a.0).collect();
    assert!(alts.contains(&Precision::Fp16) && alts.contains(&Precision::Int8));
    let hard = engine.route(r.hard[r.hard.len() - 1]).unwrap();
    assert_eq!(hard.precision, Precision::Fp16, "{:?}", hard.reasons);
    assert!(hard.alternatives.is_empty());

    // easy: swap; easy again: hit; hard: swap (evicts INT2); easy: swap (evicts FP16).
    let params = greedy(6);
    let runs: Vec<_> = [r.easy[0], r.easy[1], r.hard[3], r.easy[0]]
        .iter()
        .map(|t| engine.run(t, &params, |_| true).unwrap())
        .collect();
    let taken: Vec<(Precision, bool)> = runs
        .iter()
        .map(|x| (x.route.precision, x.route.swap))
        .collect();
    use Precision::*;
    assert_eq!(
        taken,
        vec![(Int2, true), (Int2, false), (Fp16, true), (Int2, true)]
    );
    assert_eq!(engine.resident().unwrap(), vec![Int2]);
    let st = engine.stats();
    assert_eq!((st.tasks, st.swaps, st.hits), (4, 3, 1));
    assert_eq!(st.per_precision, [1, 0, 0, 3]);
    assert_eq!(st.tokens, 24);
    assert_eq!(st.bytes_loaded, bytes[0] + 2 * bytes[3]);
    assert!(st.swap_seconds > 0.0);
    assert!((st.hit_rate() - 0.25).abs() < 1e-12);
    assert_eq!((st.prefetches, st.prefetch_hits), (0, 0));

    // The routed run generated on the INT2 variant itself.
    let int2 = open_variant(
        r.dir.path(),
        &VariantOpenOptions {
            precision: Int2,
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let direct = int2.generate(r.easy[0], &params, |_| true).unwrap();
    assert_eq!(runs[3].output.ids, direct.ids);
}

#[test]
fn prefetch_loads_the_declined_cheaper_variant_and_the_next_task_hits_it() {
    if common::stories260k_dir().is_none() {
        return;
    }
    // Horizon 0: a resident adequate variant is always kept, so the router declines the
    // cheaper INT2 and names it as the variant to prefetch.
    let r = routed(0.0);
    let engine = Engine::builder(r.dir.path())
        .device(Device::Cpu)
        .prefetch(true)
        .build()
        .unwrap();
    let params = greedy(4);
    let first = engine.run(r.hard[3], &params, |_| true).unwrap();
    assert_eq!(
        (first.route.precision, first.route.swap),
        (Precision::Fp16, true)
    );
    engine.wait_prefetch().unwrap();
    let second = engine.run(r.easy[0], &params, |_| true).unwrap();
    engine.wait_prefetch().unwrap();
    let third = engine.run(r.easy[0], &params, |_| true).unwrap();
    assert_eq!(
        (third.route.precision, third.route.swap),
        (Precision::Int2, false),
        "{:?} / {:?}",
        second.route.reasons,
        third.route.reasons
    );
    if second.route.precision != Precision::Int2 {
        assert_eq!(second.route.next, Some(Precision::Int2));
        assert!(second
            .route
            .reasons
            .iter()
            .any(|s| s.contains("prefetching int2")));
    }
    let st = engine.stats();
    // The third task's INT2 came from a prefetch (the second's may have too, when the policy
    // head's favourite was adequate and got prefetched after the first).
    assert!(
        st.prefetch_hits >= 1 && st.prefetch_hits <= st.prefetches,
        "{st:?}"
    );
    assert_eq!(st.swaps, 1, "only the first task loaded on demand: {st:?}");
    assert!(engine.resident().unwrap().contains(&Precision::Int2));
    assert!(st.bytes_loaded > 0);
}

#[test]
fn without_a_controller_every_task_goes_to_the_stated_fallback() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let engine = Engine::builder(bare())
        .device(Device::Cpu)
        .fallback_precision(Precision::Int4)
        .build()
        .unwrap();
    assert!(!engine.has_router());
    let route = engine.route("Once upon a time").unwrap();
    assert_eq!(route.precision, Precision::Int4);
    assert!(route.complexity.is_none());
    assert!(
        route.reasons[0].contains(CONTROLLER_FILE) && route.reasons[0].contains("fallback"),
        "{:?}",
        route.reasons
    );
    let a = engine
        .run("Once upon a time", &greedy(3), |_| true)
        .unwrap();
    let b = engine
        .run("Once upon a time", &greedy(3), |_| true)
        .unwrap();
    assert!(a.route.swap && !b.route.swap);
    assert_eq!(engine.stats().per_precision, [0, 0, 2, 0]);
    assert!(engine.route("").is_err());
}

fn build_err(dir: &Path, budget: Option<u64>) -> Error {
    let mut b = Engine::builder(dir).device(Device::Cpu);
    if let Some(x) = budget {
        b = b.memory_budget(x);
    }
    match b.build() {
        Ok(_) => panic!("{} must not open", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn bad_variant_directories_give_typed_errors() {
    if common::stories260k_dir().is_none() {
        return;
    }
    // A budget that cannot hold the FP16 variant.
    let e = build_err(bare(), Some(1000));
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(
        e.to_string().contains("cannot hold the fp16 variant"),
        "{e}"
    );

    // A manifest without INT2.
    let d = copy_of(bare());
    let mut m = Manifest::read(d.path()).unwrap();
    m.variants.retain(|v| v.precision != Precision::Int2);
    m.write(d.path()).unwrap();
    let e = build_err(d.path(), None);
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains("no int2 variant"),
        "{e}"
    );

    // A variant file gone.
    let d = copy_of(bare());
    std::fs::remove_file(d.path().join("int4.acv")).unwrap();
    let e = build_err(d.path(), None);
    assert!(e.to_string().contains("int4.acv"), "{e}");

    // A controller without a router, and a corrupt router.
    let r = routed(1.0);
    std::fs::remove_file(r.dir.path().join(ROUTER_FILE)).unwrap();
    let e = build_err(r.dir.path(), None);
    assert!(e.to_string().contains("routing needs both"), "{e}");
    std::fs::write(r.dir.path().join(ROUTER_FILE), "{\"config\": 3}").unwrap();
    let e = build_err(r.dir.path(), None);
    assert!(
        matches!(e, Error::Corrupt { .. }) && e.to_string().contains(ROUTER_FILE),
        "{e}"
    );

    // A controller for another model width.
    let d = routed(1.0);
    let narrow = Controller::new(ControllerConfig::small(32), 1).unwrap();
    controller_io::save(&narrow, &d.dir.path().join(CONTROLLER_FILE)).unwrap();
    let e = build_err(d.dir.path(), None);
    assert!(e.to_string().contains("32-wide embeddings"), "{e}");
}

#[test]
fn concurrent_uses_load_each_variant_once() {
    if common::stories260k_dir().is_none() {
        return;
    }
    let engine = Engine::builder(bare()).device(Device::Cpu).build().unwrap();
    let wanted = [
        Precision::Int8,
        Precision::Int4,
        Precision::Int8,
        Precision::Int4,
    ];
    let loaded: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let e = &engine;
                s.spawn(move || e.make_resident(wanted[i % 4]).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One thread loads each variant; the others wait for that load and hit it.
    assert_eq!(loaded.iter().filter(|l| **l).count(), 2, "{loaded:?}");
    let m = Manifest::read(bare()).unwrap();
    let bytes = |p| m.variant(p).unwrap().weight_bytes;
    assert_eq!(
        engine.stats().bytes_loaded,
        bytes(Precision::Int8) + bytes(Precision::Int4)
    );
    let mut resident = engine.resident().unwrap();
    resident.sort_by_key(|p| p.index());
    assert_eq!(resident, vec![Precision::Int8, Precision::Int4]);
}
