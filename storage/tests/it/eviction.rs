//! `max_size`: the cache directory stays within the limit.

use nydus_storage::testutil::{BlobSpec, Rng};
use nydus_storage::CacheConfig;

use crate::util::{allocated_bytes, check_all, check_read, Fixture};

const CHUNK: u64 = 16 << 10;

#[test]
fn reads_stay_correct_and_within_the_limit() {
    let f = Fixture::new(&BlobSpec { chunk_count: 64, chunk_size: CHUNK as usize, ..Default::default() });
    let limit = f.blob.info.uncompressed_size / 4;
    let m = f.manager(CacheConfig { max_size: Some(limit), amplify_io: 64 << 10, ..f.cfg() });
    let blob = f.open(&m);
    let mut rng = Rng::new(3);
    for round in 0..3 {
        check_all(&blob, &f.blob);
        for _ in 0..64 {
            check_read(&blob, &f.blob, rng.below(64) as u32, 0, 512);
        }
        let du = allocated_bytes(&f.work_dir);
        assert!(du <= limit + CHUNK, "round {round}: {du} bytes on disk, limit {limit}");
    }
    let mt = m.metrics();
    assert!(mt.evictions > 0, "{mt:?}");
    assert!(mt.cached_bytes <= limit, "{mt:?}");
    let cached = (0..64).filter(|&ci| blob.is_cached(ci)).count() as u64;
    assert_eq!(cached, mt.entries);
    assert!(cached * CHUNK <= limit);

    // The evictions were persisted: a restart trusts exactly the kept chunks.
    drop(blob);
    drop(m);
    let m = f.manager(CacheConfig { max_size: Some(limit), ..f.cfg() });
    let blob = f.open(&m);
    assert_eq!((0..64).filter(|&ci| blob.is_cached(ci)).count() as u64, cached);
    let before = f.reads();
    for ci in (0..64).filter(|&ci| blob.is_cached(ci)) {
        check_read(&blob, &f.blob, ci, 0, f.blob.chunks[ci as usize].len() as u32);
    }
    assert_eq!(f.reads(), before);
}

#[test]
fn concurrent_readers_with_a_tiny_cache() {
    let f = Fixture::new(&BlobSpec { chunk_count: 32, chunk_size: CHUNK as usize, ..Default::default() });
    let limit = 4 * CHUNK;
    let m = f.manager(CacheConfig { max_size: Some(limit), amplify_io: 0, ..f.cfg() });
    let blob = f.open(&m);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (blob, truth) = (&blob, &f.blob);
            s.spawn(move || {
                let mut rng = Rng::new(t);
                for _ in 0..60 {
                    let ci = rng.below(32) as u32;
                    let size = truth.chunks[ci as usize].len() as u64;
                    let off = rng.below(size);
                    check_read(blob, truth, ci, off as u32, (size - off) as u32);
                }
            });
        }
    });
    assert!(allocated_bytes(&f.work_dir) <= limit + CHUNK * 7, "pinned chunks may overshoot by one per reader");
    assert!(m.metrics().evictions > 0);
}

#[test]
fn a_chunk_larger_than_the_limit_is_still_served() {
    let f = Fixture::new(&BlobSpec { chunk_count: 4, chunk_size: CHUNK as usize, ..Default::default() });
    let m = f.manager(CacheConfig { max_size: Some(8 << 10), ..f.cfg() });
    let blob = f.open(&m);
    check_all(&blob, &f.blob);
    check_all(&blob, &f.blob);
    assert!(m.metrics().entries <= 1);
}
