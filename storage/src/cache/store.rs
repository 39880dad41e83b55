//! The cache files of one blob: `<id>.blob.data`, a sparse file holding the
//! blob's uncompressed image (chunk `ci`'s plain bytes at its
//! `uncompressed_offset`), and `<id>.chunk_map`, which says which chunks
//! of the data file are valid.
//!
//! A store outlives the [`super::CachedBlob`]s that use it: the manager
//! keeps it so that eviction can reclaim its space at any time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nydus_format::blob_meta::ChunkLocation;
use nydus_format::reader::BlobInfo;
use tracing::warn;

use super::chunk_map::{ChunkMap, Opened};
use super::ChunkSink;
use crate::error::{Result, StorageError};
use crate::sys;

/// Bytes a chunk occupies in the data file (its size rounded up to 4 KiB).
pub(crate) fn chunk_bytes(loc: &ChunkLocation) -> u64 {
    (loc.uncompressed_size as u64).div_ceil(4096) * 4096
}

/// Data file plus ready bitmap of one blob.
#[derive(Debug)]
pub(crate) struct BlobStore {
    /// Manager-wide number of this store (LRU keys use it).
    pub slot: u32,
    /// Blob id.
    pub blob_id: String,
    locs: Arc<[ChunkLocation]>,
    data: File,
    data_path: PathBuf,
    map: ChunkMap,
    punch_warned: AtomicBool,
}

impl BlobStore {
    /// Open the cache files of `info` in `work_dir`, reusing them when they
    /// are consistent with the blob, else recreating both (empty).
    pub fn open(work_dir: &Path, slot: u32, info: &BlobInfo, locs: Arc<[ChunkLocation]>) -> Result<Self> {
        let id = &info.blob_id;
        let map_path = work_dir.join(format!("{id}.chunk_map"));
        let data_path = work_dir.join(format!("{id}.blob.data"));
        let stale = match ChunkMap::open_existing(&map_path, id, info.chunk_count)? {
            Opened::Valid(map) => match open_data(&data_path, info.uncompressed_size)? {
                Ok(data) => {
                    let punch_warned = AtomicBool::new(false);
                    return Ok(Self { slot, blob_id: id.clone(), locs, data, data_path, map, punch_warned });
                }
                Err(reason) => Some(reason),
            },
            Opened::Invalid(reason) => Some(format!("chunk map {}: {reason}", map_path.display())),
            Opened::Missing => None,
        };
        if let Some(reason) = stale {
            warn!(blob_id = %id, "discarding the cached data of blob {id} and starting afresh: {reason}");
        }
        // The map first: once it is empty, no stale data can be trusted.
        let map = ChunkMap::create(&map_path, id, info.chunk_count)?;
        let data = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&data_path)
            .map_err(|e| StorageError::io("creating cache file", &data_path, e))?;
        data.set_len(info.uncompressed_size).map_err(|e| StorageError::io("sizing cache file", &data_path, e))?;
        Ok(Self { slot, blob_id: id.clone(), locs, data, data_path, map, punch_warned: AtomicBool::new(false) })
    }

    /// Whether chunk `ci` is ready.
    pub fn is_ready(&self, ci: u32) -> bool {
        self.map.is_ready(ci)
    }

    /// Ready chunks, ascending.
    pub fn ready_chunks(&self) -> Vec<u32> {
        self.map.ready_chunks()
    }

    /// The blob's chunk locations.
    pub fn locations(&self) -> Arc<[ChunkLocation]> {
        self.locs.clone()
    }

    /// The location of chunk `ci`.
    pub fn location(&self, ci: u32) -> Option<&ChunkLocation> {
        self.locs.get(ci as usize)
    }

    /// Write the plain bytes of chunk `ci` (not yet marked ready).
    pub fn write(&self, ci: u32, plain: &[u8]) -> Result<()> {
        let Some(loc) = self.location(ci) else {
            return Ok(());
        };
        self.data
            .write_all_at(plain, loc.uncompressed_offset)
            .map_err(|e| StorageError::io("writing cache file", &self.data_path, e))
    }

    /// Mark chunk `ci` ready; its data must have been written.
    pub fn mark_ready(&self, ci: u32) -> Result<()> {
        self.map.set(ci)
    }

    /// Forget chunk `ci` and free its blocks. The bit is cleared first, so
    /// no reader trusts the range while it is punched.
    pub fn evict(&self, ci: u32) -> Result<()> {
        self.map.clear(ci)?;
        let Some(loc) = self.location(ci) else {
            return Ok(());
        };
        match sys::punch_hole(&self.data, loc.uncompressed_offset, chunk_bytes(loc)) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                if !self.punch_warned.swap(true, Ordering::Relaxed) {
                    warn!(path = %self.data_path.display(), "the cache filesystem cannot punch holes; evicted chunks keep their disk space");
                }
                Ok(())
            }
            Err(e) => Err(StorageError::io("punching a hole in", &self.data_path, e)),
        }
    }

    /// Copy `[off, off + len)` of ready chunk `ci` into `sink`; returns the
    /// bytes the sink took (fewer only if it stopped accepting).
    pub fn copy_to(&self, ci: u32, off: u32, len: u32, sink: &mut dyn ChunkSink) -> Result<usize> {
        let Some(loc) = self.location(ci) else {
            return Ok(0);
        };
        let pos = loc.uncompressed_offset + off as u64;
        let (len, mut done) = (len as usize, 0usize);
        while done < len {
            match sink.write_from_file(&self.data, pos + done as u64, len - done) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StorageError::Sink { blob_id: self.blob_id.clone(), ci, source }),
            }
        }
        Ok(done)
    }
}

/// Open an existing data file if its size is `size`: `Ok(Err(reason))` when
/// it is missing or has another size.
fn open_data(path: &Path, size: u64) -> Result<std::result::Result<File, String>> {
    let file = match File::options().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(format!("{} is missing", path.display()))),
        Err(e) => return Err(StorageError::io("opening cache file", path, e)),
    };
    let len = file.metadata().map_err(|e| StorageError::io("inspecting cache file", path, e))?.len();
    if len != size {
        return Ok(Err(format!("{} is {len} bytes, expected {size}", path.display())));
    }
    Ok(Ok(file))
}
