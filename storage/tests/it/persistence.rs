//! Warm restarts, damaged cache files, and the directory lock.

use std::os::unix::fs::FileExt;

use nydus_storage::testutil::{self, BlobSpec, CountingBackend};
use nydus_storage::{BlobCacheManager, StorageError};

use crate::util::{check_all, Fixture};

#[test]
fn warm_restart_reads_nothing_from_the_backend() {
    let f = Fixture::new(&BlobSpec { chunk_count: 20, ..Default::default() });
    {
        let m = f.manager(f.cfg());
        check_all(&f.open(&m), &f.blob);
    }
    // A new manager whose backend no longer has the blob at all.
    std::fs::remove_file(&f.blob.path).unwrap();
    let backend = CountingBackend::new(testutil::localfs(&f.blobs));
    let m = BlobCacheManager::new(f.cfg(), backend.clone()).unwrap();
    let blob = m.open_blob(&f.blob.info, f.blob.digests.clone()).unwrap();
    assert!((0..20).all(|ci| blob.is_cached(ci)));
    check_all(&blob, &f.blob);
    assert_eq!(backend.counts.reads(), 0);
    assert_eq!(backend.counts.opens.load(std::sync::atomic::Ordering::SeqCst), 0);
    let mt = m.metrics();
    assert_eq!((mt.hits, mt.misses, mt.entries), (20, 0, 20));
}

fn corrupt(path: &std::path::Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

#[test]
fn damaged_chunk_map_discards_the_cache() {
    let f = Fixture::new(&BlobSpec { chunk_count: 10, ..Default::default() });
    let map = f.work_dir.join(format!("{}.chunk_map", f.blob.id()));
    let data = f.work_dir.join(format!("{}.blob.data", f.blob.id()));
    for damage in 0..2 {
        {
            let m = f.manager(f.cfg());
            check_all(&f.open(&m), &f.blob);
        }
        if damage == 0 {
            corrupt(&map, 0); // magic
        } else {
            std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(4096).unwrap();
        }
        let before = f.reads();
        let m = f.manager(f.cfg());
        let blob = f.open(&m);
        assert!((0..10).all(|ci| !blob.is_cached(ci)), "damage {damage}: stale chunks trusted");
        check_all(&blob, &f.blob);
        assert!(f.reads() > before);
        assert_eq!(std::fs::metadata(&data).unwrap().len(), f.blob.info.uncompressed_size);
    }
}

#[test]
fn damaged_meta_file_is_reloaded_and_data_kept() {
    let f = Fixture::new(&BlobSpec { chunk_count: 10, ..Default::default() });
    {
        let m = f.manager(f.cfg());
        check_all(&f.open(&m), &f.blob);
    }
    corrupt(&f.work_dir.join(format!("{}.blob.meta", f.blob.id())), 100);
    let before = f.reads();
    let m = f.manager(f.cfg());
    let blob = f.open(&m);
    assert_eq!(f.reads() - before, 1, "only the ci array is read again");
    assert!((0..10).all(|ci| blob.is_cached(ci)));
    check_all(&blob, &f.blob);
    assert_eq!(f.reads() - before, 1);
}

#[test]
fn second_manager_on_one_work_dir_is_refused() {
    let f = Fixture::new(&BlobSpec::default());
    let m = f.manager(f.cfg());
    let e = BlobCacheManager::new(f.cfg(), f.backend.clone()).unwrap_err();
    assert!(matches!(e, StorageError::Locked { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&f.work_dir.display().to_string()) && msg.contains("another nydusd"), "{msg}");
    // The lock lives as long as a blob does, and goes with the last one.
    let blob = f.open(&m);
    drop(m);
    assert!(BlobCacheManager::new(f.cfg(), f.backend.clone()).is_err());
    drop(blob);
    BlobCacheManager::new(f.cfg(), f.backend.clone()).unwrap();
}

#[test]
fn reopening_a_blob_reuses_it() {
    let f = Fixture::new(&BlobSpec::default());
    let m = f.manager(f.cfg());
    let a = f.open(&m);
    let b = f.open(&m);
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    a.ensure(&[0, 1], false).unwrap();
    drop((a, b));
    let reads = f.reads();
    let c = f.open(&m);
    assert!(c.is_cached(1));
    assert_eq!(f.reads(), reads);
    assert_eq!(m.metrics().entries, 2, "a reopened store is not counted twice");
}
