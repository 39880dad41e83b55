//! `check` and `inspect`: validating and describing an image (`stat` is in
//! [`crate::stat`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use nydus_format::reader::Inode;
use nydus_format::writer::libc_ifmt as ifmt;
use nydus_format::{Bootstrap, FormatError};
use serde::Serialize;
use serde_json::{json, Value};

use crate::blobfile::BlobSet;
use crate::error::{BuildError, Result};
use crate::image::show;
pub use crate::stat::{stat, BlobStat, StatReport};

/// One blob as reported by check/stat.
#[derive(Debug, Serialize)]
pub struct BlobReport {
    /// Blob id.
    pub blob_id: String,
    /// Chunks.
    pub chunk_count: u32,
    /// Blob file size.
    pub compressed_size: u64,
    /// Uncompressed space size.
    pub uncompressed_size: u64,
    /// Compressor name.
    pub compressor: String,
    /// Digester name.
    pub digester: String,
    /// Feature bits.
    pub features: String,
}

/// Result of `check`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// RAFS version.
    pub fs_version: u32,
    /// Superblock flags.
    pub flags: String,
    /// Filesystem compressor.
    pub compressor: String,
    /// Filesystem digester.
    pub digester: String,
    /// Chunk size.
    pub chunk_size: u32,
    /// Names in the tree, incl. the root.
    pub inodes: u64,
    /// Distinct inodes.
    pub unique_inodes: u64,
    /// Blobs.
    pub blobs: Vec<BlobReport>,
    /// Chunks whose data was read and verified (with a blob dir).
    pub chunks_verified: u64,
}

fn blob_reports<B: AsRef<[u8]>>(boot: &Bootstrap<B>) -> Vec<BlobReport> {
    boot.blobs
        .iter()
        .map(|b| BlobReport {
            blob_id: b.blob_id.clone(),
            chunk_count: b.chunk_count,
            compressed_size: b.compressed_size,
            uncompressed_size: b.uncompressed_size,
            compressor: b.compressor.name().into(),
            digester: b.digester.name().into(),
            features: format!("{:#x}", b.features),
        })
        .collect()
}

/// One line of `check -v`.
pub fn inode_line(path: &[u8], ino: &Inode) -> String {
    format!(
        "nid {:>8} ino {:>7} mode {:>7o} nlink {:>3} uid {:>6} gid {:>6} size {:>12} mtime {}.{:09} {}",
        ino.nid,
        ino.ino,
        ino.mode,
        ino.nlink,
        ino.uid,
        ino.gid,
        ino.size,
        ino.mtime as i64,
        ino.mtime_nsec,
        show(path)
    )
}

fn err(nid: u64, reason: String) -> FormatError {
    FormatError::Inode { nid, reason }
}

/// Validate the whole image; call `each` for every name. With `blobs`, read
/// and verify every chunk of every blob.
pub fn check<B: AsRef<[u8]>>(
    path: &Path,
    boot: &Bootstrap<B>,
    blobs: Option<&BlobSet>,
    mut each: impl FnMut(&[u8], &Inode),
) -> Result<CheckReport> {
    let mut names = 0u64;
    // Names and link counts of every non-directory inode (any of them may be hard-linked).
    let mut reg_names: HashMap<u64, u32> = HashMap::new();
    let mut reg_nlink: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut dir_nlink: HashMap<u64, u32> = HashMap::new();
    let mut unique = HashSet::new();
    let cs = boot.sb.chunk_size as u64;
    boot.chunk_records().map_err(|e| BuildError::format(path, e))?;
    boot.walk(|p, _e, ino| {
        names += 1;
        each(p, ino);
        boot.xattrs(ino)?;
        let first = unique.insert(ino.nid);
        match ino.kind() {
            ifmt::S_IFDIR => {
                let entries = boot.read_dir(ino)?;
                let dot = entries.iter().find(|e| e.name == b".");
                if dot.map(|e| e.nid) != Some(ino.nid) || !entries.iter().any(|e| e.name == b"..") {
                    return Err(FormatError::Directory { nid: ino.nid, reason: "'.' or '..' missing or wrong".into() });
                }
                dir_nlink.insert(ino.nid, ino.nlink);
                let n = entries
                    .iter()
                    .filter(|e| {
                        e.file_type == nydus_format::ondisk::file_type::DIR && e.name != b"." && e.name != b".."
                    })
                    .count();
                subdirs.insert(ino.nid, n as u32);
            }
            ifmt::S_IFLNK => {
                *reg_names.entry(ino.nid).or_default() += 1;
                reg_nlink.insert(ino.nid, ino.nlink);
                boot.readlink(ino)?;
            }
            ifmt::S_IFREG => {
                *reg_names.entry(ino.nid).or_default() += 1;
                reg_nlink.insert(ino.nid, ino.nlink);
                if first {
                    let chunks = boot.chunks(ino)?;
                    for (k, c) in chunks.iter().enumerate() {
                        let r = boot.chunk_info(c)?;
                        let want = (ino.size - k as u64 * cs).min(cs);
                        if r.uncompressed_size as u64 != want {
                            return Err(err(
                                ino.nid,
                                format!("chunk {k} holds {} bytes, file needs {want}", r.uncompressed_size),
                            ));
                        }
                    }
                }
            }
            _ => {
                *reg_names.entry(ino.nid).or_default() += 1;
                reg_nlink.insert(ino.nid, ino.nlink);
            }
        }
        Ok(())
    })
    .map_err(|e| BuildError::format(path, e))?;
    for (nid, n) in &reg_names {
        if reg_nlink[nid] != *n {
            return Err(BuildError::format(
                path,
                err(*nid, format!("nlink {} but {n} names in the tree", reg_nlink[nid])),
            ));
        }
    }
    for (nid, n) in &subdirs {
        if dir_nlink[nid] != n + 2 {
            return Err(BuildError::format(
                path,
                err(*nid, format!("directory nlink {} but {n} subdirectories", dir_nlink[nid])),
            ));
        }
    }
    let mut verified = 0;
    if let Some(set) = blobs {
        let digests: HashMap<(u32, u32), [u8; 32]> = boot
            .chunk_records()
            .map_err(|e| BuildError::format(path, e))?
            .into_iter()
            .map(|r| ((r.blob_index, r.index), r.digest))
            .collect();
        for b in set.blobs() {
            for ci in 0..b.locations().len() as u32 {
                b.read_chunk(ci, digests.get(&(b.info().blob_index, ci)))?;
                verified += 1;
            }
        }
    }
    Ok(CheckReport {
        fs_version: 6,
        flags: format!("{:#x}", boot.sb.flags),
        compressor: boot.sb.compressor.name().into(),
        digester: boot.sb.digester.name().into(),
        chunk_size: boot.sb.chunk_size,
        inodes: names,
        unique_inodes: unique.len() as u64,
        blobs: blob_reports(boot),
        chunks_verified: verified,
    })
}

/// State of an interactive inspect session.
pub struct Inspector<B: AsRef<[u8]>> {
    boot: Bootstrap<B>,
    cwd: String,
}

fn type_name(mode: u32) -> &'static str {
    match mode & ifmt::S_IFMT {
        ifmt::S_IFREG => "file",
        ifmt::S_IFDIR => "dir",
        ifmt::S_IFLNK => "symlink",
        ifmt::S_IFCHR => "char",
        ifmt::S_IFBLK => "block",
        ifmt::S_IFIFO => "fifo",
        ifmt::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// Help text of the inspect commands.
pub const INSPECT_HELP: &str =
    "commands: stats | blobs | ls [PATH] | cd PATH | stat PATH | chunk PATH | icheck INO | prefetch | help | exit";

impl<B: AsRef<[u8]>> Inspector<B> {
    /// Start at the root.
    pub fn new(boot: Bootstrap<B>) -> Self {
        Self { boot, cwd: "/".into() }
    }

    fn resolve(&self, arg: Option<&str>) -> String {
        match arg {
            None => self.cwd.clone(),
            Some(a) if a.starts_with('/') => a.to_string(),
            Some(a) => format!("{}/{}", self.cwd.trim_end_matches('/'), a),
        }
    }

    fn inode_at(&self, path: &str) -> std::result::Result<Inode, String> {
        match self.boot.lookup_path(path) {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err(format!("{path}: no such file or directory")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Run one command; the JSON answer or an error message.
    pub fn run(&mut self, line: &str) -> std::result::Result<Value, String> {
        let mut it = line.split_whitespace();
        let cmd = it.next().unwrap_or("");
        let arg = it.next();
        let fe = |e: FormatError| e.to_string();
        Ok(match cmd {
            "stats" => {
                let b = &self.boot;
                json!({
                    "fs_version": 6, "flags": format!("{:#x}", b.sb.flags), "inodes": b.sb.inos,
                    "root_nid": b.sb.root_nid, "meta_blkaddr": b.sb.meta_blkaddr, "chunk_size": b.sb.chunk_size,
                    "compressor": b.sb.compressor.name(), "digester": b.sb.digester.name(),
                    "blob_count": b.blobs.len(), "chunk_table": {"offset": b.sb.chunk_table.0, "size": b.sb.chunk_table.1},
                    "bootstrap_size": b.bytes().len(), "stat": serde_json::to_value(stat(b).map_err(fe)?).expect("serialisable"),
                })
            }
            "blobs" => serde_json::to_value(blob_reports(&self.boot)).expect("serialisable"),
            "ls" => {
                let p = self.resolve(arg);
                let ino = self.inode_at(&p)?;
                let entries = self.boot.read_dir(&ino).map_err(fe)?;
                let mut out = Vec::new();
                for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    let i = self.boot.inode(e.nid).map_err(fe)?;
                    out.push(json!({"name": show(&e.name), "nid": e.nid, "type": type_name(i.mode), "mode": format!("{:o}", i.mode), "size": i.size}));
                }
                Value::Array(out)
            }
            "cd" => {
                let p = self.resolve(arg.or(Some("/")));
                let ino = self.inode_at(&p)?;
                if !ino.is_dir() {
                    return Err(format!("{p}: not a directory"));
                }
                self.cwd = p;
                json!({"cwd": self.cwd})
            }
            "stat" => {
                let p = self.resolve(arg);
                let i = self.inode_at(&p)?;
                let x = self.boot.xattrs(&i).map_err(fe)?;
                let xattrs: Vec<Value> = x.iter().map(|(k, v)| json!({"name": show(k), "size": v.len()})).collect();
                let mut v = json!({
                    "path": p, "nid": i.nid, "ino": i.ino, "type": type_name(i.mode), "mode": format!("{:o}", i.mode),
                    "nlink": i.nlink, "uid": i.uid, "gid": i.gid, "size": i.size, "mtime": i.mtime as i64, "mtime_nsec": i.mtime_nsec,
                    "inode_format": if i.compact {"compact"} else {"extended"}, "layout": i.layout, "xattrs": xattrs,
                });
                if i.is_symlink() {
                    v["target"] = json!(show(&self.boot.readlink(&i).map_err(fe)?));
                }
                if matches!(i.kind(), ifmt::S_IFCHR | ifmt::S_IFBLK) {
                    v["rdev"] = json!({"major": i.rdev().0, "minor": i.rdev().1});
                }
                if i.is_reg() {
                    v["chunks"] = json!(self.boot.chunks(&i).map_err(fe)?.len());
                }
                v
            }
            "chunk" => {
                let p = self.resolve(arg);
                let i = self.inode_at(&p)?;
                let mut out = Vec::new();
                for c in self.boot.chunks(&i).map_err(fe)? {
                    let r = self.boot.chunk_info(&c).map_err(fe)?;
                    out.push(json!({
                        "blob_index": c.blob_index, "blob_id": self.boot.blobs[c.blob_index as usize].blob_id, "ci_index": c.ci_index,
                        "digest": hex::encode(r.digest), "compressed_offset": r.compressed_offset, "compressed_size": r.compressed_size,
                        "uncompressed_offset": r.uncompressed_offset, "uncompressed_size": r.uncompressed_size, "flags": format!("{:#x}", r.flags),
                    }));
                }
                Value::Array(out)
            }
            "icheck" => {
                let want: u64 = arg.and_then(|a| a.parse().ok()).ok_or("usage: icheck INO (a nid or inode number)")?;
                let mut paths = Vec::new();
                self.boot
                    .walk(|p, _e, i| {
                        if i.nid == want || i.ino as u64 == want {
                            paths.push(json!({"path": show(p), "nid": i.nid, "ino": i.ino}));
                        }
                        Ok(())
                    })
                    .map_err(fe)?;
                Value::Array(paths)
            }
            "prefetch" => json!(self.boot.prefetch_nids().map_err(fe)?),
            "help" | "" => json!(INSPECT_HELP),
            other => return Err(format!("unknown command {other:?}; {INSPECT_HELP}")),
        })
    }
}

/// Open the blobs for `check -D`, mapping errors.
pub fn open_blobs<B: AsRef<[u8]>>(boot: &Bootstrap<B>, blob_dir: &Path) -> Result<BlobSet> {
    BlobSet::open(boot, None, Some(blob_dir))
}

/// Convenience for binaries: turn a message into an error.
pub fn invalid(m: impl Into<String>) -> BuildError {
    BuildError::Invalid(m.into())
}
