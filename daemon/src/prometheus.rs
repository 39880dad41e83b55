//! Prometheus text exposition of every mount's metrics (`GET /metrics`).
//!
//! [`render`] takes a consistent copy of each mount's filesystem, backend
//! and cache counters, then encodes them with the `prometheus-client`
//! crate as OpenMetrics text (which Prometheus scrapes; serve it as
//! `application/openmetrics-text; version=1.0.0; charset=utf-8`). Every
//! series carries a `mountpoint` label; names follow Prometheus
//! conventions: counters end in `_total`, sizes are `_bytes`, durations
//! `_seconds` histograms. The metric list is in `docs/metrics.md`.

use std::fmt::Write as _;

use nydus_fs::metrics::{FsMetrics, FsSnapshot, Op, OpSnapshot};
use nydus_storage::metrics::{BackendMetrics, BackendSnapshot, HistogramSnapshot};
use nydus_storage::CacheMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The metrics of one mount, as the daemon holds them.
pub struct MountMetrics<'a> {
    /// Where the image is mounted (the `mountpoint` label).
    pub mountpoint: &'a str,
    /// Its filesystem metrics.
    pub fs: &'a FsMetrics,
    /// Its backend's metrics, when the backend keeps them.
    pub backend: Option<&'a BackendMetrics>,
    /// Its blob cache's counters.
    pub cache: CacheMetrics,
}

/// Prometheus (OpenMetrics) text for `mounts`, ending in `# EOF`.
pub fn render(mounts: &[MountMetrics<'_>]) -> String {
    let snap = Snapshot(
        mounts
            .iter()
            .map(|m| MountSnapshot {
                mountpoint: m.mountpoint.to_string(),
                fs: m.fs.snapshot(),
                backend: m.backend.map(BackendMetrics::snapshot),
                cache: m.cache,
            })
            .collect(),
    );
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector only fails on write errors.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding metrics failed");
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

/// A label value with the escapes the text format needs (`\\`, `\"`, `\n`).
/// The crate writes label values verbatim, and a mountpoint is an arbitrary
/// path.
#[derive(Clone, Copy)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MountSnapshot {
    mountpoint: String,
    fs: FsSnapshot,
    backend: Option<BackendSnapshot>,
    cache: CacheMetrics,
}

#[derive(Debug)]
struct Snapshot(Vec<MountSnapshot>);

/// Operations reported for a mount: upstream's set always (so dashboards
/// see stable series), any other one once it has been called.
fn reported_ops(fs: &FsSnapshot) -> impl Iterator<Item = &OpSnapshot> {
    fs.ops.iter().filter(|o| o.op.index() < Op::UPSTREAM || o.calls > 0)
}

/// Histogram buckets in the crate's form: bounds divided by `div`, counts
/// per bucket, the last bound `f64::MAX` (written as `+Inf`).
fn buckets(h: &HistogramSnapshot, div: f64) -> Vec<(f64, u64)> {
    let bounds = h.bounds.iter().map(|&b| b as f64 / div).chain(std::iter::once(f64::MAX));
    bounds.zip(h.counts.iter().copied()).collect()
}

type Labels<'a> = Vec<(&'static str, Escaped<'a>)>;

impl Snapshot {
    fn counter(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        series: impl Fn(&MountSnapshot) -> Vec<(Labels<'_>, u64)>,
    ) -> std::fmt::Result {
        let mut me = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
        for m in &self.0 {
            for (labels, v) in series(m) {
                me.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }
        Ok(())
    }

    fn gauge(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: impl Fn(&MountSnapshot) -> Option<f64>,
    ) -> std::fmt::Result {
        let mut me = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for m in &self.0 {
            if let Some(v) = value(m) {
                me.encode_family(&mp(m))?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }

    fn histogram(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        unit: &Unit,
        series: impl Fn(&MountSnapshot) -> Vec<(Labels<'_>, &HistogramSnapshot)>,
        div: f64,
    ) -> std::fmt::Result {
        let mut me = e.encode_descriptor(name, help, Some(unit), MetricType::Histogram)?;
        for m in &self.0 {
            for (labels, h) in series(m) {
                me.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum as f64 / div,
                    h.count(),
                    &buckets(h, div),
                    None,
                )?;
            }
        }
        Ok(())
    }
}

fn mp(m: &MountSnapshot) -> Labels<'_> {
    vec![("mountpoint", Escaped(&m.mountpoint))]
}

fn mp_op<'a>(m: &'a MountSnapshot, o: &OpSnapshot) -> Labels<'a> {
    vec![("mountpoint", Escaped(&m.mountpoint)), ("op", Escaped(o.op.name()))]
}

fn mp_backend(m: &MountSnapshot) -> Option<(Labels<'_>, &BackendSnapshot)> {
    let b = m.backend.as_ref()?;
    Some((vec![("mountpoint", Escaped(&m.mountpoint)), ("backend_type", Escaped(b.backend_type))], b))
}

/// Microseconds per second. Bounds are divided (not multiplied by 1e-6) so
/// that they print as the shortest decimals (`0.05`, not `0.049999…`).
const US: f64 = 1e6;

/// A cache counter: name, help, unit, and how to read it.
type CacheCounter = (&'static str, &'static str, Option<&'static Unit>, fn(&CacheMetrics) -> u64);

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        self.counter(e, "nydusd_fs_ops", "FUSE requests served, failed ones included.", None, |m| {
            reported_ops(&m.fs).map(|o| (mp_op(m, o), o.calls)).collect()
        })?;
        self.counter(e, "nydusd_fs_op_errors", "FUSE requests answered with an error.", None, |m| {
            reported_ops(&m.fs).map(|o| (mp_op(m, o), o.errors)).collect()
        })?;
        self.histogram(
            e,
            "nydusd_fs_op_duration",
            "Time to serve a FUSE request.",
            &Unit::Seconds,
            |m| reported_ops(&m.fs).map(|o| (mp_op(m, o), &o.latency_us)).collect(),
            US,
        )?;
        self.counter(e, "nydusd_fs_read", "Bytes returned by FUSE reads.", Some(&Unit::Bytes), |m| {
            vec![(mp(m), m.fs.read_bytes)]
        })?;
        self.histogram(
            e,
            "nydusd_fs_read_size",
            "Size of FUSE read replies.",
            &Unit::Bytes,
            |m| vec![(mp(m), &m.fs.read_size)],
            1.0,
        )?;
        self.gauge(e, "nydusd_fs_open_files", "Files open through FUSE now.", None, |m| Some(m.fs.open_files as f64))?;
        self.gauge(e, "nydusd_fs_inflight_requests", "FUSE requests being served now.", None, |m| {
            Some(m.fs.inflight as f64)
        })?;
        self.gauge(
            e,
            "nydusd_fs_oldest_inflight_request_age",
            "Age of the oldest FUSE request being served (0 when idle); a growing value means a hang.",
            Some(&Unit::Seconds),
            |m| Some(m.fs.oldest_inflight_seconds),
        )?;
        self.counter(e, "nydusd_backend_reads", "Reads sent to the storage backend.", None, |m| {
            mp_backend(m).map(|(l, b)| (l, b.reads)).into_iter().collect()
        })?;
        self.counter(e, "nydusd_backend_read", "Bytes read from the storage backend.", Some(&Unit::Bytes), |m| {
            mp_backend(m).map(|(l, b)| (l, b.read_bytes)).into_iter().collect()
        })?;
        self.counter(e, "nydusd_backend_read_errors", "Storage backend reads that failed.", None, |m| {
            mp_backend(m).map(|(l, b)| (l, b.read_errors)).into_iter().collect()
        })?;
        self.histogram(
            e,
            "nydusd_backend_read_duration",
            "Time of one storage backend read, retries included.",
            &Unit::Seconds,
            |m| mp_backend(m).map(|(l, b)| (l, &b.latency_us)).into_iter().collect(),
            US,
        )?;
        let cache_counters: [CacheCounter; 5] = [
            ("nydusd_cache_hits", "Chunk reads served from the blob cache.", None, |c| c.hits),
            ("nydusd_cache_misses", "Chunk reads that had to fetch from the backend.", None, |c| c.misses),
            ("nydusd_cache_prefetch", "Bytes fetched by prefetch.", Some(&Unit::Bytes), |c| c.prefetch_bytes),
            ("nydusd_cache_evictions", "Chunks evicted to honour the cache size limit.", None, |c| c.evictions),
            ("nydusd_cache_digest_errors", "Fetched chunks whose digest did not match.", None, |c| c.digest_errors),
        ];
        for (name, help, unit, get) in cache_counters {
            self.counter(e, name, help, unit, |m| vec![(mp(m), get(&m.cache))])?;
        }
        self.gauge(e, "nydusd_cache_entries", "Chunks ready in the blob cache.", None, |m| {
            Some(m.cache.entries as f64)
        })?;
        self.gauge(e, "nydusd_cache_size", "Bytes the cached chunks occupy.", Some(&Unit::Bytes), |m| {
            Some(m.cache.cached_bytes as f64)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fuse_backend_rs::api::filesystem::{Context, Entry, FileSystem};
    use nydus_fs::metrics::{MeteredFs, MetricsOptions};

    use super::*;

    /// The value of the sample `name` whose labels include `labels`
    /// (written `k="v"`, in any order).
    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines().find_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let want = labels.iter().map(|(k, v)| format!("{k}=\"{v}\""));
            let have: Vec<&str> = rest.strip_suffix('}')?.split(',').collect();
            (n == name && want.into_iter().all(|w| have.contains(&w.as_str()))).then(|| v.parse().ok())?
        })
    }

    /// A filesystem whose getattr succeeds and whose lookup fails.
    struct Stub;

    impl FileSystem for Stub {
        type Inode = u64;
        type Handle = u64;

        fn getattr(&self, _: &Context, _: u64, _: Option<u64>) -> std::io::Result<(libc::stat64, Duration)> {
            // SAFETY: stat64 is plain integers; all-zero bytes are a valid value.
            Ok((unsafe { std::mem::zeroed() }, Duration::ZERO))
        }

        fn lookup(&self, _: &Context, _: u64, _: &std::ffi::CStr) -> std::io::Result<Entry> {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        }
    }

    fn sample() -> (std::sync::Arc<FsMetrics>, BackendMetrics) {
        let fs = FsMetrics::new("/mnt/a", MetricsOptions::default());
        let stub = MeteredFs::new(Stub, fs.clone());
        for _ in 0..3 {
            stub.getattr(&Context::new(), 5, None).unwrap();
        }
        assert!(stub.lookup(&Context::new(), 1, c"x").is_err());
        let b = BackendMetrics::new("registry");
        b.record_read(4096, Duration::from_millis(3), false);
        b.record_read(0, Duration::from_millis(30), true);
        (fs, b)
    }

    #[test]
    fn counters_histograms_and_gauges_are_exposed_per_mount() {
        let (fs, b) = sample();
        let fs2 = FsMetrics::new("/mnt/b", MetricsOptions::default());
        let cache = CacheMetrics {
            hits: 7,
            misses: 3,
            prefetch_bytes: 1 << 20,
            entries: 9,
            evictions: 2,
            ..Default::default()
        };
        let text = render(&[
            MountMetrics { mountpoint: "/mnt/a", fs: &fs, backend: Some(&b), cache },
            MountMetrics { mountpoint: "/mnt/b", fs: &fs2, backend: None, cache: CacheMetrics::default() },
        ]);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let a = ("mountpoint", "/mnt/a");
        let b2 = ("mountpoint", "/mnt/b");
        assert_eq!(value(&text, "nydusd_cache_hits_total", &[a]), Some(7.0));
        assert_eq!(value(&text, "nydusd_cache_misses_total", &[a]), Some(3.0));
        assert_eq!(value(&text, "nydusd_cache_prefetch_bytes_total", &[a]), Some(1048576.0));
        assert_eq!(value(&text, "nydusd_cache_entries", &[a]), Some(9.0));
        assert_eq!(value(&text, "nydusd_cache_evictions_total", &[a]), Some(2.0));
        let bt = ("backend_type", "registry");
        assert_eq!(value(&text, "nydusd_backend_reads_total", &[a, bt]), Some(2.0));
        assert_eq!(value(&text, "nydusd_backend_read_bytes_total", &[a, bt]), Some(4096.0));
        assert_eq!(value(&text, "nydusd_backend_read_errors_total", &[a, bt]), Some(1.0));
        // 3 ms falls in le=0.005, 30 ms in le=0.05; buckets are cumulative.
        let h = "nydusd_backend_read_duration_seconds_bucket";
        assert_eq!(value(&text, h, &[a, ("le", "0.001")]), Some(0.0));
        assert_eq!(value(&text, h, &[a, ("le", "0.005")]), Some(1.0));
        assert_eq!(value(&text, h, &[a, ("le", "0.02")]), Some(1.0));
        assert_eq!(value(&text, h, &[a, ("le", "0.05")]), Some(2.0));
        assert_eq!(value(&text, h, &[a, ("le", "+Inf")]), Some(2.0));
        assert_eq!(value(&text, "nydusd_backend_read_duration_seconds_count", &[a]), Some(2.0));
        assert_eq!(value(&text, "nydusd_backend_reads_total", &[b2]), None, "no backend metrics, no series");
        for op in ["lookup", "read", "getattr", "batch_forget"] {
            assert_eq!(value(&text, "nydusd_fs_ops_total", &[b2, ("op", op)]), Some(0.0), "{op}");
        }
        assert!(!text.contains(r#"op="mkdir""#), "uncalled non-upstream ops are left out");
        let getattr = ("op", "getattr");
        let lookup = ("op", "lookup");
        assert_eq!(value(&text, "nydusd_fs_ops_total", &[a, getattr]), Some(3.0));
        assert_eq!(value(&text, "nydusd_fs_op_errors_total", &[a, getattr]), Some(0.0));
        assert_eq!(value(&text, "nydusd_fs_ops_total", &[a, lookup]), Some(1.0));
        assert_eq!(value(&text, "nydusd_fs_op_errors_total", &[a, lookup]), Some(1.0));
        let d = "nydusd_fs_op_duration_seconds_bucket";
        assert_eq!(value(&text, d, &[a, getattr, ("le", "+Inf")]), Some(3.0));
        assert_eq!(value(&text, "nydusd_fs_op_duration_seconds_count", &[a, getattr]), Some(3.0));
        assert_eq!(value(&text, "nydusd_fs_inflight_requests", &[a]), Some(0.0));
        assert_eq!(value(&text, "nydusd_fs_read_size_bytes_count", &[a]), Some(0.0));
        assert!(text.contains("# TYPE nydusd_fs_op_duration_seconds histogram"));
        assert!(text.contains("# TYPE nydusd_fs_ops counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        let (fs, _) = sample();
        let text = render(&[MountMetrics {
            mountpoint: "/mnt/we\"ird\\\n",
            fs: &fs,
            backend: None,
            cache: CacheMetrics::default(),
        }]);
        assert!(text.contains(r#"nydusd_cache_entries{mountpoint="/mnt/we\"ird\\\n"} 0"#), "{text}");
        assert!(text.lines().all(|l| !l.is_empty()));
    }

    #[test]
    fn no_mounts_is_still_valid() {
        let text = render(&[]);
        assert!(text.contains("# TYPE nydusd_fs_ops counter"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// Writes a rendering with real traffic to `target/metrics-sample.prom`
    /// for `tests/e2e/test_metrics_format.py`, which parses it with the
    /// Python `prometheus_client` parsers.
    #[test]
    fn write_sample_for_the_format_check() {
        let (fs, b) = sample();
        let cache = CacheMetrics { hits: 1, misses: 2, entries: 3, ..Default::default() };
        let text = render(&[
            MountMetrics { mountpoint: "/mnt/a", fs: &fs, backend: Some(&b), cache },
            MountMetrics { mountpoint: "/sub/\"b\"", fs: &fs, backend: None, cache },
        ]);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics-sample.prom"), text).unwrap();
    }
}
