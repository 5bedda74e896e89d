//! The pool end to end on real files: exact eviction order and hit rate over a replayed task
//! trace, the host tier, prefetch, budgets, fault injection through the reader (each fault
//! leaves the pool consistent and reports the error), and concurrent acquires (one load per
//! key, no deadlock).

mod io_support;

use agentcompress::io::{
    BlockReader, Extent, HostStagingAlloc, Layer, PreadReader, StagingConfig, StagingPipeline,
};
use agentcompress::pool::{HostDeviceAlloc, LayerSource, Pool, PoolConfig, PoolKey};
use agentcompress::{Error, Result};
use io_support::{data_dir, write_file, Fault, FaultyReader};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const LAYER: usize = 64 * 1024 + 4096;

/// Layers on disk: one file per key, with crc32s; knows the expected bytes.
struct Files {
    _dir: tempfile::TempDir,
    layers: HashMap<PoolKey, (Layer, Vec<u8>)>,
}

impl LayerSource for Files {
    fn layer(&self, key: &PoolKey) -> Result<Layer> {
        self.layers
            .get(key)
            .map(|l| l.0.clone())
            .ok_or_else(|| Error::invalid(format!("unknown layer {key}")))
    }
}

impl Files {
    /// One file per name in `names` (variant = name, layer 0), each two extents.
    fn new(names: &[&str]) -> Arc<Self> {
        let dir = data_dir();
        let mut layers = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            let (p, bytes) = write_file(dir.path(), n, LAYER, 100 + i as u64);
            let split = 4096 * 3;
            let layer = Layer::new(vec![
                Extent::new(&p, 0, split as u64).with_crc32(crc32fast::hash(&bytes[..split])),
                Extent::new(&p, split as u64, (LAYER - split) as u64)
                    .with_crc32(crc32fast::hash(&bytes[split..])),
            ]);
            layers.insert(key(n), (layer, bytes));
        }
        Arc::new(Files { _dir: dir, layers })
    }

    fn bytes(&self, n: &str) -> &[u8] {
        &self.layers[&key(n)].1
    }
}

fn key(n: &str) -> PoolKey {
    PoolKey::new(n, 0)
}

fn pool(files: &Arc<Files>, reader: Arc<dyn BlockReader>, dev: usize, host: usize) -> Pool {
    let cfg = StagingConfig {
        chunk_size: 16 * 1024,
        ring: 3,
        read_in_place: false,
    };
    let pipeline = StagingPipeline::new(reader, Arc::new(HostStagingAlloc), cfg).unwrap();
    Pool::new(
        PoolConfig {
            device_budget: (dev * LAYER) as u64,
            host_budget: (host * LAYER) as u64,
        },
        pipeline,
        files.clone(),
        Arc::new(HostDeviceAlloc::default()),
    )
    .unwrap()
}

fn pread() -> Arc<dyn BlockReader> {
    Arc::new(PreadReader::new(true, 1 << 20).unwrap())
}

#[test]
fn trace_replay_hit_rate_and_exact_evictions() {
    let files = Files::new(&["a", "b", "c", "d", "e"]);
    let p = pool(&files, pread(), 3, 0);
    let trace = ["e", "a", "e", "b", "e", "a", "c", "e", "d", "a", "b", "e"];
    let mut evicted = Vec::new();
    let mut before: BTreeSet<PoolKey> = BTreeSet::new();
    for k in trace {
        let g = p.acquire(&key(k)).unwrap();
        assert_eq!(g.bytes().unwrap(), files.bytes(k), "{k}");
        drop(g);
        let now: BTreeSet<PoolKey> = p.resident_keys().into_iter().collect();
        evicted.extend(before.difference(&now).map(|k| k.variant.clone()));
        before = now;
    }
    // Same trace as the policy's unit test, now through real loads.
    assert_eq!(evicted, vec!["b", "c", "d"]);
    let s = p.stats();
    assert_eq!((s.hits, s.misses, s.disk_loads, s.evictions), (6, 6, 6, 3));
    assert!((s.hit_rate() - 0.5).abs() < 1e-12);
    assert_eq!(s.bytes_read, 6 * LAYER as u64);
    assert_eq!(s.device_used, 3 * LAYER as u64);
}

#[test]
fn host_tier_serves_evicted_entries_and_prefetch_loads_ahead() {
    let files = Files::new(&["a", "b", "c"]);
    let p = pool(&files, pread(), 2, 1);
    drop(p.acquire(&key("a")).unwrap());
    drop(p.acquire(&key("b")).unwrap());
    drop(p.acquire(&key("b")).unwrap());
    drop(p.acquire(&key("c")).unwrap()); // evicts a (one use, oldest) into the host tier
    assert!(!p.is_resident(&key("a")) && p.in_host_tier(&key("a")));
    let g = p.acquire(&key("a")).unwrap(); // promoted, not read from disk
    assert_eq!(g.bytes().unwrap(), files.bytes("a"));
    drop(g);
    let s = p.stats();
    assert_eq!((s.disk_loads, s.host_hits, s.demotions), (3, 1, 2));
    assert_eq!(s.bytes_promoted, LAYER as u64);

    // Prefetch of an evicted entry brings it back without counting a miss.
    let gone = ["a", "b", "c"]
        .into_iter()
        .find(|k| !p.is_resident(&key(k)))
        .unwrap();
    let misses = p.stats().misses;
    p.prefetch(&key(gone)).wait().unwrap();
    assert!(p.is_resident(&key(gone)));
    assert_eq!(p.stats().misses, misses);
    assert_eq!(p.stats().prefetch_loads, 1);
    let hits = p.stats().hits;
    assert_eq!(
        p.acquire(&key(gone)).unwrap().bytes().unwrap(),
        files.bytes(gone)
    );
    assert_eq!(p.stats().hits, hits + 1);
    // Prefetch of something resident is a no-op; of an unknown key, an error.
    p.prefetch(&key(gone)).wait().unwrap();
    assert!(p.prefetch(&key("zz")).wait().is_err());
}

/// Prefetched entries not used yet are never evicted by another prefetch (it is skipped,
/// not an error); a demand load may evict them; once used they are ordinary entries.
#[test]
fn prefetch_keeps_unused_prefetched_entries_and_demand_may_take_them() {
    let files = Files::new(&["a", "b", "c"]);
    let p = pool(&files, pread(), 2, 0);
    p.prefetch(&key("a")).wait().unwrap();
    p.prefetch(&key("b")).wait().unwrap();
    p.prefetch(&key("c")).wait().unwrap();
    assert_eq!(p.resident_keys(), vec![key("a"), key("b")]);
    let s = p.stats();
    assert_eq!((s.prefetch_loads, s.prefetch_skips, s.evictions), (2, 1, 0));
    // The demand load of c takes the older of the two unused prefetches.
    drop(p.acquire(&key("c")).unwrap());
    assert_eq!(p.resident_keys(), vec![key("b"), key("c")]);
    // b used: now a prefetch may evict it, and c (used last, the more recent) stays.
    drop(p.acquire(&key("b")).unwrap());
    drop(p.acquire(&key("c")).unwrap());
    drop(p.acquire(&key("c")).unwrap());
    p.prefetch(&key("a")).wait().unwrap();
    assert_eq!(p.resident_keys(), vec![key("a"), key("c")]);
    let s = p.stats();
    assert_eq!((s.prefetch_loads, s.prefetch_skips), (3, 1));
    assert_eq!(s.bytes_read, 4 * LAYER as u64);
}

#[test]
fn budgets_and_pins_give_clear_out_of_memory() {
    let files = Files::new(&["a", "b", "c"]);
    let p = pool(&files, pread(), 2, 0);
    let ga = p.acquire(&key("a")).unwrap();
    let gb = p.acquire(&key("b")).unwrap();
    assert_eq!(p.pins(&key("a")), 1);
    let err = p.acquire(&key("c")).err().expect("all pinned");
    assert!(
        matches!(err, Error::OutOfMemory(ref m) if m.contains("pinned")),
        "{err}"
    );
    assert!(!p.is_resident(&key("c")));
    drop(ga);
    assert_eq!(p.pins(&key("a")), 0);
    let gc = p.acquire(&key("c")).unwrap();
    assert_eq!(p.resident_keys(), vec![key("b"), key("c")]);
    drop((gb, gc));

    let tiny = pool(&files, pread(), 1, 0);
    let big = Pool::new(
        PoolConfig {
            device_budget: LAYER as u64 - 1,
            host_budget: 0,
        },
        StagingPipeline::new(
            pread(),
            Arc::new(HostStagingAlloc),
            StagingConfig::default(),
        )
        .unwrap(),
        files.clone(),
        Arc::new(HostDeviceAlloc::default()),
    )
    .unwrap();
    let err = big.acquire(&key("a")).err().expect("above budget");
    assert!(
        matches!(err, Error::OutOfMemory(ref m) if m.contains("whole budget")),
        "{err}"
    );
    assert!(tiny.acquire(&key("a")).is_ok());
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs` (a deadlock).
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("did not finish in time: deadlock?")
}

#[test]
fn faults_leave_the_pool_consistent_and_report_errors() {
    let files = Files::new(&["a", "b"]);
    let faulty = Arc::new(FaultyReader::new(pread(), Fault::None));
    let p = pool(&files, faulty.clone(), 2, 0);

    // Short reads are resumed: correct bytes, no error.
    faulty.set_fault(Fault::ShortReads);
    assert_eq!(
        p.acquire(&key("a")).unwrap().bytes().unwrap(),
        files.bytes("a")
    );

    // EIO: reported, nothing resident, nothing reserved.
    faulty.set_fault(Fault::Eio);
    let err = p.acquire(&key("b")).err().expect("EIO");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
        "{err}"
    );
    let check_clean = |p: &Pool| {
        assert!(!p.is_resident(&key("b")));
        assert_eq!(p.stats().device_used, LAYER as u64, "only a is resident");
    };
    check_clean(&p);

    // Bit flip: checksum mismatch, reported as Corrupt.
    faulty.set_fault(Fault::FlipBit);
    let err = p.acquire(&key("b")).err().expect("crc");
    assert!(
        matches!(&err, Error::Corrupt { msg, .. } if msg.contains("crc32")),
        "{err}"
    );
    check_clean(&p);

    // A few EAGAINs are retried; the load then succeeds.
    faulty.set_fault(Fault::Eagain(3));
    assert_eq!(
        p.acquire(&key("b")).unwrap().bytes().unwrap(),
        files.bytes("b")
    );
    assert_eq!(p.stats().load_failures, 2);

    // EAGAIN forever gives up with the error instead of looping.
    let files2 = Files::new(&["x"]);
    let stuck = Arc::new(FaultyReader::new(pread(), Fault::Eagain(u32::MAX)));
    let p2 = pool(&files2, stuck, 1, 0);
    let err = bounded(30, move || p2.acquire(&key("x")).err()).expect("EAGAIN forever");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
    );

    // A truncated file: the extent runs past its end.
    let trunc_files = Files::new(&["t"]);
    let tpath = trunc_files.layers[&key("t")].0.extents[0].path.clone();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tpath)
        .unwrap()
        .set_len(LAYER as u64 - 5000)
        .unwrap();
    let p3 = pool(&trunc_files, pread(), 1, 0);
    let err = p3.acquire(&key("t")).err().expect("truncated");
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == &tpath),
        "{err}"
    );
    assert_eq!(p3.stats().device_used, 0);
    assert!(p3.resident_keys().is_empty());

    // After faults, the pool still works.
    faulty.set_fault(Fault::None);
    assert_eq!(
        p.acquire(&key("a")).unwrap().bytes().unwrap(),
        files.bytes("a")
    );
}

/// A demand acquire that takes over a queued prefetch's key (the prefetch thread still busy)
/// loads it alone: the prefetch thread waits for that load before its next prefetch, instead of
/// reading the next entry beside it and slowing down the entry needed now.
#[test]
fn a_prefetch_waits_for_the_demand_load_that_took_over_its_key() {
    let files = Files::new(&["z", "a", "b"]);
    let mut faulty = FaultyReader::new(pread(), Fault::None);
    faulty.delay_ms = 25;
    let faulty = Arc::new(faulty);
    let p = Arc::new(pool(&files, faulty.clone(), 3, 0));
    let p2 = p.clone();
    bounded(60, move || {
        // z keeps the prefetch thread busy while a and b are requested and a is acquired.
        let z = p2.prefetch(&key("z"));
        std::thread::sleep(Duration::from_millis(10));
        let (a, b) = (p2.prefetch(&key("a")), p2.prefetch(&key("b")));
        drop(p2.acquire(&key("a")).unwrap());
        for pf in [z, a, b] {
            pf.wait().unwrap();
        }
    });
    let s = p.stats();
    assert_eq!(
        (s.misses, s.prefetch_loads, s.prefetch_skips),
        (1, 2, 1),
        "{s:?}"
    );
    let path = |n: &str| files.layers[&key(n)].0.extents[0].path.clone();
    let log = faulty.log.lock().unwrap();
    let a_end = log.iter().filter(|l| l.0 == path("a")).map(|l| l.2).max();
    let b_start = log.iter().filter(|l| l.0 == path("b")).map(|l| l.1).min();
    let (Some(a_end), Some(b_start)) = (a_end, b_start) else {
        panic!("a and b were both read: {log:?}");
    };
    assert!(
        b_start >= a_end,
        "b's reads began before a's demand load ended"
    );
}

#[test]
fn concurrent_acquires_load_each_key_once() {
    let names = ["a", "b", "c", "d"];
    let files = Files::new(&names);
    let mut faulty = FaultyReader::new(pread(), Fault::None);
    faulty.delay_ms = 20; // hold loads open so that threads pile up on them
    let faulty = Arc::new(faulty);
    let p = Arc::new(pool(&files, faulty.clone(), 4, 0));
    let (p2, files2) = (p.clone(), files.clone());
    bounded(60, move || {
        std::thread::scope(|s| {
            for t in 0..8usize {
                let (p, files) = (&p2, &files2);
                s.spawn(move || {
                    for i in 0..12usize {
                        let n = names[(t + i) % 4];
                        let g = p.acquire(&key(n)).unwrap();
                        assert_eq!(g.bytes().unwrap(), files.bytes(n));
                    }
                });
            }
        });
    });
    let s = p.stats();
    assert_eq!(s.disk_loads, 4, "each key loaded once: {s:?}");
    assert_eq!(s.misses, 4);
    assert_eq!(s.hits, 8 * 12 - 4);
    assert_eq!(faulty.bytes.load(Ordering::SeqCst), 4 * LAYER as u64);
    for n in names {
        assert_eq!(p.pins(&key(n)), 0);
    }
}

#[test]
fn concurrent_acquires_under_eviction_pressure_stay_correct() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let files = Files::new(&names);
    let p = Arc::new(pool(&files, pread(), 4, 2));
    let (p2, files2) = (p.clone(), files.clone());
    bounded(60, move || {
        std::thread::scope(|s| {
            for t in 0..3usize {
                let (p, files) = (&p2, &files2);
                s.spawn(move || {
                    for i in 0..20usize {
                        let n = names[(t * 5 + i * (t + 1)) % names.len()];
                        let g = p.acquire(&key(n)).unwrap();
                        assert_eq!(g.bytes().unwrap(), files.bytes(n), "{n}");
                    }
                });
            }
        });
    });
    let s = p.stats();
    assert_eq!(s.hits + s.misses, 60);
    assert!(s.evictions > 0, "the trace must overflow the budget: {s:?}");
    assert!(s.device_used <= 4 * LAYER as u64);
    assert!(s.host_used <= 2 * LAYER as u64);
    assert_eq!(s.load_failures, 0);
}

/// Device memory whose copies panic while `fail` is set: a bug in a backend's copy.
struct PanickyAlloc {
    inner: HostDeviceAlloc,
    fail: std::sync::atomic::AtomicBool,
}

struct PanickyBuf {
    inner: Box<dyn agentcompress::pool::DeviceBuffer>,
    fail: bool,
}

impl agentcompress::io::Sink for PanickyBuf {
    fn copy_in(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        assert!(!self.fail, "injected panic in copy_in");
        self.inner.copy_in(offset, data)
    }
}

impl agentcompress::pool::DeviceBuffer for PanickyBuf {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn host_view(&self) -> Option<&[u8]> {
        self.inner.host_view()
    }
    fn into_host(self: Box<Self>) -> Result<agentcompress::io::AlignedBuf> {
        self.inner.into_host()
    }
}

impl agentcompress::pool::DeviceAlloc for PanickyAlloc {
    fn alloc(&self, len: u64) -> Result<Box<dyn agentcompress::pool::DeviceBuffer>> {
        Ok(Box::new(PanickyBuf {
            inner: self.inner.alloc(len)?,
            fail: self.fail.load(Ordering::SeqCst),
        }))
    }
    fn name(&self) -> &'static str {
        "panicky"
    }
}

#[test]
fn a_panicking_load_leaves_nothing_behind() {
    let files = Files::new(&["a"]);
    let alloc = Arc::new(PanickyAlloc {
        inner: HostDeviceAlloc::default(),
        fail: std::sync::atomic::AtomicBool::new(true),
    });
    let pipeline = StagingPipeline::new(
        pread(),
        Arc::new(HostStagingAlloc),
        StagingConfig::default(),
    )
    .unwrap();
    let p = Arc::new(
        Pool::new(
            PoolConfig {
                device_budget: LAYER as u64,
                host_budget: 0,
            },
            pipeline,
            files.clone(),
            alloc.clone(),
        )
        .unwrap(),
    );
    let p2 = p.clone();
    let panicked = std::thread::spawn(move || p2.acquire(&key("a")).map(drop)).join();
    assert!(panicked.is_err(), "the copy panicked");
    assert!(!p.is_resident(&key("a")));
    assert_eq!(p.stats().device_used, 0);
    assert_eq!(p.stats().load_failures, 1);
    alloc.fail.store(false, Ordering::SeqCst);
    let files2 = files.clone();
    let g = bounded(30, move || {
        let g = p.acquire(&key("a")).unwrap();
        assert_eq!(g.bytes().unwrap(), files2.bytes("a"));
        g.len()
    });
    assert_eq!(g, LAYER as u64);
}
