//! `agentcompress bench stream`: how close the weight-streaming pipeline (reader + checksum +
//! pool into host memory) comes to the raw disk floor (plain large sequential O_DIRECT reads of
//! the same files, measured in the same run), with the reader alone, the checksum rate and the
//! copy rate beside it. Goals: reader / floor >= 0.97, pipeline / floor >= 0.92.
//!
//! O_DIRECT bypasses the page cache, so repeated runs measure the disk. Where the file system
//! refuses O_DIRECT (or io_uring is unavailable and the buffered fallback runs) the report says
//! so: the page cache may then inflate both numbers.
//!
//! `--device cuda` stages through pinned memory into a pool of device memory and also times
//! host-to-device copies of the same bytes from pageable and from pinned memory.

use crate::harness::stream_bench::{bench_stream, Report, StreamBenchOptions, StreamDevice};
use agentcompress::api::Device;
use agentcompress::{Error, Result};
use std::path::PathBuf;

/// Options of `bench stream`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory of variant files; every regular file in it is read.
    #[arg(long)]
    pub variants: Option<PathBuf>,
    /// A file to read (repeatable); combines with --variants.
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
    /// io_uring queue depth (default: the library's).
    #[arg(long, default_value_t = StreamBenchOptions::default().queue_depth, value_parser = crate::numeric::count_u32, allow_negative_numbers = true)]
    pub queue_depth: u32,
    /// Bytes per submitted read, in KiB (multiple of 4; default: the library's).
    #[arg(long, default_value_t = StreamBenchOptions::default().io_kib, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub io_kib: usize,
    /// Staging buffer size in KiB (multiple of 4); also the floor's read size.
    #[arg(long, default_value_t = StreamBenchOptions::default().chunk_kib, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub chunk_kib: usize,
    /// Staging buffers in the ring (also the chunks in flight).
    #[arg(long, default_value_t = StreamBenchOptions::default().ring, value_parser = crate::numeric::count, allow_negative_numbers = true)]
    pub ring: usize,
    /// Pool entry (layer) size in MiB: each file is cut into layers of this size.
    #[arg(long, default_value_t = 64, value_parser = crate::numeric::count_u64, allow_negative_numbers = true)]
    pub layer_mib: u64,
    /// Rounds of (floor, pipeline); the reported figures sum all rounds.
    #[arg(long, default_value_t = 2, value_parser = crate::numeric::count_u32, allow_negative_numbers = true)]
    pub repeat: u32,
    /// Use the pread fallback instead of io_uring in the pipeline.
    #[arg(long)]
    pub pread: bool,
    /// Read into host pool memory in place (no staging copy); the default reads through the
    /// staging ring and copies.
    #[arg(long)]
    pub in_place: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the pool keeps the bytes: cpu (host memory), cuda or cuda:N (device memory,
    /// pinned staging, plus pageable / pinned host-to-device rates).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl Args {
    /// The library's options for these flags.
    fn options(&self) -> Result<StreamBenchOptions> {
        let device = match self.device.parse::<Device>()? {
            Device::Cpu => StreamDevice::Cpu,
            Device::Cuda(n) => StreamDevice::Cuda(n),
            Device::Auto => {
                return Err(Error::invalid(
                    "bench stream --device takes cpu, cuda or cuda:N (not auto)",
                ))
            }
        };
        Ok(StreamBenchOptions {
            variants: self.variants.clone(),
            files: self.files.clone(),
            queue_depth: self.queue_depth,
            io_kib: self.io_kib,
            chunk_kib: self.chunk_kib,
            ring: self.ring,
            layer_mib: self.layer_mib,
            repeat: self.repeat,
            pread: self.pread,
            in_place: self.in_place,
            device,
        })
    }
}

/// Runs the benchmark and prints the report.
pub fn run(args: Args) -> Result<()> {
    let report = bench_stream(&args.options()?).map_err(|e| match e {
        Error::NoDevice(why) => Error::NoDevice(format!(
            "bench stream --device {} needs a CUDA GPU: {why}",
            args.device
        )),
        e => e,
    })?;
    print_report(&args, &report)
}

fn print_report(args: &Args, r: &Report) -> Result<()> {
    if args.json {
        let s = serde_json::to_string_pretty(r)
            .map_err(|e| Error::Internal(format!("report to JSON: {e}")))?;
        println!("{s}");
        return Ok(());
    }
    println!(
        "bench stream: {} files, {:.1} MiB per round, {} round(s)",
        r.files,
        r.bytes as f64 / (1024.0 * 1024.0),
        args.repeat.max(1)
    );
    println!(
        "pipeline: {} reader, queue depth {}, {} KiB reads, staging {} x {} KiB, layers of {} MiB",
        r.pipeline_reader, args.queue_depth, args.io_kib, args.ring, args.chunk_kib, args.layer_mib
    );
    println!(
        "floor    (sequential O_DIRECT pread, {} KiB reads):       {:>7.3} GB/s",
        args.chunk_kib, r.floor_gbps
    );
    println!(
        "reader   (one session, {} chunks in flight, no verify/copy): {:>7.3} GB/s",
        args.ring, r.reader_gbps
    );
    println!(
        "checksum (crc32, one core, in memory):                 {:>7.3} GB/s; pipeline's verify stage {:.3} GB/s",
        r.checksum_gbps, r.pool.verify_gbps
    );
    let copy_stage = if r.in_place {
        format!(
            "none: reads land in pool memory (its pages prepared at {:.3} GB/s)",
            r.pool.copy_gbps
        )
    } else {
        format!("{:.3} GB/s", r.pool.copy_gbps)
    };
    println!(
        "copy     (host memcpy, one core, in memory):           {:>7.3} GB/s; pipeline's copy stage {copy_stage}",
        r.copy_gbps
    );
    match &r.cuda {
        None => println!(
            "pipeline (reader + staging + pool -> host memory):     {:>7.3} GB/s (verified, next layer prefetched)",
            r.pipeline_gbps
        ),
        Some(c) => {
            println!(
                "device: {} (pool in device memory, staging ring pinned)",
                r.device
            );
            let w = format!(
                "{} KiB pieces of a {:.0} MiB window",
                args.chunk_kib,
                c.window as f64 / (1024.0 * 1024.0)
            );
            println!(
                "h2d pageable ({w}):             {:>7.3} GB/s",
                c.h2d.pageable_gbps
            );
            println!(
                "h2d pinned   ({w}):             {:>7.3} GB/s",
                c.h2d.pinned_gbps
            );
            println!(
                "h2d bounced  (pageable via 2 pinned bounce buffers): {:>7.3} GB/s",
                c.h2d.bounced_gbps
            );
            println!(
                "pipeline (disk -> pinned staging -> device memory): {:>7.3} GB/s",
                r.pipeline_gbps
            );
            println!("ratio pinned / pageable h2d: {:.2}", c.pinned_over_pageable);
            println!("ratio pipeline / pinned h2d: {:.3}", c.pipeline_over_pinned);
        }
    }
    println!(
        "ratio reader / floor:   {:.3} (goal >= 0.97)",
        r.reader_ratio
    );
    println!("ratio pipeline / floor: {:.3} (goal >= 0.92)", r.ratio);
    if !r.direct_only {
        println!(
            "note: some bytes were read buffered (no O_DIRECT here): the page cache may inflate \
             these numbers"
        );
    }
    println!("\n{}", r.pool);
    Ok(())
}
