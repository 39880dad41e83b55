//! [`FsMetrics`]: the counters of one mount and their reports.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nydus_storage::metrics::{size_class, AtomicHistogram, HistogramSnapshot, SIZE_CLASSES};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::files::{FileStats, FileTable, PathResolver};
use super::inflight::{Inflight, InflightRequest};
use super::op::Op;
use super::MetricsOptions;

/// Upper bounds (inclusive, microseconds) of the per-operation latency
/// buckets. They include upstream's `read_latency_dist` bounds (200 µs,
/// 1 ms, 20 ms, 50 ms, 500 ms, 1 s, 2 s), which are derived from them.
pub const FS_LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000,
];

/// Upper bounds (inclusive, bytes) of the read reply size buckets.
pub const READ_SIZE_BOUNDS: [u64; 8] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20];

const UPSTREAM_READ_LATENCY_US: [u64; 7] = [200, 1_000, 20_000, 50_000, 500_000, 1_000_000, 2_000_000];

struct OpStats {
    hits: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicHistogram,
}

/// The metrics of one mounted filesystem, shared by its [`super::MeteredFs`]
/// and the API server.
pub struct FsMetrics {
    id: String,
    opts: MetricsOptions,
    ops: Box<[OpStats]>,
    data_read: AtomicU64,
    block_count_read: [AtomicU64; SIZE_CLASSES],
    read_size: AtomicHistogram,
    nr_opens: AtomicI64,
    files: Option<FileTable>,
    inflight: Inflight,
    resolver: RwLock<Option<PathResolver>>,
    base: Instant,
    base_wall: SystemTime,
}

/// One operation's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpSnapshot {
    /// Operation.
    pub op: Op,
    /// Calls, failed ones included.
    pub calls: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of all calls, microseconds.
    pub latency_us: HistogramSnapshot,
}

/// A typed copy of an [`FsMetrics`], for Prometheus rendering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FsSnapshot {
    /// Per operation, in [`Op::ALL`] order.
    pub ops: Vec<OpSnapshot>,
    /// Bytes returned by reads.
    pub read_bytes: u64,
    /// Sizes of read replies, bytes.
    pub read_size: HistogramSnapshot,
    /// Files open now (opens minus releases; 0 when the kernel skips opens).
    pub open_files: i64,
    /// Requests being served now (tracked ones).
    pub inflight: u64,
    /// Age of the oldest request being served, seconds (0 when none).
    pub oldest_inflight_seconds: f64,
    /// Requests served while every in-flight slot was busy.
    pub inflight_untracked: u64,
    /// Requests on files that did not fit the per-file table.
    pub files_untracked: u64,
}

/// One request in progress: created by [`FsMetrics::begin`], recorded by
/// one of its `finish` methods (a request abandoned by a panic just leaves
/// the in-flight table).
pub(super) struct Call<'a> {
    m: &'a FsMetrics,
    op: Op,
    ino: u64,
    slot: Option<usize>,
    start: Instant,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            self.m.inflight.leave(s);
        }
    }
}

impl Call<'_> {
    /// Elapsed microseconds, and now in nanoseconds since the base.
    #[inline]
    fn stop(&self) -> (u64, u64) {
        let end = Instant::now();
        let us = u64::try_from(end.duration_since(self.start).as_micros()).unwrap_or(u64::MAX);
        let now_ns = u64::try_from(end.duration_since(self.m.base).as_nanos()).unwrap_or(u64::MAX);
        (us, now_ns)
    }

    /// The request ended; `ok` tells whether it succeeded.
    #[inline]
    pub fn finish(self, ok: bool) {
        let (us, _) = self.stop();
        self.m.record(self.op, self.ino, us, ok);
    }

    /// A read at `offset` ended with `res` (bytes returned, or failure).
    #[inline]
    pub fn finish_read(self, offset: u64, res: Option<usize>) {
        let (us, now_ns) = self.stop();
        let m = self.m;
        if let Some(n) = res {
            let n = n as u64;
            m.data_read.fetch_add(n, Ordering::Relaxed);
            m.block_count_read[size_class(n)].fetch_add(1, Ordering::Relaxed);
            m.read_size.observe(n);
        }
        if let Some(f) = m.record(Op::Read, self.ino, us, res.is_some()) {
            f.read(offset, res.unwrap_or(0) as u64, now_ns, res.is_some());
            f.read_latency_us.fetch_add(us, Ordering::Relaxed);
            if m.opts.latest_read_files && res.is_some() && !f.latest.load(Ordering::Relaxed) {
                f.latest.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn u64s(a: &[AtomicU64]) -> Vec<u64> {
    a.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

impl FsMetrics {
    /// Zeroed metrics for the filesystem known to the API as `id` (upstream
    /// uses the mountpoint).
    pub fn new(id: impl Into<String>, opts: MetricsOptions) -> Arc<Self> {
        let ops = Op::ALL
            .iter()
            .map(|_| OpStats {
                hits: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                latency_us: AtomicHistogram::new(&FS_LATENCY_BOUNDS_US),
            })
            .collect();
        Arc::new(Self {
            id: id.into(),
            opts,
            ops,
            data_read: AtomicU64::new(0),
            block_count_read: Default::default(),
            read_size: AtomicHistogram::new(&READ_SIZE_BOUNDS),
            nr_opens: AtomicI64::new(0),
            files: opts.per_file().then(|| FileTable::new(opts.max_files)),
            inflight: Inflight::new(),
            resolver: RwLock::new(None),
            base: Instant::now(),
            base_wall: SystemTime::now(),
        })
    }

    /// The id given at creation.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What is recorded.
    pub fn options(&self) -> MetricsOptions {
        self.opts
    }

    /// Name files in per-file reports through `r` (see
    /// [`super::rafs_path_resolver`]); replaces any earlier resolver.
    pub fn set_path_resolver(&self, r: PathResolver) {
        if let Ok(mut g) = self.resolver.write() {
            *g = Some(r);
        }
    }

    /// A file was opened (`+1`) or released (`-1`).
    #[inline]
    pub(super) fn opened(&self, delta: i64) {
        self.nr_opens.fetch_add(delta, Ordering::Relaxed);
    }

    /// Start timing a request about `ino`.
    #[inline]
    pub(super) fn begin(&self, op: Op, ino: u64) -> Call<'_> {
        let start = Instant::now();
        let ns = u64::try_from(start.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        Call { m: self, op, ino, slot: self.inflight.enter(op, ino, ns), start }
    }

    /// Count a finished request; returns the file's counters when per-file
    /// recording is on.
    #[inline]
    fn record(&self, op: Op, ino: u64, us: u64, ok: bool) -> Option<&FileStats> {
        let s = &self.ops[op.index()];
        if ok {
            s.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        s.latency_us.observe(us);
        let f = self.files.as_ref()?.get(ino)?;
        f.total_fops.fetch_add(1, Ordering::Relaxed);
        if op.index() < Op::UPSTREAM {
            let c = if ok { &f.fop_hits } else { &f.fop_errors };
            c[op.index()].fetch_add(1, Ordering::Relaxed);
        }
        Some(f)
    }

    /// Requests being served now, oldest first.
    pub fn inflight(&self) -> Vec<InflightRequest> {
        self.inflight.list()
    }

    /// How long ago (since these metrics were created) `ns` was.
    fn age(&self, ns: u64) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_nanos(ns))
    }

    /// Wall-clock time of `ns` nanoseconds after creation.
    fn wall(&self, ns: u64) -> Duration {
        (self.base_wall + Duration::from_nanos(ns)).duration_since(UNIX_EPOCH).unwrap_or_default()
    }

    /// A typed copy of every counter.
    pub fn snapshot(&self) -> FsSnapshot {
        let ops = Op::ALL
            .iter()
            .zip(self.ops.iter())
            .map(|(&op, s)| {
                let errors = s.errors.load(Ordering::Relaxed);
                OpSnapshot {
                    op,
                    calls: s.hits.load(Ordering::Relaxed) + errors,
                    errors,
                    latency_us: s.latency_us.snapshot(),
                }
            })
            .collect();
        let inflight = self.inflight();
        FsSnapshot {
            ops,
            read_bytes: self.data_read.load(Ordering::Relaxed),
            read_size: self.read_size.snapshot(),
            open_files: self.nr_opens.load(Ordering::Relaxed),
            inflight: inflight.len() as u64,
            oldest_inflight_seconds: inflight.first().map_or(0.0, |r| self.age(r.start_ns).as_secs_f64()),
            inflight_untracked: self.inflight.untracked(),
            files_untracked: self.files.as_ref().map_or(0, FileTable::untracked),
        }
    }

    /// Upstream's `/api/v1/metrics` body (`FsIoStats`). Latencies are in
    /// microseconds; `read_latency_dist` counts read requests only.
    pub fn global_json(&self) -> Value {
        let up = Op::UPSTREAM;
        let hits: Vec<u64> = self.ops[..up].iter().map(|s| s.hits.load(Ordering::Relaxed)).collect();
        let errors: Vec<u64> = self.ops[..up].iter().map(|s| s.errors.load(Ordering::Relaxed)).collect();
        let lat_total: Vec<u64> = self.ops[..up].iter().map(|s| s.latency_us.snapshot().sum).collect();
        let read = self.ops[Op::Read.index()].latency_us.snapshot();
        let mut dist = Vec::with_capacity(8);
        let mut below = 0;
        for b in UPSTREAM_READ_LATENCY_US {
            let upto = read.count_le(b).unwrap_or(below);
            dist.push(upto - below);
            below = upto;
        }
        dist.push(read.count() - below);
        json!({
            "id": self.id,
            "files_account_enabled": self.opts.files,
            "access_pattern_enabled": self.opts.access_pattern,
            "record_latest_read_files_enabled": self.opts.latest_read_files,
            "measure_latency": true,
            "nr_opens": self.nr_opens.load(Ordering::Relaxed).max(0),
            "data_read": self.data_read.load(Ordering::Relaxed),
            "block_count_read": u64s(&self.block_count_read),
            "fop_hits": hits,
            "fop_errors": errors,
            "fop_cumulative_latency_total": lat_total,
            "read_latency_dist": dist,
            "inflight_untracked": self.inflight.untracked(),
            "files_untracked": self.files.as_ref().map_or(0, FileTable::untracked),
        })
    }

    fn resolve(&self) -> impl Fn(u64) -> Option<String> + '_ {
        let g = self.resolver.read().ok();
        move |ino| g.as_ref().and_then(|g| g.as_ref()).and_then(|r| r(ino))
    }

    /// Upstream's `/api/v1/metrics/files` body: with `latest`, the inodes
    /// read since the previous such query as `[first, last]` / `[ino]`
    /// ranges (and the marks are cleared); otherwise a map from inode to its
    /// counters. Empty when the matching option is off.
    pub fn files_json(&self, latest: bool) -> Value {
        let Some(t) = &self.files else {
            return if latest { json!([]) } else { json!({}) };
        };
        if latest {
            if !self.opts.latest_read_files {
                return json!([]);
            }
            let mut inos: Vec<u64> =
                t.iter().filter(|f| f.latest.swap(false, Ordering::Relaxed)).map(|f| f.ino).collect();
            inos.sort_unstable();
            return Value::from(ranges(&inos));
        }
        let mut out = Map::new();
        if !self.opts.files {
            return Value::Object(out);
        }
        let resolve = self.resolve();
        for f in t.iter() {
            let mut v = json!({
                "total_fops": f.total_fops.load(Ordering::Relaxed),
                "data_read": f.data_read.load(Ordering::Relaxed),
                "block_count_read": u64s(&f.block_count_read),
                "fop_hits": u64s(&f.fop_hits),
                "fop_errors": u64s(&f.fop_errors),
                "read_latency_total": f.read_latency_us.load(Ordering::Relaxed),
            });
            if let Some(p) = resolve(f.ino) {
                v["path"] = Value::from(p);
            }
            out.insert(f.ino.to_string(), v);
        }
        Value::Object(out)
    }

    /// Upstream's `/api/v1/metrics/pattern` body: files read at least once,
    /// with read count and first access time, plus how many of the reads
    /// were sequential. Empty when `access_pattern` is off.
    pub fn pattern_json(&self) -> Value {
        let (Some(t), true) = (&self.files, self.opts.access_pattern) else { return json!([]) };
        let resolve = self.resolve();
        let mut out: Vec<(u64, Value)> = Vec::new();
        for f in t.iter() {
            let nr_read = f.nr_read.load(Ordering::Relaxed);
            let first = f.first_read_ns.load(Ordering::Relaxed);
            if nr_read == 0 || first == 0 {
                continue;
            }
            let at = self.wall(first - 1);
            let mut v = json!({
                "ino": f.ino,
                "nr_read": nr_read,
                "first_access_time_secs": at.as_secs(),
                "first_access_time_nanos": at.subsec_nanos(),
                "sequential_reads": f.seq_reads.load(Ordering::Relaxed),
                "random_reads": f.random_reads.load(Ordering::Relaxed),
            });
            if let Some(p) = resolve(f.ino) {
                v["path"] = Value::from(p);
            }
            out.push((first, v));
        }
        out.sort_by_key(|(first, _)| *first);
        Value::from(out.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
    }

    /// Upstream's `/api/v1/metrics/inflight` body: one entry per request
    /// being served (`inode`, FUSE `opcode`, `unique`, start
    /// `timestamp_secs`), plus the operation name and age.
    pub fn inflight_json(&self) -> Value {
        let list: Vec<Value> = self
            .inflight()
            .into_iter()
            .map(|r| {
                json!({
                    "inode": r.ino,
                    "opcode": r.op.opcode(),
                    "unique": r.unique,
                    "timestamp_secs": self.wall(r.start_ns).as_secs(),
                    "op": r.op.name(),
                    "age_millis": self.age(r.start_ns).as_millis() as u64,
                })
            })
            .collect();
        Value::from(list)
    }
}

/// Sorted inode numbers as upstream's ranges: `[first, last]`, or `[ino]`
/// for a lone one.
fn ranges(inos: &[u64]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    let mut i = 0;
    while i < inos.len() {
        let mut j = i;
        while j + 1 < inos.len() && inos[j + 1] == inos[j] + 1 {
            j += 1;
        }
        out.push(if i == j { vec![inos[i]] } else { vec![inos[i], inos[j]] });
        i = j + 1;
    }
    out
}

#[cfg(test)]
pub(super) fn ranges_for_test(inos: &[u64]) -> Vec<Vec<u64>> {
    ranges(inos)
}
