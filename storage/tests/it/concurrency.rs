//! Many readers at once: one fetch per chunk, bounded waits, retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use nydus_storage::testutil::{self, BlobSpec, Rng, TestBlob, VecSink};
use nydus_storage::{BlobBackend, BlobCacheManager, BlobReader, CacheConfig, StorageError};

use crate::util::{check_read, total_stored, Fixture};

fn hammer(f: &Fixture, cfg: CacheConfig, threads: u64) {
    let m = f.manager(cfg);
    let blob = f.open(&m);
    let n = blob.chunk_count() as u64;
    let barrier = Barrier::new(threads as usize);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (blob, truth, barrier) = (&blob, &f.blob, &barrier);
            s.spawn(move || {
                let mut rng = Rng::new(t + 100);
                barrier.wait();
                for _ in 0..3 * n {
                    let ci = rng.below(n) as u32;
                    let size = truth.chunks[ci as usize].len() as u64;
                    let off = rng.below(size);
                    check_read(blob, truth, ci, off as u32, rng.below(size - off) as u32 + 1);
                }
                for ci in 0..n as u32 {
                    check_read(blob, truth, ci, 0, 1);
                }
            });
        }
    });
    let mt = m.metrics();
    assert_eq!(mt.entries, n);
    // Every stored byte was read from the backend exactly once.
    assert_eq!(mt.backend_bytes, total_stored(&f.blob), "{mt:?}");
}

#[test]
fn sixteen_threads_fetch_each_chunk_once() {
    let f = Fixture::new(&BlobSpec { chunk_count: 32, ..Default::default() });
    let base = 1; // the ci array
    hammer(&f, CacheConfig { amplify_io: 0, ..f.cfg() }, 16);
    assert_eq!(f.reads() - base, 32, "one backend read per chunk");
}

#[test]
fn sixteen_threads_with_amplification_never_refetch() {
    let f = Fixture::new(&BlobSpec { chunk_count: 32, seed: 9, ..Default::default() });
    hammer(&f, CacheConfig { amplify_io: 64 << 10, ..f.cfg() }, 16);
}

/// A backend whose reads block while the gate is closed.
struct GateBackend {
    inner: Arc<dyn BlobBackend>,
    closed: Arc<(Mutex<bool>, Condvar)>,
    /// Fail (once, after blocking) instead of reading.
    fail_once: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
}

struct GateReader {
    inner: Arc<dyn BlobReader>,
    closed: Arc<(Mutex<bool>, Condvar)>,
    fail_once: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
}

impl BlobBackend for GateBackend {
    fn open_blob(&self, id: &str) -> nydus_storage::Result<Arc<dyn BlobReader>> {
        Ok(Arc::new(GateReader {
            inner: self.inner.open_blob(id)?,
            closed: self.closed.clone(),
            fail_once: self.fail_once.clone(),
            reads: self.reads.clone(),
        }))
    }
}

impl BlobReader for GateReader {
    fn blob_size(&self) -> nydus_storage::Result<u64> {
        self.inner.blob_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> nydus_storage::Result<usize> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let (m, cv) = &*self.closed;
        drop(cv.wait_while(m.lock().unwrap(), |closed| *closed).unwrap());
        if self.fail_once.swap(false, Ordering::SeqCst) {
            return Err(StorageError::BackendRead {
                blob_id: "gate".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other("injected failure"),
            });
        }
        self.inner.read_at(buf, offset)
    }
}

struct Gated {
    _tmp: tempfile::TempDir,
    blob: TestBlob,
    manager: Arc<BlobCacheManager>,
    closed: Arc<(Mutex<bool>, Condvar)>,
    fail_once: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
}

impl Gated {
    fn new(timeout: Duration) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let blob = TestBlob::create(tmp.path(), &BlobSpec { chunk_count: 4, ..Default::default() });
        let closed = Arc::new((Mutex::new(false), Condvar::new()));
        let fail_once = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let backend = Arc::new(GateBackend {
            inner: testutil::localfs(tmp.path()),
            closed: closed.clone(),
            fail_once: fail_once.clone(),
            reads: reads.clone(),
        });
        let cfg =
            CacheConfig { amplify_io: 0, fetch_timeout: timeout, ..testutil::cache_config(&tmp.path().join("c")) };
        let manager = BlobCacheManager::new(cfg, backend).unwrap();
        Self { _tmp: tmp, blob, manager, closed, fail_once, reads }
    }

    fn set_closed(&self, closed: bool) {
        *self.closed.0.lock().unwrap() = closed;
        self.closed.1.notify_all();
    }

    /// Wait until `n` backend reads have started.
    fn wait_reads(&self, n: u64) {
        let t = Instant::now();
        while self.reads.load(Ordering::SeqCst) < n {
            assert!(t.elapsed() < Duration::from_secs(10), "backend read never started");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn waiters_time_out_when_the_backend_stalls() {
    let g = Gated::new(Duration::from_millis(200));
    let blob = g.manager.open_blob(&g.blob.info, vec![]).unwrap();
    g.set_closed(true);
    std::thread::scope(|s| {
        let first = s.spawn(|| check_read(&blob, &g.blob, 1, 0, 100));
        g.wait_reads(2);
        let t = Instant::now();
        let e = blob.read_chunk(1, 0, 100, &mut VecSink::default()).unwrap_err();
        assert!(matches!(e, StorageError::FetchTimeout { ci: 1, .. }), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(150) && t.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("backend stalled"), "{e}");
        g.set_closed(false);
        first.join().unwrap();
    });
    assert!(blob.is_cached(1));
    assert_eq!(g.reads.load(Ordering::SeqCst), 2);
}

#[test]
fn waiter_retries_after_the_fetcher_fails() {
    let g = Gated::new(Duration::from_secs(10));
    let blob = g.manager.open_blob(&g.blob.info, vec![]).unwrap();
    g.set_closed(true);
    g.fail_once.store(true, Ordering::SeqCst);
    std::thread::scope(|s| {
        let first = s.spawn(|| blob.read_chunk(2, 0, 10, &mut VecSink::default()));
        g.wait_reads(2);
        let second = s.spawn(|| check_read(&blob, &g.blob, 2, 0, 10));
        // Let the second reader find the chunk in flight before the gate opens.
        std::thread::sleep(Duration::from_millis(100));
        g.set_closed(false);
        let e = first.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        second.join().unwrap();
    });
    assert!(blob.is_cached(2));
}
