//! The one error type of the storage crate.

use std::io;
use std::path::PathBuf;

use nydus_format::FormatError;
use thiserror::Error;

/// Everything that can go wrong while opening blobs, fetching chunks or
/// managing the cache. Each variant names the blob (or path) and the cause,
/// so the operator can tell a missing blob from a corrupt one from a full
/// disk without reading the source.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The backend configuration cannot be used.
    #[error("invalid backend configuration: {0}")]
    BackendConfig(String),
    /// A blob id cannot be used as a file name (empty, `.`/`..`, or has `/` or NUL).
    #[error("invalid blob id {0:?}: blob ids must be plain file names")]
    InvalidBlobId(String),
    /// No backend location holds the blob.
    #[error("blob {blob_id} not found (tried {tried}); check the backend's dir/alt_dirs/blob_file")]
    BlobNotFound {
        /// Blob id.
        blob_id: String,
        /// Every path that was tried, comma separated.
        tried: String,
    },
    /// The blob's size differs from what the bootstrap records.
    #[error("blob {blob_id} is {actual} bytes, the bootstrap says {expected}: the blob is truncated or is not this image's blob")]
    SizeMismatch {
        /// Blob id.
        blob_id: String,
        /// Size the bootstrap records.
        expected: u64,
        /// Size the backend reports.
        actual: u64,
    },
    /// The blob uses features this reader cannot fetch data for.
    #[error("{0}")]
    Unsupported(String),
    /// The blob's chunk-information array is invalid.
    #[error("blob {blob_id}: invalid chunk metadata: {reason}")]
    BlobMeta {
        /// Blob id.
        blob_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A backend read failed.
    #[error("reading blob {blob_id} at {offset:#x} (+{len:#x}) failed: {source}")]
    BackendRead {
        /// Blob id.
        blob_id: String,
        /// Offset of the read.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The backend returned fewer bytes than the blob should hold.
    #[error("blob {blob_id}: short read at {offset:#x}: wanted {wanted} bytes, got {got} (blob truncated?)")]
    ShortRead {
        /// Blob id.
        blob_id: String,
        /// Offset of the read.
        offset: u64,
        /// Bytes asked for.
        wanted: u64,
        /// Bytes obtained before end of file.
        got: u64,
    },
    /// A chunk index beyond the blob's chunk count.
    #[error("blob {blob_id}: chunk {ci} out of range (the blob has {count} chunks)")]
    ChunkOutOfRange {
        /// Blob id.
        blob_id: String,
        /// Chunk index asked for.
        ci: u32,
        /// Chunks in the blob.
        count: u32,
    },
    /// A byte range beyond the end of a chunk.
    #[error("blob {blob_id} chunk {ci}: range {offset}+{len} exceeds the chunk's {size} bytes")]
    RangeOutOfChunk {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
        /// Offset in the chunk.
        offset: u32,
        /// Length asked for.
        len: u32,
        /// Plain size of the chunk.
        size: u32,
    },
    /// Decompressing a chunk failed.
    #[error("blob {blob_id} chunk {ci}: {source} (corrupt blob?)")]
    Decompress {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
        /// The codec error.
        source: FormatError,
    },
    /// A fetched chunk does not match its digest in the bootstrap.
    #[error("blob {blob_id} chunk {ci}: digest mismatch (corrupt blob or a bootstrap for other data)")]
    DigestMismatch {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
    },
    /// Another thread's fetch of the chunk did not finish in time.
    #[error(
        "blob {blob_id} chunk {ci}: gave up after {secs:.1}s waiting for another thread's fetch (backend stalled?)"
    )]
    FetchTimeout {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
        /// Seconds waited.
        secs: f64,
    },
    /// Another thread's fetch of the chunk failed (twice).
    #[error("blob {blob_id} chunk {ci}: fetch failed: {reason}")]
    FetchFailed {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
        /// The fetching thread's error message.
        reason: String,
    },
    /// A remote backend request failed (after any retries). `url` never
    /// carries credentials or query strings (presigned URLs are secrets).
    #[error("blob {blob_id}: {url}: {cause}")]
    Remote {
        /// Blob id.
        blob_id: String,
        /// The URL asked, without query string or credentials.
        url: String,
        /// What went wrong, and what to check.
        cause: String,
    },
    /// The remote service refused our credentials, or wants some we lack.
    #[error("blob {blob_id}: {url}: authentication failed: {cause}")]
    Auth {
        /// Blob id.
        blob_id: String,
        /// The URL asked, without query string or credentials.
        url: String,
        /// What the service said, and what to check.
        cause: String,
    },
    /// I/O on a cache or backend file failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// What was being done ("writing", "opening", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process (or manager) holds the cache directory.
    #[error("cache directory {dir} is in use by another nydusd (flock on {dir}/.lock is held); give each daemon its own work_dir")]
    Locked {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Copying chunk data into the caller's sink failed.
    #[error("blob {blob_id} chunk {ci}: writing the reply failed: {source}")]
    Sink {
        /// Blob id.
        blob_id: String,
        /// Chunk index.
        ci: u32,
        /// The sink's error.
        source: io::Error,
    },
}

/// Result alias for the storage crate.
pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// An [`StorageError::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_blob_and_cause() {
        let e = StorageError::BlobNotFound { blob_id: "abc".into(), tried: "/a/abc, /b/abc".into() };
        assert_eq!(
            e.to_string(),
            "blob abc not found (tried /a/abc, /b/abc); check the backend's dir/alt_dirs/blob_file"
        );
        let e = StorageError::DigestMismatch { blob_id: "abc".into(), ci: 7 };
        assert_eq!(e.to_string(), "blob abc chunk 7: digest mismatch (corrupt blob or a bootstrap for other data)");
        let e = StorageError::Locked { dir: "/var/cache".into() };
        assert!(e.to_string().contains("/var/cache/.lock"), "{e}");
        assert!(e.to_string().contains("another nydusd"), "{e}");
        let e = StorageError::io("writing", "/x/y.blob.data", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.to_string().starts_with("writing /x/y.blob.data failed: No space left"), "{e}");
    }
}
