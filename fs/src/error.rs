//! Errors of the RAFS filesystem and their one mapping to errno.

use thiserror::Error;

/// What can fail while serving a filesystem request.
#[derive(Debug, Error)]
pub enum FsError {
    /// The inode number is not known.
    #[error("no inode {0}")]
    NoInode(u64),
    /// No such name.
    #[error("no entry")]
    NotFound,
    /// The bootstrap is malformed at this spot.
    #[error("corrupt image: {0}")]
    Format(nydus_format::FormatError),
    /// Fetching or caching chunk data failed.
    #[error("chunk data unavailable: {0}")]
    Storage(nydus_storage::StorageError),
    /// The operation needs a different file type.
    #[error("wrong file type for this operation")]
    WrongType(i32),
    /// The image is read-only.
    #[error("read-only filesystem")]
    ReadOnly,
    /// The xattr does not exist.
    #[error("no such xattr")]
    NoXattr,
    /// xattrs are disabled by configuration.
    #[error("xattrs disabled")]
    XattrDisabled,
    /// The reply buffer is too small.
    #[error("buffer too small")]
    Range,
    /// Writing the reply failed.
    #[error("reply: {0}")]
    Reply(std::io::Error),
}

// The causes are part of each message, so they are not also exposed as
// `source()` (error chains would print them twice).
impl From<nydus_format::FormatError> for FsError {
    fn from(e: nydus_format::FormatError) -> Self {
        Self::Format(e)
    }
}

impl From<nydus_storage::StorageError> for FsError {
    fn from(e: nydus_storage::StorageError) -> Self {
        Self::Storage(e)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        Self::Reply(e)
    }
}

impl FsError {
    /// The errno reported to the kernel. Damaged data (image or chunk) is
    /// EIO; everything else keeps its POSIX meaning.
    pub fn errno(&self) -> i32 {
        match self {
            Self::NoInode(_) | Self::NotFound => libc::ENOENT,
            Self::Format(_) | Self::Storage(_) => libc::EIO,
            Self::WrongType(e) => *e,
            Self::ReadOnly => libc::EROFS,
            Self::NoXattr => libc::ENODATA,
            Self::XattrDisabled => libc::EOPNOTSUPP,
            Self::Range => libc::ERANGE,
            Self::Reply(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Errors that mean something is wrong with the image or its data (worth
    /// a log line), as opposed to ordinary lookups of missing names.
    pub fn is_fault(&self) -> bool {
        matches!(self, Self::Format(_) | Self::Storage(_))
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::Format(nydus_format::FormatError::BadMagic).errno(), libc::EIO);
        assert_eq!(FsError::NoXattr.errno(), libc::ENODATA);
    }
}
