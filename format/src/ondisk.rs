//! Plain on-disk structures of RAFS v6 (EROFS + RAFS extensions) and of the
//! blob trailer. Every field is little-endian; the structs have alignment 1,
//! so they can be read from and written to any byte position without casts.
//!
//! Field meanings are documented in `docs/rafs-v6.md`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// EROFS block size used by RAFS v6 (4 KiB).
pub const BLOCK_SIZE: u64 = 4096;
/// log2 of [`BLOCK_SIZE`].
pub const BLOCK_BITS: u8 = 12;
/// Byte offset of the EROFS superblock.
pub const EROFS_SB_OFFSET: u64 = 1024;
/// EROFS magic.
pub const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
/// Compat feature bit marking a RAFS v6 image.
pub const COMPAT_RAFS_V6: u32 = 0x4000_0000;
/// Incompat features RAFS v6 uses: chunked files + device table.
pub const INCOMPAT_RAFS_V6: u32 = 0x0000_000C;
/// Byte offset of the RAFS v6 extended superblock.
pub const EXT_SB_OFFSET: u64 = 1152;
/// Device table slot offset, in units of 128 bytes (11 × 128 = 1408).
pub const DEVT_SLOTOFF: u16 = 11;
/// Byte offset of the device table.
pub const DEVT_OFFSET: u64 = 1408;
/// Size of an inode slot; nids count these.
pub const INODE_SLOT: u64 = 32;
/// Root nid written by the builder.
pub const ROOT_NID: u64 = 128;
/// RAFS v5 magic.
pub const RAFS_V5_MAGIC: u32 = 0x5241_4653;
/// Magic of the blob compression-context header.
pub const BLOB_META_MAGIC: u32 = 0xB10B_B10B;
/// Maximum number of blobs in a v6 image.
pub const MAX_BLOBS: usize = 254;
/// Minimum chunk size.
pub const MIN_CHUNK_SIZE: u32 = 0x1000;
/// Maximum chunk size.
pub const MAX_CHUNK_SIZE: u32 = 0x100_0000;
/// Maximum chunks per blob (24-bit ci index).
pub const MAX_CHUNKS_PER_BLOB: u32 = 0xFF_FFFF;

// Data layouts, as they appear in `i_format` (layout id << 1; bit 0 is the
// inode version).
/// i_format layout bits: data in consecutive blocks (EROFS layout 0).
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
/// i_format layout bits: full blocks plus an inline tail (EROFS layout 2).
pub const LAYOUT_FLAT_INLINE: u16 = 2 << 1;
/// i_format layout bits: chunk-based file (EROFS layout 4).
pub const LAYOUT_CHUNK_BASED: u16 = 4 << 1;
/// Chunk format bit: the array holds 8-byte chunk indexes.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x20;

/// Dirent file types.
pub mod file_type {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REG: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHR: u8 = 3;
    /// Block device.
    pub const BLK: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const LNK: u8 = 7;
}

/// EROFS superblock (128 bytes at byte 1024).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ErofsSuperBlock {
    pub magic: U32,
    pub checksum: U32,
    pub feature_compat: U32,
    pub blkszbits: u8,
    pub sb_extslots: u8,
    pub root_nid: U16,
    pub inos: U64,
    pub build_time: U64,
    pub build_time_nsec: U32,
    pub blocks: U32,
    pub meta_blkaddr: U32,
    pub xattr_blkaddr: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: U32,
    pub u1: U16,
    pub extra_devices: U16,
    pub devt_slotoff: U16,
    pub reserved: [u8; 38],
}

/// RAFS v6 extended superblock (256 bytes at byte 1152).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RafsV6SuperBlockExt {
    pub s_flags: U64,
    pub s_blob_table_offset: U64,
    pub s_blob_table_size: U32,
    pub s_chunk_size: U32,
    pub s_chunk_table_offset: U64,
    pub s_chunk_table_size: U64,
    pub s_prefetch_table_offset: U64,
    pub s_prefetch_table_size: U32,
    pub s_padding: U32,
    pub reserved: [u8; 200],
}

/// EROFS device slot (128 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceSlot {
    pub tag: [u8; 64],
    pub blocks: U32,
    pub mapped_blkaddr: U32,
    pub reserved: [u8; 56],
}

/// RAFS v6 blob table entry (256 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RafsV6Blob {
    pub blob_id: [u8; 64],
    pub blob_index: U32,
    pub chunk_size: U32,
    pub chunk_count: U32,
    pub compression_algo: U32,
    pub digest_algo: U32,
    pub features: U32,
    pub compressed_size: U64,
    pub uncompressed_size: U64,
    pub blob_toc_size: U32,
    pub ci_compressor: U32,
    pub ci_offset: U64,
    pub ci_compressed_size: U64,
    pub ci_uncompressed_size: U64,
    pub blob_toc_digest: [u8; 32],
    pub blob_meta_digest: [u8; 32],
    pub blob_meta_size: U64,
    pub cipher_iv: U64,
    pub cipher_algo: U32,
    pub reserved: [u8; 36],
}

/// EROFS compact inode (32 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InodeCompact {
    pub i_format: U16,
    pub i_xattr_icount: U16,
    pub i_mode: U16,
    pub i_nlink: U16,
    pub i_size: U32,
    pub i_reserved: U32,
    pub i_u: U32,
    pub i_ino: U32,
    pub i_uid: U16,
    pub i_gid: U16,
    pub i_reserved2: U32,
}

/// EROFS extended inode (64 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InodeExtended {
    pub i_format: U16,
    pub i_xattr_icount: U16,
    pub i_mode: U16,
    pub i_reserved: U16,
    pub i_size: U64,
    pub i_u: U32,
    pub i_ino: U32,
    pub i_uid: U32,
    pub i_gid: U32,
    pub i_mtime: U64,
    pub i_mtime_nsec: U32,
    pub i_nlink: U32,
    pub i_reserved2: [u8; 16],
}

/// EROFS directory entry (12 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Dirent {
    pub nid: U64,
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

/// Inline xattr area header (12 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XattrIbodyHeader {
    pub h_reserved: U32,
    pub h_shared_count: u8,
    pub h_reserved2: [u8; 7],
}

/// Inline xattr entry header (4 bytes), followed by suffix and value.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XattrEntry {
    pub e_name_len: u8,
    pub e_name_index: u8,
    pub e_value_size: U16,
}

/// Chunk index entry (8 bytes) in a chunk-based inode's array.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChunkIndexOnDisk {
    /// ci_index & 0xffff.
    pub c_blob_addr_lo: U16,
    /// Low byte: blob_index + 1; high byte: (ci_index >> 16) & 0xff.
    pub c_blob_addr_hi: U16,
    /// Block of the chunk in the blob's uncompressed space.
    pub c_blk_addr: U32,
}

/// Chunk record of the chunk info table (80 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChunkInfoOnDisk {
    pub block_id: [u8; 32],
    pub blob_index: U32,
    pub flags: U32,
    pub compressed_size: U32,
    pub uncompressed_size: U32,
    pub compressed_offset: U64,
    pub uncompressed_offset: U64,
    pub file_offset: U64,
    pub index: U32,
    pub crc32: U32,
}

/// Blob compression-context header (4096 bytes), after the ci array.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlobMetaHeaderOnDisk {
    pub s_magic: U32,
    pub s_features: U32,
    pub s_ci_compressor: U32,
    pub s_ci_entries: U32,
    pub s_ci_offset: U64,
    pub s_ci_compressed_size: U64,
    pub s_ci_uncompressed_size: U64,
    pub s_ci_zran_offset: U64,
    pub s_ci_zran_size: U64,
    pub s_ci_zran_count: U32,
    pub reserved: [u8; 4032],
    pub s_magic2: U32,
}

/// Read a structure from `buf` at `offset`, checking bounds.
pub fn read_at<T: FromBytes + KnownLayout + Immutable + Copy>(
    buf: &[u8],
    offset: u64,
    what: &'static str,
) -> crate::Result<T> {
    let len = std::mem::size_of::<T>() as u64;
    let slice = slice_at(buf, offset, len, what)?;
    // The slice has exactly size_of::<T>() bytes, so this cannot fail.
    T::read_from_bytes(slice).map_err(|_| crate::FormatError::OutOfBounds { what, offset, len, size: buf.len() as u64 })
}

/// Borrow `len` bytes of `buf` at `offset`, checking bounds.
pub fn slice_at<'a>(buf: &'a [u8], offset: u64, len: u64, what: &'static str) -> crate::Result<&'a [u8]> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= buf.len() as u64 => Ok(&buf[offset as usize..end as usize]),
        _ => Err(crate::FormatError::OutOfBounds { what, offset, len, size: buf.len() as u64 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(size_of::<ErofsSuperBlock>(), 128);
        assert_eq!(size_of::<RafsV6SuperBlockExt>(), 256);
        assert_eq!(size_of::<DeviceSlot>(), 128);
        assert_eq!(size_of::<RafsV6Blob>(), 256);
        assert_eq!(size_of::<InodeCompact>(), 32);
        assert_eq!(size_of::<InodeExtended>(), 64);
        assert_eq!(size_of::<Dirent>(), 12);
        assert_eq!(size_of::<XattrIbodyHeader>(), 12);
        assert_eq!(size_of::<XattrEntry>(), 4);
        assert_eq!(size_of::<ChunkIndexOnDisk>(), 8);
        assert_eq!(size_of::<ChunkInfoOnDisk>(), 80);
        assert_eq!(size_of::<BlobMetaHeaderOnDisk>(), 4096);
    }

    #[test]
    fn bounds_are_checked() {
        let buf = [0u8; 100];
        assert!(read_at::<InodeExtended>(&buf, 40, "inode").is_err());
        assert!(read_at::<InodeExtended>(&buf, 36, "inode").is_ok());
        assert!(slice_at(&buf, u64::MAX, 2, "x").is_err());
    }
}
