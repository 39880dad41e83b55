//! Serialise a filesystem tree into a RAFS v6 bootstrap.
//!
//! The caller (the builder) describes the tree as a flat list of
//! [`NodeSpec`]s plus the blobs their chunks live in; [`write_bootstrap`]
//! chooses nids, inode forms and data layouts and returns the bytes.
//!
//! Layout chosen here (any EROFS-valid layout is readable; this one is
//! simple and deterministic):
//! * block 0: superblocks and device slots; then the blob table; the metadata
//!   area starts at the next block and its first block is left empty so that
//!   the root gets nid 128 and no inode gets nid 0;
//! * inodes in node order, 32-byte aligned, never straddling a block when they
//!   fit in one; small directories and symlinks are tail-packed after their
//!   inode (FLAT_INLINE), chunk indexes follow regular file inodes;
//! * then the full data blocks of large directories and symlinks;
//! * then the chunk info table, and zero padding to a whole block.

use std::collections::BTreeMap;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

use crate::codec::{Compressor, Digest, Digester};
use crate::dir::{self, DirEntry};
use crate::error::{FormatError, Result};
use crate::flags;
use crate::ondisk::*;
use crate::xattr::{self, Xattrs};

/// One chunk of a regular file, as stored in some blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Index of the blob in [`ImageSpec::blobs`].
    pub blob_index: u32,
    /// Index of the chunk in the blob's ci array.
    pub ci_index: u32,
    /// Digest of the plain chunk data.
    pub digest: Digest,
    /// Chunk flags (`flags::CHUNK_*`).
    pub flags: u32,
    /// Offset of the stored bytes in the blob.
    pub compressed_offset: u64,
    /// Stored size.
    pub compressed_size: u32,
    /// Offset in the blob's uncompressed space.
    pub uncompressed_offset: u64,
    /// Plain size.
    pub uncompressed_size: u32,
    /// Offset of the chunk in (one) file using it.
    pub file_offset: u64,
    /// CRC-32C of the plain data (valid if `flags` has `CHUNK_HAS_CRC32`).
    pub crc32: u32,
}

/// One name in the tree.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Name in the parent directory (empty for the root).
    pub name: Vec<u8>,
    /// Index of the parent node (the root is its own parent).
    pub parent: usize,
    /// Children, sorted by name bytes (directories only).
    pub children: Vec<usize>,
    /// Informational inode number stored in `i_ino`.
    pub ino: u32,
    /// `st_mode` including the file type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Device number (char/block devices): `(major, minor)`.
    pub rdev: (u32, u32),
    /// File size (regular files; symlinks use the target length).
    pub size: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Xattrs,
    /// Symlink target.
    pub symlink: Vec<u8>,
    /// Chunks in file order (regular files).
    pub chunks: Vec<ChunkSpec>,
    /// For an additional hard-link name: the node holding the inode.
    pub link_to: Option<usize>,
}

/// One data blob referenced by the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSpec {
    /// Blob id (64 hex digits).
    pub blob_id: String,
    /// Number of chunks in the blob's ci array.
    pub chunk_count: u32,
    /// Chunk compressor.
    pub compressor: Compressor,
    /// Chunk digester.
    pub digester: Digester,
    /// `flags::BLOB_*`.
    pub features: u32,
    /// Size of the blob file.
    pub compressed_size: u64,
    /// Size of the blob's uncompressed space (multiple of 4 KiB).
    pub uncompressed_size: u64,
    /// Compressor of the stored ci array.
    pub ci_compressor: Compressor,
    /// Offset of the ci array in the blob.
    pub ci_offset: u64,
    /// Stored ci size.
    pub ci_compressed_size: u64,
    /// Plain ci size.
    pub ci_uncompressed_size: u64,
}

/// The whole image to write.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Filesystem chunk size.
    pub chunk_size: u32,
    /// Filesystem compressor flag.
    pub compressor: Compressor,
    /// Filesystem digester.
    pub digester: Digester,
    /// Nodes; node 0 is the root. Nodes are laid out in this order.
    pub nodes: Vec<NodeSpec>,
    /// Blobs, in blob-index order.
    pub blobs: Vec<BlobSpec>,
    /// Nodes to prefetch after mount (prefetch table).
    pub prefetch: Vec<usize>,
}

/// Linux "new" device encoding stored in `i_u`.
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// EROFS dirent file type for a mode.
pub fn file_type_of(mode: u32) -> u8 {
    match mode & libc_ifmt::S_IFMT {
        libc_ifmt::S_IFREG => file_type::REG,
        libc_ifmt::S_IFDIR => file_type::DIR,
        libc_ifmt::S_IFCHR => file_type::CHR,
        libc_ifmt::S_IFBLK => file_type::BLK,
        libc_ifmt::S_IFIFO => file_type::FIFO,
        libc_ifmt::S_IFSOCK => file_type::SOCK,
        libc_ifmt::S_IFLNK => file_type::LNK,
        _ => file_type::UNKNOWN,
    }
}

/// File type bits of `st_mode` (kept here so the format crate needs no libc).
pub mod libc_ifmt {
    /// Type mask.
    pub const S_IFMT: u32 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u32 = 0o140000;
    /// Symlink.
    pub const S_IFLNK: u32 = 0o120000;
    /// Regular.
    pub const S_IFREG: u32 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Char device.
    pub const S_IFCHR: u32 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u32 = 0o010000;
}

/// Per-node layout decisions.
#[derive(Debug, Clone, Copy, Default)]
struct Placement {
    offset: u64,
    compact: bool,
    xattr_size: usize,
    data_size: u64,
    inline_tail: u64,
    full_blocks: u64,
    blkaddr: u32,
    nlink: u32,
}

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn is_dir(n: &NodeSpec) -> bool {
    n.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFDIR
}

fn kind(n: &NodeSpec) -> u32 {
    n.mode & libc_ifmt::S_IFMT
}

fn validate_spec(spec: &ImageSpec) -> Result<()> {
    let enc = |m: String| FormatError::Encode(m);
    if !spec.chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&spec.chunk_size) {
        return Err(enc(format!("chunk size {:#x} is not a power of two in 0x1000..=0x1000000", spec.chunk_size)));
    }
    if spec.nodes.is_empty() || !is_dir(&spec.nodes[0]) {
        return Err(enc("the root must be a directory".into()));
    }
    if spec.blobs.len() > MAX_BLOBS {
        return Err(enc(format!("{} blobs exceed the RAFS v6 limit of {MAX_BLOBS}", spec.blobs.len())));
    }
    for (i, n) in spec.nodes.iter().enumerate() {
        if i > 0 && (n.name.is_empty() || n.name.len() > 255 || n.name.contains(&b'/') || n.name.contains(&0)) {
            return Err(enc(format!("node {i}: invalid name {:?}", String::from_utf8_lossy(&n.name))));
        }
        if let Some(t) = n.link_to {
            if t >= spec.nodes.len() || spec.nodes[t].link_to.is_some() || kind(&spec.nodes[t]) == libc_ifmt::S_IFDIR {
                return Err(enc(format!("node {i}: bad hard-link target {t}")));
            }
        }
        if kind(n) == libc_ifmt::S_IFLNK && (n.symlink.is_empty() || n.symlink.len() > 4096) {
            return Err(enc(format!(
                "symlink {:?}: target length {} not in 1..=4096",
                String::from_utf8_lossy(&n.name),
                n.symlink.len()
            )));
        }
        if kind(n) == libc_ifmt::S_IFREG && n.link_to.is_none() {
            let want = n.size.div_ceil(spec.chunk_size as u64);
            if n.chunks.len() as u64 != want {
                return Err(enc(format!(
                    "file {:?}: {} chunks for size {}",
                    String::from_utf8_lossy(&n.name),
                    n.chunks.len(),
                    n.size
                )));
            }
            for c in &n.chunks {
                if c.blob_index as usize >= spec.blobs.len() || c.ci_index > MAX_CHUNKS_PER_BLOB {
                    return Err(enc(format!(
                        "file {:?}: chunk refers to missing blob {}",
                        String::from_utf8_lossy(&n.name),
                        c.blob_index
                    )));
                }
            }
        }
        for &c in &n.children {
            if c == 0 || c >= spec.nodes.len() || spec.nodes[c].parent != i {
                return Err(enc(format!("node {i}: child {c} does not name it as parent")));
            }
        }
        if n.children.windows(2).any(|w| spec.nodes[w[0]].name >= spec.nodes[w[1]].name) {
            return Err(enc(format!("node {i}: children not sorted or duplicated")));
        }
    }
    Ok(())
}

fn dir_entries(spec: &ImageSpec, i: usize, nids: &[u64]) -> Vec<DirEntry> {
    let n = &spec.nodes[i];
    let target = |c: usize| spec.nodes[c].link_to.unwrap_or(c);
    let mut v: Vec<DirEntry> = Vec::with_capacity(n.children.len() + 2);
    v.push(DirEntry { name: b".".to_vec(), nid: nids[i], file_type: file_type::DIR });
    v.push(DirEntry { name: b"..".to_vec(), nid: nids[n.parent], file_type: file_type::DIR });
    for &c in &n.children {
        let t = target(c);
        v.push(DirEntry {
            name: spec.nodes[c].name.clone(),
            nid: nids[t],
            file_type: file_type_of(spec.nodes[t].mode),
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Serialise `spec` into bootstrap bytes.
pub fn write_bootstrap(spec: &ImageSpec) -> Result<Vec<u8>> {
    validate_spec(spec)?;
    let bs = BLOCK_SIZE;
    let nblobs = spec.blobs.len() as u64;
    let blob_table_offset = round_up(DEVT_OFFSET + 128 * nblobs, bs);
    let prefetch_offset = blob_table_offset + 256 * nblobs;
    let prefetch_len = if nblobs > 0 { 4 * spec.prefetch.len() as u64 } else { 0 };
    let meta_base = if nblobs == 0 { 0 } else { round_up(prefetch_offset + prefetch_len, bs) };

    // nlink per node.
    let mut nlink = vec![1u32; spec.nodes.len()];
    for (i, n) in spec.nodes.iter().enumerate() {
        if is_dir(n) {
            nlink[i] =
                2 + n.children.iter().filter(|&&c| spec.nodes[c].link_to.is_none() && is_dir(&spec.nodes[c])).count()
                    as u32;
        }
    }
    for n in &spec.nodes {
        if let Some(t) = n.link_to {
            nlink[t] += 1;
        }
    }

    // Pass 1: place inodes.
    let mut pl = vec![Placement::default(); spec.nodes.len()];
    let mut cur = meta_base + bs;
    let place = |cur: &mut u64, len: u64| -> u64 {
        if *cur % bs + len > bs && len <= bs {
            *cur = round_up(*cur, bs);
        }
        let at = *cur;
        *cur = round_up(at + len, INODE_SLOT);
        at
    };
    for (i, n) in spec.nodes.iter().enumerate() {
        if n.link_to.is_some() {
            continue;
        }
        let p = &mut pl[i];
        p.nlink = nlink[i];
        p.xattr_size = xattr::encoded_size(&n.xattrs)?;
        let size = match kind(n) {
            libc_ifmt::S_IFDIR => {
                let mut names: Vec<&[u8]> = n.children.iter().map(|&c| spec.nodes[c].name.as_slice()).collect();
                names.push(b".");
                names.push(b"..");
                names.sort();
                dir::dir_size(names.into_iter())
            }
            libc_ifmt::S_IFLNK => n.symlink.len() as u64,
            _ => n.size,
        };
        p.compact = n.mtime == 0
            && n.mtime_nsec == 0
            && n.uid <= 0xffff
            && n.gid <= 0xffff
            && p.nlink <= 0xffff
            && size <= u32::MAX as u64;
        let isz = if p.compact { 32 } else { 64 } + p.xattr_size as u64;
        p.data_size = size;
        match kind(n) {
            libc_ifmt::S_IFDIR | libc_ifmt::S_IFLNK => {
                let tail = size % bs;
                if tail != 0 && isz + tail <= bs {
                    p.inline_tail = tail;
                    p.full_blocks = size / bs;
                    p.offset = place(&mut cur, isz + tail);
                } else {
                    p.full_blocks = size.div_ceil(bs);
                    p.offset = place(&mut cur, isz);
                }
            }
            libc_ifmt::S_IFREG => {
                p.offset = place(&mut cur, isz);
                cur = round_up(round_up(p.offset + isz, 8) + 8 * n.chunks.len() as u64, INODE_SLOT);
            }
            _ => p.offset = place(&mut cur, isz),
        }
    }
    // Full data blocks of directories and symlinks.
    let mut data_cur = round_up(cur, bs);
    for (i, n) in spec.nodes.iter().enumerate() {
        if n.link_to.is_none() && pl[i].full_blocks > 0 {
            let blk = data_cur / bs;
            pl[i].blkaddr = u32::try_from(blk).map_err(|_| FormatError::Encode("image too large".into()))?;
            data_cur += pl[i].full_blocks * bs;
        }
    }
    // Chunk info table: one record per distinct (blob, ci index).
    let mut records: BTreeMap<(u32, u32), ChunkSpec> = BTreeMap::new();
    for n in spec.nodes.iter().filter(|n| n.link_to.is_none()) {
        for c in &n.chunks {
            records.insert((c.blob_index, c.ci_index), *c);
        }
    }
    let mut records: Vec<ChunkSpec> = records.into_values().collect();
    records.sort_by_key(|r| (r.digest, r.blob_index, r.ci_index));
    let chunk_table_offset = round_up(data_cur, bs);
    let chunk_table_size = 80 * records.len() as u64;
    let total = round_up(chunk_table_offset + chunk_table_size, bs).max(bs);

    let nids: Vec<u64> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (pl[n.link_to.unwrap_or(i)].offset - meta_base) / INODE_SLOT)
        .collect();
    if nids[0] > u16::MAX as u64 {
        return Err(FormatError::Encode("root nid does not fit in 16 bits".into()));
    }

    // Pass 2: write.
    let mut buf = vec![0u8; total as usize];
    let mut any_xattr = false;
    for (i, n) in spec.nodes.iter().enumerate() {
        if n.link_to.is_some() {
            continue;
        }
        any_xattr |= !n.xattrs.is_empty();
        write_inode(&mut buf, spec, i, &pl[i], &nids)?;
    }
    for (k, r) in records.iter().enumerate() {
        let rec = ChunkInfoOnDisk {
            block_id: r.digest,
            blob_index: U32::new(r.blob_index),
            flags: U32::new(r.flags),
            compressed_size: U32::new(r.compressed_size),
            uncompressed_size: U32::new(r.uncompressed_size),
            compressed_offset: U64::new(r.compressed_offset),
            uncompressed_offset: U64::new(r.uncompressed_offset),
            file_offset: U64::new(r.file_offset),
            index: U32::new(r.ci_index),
            crc32: U32::new(r.crc32),
        };
        put(&mut buf, chunk_table_offset + 80 * k as u64, rec.as_bytes());
    }

    // Superblocks, device slots, blob table, prefetch table.
    let mut sb_flags =
        spec.compressor.sb_flag() | spec.digester.sb_flag() | flags::EXPLICIT_UID_GID | flags::ENCRYPTION_NONE;
    if any_xattr {
        sb_flags |= flags::HAS_XATTR;
    }
    if spec.blobs.is_empty() {
        sb_flags |= flags::INLINED_CHUNK_DIGEST;
    }
    let total_blocks: u64 = spec.blobs.iter().map(|b| b.uncompressed_size / bs).sum();
    let sb = ErofsSuperBlock {
        magic: U32::new(EROFS_MAGIC),
        feature_compat: U32::new(COMPAT_RAFS_V6),
        blkszbits: BLOCK_BITS,
        root_nid: U16::new(nids[0] as u16),
        inos: U64::new(spec.nodes.len() as u64),
        blocks: U32::new(u32::try_from(total_blocks).map_err(|_| FormatError::Encode("blobs too large".into()))?),
        meta_blkaddr: U32::new((meta_base / bs) as u32),
        feature_incompat: U32::new(INCOMPAT_RAFS_V6),
        extra_devices: U16::new(spec.blobs.len() as u16),
        devt_slotoff: U16::new(DEVT_SLOTOFF),
        ..zerocopy::FromZeros::new_zeroed()
    };
    put(&mut buf, EROFS_SB_OFFSET, sb.as_bytes());
    let ext = RafsV6SuperBlockExt {
        s_flags: U64::new(sb_flags),
        s_blob_table_offset: U64::new(blob_table_offset),
        s_blob_table_size: U32::new(256 * nblobs as u32),
        s_chunk_size: U32::new(spec.chunk_size),
        s_chunk_table_offset: U64::new(chunk_table_offset),
        s_chunk_table_size: U64::new(chunk_table_size),
        s_prefetch_table_offset: U64::new(if prefetch_len > 0 { prefetch_offset } else { 0 }),
        s_prefetch_table_size: U32::new(prefetch_len as u32),
        s_padding: U32::new(0),
        reserved: [0; 200],
    };
    put(&mut buf, EXT_SB_OFFSET, ext.as_bytes());
    let mut pos = total;
    for (i, b) in spec.blobs.iter().enumerate() {
        let id = blob_id_bytes(&b.blob_id)?;
        let blocks = b.uncompressed_size / bs;
        let mapped = round_up(pos, 0x80000) / bs;
        pos = (mapped + blocks) * bs;
        let slot = DeviceSlot {
            tag: id,
            blocks: U32::new(blocks as u32),
            mapped_blkaddr: U32::new(u32::try_from(mapped).map_err(|_| FormatError::Encode("blobs too large".into()))?),
            reserved: [0; 56],
        };
        put(&mut buf, DEVT_OFFSET + 128 * i as u64, slot.as_bytes());
        let entry = RafsV6Blob {
            blob_id: id,
            blob_index: U32::new(i as u32),
            chunk_size: U32::new(spec.chunk_size),
            chunk_count: U32::new(b.chunk_count),
            compression_algo: U32::new(b.compressor.id()),
            digest_algo: U32::new(b.digester.id()),
            features: U32::new(b.features),
            compressed_size: U64::new(b.compressed_size),
            uncompressed_size: U64::new(b.uncompressed_size),
            blob_toc_size: U32::new(0),
            ci_compressor: U32::new(b.ci_compressor.id()),
            ci_offset: U64::new(b.ci_offset),
            ci_compressed_size: U64::new(b.ci_compressed_size),
            ci_uncompressed_size: U64::new(b.ci_uncompressed_size),
            blob_toc_digest: [0; 32],
            blob_meta_digest: [0; 32],
            blob_meta_size: U64::new(0),
            cipher_iv: U64::new(0),
            cipher_algo: U32::new(0),
            reserved: [0; 36],
        };
        put(&mut buf, blob_table_offset + 256 * i as u64, entry.as_bytes());
    }
    if prefetch_len > 0 {
        for (k, &p) in spec.prefetch.iter().enumerate() {
            put(&mut buf, prefetch_offset + 4 * k as u64, &(nids[p] as u32).to_le_bytes());
        }
    }
    Ok(buf)
}

fn blob_id_bytes(id: &str) -> Result<[u8; 64]> {
    if id.is_empty() || id.len() > 64 || !id.is_ascii() {
        return Err(FormatError::Encode(format!("blob id {id:?} must be 1..=64 ASCII characters")));
    }
    let mut out = [0u8; 64];
    out[..id.len()].copy_from_slice(id.as_bytes());
    Ok(out)
}

fn put(buf: &mut [u8], off: u64, bytes: &[u8]) {
    buf[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
}

fn write_inode(buf: &mut [u8], spec: &ImageSpec, i: usize, p: &Placement, nids: &[u64]) -> Result<()> {
    let n = &spec.nodes[i];
    let layout = match kind(n) {
        libc_ifmt::S_IFREG => LAYOUT_CHUNK_BASED,
        libc_ifmt::S_IFDIR | libc_ifmt::S_IFLNK if p.inline_tail > 0 => LAYOUT_FLAT_INLINE,
        _ => LAYOUT_FLAT_PLAIN,
    };
    let i_u = match kind(n) {
        libc_ifmt::S_IFREG => {
            let bits = spec.chunk_size.trailing_zeros() - BLOCK_BITS as u32;
            bits | CHUNK_FORMAT_INDEXES as u32
        }
        libc_ifmt::S_IFDIR | libc_ifmt::S_IFLNK => p.blkaddr,
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => encode_rdev(n.rdev.0, n.rdev.1),
        _ => 0,
    };
    let icount = xattr::icount_for_size(p.xattr_size);
    let mode = u16::try_from(n.mode).map_err(|_| FormatError::Encode(format!("mode {:o} too large", n.mode)))?;
    let mut bytes = Vec::with_capacity(64 + p.xattr_size);
    if p.compact {
        let ino = InodeCompact {
            i_format: U16::new(layout),
            i_xattr_icount: U16::new(icount),
            i_mode: U16::new(mode),
            i_nlink: U16::new(p.nlink as u16),
            i_size: U32::new(p.data_size as u32),
            i_u: U32::new(i_u),
            i_ino: U32::new(n.ino),
            i_uid: U16::new(n.uid as u16),
            i_gid: U16::new(n.gid as u16),
            ..Default::default()
        };
        bytes.extend_from_slice(ino.as_bytes());
    } else {
        let ino = InodeExtended {
            i_format: U16::new(layout | 1),
            i_xattr_icount: U16::new(icount),
            i_mode: U16::new(mode),
            i_size: U64::new(p.data_size),
            i_u: U32::new(i_u),
            i_ino: U32::new(n.ino),
            i_uid: U32::new(n.uid),
            i_gid: U32::new(n.gid),
            i_mtime: U64::new(n.mtime),
            i_mtime_nsec: U32::new(n.mtime_nsec),
            i_nlink: U32::new(p.nlink),
            ..Default::default()
        };
        bytes.extend_from_slice(ino.as_bytes());
    }
    xattr::encode(&n.xattrs, &mut bytes)?;
    let isz = bytes.len() as u64;
    put(buf, p.offset, &bytes);
    let data: Option<Vec<u8>> = match kind(n) {
        libc_ifmt::S_IFDIR => Some(dir::encode(&dir_entries(spec, i, nids))?),
        libc_ifmt::S_IFLNK => Some(n.symlink.clone()),
        _ => None,
    };
    if let Some(data) = data {
        debug_assert_eq!(data.len() as u64, p.data_size);
        let full = (p.full_blocks * BLOCK_SIZE).min(data.len() as u64) as usize;
        if p.full_blocks > 0 {
            put(buf, p.blkaddr as u64 * BLOCK_SIZE, &data[..full]);
        }
        if p.inline_tail > 0 {
            put(buf, p.offset + isz, &data[full..]);
        }
    }
    if kind(n) == libc_ifmt::S_IFREG {
        let base = round_up(p.offset + isz, 8);
        for (k, c) in n.chunks.iter().enumerate() {
            let idx = ChunkIndexOnDisk {
                c_blob_addr_lo: U16::new(c.ci_index as u16),
                c_blob_addr_hi: U16::new(
                    ((c.blob_index + 1) as u16 & 0xff) | (((c.ci_index >> 16) as u16 & 0xff) << 8),
                ),
                c_blk_addr: U32::new(
                    u32::try_from(c.uncompressed_offset / BLOCK_SIZE)
                        .map_err(|_| FormatError::Encode("blob too large".into()))?,
                ),
            };
            put(buf, base + 8 * k as u64, idx.as_bytes());
        }
    }
    Ok(())
}
