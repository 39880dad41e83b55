//! Read correctness, fetch granularity and merging.

use nydus_format::{Compressor, Digester};
use nydus_storage::testutil::{BlobSpec, Rng, VecSink};
use nydus_storage::{CacheKind, StorageError};

use crate::util::{check_all, check_read, total_stored, Fixture};

#[test]
fn every_compressor_reads_correctly() {
    for compressor in [Compressor::Zstd, Compressor::Lz4Block, Compressor::None] {
        for digester in [Digester::Blake3, Digester::Sha256] {
            let f = Fixture::new(&BlobSpec { compressor, digester, chunk_count: 12, ..Default::default() });
            let stored_plain = f.blob.locations.iter().filter(|l| !l.is_compressed()).count();
            if compressor != Compressor::None {
                assert!(
                    stored_plain > 0 && stored_plain < 12,
                    "{compressor:?}: want a mix of compressed and stored chunks"
                );
            }
            let m = f.manager(nydus_storage::CacheConfig { digest_validate: true, ..f.cfg() });
            let blob = f.open(&m);
            let mut rng = Rng::new(7);
            for _ in 0..40 {
                let ci = rng.below(12) as u32;
                let size = f.blob.chunks[ci as usize].len() as u64;
                let off = rng.below(size);
                let len = rng.below(size - off + 1);
                check_read(&blob, &f.blob, ci, off as u32, len as u32);
            }
            check_all(&blob, &f.blob);
            let mt = m.metrics();
            assert_eq!(mt.digest_errors, 0);
            assert_eq!(mt.entries, 12);
            assert!(mt.hits > 0 && mt.misses > 0, "{mt:?}");
        }
    }
}

#[test]
fn only_requested_chunks_are_fetched() {
    let f = Fixture::new(&BlobSpec { chunk_count: 10, ..Default::default() });
    let cfg = nydus_storage::CacheConfig { amplify_io: 0, ..f.cfg() };
    {
        let m = f.manager(cfg.clone());
        let blob = f.open(&m);
        let after_open = f.reads();
        assert_eq!(after_open, 1, "the ci array is one read");
        blob.ensure(&[3, 7, 3], false).unwrap();
        assert_eq!(f.reads() - after_open, 2);
        check_read(&blob, &f.blob, 5, 100, 1000);
        assert_eq!(f.reads() - after_open, 3);
        let cached: Vec<u32> = (0..10).filter(|&ci| blob.is_cached(ci)).collect();
        assert_eq!(cached, vec![3, 5, 7]);
    }
    // The persisted bitmap says the same.
    let m = f.manager(cfg);
    let blob = f.open(&m);
    let cached: Vec<u32> = (0..10).filter(|&ci| blob.is_cached(ci)).collect();
    assert_eq!(cached, vec![3, 5, 7]);
}

#[test]
fn adjacent_chunks_are_merged_up_to_amplify_io() {
    let f = Fixture::new(&BlobSpec { chunk_count: 24, ..Default::default() });
    let locs = &f.blob.locations;
    let amplify = 40 << 10;
    let m = f.manager(nydus_storage::CacheConfig { amplify_io: amplify, ..f.cfg() });
    let blob = f.open(&m);
    let base = f.reads();
    // read_chunk brings along the following chunks that fit in amplify_io.
    check_read(&blob, &f.blob, 0, 0, 10);
    assert_eq!(f.reads() - base, 1);
    let mut fit = 0;
    let mut total = 0;
    for l in locs.iter() {
        total += l.compressed_size as u64;
        if total > amplify {
            break;
        }
        fit += 1;
    }
    assert!(fit > 1 && fit < 24, "fixture: {fit} chunks fit");
    let cached = (0..24).filter(|&ci| blob.is_cached(ci)).count();
    assert_eq!(cached, fit);
    // ensure of everything: runs of at most amplify_io, never a chunk twice.
    blob.ensure(&(0..24).collect::<Vec<_>>(), false).unwrap();
    assert!((0..24).all(|ci| blob.is_cached(ci)));
    let mt = m.metrics();
    assert_eq!(mt.backend_reads, f.reads() - base);
    assert_eq!(mt.backend_bytes, total_stored(&f.blob));
    assert!(mt.backend_reads < 24, "{mt:?}");
    assert!(mt.backend_bytes / mt.backend_reads <= amplify);
}

#[test]
fn bad_chunk_indexes_and_ranges_are_errors() {
    let f = Fixture::new(&BlobSpec { chunk_count: 3, ..Default::default() });
    let m = f.manager(f.cfg());
    let blob = f.open(&m);
    let mut sink = VecSink::default();
    let e = blob.read_chunk(3, 0, 1, &mut sink).unwrap_err();
    assert!(matches!(e, StorageError::ChunkOutOfRange { ci: 3, count: 3, .. }), "{e}");
    let size = f.blob.chunks[0].len() as u32;
    let e = blob.read_chunk(0, size - 1, 2, &mut sink).unwrap_err();
    assert!(matches!(e, StorageError::RangeOutOfChunk { .. }), "{e}");
    assert!(blob.ensure(&[0, 9], false).is_err());
    assert_eq!(blob.read_chunk(0, size, 0, &mut sink).unwrap(), 0);
    assert!(sink.0.is_empty());
}

#[test]
fn dummy_cache_reads_without_files() {
    let f = Fixture::new(&BlobSpec { chunk_count: 8, ..Default::default() });
    let m = f.manager(nydus_storage::CacheConfig { kind: CacheKind::Dummy, digest_validate: true, ..f.cfg() });
    let blob = f.open(&m);
    check_all(&blob, &f.blob);
    check_read(&blob, &f.blob, 7, 5, 300);
    blob.ensure(&[1, 2], true).unwrap();
    assert!(!blob.is_cached(1));
    assert!(!f.work_dir.exists(), "the dummy cache created {}", f.work_dir.display());
    assert_eq!(m.metrics().backend_reads, 9);
}
