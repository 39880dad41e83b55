//! The persisted "chunk is ready" bitmap of one blob (`<id>.chunk_map`).
//!
//! Layout, little endian: a 32-byte header (`magic` "NYCM", `version`,
//! `chunk_count`, a reserved word, the blob id hash, a reserved u64), then
//! one bit per chunk (bit `ci % 8` of byte `ci / 8`).
//!
//! The caller writes a chunk's data first and sets its bit afterwards, so a
//! set bit always covers written data as far as this process (and the page
//! cache) is concerned. Each change is persisted by a `pwrite` of the byte
//! that holds the bit; there is no `fsync`, so as upstream, a power loss
//! (not a process crash) can leave a bit set over data that never reached
//! the disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{id_hash, lock};
use crate::error::{Result, StorageError};

const MAGIC: u32 = 0x4d43_594e; // "NYCM"
const VERSION: u32 = 1;
const HEADER: u64 = 32;

/// The ready bitmap, in memory and on disk.
#[derive(Debug)]
pub(crate) struct ChunkMap {
    file: File,
    path: PathBuf,
    count: u32,
    words: Box<[AtomicU64]>,
    /// Serialises the persisting `pwrite`s so that the last one of a byte
    /// always carries the newest value.
    persist: Mutex<()>,
}

/// What [`ChunkMap::open_existing`] found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// A consistent map.
    Valid(ChunkMap),
    /// No file.
    Missing,
    /// A file that does not belong to this blob or is damaged.
    Invalid(String),
}

fn bitmap_len(count: u32) -> u64 {
    (count as u64).div_ceil(8)
}

fn header(blob_id: &str, count: u32) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&count.to_le_bytes());
    h[16..24].copy_from_slice(&id_hash(blob_id).to_le_bytes());
    h
}

impl ChunkMap {
    /// Total file size for `count` chunks.
    pub fn file_len(count: u32) -> u64 {
        HEADER + bitmap_len(count)
    }

    /// Open the map at `path` if it exists and matches `blob_id` and `count`.
    pub fn open_existing(path: &Path, blob_id: &str, count: u32) -> Result<Opened> {
        let file = match File::options().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            Err(e) => return Err(StorageError::io("opening chunk map", path, e)),
        };
        let len = file.metadata().map_err(|e| StorageError::io("inspecting chunk map", path, e))?.len();
        if len != Self::file_len(count) {
            return Ok(Opened::Invalid(format!("size {len}, expected {}", Self::file_len(count))));
        }
        let mut raw = vec![0u8; len as usize];
        file.read_exact_at(&mut raw, 0).map_err(|e| StorageError::io("reading chunk map", path, e))?;
        if raw[..HEADER as usize] != header(blob_id, count) {
            return Ok(Opened::Invalid("header does not match the blob (magic, version, chunk count or id)".into()));
        }
        let bits = &raw[HEADER as usize..];
        let spare = (count % 8) as usize;
        if spare != 0 && bits.last().is_some_and(|b| b >> spare != 0) {
            return Ok(Opened::Invalid("bits set beyond the last chunk".into()));
        }
        let map = Self::with_file(file, path, count);
        for (i, &b) in bits.iter().enumerate() {
            map.words[i / 8].fetch_or((b as u64) << ((i % 8) * 8), Ordering::Relaxed);
        }
        Ok(Opened::Valid(map))
    }

    /// Create (or truncate) the map at `path` with every chunk missing.
    pub fn create(path: &Path, blob_id: &str, count: u32) -> Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io("creating chunk map", path, e))?;
        let mut raw = vec![0u8; Self::file_len(count) as usize];
        raw[..HEADER as usize].copy_from_slice(&header(blob_id, count));
        file.write_all_at(&raw, 0).map_err(|e| StorageError::io("writing chunk map", path, e))?;
        Ok(Self::with_file(file, path, count))
    }

    fn with_file(file: File, path: &Path, count: u32) -> Self {
        let words = (0..(count as usize).div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self { file, path: path.to_path_buf(), count, words, persist: Mutex::new(()) }
    }

    /// Whether chunk `ci` is ready (false for indexes out of range).
    pub fn is_ready(&self, ci: u32) -> bool {
        let Some(w) = self.words.get(ci as usize / 64) else {
            return false;
        };
        w.load(Ordering::Acquire) & (1 << (ci % 64)) != 0
    }

    /// Mark chunk `ci` ready (its data must already be written) and persist.
    pub fn set(&self, ci: u32) -> Result<()> {
        self.update(ci, true)
    }

    /// Mark chunk `ci` missing and persist.
    pub fn clear(&self, ci: u32) -> Result<()> {
        self.update(ci, false)
    }

    fn update(&self, ci: u32, ready: bool) -> Result<()> {
        let Some(w) = self.words.get(ci as usize / 64).filter(|_| ci < self.count) else {
            return Ok(());
        };
        let bit = 1u64 << (ci % 64);
        if ready {
            w.fetch_or(bit, Ordering::AcqRel);
        } else {
            w.fetch_and(!bit, Ordering::AcqRel);
        }
        let _g = lock(&self.persist);
        let byte = (w.load(Ordering::Acquire) >> ((ci % 64) / 8 * 8)) as u8;
        let res = self.file.write_all_at(&[byte], HEADER + ci as u64 / 8);
        if res.is_err() && ready {
            // Not persisted: do not claim readiness in memory either.
            w.fetch_and(!bit, Ordering::AcqRel);
        }
        res.map_err(|e| StorageError::io("updating chunk map", &self.path, e))
    }

    /// Indexes of all ready chunks, ascending.
    pub fn ready_chunks(&self) -> Vec<u32> {
        (0..self.count).filter(|&ci| self.is_ready(ci)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_validates() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.chunk_map");
        assert!(matches!(ChunkMap::open_existing(&p, "x", 100).unwrap(), Opened::Missing));
        let m = ChunkMap::create(&p, "x", 100).unwrap();
        for ci in [0, 7, 8, 63, 64, 99] {
            m.set(ci).unwrap();
        }
        m.clear(7).unwrap();
        m.set(100).unwrap(); // out of range: ignored
        assert!(m.is_ready(99) && !m.is_ready(7) && !m.is_ready(100) && !m.is_ready(u32::MAX));
        drop(m);
        let Opened::Valid(m) = ChunkMap::open_existing(&p, "x", 100).unwrap() else { panic!("not valid") };
        assert_eq!(m.ready_chunks(), vec![0, 8, 63, 64, 99]);
        assert!(matches!(ChunkMap::open_existing(&p, "y", 100).unwrap(), Opened::Invalid(_)));
        assert!(matches!(ChunkMap::open_existing(&p, "x", 101).unwrap(), Opened::Invalid(_)));
        // A bit beyond the last chunk.
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&[0xff], HEADER + 12).unwrap();
        assert!(matches!(ChunkMap::open_existing(&p, "x", 100).unwrap(), Opened::Invalid(_)));
    }

    #[test]
    fn concurrent_bits_in_one_byte_all_persist() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.chunk_map");
        let m = ChunkMap::create(&p, "c", 64).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let m = &m;
                s.spawn(move || (0..8).for_each(|i| m.set(i * 8 + t).unwrap()));
            }
        });
        drop(m);
        let Opened::Valid(m) = ChunkMap::open_existing(&p, "c", 64).unwrap() else { panic!("not valid") };
        assert_eq!(m.ready_chunks().len(), 64);
    }
}
