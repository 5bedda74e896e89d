//! The weight-streaming benchmark behind `agentcompress bench stream`: how close the pipeline
//! (reader + staging ring + pool into host memory) comes to the raw disk floor (plain large
//! sequential O_DIRECT reads of the same files, measured in the same run), beside the
//! pipeline's reader alone, the checksum rate and the copy rate. Goals: reader / floor >= 0.97,
//! pipeline / floor >= 0.92.
//!
//! On CUDA ([`StreamDevice::Cuda`]) the staging ring is pinned memory and the pool lives in
//! device memory (disk -> pinned staging -> async copy on a copy stream), and the same run also
//! times host-to-device copies of the files' bytes from pageable and from pinned memory.
//!
//! O_DIRECT bypasses the page cache, so repeated runs measure the disk. Where the file system
//! refuses O_DIRECT (or io_uring is unavailable and the buffered fallback runs) the report says
//! so: the page cache may then inflate both numbers.

use super::copy_rate::{h2d_rates, H2dRates};
use agentcompress::backend::cuda::CopyEngine;
use agentcompress::io::{
    gbps, open_reader, read_fully, AlignedBuf, BlockReader, Extent, HostStagingAlloc, Layer,
    PreadReader, ReadReq, ReaderConfig, StagingAlloc, StagingConfig, StagingPipeline,
};
use agentcompress::pool::{
    DeviceAlloc, HostDeviceAlloc, LayerSource, Pool, PoolConfig, PoolKey, PoolStats,
};
use agentcompress::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Options of the benchmark (the command line's flags).
#[derive(Clone, Debug)]
pub struct StreamBenchOptions {
    /// Directory of variant files; every regular file in it is read.
    pub variants: Option<PathBuf>,
    /// Further files to read.
    pub files: Vec<PathBuf>,
    /// io_uring queue depth.
    pub queue_depth: u32,
    /// Bytes per submitted read, in KiB (multiple of 4).
    pub io_kib: usize,
    /// Staging buffer size in KiB (multiple of 4); also the floor's read size.
    pub chunk_kib: usize,
    /// Staging buffers in the ring.
    pub ring: usize,
    /// Pool entry (layer) size in MiB: each file is cut into layers of this size.
    pub layer_mib: u64,
    /// Rounds of (floor, pipeline); the reported figures sum all rounds.
    pub repeat: u32,
    /// Use the pread fallback instead of io_uring in the pipeline.
    pub pread: bool,
    /// Read host pool memory in place (no staging copy) instead of through the staging ring.
    pub in_place: bool,
    /// Where the pool keeps the bytes.
    pub device: StreamDevice,
}

/// Where `bench stream`'s pool keeps the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamDevice {
    /// Host memory, staged through plain aligned buffers.
    #[default]
    Cpu,
    /// Device memory of GPU `ordinal`, staged through pinned buffers.
    Cuda(usize),
}

/// Largest host window the host-to-device rates cycle over.
const MAX_H2D_WINDOW: u64 = 256 << 20;

impl Default for StreamBenchOptions {
    fn default() -> Self {
        let r = ReaderConfig::default();
        let st = StagingConfig::default();
        StreamBenchOptions {
            variants: None,
            files: Vec::new(),
            queue_depth: r.queue_depth,
            io_kib: r.io_size / 1024,
            chunk_kib: st.chunk_size / 1024,
            ring: st.ring,
            layer_mib: 64,
            repeat: 2,
            pread: false,
            in_place: st.read_in_place,
            device: StreamDevice::Cpu,
        }
    }
}

/// What `bench stream` measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Bytes per round.
    pub bytes: u64,
    /// Reader used by the pipeline ("IoUring" or "Pread").
    pub pipeline_reader: String,
    /// True when every pipeline byte came through O_DIRECT (no page cache).
    pub direct_only: bool,
    /// Floor throughput, GB/s (sequential O_DIRECT pread).
    pub floor_gbps: f64,
    /// The pipeline's reader alone, GB/s: every chunk streamed through one read session into a
    /// ring of registered buffers, nothing verified or copied.
    pub reader_gbps: f64,
    /// reader / floor.
    pub reader_ratio: f64,
    /// CRC-32 rate on one core over bytes in memory, GB/s.
    pub checksum_gbps: f64,
    /// Host memory copy rate on one core (the copy a staged host load would do), GB/s.
    pub copy_gbps: f64,
    /// True when the pipeline read into pool memory in place (no staging copy).
    pub in_place: bool,
    /// Pipeline throughput, GB/s (reader + verify + copy into the pool's memory).
    pub pipeline_gbps: f64,
    /// pipeline / floor.
    pub ratio: f64,
    /// Pool counters over all rounds.
    pub pool: PoolStats,
    /// Where the pool kept the bytes ("host", or "cuda:N name").
    pub device: String,
    /// The host-to-device figures, on CUDA.
    pub cuda: Option<CudaStreamReport>,
}

/// The CUDA part of a [`Report`].
#[derive(Debug, serde::Serialize)]
pub struct CudaStreamReport {
    /// Bytes of the host window the copy rates cycle over (the start of the first file).
    pub window: u64,
    /// Host-to-device rates of one round's bytes.
    pub h2d: H2dRates,
    /// pinned / pageable host-to-device rate.
    pub pinned_over_pageable: f64,
    /// pipeline / pinned host-to-device rate.
    pub pipeline_over_pinned: f64,
}

/// Layers of the benchmarked files: file `i` cut into `layer` byte pieces.
pub(crate) struct FileLayers {
    /// The pieces, file after file.
    pub(crate) layers: Vec<(PoolKey, Layer)>,
}

impl LayerSource for FileLayers {
    fn layer(&self, key: &PoolKey) -> Result<Layer> {
        self.layers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, l)| l.clone())
            .ok_or_else(|| Error::invalid(format!("unknown layer {key}")))
    }
}

/// Runs the benchmark: the floor (plain sequential O_DIRECT preads of the files), the
/// pipeline's reader alone, then the full pipeline (reader + staging + pool into host memory).
pub fn bench_stream(args: &StreamBenchOptions) -> Result<Report> {
    let engine = match args.device {
        StreamDevice::Cpu => None,
        StreamDevice::Cuda(n) => Some(CopyEngine::open(n)?),
    };
    let files = collect_files(args)?;
    let sizes = files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| Error::io(p, e))
        })
        .collect::<Result<Vec<u64>>>()?;
    let bytes: u64 = sizes.iter().sum();
    if bytes == 0 {
        return Err(Error::invalid("the files to benchmark are all empty"));
    }
    let chunk = args.chunk_kib * 1024;
    let layer_bytes = args.layer_mib.max(1) << 20;
    let source = Arc::new(cut_layers(&files, &sizes, layer_bytes));
    let max_layer = source
        .layers
        .iter()
        .map(|(_, l)| l.total_len())
        .max()
        .unwrap_or(0);

    let reader: Arc<dyn BlockReader> = if args.pread {
        Arc::new(PreadReader::new(true, args.io_kib * 1024)?)
    } else {
        open_reader(&ReaderConfig {
            io_uring: true,
            direct: true,
            queue_depth: args.queue_depth,
            io_size: args.io_kib * 1024,
        })?
    };
    let floor_reader = PreadReader::new(true, chunk)?;
    let (staging, device): (Arc<dyn StagingAlloc>, Arc<dyn DeviceAlloc>) = match &engine {
        None => (
            Arc::new(HostStagingAlloc),
            Arc::new(HostDeviceAlloc::default()),
        ),
        Some(e) => (Arc::new(e.staging_alloc()), Arc::new(e.device_alloc())),
    };
    let pipeline = StagingPipeline::new(
        reader.clone(),
        staging,
        StagingConfig {
            chunk_size: chunk,
            ring: args.ring,
            read_in_place: args.in_place,
        },
    )?;
    // Every layer gets its checksum, so the pipeline verifies as a real load does.
    let mut layer_buf = AlignedBuf::zeroed(max_layer as usize)?;
    let mut source =
        Arc::try_unwrap(source).map_err(|_| Error::Internal("layer list still shared".into()))?;
    for (_, l) in source.layers.iter_mut() {
        let e = &mut l.extents[0];
        let dst = &mut layer_buf[..e.len as usize];
        read_range(&floor_reader, &e.path, e.offset, dst)?;
        e.crc32 = Some(crc32fast::hash(dst));
    }
    let source = Arc::new(source);
    let (checksum_gbps, copy_gbps) = memory_rates(&layer_buf)?;
    drop(layer_buf);
    let pool = Pool::new(
        PoolConfig {
            device_budget: 2 * max_layer.max(1),
            host_budget: 0,
        },
        pipeline,
        source.clone(),
        device,
    )?;

    let (mut floor_s, mut reader_s, mut pipe_s) = (0.0, 0.0, 0.0);
    for _ in 0..args.repeat.max(1) {
        floor_s += floor_pass(&floor_reader, &files, &sizes, chunk)?;
        reader_s += reader_pass(&reader, &source, chunk, args.ring)?;
        // As a streamed model does: the next layer is prefetched while this one is acquired.
        let t = Instant::now();
        for (i, (k, _)) in source.layers.iter().enumerate() {
            if let Some((next, _)) = source.layers.get(i + 1) {
                drop(pool.prefetch(next));
            }
            drop(pool.acquire(k)?);
        }
        pipe_s += t.elapsed().as_secs_f64();
    }
    let rounds = u64::from(args.repeat.max(1));
    let floor_gbps = gbps(bytes * rounds, floor_s);
    let reader_gbps = gbps(bytes * rounds, reader_s);
    let pipeline_gbps = gbps(bytes * rounds, pipe_s);
    let counters = reader.counters();
    let pool_stats = pool.stats();
    let cuda = match &engine {
        Some(e) => {
            let window = max_layer.min(MAX_H2D_WINDOW);
            let mut host = AlignedBuf::zeroed(window as usize)?;
            let first = &source.layers[0].1.extents[0];
            let n = (first.len.min(window)) as usize;
            read_range(&floor_reader, &first.path, first.offset, &mut host[..n])?;
            host.set_len(n)?;
            let h2d = h2d_rates(e, &host, bytes, chunk)?;
            Some(CudaStreamReport {
                window: n as u64,
                h2d,
                pinned_over_pageable: h2d.pinned_speedup(),
                pipeline_over_pinned: ratio(pipeline_gbps, h2d.pinned_gbps),
            })
        }
        None => None,
    };
    let report = Report {
        files: files.len(),
        bytes,
        pipeline_reader: format!("{:?}", reader.kind()),
        direct_only: counters.buffered_bytes == 0 && floor_reader.counters().buffered_bytes == 0,
        floor_gbps,
        reader_gbps,
        reader_ratio: ratio(reader_gbps, floor_gbps),
        checksum_gbps,
        copy_gbps,
        in_place: args.in_place && engine.is_none(),
        pipeline_gbps,
        ratio: ratio(pipeline_gbps, floor_gbps),
        pool: pool_stats,
        device: engine
            .as_ref()
            .map_or_else(|| "host".to_string(), |e| e.name().to_string()),
        cuda,
    };
    Ok(report)
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The files named by `--file` and the regular files of `--variants`, sorted.
fn collect_files(args: &StreamBenchOptions) -> Result<Vec<PathBuf>> {
    let mut files = args.files.clone();
    if let Some(dir) = &args.variants {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if ft.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::invalid(
            "bench stream needs --variants DIR (with regular files) or --file PATH",
        ));
    }
    Ok(files)
}

/// Cuts each file into layers of at most `layer_bytes` bytes; key = (file name, index).
pub(crate) fn cut_layers(files: &[PathBuf], sizes: &[u64], layer_bytes: u64) -> FileLayers {
    let mut layers = Vec::new();
    for (i, (p, &size)) in files.iter().zip(sizes).enumerate() {
        let name = format!(
            "{i}:{}",
            p.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let mut off = 0u64;
        let mut idx = 0u32;
        while off < size {
            let len = layer_bytes.min(size - off);
            layers.push((
                PoolKey::new(name.clone(), idx),
                Layer::new(vec![Extent::new(p, off, len)]),
            ));
            off += len;
            idx += 1;
        }
    }
    FileLayers { layers }
}

/// The floor: every file read front to back with `chunk`-byte O_DIRECT preads into one
/// aligned buffer. Returns seconds.
fn floor_pass(reader: &PreadReader, files: &[PathBuf], sizes: &[u64], chunk: usize) -> Result<f64> {
    let mut buf = AlignedBuf::zeroed(chunk)?;
    let t = Instant::now();
    for (p, &size) in files.iter().zip(sizes) {
        let mut off = 0u64;
        while off < size {
            let len = (chunk as u64).min(size - off) as usize;
            read_range(reader, p, off, &mut buf[..len])?;
            off += len as u64;
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The pipeline's reader alone: every layer's `chunk`-byte pieces streamed through one read
/// session into a ring of `ring` buffers offered as registered destinations; nothing verified
/// or copied. Returns seconds.
fn reader_pass(
    reader: &Arc<dyn BlockReader>,
    source: &FileLayers,
    chunk: usize,
    ring: usize,
) -> Result<f64> {
    let ring = ring.max(1);
    let mut bufs = (0..ring)
        .map(|_| AlignedBuf::zeroed(chunk))
        .collect::<Result<Vec<_>>>()?;
    for b in bufs.iter_mut() {
        // SAFETY: every buffer is withdrawn below, before `bufs` is dropped.
        unsafe { reader.register_buffer(b.as_mut_ptr(), b.len()) };
    }
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let res = stream_pieces(reader.as_ref(), source, chunk, &ptrs);
    for &p in &ptrs {
        reader.forget_buffer(p);
    }
    drop(bufs);
    res
}

/// Streams every piece of `source` through one session, each into a free buffer of `bufs`
/// (each `chunk` bytes long and unused elsewhere while this runs). Returns seconds.
fn stream_pieces(
    reader: &dyn BlockReader,
    source: &FileLayers,
    chunk: usize,
    bufs: &[*mut u8],
) -> Result<f64> {
    let mut pieces = source.layers.iter().flat_map(|(_, l)| {
        l.extents.iter().flat_map(move |e| {
            (0..e.len.div_ceil(chunk as u64)).map(move |i| {
                let off = i * chunk as u64;
                (
                    &e.path,
                    e.offset + off,
                    (e.len - off).min(chunk as u64) as usize,
                )
            })
        })
    });
    let t = Instant::now();
    let mut free: Vec<usize> = (0..bufs.len()).collect();
    let mut inflight: HashMap<u64, (usize, usize, &PathBuf, u64)> = HashMap::new();
    let mut session = reader.session();
    let mut id = 0u64;
    loop {
        while !free.is_empty() {
            let Some((path, off, len)) = pieces.next() else {
                break;
            };
            let Some(b) = free.pop() else { break };
            // SAFETY: buffer `b` is `chunk >= len` bytes and not reused before its read
            // returns; the session is dropped (waiting for reads) before this returns.
            unsafe { session.submit(id, path, off, bufs[b], len) }?;
            inflight.insert(id, (b, len, path, off));
            id += 1;
        }
        if session.pending() == 0 {
            break;
        }
        for (done, res) in session.wait()? {
            let (b, len, path, off) = inflight
                .remove(&done)
                .ok_or_else(|| Error::Internal(format!("read {done} completed twice")))?;
            let n = res?;
            if n != len {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "file ends at offset {}: wanted {len} bytes at offset {off}",
                        off + n as u64
                    ),
                ));
            }
            free.push(b);
        }
    }
    drop(session);
    Ok(t.elapsed().as_secs_f64())
}

/// CRC-32 rate and host copy rate (one core, best of three) over `data`, GB/s.
fn memory_rates(data: &[u8]) -> Result<(f64, f64)> {
    let mut dst = AlignedBuf::zeroed(data.len())?;
    // Touch every page first, so the copy is timed, not the page faults.
    dst.fill(1);
    let (mut crc_s, mut copy_s) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(crc32fast::hash(std::hint::black_box(data)));
        crc_s = crc_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(data));
        std::hint::black_box(&dst);
        copy_s = copy_s.min(t.elapsed().as_secs_f64());
    }
    let n = data.len() as u64;
    Ok((gbps(n, crc_s), gbps(n, copy_s)))
}

fn read_range(reader: &dyn BlockReader, path: &Path, off: u64, dst: &mut [u8]) -> Result<()> {
    read_fully(reader, &mut [ReadReq::new(path, off, dst)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcompress::model::llama2c;
    use agentcompress::pipeline::{build_variants, BuildOptions};
    use agentcompress::quant::QuantConfig;

    /// stories260K quantized into a temporary variant directory.
    fn variants() -> Option<(tempfile::TempDir, PathBuf)> {
        let root = crate::harness::test_models::stories260k_dir()?;
        let dense = llama2c::load(&root.join("stories260K.bin")).unwrap();
        let tok = std::fs::read(root.join("tok512.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("variants");
        let opts = BuildOptions {
            quant: QuantConfig::default(),
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
        Some((dir, out))
    }

    #[test]
    fn bench_stream_runs_on_a_variant_directory() {
        let Some((_tmp, dir)) = variants() else {
            return;
        };
        let dir = dir.as_path();
        let on_disk: u64 = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let opts = StreamBenchOptions {
            variants: Some(dir.to_path_buf()),
            chunk_kib: 64,
            ring: 4,
            layer_mib: 1,
            repeat: 1,
            ..Default::default()
        };
        let r = bench_stream(&opts).unwrap();
        assert_eq!(r.files, 5, "four variants and the manifest");
        assert_eq!(r.bytes, on_disk);
        // Every byte is read exactly once: a prefetch never evicts the layer prefetched for the
        // next step before its use, and a prefetch of a layer already used is dropped.
        assert_eq!(r.pool.bytes_read, on_disk, "{:?}", r.pool);
        assert!(r.floor_gbps > 0.0 && r.pipeline_gbps > 0.0 && r.ratio > 0.0);
    }
}
