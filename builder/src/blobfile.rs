//! Reading chunk data back from local blob files (for check, unpack, export).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nydus_format::blob_meta::{decode_trailer, ChunkLocation};
use nydus_format::reader::{recorded_locations, BlobInfo, Bootstrap, ChunkIndex};

use crate::error::{BuildError, Result};

/// One opened blob with its decoded chunk table.
pub struct BlobFile {
    file: File,
    path: PathBuf,
    info: BlobInfo,
    locs: Vec<ChunkLocation>,
}

impl BlobFile {
    /// Open `path` as the blob described by `info` and load its ci array.
    pub fn open(path: &Path, info: &BlobInfo) -> Result<Self> {
        Self::open_located(path, info, None)
    }

    /// [`BlobFile::open`], with the chunk locations given (`known`) instead
    /// of read from the blob: for blobs without a ci array (RAFS v5 images),
    /// whose bootstrap records where every chunk is.
    pub fn open_located(path: &Path, info: &BlobInfo, known: Option<Vec<ChunkLocation>>) -> Result<Self> {
        info.data_supported().map_err(|m| BuildError::Invalid(format!("{}: {m}", path.display())))?;
        let file = File::open(path).map_err(|e| BuildError::io(path, e))?;
        let len = file.metadata().map_err(|e| BuildError::io(path, e))?.len();
        if len != info.compressed_size {
            return Err(BuildError::Invalid(format!(
                "{}: blob is {len} bytes but the bootstrap says {} (truncated, or not blob {})",
                path.display(),
                info.compressed_size,
                info.blob_id
            )));
        }
        if let Some(locs) = known {
            if let Some(i) = locs.iter().position(|l| l.compressed_offset + l.compressed_size as u64 > len) {
                return Err(BuildError::Invalid(format!("{}: chunk {i} lies outside the blob", path.display())));
            }
            return Ok(Self { file, path: path.into(), info: info.clone(), locs });
        }
        let d = info.ci_descriptor();
        let n =
            d.ci_compressed_size.checked_add(4096).filter(|&n| d.ci_offset.checked_add(n).is_some_and(|e| e <= len));
        let n =
            n.ok_or_else(|| BuildError::Invalid(format!("{}: chunk table lies outside the blob", path.display())))?;
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, d.ci_offset).map_err(|e| BuildError::io(path, e))?;
        let locs = decode_trailer(&d, &buf).map_err(|e| BuildError::format(path, e))?;
        Ok(Self { file, path: path.into(), info: info.clone(), locs })
    }

    /// The blob's metadata.
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// Chunk locations in ci order.
    pub fn locations(&self) -> &[ChunkLocation] {
        &self.locs
    }

    /// Read and decompress chunk `ci`; verify it against `digest` if given.
    pub fn read_chunk(&self, ci: u32, digest: Option<&[u8; 32]>) -> Result<Vec<u8>> {
        let bad = |reason: String| BuildError::BadChunk { blob_id: self.info.blob_id.clone(), ci_index: ci, reason };
        let loc = self.locs.get(ci as usize).ok_or_else(|| bad("no such chunk in the blob".into()))?;
        let mut stored = vec![0u8; loc.compressed_size as usize];
        self.file.read_exact_at(&mut stored, loc.compressed_offset).map_err(|e| BuildError::io(&self.path, e))?;
        let data = if loc.is_compressed() {
            self.info.compressor.decompress(&stored, loc.uncompressed_size as usize).map_err(|e| bad(e.to_string()))?
        } else {
            stored
        };
        if let Some(want) = digest {
            let got = self.info.digester.digest(&data);
            if &got != want {
                return Err(bad(format!(
                    "digest mismatch (expected {}, got {}): the blob is corrupt",
                    hex::encode(want),
                    hex::encode(got)
                )));
            }
        }
        Ok(data)
    }
}

/// The blobs of an image, by blob index.
pub struct BlobSet {
    blobs: Vec<BlobFile>,
}

impl BlobSet {
    /// Open all blobs of `boot`, from `blob` (only for a single-blob image)
    /// or from `blob_dir/<blob id>`.
    pub fn open<B: AsRef<[u8]>>(boot: &Bootstrap<B>, blob: Option<&Path>, blob_dir: Option<&Path>) -> Result<Self> {
        let mut blobs = Vec::new();
        // Only blobs without a ci array (RAFS v5 images) need the chunk records.
        let records = if boot.blobs.iter().any(|b| b.ci_uncompressed_size == 0) {
            boot.chunk_records().map_err(|e| BuildError::Invalid(e.to_string()))?
        } else {
            Vec::new()
        };
        for info in &boot.blobs {
            let path = match (blob, blob_dir) {
                (Some(b), _) if boot.blobs.len() == 1 => b.to_path_buf(),
                (_, Some(d)) => d.join(&info.blob_id),
                (Some(_), None) => {
                    return Err(BuildError::Invalid(format!(
                        "the image has {} blobs; pass --blob-dir DIR holding them by id",
                        boot.blobs.len()
                    )))
                }
                (None, None) => {
                    return Err(BuildError::Invalid(
                        "the image has data blobs: pass --blob FILE or --blob-dir DIR".into(),
                    ))
                }
            };
            if !path.exists() {
                return Err(BuildError::Invalid(format!("blob {} not found at {}", info.blob_id, path.display())));
            }
            let known = (info.ci_uncompressed_size == 0).then(|| recorded_locations(&records, info));
            blobs.push(BlobFile::open_located(&path, info, known)?);
        }
        Ok(Self { blobs })
    }

    /// The opened blobs.
    pub fn blobs(&self) -> &[BlobFile] {
        &self.blobs
    }

    /// Read the data of chunk `c`, verified against the image's chunk record.
    pub fn read<B: AsRef<[u8]>>(&self, boot: &Bootstrap<B>, c: &ChunkIndex) -> Result<Vec<u8>> {
        let blob = &self.blobs[c.blob_index as usize];
        let rec = boot.chunk_info(c).map_err(|e| BuildError::Invalid(e.to_string()))?;
        let data = blob.read_chunk(c.ci_index, Some(&rec.digest))?;
        let loc = &blob.locs[c.ci_index as usize];
        if loc.uncompressed_offset != c.blkaddr as u64 * 4096 || rec.uncompressed_size != loc.uncompressed_size {
            return Err(BuildError::BadChunk {
                blob_id: blob.info.blob_id.clone(),
                ci_index: c.ci_index,
                reason: "bootstrap and blob disagree on the chunk's position or size".into(),
            });
        }
        Ok(data)
    }
}
