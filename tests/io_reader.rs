//! The readers and the staging pipeline on real files (under `target/`, disk-backed):
//! io_uring and pread give byte-identical data, tails and unaligned ranges work, truncated
//! files and checksum mismatches are typed errors naming the file.

mod io_support;

use agentcompress::io::{
    read_fully, AlignedBuf, BlockReader, Extent, HostStagingAlloc, Layer, PreadReader, ReadReq,
    ReaderKind, StagingConfig, StagingPipeline, UringConfig, UringReader,
};
use agentcompress::Error;
use io_support::{data_dir, write_file};
use std::path::Path;
use std::sync::Arc;

/// The io_uring reader, or `None` with the kernel's reason printed.
fn uring(queue_depth: u32, io_size: usize) -> Option<UringReader> {
    match UringReader::new(UringConfig {
        queue_depth,
        io_size,
        direct: true,
    }) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("SKIP io_uring part: kernel refuses io_uring: {e}");
            None
        }
    }
}

/// Reads `(path, offset, len)` ranges with `reader` into aligned buffers.
fn read_ranges(reader: &dyn BlockReader, ranges: &[(&Path, u64, usize)]) -> Vec<Vec<u8>> {
    let mut bufs: Vec<AlignedBuf> = ranges
        .iter()
        .map(|&(_, _, len)| AlignedBuf::zeroed(len).unwrap())
        .collect();
    let mut reqs: Vec<ReadReq<'_>> = bufs
        .iter_mut()
        .zip(ranges)
        .map(|(b, &(p, off, _))| ReadReq::new(p, off, &mut b[..]))
        .collect();
    read_fully(reader, &mut reqs).unwrap();
    bufs.iter().map(|b| b.to_vec()).collect()
}

#[test]
fn uring_and_pread_are_byte_identical() {
    let dir = data_dir();
    let (a, abytes) = write_file(dir.path(), "a.bin", 3 * 1024 * 1024 + 4096 * 3 + 123, 1);
    let (b, bbytes) = write_file(dir.path(), "b.bin", 64 * 1024, 2);
    let ranges: Vec<(&Path, u64, usize)> = vec![
        (&a, 0, abytes.len()),       // whole file, unaligned tail
        (&a, 4096, 2 * 1024 * 1024), // aligned middle, several io pieces
        (&a, 4096 * 5 + 7, 10_000),  // unaligned start: buffered
        (&b, 0, bbytes.len()),       // second file
        (&b, 8192, 4096),            // one block
    ];
    let want: Vec<Vec<u8>> = ranges
        .iter()
        .map(|&(p, off, len)| {
            let src = if p == a.as_path() { &abytes } else { &bbytes };
            src[off as usize..off as usize + len].to_vec()
        })
        .collect();

    let pread = PreadReader::new(false, 1 << 20).unwrap();
    assert_eq!(read_ranges(&pread, &ranges), want, "pread buffered");
    let pread_direct = PreadReader::new(true, 1 << 20).unwrap();
    assert_eq!(read_ranges(&pread_direct, &ranges), want, "pread O_DIRECT");
    let c = pread_direct.counters();
    eprintln!("pread O_DIRECT reader: {c:?}");

    let Some(u) = uring(32, 1 << 20) else { return };
    assert_eq!(u.kind(), ReaderKind::IoUring);
    assert_eq!(read_ranges(&u, &ranges), want, "io_uring");
    let c = u.counters();
    eprintln!("io_uring reader ran: {c:?}");
    assert!(c.buffered_bytes > 0, "unaligned pieces go buffered");
    // A queue smaller than the pieces forces refills of the ring.
    let small = uring(2, 4096).expect("io_uring worked above");
    assert_eq!(
        read_ranges(&small, &ranges),
        want,
        "io_uring, queue depth 2"
    );
}

#[test]
fn truncated_file_is_a_corrupt_error_naming_it() {
    let dir = data_dir();
    let (p, bytes) = write_file(dir.path(), "short.bin", 10_000, 3);
    let mut readers: Vec<Box<dyn BlockReader>> =
        vec![Box::new(PreadReader::new(true, 4096).unwrap())];
    if let Some(u) = uring(32, 1 << 20) {
        readers.push(Box::new(u));
    }
    for r in &readers {
        let mut buf = AlignedBuf::zeroed(16_384).unwrap();
        let mut reqs = [ReadReq::new(&p, 0, &mut buf[..])];
        let err = read_fully(r.as_ref(), &mut reqs).unwrap_err();
        match &err {
            Error::Corrupt { path, msg } => {
                assert_eq!(path, &p);
                assert!(msg.contains("10000"), "{msg}");
            }
            other => panic!("{:?}: expected Corrupt, got {other}", r.kind()),
        }
        assert_eq!(reqs[0].filled, 10_000, "{:?}", r.kind());
        assert_eq!(&buf[..10_000], &bytes[..]);
    }
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = data_dir();
    let p = dir.path().join("nope.bin");
    let r = PreadReader::new(false, 4096).unwrap();
    let mut buf = AlignedBuf::zeroed(4096).unwrap();
    let err = read_fully(&r, &mut [ReadReq::new(&p, 0, &mut buf[..])]).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &p),
        "{err}"
    );
}

#[test]
fn staging_pipeline_places_extents_and_checks_crcs() {
    let dir = data_dir();
    let (a, abytes) = write_file(dir.path(), "a.bin", 9 * 4096 * 64 + 100, 4);
    let (b, bbytes) = write_file(dir.path(), "b.bin", 3 * 4096, 5);
    let e1 = (4096u64, 5 * 4096 * 64 + 77usize);
    let layer = Layer::new(vec![
        Extent::new(&a, e1.0, e1.1 as u64).with_crc32(crc32fast::hash(&abytes[4096..4096 + e1.1])),
        Extent::new(&b, 0, bbytes.len() as u64).with_crc32(crc32fast::hash(&bbytes)),
        Extent::new(&a, 0, 0),
        Extent::new(&a, 100, 5000),
    ]);
    let mut want = abytes[4096..4096 + e1.1].to_vec();
    want.extend_from_slice(&bbytes);
    want.extend_from_slice(&abytes[100..5100]);

    let mut readers: Vec<Arc<dyn BlockReader>> =
        vec![Arc::new(PreadReader::new(false, 1 << 20).unwrap())];
    if let Some(u) = uring(32, 1 << 20) {
        readers.push(Arc::new(u));
    }
    for r in readers {
        let kind = r.kind();
        let cfg = StagingConfig {
            chunk_size: 64 * 1024,
            ring: 3,
        };
        let p = StagingPipeline::new(r, Arc::new(HostStagingAlloc), cfg).unwrap();
        for _ in 0..2 {
            let mut sink = vec![0u8; want.len()];
            let st = p.load(&layer, &mut sink).unwrap();
            assert_eq!(st.bytes, want.len() as u64);
            assert!(sink == want, "{kind:?}: staged bytes differ");
        }
        // A wrong checksum is a Corrupt error naming the file.
        let mut bad = layer.clone();
        bad.extents[1].crc32 = Some(crc32fast::hash(&bbytes) ^ 1);
        let mut sink = vec![0u8; want.len()];
        let err = p.load(&bad, &mut sink).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, msg } if path == &b && msg.contains("crc32")),
            "{kind:?}: {err}"
        );
        // A sink too small is an error, not a panic.
        let mut small = vec![0u8; 10];
        assert!(p.load(&layer, &mut small).is_err());
    }
}

#[test]
fn bad_configs_are_rejected() {
    assert!(matches!(
        PreadReader::new(false, 1000),
        Err(Error::InvalidArgument(_))
    ));
    let r: Arc<dyn BlockReader> = Arc::new(PreadReader::new(false, 4096).unwrap());
    let bad_chunk = StagingConfig {
        chunk_size: 5000,
        ring: 4,
    };
    assert!(StagingPipeline::new(r.clone(), Arc::new(HostStagingAlloc), bad_chunk).is_err());
    let bad_ring = StagingConfig {
        chunk_size: 4096,
        ring: 1,
    };
    assert!(StagingPipeline::new(r, Arc::new(HostStagingAlloc), bad_ring).is_err());
    assert!(UringReader::new(UringConfig {
        queue_depth: 0,
        ..Default::default()
    })
    .is_err());
}

/// A reader that fills each byte with a function of its file offset and takes `delay` per
/// batch, standing in for a disk.
struct SlowPatternReader {
    delay: std::time::Duration,
}

impl BlockReader for SlowPatternReader {
    fn read_batch(&self, reqs: &mut [ReadReq<'_>]) -> agentcompress::Result<()> {
        std::thread::sleep(self.delay);
        for r in reqs.iter_mut() {
            for (i, b) in r.buf[r.filled..].iter_mut().enumerate() {
                *b = ((r.offset + (r.filled + i) as u64) % 251) as u8;
            }
            r.filled = r.buf.len();
        }
        Ok(())
    }
    fn kind(&self) -> ReaderKind {
        ReaderKind::Pread
    }
}

/// A sink that takes `delay` per copy, standing in for a host-to-device copy.
struct SlowSink {
    data: Vec<u8>,
    delay: std::time::Duration,
}

impl agentcompress::io::Sink for SlowSink {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> agentcompress::Result<()> {
        std::thread::sleep(self.delay);
        self.data.copy_in(offset, data)
    }
}

#[test]
fn staging_overlaps_reading_with_copying() {
    let ms = std::time::Duration::from_millis;
    let reader = Arc::new(SlowPatternReader { delay: ms(20) });
    let cfg = StagingConfig {
        chunk_size: 4096,
        ring: 4,
    };
    let p = StagingPipeline::new(reader, Arc::new(HostStagingAlloc), cfg).unwrap();
    let layer = Layer::new(vec![Extent::new("/fake/weights", 8192, 16 * 4096)]);
    let mut sink = SlowSink {
        data: vec![0; 16 * 4096],
        delay: ms(10),
    };
    let st = p.load(&layer, &mut sink).unwrap();
    let want: Vec<u8> = (0..16 * 4096u64)
        .map(|i| ((8192 + i) % 251) as u8)
        .collect();
    assert!(sink.data == want);
    // 8 batches of 2 chunks (20 ms each) and 16 copies (10 ms each): about 320 ms if run one
    // after the other, about 180 ms when the stages overlap.
    eprintln!("overlap: {st:?}");
    assert!(
        st.wall_s < 0.8 * (st.disk_s + st.copy_s),
        "stages did not overlap: {st:?}"
    );
}
