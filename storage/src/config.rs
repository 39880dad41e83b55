//! Typed configuration of backends and the blob cache.
//!
//! These are the resolved settings the storage layer works with; the daemon
//! translates upstream's v1/v2 JSON/TOML files into them (and reports
//! unknown keys and type errors with their key paths).

use std::path::PathBuf;
use std::time::Duration;

/// Where blobs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// Blobs are files in a local directory (or one given file).
    LocalFs(LocalFsConfig),
}

/// `{"type": "localfs", "config": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalFsConfig {
    /// Directory holding blobs named by id.
    pub dir: Option<PathBuf>,
    /// A single blob file, used whatever the blob id (single-blob images).
    pub blob_file: Option<PathBuf>,
    /// More directories searched, in order, after `dir`.
    pub alt_dirs: Vec<PathBuf>,
}

/// Which cache to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheKind {
    /// Persistent cache of uncompressed chunks (`blobcache` / `filecache`).
    #[default]
    Blobcache,
    /// No cache: every read goes to the backend.
    Dummy,
}

/// Blob cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache kind.
    pub kind: CacheKind,
    /// Directory of cache files (`<blob id>.blob.data`, `<blob id>.chunk_map`).
    pub work_dir: PathBuf,
    /// Verify every fetched chunk against its digest before it is cached or
    /// returned (default off, as upstream: digests cost CPU).
    pub digest_validate: bool,
    /// Merge adjacent missing chunks into backend reads of up to this many
    /// bytes (default 1 MiB; 0 disables merging).
    pub amplify_io: u64,
    /// Upper bound on the bytes the cache directory may hold; least recently
    /// used chunks are evicted past it. `None`: unbounded (upstream's only mode).
    pub max_size: Option<u64>,
    /// How long a reader waits for another thread's fetch of the same chunk
    /// before it gives up with an error (default 60 s). Bounds the damage of
    /// a stalled backend: readers fail instead of hanging forever.
    pub fetch_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            kind: CacheKind::Blobcache,
            work_dir: PathBuf::from("/var/lib/nydus/cache"),
            digest_validate: false,
            amplify_io: 1 << 20,
            max_size: None,
            fetch_timeout: Duration::from_secs(60),
        }
    }
}

/// Background prefetch settings (`fs_prefetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchConfig {
    /// Prefetch at all.
    pub enable: bool,
    /// Worker threads.
    pub threads_count: usize,
    /// Merge adjacent chunks into backend reads up to this size.
    pub merging_size: u64,
    /// Bytes per second the prefetcher may fetch (0: unlimited).
    pub bandwidth_rate: u64,
    /// Prefetch every blob completely (else only the listed files).
    pub prefetch_all: bool,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            enable: false,
            threads_count: 4,
            merging_size: 1 << 20,
            bandwidth_rate: 0,
            prefetch_all: false,
        }
    }
}
