//! `nydus-image unpack`: image → tar archive that recreates the tree.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use nydus_format::reader::{ChunkIndex, Inode};
use nydus_format::writer::libc_ifmt as ifmt;
use nydus_format::Bootstrap;
use serde::Serialize;
use tar::{EntryType, Header};

use crate::blobfile::BlobSet;
use crate::error::{BuildError, Result};
use crate::image::{load, show};

/// What was unpacked.
#[derive(Debug, Default, Serialize)]
pub struct UnpackReport {
    /// Tar entries written.
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Sockets skipped (tar cannot hold them).
    pub skipped_sockets: u64,
}

struct ChunkRead<'a> {
    boot: &'a Bootstrap<Vec<u8>>,
    blobs: &'a BlobSet,
    chunks: Vec<ChunkIndex>,
    size: u64,
    chunk_size: u64,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    err: &'a RefCell<Option<BuildError>>,
}

impl Read for ChunkRead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.next == self.chunks.len() {
                return Ok(0);
            }
            let c = self.chunks[self.next];
            let want = (self.size - self.next as u64 * self.chunk_size).min(self.chunk_size) as usize;
            let data = self.blobs.read(self.boot, &c).and_then(|d| {
                if d.len() == want {
                    Ok(d)
                } else {
                    Err(BuildError::BadChunk {
                        blob_id: self.boot.blobs[c.blob_index as usize].blob_id.clone(),
                        ci_index: c.ci_index,
                        reason: format!("chunk holds {} bytes, file needs {want}", d.len()),
                    })
                }
            });
            match data {
                Ok(d) => self.buf = d,
                Err(e) => {
                    let msg = e.to_string();
                    *self.err.borrow_mut() = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
            self.pos = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn pax_records(ino: &Inode, xattrs: &[(Vec<u8>, Vec<u8>)], path: &[u8], link: Option<&[u8]>) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    if path.len() > 99 || !path.is_ascii() {
        v.push(("path".into(), path.to_vec()));
    }
    if let Some(l) = link {
        if l.len() > 99 || !l.is_ascii() {
            v.push(("linkpath".into(), l.to_vec()));
        }
    }
    let secs = ino.mtime as i64;
    if ino.mtime_nsec != 0 || secs < 0 {
        v.push(("mtime".into(), pax_time(secs, ino.mtime_nsec).into_bytes()));
    }
    if ino.uid > 0o7777777 {
        v.push(("uid".into(), ino.uid.to_string().into_bytes()));
    }
    if ino.gid > 0o7777777 {
        v.push(("gid".into(), ino.gid.to_string().into_bytes()));
    }
    if ino.is_reg() && ino.size > 0o77777777777 {
        v.push(("size".into(), ino.size.to_string().into_bytes()));
    }
    for (k, val) in xattrs {
        v.push((format!("SCHILY.xattr.{}", show(k)), val.clone()));
    }
    v
}

/// A PAX time value for `secs` + `nsec` nanoseconds (`secs` may be negative).
fn pax_time(secs: i64, nsec: u32) -> String {
    let total = secs as i128 * 1_000_000_000 + nsec as i128;
    let (sign, abs) = if total < 0 { ("-", -total) } else { ("", total) };
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

fn short(p: &[u8]) -> &[u8] {
    &p[..p.len().min(99)]
}

/// Unpack `bootstrap` (blobs from `blob` or `blob_dir`) into the tar `output`.
pub fn unpack(bootstrap: &Path, blob: Option<&Path>, blob_dir: Option<&Path>, output: &Path) -> Result<UnpackReport> {
    let boot = load(bootstrap)?;
    let blobs = BlobSet::open(&boot, blob, blob_dir)?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = crate::create::temp_in(&dir)?;
    let file = tmp.reopen().map_err(|e| BuildError::io(tmp.path(), e))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    let err = RefCell::new(None);
    let mut rep = UnpackReport::default();
    let mut first_name: HashMap<u64, Vec<u8>> = HashMap::new();
    let walked = boot.walk(|path, _entry, ino| {
        let rel: Vec<u8> = if path == b"/" { b"./".to_vec() } else { path[1..].to_vec() };
        let map = |e: std::io::Error| -> nydus_format::FormatError {
            nydus_format::FormatError::Encode(format!("writing {}: {e}", output.display()))
        };
        let xattrs = boot.xattrs(ino)?;
        let mut h = Header::new_gnu();
        h.set_mode(ino.mode & 0o7777);
        h.set_uid(ino.uid.min(0o7777777) as u64);
        h.set_gid(ino.gid.min(0o7777777) as u64);
        h.set_mtime(if (ino.mtime as i64) < 0 { 0 } else { ino.mtime.min(0o77777777777) });
        h.set_size(0);
        let kind = ino.kind();
        if kind == ifmt::S_IFSOCK {
            tracing::warn!(path = %show(path), "socket skipped: tar cannot represent sockets");
            rep.skipped_sockets += 1;
            return Ok(());
        }
        let mut link: Option<Vec<u8>> = None;
        if kind != ifmt::S_IFDIR && ino.nlink > 1 {
            if let Some(first) = first_name.get(&ino.nid) {
                link = Some(first.clone());
            } else {
                first_name.insert(ino.nid, rel.clone());
            }
        }
        let etype = match kind {
            _ if link.is_some() => EntryType::Link,
            ifmt::S_IFREG => EntryType::Regular,
            ifmt::S_IFDIR => EntryType::Directory,
            ifmt::S_IFLNK => {
                link = Some(boot.readlink(ino)?);
                EntryType::Symlink
            }
            ifmt::S_IFCHR => EntryType::Char,
            ifmt::S_IFBLK => EntryType::Block,
            ifmt::S_IFIFO => EntryType::Fifo,
            _ => return Err(nydus_format::FormatError::Inode { nid: ino.nid, reason: "unknown type".into() }),
        };
        h.set_entry_type(etype);
        if matches!(etype, EntryType::Char | EntryType::Block) {
            let (ma, mi) = ino.rdev();
            h.set_device_major(ma).map_err(map)?;
            h.set_device_minor(mi).map_err(map)?;
        }
        let pax = pax_records(ino, if etype == EntryType::Link { &[] } else { &xattrs }, &rel, link.as_deref());
        if !pax.is_empty() {
            tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).map_err(map)?;
        }
        set_name(&mut h, short(&rel)).map_err(map)?;
        if let Some(l) = &link {
            set_link(&mut h, short(l)).map_err(map)?;
        }
        rep.entries += 1;
        if etype == EntryType::Regular {
            h.set_size(ino.size);
            h.set_cksum();
            let chunks = boot.chunks(ino)?;
            let reader = ChunkRead {
                boot: &boot,
                blobs: &blobs,
                chunks,
                size: ino.size,
                chunk_size: boot.sb.chunk_size as u64,
                next: 0,
                buf: Vec::new(),
                pos: 0,
                err: &err,
            };
            tar.append(&h, reader).map_err(map)?;
            rep.bytes += ino.size;
        } else {
            h.set_cksum();
            tar.append(&h, std::io::empty()).map_err(map)?;
        }
        Ok(())
    });
    if let Some(e) = err.borrow_mut().take() {
        return Err(e);
    }
    walked.map_err(|e| BuildError::format(bootstrap, e))?;
    let w = tar.into_inner().map_err(|e| BuildError::io(output, e))?;
    w.into_inner().map_err(|e| BuildError::io(output, e.into_error()))?;
    crate::create::publish(tmp, output)?;
    Ok(rep)
}

fn set_name(h: &mut Header, name: &[u8]) -> std::io::Result<()> {
    let raw = &mut h.as_old_mut().name;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name);
    Ok(())
}

fn set_link(h: &mut Header, name: &[u8]) -> std::io::Result<()> {
    let raw = &mut h.as_old_mut().linkname;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name);
    Ok(())
}
