//! Reading RAFS v5 bootstraps.
//!
//! v5 is upstream's older, private format: an 8 KiB superblock, an inode
//! offset table, and 128-byte inode records carrying their name, symlink
//! target, xattrs and chunk records inline (layout in
//! `docs/rafs-v6.md`'s v5 section and the shared format reference, §3).
//!
//! Rather than teaching every consumer a second format, [`to_v6`] decodes a
//! v5 bootstrap, checks it as it goes, and re-encodes the same tree as an
//! in-memory RAFS v6 bootstrap with [`crate::writer`]: `check`, `inspect`,
//! `unpack` and nydusd then read it like any v6 image. v5 blobs carry no
//! chunk-information array, so the converted blob entries say so
//! (`ci_uncompressed_size == 0`) and readers take chunk locations from the
//! bootstrap's chunk table instead ([`crate::Bootstrap::chunk_records`]).
//! The uncompressed offsets are re-laid 4 KiB aligned, as v6 requires; they
//! only say where a cache keeps a chunk's plain bytes, never where data
//! is read from.

use crate::codec::{Compressor, Digester};
use crate::error::{FormatError, Result};
use crate::flags;
use crate::ondisk::MAX_CHUNKS_PER_BLOB;
use crate::reader::{detect_version, Bootstrap};
use crate::writer::{libc_ifmt, write_bootstrap, BlobSpec, ChunkSpec, ImageSpec, NodeSpec};

const SB_SIZE: usize = 8192;
const INODE_SIZE: usize = 128;
const CHUNK_SIZE: usize = 80;
const EXT_BLOB_SIZE: usize = 64;
/// Inode flags.
const I_SYMLINK: u64 = 0x1;
const I_XATTR: u64 = 0x4;
/// Upper bound on v5 bootstraps (upstream's limit).
const MAX_SIZE: usize = 0x8000_0000;

/// Parse `data` as RAFS v6, converting it first when it is a v5 bootstrap.
pub fn load(data: Vec<u8>) -> Result<Bootstrap<Vec<u8>>> {
    if detect_version(&data) == Some(5) {
        Bootstrap::parse(to_v6(&data)?)
    } else {
        Bootstrap::parse(data)
    }
}

fn bad(offset: usize, reason: impl Into<String>) -> FormatError {
    FormatError::V5 { offset: offset as u64, reason: reason.into() }
}

fn u16_at(d: &[u8], off: usize) -> Result<u16> {
    let b = d.get(off..off + 2).ok_or_else(|| bad(off, "truncated"))?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d.get(off..off + 4).ok_or_else(|| bad(off, "truncated"))?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn u64_at(d: &[u8], off: usize) -> Result<u64> {
    let b = d.get(off..off + 8).ok_or_else(|| bad(off, "truncated"))?;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn bytes_at(d: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    off.checked_add(len).and_then(|end| d.get(off..end)).ok_or_else(|| bad(off, format!("{len} bytes past the end")))
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The superblock fields a reader needs.
struct Super {
    chunk_size: u32,
    flags: u64,
    inode_table: usize,
    entries: usize,
    prefetch_table: usize,
    prefetch_entries: usize,
    blob_table: usize,
    blob_table_size: usize,
    ext_table: usize,
    ext_entries: usize,
}

fn superblock(d: &[u8]) -> Result<Super> {
    if d.len() < SB_SIZE || !d.len().is_multiple_of(8) || d.len() > MAX_SIZE {
        return Err(bad(0, format!("size {} is not a multiple of 8 between 8 KiB and 2 GiB", d.len())));
    }
    if u32_at(d, 4)? != 0x500 || u32_at(d, 8)? as usize != SB_SIZE {
        return Err(bad(4, "version is not 0x500 or the superblock is not 8192 bytes"));
    }
    let chunk_size = u32_at(d, 12)?;
    if !chunk_size.is_power_of_two() || !(0x1000..=0x100_0000).contains(&chunk_size) {
        return Err(bad(12, format!("chunk size {chunk_size:#x} is not a power of two in 4 KiB..16 MiB")));
    }
    let flags = u64_at(d, 16)?;
    if flags & !flags::ALL_SB_FLAGS != 0 {
        return Err(bad(16, format!("unknown superblock flags {flags:#x}")));
    }
    let off = |at: usize| -> Result<usize> {
        let v = u64_at(d, at)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v >= SB_SIZE && v <= d.len())
            .ok_or_else(|| bad(at, "table offset outside the image"))
    };
    Ok(Super {
        chunk_size,
        flags,
        inode_table: off(32)?,
        prefetch_table: off(40)?,
        blob_table: off(48)?,
        entries: u32_at(d, 56)? as usize,
        prefetch_entries: u32_at(d, 60)? as usize,
        blob_table_size: u32_at(d, 64)? as usize,
        ext_entries: u32_at(d, 68)? as usize,
        ext_table: if u32_at(d, 68)? == 0 { 0 } else { off(72)? },
    })
}

fn compressor_of(flags: u64) -> Result<Compressor> {
    Ok(match flags & flags::COMPRESSION_MASK {
        flags::COMPRESSION_NONE => Compressor::None,
        flags::COMPRESSION_ZSTD => Compressor::Zstd,
        // v5 readers default to lz4 when no bit is set.
        0 | flags::COMPRESSION_LZ4 => Compressor::Lz4Block,
        f => return Err(bad(16, format!("unsupported compression flags {f:#x}"))),
    })
}

fn digester_of(flags: u64) -> Result<Digester> {
    Ok(match flags & flags::HASH_MASK {
        flags::HASH_SHA256 => Digester::Sha256,
        0 | flags::HASH_BLAKE3 => Digester::Blake3,
        f => return Err(bad(16, format!("unsupported digest flags {f:#x}"))),
    })
}

/// Blob ids from the blob table: `u32 readahead_offset | u32 readahead_size
/// | id`, records separated by one NUL, the table zero-padded.
fn blob_ids(d: &[u8], sb: &Super) -> Result<Vec<String>> {
    let table = bytes_at(d, sb.blob_table, sb.blob_table_size)?;
    let mut ids = Vec::new();
    let mut pos = 0;
    while pos + 8 < table.len() && table[pos + 8..].iter().any(|&b| b != 0) {
        let rest = &table[pos + 8..];
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let id = std::str::from_utf8(&rest[..len])
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 255 && !s.contains('/'))
            .ok_or_else(|| bad(sb.blob_table + pos + 8, "blob id is not a plain name"))?;
        ids.push(id.to_string());
        pos += 8 + len + 1;
    }
    Ok(ids)
}

/// One decoded inode record.
struct Record {
    parent: u64,
    ino: u64,
    node: NodeSpec,
    child_index: u32,
    child_count: u32,
    /// Bytes the record spans: header, name, symlink, xattrs, chunks.
    len: usize,
}

fn record(d: &[u8], off: usize, chunk_size: u32, nblobs: usize) -> Result<Record> {
    bytes_at(d, off, INODE_SIZE)?;
    let mode = u32_at(d, off + 60)?;
    let iflags = u64_at(d, off + 80)?;
    let child_index = u32_at(d, off + 92)?;
    let child_count = u32_at(d, off + 96)?;
    let name_size = u16_at(d, off + 100)? as usize;
    let symlink_size = u16_at(d, off + 102)? as usize;
    let rdev = u32_at(d, off + 104)?;
    if !(1..=255).contains(&name_size) {
        return Err(bad(off + 100, format!("name size {name_size} not in 1..=255")));
    }
    let mut pos = off + INODE_SIZE;
    let name = bytes_at(d, pos, name_size)?.to_vec();
    if name == b"." || name == b".." {
        return Err(bad(pos, "name '.' or '..'"));
    }
    pos += align8(name_size);
    let fmt = mode & libc_ifmt::S_IFMT;
    let known = [
        libc_ifmt::S_IFDIR,
        libc_ifmt::S_IFREG,
        libc_ifmt::S_IFLNK,
        libc_ifmt::S_IFCHR,
        libc_ifmt::S_IFBLK,
        libc_ifmt::S_IFIFO,
        libc_ifmt::S_IFSOCK,
    ];
    if mode > 0o177777 || !known.contains(&fmt) {
        return Err(bad(off + 60, format!("mode {mode:o} is not a file type and permissions")));
    }
    let mtime_nsec = u32_at(d, off + 108)?;
    if mtime_nsec >= 1_000_000_000 {
        return Err(bad(off + 108, format!("mtime nanoseconds {mtime_nsec} out of range")));
    }
    let mut node = NodeSpec {
        name,
        mode,
        uid: u32_at(d, off + 48)?,
        gid: u32_at(d, off + 52)?,
        size: u64_at(d, off + 64)?,
        mtime: u64_at(d, off + 112)?,
        mtime_nsec,
        // v5 keeps the old 16-bit encoding in the low 32 bits.
        rdev: ((rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)),
        ..Default::default()
    };
    if iflags & I_SYMLINK != 0 || fmt == libc_ifmt::S_IFLNK {
        if fmt != libc_ifmt::S_IFLNK || symlink_size == 0 {
            return Err(bad(off + 102, "symlink flag, mode and target size disagree"));
        }
        node.symlink = bytes_at(d, pos, symlink_size)?.to_vec();
        node.size = symlink_size as u64;
        pos += align8(symlink_size);
    }
    if iflags & I_XATTR != 0 {
        let total = usize::try_from(u64_at(d, pos)?).map_err(|_| bad(pos, "xattr size"))?;
        let block = bytes_at(d, pos + 8, total)?;
        let mut p = 0;
        while p < block.len() {
            let size = u32_at(block, p).map_err(|_| bad(pos + 8 + p, "truncated xattr pair"))? as usize;
            let pair = bytes_at(block, p + 4, size).map_err(|_| bad(pos + 8 + p, "xattr pair past its block"))?;
            let split = pair.iter().position(|&b| b == 0).ok_or_else(|| bad(pos + 8 + p, "xattr name without NUL"))?;
            node.xattrs.push((pair[..split].to_vec(), pair[split + 1..].to_vec()));
            p += 4 + size;
        }
        node.xattrs.sort();
        pos += align8(8 + total);
    }
    if fmt == libc_ifmt::S_IFREG {
        let want = node.size.div_ceil(chunk_size as u64);
        if child_count as u64 != want {
            return Err(bad(off + 96, format!("{child_count} chunks for a {}-byte file", node.size)));
        }
        for k in 0..child_count as usize {
            let c = pos + k * CHUNK_SIZE;
            let blob_index = u32_at(d, c + 32)?;
            if blob_index as usize >= nblobs {
                return Err(bad(c + 32, format!("blob index {blob_index} but {nblobs} blobs")));
            }
            let digest: [u8; 32] = bytes_at(d, c, 32)?.try_into().expect("32 bytes");
            // What v6 readers require of a chunk record (`chunk_records`).
            let compressed_size = u32_at(d, c + 40)?;
            let uncompressed_size = u32_at(d, c + 44)?;
            if compressed_size == 0 || uncompressed_size == 0 || uncompressed_size > chunk_size {
                return Err(bad(
                    c + 40,
                    format!("chunk sizes {compressed_size}/{uncompressed_size} with chunk size {chunk_size:#x}"),
                ));
            }
            node.chunks.push(ChunkSpec {
                blob_index,
                ci_index: u32_at(d, c + 72)?,
                digest,
                flags: u32_at(d, c + 36)? & (flags::CHUNK_COMPRESSED | flags::CHUNK_HAS_CRC32),
                compressed_size,
                uncompressed_size,
                compressed_offset: u64_at(d, c + 48)?,
                uncompressed_offset: u64_at(d, c + 56)?,
                file_offset: u64_at(d, c + 64)?,
                crc32: 0,
            });
        }
        pos += child_count as usize * CHUNK_SIZE;
    }
    let (parent, ino, len) = (u64_at(d, off + 32)?, u64_at(d, off + 40)?, pos - off);
    Ok(Record { parent, ino, node, child_index, child_count, len })
}

/// Decode the v5 bootstrap `d` and encode the same image as RAFS v6.
pub fn to_v6(d: &[u8]) -> Result<Vec<u8>> {
    let sb = superblock(d)?;
    let ids = blob_ids(d, &sb)?;
    if sb.entries == 0 || sb.entries > (d.len() - SB_SIZE) / INODE_SIZE {
        return Err(bad(56, format!("{} inode table entries do not fit the image", sb.entries)));
    }
    // Index i (1-based) -> node position i - 1.
    let mut recs = Vec::with_capacity(sb.entries);
    // Records do not overlap, so together they span at most the image: this
    // bounds the work when table entries share or overlap records.
    let mut spanned = 0usize;
    for i in 0..sb.entries {
        let at = sb.inode_table + 4 * i;
        let off = (u32_at(d, at)? as usize) << 3;
        if off < SB_SIZE {
            return Err(bad(at, format!("inode {} has offset {off:#x} inside the superblock", i + 1)));
        }
        let r = record(d, off, sb.chunk_size, ids.len())?;
        spanned += r.len;
        if spanned > d.len() - SB_SIZE {
            return Err(bad(at, format!("inode records up to inode {} overlap", i + 1)));
        }
        recs.push(r);
    }
    let n = recs.len();
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(n);
    let mut listed = 0u64;
    for (i, r) in recs.iter().enumerate() {
        let idx = i as u64 + 1;
        let mut node = r.node.clone();
        node.ino = r.ino as u32;
        if idx == 1 {
            if r.node.mode & libc_ifmt::S_IFMT != libc_ifmt::S_IFDIR {
                return Err(bad(sb.inode_table, "the root is not a directory"));
            }
            node.name.clear();
            node.parent = 0;
        } else if r.parent == 0 || r.parent > n as u64 {
            return Err(bad(sb.inode_table + 4 * i, format!("inode {idx} has parent {}", r.parent)));
        }
        if r.ino != idx {
            // An extra name of a hard link: the inode is the first name's.
            let target = r.ino.checked_sub(1).filter(|&t| (t as usize) < i).ok_or_else(|| {
                bad(sb.inode_table + 4 * i, format!("inode {idx} links to {} which does not precede it", r.ino))
            })? as usize;
            if recs[target].node.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFDIR {
                return Err(bad(sb.inode_table + 4 * i, "a hard link to a directory"));
            }
            node.link_to = Some(target);
        }
        if r.node.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFDIR && r.child_count > 0 {
            let first = r.child_index as u64;
            let last = first + r.child_count as u64 - 1;
            if first <= idx || last > n as u64 {
                return Err(bad(
                    sb.inode_table + 4 * i,
                    format!("children {first}..={last} of inode {idx} out of range"),
                ));
            }
            // Every inode but the root is listed exactly once: bounds the
            // children lists built here by the number of inodes.
            listed += r.child_count as u64;
            if listed >= n as u64 {
                return Err(bad(sb.inode_table + 4 * i, format!("directories list more than the {} inodes", n - 1)));
            }
            node.children = (first as usize - 1..last as usize).collect();
        }
        nodes.push(node);
    }
    // Children must name their directory as parent, and each node must be reached once.
    let mut seen = vec![false; n];
    seen[0] = true;
    for p in 0..n {
        for k in nodes[p].children.clone() {
            if seen[k] {
                return Err(bad(sb.inode_table + 4 * k, format!("inode {} is listed by two directories", k + 1)));
            }
            seen[k] = true;
            nodes[k].parent = p;
        }
        let names: Vec<&[u8]> = nodes[p].children.iter().map(|&k| nodes[k].name.as_slice()).collect();
        if names.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(sb.inode_table, format!("children of inode {} are not sorted and unique", p + 1)));
        }
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        return Err(bad(sb.inode_table + 4 * k, format!("inode {} is in no directory", k + 1)));
    }
    let blobs = blob_specs(d, &sb, &ids, &mut nodes)?;
    let prefetch = prefetch_nodes(d, &sb, &recs)?;
    let spec = ImageSpec {
        chunk_size: sb.chunk_size,
        compressor: compressor_of(sb.flags)?,
        digester: digester_of(sb.flags)?,
        nodes,
        blobs,
        prefetch,
    };
    write_bootstrap(&spec)
}

/// Blob entries from the blob and extended blob tables; chunk records are
/// given 4 KiB aligned uncompressed offsets (per blob, in ci order).
fn blob_specs(d: &[u8], sb: &Super, ids: &[String], nodes: &mut [NodeSpec]) -> Result<Vec<BlobSpec>> {
    let compressor = compressor_of(sb.flags)?;
    let digester = digester_of(sb.flags)?;
    // Per blob: ci index -> (plain size, stored end).
    let mut sizes: Vec<std::collections::BTreeMap<u32, (u32, u64)>> = vec![Default::default(); ids.len()];
    for c in nodes.iter().flat_map(|n| &n.chunks) {
        let end = c
            .compressed_offset
            .checked_add(c.compressed_size as u64)
            .ok_or_else(|| bad(0, format!("chunk {} of blob {} ends past 2^64 bytes", c.ci_index, c.blob_index)))?;
        let prev = sizes[c.blob_index as usize].insert(c.ci_index, (c.uncompressed_size, end));
        if prev.is_some_and(|(s, e)| s != c.uncompressed_size || e != end) {
            return Err(bad(
                0,
                format!("chunk {} of blob {} is described twice, differently", c.ci_index, c.blob_index),
            ));
        }
    }
    let mut aligned: Vec<std::collections::HashMap<u32, u64>> = Vec::with_capacity(ids.len());
    let mut blobs = Vec::with_capacity(ids.len());
    for (b, id) in ids.iter().enumerate() {
        let mut at = 0u64;
        let mut map = std::collections::HashMap::new();
        for (&ci, &(size, _)) in &sizes[b] {
            map.insert(ci, at);
            at += (size as u64).div_ceil(4096) * 4096;
        }
        let max_ci = sizes[b].keys().next_back().map_or(0, |&ci| ci.saturating_add(1));
        if max_ci > MAX_CHUNKS_PER_BLOB + 1 {
            return Err(bad(0, format!("chunk index {} of blob {b} is out of range", max_ci - 1)));
        }
        let stored_end = sizes[b].values().map(|&(_, e)| e).max().unwrap_or(0);
        let (mut count, mut features, mut compressed_size) = (max_ci, flags::BLOB_V5_NO_EXT_BLOB_TABLE, stored_end);
        if b < sb.ext_entries {
            let e = sb.ext_table + b * EXT_BLOB_SIZE;
            bytes_at(d, e, EXT_BLOB_SIZE)?;
            count = count.max(u32_at(d, e)?);
            if count > MAX_CHUNKS_PER_BLOB + 1 {
                return Err(bad(e, format!("{count} chunks in blob {b}")));
            }
            features = u32_at(d, e + 4)? & !(flags::BLOB_INLINED_FS_META | flags::BLOB_HAS_TAR_HEADER);
            compressed_size = compressed_size.max(u64_at(d, e + 16)?);
        }
        // Chunks no file uses (every used index is below `count`): room for
        // them after the used ones. No reader looks their offsets up, so
        // they get no map entries (up to 2^24 of them would cost 100s of MiB).
        at += (count as u64 - map.len() as u64) * sb.chunk_size as u64;
        blobs.push(BlobSpec {
            blob_id: id.clone(),
            chunk_count: count,
            compressor,
            digester,
            // The plain offsets were just re-laid 4 KiB aligned.
            features: features | flags::BLOB_ALIGNED,
            compressed_size,
            uncompressed_size: at,
            ci_compressor: Compressor::None,
            // No ci array: stored data ends where one would start.
            ci_offset: compressed_size,
            ci_compressed_size: 0,
            ci_uncompressed_size: 0,
        });
        aligned.push(map);
    }
    for c in nodes.iter_mut().flat_map(|n| n.chunks.iter_mut()) {
        c.uncompressed_offset = aligned[c.blob_index as usize][&c.ci_index];
    }
    Ok(blobs)
}

/// Prefetch table: inode numbers, 0 ends it.
fn prefetch_nodes(d: &[u8], sb: &Super, recs: &[Record]) -> Result<Vec<usize>> {
    // Inode number -> its first record (a map: the table may be long).
    let mut first = std::collections::HashMap::with_capacity(recs.len());
    for (i, r) in recs.iter().enumerate() {
        first.entry(r.ino).or_insert(i);
    }
    let mut out = Vec::new();
    for k in 0..sb.prefetch_entries {
        let ino = u32_at(d, sb.prefetch_table + 4 * k)? as u64;
        if ino == 0 {
            break;
        }
        if let Some(&i) = first.get(&ino) {
            out.push(i);
        }
    }
    Ok(out)
}
