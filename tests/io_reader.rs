//! The readers and the staging pipeline on real files (under `target/`, disk-backed):
//! io_uring and pread give byte-identical data, tails and unaligned ranges work, truncated
//! files and checksum mismatches are typed errors naming the file.

mod io_support;

use agentcompress::io::{
    read_fully, AlignedBuf, BlockReader, Extent, HostStagingAlloc, Layer, PreadReader, ReadReq,
    ReaderKind, StagingAlloc, StagingBuffer, StagingConfig, StagingPipeline, UringConfig,
    UringReader,
};
use agentcompress::Error;
use io_support::{data_dir, write_file};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
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
            read_in_place: false,
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
        read_in_place: false,
    };
    assert!(StagingPipeline::new(r.clone(), Arc::new(HostStagingAlloc), bad_chunk).is_err());
    let bad_ring = StagingConfig {
        chunk_size: 4096,
        ring: 1,
        read_in_place: false,
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
        read_in_place: false,
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

/// A sink that hides its host memory, so loads go through the staging ring and copy.
struct OpaqueSink(Vec<u8>);

impl agentcompress::io::Sink for OpaqueSink {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> agentcompress::Result<()> {
        self.0.copy_in(offset, data)
    }
}

#[test]
fn uring_session_streams_reads_into_registered_and_plain_buffers() {
    let Some(u) = uring(16, 64 * 1024) else {
        return;
    };
    let (files, bufs_registered) = u.registered_tables();
    eprintln!("registered files: {files}, registered buffers: {bufs_registered}");
    let dir = data_dir();
    let (a, abytes) = write_file(dir.path(), "a.bin", 40 * 4096 + 300, 11);
    let (b, bbytes) = write_file(dir.path(), "b.bin", 9 * 4096, 12);
    // Two registered buffers and one plain one; pieces of both files, several in flight.
    let mut bufs: Vec<AlignedBuf> = (0..3)
        .map(|_| AlignedBuf::zeroed(128 * 1024).unwrap())
        .collect();
    let registered: Vec<bool> = bufs[..2]
        .iter_mut()
        .map(|x| unsafe { u.register_buffer(x.as_mut_ptr(), x.len()) })
        .collect();
    assert_eq!(registered, vec![bufs_registered; 2]);
    let pieces: Vec<(&Path, &[u8], u64, usize)> = vec![
        (&a, &abytes, 0, 64 * 1024),
        (&b, &bbytes, 4096, 8 * 4096),
        (&a, &abytes, 16 * 4096, 24 * 4096 + 300), // aligned start, unaligned tail
        (&a, &abytes, 7, 5000),                    // unaligned start
        (&b, &bbytes, 0, 9 * 4096),
    ];
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|x| x.as_mut_ptr()).collect();
    let mut got = vec![Vec::new(); pieces.len()];
    {
        let mut s = u.session();
        let mut free: Vec<usize> = vec![0, 1, 2];
        let mut owner = std::collections::HashMap::new();
        let mut next = 0;
        while next < pieces.len() || s.pending() > 0 {
            while next < pieces.len() {
                let Some(bi) = free.pop() else { break };
                let (p, _, off, len) = pieces[next];
                unsafe { s.submit(next as u64, p, off, ptrs[bi], len) }.unwrap();
                owner.insert(next as u64, bi);
                next += 1;
            }
            for (id, res) in s.wait().unwrap() {
                let bi = owner.remove(&id).unwrap();
                let n = res.unwrap();
                assert_eq!(n, pieces[id as usize].3, "read {id} complete");
                got[id as usize] = bufs[bi][..n].to_vec();
                free.push(bi);
            }
        }
    }
    for (i, (_, bytes, off, len)) in pieces.iter().enumerate() {
        let want = &bytes[*off as usize..*off as usize + len];
        assert!(got[i] == want, "piece {i} differs");
    }
    // A read past the end of the file completes short, not with made-up bytes.
    {
        let mut s = u.session();
        unsafe { s.submit(9, &b, 8 * 4096, ptrs[0], 3 * 4096) }.unwrap();
        let done = s.wait().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 9);
        assert_eq!(*done[0].1.as_ref().unwrap(), 4096, "file ends one block in");
    }
    for p in &ptrs[..2] {
        u.forget_buffer(*p);
    }
    assert!(u.counters().direct_bytes > 0, "O_DIRECT was used");
    let (fixed_files, fixed_bufs) = u.fixed_reads();
    assert_eq!(
        fixed_files > 0,
        files,
        "registered files used when available"
    );
    assert_eq!(
        fixed_bufs > 0,
        bufs_registered,
        "registered buffers used when available"
    );
}

/// Host staging buffers, counted.
#[derive(Default)]
struct CountingStaging {
    count: AtomicUsize,
}

impl StagingAlloc for CountingStaging {
    fn alloc(&self, len: usize) -> agentcompress::Result<Box<dyn StagingBuffer>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        HostStagingAlloc.alloc(len)
    }
}

#[test]
fn in_place_and_staged_loads_give_the_same_bytes_and_name_a_corrupt_extent() {
    let dir = data_dir();
    let (a, abytes) = write_file(dir.path(), "a.bin", 64 * 4096, 21);
    let (b, bbytes) = write_file(dir.path(), "b.bin", 20 * 4096, 22);
    let layer = Layer::new(vec![
        Extent::new(&a, 4096, 40 * 4096).with_crc32(crc32fast::hash(&abytes[4096..41 * 4096])),
        Extent::new(&b, 0, 20 * 4096).with_crc32(crc32fast::hash(&bbytes)),
    ]);
    let mut want = abytes[4096..41 * 4096].to_vec();
    want.extend_from_slice(&bbytes);
    let mut readers: Vec<Arc<dyn BlockReader>> =
        vec![Arc::new(PreadReader::new(true, 1 << 20).unwrap())];
    if let Some(u) = uring(32, 16 * 4096) {
        readers.push(Arc::new(u));
    }
    for (r, read_in_place) in readers
        .into_iter()
        .flat_map(|r| [(r.clone(), true), (r, false)])
    {
        let kind = r.kind();
        let cfg = StagingConfig {
            chunk_size: 8 * 4096,
            ring: 4,
            read_in_place,
        };
        let staging = Arc::new(CountingStaging::default());
        let p = StagingPipeline::new(r, staging.clone(), cfg).unwrap();
        // An aligned host buffer: filled by the reads themselves when reading in place (no
        // staging buffer taken), else through the staging ring.
        let mut host = AlignedBuf::zeroed(want.len()).unwrap();
        let st = p.load(&layer, &mut host).unwrap();
        assert!(
            host[..] == want[..],
            "{kind:?} in place {read_in_place}: bytes differ"
        );
        assert!(st.verify_s > 0.0, "{kind:?}: checksums were computed");
        assert_eq!(
            staging.count.load(Ordering::Relaxed) == 0,
            read_in_place,
            "{kind:?}: staging buffers taken only when not reading in place"
        );
        // Staged: the same bytes through the ring and the copy stage.
        let mut opaque = OpaqueSink(vec![0; want.len()]);
        let st = p.load(&layer, &mut opaque).unwrap();
        assert!(opaque.0 == want, "{kind:?}: staged bytes differ");
        assert!(st.copy_s > 0.0 && st.verify_s > 0.0, "{kind:?}: {st:?}");
        // A wrong checksum is caught on both paths and names the file.
        let mut bad = layer.clone();
        bad.extents[0].crc32 = bad.extents[0].crc32.map(|c| c ^ 4);
        let e1 = p.load(&bad, &mut host).unwrap_err();
        let e2 = p.load(&bad, &mut opaque).unwrap_err();
        for e in [e1, e2] {
            assert!(
                matches!(&e, Error::Corrupt { path, msg } if path == &a && msg.contains("crc32")),
                "{kind:?}: {e}"
            );
        }
        // A layer past the end of a file is a Corrupt error naming it, on both paths.
        let past = Layer::new(vec![Extent::new(&b, 16 * 4096, 8 * 4096)]);
        let mut host = AlignedBuf::zeroed(8 * 4096).unwrap();
        let mut opaque = OpaqueSink(vec![0; 8 * 4096]);
        let e1 = p.load(&past, &mut host).unwrap_err();
        let e2 = p.load(&past, &mut opaque).unwrap_err();
        for e in [e1, e2] {
            assert!(
                matches!(&e, Error::Corrupt { path, msg } if path == &b && msg.contains("file ends")),
                "{kind:?}: {e}"
            );
        }
    }
}

#[test]
fn a_byte_corrupted_on_disk_is_caught_in_place() {
    let dir = data_dir();
    let (a, mut abytes) = write_file(dir.path(), "w.bin", 32 * 4096, 31);
    let layer = Layer::new(vec![
        Extent::new(&a, 0, 32 * 4096).with_crc32(crc32fast::hash(&abytes))
    ]);
    abytes[17 * 4096 + 5] ^= 0x01;
    std::fs::write(&a, &abytes).unwrap();
    let reader: Arc<dyn BlockReader> = match uring(8, 4 * 4096) {
        Some(u) => Arc::new(u),
        None => Arc::new(PreadReader::new(true, 1 << 20).unwrap()),
    };
    let cfg = StagingConfig {
        chunk_size: 4 * 4096,
        ring: 2,
        read_in_place: false,
    };
    let p = StagingPipeline::new(reader, Arc::new(HostStagingAlloc), cfg).unwrap();
    let mut host = AlignedBuf::zeroed(32 * 4096).unwrap();
    let e = p.load(&layer, &mut host).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { path, msg } if path == &a && msg.contains("crc32")),
        "{e}"
    );
}
