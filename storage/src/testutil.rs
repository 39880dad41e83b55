//! Test fixtures, for this crate's tests and (through the `test-utils`
//! feature) those of `fs` and `daemon`: real blob files built with the
//! format crate, a backend wrapper that counts reads, and an in-memory
//! [`ChunkSink`].
//!
//! These helpers panic on I/O errors: they are for tests only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nydus_format::blob_meta::{encode_trailer, ChunkLocation};
use nydus_format::reader::BlobInfo;
use nydus_format::{flags, Compressor, Digest, Digester};

use crate::backend::{BlobBackend, BlobReader};
pub use crate::cache::VecSink;
use crate::config::{BackendConfig, CacheConfig, LocalFsConfig};
use crate::error::Result;

/// What blob to make.
#[derive(Debug, Clone)]
pub struct BlobSpec {
    /// Number of chunks.
    pub chunk_count: usize,
    /// Plain size of every chunk but the last, which is 1234 bytes shorter
    /// (so it is not a multiple of 4 KiB) when the size allows.
    pub chunk_size: usize,
    /// Chunk compressor.
    pub compressor: Compressor,
    /// Chunk digester.
    pub digester: Digester,
    /// Seed of the pseudo-random content.
    pub seed: u64,
    /// Blob id; default: hex SHA-256 of the blob, as builders name blobs.
    pub blob_id: Option<String>,
}

impl Default for BlobSpec {
    fn default() -> Self {
        Self {
            chunk_count: 16,
            chunk_size: 16 << 10,
            compressor: Compressor::Zstd,
            digester: Digester::Blake3,
            seed: 1,
            blob_id: None,
        }
    }
}

/// A blob file written to disk, with everything a test needs to know.
#[derive(Debug, Clone)]
pub struct TestBlob {
    /// The blob file (`dir/<blob id>`).
    pub path: PathBuf,
    /// The matching blob table entry.
    pub info: BlobInfo,
    /// Plain bytes of each chunk.
    pub chunks: Vec<Vec<u8>>,
    /// Digest of each chunk.
    pub digests: Vec<Option<Digest>>,
    /// Chunk locations, as the trailer records them.
    pub locations: Vec<ChunkLocation>,
}

/// Deterministic pseudo-random numbers (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Content of chunk `ci`: compressible text, random bytes (stored
/// uncompressed even with a compressor) or mostly zeros, in turn.
pub fn chunk_data(seed: u64, ci: usize, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ ((ci as u64 + 1) << 32));
    match ci % 3 {
        0 => {
            let words = ["lazy ", "loading ", "chunk ", "blob ", "nydus ", "cache\n"];
            let mut v = Vec::with_capacity(len + 16);
            while v.len() < len {
                v.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
            }
            v.truncate(len);
            v
        }
        1 => (0..len).map(|_| rng.next_u64() as u8).collect(),
        _ => (0..len).map(|i| if i % 509 == 0 { rng.next_u64() as u8 } else { 0 }).collect(),
    }
}

impl TestBlob {
    /// Build the blob described by `spec` and write it to `dir/<blob id>`.
    ///
    /// # Panics
    /// On encoding or I/O errors.
    pub fn create(dir: &Path, spec: &BlobSpec) -> Self {
        let (mut bytes, mut chunks, mut digests, mut locations) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut uoff = 0u64;
        for ci in 0..spec.chunk_count {
            let last = ci + 1 == spec.chunk_count && spec.chunk_size > 2048;
            let plain = chunk_data(spec.seed, ci, spec.chunk_size - if last { 1234 } else { 0 });
            let stored = spec.compressor.compress(&plain).expect("compress").unwrap_or_else(|| plain.clone());
            locations.push(ChunkLocation {
                compressed_offset: bytes.len() as u64,
                compressed_size: stored.len() as u32,
                uncompressed_offset: uoff,
                uncompressed_size: plain.len() as u32,
            });
            uoff += (plain.len() as u64).div_ceil(4096) * 4096;
            bytes.extend_from_slice(&stored);
            digests.push(Some(spec.digester.digest(&plain)));
            chunks.push(plain);
        }
        let features = flags::BLOB_ALIGNED | flags::BLOB_CAP_TAR_TOC;
        let ci_offset = bytes.len() as u64;
        let trailer = encode_trailer(&locations, spec.compressor, features, ci_offset).expect("trailer");
        bytes.extend_from_slice(&trailer.bytes);
        let blob_id = spec.blob_id.clone().unwrap_or_else(|| hex::encode(Digester::Sha256.digest(&bytes)));
        let info = BlobInfo {
            blob_id: blob_id.clone(),
            blob_index: 0,
            chunk_size: spec.chunk_size.next_power_of_two() as u32,
            chunk_count: spec.chunk_count as u32,
            compressor: spec.compressor,
            digester: spec.digester,
            features,
            compressed_size: bytes.len() as u64,
            uncompressed_size: uoff,
            ci_compressor: trailer.ci_compressor.id(),
            ci_offset,
            ci_compressed_size: trailer.ci_compressed_size,
            ci_uncompressed_size: trailer.ci_uncompressed_size,
            device_blocks: (uoff / 4096) as u32,
            mapped_blkaddr: 0,
        };
        let path = dir.join(&blob_id);
        std::fs::write(&path, &bytes).expect("write blob");
        Self { path, info, chunks, digests, locations }
    }

    /// The blob id.
    pub fn id(&self) -> &str {
        &self.info.blob_id
    }
}

/// A localfs backend over `dir`.
pub fn localfs(dir: &Path) -> Arc<dyn BlobBackend> {
    crate::new_backend(&BackendConfig::LocalFs(LocalFsConfig { dir: Some(dir.to_path_buf()), ..Default::default() }))
        .expect("localfs backend")
}

/// A blobcache configuration over `work_dir` with defaults otherwise.
pub fn cache_config(work_dir: &Path) -> CacheConfig {
    CacheConfig { work_dir: work_dir.to_path_buf(), ..Default::default() }
}

/// Counters of a [`CountingBackend`].
#[derive(Debug, Default)]
pub struct Counts {
    /// `open_blob` calls.
    pub opens: AtomicU64,
    /// `read_at` calls.
    pub reads: AtomicU64,
    /// Bytes returned by `read_at`.
    pub bytes: AtomicU64,
}

impl Counts {
    /// `read_at` calls so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

/// Wraps a backend and counts what goes through it.
pub struct CountingBackend {
    inner: Arc<dyn BlobBackend>,
    /// The counters.
    pub counts: Arc<Counts>,
}

impl CountingBackend {
    /// Count the traffic to `inner`.
    pub fn new(inner: Arc<dyn BlobBackend>) -> Arc<Self> {
        Arc::new(Self { inner, counts: Arc::default() })
    }
}

impl BlobBackend for CountingBackend {
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>> {
        self.counts.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(CountingReader { inner: self.inner.open_blob(blob_id)?, counts: self.counts.clone() }))
    }
}

struct CountingReader {
    inner: Arc<dyn BlobReader>,
    counts: Arc<Counts>,
}

impl BlobReader for CountingReader {
    fn blob_size(&self) -> Result<u64> {
        self.inner.blob_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.counts.reads.fetch_add(1, Ordering::SeqCst);
        self.counts.bytes.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}
