//! Bad blobs and bad data: clear errors, nothing bad cached.

use nydus_format::flags;
use nydus_storage::testutil::{BlobSpec, VecSink};
use nydus_storage::{CacheConfig, StorageError};

use crate::util::{check_read, Fixture};

#[test]
fn missing_blob_names_id_and_paths() {
    let f = Fixture::new(&BlobSpec::default());
    std::fs::remove_file(&f.blob.path).unwrap();
    let m = f.manager(f.cfg());
    let e = m.open_blob(&f.blob.info, vec![]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StorageError::BlobNotFound { .. }), "{msg}");
    assert!(msg.contains(f.blob.id()) && msg.contains(&f.blobs.join(f.blob.id()).display().to_string()), "{msg}");
}

#[test]
fn truncated_blob_is_rejected() {
    let f = Fixture::new(&BlobSpec::default());
    let len = std::fs::metadata(&f.blob.path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f.blob.path).unwrap().set_len(len - 100).unwrap();
    let m = f.manager(f.cfg());
    let e = m.open_blob(&f.blob.info, vec![]).unwrap_err();
    assert!(matches!(e, StorageError::SizeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn damaged_trailer_and_unsupported_features_are_rejected() {
    let f = Fixture::new(&BlobSpec::default());
    let mut bytes = std::fs::read(&f.blob.path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff; // second header magic
    std::fs::write(&f.blob.path, &bytes).unwrap();
    let m = f.manager(f.cfg());
    let e = m.open_blob(&f.blob.info, vec![]).unwrap_err();
    assert!(matches!(e, StorageError::BlobMeta { .. }), "{e}");
    assert!(e.to_string().contains(f.blob.id()), "{e}");

    let mut info = f.blob.info.clone();
    info.features |= flags::BLOB_ENCRYPTED | flags::BLOB_CHUNK_INFO_V2;
    let e = m.open_blob(&info, vec![]).unwrap_err();
    assert!(matches!(e, StorageError::Unsupported(_)), "{e}");
    let mut info = f.blob.info.clone();
    info.blob_id = "../escape".into();
    assert!(matches!(m.open_blob(&info, vec![]), Err(StorageError::InvalidBlobId(_))));
}

#[test]
fn digest_mismatch_fails_that_chunk_only() {
    let f = Fixture::new(&BlobSpec { chunk_count: 8, ..Default::default() });
    let mut digests = f.blob.digests.clone();
    digests[3] = Some([0xab; 32]);
    let m = f.manager(CacheConfig { digest_validate: true, amplify_io: 1 << 20, ..f.cfg() });
    let blob = m.open_blob(&f.blob.info, digests).unwrap();
    // Chunk 2's read brings chunks 3.. along; 3 fails quietly, the rest land.
    check_read(&blob, &f.blob, 2, 0, 64);
    assert!(!blob.is_cached(3) && blob.is_cached(4) && blob.is_cached(7));
    for _ in 0..2 {
        let e = blob.read_chunk(3, 0, 64, &mut VecSink::default()).unwrap_err();
        assert!(matches!(e, StorageError::DigestMismatch { ci: 3, .. }), "{e}");
        assert!(!blob.is_cached(3));
    }
    let e = blob.ensure(&[1, 3, 5], false).unwrap_err();
    assert!(matches!(e, StorageError::DigestMismatch { ci: 3, .. }), "{e}");
    assert!(blob.is_cached(1));
    check_read(&blob, &f.blob, 0, 0, 4096);
    assert_eq!(m.metrics().digest_errors, 4);

    // Without validation the (wrong) digest is not consulted.
    drop(blob);
    drop(m);
    let m = f.manager(CacheConfig { digest_validate: false, ..f.cfg() });
    let blob = m.open_blob(&f.blob.info, vec![None, None, None, Some([0xab; 32])]).unwrap();
    check_read(&blob, &f.blob, 3, 0, 64);
}
