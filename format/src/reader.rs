//! Validated reading of RAFS v6 bootstraps.
//!
//! [`Bootstrap::parse`] checks the superblocks, device slots and blob table
//! up front; inodes, directories, xattrs and chunk indexes are checked when
//! they are read. Every offset and length is bounds-checked against the
//! buffer, so a malformed image yields a [`FormatError`], never a panic.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use zerocopy::FromBytes;

use crate::blob_meta::{ChunkLocation, CiDescriptor};
use crate::codec::{Compressor, Digest, Digester};
use crate::dir::{self, DirEntry};
use crate::error::{FormatError, Result};
use crate::flags;
use crate::ondisk::*;
use crate::writer::libc_ifmt as ifmt;
use crate::xattr::{self, Xattrs};

/// Superblock facts.
#[derive(Debug, Clone)]
pub struct SuperInfo {
    /// Root directory nid.
    pub root_nid: u64,
    /// Inode count from the superblock.
    pub inos: u64,
    /// Metadata area base, in blocks.
    pub meta_blkaddr: u32,
    /// Total blob blocks.
    pub blocks: u32,
    /// `RafsSuperFlags`.
    pub flags: u64,
    /// Filesystem chunk size.
    pub chunk_size: u32,
    /// Filesystem compressor.
    pub compressor: Compressor,
    /// Filesystem digester.
    pub digester: Digester,
    /// Chunk info table offset and size.
    pub chunk_table: (u64, u64),
    /// Prefetch table offset and size.
    pub prefetch_table: (u64, u32),
}

/// A blob table entry together with its device slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Blob id.
    pub blob_id: String,
    /// Index in the blob table.
    pub blob_index: u32,
    /// Chunk size.
    pub chunk_size: u32,
    /// Number of chunks.
    pub chunk_count: u32,
    /// Chunk compressor.
    pub compressor: Compressor,
    /// Chunk digester.
    pub digester: Digester,
    /// Blob features.
    pub features: u32,
    /// Blob file size.
    pub compressed_size: u64,
    /// Uncompressed space size.
    pub uncompressed_size: u64,
    /// ci compressor id.
    pub ci_compressor: u32,
    /// ci offset.
    pub ci_offset: u64,
    /// Stored ci size.
    pub ci_compressed_size: u64,
    /// Plain ci size.
    pub ci_uncompressed_size: u64,
    /// Device slot: blocks.
    pub device_blocks: u32,
    /// Device slot: position in a flattened disk, in blocks.
    pub mapped_blkaddr: u32,
}

impl BlobInfo {
    /// What a reader needs to load this blob's ci array.
    pub fn ci_descriptor(&self) -> CiDescriptor {
        CiDescriptor {
            ci_offset: self.ci_offset,
            ci_compressed_size: self.ci_compressed_size,
            ci_uncompressed_size: self.ci_uncompressed_size,
            ci_compressor: self.ci_compressor,
            chunk_count: self.chunk_count,
            features: self.features,
            uncompressed_size: self.uncompressed_size,
        }
    }

    /// Whether this reader can fetch chunk data of the blob (plain v1 blobs).
    pub fn data_supported(&self) -> std::result::Result<(), String> {
        let unsupported = flags::BLOB_CHUNK_INFO_V2
            | flags::BLOB_ZRAN
            | flags::BLOB_SEPARATE
            | flags::BLOB_TARFS
            | flags::BLOB_BATCH
            | flags::BLOB_ENCRYPTED;
        match self.features & unsupported {
            0 => Ok(()),
            f => Err(format!("blob {} uses features {f:#x} that this reader cannot fetch data for", self.blob_id)),
        }
    }
}

/// A decoded inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inode {
    /// nid (also the inode number nydusd reports).
    pub nid: u64,
    /// Byte offset in the bootstrap.
    pub offset: u64,
    /// 32-byte form.
    pub compact: bool,
    /// Data layout.
    pub layout: u16,
    /// `st_mode`.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Size.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// mtime seconds.
    pub mtime: u64,
    /// mtime nanoseconds.
    pub mtime_nsec: u32,
    /// Stored inode number.
    pub ino: u32,
    /// Raw `i_u`.
    pub i_u: u32,
    /// Size of the inline xattr area.
    pub xattr_size: u64,
}

impl Inode {
    /// File type bits.
    pub fn kind(&self) -> u32 {
        self.mode & ifmt::S_IFMT
    }
    /// Directory?
    pub fn is_dir(&self) -> bool {
        self.kind() == ifmt::S_IFDIR
    }
    /// Regular file?
    pub fn is_reg(&self) -> bool {
        self.kind() == ifmt::S_IFREG
    }
    /// Symlink?
    pub fn is_symlink(&self) -> bool {
        self.kind() == ifmt::S_IFLNK
    }
    /// Size of the inode structure.
    pub fn inode_size(&self) -> u64 {
        if self.compact {
            32
        } else {
            64
        }
    }
    /// `(major, minor)` for devices.
    pub fn rdev(&self) -> (u32, u32) {
        let d = self.i_u;
        ((d >> 8) & 0xfff, (d & 0xff) | ((d >> 12) & 0xfff00))
    }
}

/// One chunk reference of a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Blob index.
    pub blob_index: u32,
    /// Chunk index in the blob's ci array.
    pub ci_index: u32,
    /// Uncompressed block address in the blob.
    pub blkaddr: u32,
}

/// A chunk info table record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Digest.
    pub digest: Digest,
    /// Blob index.
    pub blob_index: u32,
    /// Flags.
    pub flags: u32,
    /// Stored size.
    pub compressed_size: u32,
    /// Plain size.
    pub uncompressed_size: u32,
    /// Stored offset.
    pub compressed_offset: u64,
    /// Uncompressed offset.
    pub uncompressed_offset: u64,
    /// File offset (informational).
    pub file_offset: u64,
    /// ci index.
    pub index: u32,
    /// CRC-32C.
    pub crc32: u32,
}

impl ChunkInfo {
    /// Where the chunk is stored and where its plain bytes go.
    pub fn location(&self) -> ChunkLocation {
        ChunkLocation {
            compressed_offset: self.compressed_offset,
            compressed_size: self.compressed_size,
            uncompressed_offset: self.uncompressed_offset,
            uncompressed_size: self.uncompressed_size,
        }
    }
}

/// The chunk locations of blob `info`, by ci index, taken from the
/// bootstrap's chunk `records`: for blobs without a ci array of their own
/// (RAFS v5 images). A ci index no record names stays all zero.
pub fn recorded_locations(records: &[ChunkInfo], info: &BlobInfo) -> Vec<ChunkLocation> {
    let mut locs = vec![ChunkLocation::default(); info.chunk_count as usize];
    for r in records.iter().filter(|r| r.blob_index == info.blob_index) {
        if let Some(l) = locs.get_mut(r.index as usize) {
            *l = r.location();
        }
    }
    locs
}

/// A parsed RAFS v6 bootstrap over any byte buffer.
pub struct Bootstrap<B: AsRef<[u8]>> {
    buf: B,
    /// Superblock facts.
    pub sb: SuperInfo,
    /// Blobs in index order.
    pub blobs: Vec<BlobInfo>,
    meta_base: u64,
    chunk_map: OnceLock<Result<HashMap<(u32, u32), ChunkInfo>>>,
}

fn sb_err(m: impl Into<String>) -> FormatError {
    FormatError::Superblock(m.into())
}

fn id_string(raw: &[u8; 64], index: usize) -> Result<String> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(64);
    let s = std::str::from_utf8(&raw[..len])
        .map_err(|_| FormatError::Blob { index, reason: "blob id is not UTF-8".into() })?;
    if raw[len..].iter().any(|&b| b != 0) || s.is_empty() {
        return Err(FormatError::Blob { index, reason: "blob id is empty or has garbage after NUL".into() });
    }
    Ok(s.to_string())
}

/// Detect the RAFS version of a bootstrap: `Some(5)`, `Some(6)` or `None`.
pub fn detect_version(buf: &[u8]) -> Option<u32> {
    if buf.len() >= 8 && u32::from_le_bytes(buf[..4].try_into().ok()?) == RAFS_V5_MAGIC {
        return Some(5);
    }
    if buf.len() >= 1028 && u32::from_le_bytes(buf[1024..1028].try_into().ok()?) == EROFS_MAGIC {
        return Some(6);
    }
    None
}

impl<B: AsRef<[u8]>> Bootstrap<B> {
    /// Parse and validate the superblocks, device table and blob table.
    pub fn parse(buf: B) -> Result<Self> {
        let data = buf.as_ref();
        let size = data.len() as u64;
        match detect_version(data) {
            Some(6) => {}
            Some(5) => return Err(FormatError::UnsupportedVersion("RAFS v5 bootstraps are not supported yet".into())),
            _ => return Err(FormatError::BadMagic),
        }
        let sb: ErofsSuperBlock = read_at(data, EROFS_SB_OFFSET, "EROFS superblock")?;
        let ext: RafsV6SuperBlockExt = read_at(data, EXT_SB_OFFSET, "RAFS v6 extended superblock")?;
        if sb.checksum.get() != 0 {
            return Err(sb_err("checksum is set (RAFS never sets it)"));
        }
        if sb.feature_compat.get() & COMPAT_RAFS_V6 == 0 {
            return Err(sb_err("not a RAFS v6 image: compat feature 0x40000000 missing (a plain EROFS image?)"));
        }
        if sb.blkszbits != BLOCK_BITS {
            return Err(sb_err(format!("block size bits {} unsupported (only 12)", sb.blkszbits)));
        }
        if sb.sb_extslots != 0 || sb.u1.get() != 0 || sb.xattr_blkaddr.get() != 0 {
            return Err(sb_err("extslots, u1 or xattr_blkaddr is non-zero"));
        }
        if sb.inos.get() == 0 {
            return Err(sb_err("inode count is 0"));
        }
        if sb.devt_slotoff.get() != DEVT_SLOTOFF {
            return Err(sb_err(format!("device slot offset {} is not 11", sb.devt_slotoff.get())));
        }
        if sb.feature_incompat.get() != INCOMPAT_RAFS_V6 {
            return Err(sb_err(format!("incompatible features {:#x} (expected 0xc)", sb.feature_incompat.get())));
        }
        if !size.is_multiple_of(BLOCK_SIZE) || size < BLOCK_SIZE {
            return Err(sb_err(format!("image size {size} is not a positive multiple of 4096 (truncated?)")));
        }
        let meta_base = sb.meta_blkaddr.get() as u64 * BLOCK_SIZE;
        if meta_base >= size {
            return Err(sb_err("metadata area starts beyond the end of the image"));
        }
        let flags = ext.s_flags.get();
        if flags & !flags::ALL_SB_FLAGS != 0 {
            return Err(sb_err(format!("unknown flags {:#x}", flags & !flags::ALL_SB_FLAGS)));
        }
        if flags & flags::TARTFS_MODE != 0 {
            return Err(FormatError::UnsupportedVersion("TARFS-mode images are not supported".into()));
        }
        let compressor = match flags & flags::COMPRESSION_MASK {
            flags::COMPRESSION_NONE => Compressor::None,
            flags::COMPRESSION_LZ4 => Compressor::Lz4Block,
            flags::COMPRESSION_GZIP => Compressor::Gzip,
            flags::COMPRESSION_ZSTD => Compressor::Zstd,
            _ => return Err(sb_err("not exactly one compression flag")),
        };
        let digester = match flags & flags::HASH_MASK {
            flags::HASH_BLAKE3 => Digester::Blake3,
            flags::HASH_SHA256 => Digester::Sha256,
            _ => return Err(sb_err("not exactly one digest flag")),
        };
        let chunk_size = ext.s_chunk_size.get();
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(sb_err(format!("chunk size {chunk_size:#x} invalid")));
        }
        let nblobs = sb.extra_devices.get() as u64;
        if nblobs == 0 && sb.blocks.get() != 0 && sb.blocks.get() != 4096 {
            return Err(sb_err("blocks set without devices"));
        }
        let bt_off = ext.s_blob_table_offset.get();
        let bt_size = ext.s_blob_table_size.get() as u64;
        if bt_size != 256 * nblobs || !bt_off.is_multiple_of(BLOCK_SIZE) || bt_off < DEVT_OFFSET + 128 * nblobs {
            return Err(sb_err("blob table size or position is inconsistent with the device count"));
        }
        let ct = (ext.s_chunk_table_offset.get(), ext.s_chunk_table_size.get());
        let pt = (ext.s_prefetch_table_offset.get(), ext.s_prefetch_table_size.get());
        check_table(size, bt_off, bt_size, "blob table")?;
        check_table(size, ct.0, ct.1, "chunk info table")?;
        if !ct.1.is_multiple_of(80) || (ct.1 > 0 && !ct.0.is_multiple_of(BLOCK_SIZE)) {
            return Err(sb_err("chunk info table size is not a multiple of 80 or misaligned"));
        }
        if ct.1 > 0 && bt_size > 0 && overlaps(bt_off, bt_size, ct.0, ct.1) {
            return Err(sb_err("blob table overlaps chunk info table"));
        }
        if pt.1 > 0 {
            check_table(size, pt.0, pt.1 as u64, "prefetch table")?;
            if !pt.1.is_multiple_of(4)
                || overlaps(pt.0, pt.1 as u64, bt_off, bt_size)
                || overlaps(pt.0, pt.1 as u64, ct.0, ct.1)
            {
                return Err(sb_err("prefetch table is misaligned or overlaps another table"));
            }
        }
        let mut blobs = Vec::with_capacity(nblobs as usize);
        let mut seen = HashSet::new();
        for i in 0..nblobs as usize {
            let slot: DeviceSlot = read_at(data, DEVT_OFFSET + 128 * i as u64, "device slot")?;
            let e: RafsV6Blob = read_at(data, bt_off + 256 * i as u64, "blob table entry")?;
            let b = validate_blob(i, &slot, &e, chunk_size)?;
            if !seen.insert(b.blob_id.clone()) {
                return Err(FormatError::Blob { index: i, reason: format!("duplicate blob id {}", b.blob_id) });
            }
            blobs.push(b);
        }
        let sbi = SuperInfo {
            root_nid: sb.root_nid.get() as u64,
            inos: sb.inos.get(),
            meta_blkaddr: sb.meta_blkaddr.get(),
            blocks: sb.blocks.get(),
            flags,
            chunk_size,
            compressor,
            digester,
            chunk_table: ct,
            prefetch_table: pt,
        };
        Ok(Self { buf, sb: sbi, blobs, meta_base, chunk_map: OnceLock::new() })
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Read and validate the inode `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode> {
        let data = self.bytes();
        let err = |reason: String| FormatError::Inode { nid, reason };
        let offset = nid
            .checked_mul(INODE_SLOT)
            .and_then(|o| o.checked_add(self.meta_base))
            .ok_or_else(|| err("nid overflows".into()))?;
        let head: [u8; 2] = read_at(data, offset, "inode")?;
        let i_format = u16::from_le_bytes(head);
        if i_format & !0xf != 0 {
            return Err(err(format!("unknown i_format bits {i_format:#x}")));
        }
        let layout = i_format & 0xe;
        let ino = if i_format & 1 == 0 {
            let c: InodeCompact = read_at(data, offset, "compact inode")?;
            Inode {
                nid,
                offset,
                compact: true,
                layout,
                mode: c.i_mode.get() as u32,
                nlink: c.i_nlink.get() as u32,
                size: c.i_size.get() as u64,
                uid: c.i_uid.get() as u32,
                gid: c.i_gid.get() as u32,
                mtime: 0,
                mtime_nsec: 0,
                ino: c.i_ino.get(),
                i_u: c.i_u.get(),
                xattr_size: xattr::size_for_icount(c.i_xattr_icount.get()) as u64,
            }
        } else {
            let e: InodeExtended = read_at(data, offset, "extended inode")?;
            Inode {
                nid,
                offset,
                compact: false,
                layout,
                mode: e.i_mode.get() as u32,
                nlink: e.i_nlink.get(),
                size: e.i_size.get(),
                uid: e.i_uid.get(),
                gid: e.i_gid.get(),
                mtime: e.i_mtime.get(),
                mtime_nsec: e.i_mtime_nsec.get(),
                ino: e.i_ino.get(),
                i_u: e.i_u.get(),
                xattr_size: xattr::size_for_icount(e.i_xattr_icount.get()) as u64,
            }
        };
        if ino.nlink == 0 {
            return Err(err("nlink is 0".into()));
        }
        if ino.mtime_nsec >= 1_000_000_000 {
            return Err(err("mtime nanoseconds out of range".into()));
        }
        slice_at(data, offset, ino.inode_size() + ino.xattr_size, "inode with xattrs")?;
        let ok_layout = match ino.kind() {
            ifmt::S_IFREG => layout == LAYOUT_CHUNK_BASED,
            ifmt::S_IFDIR | ifmt::S_IFLNK => layout == LAYOUT_FLAT_PLAIN || layout == LAYOUT_FLAT_INLINE,
            ifmt::S_IFCHR | ifmt::S_IFBLK | ifmt::S_IFIFO | ifmt::S_IFSOCK => layout == LAYOUT_FLAT_PLAIN,
            _ => return Err(err(format!("unknown file type in mode {:o}", ino.mode))),
        };
        if !ok_layout {
            return Err(err(format!("layout {layout} invalid for mode {:o}", ino.mode)));
        }
        if ino.is_symlink() && (ino.size == 0 || ino.size > 4096) {
            return Err(err(format!("symlink size {} not in 1..=4096", ino.size)));
        }
        if ino.is_dir() && ino.size < 24 {
            return Err(err("directory too small to hold '.' and '..'".into()));
        }
        if ino.is_reg() && ino.i_u & CHUNK_FORMAT_INDEXES as u32 == 0 {
            return Err(err("chunk-based file without chunk indexes".into()));
        }
        Ok(ino)
    }

    /// The inline xattrs of `inode`.
    pub fn xattrs(&self, inode: &Inode) -> Result<Xattrs> {
        let area = slice_at(self.bytes(), inode.offset + inode.inode_size(), inode.xattr_size, "xattr area")?;
        xattr::decode(area)
    }

    /// Directory or symlink data.
    pub fn data(&self, inode: &Inode) -> Result<Vec<u8>> {
        if !(inode.is_dir() || inode.is_symlink()) {
            return Err(FormatError::Inode { nid: inode.nid, reason: "not a directory or symlink".into() });
        }
        Ok(self.data_blocks(inode)?.concat())
    }

    /// Entries of directory `inode`, in on-disk (sorted) order, incl. `.`/`..`.
    pub fn read_dir(&self, inode: &Inode) -> Result<Vec<DirEntry>> {
        if !inode.is_dir() {
            return Err(FormatError::Directory { nid: inode.nid, reason: "not a directory".into() });
        }
        dir::decode(inode.nid, &self.data(inode)?)
    }

    /// Visit the entries of directory `inode` from index `skip` on (index 0
    /// is the first entry, `.`/`..` included), decoding only the blocks
    /// visited: whole blocks before `skip` are passed over by their entry
    /// counts. `f` returns `false` to stop. This keeps a listing served in
    /// many small pieces (FUSE readdir) linear in the directory size.
    pub fn visit_dir(&self, inode: &Inode, skip: u64, mut f: impl FnMut(u64, DirEntry) -> Result<bool>) -> Result<()> {
        if !inode.is_dir() {
            return Err(FormatError::Directory { nid: inode.nid, reason: "not a directory".into() });
        }
        let mut index = 0u64;
        for (bi, block) in self.data_blocks(inode)?.into_iter().enumerate() {
            let count = dir::block_count(inode.nid, bi, block)? as u64;
            if index + count <= skip {
                index += count;
                continue;
            }
            for e in dir::decode_block(inode.nid, bi, block)? {
                if index >= skip && !f(index, e)? {
                    return Ok(());
                }
                index += 1;
            }
        }
        Ok(())
    }

    /// Find `name` in directory `inode`, searching the on-disk blocks
    /// directly (only the block that can hold the name is decoded).
    pub fn lookup(&self, inode: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        if !inode.is_dir() {
            return Err(FormatError::Directory { nid: inode.nid, reason: "not a directory".into() });
        }
        dir::lookup(inode.nid, &self.data_blocks(inode)?, name)
    }

    /// The data of a directory or symlink as borrowed block-sized pieces
    /// (full blocks, then the inline tail), without copying.
    fn data_blocks(&self, inode: &Inode) -> Result<Vec<&[u8]>> {
        let data = self.bytes();
        if inode.size > data.len() as u64 {
            return Err(FormatError::Inode {
                nid: inode.nid,
                reason: format!("size {} exceeds the image", inode.size),
            });
        }
        let (full, tail) = data_split(inode);
        let mut out: Vec<&[u8]> = Vec::new();
        if full > 0 {
            let start = inode.i_u as u64 * BLOCK_SIZE;
            out.extend(slice_at(data, start, full, "inode data blocks")?.chunks(BLOCK_SIZE as usize));
        }
        if tail > 0 {
            let at = inode.offset + inode.inode_size() + inode.xattr_size;
            if at % BLOCK_SIZE + tail > BLOCK_SIZE {
                return Err(FormatError::Inode {
                    nid: inode.nid,
                    reason: "inline data crosses a block boundary".into(),
                });
            }
            out.push(slice_at(data, at, tail, "inline inode data")?);
        }
        Ok(out)
    }

    /// Resolve an absolute path (symlinks are not followed).
    pub fn lookup_path(&self, path: &str) -> Result<Option<Inode>> {
        let mut cur = self.inode(self.sb.root_nid)?;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !cur.is_dir() {
                return Ok(None);
            }
            match self.lookup(&cur, comp.as_bytes())? {
                Some(e) => cur = self.inode(e.nid)?,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// Symlink target.
    pub fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        if !inode.is_symlink() {
            return Err(FormatError::Inode { nid: inode.nid, reason: "not a symlink".into() });
        }
        self.data(inode)
    }

    /// Chunk references of a regular file, one per filesystem chunk.
    pub fn chunks(&self, inode: &Inode) -> Result<Vec<ChunkIndex>> {
        self.chunk_range(inode, 0, u64::MAX)
    }

    /// Chunk references `first .. first + count` of a regular file (clamped
    /// to the file's chunk count), so a read decodes only what it needs.
    pub fn chunk_range(&self, inode: &Inode, first: u64, count: u64) -> Result<Vec<ChunkIndex>> {
        let err = |reason: String| FormatError::Inode { nid: inode.nid, reason };
        if !inode.is_reg() {
            return Err(err("not a regular file".into()));
        }
        let total = inode.size.div_ceil(self.sb.chunk_size as u64);
        let first = first.min(total);
        let count = count.min(total - first);
        let base = (inode.offset + inode.inode_size() + inode.xattr_size).div_ceil(8) * 8;
        // The whole array must lie inside the image, even if only part is read.
        slice_at(
            self.bytes(),
            base,
            total.checked_mul(8).ok_or_else(|| err("size overflows".into()))?,
            "chunk index array",
        )?;
        let raw = slice_at(self.bytes(), base + first * 8, count * 8, "chunk index array")?;
        let mut out = Vec::with_capacity(count as usize);
        for e in raw.chunks_exact(8) {
            let c = ChunkIndexOnDisk::read_from_bytes(e).expect("8 bytes");
            let hi = c.c_blob_addr_hi.get();
            let dev = (hi & 0xff) as u32;
            if dev == 0 || dev as usize > self.blobs.len() {
                return Err(err(format!("chunk refers to device {dev}, image has {} blobs", self.blobs.len())));
            }
            let ci_index = c.c_blob_addr_lo.get() as u32 | (((hi >> 8) as u32) << 16);
            let blob = &self.blobs[dev as usize - 1];
            if ci_index >= blob.chunk_count {
                return Err(err(format!(
                    "chunk index {ci_index} beyond blob {}'s {} chunks",
                    blob.blob_id, blob.chunk_count
                )));
            }
            out.push(ChunkIndex { blob_index: dev - 1, ci_index, blkaddr: c.c_blk_addr.get() });
        }
        Ok(out)
    }

    /// All chunk info table records.
    pub fn chunk_records(&self) -> Result<Vec<ChunkInfo>> {
        let (off, size) = self.sb.chunk_table;
        let raw = slice_at(self.bytes(), off, size, "chunk info table")?;
        let mut out = Vec::with_capacity((size / 80) as usize);
        for (i, r) in raw.chunks_exact(80).enumerate() {
            let r = ChunkInfoOnDisk::read_from_bytes(r).expect("80 bytes");
            let c = ChunkInfo {
                digest: r.block_id,
                blob_index: r.blob_index.get(),
                flags: r.flags.get(),
                compressed_size: r.compressed_size.get(),
                uncompressed_size: r.uncompressed_size.get(),
                compressed_offset: r.compressed_offset.get(),
                uncompressed_offset: r.uncompressed_offset.get(),
                file_offset: r.file_offset.get(),
                index: r.index.get(),
                crc32: r.crc32.get(),
            };
            let blob = self.blobs.get(c.blob_index as usize).ok_or_else(|| {
                FormatError::Chunk(format!("record {i} refers to blob {} of {}", c.blob_index, self.blobs.len()))
            })?;
            if c.index >= blob.chunk_count
                || c.uncompressed_size == 0
                || c.uncompressed_size > self.sb.chunk_size
                || c.compressed_size == 0
                || c.uncompressed_offset.saturating_add(c.uncompressed_size as u64) > blob.uncompressed_size
            {
                return Err(FormatError::Chunk(format!(
                    "record {i} (blob {}, chunk {}) has invalid sizes or index",
                    c.blob_index, c.index
                )));
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The chunk record for `(blob_index, ci_index)`.
    pub fn chunk_info(&self, c: &ChunkIndex) -> Result<ChunkInfo> {
        let map = self
            .chunk_map
            .get_or_init(|| Ok(self.chunk_records()?.into_iter().map(|r| ((r.blob_index, r.index), r)).collect()));
        let map = map.as_ref().map_err(Clone::clone)?;
        let r = map.get(&(c.blob_index, c.ci_index)).ok_or_else(|| {
            FormatError::Chunk(format!("no chunk record for blob {} chunk {}", c.blob_index, c.ci_index))
        })?;
        if r.uncompressed_offset != c.blkaddr as u64 * BLOCK_SIZE {
            return Err(FormatError::Chunk(format!(
                "chunk index block {:#x} disagrees with record offset {:#x}",
                c.blkaddr, r.uncompressed_offset
            )));
        }
        Ok(*r)
    }

    /// Prefetch table nids.
    pub fn prefetch_nids(&self) -> Result<Vec<u64>> {
        let (off, size) = self.sb.prefetch_table;
        let raw = slice_at(self.bytes(), off, size as u64, "prefetch table")?;
        Ok(raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as u64)
            .take_while(|&n| n != 0)
            .collect())
    }

    /// Walk the tree depth-first in name order, calling `f(path, entry, inode)`
    /// for every name (the root has path `/` and a `.` entry). Directory cycles,
    /// directories reached twice and directories sharing data blocks are
    /// reported as errors, so the work done is linear in the image size.
    pub fn walk(&self, mut f: impl FnMut(&[u8], &DirEntry, &Inode) -> Result<()>) -> Result<()> {
        let root = self.inode(self.sb.root_nid)?;
        if !root.is_dir() {
            return Err(FormatError::Inode { nid: root.nid, reason: "root is not a directory".into() });
        }
        let root_entry = DirEntry { name: b".".to_vec(), nid: root.nid, file_type: file_type::DIR };
        f(b"/", &root_entry, &root)?;
        let mut seen_dirs = HashSet::from([root.nid]);
        let mut dir_blocks = HashSet::new();
        let mut stack: Vec<(Vec<u8>, Inode)> = vec![(Vec::new(), root)];
        while let Some((path, dir)) = stack.pop() {
            let entries = self.read_dir(&dir)?;
            let first = dir.i_u as u64;
            for b in first..first + data_split(&dir).0.div_ceil(BLOCK_SIZE) {
                if !dir_blocks.insert(b) {
                    return Err(FormatError::Directory {
                        nid: dir.nid,
                        reason: format!("data block {b} is shared with another directory"),
                    });
                }
            }
            let mut subdirs = Vec::new();
            for e in entries {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let ino = self.inode(e.nid)?;
                if crate::writer::file_type_of(ino.mode) != e.file_type {
                    return Err(FormatError::Directory {
                        nid: dir.nid,
                        reason: format!(
                            "entry {:?} file type disagrees with its inode",
                            String::from_utf8_lossy(&e.name)
                        ),
                    });
                }
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                f(&p, &e, &ino)?;
                if ino.is_dir() {
                    if !seen_dirs.insert(ino.nid) {
                        return Err(FormatError::Directory {
                            nid: ino.nid,
                            reason: "directory reached twice (cycle or shared directory)".into(),
                        });
                    }
                    subdirs.push((p, ino));
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }
}

/// Bytes of `inode`'s data stored in whole blocks at `i_u` and inline after
/// the inode (directories and symlinks).
fn data_split(inode: &Inode) -> (u64, u64) {
    let size = inode.size;
    if inode.layout == LAYOUT_FLAT_INLINE {
        let tail = if size.is_multiple_of(BLOCK_SIZE) { BLOCK_SIZE.min(size) } else { size % BLOCK_SIZE };
        (size - tail, tail)
    } else {
        (size, 0)
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen > 0 && blen > 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

fn check_table(size: u64, off: u64, len: u64, what: &str) -> Result<()> {
    if len > 0 && (off < BLOCK_SIZE || off.checked_add(len).is_none_or(|e| e > size)) {
        return Err(sb_err(format!("{what} at {off:#x} (+{len:#x}) lies outside the image")));
    }
    Ok(())
}

fn validate_blob(index: usize, slot: &DeviceSlot, e: &RafsV6Blob, chunk_size: u32) -> Result<BlobInfo> {
    let err = |reason: String| FormatError::Blob { index, reason };
    let blob_id = id_string(&e.blob_id, index)?;
    let tag = id_string(&slot.tag, index)?;
    if tag != blob_id {
        return Err(err(format!("device tag {tag} differs from blob id {blob_id}")));
    }
    if slot.blocks.get() == 0 {
        return Err(err("device slot has 0 blocks".into()));
    }
    if e.blob_index.get() as usize != index {
        return Err(err(format!("blob_index {} at position {index}", e.blob_index.get())));
    }
    if e.chunk_size.get() != chunk_size {
        return Err(err("chunk size differs from the superblock's".into()));
    }
    let chunk_count = e.chunk_count.get();
    if chunk_count > MAX_CHUNKS_PER_BLOB + 1 {
        return Err(err(format!("{chunk_count} chunks exceed 2^24")));
    }
    let features = e.features.get();
    if features & flags::BLOB_V5_NO_EXT_BLOB_TABLE != 0 || features & flags::BLOB_INCOMPAT_RESERVED != 0 {
        return Err(err(format!("unsupported feature bits {features:#x}")));
    }
    let tarfs = features & flags::BLOB_TARFS != 0;
    if tarfs == (features & flags::BLOB_ALIGNED != 0) {
        return Err(err("ALIGNED feature must be set (and clear only for TARFS)".into()));
    }
    if features & flags::BLOB_CHUNK_INFO_V2 == 0
        && features & (flags::BLOB_BATCH | flags::BLOB_ZRAN | flags::BLOB_ENCRYPTED) != 0
    {
        return Err(err("batch/zran/encrypted blobs need v2 chunk info".into()));
    }
    let compressor = Compressor::from_id(e.compression_algo.get())
        .ok_or_else(|| err(format!("unknown compressor {}", e.compression_algo.get())))?;
    let digester = Digester::from_id(e.digest_algo.get())
        .ok_or_else(|| err(format!("unknown digester {}", e.digest_algo.get())))?;
    let (cc, cu) = (e.ci_compressed_size.get(), e.ci_uncompressed_size.get());
    if cc > cu {
        return Err(err("ci compressed size exceeds its uncompressed size".into()));
    }
    // No ci array at all (blobs of converted RAFS v5 images): chunk
    // locations come from the bootstrap's chunk table instead.
    let no_ci = cc == 0 && cu == 0;
    let relaxed = tarfs || no_ci || features & flags::BLOB_IS_CHUNKDICT_GENERATED != 0;
    if !relaxed {
        let entry = if features & flags::BLOB_CHUNK_INFO_V2 != 0 { 24 } else { 16 };
        let extra = features & (flags::BLOB_BATCH | flags::BLOB_ZRAN | flags::BLOB_ENCRYPTED) != 0;
        let want = entry * chunk_count as u64;
        if (!extra && cu != want) || (extra && cu < want) {
            return Err(err(format!("ci size {cu} does not match {chunk_count} chunks")));
        }
    }
    if e.compressed_size.get() > 1 << 40 || e.uncompressed_size.get() > 1 << 44 {
        return Err(err("blob sizes out of range".into()));
    }
    if e.cipher_algo.get() > 3 {
        return Err(err("unknown cipher".into()));
    }
    Ok(BlobInfo {
        blob_id,
        blob_index: index as u32,
        chunk_size,
        chunk_count,
        compressor,
        digester,
        features,
        compressed_size: e.compressed_size.get(),
        uncompressed_size: e.uncompressed_size.get(),
        ci_compressor: e.ci_compressor.get(),
        ci_offset: e.ci_offset.get(),
        ci_compressed_size: cc,
        ci_uncompressed_size: cu,
        device_blocks: slot.blocks.get(),
        mapped_blkaddr: slot.mapped_blkaddr.get(),
    })
}
