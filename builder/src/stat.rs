//! `stat`: counts, sizes, and how well an image's data is deduplicated and
//! compressed, for the whole image and for each of its blobs.
//!
//! Terms: a *chunk reference* is one slot of a file's chunk list; a *unique
//! chunk* is one distinct (blob, chunk index) pair referenced; a blob's
//! *stored chunks* are all the chunks it holds, referenced by this image or
//! not (a blob shared with other images, or whose files were deleted by an
//! upper layer, holds chunks this image no longer needs).

use std::collections::{HashMap, HashSet};

use nydus_format::writer::libc_ifmt as ifmt;
use nydus_format::{Bootstrap, FormatError};
use serde::Serialize;

/// Per-blob figures of `stat`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BlobStat {
    /// Blob id.
    pub blob_id: String,
    /// Chunks the blob holds.
    pub stored_chunks: u32,
    /// Of those, distinct chunks this image references.
    pub referenced_chunks: u64,
    /// References from files into this blob (a chunk may be referenced many times).
    pub chunk_refs: u64,
    /// Blob file size.
    pub stored_bytes: u64,
    /// Stored bytes of the referenced chunks.
    pub referenced_bytes: u64,
    /// referenced_chunks / stored_chunks (1.0 for an empty blob).
    pub used_ratio: f64,
}

/// Result of `stat`.
#[derive(Debug, Default, Serialize)]
pub struct StatReport {
    /// Regular file inodes.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Devices, fifos, sockets.
    pub specials: u64,
    /// Extra hard-link names.
    pub hardlinks: u64,
    /// Bytes of regular files (each inode once).
    pub file_bytes: u64,
    /// Chunk references.
    pub chunk_refs: u64,
    /// Plain bytes of all chunk references.
    pub chunk_ref_bytes: u64,
    /// Distinct chunks referenced.
    pub unique_chunks: u64,
    /// Plain bytes of distinct chunks.
    pub unique_chunk_bytes: u64,
    /// Plain bytes not stored thanks to dedup: chunk_ref_bytes - unique_chunk_bytes.
    pub dedup_saved_bytes: u64,
    /// Stored bytes of distinct chunks.
    pub stored_chunk_bytes: u64,
    /// chunk_ref_bytes / unique_chunk_bytes (1.0: nothing deduplicated).
    pub dedup_ratio: f64,
    /// unique_chunk_bytes / stored_chunk_bytes.
    pub compression_ratio: f64,
    /// Bootstrap size.
    pub bootstrap_size: u64,
    /// Total of blob sizes.
    pub blob_bytes: u64,
    /// Per blob, in blob-table order.
    pub blobs: Vec<BlobStat>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Compute statistics.
pub fn stat<B: AsRef<[u8]>>(boot: &Bootstrap<B>) -> std::result::Result<StatReport, FormatError> {
    let mut s = StatReport { bootstrap_size: boot.bytes().len() as u64, ..Default::default() };
    s.blobs = boot
        .blobs
        .iter()
        .map(|b| BlobStat {
            blob_id: b.blob_id.clone(),
            stored_chunks: b.chunk_count,
            stored_bytes: b.compressed_size,
            ..Default::default()
        })
        .collect();
    let mut seen = HashSet::new();
    // (blob, chunk) → (plain size, stored size), once per distinct chunk.
    let mut chunks: HashMap<(u32, u32), (u32, u32)> = HashMap::new();
    boot.walk(|p, _e, ino| {
        if p == b"/" {
            return Ok(());
        }
        if !seen.insert(ino.nid) {
            s.hardlinks += 1;
            return Ok(());
        }
        match ino.kind() {
            ifmt::S_IFREG => {
                s.files += 1;
                s.file_bytes += ino.size;
                for c in boot.chunks(ino)? {
                    let key = (c.blob_index, c.ci_index);
                    let plain = match chunks.get(&key) {
                        Some(v) => v.0,
                        None => {
                            let r = boot.chunk_info(&c)?;
                            let v = (r.uncompressed_size, r.compressed_size);
                            chunks.insert(key, v);
                            s.unique_chunks += 1;
                            s.unique_chunk_bytes += v.0 as u64;
                            s.stored_chunk_bytes += v.1 as u64;
                            if let Some(b) = s.blobs.get_mut(c.blob_index as usize) {
                                b.referenced_chunks += 1;
                                b.referenced_bytes += v.1 as u64;
                            }
                            v.0
                        }
                    };
                    s.chunk_refs += 1;
                    s.chunk_ref_bytes += plain as u64;
                    if let Some(b) = s.blobs.get_mut(c.blob_index as usize) {
                        b.chunk_refs += 1;
                    }
                }
            }
            ifmt::S_IFDIR => s.dirs += 1,
            ifmt::S_IFLNK => s.symlinks += 1,
            _ => s.specials += 1,
        }
        Ok(())
    })?;
    s.dirs += 1;
    s.blob_bytes = s.blobs.iter().map(|b| b.stored_bytes).sum();
    for b in &mut s.blobs {
        b.used_ratio = ratio(b.referenced_chunks, b.stored_chunks as u64);
    }
    s.dedup_saved_bytes = s.chunk_ref_bytes - s.unique_chunk_bytes;
    s.dedup_ratio = ratio(s.chunk_ref_bytes, s.unique_chunk_bytes);
    s.compression_ratio = ratio(s.unique_chunk_bytes, s.stored_chunk_bytes);
    Ok(s)
}

/// `stat` as human-readable lines.
pub fn render(s: &StatReport) -> String {
    let mut out = format!(
        "files {}  dirs {}  symlinks {}  specials {}  extra hard links {}\n",
        s.files, s.dirs, s.symlinks, s.specials, s.hardlinks
    );
    out += &format!(
        "file data {} bytes in {} chunk refs ({} bytes), {} unique chunks ({} bytes), dedup ratio {:.3} ({} bytes saved)\n",
        s.file_bytes, s.chunk_refs, s.chunk_ref_bytes, s.unique_chunks, s.unique_chunk_bytes, s.dedup_ratio,
        s.dedup_saved_bytes
    );
    out += &format!(
        "stored {} bytes, compression ratio {:.3}; bootstrap {} bytes, blobs {} bytes\n",
        s.stored_chunk_bytes, s.compression_ratio, s.bootstrap_size, s.blob_bytes
    );
    for (i, b) in s.blobs.iter().enumerate() {
        out += &format!(
            "blob {i} {}: {} of {} stored chunks referenced ({:.1}%), {} refs, {} of {} bytes referenced\n",
            b.blob_id,
            b.referenced_chunks,
            b.stored_chunks,
            b.used_ratio * 100.0,
            b.chunk_refs,
            b.referenced_bytes,
            b.stored_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_empty_parts_are_one() {
        assert_eq!(ratio(0, 0), 1.0);
        assert_eq!(ratio(6, 3), 2.0);
        let s = StatReport {
            blobs: vec![BlobStat {
                blob_id: "ab".into(),
                stored_chunks: 4,
                referenced_chunks: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(render(&s).contains("blob 0 ab: 1 of 4 stored chunks referenced"), "{}", render(&s));
    }
}
