//! Helpers shared by the integration tests: finding the shared test models.
//!
//! The real checkpoints (stories260K and friends) live outside the repository. A clone without
//! them still passes: a test that needs one asks [`shared_model`], which prints why it skips
//! and returns `None`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared model folder: `$AGENTCOMPRESS_MODELS` when set, else `shared/models` in the
/// nearest ancestor of the repository that has one (`../shared` beside a checkout).
pub fn models_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("AGENTCOMPRESS_MODELS") {
        let d = PathBuf::from(d);
        return d.is_dir().then_some(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared").join("models"))
        .find(|d| d.is_dir())
}

/// `rel` under the shared model folder when it exists; otherwise prints
/// `skipped: <rel> not found` (so the skip shows in `cargo test -- --nocapture` and in a
/// failing run's output) and returns `None`.
pub fn shared_model(rel: &str) -> Option<PathBuf> {
    let found = models_dir().map(|d| d.join(rel)).filter(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "skipped: {rel} not found (set AGENTCOMPRESS_MODELS or put shared/models beside the repository)"
        );
    }
    found
}

/// The stories260K folder (`stories260K.bin`, `tok512.bin`), or `None` after printing why.
pub fn stories260k_dir() -> Option<PathBuf> {
    shared_model("stories260K")
}

/// A fresh directory for a test binary's shared fixture: `<CARGO_TARGET_TMPDIR>/<name>`
/// (Cargo's scratch folder for integration tests; the system temporary folder where this
/// module is compiled into other tests), emptied first. A fixture built once per binary lives
/// in a static, and a `TempDir` held there is never dropped, so each run would leave one
/// directory behind; this one is replaced by the next run and goes with `cargo clean`.
pub fn fixture_dir(name: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes stories260K's four variants (round to nearest, its tokenizer embedded) into `out`,
/// from the stories260K folder `root`.
pub fn build_stories_variants(root: &Path, out: &Path) {
    use agentcompress::pipeline::{build_variants, BuildOptions};
    use agentcompress::quant::{Method, QuantConfig};
    let dense = agentcompress::model::llama2c::load(&root.join("stories260K.bin")).unwrap();
    let tok = std::fs::read(root.join("tok512.bin")).unwrap();
    let opts = BuildOptions {
        quant: QuantConfig {
            method: Method::Rtn,
            ..QuantConfig::default()
        },
        calibration: None,
        evaluation: None,
    };
    build_variants(
        &dense,
        "stories260K",
        out,
        Some(("tokenizer.bin", &tok)),
        &opts,
        &mut |_| {},
    )
    .unwrap();
}

/// Writes a router file into the variant directory `dir`: target 0.9, swap factor 50,
/// `horizon`, 20 bytes per task, variants at 1 / 0.5 / 0.3 / 0.2 of FP16's bytes, and expected
/// quality fitted in two bins to `(predicted complexity, quality per variant)` `points`.
pub fn write_router(
    dir: &Path,
    points: &[(f32, agentcompress::quant::PerPrecision<f32>)],
    horizon: f64,
) {
    use agentcompress::router::{QualityModel, Router, RouterConfig, DEFAULT_PREFETCH_MIN_PROB};
    let router = Router {
        config: RouterConfig {
            target: 0.9,
            swap_factor: 50.0,
            horizon,
            task_bytes: 20.0,
            prefetch_min_prob: DEFAULT_PREFETCH_MIN_PROB,
        },
        quality: QualityModel::fit(points, 2).unwrap(),
        relative_bytes: [1.0, 0.5, 0.3, 0.2].into(),
    };
    std::fs::write(
        dir.join(agentcompress::api::ROUTER_FILE),
        serde_json::to_string(&router).unwrap(),
    )
    .unwrap();
}
