//! Walking a source directory into a [`Tree`] (one layer).
//!
//! Whiteouts are recognised according to the [`WhiteoutSpec`] passed in and
//! recorded on their directory ([`crate::tree::Entry::whiteouts`],
//! [`crate::tree::Entry::opaque`]) instead of becoming entries; the caller
//! passes [`WhiteoutSpec::None`] to keep everything verbatim.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nydus_format::writer::{libc_ifmt, NodeSpec};
use nydus_format::xattr;

use crate::error::{BuildError, Result};
use crate::tree::{Inode, Tree, WhiteoutSpec, OCI_OPAQUE, OCI_WHITEOUT_PREFIX, OVERLAY_OPAQUE_XATTR};

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

fn node_from(path: &Path, skipped: &mut u64) -> Result<(NodeSpec, fs::Metadata)> {
    let md = fs::symlink_metadata(path).map_err(|e| BuildError::io(path, e))?;
    let mode = md.mode();
    let mut n = NodeSpec {
        mode,
        uid: md.uid(),
        gid: md.gid(),
        // Stored as two's complement: the kernel reads i_mtime as signed, so
        // times before 1970 survive.
        mtime: md.mtime() as u64,
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        ..Default::default()
    };
    match mode & libc_ifmt::S_IFMT {
        libc_ifmt::S_IFREG => n.size = md.size(),
        libc_ifmt::S_IFLNK => {
            let t = fs::read_link(path).map_err(|e| BuildError::io(path, e))?;
            n.symlink = t.as_os_str().as_bytes().to_vec();
            if n.symlink.is_empty() || n.symlink.len() > 4096 {
                return Err(BuildError::Unsupported {
                    path: path.into(),
                    reason: "symlink target longer than 4096 bytes".into(),
                });
            }
            n.size = n.symlink.len() as u64;
        }
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => {
            let rdev = md.rdev();
            n.rdev = (libc::major(rdev), libc::minor(rdev));
        }
        libc_ifmt::S_IFDIR | libc_ifmt::S_IFIFO | libc_ifmt::S_IFSOCK => {}
        _ => {
            return Err(BuildError::Unsupported {
                path: path.into(),
                reason: format!("unknown file type (mode {mode:o})"),
            })
        }
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

/// What a directory entry means under a whiteout spec.
enum Kind {
    Entry,
    /// Deletes this name from the lower layer.
    Whiteout(Vec<u8>),
    /// Makes the containing directory opaque.
    Opaque,
}

fn classify_oci(name: &[u8]) -> Kind {
    if name == OCI_OPAQUE {
        Kind::Opaque
    } else if let Some(target) = name.strip_prefix(OCI_WHITEOUT_PREFIX) {
        Kind::Whiteout(target.to_vec())
    } else {
        Kind::Entry
    }
}

/// Apply overlayfs conventions to a walked node: 0/0 char devices are
/// whiteouts; the opaque xattr is consumed (returns whether it was set).
fn overlay_opaque(n: &mut NodeSpec) -> bool {
    let before = n.xattrs.len();
    n.xattrs.retain(|(k, v)| !(k == OVERLAY_OPAQUE_XATTR && v == b"y"));
    n.xattrs.len() != before
}

fn is_overlay_whiteout(n: &NodeSpec) -> bool {
    n.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFCHR && n.rdev == (0, 0)
}

/// Walk `root` (which must be a directory) into a one-layer tree.
pub fn walk(root: &Path, whiteout: WhiteoutSpec) -> Result<Tree> {
    let md = fs::metadata(root).map_err(|e| BuildError::io(root, e))?;
    if !md.is_dir() {
        return Err(BuildError::Unsupported {
            path: root.into(),
            reason: "source is not a directory (for a tar archive pass --type tar-rafs or targz-rafs)".into(),
        });
    }
    let mut skipped = 0;
    let (mut root_node, _) = node_from(root, &mut skipped)?;
    let root_opaque = whiteout == WhiteoutSpec::Overlayfs && overlay_opaque(&mut root_node);
    let mut t = Tree::new(Inode { meta: root_node, source: None });
    t.entries[0].opaque = root_opaque;
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack: Vec<(usize, PathBuf)> = vec![(0, root.to_path_buf())];
    while let Some((d, dir_path)) = stack.pop() {
        let mut subdirs = Vec::new();
        for name in sorted_children(&dir_path)? {
            if whiteout == WhiteoutSpec::Oci {
                match classify_oci(&name) {
                    Kind::Entry => {}
                    Kind::Opaque => {
                        t.entries[d].opaque = true;
                        continue;
                    }
                    Kind::Whiteout(target) => {
                        if !target.is_empty() {
                            t.entries[d].whiteouts.push(target);
                        }
                        continue;
                    }
                }
            }
            let path = dir_path.join(OsStr::from_bytes(&name));
            if name.len() > 255 {
                return Err(BuildError::Unsupported { path, reason: "name longer than 255 bytes".into() });
            }
            let (mut n, md) = node_from(&path, &mut skipped)?;
            let mut opaque = false;
            if whiteout == WhiteoutSpec::Overlayfs {
                if is_overlay_whiteout(&n) {
                    t.entries[d].whiteouts.push(name);
                    continue;
                }
                opaque = md.is_dir() && overlay_opaque(&mut n);
            }
            // Every non-directory can be hard-linked (files, symlinks, devices,
            // fifos, sockets): all its names share one inode, as in the source.
            let shared = if !md.is_dir() && md.nlink() > 1 { links.get(&(md.dev(), md.ino())).copied() } else { None };
            let idx = match shared {
                Some(inode) => t.link(d, name, inode),
                None => {
                    let source = md.is_file().then(|| path.clone());
                    let idx = t.add(d, name, Inode { meta: n, source });
                    if !md.is_dir() && md.nlink() > 1 {
                        links.insert((md.dev(), md.ino()), t.entries[idx].inode);
                    }
                    idx
                }
            };
            t.entries[idx].opaque = opaque;
            if md.is_dir() {
                subdirs.push((idx, path));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    t.skipped_xattrs = skipped;
    Ok(t)
}
