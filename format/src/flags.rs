//! Flag words: filesystem (superblock) flags, blob features and chunk flags.

/// Chunks are stored uncompressed.
pub const COMPRESSION_NONE: u64 = 0x1;
/// Chunks are raw LZ4 blocks.
pub const COMPRESSION_LZ4: u64 = 0x2;
/// Digests are BLAKE3.
pub const HASH_BLAKE3: u64 = 0x4;
/// Digests are SHA-256.
pub const HASH_SHA256: u64 = 0x8;
/// Inode uid/gid are meaningful.
pub const EXPLICIT_UID_GID: u64 = 0x10;
/// Some inode has xattrs.
pub const HAS_XATTR: u64 = 0x20;
/// gzip chunks.
pub const COMPRESSION_GZIP: u64 = 0x40;
/// zstd chunks.
pub const COMPRESSION_ZSTD: u64 = 0x80;
/// Every blob carries a chunk digest array.
pub const INLINED_CHUNK_DIGEST: u64 = 0x100;
/// TARFS mode.
pub const TARTFS_MODE: u64 = 0x200;
/// Chunks are not encrypted.
pub const ENCRYPTION_NONE: u64 = 0x0100_0000;
/// Chunks are encrypted with AES-128-XTS.
pub const ENCRYPTION_AES_128_XTS: u64 = 0x0200_0000;
/// Reserved bits readers accept.
pub const PRESERVED_COMPAT: u64 = 0xfc00_0000;
/// Every bit a reader accepts.
pub const ALL_SB_FLAGS: u64 = 0x3ff | ENCRYPTION_NONE | ENCRYPTION_AES_128_XTS | PRESERVED_COMPAT;
/// All compression bits.
pub const COMPRESSION_MASK: u64 = COMPRESSION_NONE | COMPRESSION_LZ4 | COMPRESSION_GZIP | COMPRESSION_ZSTD;
/// All hash bits.
pub const HASH_MASK: u64 = HASH_BLAKE3 | HASH_SHA256;

/// Blob feature: uncompressed chunk offsets are 4 KiB aligned.
pub const BLOB_ALIGNED: u32 = 0x1;
/// Blob feature: bootstrap inlined in the blob.
pub const BLOB_INLINED_FS_META: u32 = 0x2;
/// Blob feature: 24-byte ci entries.
pub const BLOB_CHUNK_INFO_V2: u32 = 0x4;
/// Blob feature: zran contexts.
pub const BLOB_ZRAN: u32 = 0x8;
/// Blob feature: data and metadata in separate objects.
pub const BLOB_SEPARATE: u32 = 0x10;
/// Blob feature: chunk digest array present.
pub const BLOB_INLINED_CHUNK_DIGEST: u32 = 0x20;
/// Blob feature: TARFS.
pub const BLOB_TARFS: u32 = 0x40;
/// Blob feature: batch chunks.
pub const BLOB_BATCH: u32 = 0x80;
/// Blob feature: encrypted.
pub const BLOB_ENCRYPTED: u32 = 0x100;
/// Blob feature: generated for a chunk dictionary.
pub const BLOB_IS_CHUNKDICT_GENERATED: u32 = 0x200;
/// Blob feature: sections carry tar headers.
pub const BLOB_HAS_TAR_HEADER: u32 = 0x1000_0000;
/// Blob feature: blob ends with a ToC.
pub const BLOB_HAS_TOC: u32 = 0x2000_0000;
/// Blob feature: built by a tar/ToC-aware builder (always set).
pub const BLOB_CAP_TAR_TOC: u32 = 0x4000_0000;
/// Internal bit that must never be stored.
pub const BLOB_V5_NO_EXT_BLOB_TABLE: u32 = 0x8000_0000;
/// Incompatible reserved feature bits.
pub const BLOB_INCOMPAT_RESERVED: u32 = 0x0000_f000;

/// Chunk flag: stored compressed.
pub const CHUNK_COMPRESSED: u32 = 0x1;
/// Chunk flag: encrypted.
pub const CHUNK_ENCRYPTED: u32 = 0x4;
/// Chunk flag: batch member.
pub const CHUNK_BATCH: u32 = 0x8;
/// Chunk flag: crc32 valid.
pub const CHUNK_HAS_CRC32: u32 = 0x10;
