//! Loading a parent bootstrap (`create --parent-bootstrap`) as the lower
//! layer of a build: its tree with every chunk reference, its blob table and
//! a digest index of its chunks for deduplication (spec §6.2).

use std::collections::HashMap;
use std::path::Path;

use nydus_format::reader::{BlobInfo, Bootstrap, ChunkIndex};
use nydus_format::writer::{libc_ifmt, BlobSpec, ChunkSpec, NodeSpec};
use nydus_format::{flags, Compressor, Digest, FormatError};

use crate::blob::ChunkOptions;
use crate::error::{BuildError, Result};
use crate::image::load;
use crate::tree::{Inode, Tree};

/// A parent image ready to have a layer merged onto it.
pub struct Parent {
    /// Its tree; regular files carry their chunk references.
    pub tree: Tree,
    /// Its blob table, in index order.
    pub blobs: Vec<BlobSpec>,
    /// Every chunk it references, by digest (lowest blob index wins).
    pub chunks: HashMap<Digest, ChunkSpec>,
}

fn incompatible(path: &Path, reason: String) -> BuildError {
    BuildError::IncompatibleParent { path: path.into(), reason }
}

/// Load `path` and check that a layer built with `opts` can go on top of it.
pub fn load_parent(path: &Path, opts: &ChunkOptions) -> Result<Parent> {
    let boot = load(path)?;
    check_compatible(path, &boot, opts)?;
    let fmt = |e: FormatError| BuildError::format(path, e);
    let blobs =
        boot.blobs.iter().map(|b| blob_spec(b).map_err(|m| incompatible(path, m))).collect::<Result<Vec<_>>>()?;
    let chunks = chunk_map(&boot).map_err(fmt)?;
    let tree = load_tree(&boot).map_err(fmt)?;
    Ok(Parent { tree, blobs, chunks })
}

/// Every chunk `boot` references, by digest; of equal chunks in several
/// blobs, the one with the lowest blob index.
pub(crate) fn chunk_map<B: AsRef<[u8]>>(boot: &Bootstrap<B>) -> nydus_format::Result<HashMap<Digest, ChunkSpec>> {
    let mut chunks: HashMap<Digest, ChunkSpec> = HashMap::new();
    for r in boot.chunk_records()? {
        let c = ChunkSpec {
            blob_index: r.blob_index,
            ci_index: r.index,
            digest: r.digest,
            flags: r.flags,
            compressed_offset: r.compressed_offset,
            compressed_size: r.compressed_size,
            uncompressed_offset: r.uncompressed_offset,
            uncompressed_size: r.uncompressed_size,
            file_offset: r.file_offset,
            crc32: r.crc32,
        };
        chunks
            .entry(c.digest)
            .and_modify(|old| {
                if c.blob_index < old.blob_index {
                    *old = c
                }
            })
            .or_insert(c);
    }
    Ok(chunks)
}

fn check_compatible(path: &Path, boot: &Bootstrap<Vec<u8>>, opts: &ChunkOptions) -> Result<()> {
    let sb = &boot.sb;
    if sb.chunk_size != opts.chunk_size {
        return Err(incompatible(
            path,
            format!(
                "its chunk size is {:#x}, this build uses {:#x}; pass --chunk-size {:#x}",
                sb.chunk_size, opts.chunk_size, sb.chunk_size
            ),
        ));
    }
    if sb.digester != opts.digester {
        return Err(incompatible(
            path,
            format!(
                "its chunks are digested with {}, this build uses {}; pass --digester {}",
                sb.digester.name(),
                opts.digester.name(),
                sb.digester.name()
            ),
        ));
    }
    if sb.flags & flags::EXPLICIT_UID_GID == 0 {
        return Err(incompatible(
            path,
            "it was built without explicit uid/gid, which this builder always records".into(),
        ));
    }
    Ok(())
}

/// The writer's description of blob `b` of an image; an error names what
/// cannot be carried over.
pub(crate) fn blob_spec(b: &BlobInfo) -> std::result::Result<BlobSpec, String> {
    let ci_compressor = Compressor::from_id(b.ci_compressor)
        .ok_or_else(|| format!("blob {} has an unknown chunk-table compressor {}", b.blob_id, b.ci_compressor))?;
    Ok(BlobSpec {
        blob_id: b.blob_id.clone(),
        chunk_count: b.chunk_count,
        compressor: b.compressor,
        digester: b.digester,
        features: b.features,
        compressed_size: b.compressed_size,
        uncompressed_size: b.uncompressed_size,
        ci_compressor,
        ci_offset: b.ci_offset,
        ci_compressed_size: b.ci_compressed_size,
        ci_uncompressed_size: b.ci_uncompressed_size,
    })
}

fn chunk_spec<B: AsRef<[u8]>>(
    boot: &Bootstrap<B>,
    c: &ChunkIndex,
    file_offset: u64,
) -> nydus_format::Result<ChunkSpec> {
    let r = boot.chunk_info(c)?;
    Ok(ChunkSpec {
        blob_index: c.blob_index,
        ci_index: c.ci_index,
        digest: r.digest,
        flags: r.flags,
        compressed_offset: r.compressed_offset,
        compressed_size: r.compressed_size,
        uncompressed_offset: r.uncompressed_offset,
        uncompressed_size: r.uncompressed_size,
        file_offset,
        crc32: r.crc32,
    })
}

/// The image's tree; non-directories sharing a nid share an inode.
pub(crate) fn load_tree<B: AsRef<[u8]>>(boot: &Bootstrap<B>) -> nydus_format::Result<Tree> {
    let mut tree: Option<Tree> = None;
    // Directory path → entry; the root's children have the parent path "".
    let mut dirs: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut by_nid: HashMap<u64, usize> = HashMap::new();
    let chunk_size = boot.sb.chunk_size as u64;
    boot.walk(|path, _entry, ino| {
        let Some(t) = tree.as_mut() else {
            let meta = node_spec(boot, ino, chunk_size)?;
            tree = Some(Tree::new(Inode { meta, source: None }));
            dirs.insert(Vec::new(), 0);
            return Ok(());
        };
        let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let (parent, name) = (&path[..cut], path[cut + 1..].to_vec());
        let parent = *dirs
            .get(parent)
            .ok_or_else(|| FormatError::Directory { nid: ino.nid, reason: "parent directory not visited".into() })?;
        let idx = match by_nid.get(&ino.nid) {
            Some(&inode) if !ino.is_dir() => t.link(parent, name, inode),
            _ => {
                let meta = node_spec(boot, ino, chunk_size)?;
                let idx = t.add(parent, name, Inode { meta, source: None });
                by_nid.insert(ino.nid, t.entries[idx].inode);
                idx
            }
        };
        if ino.is_dir() {
            dirs.insert(path.to_vec(), idx);
        }
        Ok(())
    })?;
    tree.ok_or_else(|| FormatError::Directory { nid: boot.sb.root_nid, reason: "empty tree".into() })
}

fn node_spec<B: AsRef<[u8]>>(
    boot: &Bootstrap<B>,
    ino: &nydus_format::reader::Inode,
    chunk_size: u64,
) -> nydus_format::Result<NodeSpec> {
    let mut n = NodeSpec {
        mode: ino.mode,
        uid: ino.uid,
        gid: ino.gid,
        mtime: ino.mtime,
        mtime_nsec: ino.mtime_nsec,
        xattrs: boot.xattrs(ino)?,
        ..Default::default()
    };
    match ino.kind() {
        libc_ifmt::S_IFREG => {
            n.size = ino.size;
            n.chunks = boot
                .chunks(ino)?
                .iter()
                .enumerate()
                .map(|(k, c)| chunk_spec(boot, c, k as u64 * chunk_size))
                .collect::<nydus_format::Result<_>>()?;
        }
        libc_ifmt::S_IFLNK => {
            n.symlink = boot.readlink(ino)?;
            n.size = n.symlink.len() as u64;
        }
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => n.rdev = ino.rdev(),
        _ => {}
    }
    Ok(n)
}
