//! # nydus-storage
//!
//! Where the data of a RAFS image comes from, and how it is kept close.
//!
//! A RAFS bootstrap describes files as lists of *chunks* stored in *data
//! blobs*. Each blob ends with a chunk-information (ci) array saying where
//! every chunk's stored (possibly compressed) bytes are and where its plain
//! bytes belong in the blob's *uncompressed space*. This crate:
//!
//! * reads blobs from a [`BlobBackend`] (local directories today;
//!   [`new_backend`] builds one from a [`BackendConfig`]),
//! * keeps fetched chunks, decompressed and optionally verified, in a
//!   persistent local cache ([`BlobCacheManager`] → [`CachedBlob`]), with
//!   one fetch per missing chunk however many readers want it, merged
//!   backend reads, an optional size limit with LRU eviction, and warm
//!   restarts that read nothing from the backend,
//! * prefetches chunks in the background ([`Prefetcher`]).
//!
//! There is no global state: a daemon creates its managers and prefetchers
//! and collects their [`CacheMetrics`]. Decoding and digests come from
//! [`nydus_format`].
//!
//! ```no_run
//! # fn demo(info: &nydus_format::reader::BlobInfo) -> nydus_storage::Result<()> {
//! use nydus_storage::*;
//! let backend = new_backend(&BackendConfig::LocalFs(LocalFsConfig {
//!     dir: Some("/var/lib/nydus/blobs".into()),
//!     ..Default::default()
//! }))?;
//! let cache = BlobCacheManager::new(CacheConfig::default(), backend)?;
//! let blob = cache.open_blob(info, Vec::new())?;
//! struct Buf(Vec<u8>);
//! impl ChunkSink for Buf {
//!     fn write_from_file(&mut self, f: &std::fs::File, off: u64, len: usize) -> std::io::Result<usize> {
//!         use std::os::unix::fs::FileExt;
//!         let at = self.0.len();
//!         self.0.resize(at + len, 0);
//!         f.read_exact_at(&mut self.0[at..], off)?;
//!         Ok(len)
//!     }
//!     fn write_bytes(&mut self, d: &[u8]) -> std::io::Result<usize> {
//!         self.0.extend_from_slice(d);
//!         Ok(d.len())
//!     }
//! }
//! let mut out = Buf(Vec::new());
//! blob.read_chunk(0, 0, 4096, &mut out)?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod backend;
pub mod cache;
pub mod config;
pub mod error;
pub mod metrics;
pub mod prefetch;
mod sys;
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;

pub use backend::{new_backend, BlobBackend, BlobReader};
pub use cache::{BlobCacheManager, CachedBlob, ChunkSink, VecSink};
pub use config::*;
pub use error::{Result, StorageError};
pub use metrics::CacheMetrics;
pub use prefetch::Prefetcher;
