//! The builder's error type.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of building, checking, unpacking and exporting images.
#[derive(Debug, Error)]
pub enum BuildError {
    /// An I/O error on a named path.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error (part of the message, so not chained again).
        cause: std::io::Error,
    },
    /// The bootstrap or a blob is malformed.
    #[error("{}: {cause}", path.display())]
    Format {
        /// The image file.
        path: PathBuf,
        /// What is wrong (part of the message, so not chained again).
        cause: nydus_format::FormatError,
    },
    /// A source tree entry cannot be represented in RAFS.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A chunk read from a blob is damaged.
    #[error("blob {blob_id}, chunk {ci_index}: {reason}")]
    BadChunk {
        /// Blob id.
        blob_id: String,
        /// Chunk index in the blob.
        ci_index: u32,
        /// What is wrong.
        reason: String,
    },
    /// A parent bootstrap cannot be the base of this build.
    #[error("parent bootstrap {}: {reason}", path.display())]
    IncompatibleParent {
        /// The parent bootstrap.
        path: PathBuf,
        /// What does not match, and how to fix it.
        reason: String,
    },
    /// A chunk dictionary cannot be used by this build.
    #[error("chunk dictionary {}: {reason}", path.display())]
    ChunkDict {
        /// The dictionary bootstrap.
        path: PathBuf,
        /// What does not match, and how to fix it.
        reason: String,
    },
    /// Invalid arguments or options.
    #[error("{0}")]
    Invalid(String),
}

impl BuildError {
    /// Wrap an io::Error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        // Some wrappers (tempfile) repeat the path in their message: keep
        // only the OS error, the path is shown once by this variant.
        let source = match source.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => source,
        };
        Self::Io { path: path.into(), cause: source }
    }

    /// Wrap a format error with the image path.
    pub fn format(path: impl Into<PathBuf>, source: nydus_format::FormatError) -> Self {
        Self::Format { path: path.into(), cause: source }
    }
}

/// Result alias of the builder.
pub type Result<T> = std::result::Result<T, BuildError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_path() {
        let e = BuildError::io("/x/y", std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.to_string(), "/x/y: No such file or directory (os error 2)");
        let e = BuildError::BadChunk { blob_id: "ab".into(), ci_index: 3, reason: "digest mismatch".into() };
        assert_eq!(e.to_string(), "blob ab, chunk 3: digest mismatch");
    }
}
