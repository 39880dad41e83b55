//! Shared fixtures.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nydus_storage::testutil::{self, BlobSpec, CountingBackend, TestBlob, VecSink};
use nydus_storage::{BlobCacheManager, CacheConfig, CachedBlob};
use tempfile::TempDir;

/// A blob in `blobs/`, a cache directory `cache/`, and a counting backend.
pub struct Fixture {
    pub _tmp: TempDir,
    pub blobs: PathBuf,
    pub work_dir: PathBuf,
    pub blob: TestBlob,
    pub backend: Arc<CountingBackend>,
}

impl Fixture {
    pub fn new(spec: &BlobSpec) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        let work_dir = tmp.path().join("cache");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = TestBlob::create(&blobs, spec);
        let backend = CountingBackend::new(testutil::localfs(&blobs));
        Self { _tmp: tmp, blobs, work_dir, blob, backend }
    }

    pub fn cfg(&self) -> CacheConfig {
        testutil::cache_config(&self.work_dir)
    }

    pub fn manager(&self, cfg: CacheConfig) -> Arc<BlobCacheManager> {
        BlobCacheManager::new(cfg, self.backend.clone()).unwrap()
    }

    pub fn open(&self, m: &Arc<BlobCacheManager>) -> Arc<CachedBlob> {
        m.open_blob(&self.blob.info, self.blob.digests.clone()).unwrap()
    }

    /// Backend `read_at` calls so far.
    pub fn reads(&self) -> u64 {
        self.backend.counts.reads()
    }
}

/// Read `[off, off + len)` of chunk `ci` and compare with the truth.
pub fn check_read(blob: &CachedBlob, truth: &TestBlob, ci: u32, off: u32, len: u32) {
    let mut sink = VecSink::default();
    let n = blob.read_chunk(ci, off, len, &mut sink).unwrap_or_else(|e| panic!("chunk {ci}: {e}"));
    assert_eq!(n, len as usize);
    let want = &truth.chunks[ci as usize][off as usize..(off + len) as usize];
    assert!(sink.0 == want, "chunk {ci} [{off}+{len}] differs");
}

/// Read every chunk whole and compare.
pub fn check_all(blob: &CachedBlob, truth: &TestBlob) {
    for ci in 0..blob.chunk_count() {
        check_read(blob, truth, ci, 0, truth.chunks[ci as usize].len() as u32);
    }
}

/// Disk space used by the files in `dir`, as `du` counts it.
pub fn allocated_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().blocks() * 512).sum()
}

pub fn total_stored(truth: &TestBlob) -> u64 {
    truth.locations.iter().map(|l| l.compressed_size as u64).sum()
}
