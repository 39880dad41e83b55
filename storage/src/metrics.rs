//! Cache metrics.
//!
//! Each [`crate::BlobCacheManager`] owns one `CacheCounters` (plain
//! atomics, updated with relaxed ordering on the hot path: they are
//! statistics, not synchronisation) and hands out [`CacheMetrics`]
//! snapshots, which serialise with serde. There are no global registries:
//! the daemon collects the snapshots of the managers it owns.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of one cache manager's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheMetrics {
    /// `read_chunk` calls served from the cache.
    pub hits: u64,
    /// `read_chunk` calls that had to fetch.
    pub misses: u64,
    /// Backend read requests (one per merged run of chunks).
    pub backend_reads: u64,
    /// Bytes read from backends.
    pub backend_bytes: u64,
    /// Of those, bytes read for background (prefetch) requests.
    pub prefetch_bytes: u64,
    /// Chunks evicted to honour `max_size`.
    pub evictions: u64,
    /// Chunks ready in the cache now.
    pub entries: u64,
    /// Bytes the ready chunks occupy (each rounded up to 4 KiB).
    pub cached_bytes: u64,
    /// Fetched chunks whose digest did not match.
    pub digest_errors: u64,
}

/// The live counters behind [`CacheMetrics`].
#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub backend_reads: AtomicU64,
    pub backend_bytes: AtomicU64,
    pub prefetch_bytes: AtomicU64,
    pub evictions: AtomicU64,
    pub entries: AtomicU64,
    pub cached_bytes: AtomicU64,
    pub digest_errors: AtomicU64,
}

/// Add `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Subtract `n` from a gauge.
pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

impl CacheCounters {
    /// Read every counter.
    pub fn snapshot(&self) -> CacheMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheMetrics {
            hits: g(&self.hits),
            misses: g(&self.misses),
            backend_reads: g(&self.backend_reads),
            backend_bytes: g(&self.backend_bytes),
            prefetch_bytes: g(&self.prefetch_bytes),
            evictions: g(&self.evictions),
            entries: g(&self.entries),
            cached_bytes: g(&self.cached_bytes),
            digest_errors: g(&self.digest_errors),
        }
    }
}
