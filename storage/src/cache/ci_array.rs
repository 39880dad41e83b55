//! The chunk-information (ci) array of a blob: where each chunk is stored
//! and where its plain bytes go.
//!
//! It is read once from the blob trailer (`ci_compressed_size + 4096` bytes
//! at `ci_offset`, decoded by [`nydus_format::blob_meta::decode_trailer`])
//! and persisted as `<id>.blob.meta`, so that a warm restart reads nothing
//! from the backend. That file is a 64-byte header (magic "NYBM", version,
//! chunk count, CRC-32C of the entries, blob id hash, and the bootstrap's
//! sizes of the blob) followed by the v1 ci entries, uncompressed.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nydus_format::blob_meta::{decode_ci_v1, decode_trailer, encode_ci_v1, ChunkLocation, CI_V1_SIZE};
use nydus_format::codec::crc32c;
use nydus_format::reader::BlobInfo;

use super::id_hash;
use crate::backend::{read_full, BlobReader};
use crate::error::{Result, StorageError};

const MAGIC: u32 = 0x4d42_594e; // "NYBM"
const VERSION: u32 = 1;
const HEADER: usize = 64;

fn meta_err(info: &BlobInfo, reason: impl Into<String>) -> StorageError {
    StorageError::BlobMeta { blob_id: info.blob_id.clone(), reason: reason.into() }
}

/// Read and decode the ci array from the blob itself.
pub(crate) fn load_from_blob(reader: &dyn BlobReader, info: &BlobInfo) -> Result<Vec<ChunkLocation>> {
    let len = info.ci_compressed_size.checked_add(4096).filter(|&n| {
        n <= (1 << 28) + 4096 && info.ci_offset.checked_add(n).is_some_and(|end| end <= info.compressed_size)
    });
    let Some(len) = len else {
        return Err(meta_err(info, "the ci array lies outside the blob or is implausibly large"));
    };
    let mut buf = vec![0u8; len as usize];
    read_full(reader, &info.blob_id, &mut buf, info.ci_offset)?;
    let locs = decode_trailer(&info.ci_descriptor(), &buf).map_err(|e| meta_err(info, e.to_string()))?;
    check(info, &locs)?;
    Ok(locs)
}

/// Check what the cache relies on: the chunk count, and that every chunk's
/// plain bytes fit the uncompressed space and its stored bytes precede the
/// ci array.
pub(crate) fn check(info: &BlobInfo, locs: &[ChunkLocation]) -> Result<()> {
    if locs.len() != info.chunk_count as usize {
        return Err(meta_err(info, format!("{} ci entries for {} chunks", locs.len(), info.chunk_count)));
    }
    for (i, l) in locs.iter().enumerate() {
        let uend = l.uncompressed_offset.checked_add(l.uncompressed_size as u64);
        let cend = l.compressed_offset.checked_add(l.compressed_size as u64);
        if uend.is_none_or(|e| e > info.uncompressed_size) || cend.is_none_or(|e| e > info.ci_offset) {
            return Err(meta_err(info, format!("chunk {i} lies outside the blob")));
        }
    }
    Ok(())
}

fn header(info: &BlobInfo, crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    let fields: [u64; 6] = [
        id_hash(&info.blob_id),
        info.compressed_size,
        info.uncompressed_size,
        info.ci_offset,
        info.ci_compressed_size,
        info.ci_uncompressed_size,
    ];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&info.chunk_count.to_le_bytes());
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    for (i, f) in fields.iter().enumerate() {
        h[16 + 8 * i..24 + 8 * i].copy_from_slice(&f.to_le_bytes());
    }
    h
}

/// Size of the persisted file.
pub(crate) fn file_len(info: &BlobInfo) -> u64 {
    HEADER as u64 + info.chunk_count as u64 * CI_V1_SIZE as u64
}

/// What [`load_persisted`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Persisted {
    /// A consistent array for this blob.
    Valid(Vec<ChunkLocation>),
    /// No file.
    Missing,
    /// A damaged file, or one describing another blob.
    Invalid(String),
}

/// Load the array persisted at `path` for `info`.
pub(crate) fn load_persisted(path: &Path, info: &BlobInfo) -> Result<Persisted> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Persisted::Missing),
        Err(e) => return Err(StorageError::io("opening", path, e)),
    };
    let len = file.metadata().map_err(|e| StorageError::io("inspecting", path, e))?.len();
    if len != file_len(info) {
        return Ok(Persisted::Invalid(format!("size {len}, expected {}", file_len(info))));
    }
    let mut raw = vec![0u8; len as usize];
    file.read_exact_at(&mut raw, 0).map_err(|e| StorageError::io("reading", path, e))?;
    let (head, body) = raw.split_at(HEADER);
    if head != header(info, crc32c(body)) {
        return Ok(Persisted::Invalid("header or checksum does not match the blob".into()));
    }
    let locs: Vec<_> = body.chunks_exact(CI_V1_SIZE).filter_map(|e| e.try_into().ok()).map(decode_ci_v1).collect();
    Ok(match check(info, &locs) {
        Ok(()) => Persisted::Valid(locs),
        Err(e) => Persisted::Invalid(e.to_string()),
    })
}

/// Persist `locs` at `path` (written to a temporary file, then renamed).
pub(crate) fn persist(path: &Path, info: &BlobInfo, locs: &[ChunkLocation]) -> Result<()> {
    let mut body = Vec::with_capacity(locs.len() * CI_V1_SIZE);
    for l in locs {
        body.extend_from_slice(&encode_ci_v1(l).map_err(|e| meta_err(info, e.to_string()))?);
    }
    let tmp = path.with_extension("meta.tmp");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&header(info, crc32c(&body)))?;
        f.write_all(&body)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| StorageError::io("writing", &tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{BlobSpec, TestBlob};

    #[test]
    fn persisted_roundtrip_and_corruption() {
        let t = tempfile::tempdir().unwrap();
        let blob = TestBlob::create(t.path(), &BlobSpec { chunk_count: 9, ..Default::default() });
        let p = t.path().join("x.blob.meta");
        assert_eq!(load_persisted(&p, &blob.info).unwrap(), Persisted::Missing);
        persist(&p, &blob.info, &blob.locations).unwrap();
        assert_eq!(load_persisted(&p, &blob.info).unwrap(), Persisted::Valid(blob.locations.clone()));
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0x55], HEADER as u64 + 3).unwrap();
        assert!(matches!(load_persisted(&p, &blob.info).unwrap(), Persisted::Invalid(_)));
        let mut other = blob.info.clone();
        other.compressed_size += 1;
        persist(&p, &blob.info, &blob.locations).unwrap();
        assert!(matches!(load_persisted(&p, &other).unwrap(), Persisted::Invalid(_)));
    }

    #[test]
    fn locations_outside_the_blob_are_rejected() {
        let t = tempfile::tempdir().unwrap();
        let blob = TestBlob::create(t.path(), &BlobSpec { chunk_count: 3, ..Default::default() });
        let mut locs = blob.locations.clone();
        locs[2].uncompressed_size = u32::MAX;
        assert!(check(&blob.info, &locs).is_err());
        assert!(check(&blob.info, &locs[..2]).is_err());
    }
}
