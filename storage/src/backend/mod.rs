//! Blob backends: where the compressed data blobs of an image live.
//!
//! A [`BlobBackend`] turns a blob id into a [`BlobReader`], which serves
//! positional reads of that one blob. Backends know nothing about chunks,
//! compression or caching: the cache layer ([`crate::cache`]) plans reads
//! of whole chunk runs and calls [`read_full`], the one place where short
//! reads are turned into errors.
//!
//! Backends: `localfs` (always), and `registry` (cargo feature
//! `backend-registry`, on by default) over the shared HTTP layer in
//! `http` (feature `backend-http`: timeouts, retry with backoff and
//! jitter, TLS settings, ranged reads). A configuration naming a backend
//! that was not compiled in is refused by [`new_backend`].

#[cfg(feature = "backend-http")]
mod http;
#[cfg(feature = "backend-http-proxy")]
pub mod http_proxy;
mod localfs;
mod metered;
#[cfg(any(feature = "backend-s3", feature = "backend-oss"))]
mod object_store;
#[cfg(feature = "backend-oss")]
pub mod oss;
#[cfg(feature = "backend-registry")]
mod registry;
#[cfg(feature = "backend-s3")]
pub mod s3;
pub mod upload;

use std::sync::Arc;

pub use localfs::LocalFsBackend;
pub use metered::MeteredBackend;
#[cfg(feature = "backend-registry")]
pub use registry::{MirrorConfig, RegistryBackend};

use crate::config::BackendConfig;
use crate::error::{Result, StorageError};
use crate::metrics::BackendMetrics;

/// One blob in a backend.
///
/// Implementations must be safe to call from many threads at once: reads are
/// positional and share no seek position.
pub trait BlobReader: Send + Sync {
    /// Size of the blob in bytes.
    fn blob_size(&self) -> Result<u64>;

    /// Read up to `buf.len()` bytes at `offset`; returns the bytes read.
    ///
    /// A read that reaches the end of the blob returns fewer bytes (0 at or
    /// past the end); it never blocks waiting for data to appear.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
}

/// A store of blobs addressed by id.
pub trait BlobBackend: Send + Sync {
    /// Open blob `blob_id`; fails with [`StorageError::BlobNotFound`] when the
    /// backend does not have it.
    fn open_blob(&self, blob_id: &str) -> Result<Arc<dyn BlobReader>>;

    /// The read counters of this backend, when it keeps them (backends built
    /// by [`new_backend`] do: they are wrapped in a [`MeteredBackend`]).
    fn metrics(&self) -> Option<Arc<BackendMetrics>> {
        None
    }
}

/// Build the backend described by `cfg`, measured by a [`MeteredBackend`]
/// (see [`BlobBackend::metrics`]).
pub fn new_backend(cfg: &BackendConfig) -> Result<Arc<dyn BlobBackend>> {
    let inner = build_backend(cfg)?;
    Ok(Arc::new(MeteredBackend::new(inner, metered::backend_type(cfg))))
}

fn build_backend(cfg: &BackendConfig) -> Result<Arc<dyn BlobBackend>> {
    match cfg {
        BackendConfig::LocalFs(c) => Ok(Arc::new(LocalFsBackend::new(c.clone())?)),
        #[cfg(feature = "backend-registry")]
        BackendConfig::Registry(c) => Ok(Arc::new(RegistryBackend::new(c.clone())?)),
        #[cfg(not(feature = "backend-registry"))]
        BackendConfig::Registry(_) => Err(StorageError::BackendConfig(
            "this build has no registry backend (cargo feature `backend-registry`)".into(),
        )),
        #[cfg(feature = "backend-s3")]
        BackendConfig::S3(c) => s3::new_backend(c),
        #[cfg(feature = "backend-oss")]
        BackendConfig::Oss(c) => oss::new_backend(c),
        #[cfg(feature = "backend-http-proxy")]
        BackendConfig::HttpProxy(c) => Ok(Arc::new(http_proxy::HttpProxyBackend::new(c)?)),
        #[allow(unreachable_patterns)]
        _ => Err(StorageError::BackendConfig(format!(
            "this build has no {} backend (cargo feature `backend-{}`)",
            metered::backend_type(cfg),
            metered::backend_type(cfg)
        ))),
    }
}

/// Fill `buf` from `offset` of `reader`, looping over short reads; reaching
/// the end of the blob first is [`StorageError::ShortRead`].
pub fn read_full(reader: &dyn BlobReader, blob_id: &str, buf: &mut [u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = reader.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(StorageError::ShortRead {
                blob_id: blob_id.to_string(),
                offset,
                wanted: buf.len() as u64,
                got: done as u64,
            });
        }
        done += n;
    }
    Ok(())
}

/// Reject blob ids that are not plain file names: ids come from images, and
/// both backends and the cache use them as file names.
pub fn check_blob_id(blob_id: &str) -> Result<()> {
    let bad = blob_id.is_empty()
        || blob_id == "."
        || blob_id == ".."
        || blob_id.contains('/')
        || blob_id.contains('\0')
        || blob_id.len() > 255;
    if bad {
        return Err(StorageError::InvalidBlobId(blob_id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_must_be_file_names() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(matches!(check_blob_id(bad), Err(StorageError::InvalidBlobId(_))), "{bad:?}");
        }
        check_blob_id("0123abcdef").unwrap();
        check_blob_id("..hidden-but-fine").unwrap();
    }
}
