//! [`MeteredBackend`]: counts and times every read of every blob reader a
//! backend hands out, into one [`BackendMetrics`].
//!
//! [`crate::new_backend`] wraps every backend it builds in one, so all
//! backends are measured the same way whatever their transport; retries
//! inside a backend are part of the measured read.

use std::sync::Arc;
use std::time::Instant;

use super::{BlobBackend, BlobReader};
use crate::config::BackendConfig;
use crate::error::Result;
use crate::metrics::BackendMetrics;

/// A backend whose readers record their traffic.
pub struct MeteredBackend {
    inner: Arc<dyn BlobBackend>,
    metrics: Arc<BackendMetrics>,
}

impl MeteredBackend {
    /// Measure the reads of `inner` into fresh metrics labelled `backend_type`.
    pub fn new(inner: Arc<dyn BlobBackend>, backend_type: &'static str) -> Self {
        Self { inner, metrics: Arc::new(BackendMetrics::new(backend_type)) }
    }

    /// The backend being measured.
    pub fn inner(&self) -> &Arc<dyn BlobBackend> {
        &self.inner
    }
}

impl BlobBackend for MeteredBackend {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        let reader = self.inner.open_blob(blob_id)?;
        Ok(Arc::new(MeteredReader { inner: reader, metrics: self.metrics.clone() }))
    }

    fn metrics(&self) -> Option<Arc<BackendMetrics>> {
        Some(self.metrics.clone())
    }
}

struct MeteredReader {
    inner: Arc<dyn BlobReader>,
    metrics: Arc<BackendMetrics>,
}

impl BlobReader for MeteredReader {
    fn blob_size(&self) -> Result<u64> {
        self.inner.blob_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let start = Instant::now();
        let r = self.inner.read_at(buf, offset);
        let bytes = r.as_ref().map_or(0, |&n| n as u64);
        self.metrics.record_read(bytes, start.elapsed(), r.is_err());
        r
    }
}

/// The `backend_type` label of a configuration (upstream's names).
pub fn backend_type(cfg: &BackendConfig) -> &'static str {
    match cfg {
        BackendConfig::LocalFs(_) => "localfs",
        BackendConfig::Registry(_) => "registry",
        BackendConfig::S3(_) => "s3",
        BackendConfig::Oss(_) => "oss",
        BackendConfig::HttpProxy(_) => "http-proxy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StorageError;
    use crate::testutil::{localfs, BlobSpec, TestBlob};

    #[test]
    fn readers_record_reads_bytes_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let blob = TestBlob::create(dir.path(), &BlobSpec::default());
        let size = std::fs::metadata(&blob.path).unwrap().len();
        let b = MeteredBackend::new(localfs(dir.path()), "localfs");
        let m = b.metrics().unwrap();
        let r = b.open_blob(blob.id()).unwrap();
        let mut buf = vec![0u8; 1000];
        assert_eq!(r.read_at(&mut buf, 0).unwrap(), 1000);
        assert_eq!(r.read_at(&mut buf, size - 10).unwrap(), 10);
        assert_eq!(r.read_at(&mut buf, size + 5).unwrap(), 0);
        let s = m.snapshot();
        assert_eq!((s.reads, s.read_bytes, s.read_errors), (3, 1010, 0));
        assert_eq!(s.latency_us.count(), 3);
        // A missing blob fails at open, which is not a read.
        assert!(matches!(b.open_blob("nope"), Err(StorageError::BlobNotFound { .. })));
        assert_eq!(m.snapshot().reads, 3);
    }

    #[test]
    fn new_backend_returns_a_metered_backend() {
        let dir = tempfile::tempdir().unwrap();
        let blob = TestBlob::create(dir.path(), &BlobSpec::default());
        let b = localfs(dir.path());
        let m = b.metrics().expect("new_backend wraps every backend");
        let mut buf = [0u8; 64];
        b.open_blob(blob.id()).unwrap().read_at(&mut buf, 0).unwrap();
        let j = m.snapshot_json();
        assert_eq!(j["backend_type"], "localfs");
        assert_eq!(j["read_count"], 1);
        assert_eq!(j["read_amount_total"], 64);
    }

    struct Failing;
    impl BlobReader for Failing {
        fn blob_size(&self) -> Result<u64> {
            Ok(1)
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> Result<usize> {
            Err(StorageError::BackendConfig("boom".into()))
        }
    }
    struct FailingBackend;
    impl BlobBackend for FailingBackend {
        fn open_blob(&self, _: &str) -> Result<Arc<dyn BlobReader>> {
            Ok(Arc::new(Failing))
        }
    }

    #[test]
    fn failed_reads_count_as_errors() {
        let b = MeteredBackend::new(Arc::new(FailingBackend), "registry");
        let r = b.open_blob("x").unwrap();
        assert!(r.read_at(&mut [0u8; 8], 0).is_err());
        let s = b.metrics().unwrap().snapshot();
        assert_eq!((s.reads, s.read_errors, s.read_bytes), (1, 1, 0));
    }
}
