//! Differential check of streamed execution on the GPU: stories260K written to a temporary
//! variant directory, each precision run fully resident on CUDA and streamed through the host
//! pool with the uploaded-block tier (GPU memory) holding about half the blocks. Both run the
//! same kernels on the same weights, so the logits must agree to round-off; the tier must hit
//! on the second pass. The note reports the upload rate (pageable host-to-device copies).

use super::check::{compare, CheckReport, Status};
use super::CudaBackend;
use crate::engine::{Model, StreamOptions};
use crate::pool::{variant_pool, VariantPoolConfig, VariantSource};
use crate::quant::{Precision, QuantConfig};
use crate::store::{build_variants, load_variant, BuildOptions, EntryPart, LoadOptions};
use crate::Result;
use std::path::Path;
use std::sync::Arc;

/// Logits of a streamed and a resident model on the same backend: same kernels, same weights.
const STREAM_TOL: f64 = 1e-6;

/// Runs the streamed-versus-resident checks when stories260K is available.
pub fn run_all(gpu: &CudaBackend, stories: Option<&Path>, rep: &mut CheckReport) {
    let Some(path) = stories.filter(|p| p.is_file()) else {
        rep.push_skip(
            "stream",
            "stories260K",
            "stories260K.bin not found; pass --stories PATH".into(),
        );
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("agentcompress-stream-check-{}", std::process::id()));
    let r = check_dir(gpu, path, &dir, rep);
    if let Err(e) = r {
        rep.push_result("stream", "stories260K", Err(e));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_dir(gpu: &CudaBackend, path: &Path, dir: &Path, rep: &mut CheckReport) -> Result<()> {
    let dense = crate::model::llama2c::load(path)?;
    let opts = BuildOptions {
        quant: QuantConfig::default(),
        calibration: None,
        evaluation: None,
    };
    build_variants(&dense, "stories260K", dir, None, &opts, &mut |_| {})?;
    let source = Arc::new(VariantSource::open_dir(dir, true)?);
    let tokens: Vec<u32> = vec![1, 403, 407, 261, 378, 260, 75, 302];
    for p in Precision::ALL {
        let (w, _) = load_variant(&dir.join(format!("{p}.acv")), LoadOptions::default())?;
        let resident = Model::new(gpu.clone(), &w)?;
        let n = w.layers.len() as u64;
        let layer = source.entry_bytes(p, EntryPart::Layer(0))?;
        let open = |upload_budget: u64| -> Result<Model<CudaBackend>> {
            let pool = Arc::new(variant_pool(
                source.clone(),
                &VariantPoolConfig::with_budget(2 * source.max_entry_bytes(p)?),
            )?);
            let stream = StreamOptions {
                prefetch: true,
                upload_budget,
            };
            Model::streamed(gpu.clone(), pool, source.clone(), p, stream)
        };
        let run = |m: &Model<CudaBackend>| -> Result<Vec<f32>> {
            let mut st = m.new_state(tokens.len())?;
            m.forward(&mut st, &tokens, true)
        };
        let greedy = |m: &Model<CudaBackend>| -> Result<Vec<u32>> {
            let mut st = m.new_state(tokens.len())?;
            let logits = m.forward(&mut st, &tokens, false)?;
            let mut t = crate::backend::cpu::argmax(&logits) as u32;
            let mut out = vec![t];
            for _ in 0..12 {
                t = m.step_greedy(&mut st, t)?;
                out.push(t);
            }
            Ok(out)
        };
        let want = run(&resident)?;

        // Room for every block: the second pass is served from GPU memory only.
        let full = open(1 << 30)?;
        let first = run(&full)?;
        let second = run(&full)?;
        let u = full.upload_stats().unwrap_or_default();
        let mut row = compare(
            "stream",
            &format!("stories260K {p} tier holds all"),
            &second,
            &want,
            STREAM_TOL,
        );
        let first_ok = compare("stream", "", &first, &want, STREAM_TOL).status == Status::Pass;
        if !first_ok || u.misses != n || u.hits != n {
            row.status = Status::Fail;
        }
        row.note = format!(
            "pass 1 {}; {} misses, {} hits; uploads at {:.2} GB/s",
            if first_ok { "equal" } else { "DIFFERS" },
            u.misses,
            u.hits,
            u.bytes_uploaded as f64 / u.upload_s.max(1e-9) / 1e9
        );
        rep.rows.push(row);

        // Room for two and a half blocks: evictions, same logits and greedy tokens.
        let small = open(2 * layer + layer / 2)?;
        let got = run(&small)?;
        let mut row = compare(
            "stream",
            &format!("stories260K {p} tier evicts"),
            &got,
            &want,
            STREAM_TOL,
        );
        let same_tokens = greedy(&small)? == greedy(&resident)?;
        let u = small.upload_stats().unwrap_or_default();
        if u.evictions == 0 || !same_tokens {
            row.status = Status::Fail;
        }
        row.note = format!(
            "{} evictions; greedy tokens {}",
            u.evictions,
            if same_tokens { "equal" } else { "DIFFER" }
        );
        rep.rows.push(row);
    }
    Ok(())
}
