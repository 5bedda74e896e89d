//! Differential check of streamed execution on the GPU: stories260K written to a temporary
//! variant directory, each precision run fully resident on CUDA and streamed through the host
//! pool with the uploaded-block tier (GPU memory) holding about half the blocks. Both run the
//! same kernels on the same weights, so the logits must agree to round-off; the tier must hit
//! on the second pass. The note reports the upload rate (pageable host-to-device copies).
//!
//! Also the pinned pipeline (no model needed): a seeded random file streamed from disk through
//! pinned staging buffers into a pool of device memory, evicted to the host tier and promoted
//! back; every entry is read back from the device and must equal the file's bytes. The note
//! gives pinned, pageable and bounced host-to-device rates and the pipeline's rate.

use super::check::{compare, CheckReport, CheckRow, Status};
use super::copy_rate::h2d_rates;
use super::stream_bench::cut_layers;
use agentcompress::backend::cuda::{CopyEngine, CudaBackend};
use agentcompress::engine::{Model, StreamOptions};
use agentcompress::io::{
    gbps, open_reader, ReaderConfig, StagingAlloc, StagingConfig, StagingPipeline,
};
use agentcompress::pipeline::{build_variants, BuildOptions};
use agentcompress::pool::{
    variant_pool, DeviceAlloc, Pool, PoolConfig, VariantPoolConfig, VariantSource,
};
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::store::{load_variant, LoadOptions};
use agentcompress::util::rng::Rng;
use agentcompress::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Layer size of the pinned-pipeline check.
const PIPE_LAYER: u64 = 8 << 20;
/// File size of the pinned-pipeline check: five layers and an odd tail (a partial block).
const PIPE_FILE: u64 = 5 * PIPE_LAYER + 12_345;

/// What [`pipeline_round_trip`] found.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineCheck {
    /// Bytes of the file.
    pub bytes: u64,
    /// Bytes read back from the pool that differ from the file (over both passes).
    pub mismatched: u64,
    /// Entries read back whose memory reported no device address.
    pub without_device_ptr: usize,
    /// Entries moved from the device tier to the host tier.
    pub demotions: u64,
    /// Acquires served by promoting an entry from the host tier.
    pub host_hits: u64,
    /// First pass (everything from disk) in GB/s.
    pub gbps: f64,
}

/// Writes a seeded random file of `file_len` bytes into `dir`, cuts it into `layer_len`-byte
/// entries (each with its CRC-32, so the pipeline checks it too) and acquires every entry
/// through a pool whose memory comes from `device`, staged through buffers from `staging`:
/// budget two entries, host tier one, so a second pass in reverse order meets device hits, a
/// promotion from the host tier and reloads. Every acquired entry is read back with
/// `copy_out` and compared with the file.
pub fn pipeline_round_trip(
    staging: Arc<dyn StagingAlloc>,
    device: Arc<dyn DeviceAlloc>,
    dir: &Path,
    file_len: u64,
    layer_len: u64,
) -> Result<PipelineCheck> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("pinned-pipeline.bin");
    let mut rng = Rng::new(0x9173_5eed);
    let data: Vec<u8> = (0..file_len).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&path, &data).map_err(|e| Error::io(&path, e))?;
    let mut source = cut_layers(std::slice::from_ref(&path), &[file_len], layer_len);
    for (_, l) in &mut source.layers {
        for e in &mut l.extents {
            e.crc32 = Some(crc32fast::hash(
                &data[e.offset as usize..(e.offset + e.len) as usize],
            ));
        }
    }
    let keys: Vec<_> = source
        .layers
        .iter()
        .map(|(k, l)| (k.clone(), l.extents[0].offset))
        .collect();
    let reader = open_reader(&ReaderConfig {
        queue_depth: 32,
        ..Default::default()
    })?;
    let cfg = StagingConfig {
        chunk_size: 1 << 20,
        ring: 4,
        read_in_place: false,
    };
    let pool = Pool::new(
        PoolConfig {
            device_budget: 2 * layer_len,
            host_budget: layer_len,
        },
        StagingPipeline::new(reader, staging, cfg)?,
        Arc::new(source),
        device,
    )?;
    let mut out = PipelineCheck {
        bytes: file_len,
        ..Default::default()
    };
    let mut back = Vec::new();
    let mut check = |key: &agentcompress::pool::PoolKey, off: u64| -> Result<()> {
        let g = pool.acquire(key)?;
        let buf = g
            .buffer()
            .ok_or_else(|| Error::Internal(format!("entry {key} has no memory")))?;
        back.resize(buf.len() as usize, 0);
        buf.copy_out(0, &mut back)?;
        let want = &data[off as usize..off as usize + back.len()];
        out.mismatched += back.iter().zip(want).filter(|(a, b)| a != b).count() as u64;
        out.without_device_ptr += usize::from(buf.device_ptr().is_none());
        Ok(())
    };
    let t = Instant::now();
    for (k, off) in &keys {
        check(k, *off)?;
    }
    out.gbps = gbps(file_len, t.elapsed().as_secs_f64());
    for (k, off) in keys.iter().rev() {
        check(k, *off)?;
    }
    let st = pool.stats();
    (out.demotions, out.host_hits) = (st.demotions, st.host_hits);
    let _ = std::fs::remove_file(&path);
    Ok(out)
}

/// The pinned-pipeline row: [`pipeline_round_trip`] through pinned staging into device memory
/// on `gpu`'s context, plus the host-to-device rates of the file's bytes.
fn pinned_pipeline_row(gpu: &CudaBackend, dir: &Path) -> Result<CheckRow> {
    use agentcompress::backend::Backend;
    let engine = CopyEngine::with_context(gpu.context().clone(), gpu.name().to_string())?;
    let c = pipeline_round_trip(
        Arc::new(engine.staging_alloc()),
        Arc::new(engine.device_alloc()),
        dir,
        PIPE_FILE,
        PIPE_LAYER,
    )?;
    let mut rng = Rng::new(7);
    let window: Vec<u8> = (0..64 << 20).map(|_| rng.next_u64() as u8).collect();
    let r = h2d_rates(&engine, &window, 1 << 30, 4 << 20)?;
    let ok = c.mismatched == 0 && c.without_device_ptr == 0 && c.demotions > 0 && c.host_hits > 0;
    Ok(CheckRow {
        name: "stream-pinned".into(),
        case: format!("{} MiB file, 8 MiB entries", PIPE_FILE >> 20),
        status: if ok { Status::Pass } else { Status::Fail },
        rel_err: c.mismatched as f64 / c.bytes as f64,
        max_abs: 0.0,
        tol: 0.0,
        bad: c.mismatched as usize,
        note: format!(
            "h2d pinned {:.1} GB/s, pageable {:.1} ({:.1}x), bounced {:.1}; pipeline {:.2} GB/s; \
             {} demoted, {} promoted, {} without device address",
            r.pinned_gbps,
            r.pageable_gbps,
            r.pinned_speedup(),
            r.bounced_gbps,
            c.gbps,
            c.demotions,
            c.host_hits,
            c.without_device_ptr
        ),
    })
}

/// Logits of a streamed and a resident model on the same backend: same kernels, same weights.
const STREAM_TOL: f64 = 1e-6;

/// Runs the pinned-pipeline check, then the streamed-versus-resident checks when stories260K
/// is available.
pub fn run_all(gpu: &CudaBackend, stories: Option<&Path>, rep: &mut CheckReport) {
    let pdir =
        std::env::temp_dir().join(format!("agentcompress-pinned-check-{}", std::process::id()));
    rep.push_result(
        "stream-pinned",
        "pinned staging -> device",
        pinned_pipeline_row(gpu, &pdir),
    );
    let _ = std::fs::remove_dir_all(&pdir);
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

/// The backend-tier budget of the eviction case, from what a pass over the blocks uploaded
/// (`uploaded` bytes over `blocks` misses, one per block): room for two and a half blocks,
/// so each block fits on its own (it is cached, not used once uncached) but a pass over three
/// or more must evict. It is sized from the uploaded blocks, not the pool entries: an entry pads
/// every tensor to 4 KiB, so small packed blocks (INT2) are far smaller uploaded than stored.
/// An error when there are fewer than three blocks or nothing was uploaded.
pub(crate) fn eviction_budget(uploaded: u64, blocks: u64) -> Result<u64> {
    if blocks < 3 || uploaded == 0 {
        return Err(Error::invalid(format!(
            "an eviction check needs at least three uploaded blocks ({blocks} blocks, {uploaded} bytes)"
        )));
    }
    let block = uploaded.div_ceil(blocks);
    Ok(2 * block + block / 2)
}

fn check_dir(gpu: &CudaBackend, path: &Path, dir: &Path, rep: &mut CheckReport) -> Result<()> {
    let dense = agentcompress::model::llama2c::load(path)?;
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
            let mut t = agentcompress::backend::cpu::argmax(&logits) as u32;
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

        // Room for two and a half of the blocks just uploaded: evictions, same logits and
        // greedy tokens.
        let small = open(eviction_budget(u.bytes_uploaded, u.misses)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use agentcompress::io::{AlignedBuf, HostStagingAlloc, Sink};
    use agentcompress::pool::DeviceBuffer;

    /// Memory that behaves like device memory (no host view; read back through `copy_out`),
    /// optionally corrupting one byte of every copy, so the check must catch it.
    struct Opaque {
        mem: AlignedBuf,
        corrupt: bool,
    }

    impl Sink for Opaque {
        fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            self.mem.copy_in(offset, data)?;
            if self.corrupt && !data.is_empty() {
                self.mem[offset as usize] ^= 0x40;
            }
            Ok(())
        }
    }

    impl DeviceBuffer for Opaque {
        fn len(&self) -> u64 {
            self.mem.len() as u64
        }
        fn host_view(&self) -> Option<&[u8]> {
            None
        }
        fn device_ptr(&self) -> Option<u64> {
            Some(self.mem.as_ptr() as u64)
        }
        fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
            let o = offset as usize;
            dst.copy_from_slice(&self.mem[o..o + dst.len()]);
            Ok(())
        }
        fn into_host(self: Box<Self>) -> Result<AlignedBuf> {
            Ok(self.mem)
        }
    }

    struct OpaqueAlloc(bool);

    impl DeviceAlloc for OpaqueAlloc {
        fn alloc(&self, len: u64) -> Result<Box<dyn DeviceBuffer>> {
            Ok(Box::new(Opaque {
                mem: AlignedBuf::zeroed(len as usize)?,
                corrupt: self.0,
            }))
        }
        fn name(&self) -> &'static str {
            "opaque"
        }
    }

    #[test]
    fn round_trip_through_memory_without_a_host_view_matches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = pipeline_round_trip(
            Arc::new(HostStagingAlloc),
            Arc::new(OpaqueAlloc(false)),
            dir.path(),
            5 * 65536 + 123,
            65536,
        )
        .unwrap();
        assert_eq!(c.bytes, 5 * 65536 + 123);
        assert_eq!((c.mismatched, c.without_device_ptr), (0, 0));
        assert!(c.demotions > 0, "{c:?}");
        assert!(c.host_hits > 0, "a promotion from the host tier: {c:?}");
        assert!(c.gbps > 0.0);
    }

    #[test]
    fn the_eviction_budget_holds_one_block_but_not_three() {
        assert_eq!(eviction_budget(5 * 1000, 5).unwrap(), 2500);
        assert!(eviction_budget(2 * 1000, 2).is_err());
        assert!(eviction_budget(0, 5).is_err());
    }

    /// The eviction case on the CPU backend (the same backend tier as on CUDA): for every
    /// precision of stories260K, a tier sized by [`eviction_budget`] from a first pass evicts
    /// on the next pass and keeps the logits.
    #[test]
    fn the_eviction_budget_evicts_in_every_precision_of_stories260k() {
        use agentcompress::backend::cpu::CpuBackend;
        let Some(root) = crate::harness::test_models::stories260k_dir() else {
            return;
        };
        let dense = agentcompress::model::llama2c::load(&root.join("stories260K.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = BuildOptions {
            quant: QuantConfig::default(),
            calibration: None,
            evaluation: None,
        };
        build_variants(&dense, "stories260K", dir.path(), None, &opts, &mut |_| {}).unwrap();
        let source = Arc::new(VariantSource::open_dir(dir.path(), true).unwrap());
        let tokens = [1u32, 403, 407, 261, 378, 260];
        let open = |p: Precision, upload_budget: u64| {
            let budget = 2 * source.max_entry_bytes(p).unwrap();
            let pool = Arc::new(
                variant_pool(source.clone(), &VariantPoolConfig::with_budget(budget)).unwrap(),
            );
            let stream = StreamOptions {
                prefetch: false,
                upload_budget,
            };
            Model::streamed(CpuBackend::exact(), pool, source.clone(), p, stream).unwrap()
        };
        let run = |m: &Model<CpuBackend>| {
            let mut st = m.new_state(tokens.len()).unwrap();
            m.forward(&mut st, &tokens, true).unwrap()
        };
        for p in Precision::ALL {
            let full = open(p, 1 << 30);
            let want = run(&full);
            let u = full.upload_stats().unwrap();
            assert_eq!(
                (u.misses, u.evictions),
                (dense.layers.len() as u64, 0),
                "{p}"
            );
            let small = open(p, eviction_budget(u.bytes_uploaded, u.misses).unwrap());
            assert_eq!(run(&small), want, "{p}");
            let s = small.upload_stats().unwrap();
            assert!(s.evictions > 0 && s.uncached == 0, "{p}: {s:?}");
        }
    }

    #[test]
    fn round_trip_counts_corrupted_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let c = pipeline_round_trip(
            Arc::new(HostStagingAlloc),
            Arc::new(OpaqueAlloc(true)),
            dir.path(),
            3 * 65536,
            65536,
        )
        .unwrap();
        // One flipped byte per copy: per entry from disk (one chunk each) and per promotion.
        assert!(c.mismatched >= 3, "{c:?}");
    }
}
