//! Walking a source directory into the flat node list the bootstrap writer
//! takes.
//!
//! Node order (which is also the layout and chunking order): the root, then
//! for each directory, taken depth-first in name order, all of its children
//! in name order. Children of one directory therefore get consecutive inode
//! numbers, as upstream's builder does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nydus_format::writer::{libc_ifmt, NodeSpec};
use nydus_format::xattr;

use crate::error::{BuildError, Result};

/// How whiteouts in the source are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutSpec {
    /// OCI `.wh.` files (dropped in a single-layer directory build).
    #[default]
    Oci,
    /// overlayfs 0/0 char devices and opaque xattrs (kept as they are).
    Overlayfs,
    /// No whiteout processing.
    None,
}

/// The source tree: nodes for the writer plus the source path of each.
pub struct SourceTree {
    /// Writer nodes; node 0 is the root.
    pub nodes: Vec<NodeSpec>,
    /// Source path of each node.
    pub paths: Vec<PathBuf>,
    /// Total bytes of regular files (counted once per inode).
    pub data_bytes: u64,
    /// Number of regular file inodes.
    pub files: u64,
    /// Names whose xattrs were skipped because RAFS cannot store them.
    pub skipped_xattrs: u64,
}

fn read_xattrs(path: &Path, skipped: &mut u64) -> Result<xattr::Xattrs> {
    let mut out = Vec::new();
    let names = match ::xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(BuildError::io(path, e)),
    };
    for name in names {
        let name_b = name.as_bytes().to_vec();
        if !xattr::is_supported_name(&name_b) {
            tracing::warn!(path = %path.display(), name = %name.to_string_lossy(), "xattr namespace not supported by RAFS, skipped");
            *skipped += 1;
            continue;
        }
        match ::xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name_b, v)),
            Ok(None) => {}
            Err(e) => return Err(BuildError::io(path, e)),
        }
    }
    out.sort();
    Ok(out)
}

fn node_from(path: &Path, name: &[u8], parent: usize, skipped: &mut u64) -> Result<(NodeSpec, fs::Metadata)> {
    let md = fs::symlink_metadata(path).map_err(|e| BuildError::io(path, e))?;
    let mode = md.mode();
    let mut n = NodeSpec {
        name: name.to_vec(),
        parent,
        mode,
        uid: md.uid(),
        gid: md.gid(),
        // Stored as two's complement: the kernel reads i_mtime as signed, so
        // times before 1970 survive.
        mtime: md.mtime() as u64,
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        size: 0,
        ..Default::default()
    };
    match mode & libc_ifmt::S_IFMT {
        libc_ifmt::S_IFREG => n.size = md.size(),
        libc_ifmt::S_IFLNK => {
            let t = fs::read_link(path).map_err(|e| BuildError::io(path, e))?;
            n.symlink = t.as_os_str().as_bytes().to_vec();
            if n.symlink.is_empty() || n.symlink.len() > 4096 {
                return Err(BuildError::Unsupported { path: path.into(), reason: "symlink target longer than 4096 bytes".into() });
            }
            n.size = n.symlink.len() as u64;
        }
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => {
            let rdev = md.rdev();
            n.rdev = (libc::major(rdev), libc::minor(rdev));
        }
        libc_ifmt::S_IFDIR | libc_ifmt::S_IFIFO | libc_ifmt::S_IFSOCK => {}
        _ => return Err(BuildError::Unsupported { path: path.into(), reason: format!("unknown file type (mode {mode:o})") }),
    }
    n.xattrs = read_xattrs(path, skipped)?;
    Ok((n, md))
}

fn sorted_children(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let rd = fs::read_dir(dir).map_err(|e| BuildError::io(dir, e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| BuildError::io(dir, e))?;
        names.push(e.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

/// Walk `root` (which must be a directory).
pub fn walk(root: &Path, whiteout: WhiteoutSpec) -> Result<SourceTree> {
    let md = fs::metadata(root).map_err(|e| BuildError::io(root, e))?;
    if !md.is_dir() {
        return Err(BuildError::Unsupported { path: root.into(), reason: "source is not a directory".into() });
    }
    let mut skipped = 0;
    let (mut root_node, _) = node_from(root, b"", 0, &mut skipped)?;
    root_node.ino = 1;
    let mut t = SourceTree { nodes: vec![root_node], paths: vec![root.to_path_buf()], data_bytes: 0, files: 0, skipped_xattrs: 0 };
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![0usize];
    while let Some(d) = stack.pop() {
        let dir_path = t.paths[d].clone();
        let mut subdirs = Vec::new();
        for name in sorted_children(&dir_path)? {
            if whiteout == WhiteoutSpec::Oci && name.starts_with(b".wh.") {
                tracing::debug!(dir = %dir_path.display(), name = %String::from_utf8_lossy(&name), "OCI whiteout dropped (no parent layer)");
                continue;
            }
            if name.len() > 255 {
                return Err(BuildError::Unsupported { path: dir_path.join(OsStr::from_bytes(&name)), reason: "name longer than 255 bytes".into() });
            }
            let path = dir_path.join(OsStr::from_bytes(&name));
            let (mut n, md) = node_from(&path, &name, d, &mut skipped)?;
            let idx = t.nodes.len();
            n.ino = idx as u32 + 1;
            // Every non-directory can be hard-linked (files, symlinks, devices,
            // fifos, sockets): all its names share one inode, as in the source.
            if !md.is_dir() && md.nlink() > 1 {
                if let Some(&first) = links.get(&(md.dev(), md.ino())) {
                    n.link_to = Some(first);
                    n.ino = t.nodes[first].ino;
                } else {
                    links.insert((md.dev(), md.ino()), idx);
                }
            }
            if md.is_file() && n.link_to.is_none() {
                t.data_bytes += n.size;
                t.files += 1;
            }
            if md.is_dir() {
                subdirs.push(idx);
            }
            t.nodes[d].children.push(idx);
            t.nodes.push(n);
            t.paths.push(path);
        }
        stack.extend(subdirs.into_iter().rev());
    }
    t.skipped_xattrs = skipped;
    Ok(t)
}
