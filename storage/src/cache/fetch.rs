//! Planning backend reads and turning stored chunk bytes into plain bytes.

use std::borrow::Cow;

use nydus_format::blob_meta::ChunkLocation;
use nydus_format::reader::BlobInfo;
use nydus_format::Digest;

use crate::error::{Result, StorageError};

/// One backend read covering chunks whose stored bytes are adjacent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    /// Offset in the blob.
    pub offset: u64,
    /// Bytes to read.
    pub len: u64,
    /// Chunks covered, ascending and consecutive.
    pub cis: Vec<u32>,
}

/// Group `cis` (ascending, in range) into runs of consecutive chunks with
/// contiguous stored ranges, each at most `max` bytes (a chunk bigger than
/// `max` is a run of its own; `max == 0` disables merging).
pub(crate) fn plan_runs(locs: &[ChunkLocation], cis: &[u32], max: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for &ci in cis {
        let Some(l) = locs.get(ci as usize) else {
            continue;
        };
        let size = l.compressed_size as u64;
        if let Some(r) = runs.last_mut() {
            let adjacent = r.cis.last().is_some_and(|&p| p + 1 == ci) && r.offset + r.len == l.compressed_offset;
            if adjacent && r.len + size <= max {
                r.len += size;
                r.cis.push(ci);
                continue;
            }
        }
        runs.push(Run { offset: l.compressed_offset, len: size, cis: vec![ci] });
    }
    runs
}

/// The chunks after `ci` that a read of `ci` may bring along: consecutive,
/// stored right after it, all together within `max` bytes.
pub(crate) fn amplify(locs: &[ChunkLocation], ci: u32, max: u64) -> Vec<u32> {
    let Some(first) = locs.get(ci as usize) else {
        return Vec::new();
    };
    let (mut end, mut total) = (first.compressed_offset + first.compressed_size as u64, first.compressed_size as u64);
    let mut out = Vec::new();
    for (i, l) in locs.iter().enumerate().skip(ci as usize + 1) {
        total += l.compressed_size as u64;
        if l.compressed_offset != end || total > max {
            break;
        }
        end += l.compressed_size as u64;
        out.push(i as u32);
    }
    out
}

/// Decompress (if stored compressed) and, when `digest` is given, verify
/// the stored bytes of chunk `ci`.
pub(crate) fn decode<'a>(
    info: &BlobInfo,
    ci: u32,
    loc: &ChunkLocation,
    stored: &'a [u8],
    digest: Option<&Digest>,
) -> Result<Cow<'a, [u8]>> {
    let plain = if loc.is_compressed() {
        let size = loc.uncompressed_size as usize;
        let plain = info.compressor.decompress(stored, size).map_err(|source| StorageError::Decompress {
            blob_id: info.blob_id.clone(),
            ci,
            source,
        })?;
        Cow::Owned(plain)
    } else {
        Cow::Borrowed(stored)
    };
    if digest.is_some_and(|d| info.digester.digest(&plain) != *d) {
        return Err(StorageError::DigestMismatch { blob_id: info.blob_id.clone(), ci });
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locs(sizes: &[u32]) -> Vec<ChunkLocation> {
        let mut off = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let l = ChunkLocation {
                    compressed_offset: off,
                    compressed_size: s,
                    uncompressed_offset: i as u64 * 4096,
                    uncompressed_size: 4096,
                };
                off += s as u64;
                l
            })
            .collect()
    }

    #[test]
    fn runs_merge_consecutive_chunks_up_to_max() {
        let l = locs(&[100, 100, 100, 500, 100, 100]);
        let r = plan_runs(&l, &[0, 1, 2, 3, 5], 300);
        let cis: Vec<_> = r.iter().map(|r| r.cis.clone()).collect();
        assert_eq!(cis, vec![vec![0, 1, 2], vec![3], vec![5]]);
        assert_eq!((r[1].offset, r[1].len), (300, 500));
        assert_eq!(plan_runs(&l, &[0, 1], 0).len(), 2);
        assert_eq!(amplify(&l, 0, 300), vec![1, 2]);
        assert_eq!(amplify(&l, 3, 700), vec![4, 5]);
        assert!(amplify(&l, 5, 1 << 20).is_empty());
        assert!(amplify(&l, 9, 1 << 20).is_empty());
    }
}
