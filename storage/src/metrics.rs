//! Cache and backend metrics.
//!
//! Each [`crate::BlobCacheManager`] owns one `CacheCounters` (plain
//! atomics, updated with relaxed ordering on the hot path: they are
//! statistics, not synchronisation) and hands out [`CacheMetrics`]
//! snapshots, which serialise with serde. Each backend built by
//! [`crate::new_backend`] owns one [`BackendMetrics`] (see
//! [`crate::backend::MeteredBackend`]). There are no global registries:
//! the daemon collects the snapshots of the managers and backends it owns.
//!
//! The JSON bodies of upstream's `/api/v1/metrics/backend` and
//! `/api/v1/metrics/blobcache` are produced here
//! ([`BackendMetrics::snapshot_json`], [`blobcache_json`]) so that existing
//! clients keep working; typed snapshots feed the Prometheus rendering.

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

/// Upper bounds (inclusive, microseconds) of the read-latency buckets of
/// [`BackendMetrics`]; a last, unbounded bucket follows.
pub const BACKEND_LATENCY_BOUNDS_US: [u64; 12] =
    [1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000];

/// Number of request-size classes of upstream's `*_block_size_dist` and
/// `block_count_read` arrays.
pub const SIZE_CLASSES: usize = 8;

/// Upstream's request-size class: `<1K, <4K, <16K, <64K, <128K, <512K, <1M, ≥1M`
/// (lower bounds inclusive, as upstream counts them).
pub fn size_class(size: u64) -> usize {
    const LOWER: [u64; SIZE_CLASSES - 1] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10, 1 << 20];
    LOWER.partition_point(|&b| size >= b)
}

/// Upstream's millisecond latency class for backend reads:
/// `≤1, ≤20, ≤50, ≤100, ≤500, ≤1000, ≤2000, >2000` ms.
fn millis_class(ms: u64) -> usize {
    const UPPER: [u64; 7] = [1, 20, 50, 100, 500, 1000, 2000];
    UPPER.partition_point(|&b| ms > b)
}

/// A fixed-bucket histogram of atomics: bucket `i` counts observations
/// `≤ bounds[i]` (and above the previous bound); the last bucket counts the
/// rest. Observing is one binary search and two relaxed additions.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { bounds, counts, sum: AtomicU64::new(0) }
    }

    /// Record one observation.
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| v > b);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Read the counters.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The counters of an [`AtomicHistogram`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistogramSnapshot {
    /// Upper bounds of all buckets but the last (inclusive).
    pub bounds: Vec<u64>,
    /// Observations per bucket (not cumulative); one more than `bounds`.
    pub counts: Vec<u64>,
    /// Sum of all observed values.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Observations `≤ bound`; `bound` must be one of the bucket bounds.
    pub fn count_le(&self, bound: u64) -> Option<u64> {
        let i = self.bounds.iter().position(|&b| b == bound)?;
        Some(self.counts[..=i].iter().sum())
    }
}

/// Backend traffic of one backend, recorded by
/// [`crate::backend::MeteredBackend`] around every blob read: counts,
/// bytes, errors and latency, plus upstream's size × latency tables.
#[derive(Debug)]
pub struct BackendMetrics {
    backend_type: &'static str,
    read_count: AtomicU64,
    read_errors: AtomicU64,
    read_amount_total: AtomicU64,
    latency_millis_total: AtomicU64,
    latency_millis_by_size: [AtomicU64; SIZE_CLASSES],
    count_by_size: [AtomicU64; SIZE_CLASSES],
    latency_by_size: [[AtomicU64; 8]; SIZE_CLASSES],
    latency: AtomicHistogram,
}

/// A typed snapshot of [`BackendMetrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendSnapshot {
    /// Backend kind (`localfs`, `registry`, ...).
    pub backend_type: &'static str,
    /// `read_at` calls, failed ones included.
    pub reads: u64,
    /// Failed `read_at` calls.
    pub read_errors: u64,
    /// Bytes returned by successful reads.
    pub read_bytes: u64,
    /// Read latency, in microseconds.
    pub latency_us: HistogramSnapshot,
}

impl BackendMetrics {
    /// Zeroed metrics for a backend of kind `backend_type`.
    pub fn new(backend_type: &'static str) -> Self {
        Self {
            backend_type,
            read_count: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            read_amount_total: AtomicU64::new(0),
            latency_millis_total: AtomicU64::new(0),
            latency_millis_by_size: Default::default(),
            count_by_size: Default::default(),
            latency_by_size: Default::default(),
            latency: AtomicHistogram::new(&BACKEND_LATENCY_BOUNDS_US),
        }
    }

    /// Record one read that returned `bytes` (0 for a failure) after `elapsed`.
    pub fn record_read(&self, bytes: u64, elapsed: std::time::Duration, failed: bool) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let ms = us / 1000;
        let sc = size_class(bytes);
        add(&self.read_count, 1);
        if failed {
            add(&self.read_errors, 1);
        }
        add(&self.read_amount_total, bytes);
        add(&self.latency_millis_total, ms);
        add(&self.latency_millis_by_size[sc], ms);
        add(&self.count_by_size[sc], 1);
        add(&self.latency_by_size[sc][millis_class(ms)], 1);
        self.latency.observe(us);
    }

    /// The typed counters.
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            backend_type: self.backend_type,
            reads: load(&self.read_count),
            read_errors: load(&self.read_errors),
            read_bytes: load(&self.read_amount_total),
            latency_us: self.latency.snapshot(),
        }
    }

    /// Upstream's `/api/v1/metrics/backend` body.
    pub fn snapshot_json(&self) -> serde_json::Value {
        let arr = |a: &[AtomicU64]| a.iter().map(load).collect::<Vec<_>>();
        serde_json::json!({
            "backend_type": self.backend_type,
            "read_count": load(&self.read_count),
            "read_errors": load(&self.read_errors),
            "read_amount_total": load(&self.read_amount_total),
            "read_cumulative_latency_millis_total": load(&self.latency_millis_total),
            "read_cumulative_latency_millis_dist": arr(&self.latency_millis_by_size),
            "read_count_block_size_dist": arr(&self.count_by_size),
            "read_latency_sizes_dist": self.latency_by_size.iter().map(|r| arr(r)).collect::<Vec<_>>(),
        })
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Upstream's `/api/v1/metrics/blobcache` body, from a cache manager's
/// snapshot. `store_path` is the cache directory and `underlying_files` the
/// cache files in use. Upstream fields this cache has no counterpart for
/// (`partial_hits`: chunks are never partly cached here; prefetch request
/// counts; `buffered_backend_size`) are 0; the fields after upstream's
/// carry this cache's extra counters.
pub fn blobcache_json(m: &CacheMetrics, store_path: &str, underlying_files: &[String]) -> serde_json::Value {
    serde_json::json!({
        "underlying_files": underlying_files,
        "store_path": store_path,
        "partial_hits": 0,
        "whole_hits": m.hits,
        "total": m.hits + m.misses,
        "entries_count": m.entries,
        "prefetch_data_amount": m.prefetch_bytes,
        "prefetch_mr_count": 0,
        "prefetch_workers": 0,
        "prefetch_unmerged_chunks": 0,
        "buffered_backend_size": 0,
        "data_all_ready": false,
        "misses": m.misses,
        "evictions": m.evictions,
        "cached_bytes": m.cached_bytes,
        "backend_reads": m.backend_reads,
        "backend_bytes": m.backend_bytes,
        "digest_errors": m.digest_errors,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn size_classes_match_upstream_boundaries() {
        let cases = [
            (0, 0),
            (1023, 0),
            (1024, 1),
            (4095, 1),
            (4096, 2),
            (16383, 2),
            (16384, 3),
            (65535, 3),
            (65536, 4),
            (131071, 4),
            (131072, 5),
            (524287, 5),
            (524288, 6),
            (1048575, 6),
            (1048576, 7),
            (u64::MAX, 7),
        ];
        for (size, class) in cases {
            assert_eq!(size_class(size), class, "{size}");
        }
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        static B: [u64; 3] = [10, 100, 1000];
        let h = AtomicHistogram::new(&B);
        for v in [0, 10, 11, 100, 101, 1000, 1001, u64::MAX / 4] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 2, 2]);
        assert_eq!(s.count(), 8);
        assert_eq!(s.count_le(100), Some(4));
        assert_eq!(s.count_le(55), None);
        assert_eq!(s.sum, 10 + 11 + 100 + 101 + 1000 + 1001 + u64::MAX / 4);
    }

    #[test]
    fn backend_metrics_count_exactly() {
        let m = BackendMetrics::new("localfs");
        m.record_read(4096, Duration::from_micros(300), false);
        m.record_read(200 << 10, Duration::from_millis(30), false);
        m.record_read(0, Duration::from_secs(3), true);
        let s = m.snapshot();
        assert_eq!((s.reads, s.read_errors, s.read_bytes), (3, 1, 4096 + (200 << 10)));
        assert_eq!(s.latency_us.count_le(1_000), Some(1));
        assert_eq!(s.latency_us.count_le(50_000), Some(2));
        assert_eq!(s.latency_us.counts.last(), Some(&0));
        assert_eq!(s.latency_us.count(), 3);
        let j = m.snapshot_json();
        assert_eq!(j["backend_type"], "localfs");
        assert_eq!(j["read_count"], 3);
        assert_eq!(j["read_errors"], 1);
        assert_eq!(j["read_amount_total"], 4096 + (200 << 10));
        assert_eq!(j["read_cumulative_latency_millis_total"], 30 + 3000);
        assert_eq!(j["read_count_block_size_dist"], serde_json::json!([1, 0, 1, 0, 0, 1, 0, 0]));
        // 4 KiB in < 1 ms; 200 KiB in 30 ms (≤ 50 ms class); the failure took 3 s (> 2 s class).
        assert_eq!(j["read_latency_sizes_dist"][2][0], 1);
        assert_eq!(j["read_latency_sizes_dist"][5][2], 1);
        assert_eq!(j["read_latency_sizes_dist"][0][7], 1);
    }

    #[test]
    fn blobcache_json_has_upstream_fields() {
        let m = CacheMetrics { hits: 5, misses: 2, entries: 7, prefetch_bytes: 100, ..Default::default() };
        let j = blobcache_json(&m, "/cache", &["/cache/abc.blob.data".into()]);
        assert_eq!(j["whole_hits"], 5);
        assert_eq!(j["total"], 7);
        assert_eq!(j["entries_count"], 7);
        assert_eq!(j["prefetch_data_amount"], 100);
        assert_eq!(j["store_path"], "/cache");
        assert_eq!(j["underlying_files"][0], "/cache/abc.blob.data");
        for k in ["partial_hits", "prefetch_mr_count", "prefetch_workers", "prefetch_unmerged_chunks"] {
            assert!(j[k].is_u64(), "{k}");
        }
    }
}
