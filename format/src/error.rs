//! The one error type of the format crate.

use thiserror::Error;

/// Everything that can go wrong while encoding, decoding or validating RAFS data.
///
/// Every variant says which structure was wrong and why, so that a user who
/// points a tool at a damaged image learns what is damaged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// A structure or table would reach past the end of the buffer.
    #[error("{what} at offset {offset:#x} (+{len:#x}) lies outside the {size:#x}-byte image (truncated or corrupt)")]
    OutOfBounds {
        /// The structure being read.
        what: &'static str,
        /// Its byte offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The size of the buffer.
        size: u64,
    },
    /// The superblock magic does not match any supported RAFS version.
    #[error("not a RAFS image: bad magic (expected EROFS magic 0xe0f5e1e2 at byte 1024 or RAFS v5 magic 0x52414653 at byte 0)")]
    BadMagic,
    /// The image is RAFS but a version this reader does not handle.
    #[error("unsupported RAFS version: {0}")]
    UnsupportedVersion(String),
    /// A RAFS v5 bootstrap is malformed.
    #[error("invalid RAFS v5 bootstrap at offset {offset:#x}: {reason}")]
    V5 {
        /// Byte offset of the bad field or record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A superblock field holds an invalid value.
    #[error("invalid superblock: {0}")]
    Superblock(String),
    /// A blob table entry or device slot is invalid.
    #[error("invalid blob entry {index}: {reason}")]
    Blob {
        /// Blob index in the blob table.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An inode is malformed.
    #[error("invalid inode (nid {nid}): {reason}")]
    Inode {
        /// The inode's nid.
        nid: u64,
        /// What is wrong.
        reason: String,
    },
    /// A directory block is malformed.
    #[error("invalid directory (nid {nid}): {reason}")]
    Directory {
        /// The directory's nid.
        nid: u64,
        /// What is wrong.
        reason: String,
    },
    /// An extended attribute area is malformed or cannot be encoded.
    #[error("invalid xattr: {0}")]
    Xattr(String),
    /// A chunk index, chunk record or chunk information entry is invalid.
    #[error("invalid chunk: {0}")]
    Chunk(String),
    /// The blob's compression-context header or ci array is invalid.
    #[error("invalid blob metadata: {0}")]
    BlobMeta(String),
    /// Compressing or decompressing chunk data failed.
    #[error("{algo} {op} failed: {reason}")]
    Codec {
        /// Algorithm name.
        algo: &'static str,
        /// "compression" or "decompression".
        op: &'static str,
        /// Library message.
        reason: String,
    },
    /// A chunk's data does not match its recorded digest.
    #[error("chunk digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest in the metadata.
        expected: String,
        /// Digest of the data.
        actual: String,
    },
    /// The tree given to the writer cannot be represented.
    #[error("cannot encode image: {0}")]
    Encode(String),
}

/// Result alias for the format crate.
pub type Result<T> = std::result::Result<T, FormatError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_problem() {
        let e = FormatError::OutOfBounds { what: "inode", offset: 0x1000, len: 64, size: 0x800 };
        assert_eq!(
            e.to_string(),
            "inode at offset 0x1000 (+0x40) lies outside the 0x800-byte image (truncated or corrupt)"
        );
        let e = FormatError::Inode { nid: 7, reason: "nlink is 0".into() };
        assert_eq!(e.to_string(), "invalid inode (nid 7): nlink is 0");
    }
}
