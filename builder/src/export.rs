//! `nydus-image export --block`: image → one raw EROFS disk.
//!
//! The disk holds the bootstrap followed by each blob's *uncompressed* data,
//! each at its device slot's `mapped_blkaddr`. The kernel, mounting the disk
//! without `device=` options, maps chunk addresses of device N to
//! `mapped_blkaddr(N) + c_blk_addr` (EROFS "flatdev" mode), so the whole
//! image is readable from this single file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::blobfile::BlobSet;
use crate::error::{BuildError, Result};
use crate::image::load;

/// What was exported.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// Disk path.
    pub output: PathBuf,
    /// Disk size.
    pub size: u64,
    /// Blobs placed.
    pub blobs: usize,
}

/// Export `bootstrap` (+ blobs in `blob_dir`) as a block disk at `output`.
pub fn export_block(
    bootstrap: &Path,
    blob_dir: Option<&Path>,
    blob: Option<&Path>,
    output: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<ExportReport> {
    let boot = load(bootstrap)?;
    let blobs = BlobSet::open(&boot, blob, blob_dir)?;
    let records = boot.chunk_records().map_err(|e| BuildError::format(bootstrap, e))?;
    let digests: std::collections::HashMap<(u32, u32), [u8; 32]> =
        records.iter().map(|r| ((r.blob_index, r.index), r.digest)).collect();
    let mut end = boot.bytes().len() as u64;
    for b in &boot.blobs {
        let start = b.mapped_blkaddr as u64 * 4096;
        if start < end || b.device_blocks as u64 * 4096 < b.uncompressed_size {
            return Err(BuildError::Invalid(format!(
                "{}: device slot of blob {} (mapped block {:#x}) overlaps the bootstrap or a previous blob; cannot export",
                bootstrap.display(), b.blob_id, b.mapped_blkaddr
            )));
        }
        end = start + b.device_blocks as u64 * 4096;
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = crate::create::temp_in(&dir)?;
    let f: &File = tmp.as_file();
    let werr = |e| BuildError::io(output, e);
    f.write_all_at(boot.bytes(), 0).map_err(werr)?;
    let total: u64 = blobs.blobs().iter().map(|b| b.info().uncompressed_size).sum();
    let mut done = 0;
    for b in blobs.blobs() {
        let base = b.info().mapped_blkaddr as u64 * 4096;
        for (ci, loc) in b.locations().iter().enumerate() {
            let d = digests.get(&(b.info().blob_index, ci as u32));
            let data = b.read_chunk(ci as u32, d)?;
            f.write_all_at(&data, base + loc.uncompressed_offset).map_err(werr)?;
            done += loc.uncompressed_size as u64;
            progress(done, total);
        }
    }
    f.set_len(end).map_err(werr)?;
    crate::create::publish(tmp, output)?;
    Ok(ExportReport { output: output.into(), size: end, blobs: boot.blobs.len() })
}
