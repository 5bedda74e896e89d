//! `agentcompress bench swap`: swap latency as a user sees it. For each variant (default INT4
//! and INT8) of a model shape (default Llama-2-7B, `--layers` to fit the machine) it writes a
//! variant file of random codes with O_DIRECT (so the page cache holds none of it), then times
//! in the same run:
//! - the raw read: the file's tensor bytes read sequentially with O_DIRECT `pread`;
//! - the swap: every entry of the variant made resident in a fresh pool (checksums verified,
//!   the next entry prefetched while one is acquired);
//! - the time to first token of a task that needs the swap: a fresh pool and a streamed model,
//!   prompt in, first token out, beside the same prompt once the variant is resident.

use crate::harness::decode_bench::random_variant;
use agentcompress::backend::cpu::{argmax, CpuBackend};
use agentcompress::engine::{Model, StreamOptions};
use agentcompress::io::{
    gbps, open_reader, read_fully, AlignedBuf, HostStagingAlloc, PreadReader, ReadReq,
    ReaderConfig, StagingConfig, StagingPipeline,
};
use agentcompress::model::synthetic;
use agentcompress::pool::{variant_pool, OpenVariant, VariantPoolConfig, VariantSource};
use agentcompress::quant::{Precision, QuantConfig};
use agentcompress::store::{write_variant, EntryPart};
use agentcompress::{Error, Result};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `bench swap`.
#[derive(clap::Args, Debug)]
pub struct SwapArgs {
    /// Directory for the variant files (on the disk to measure; not tmpfs).
    #[arg(long)]
    pub dir: PathBuf,
    /// Model shape: a synthetic preset (llama2-7b, llama3-8b, ...).
    #[arg(long, default_value = "llama2-7b")]
    pub preset: String,
    /// Override the preset's layer count (a few 7B-shape layers on a small machine).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Variants to time, comma-separated.
    #[arg(long, default_value = "int4,int8")]
    pub precisions: String,
    /// Prompt tokens of the task.
    #[arg(long, default_value_t = 8)]
    pub prompt: usize,
    /// Keep the variant files (default: removed at the end).
    #[arg(long)]
    pub keep: bool,
}

/// One variant's figures.
struct Row {
    precision: Precision,
    bytes: u64,
    raw_s: f64,
    swap_s: f64,
    ttft_cold_s: f64,
    ttft_warm_s: f64,
    /// The engine's swap to a resident variant from a cold page cache ([`Model::load`]), and
    /// the time to first token of a task that needs it.
    engine_swap_s: f64,
    engine_ttft_s: f64,
}

/// Runs the subcommand.
pub fn run(a: SwapArgs) -> Result<()> {
    let ps = a
        .precisions
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse::<Precision>)
        .collect::<Result<Vec<_>>>()?;
    if ps.is_empty() {
        return Err(Error::invalid("--precisions names no variant"));
    }
    if a.prompt == 0 {
        return Err(Error::invalid("--prompt must be at least 1 token"));
    }
    let mut cfg = synthetic::preset(&a.preset)?;
    if let Some(n) = a.layers {
        if n == 0 {
            return Err(Error::invalid("--layers must be at least 1"));
        }
        cfg.n_layers = n;
    }
    cfg.max_seq_len = cfg.max_seq_len.min(a.prompt + 8);
    std::fs::create_dir_all(&a.dir).map_err(|e| Error::io(&a.dir, e))?;
    let qcfg = QuantConfig::default();
    let mut rows = Vec::new();
    for &p in &ps {
        let path = a.dir.join(format!("swap-bench-{}.acv", p.name()));
        let t = Instant::now();
        {
            let w = random_variant(&cfg, p, &qcfg, 42)?;
            let tmp = a.dir.join(format!("swap-bench-{}.acv.tmp", p.name()));
            write_variant(&tmp, &w, p.name(), &qcfg, None)?;
            drop(w);
            copy_direct(&tmp, &path)?;
            std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        println!(
            "{p}: wrote {} with O_DIRECT in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
        let row = measure(&path, p, a.prompt);
        if !a.keep {
            let _ = std::fs::remove_file(&path);
        }
        rows.push(row?);
    }
    println!(
        "\nswap latency, {} shape with {} layers, from a cold page cache (O_DIRECT), CPU backend",
        a.preset, cfg.n_layers
    );
    println!(
        "| variant | GB | raw read s (GB/s) | pool swap s (GB/s) | pool swap / raw | streamed TTFT cold s | streamed TTFT resident s | engine swap s (GB/s) | engine swap / raw | engine TTFT s | engine TTFT / raw |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.3} ({:.2}) | {:.3} ({:.2}) | {:.2} | {:.3} | {:.3} | {:.3} ({:.2}) | {:.2} | {:.3} | {:.2} |",
            r.precision,
            r.bytes as f64 / 1e9,
            r.raw_s,
            gbps(r.bytes, r.raw_s),
            r.swap_s,
            gbps(r.bytes, r.swap_s),
            r.swap_s / r.raw_s,
            r.ttft_cold_s,
            r.ttft_warm_s,
            r.engine_swap_s,
            gbps(r.bytes, r.engine_swap_s),
            r.engine_swap_s / r.raw_s,
            r.engine_ttft_s,
            r.engine_ttft_s / r.raw_s
        );
    }
    Ok(())
}

/// Copies `src` to a new file `dst` with O_DIRECT writes, so none of `dst` is in the page
/// cache afterwards (variant files are whole 4 KiB blocks long).
fn copy_direct(src: &Path, dst: &Path) -> Result<()> {
    const PIECE: usize = 8 << 20;
    let mut input = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(dst)
        .map_err(|e| Error::io(dst, e))?;
    let mut buf = AlignedBuf::zeroed(PIECE)?;
    loop {
        let mut n = 0;
        while n < PIECE {
            match input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(src, e)),
            }
        }
        if n == 0 {
            break;
        }
        if n % agentcompress::io::ALIGN != 0 {
            return Err(Error::invalid(format!(
                "{} is not whole 4 KiB blocks long",
                src.display()
            )));
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(dst, e))?;
        if n < PIECE {
            break;
        }
    }
    out.sync_all().map_err(|e| Error::io(dst, e))
}

/// Drops `path`'s pages from the page cache, so the next buffered read comes from the disk.
fn evict_cached(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))?;
    // SAFETY: a valid open descriptor; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(Error::io(path, std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

/// Raw read, swap and time to first token of one variant file.
fn measure(path: &Path, p: Precision, prompt_len: usize) -> Result<Row> {
    let open = || -> Result<Arc<VariantSource>> {
        Ok(Arc::new(VariantSource::from_variants(
            vec![OpenVariant::open(path, p)?],
            true,
        )))
    };
    let source = open()?;
    let v = source.variant(p)?;
    let parts: Vec<EntryPart> = std::iter::once(EntryPart::Globals)
        .chain((0..v.layers.len()).map(EntryPart::Layer))
        .collect();
    let bytes: u64 = parts
        .iter()
        .map(|&part| source.entry_bytes(p, part))
        .sum::<Result<u64>>()?;
    let budget = bytes + (64 << 20);

    // Raw read: the same extents, sequential O_DIRECT preads of 4 MiB.
    let raw_s = {
        let reader = PreadReader::new(true, 4 << 20)?;
        let mut buf = AlignedBuf::zeroed(4 << 20)?;
        let t = Instant::now();
        for &part in &parts {
            for e in &v.extents(part, false)?.extents {
                let mut off = 0u64;
                while off < e.len {
                    let n = (e.len - off).min(4 << 20) as usize;
                    read_fully(
                        &reader,
                        &mut [ReadReq::new(&e.path, e.offset + off, &mut buf[..n])],
                    )?;
                    off += n as u64;
                }
            }
        }
        t.elapsed().as_secs_f64()
    };

    // Swap: every entry resident in a fresh pool.
    let swap_s = {
        let pool = variant_pool(source.clone(), &VariantPoolConfig::with_budget(budget))?;
        let t = Instant::now();
        // Entry i + 1 is read while entry i is verified, as a streamed model prefetches.
        let mut guards = Vec::new();
        for (i, &part) in parts.iter().enumerate() {
            if let Some(&next) = parts.get(i + 1) {
                drop(pool.prefetch(&VariantSource::key(p, next)));
            }
            guards.push(pool.acquire(&VariantSource::key(p, part))?);
        }
        let s = t.elapsed().as_secs_f64();
        drop(guards);
        s
    };

    // Time to first token: a fresh pool (nothing resident) and a streamed model.
    let source = open()?;
    let pool = Arc::new(variant_pool(
        source.clone(),
        &VariantPoolConfig::with_budget(budget),
    )?);
    let t = Instant::now();
    let model = Model::streamed(
        CpuBackend::new(),
        pool,
        source.clone(),
        p,
        StreamOptions::default(),
    )?;
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| 1 + (i * 37) % vocab)
        .collect();
    let first = |model: &Model<CpuBackend>| -> Result<u32> {
        let mut st = model.new_state(prompt.len())?;
        let logits = model.forward(&mut st, &prompt, false)?;
        Ok(argmax(&logits) as u32)
    };
    let tok_cold = first(&model)?;
    let ttft_cold_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tok_warm = first(&model)?;
    let ttft_warm_s = t.elapsed().as_secs_f64();
    if tok_cold != tok_warm {
        return Err(Error::Internal(format!(
            "first token {tok_cold} after the swap, {tok_warm} when resident"
        )));
    }
    // The engine's swap of a resident variant: every entry read, verified, decoded and
    // uploaded (one entry read while the one before it is uploaded), then the first token.
    drop(model);
    evict_cached(path)?;
    let pipeline = StagingPipeline::new(
        open_reader(&ReaderConfig::default())?,
        Arc::new(HostStagingAlloc),
        StagingConfig::default(),
    )?;
    let t = Instant::now();
    let resident = Model::load(CpuBackend::new(), source.variant(p)?, &pipeline, true)?;
    let engine_swap_s = t.elapsed().as_secs_f64();
    let tok_resident = first(&resident)?;
    let engine_ttft_s = t.elapsed().as_secs_f64();
    if tok_resident != tok_warm {
        return Err(Error::Internal(format!(
            "first token {tok_resident} resident, {tok_warm} streamed"
        )));
    }
    println!("{p}: engine swap {engine_swap_s:.3} s, first token {engine_ttft_s:.3} s");
    println!(
        "{p}: raw read {raw_s:.3} s, swap {swap_s:.3} s, first token {ttft_cold_s:.3} s cold, \
         {ttft_warm_s:.3} s resident"
    );
    Ok(Row {
        precision: p,
        bytes,
        raw_s,
        swap_s,
        ttft_cold_s,
        ttft_warm_s,
        engine_swap_s,
        engine_ttft_s,
    })
}
