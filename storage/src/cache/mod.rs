//! The blob cache: fetch chunks from a backend once, keep their plain bytes
//! on local disk, and serve reads from there.
//!
//! A [`BlobCacheManager`] owns one cache directory (`work_dir`, locked with
//! `flock` against a second daemon) and hands out one [`CachedBlob`] per
//! blob. For each blob the directory holds:
//!
//! * `<id>.blob.meta`: the decoded chunk-information array
//!   (module `ci_array`), so a warm restart needs no backend read;
//! * `<id>.blob.data`: the blob's uncompressed image, a sparse file;
//! * `<id>.chunk_map`: one persisted bit per chunk saying its data in
//!   `.blob.data` is valid (module `chunk_map`).
//!
//! A missing chunk is fetched by exactly one thread (others wait on an
//! in-flight table, module `inflight`), together with missing neighbours whose
//! stored bytes are adjacent, in one backend read of up to `amplify_io`
//! bytes (module `fetch`). It is decompressed, optionally checked against its
//! digest, written to the data file, and only then marked ready. With
//! `max_size`, least recently used chunks are evicted to make room
//! (module `space`). [`CacheKind::Dummy`](crate::CacheKind::Dummy) keeps
//! nothing: every read fetches into memory.

mod blob;
mod chunk_map;
mod ci_array;
mod fetch;
mod inflight;
mod lru;
mod manager;
mod space;
mod store;

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use blob::CachedBlob;
pub use manager::BlobCacheManager;

use crate::config::CacheConfig;
use crate::metrics::CacheCounters;
use space::Space;

/// Where [`CachedBlob::read_chunk`] puts chunk data: implemented by the
/// FUSE reply writer of the `fs` crate (and by test sinks).
pub trait ChunkSink {
    /// Copy `len` bytes at `offset` of `file` into the reply (a `pread`
    /// straight into the reply buffer). Returns the bytes taken; fewer than
    /// `len` (0 at the end) means the sink is full.
    fn write_from_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize>;

    /// Append `data` to the reply; returns the bytes taken.
    fn write_bytes(&mut self, data: &[u8]) -> io::Result<usize>;
}

/// A sink that collects everything into a vector (a whole file's bytes, say).
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<u8>);

impl ChunkSink for VecSink {
    fn write_from_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let at = self.0.len();
        self.0.resize(at + len, 0);
        file.read_exact_at(&mut self.0[at..], offset)?;
        Ok(len)
    }

    fn write_bytes(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
}

/// State shared by a manager and all its blobs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: CacheConfig,
    pub counters: Arc<CacheCounters>,
    pub space: Space,
    /// On-demand (foreground) fetches in progress; background work yields
    /// while this is non-zero.
    on_demand: AtomicUsize,
    /// The `flock`ed `work_dir/.lock`, held while any blob is alive.
    _lock: Option<File>,
}

impl Shared {
    fn new(cfg: CacheConfig, lock: Option<File>) -> Self {
        let counters = Arc::new(CacheCounters::default());
        let space = Space::new(cfg.max_size, counters.clone());
        Self { cfg, counters, space, on_demand: AtomicUsize::new(0), _lock: lock }
    }

    /// Count one on-demand fetch until the guard drops.
    fn on_demand(&self) -> OnDemand<'_> {
        self.on_demand.fetch_add(1, Ordering::AcqRel);
        OnDemand(&self.on_demand)
    }

    /// Whether on-demand fetches are in progress.
    pub(crate) fn foreground_busy(&self) -> bool {
        self.on_demand.load(Ordering::Acquire) > 0
    }

    /// Sleep (in short steps) while on-demand fetches run, at most `max`.
    pub(crate) fn yield_to_on_demand(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while self.foreground_busy() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct OnDemand<'a>(&'a AtomicUsize);

impl Drop for OnDemand<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lock `m`, ignoring poisoning: every critical section in this crate
/// leaves its data consistent at each step, so a panic elsewhere does not
/// make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 64-bit hash of a blob id, stored in cache file headers so that files
/// renamed or copied between blobs are not trusted.
pub(crate) fn id_hash(blob_id: &str) -> u64 {
    let d = nydus_format::Digester::Blake3.digest(blob_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}
