//! Reading an OCI layer tar (or tar.gz) into a [`Tree`] (one layer) while
//! chunking its file data in the same pass.
//!
//! Nothing is unpacked to disk: entries are read in archive order, each
//! regular file's data is handed chunk by chunk to the chunking pipeline
//! ([`crate::blob::Feeder`]) straight from the stream, and the tree is
//! built in memory with the same model as [`crate::dirwalk`] (whiteouts
//! recorded per directory, hard links sharing an inode), so a tar layer
//! merges onto a parent exactly like a directory layer.
//!
//! Rules (as a tar extraction would apply them, and as upstream's tarball
//! builder does):
//! * names are relative to the image root; `./` and `/`-separated `.`
//!   components are dropped, `..` is resolved lexically and may never climb
//!   above the root, absolute names are rejected;
//! * the `./` entry gives the root its attributes; directories missing from
//!   the archive are created with mode 0755, owner 0:0 and mtime 0;
//! * a later entry for the same name wins (two directories merge: the later
//!   attributes, the union of children);
//! * a name below a non-directory (e.g. below a symlink) is rejected;
//! * PAX `path`, `linkpath`, `mtime` (fractional, also negative), `uid`,
//!   `gid`, `SCHILY.devmajor`/`devminor` and `SCHILY.xattr.*` records and GNU
//!   long names are honoured.

use std::collections::HashMap;
use std::io::Read;

use nydus_format::writer::{libc_ifmt, NodeSpec};
use nydus_format::xattr;
use tar::EntryType;

use crate::blob::Feeder;
use crate::error::{BuildError, Result};
use crate::tar_sparse;
use crate::tree::{Inode, Tree, WhiteoutSpec, OCI_OPAQUE, OCI_WHITEOUT_PREFIX, OVERLAY_OPAQUE_XATTR};

/// Compression of a tar source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// An eStargz layer: gzip, whose TOC and landmark entries
    /// ([`crate::stargz_toc::is_meta_entry`]) are not part of the image.
    EStargz,
}

fn entry_err(path: &[u8], reason: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("tar entry {}: {reason}", String::from_utf8_lossy(path)))
}

/// Split an entry name into normalised components (see the module docs).
pub(crate) fn components(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    if path.first() == Some(&b'/') {
        return Err(entry_err(path, "absolute path (names must be relative to the image root)"));
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(entry_err(path, "path escapes the image root ('..')"));
                }
            }
            c => {
                if c.len() > 255 {
                    return Err(entry_err(path, "name longer than 255 bytes"));
                }
                out.push(c.to_vec());
            }
        }
    }
    Ok(out)
}

pub(crate) fn implicit_dir() -> Inode {
    Inode { meta: NodeSpec { mode: libc_ifmt::S_IFDIR | 0o755, ..Default::default() }, source: None }
}

/// PAX records of one entry that matter here.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<(u64, u32)>,
    uid: Option<u64>,
    gid: Option<u64>,
    devmajor: Option<u32>,
    devminor: Option<u32>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

/// Parse a PAX time ("-12.5", "1700000000.123456789") into seconds (two's
/// complement) and nanoseconds, rounding towards minus infinity.
fn parse_pax_time(v: &[u8]) -> Option<(u64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut nsec: i64 = digits.parse().ok()?;
    let mut secs = secs;
    if neg {
        secs = -secs;
        if nsec > 0 {
            secs -= 1;
            nsec = 1_000_000_000 - nsec;
        }
    }
    Some((secs as u64, nsec as u32))
}

fn parse_num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Parse PAX records ("LEN KEY=VALUE\n", LEN counting the whole record;
/// values are binary-safe) into `p`, and the `path`/`linkpath`/`size`
/// records into the returned overrides.
fn parse_pax(data: &[u8], p: &mut Pax, path: &[u8]) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let bad = |why: &str| entry_err(path, format!("bad PAX header: {why}"));
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(|| bad("no record length"))?;
        let len: usize = parse_num(&rest[..sp]).ok_or_else(|| bad("bad record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("record length does not match"));
        }
        let rec = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(|| bad("record without '='"))?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        let bad =
            || entry_err(path, format!("bad PAX record {}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)));
        match k {
            b"path" => p.path = Some(v.to_vec()),
            b"linkpath" => p.linkpath = Some(v.to_vec()),
            b"size" => p.size = Some(parse_num(v).ok_or_else(bad)?),
            b"mtime" => p.mtime = Some(parse_pax_time(v).ok_or_else(bad)?),
            b"uid" => p.uid = Some(parse_num(v).ok_or_else(bad)?),
            b"gid" => p.gid = Some(parse_num(v).ok_or_else(bad)?),
            b"SCHILY.devmajor" => p.devmajor = Some(parse_num(v).ok_or_else(bad)?),
            b"SCHILY.devminor" => p.devminor = Some(parse_num(v).ok_or_else(bad)?),
            _ if k.starts_with(b"GNU.sparse.") => p.sparse = true,
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    p.xattrs.retain(|(n, _)| n != name);
                    p.xattrs.push((name.to_vec(), v.to_vec()));
                }
            }
        }
    }
    Ok(())
}

fn id32(path: &[u8], what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| entry_err(path, format!("{what} {v} does not fit in 32 bits")))
}

/// Builds one layer's tree from tar entries.
pub(crate) struct TarTree {
    pub(crate) t: Tree,
    pub(crate) whiteout: WhiteoutSpec,
}

impl TarTree {
    /// Entry index of directory `comps`, creating missing directories.
    fn dir(&mut self, comps: &[Vec<u8>], path: &[u8]) -> Result<usize> {
        let mut cur = 0usize;
        for (i, c) in comps.iter().enumerate() {
            cur = match self.t.entries[cur].children.get(c).copied() {
                Some(e) if self.t.inode_of(e).is_dir() => e,
                Some(_) => {
                    let parent = comps[..=i].join(&b'/');
                    return Err(entry_err(
                        path,
                        format!("parent {} is not a directory", String::from_utf8_lossy(&parent)),
                    ));
                }
                None => self.t.add(cur, c.clone(), implicit_dir()),
            };
        }
        Ok(cur)
    }

    /// Entry index of the existing entry `comps` (no creation).
    fn lookup(&self, comps: &[Vec<u8>]) -> Option<usize> {
        let mut cur = 0usize;
        for c in comps {
            if !self.t.inode_of(cur).is_dir() {
                return None;
            }
            cur = *self.t.entries[cur].children.get(c)?;
        }
        Some(cur)
    }

    /// Record whiteout entries; `true` if the entry was one (and is done).
    fn whiteout(&mut self, parent: usize, name: &[u8], meta: &NodeSpec) -> bool {
        match self.whiteout {
            WhiteoutSpec::Oci if name == OCI_OPAQUE => {
                self.t.entries[parent].opaque = true;
                true
            }
            WhiteoutSpec::Oci => match name.strip_prefix(OCI_WHITEOUT_PREFIX) {
                Some(target) => {
                    if !target.is_empty() {
                        self.t.entries[parent].whiteouts.push(target.to_vec());
                    }
                    true
                }
                None => false,
            },
            WhiteoutSpec::Overlayfs if meta.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFCHR && meta.rdev == (0, 0) => {
                self.t.entries[parent].whiteouts.push(name.to_vec());
                true
            }
            _ => false,
        }
    }

    /// Put `meta` at `comps` (a later entry replaces an earlier one; two
    /// directories merge). Returns the inode index.
    pub(crate) fn place(&mut self, comps: &[Vec<u8>], mut meta: NodeSpec, path: &[u8]) -> Result<Option<usize>> {
        let is_dir = meta.mode & libc_ifmt::S_IFMT == libc_ifmt::S_IFDIR;
        let mut opaque = false;
        if self.whiteout == WhiteoutSpec::Overlayfs && is_dir {
            let before = meta.xattrs.len();
            meta.xattrs.retain(|(k, v)| !(k == OVERLAY_OPAQUE_XATTR && v == b"y"));
            opaque = meta.xattrs.len() != before;
        }
        let Some((name, dirs)) = comps.split_last() else {
            // The root itself.
            if !is_dir {
                return Err(entry_err(path, "the image root must be a directory"));
            }
            let i = self.t.entries[0].inode;
            self.t.inodes[i].meta = meta;
            self.t.entries[0].opaque |= opaque;
            return Ok(None);
        };
        let parent = self.dir(dirs, path)?;
        if self.whiteout(parent, name, &meta) {
            return Ok(None);
        }
        let existing = self.t.entries[parent].children.get(name).copied();
        let idx = match existing {
            Some(e) if is_dir && self.t.inode_of(e).is_dir() => {
                // Fresh inode: the old one may be shared (never for
                // directories, but keep the arenas simple).
                self.t.inodes.push(Inode { meta, source: None });
                self.t.entries[e].inode = self.t.inodes.len() - 1;
                e
            }
            _ => self.t.add(parent, name.clone(), Inode { meta, source: None }),
        };
        self.t.entries[idx].opaque |= opaque;
        Ok(Some(self.t.entries[idx].inode))
    }

    pub(crate) fn hard_link(&mut self, comps: &[Vec<u8>], target: &[u8], path: &[u8]) -> Result<()> {
        let tcomps = components(target).map_err(|_| {
            entry_err(path, format!("hard link target {} escapes the image root", String::from_utf8_lossy(target)))
        })?;
        let Some(te) = self.lookup(&tcomps) else {
            return Err(entry_err(
                path,
                format!("hard link target {} is not in the archive before it", String::from_utf8_lossy(target)),
            ));
        };
        if self.t.inode_of(te).is_dir() || tcomps.is_empty() {
            return Err(entry_err(path, "hard link to a directory"));
        }
        let Some((name, dirs)) = comps.split_last() else {
            return Err(entry_err(path, "the image root cannot be a hard link"));
        };
        let parent = self.dir(dirs, path)?;
        let inode = self.t.entries[te].inode;
        self.t.link(parent, name.clone(), inode);
        Ok(())
    }
}

/// A gzip decoder whose errors say that the gzip stream is at fault.
struct GzErrors<R>(R);

impl<R: Read> Read for GzErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => e,
            kind => std::io::Error::new(kind, format!("gzip stream truncated or corrupt ({e})")),
        })
    }
}

/// Largest PAX / GNU long-name extension data accepted (kept in memory).
const MAX_EXTENSION: u64 = 16 << 20;

/// Sequential reader over the archive stream, counting its position.
struct Stream<R> {
    r: R,
}

impl<R: Read> Stream<R> {
    /// Read one 512-byte block; `Ok(false)` at a clean end of the stream.
    fn block(&mut self, buf: &mut [u8; 512]) -> std::io::Result<bool> {
        let mut got = 0;
        while got < 512 {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive ends inside a header"))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Skip `n` bytes; an early end is an error.
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let got = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())?;
        if got < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("archive ends {} bytes early", n - got),
            ));
        }
        Ok(())
    }

    /// Read `n` bytes (extension data) into memory.
    fn read_vec(&mut self, n: u64) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n as usize);
        (&mut self.r).take(n).read_to_end(&mut v)?;
        if (v.len() as u64) < n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "archive ends inside an extension header",
            ));
        }
        Ok(v)
    }
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

/// The header checksum (unsigned, or signed as some old writers did).
fn checksum_ok(block: &[u8; 512]) -> bool {
    let field: Vec<u8> = block[148..156].iter().copied().filter(|&b| b != 0 && b != b' ').collect();
    let Some(stored) = std::str::from_utf8(&field).ok().and_then(|f| i64::from_str_radix(f, 8).ok()) else {
        return false;
    };
    let cks = |b: u8, signed: bool| if signed { b as i8 as i64 } else { b as i64 };
    let sum = |signed: bool| -> i64 {
        block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as i64 } else { cks(b, signed) }).sum()
    };
    stored == sum(false) || stored == sum(true)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Read a tar stream into a one-layer tree, feeding regular files' data to
/// `feeder` as it streams by (chunks are keyed by inode index). `src` names
/// the source in errors. Headers are parsed with the `tar` crate; the
/// framing (PAX records, which must be binary-safe, GNU long names, data
/// and padding) is done here so that nothing but extension headers (at
/// most 16 MiB each) is ever held in memory.
pub fn read_tar(
    input: Box<dyn Read + Send>,
    compression: TarCompression,
    src: &str,
    whiteout: WhiteoutSpec,
    feeder: &mut Feeder,
) -> Result<Tree> {
    let input: Box<dyn Read + Send> = match compression {
        TarCompression::None => input,
        TarCompression::Gzip | TarCompression::EStargz => {
            Box::new(GzErrors(flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, input))))
        }
    };
    let mut st = Stream { r: std::io::BufReader::with_capacity(1 << 20, input) };
    let mut tt = TarTree { t: Tree::new(implicit_dir()), whiteout };
    let mut skipped = 0u64;
    let mut last: Vec<u8> = Vec::new();
    let stream_err = |last: &[u8], e: std::io::Error| {
        let after =
            if last.is_empty() { String::new() } else { format!(" after entry {}", String::from_utf8_lossy(last)) };
        BuildError::Invalid(format!("{src}: invalid or truncated archive{after}: {e}"))
    };
    let mut block = [0u8; 512];
    let mut pax = Pax::default();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    loop {
        if !st.block(&mut block).map_err(|e| stream_err(&last, e))? {
            break; // no end-of-archive blocks: accepted, as tar does
        }
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !checksum_ok(&block) {
            return Err(stream_err(
                &last,
                std::io::Error::other("header checksum mismatch (not a tar archive, or corrupt)"),
            ));
        }
        let h = tar::Header::from_byte_slice(&block);
        let hsize = h.entry_size().map_err(|e| stream_err(&last, e))?;
        let kind = h.entry_type();
        let hpath = h.path_bytes().into_owned();
        match kind {
            EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                if hsize > MAX_EXTENSION {
                    return Err(entry_err(&hpath, format!("extension header of {hsize} bytes is too large")));
                }
                let data = st.read_vec(hsize).map_err(|e| entry_err(&hpath, e))?;
                st.skip(padding(hsize)).map_err(|e| entry_err(&hpath, e))?;
                match kind {
                    EntryType::XHeader => parse_pax(&data, &mut pax, &hpath)?,
                    EntryType::GNULongName => long_name = Some(trim_nul(data)),
                    EntryType::GNULongLink => long_link = Some(trim_nul(data)),
                    _ => {} // global PAX headers: nothing applies to an image
                }
                continue;
            }
            _ => {}
        }
        let pax = std::mem::take(&mut pax);
        let path = pax.path.clone().or(long_name.take()).unwrap_or(hpath);
        let link = pax
            .linkpath
            .clone()
            .or(long_link.take())
            .or_else(|| h.link_name_bytes().map(|c| c.into_owned()))
            .unwrap_or_default();
        last.clone_from(&path);
        let size = pax.size.unwrap_or(hsize);
        if compression == TarCompression::EStargz && crate::stargz_toc::is_meta_entry(&path) {
            st.skip(size + padding(size)).map_err(|e| entry_err(&path, format!("data truncated: {e}")))?;
            continue;
        }
        // GNU sparse: the stored data is the segments; the file is `real` bytes.
        let sparse = if kind == EntryType::GNUSparse {
            let header = block;
            let (map, real) = tar_sparse::read_map(&header, size, |b| match st.block(b) {
                Ok(true) => Ok(()),
                Ok(false) => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "archive ends")),
                Err(e) => Err(e),
            })
            .map_err(|e| entry_err(&path, e))?;
            Some((map, real))
        } else {
            None
        };
        let file_size = sparse.as_ref().map_or(size, |(_, real)| *real);
        let inode = entry_node(&mut tt, h, kind, &path, &link, &pax, file_size, &mut skipped)?;
        let mut data = (&mut st.r).take(size);
        if let Some(inode) = inode {
            if file_size > 0 {
                let name = format!("tar entry {}", String::from_utf8_lossy(&path));
                let fed = match sparse {
                    Some((map, real)) => {
                        let mut whole = tar_sparse::SparseReader::new(&mut data, map, real);
                        feeder.feed_reader(inode, &mut whole, real, &name)?
                    }
                    None => feeder.feed_reader(inode, &mut data, size, &name)?,
                };
                if !fed {
                    return Err(crate::blob::Feeder::stopped());
                }
            }
        }
        // Data of other entries (e.g. hard links with data) is skipped.
        let left = data.limit();
        st.skip(left + padding(size)).map_err(|e| entry_err(&path, format!("data truncated: {e}")))?;
    }
    // Read to the end: a gzip stream is only known intact (CRC, length)
    // once its trailer is read, and a writer on a pipe sees no EPIPE.
    std::io::copy(&mut st.r, &mut std::io::sink()).map_err(|e| stream_err(&last, e))?;
    tt.t.skipped_xattrs = skipped;
    Ok(tt.t)
}

/// Add one (non-extension) entry to the tree; returns the inode whose data
/// follows (regular files).
#[allow(clippy::too_many_arguments)]
fn entry_node(
    tt: &mut TarTree,
    h: &tar::Header,
    kind: EntryType,
    path: &[u8],
    link: &[u8],
    pax: &Pax,
    size: u64,
    skipped: &mut u64,
) -> Result<Option<usize>> {
    let comps = components(path)?;
    let field =
        |r: std::io::Result<u64>, what: &str| r.map_err(|err| entry_err(path, format!("bad {what} field: {err}")));
    let mode = h.mode().map_err(|err| entry_err(path, format!("bad mode field: {err}")))? & 0o7777;
    let uid = id32(
        path,
        "uid",
        match pax.uid {
            Some(v) => v,
            None => field(h.uid(), "uid")?,
        },
    )?;
    let gid = id32(
        path,
        "gid",
        match pax.gid {
            Some(v) => v,
            None => field(h.gid(), "gid")?,
        },
    )?;
    let (mtime, mtime_nsec) = match pax.mtime {
        Some(t) => t,
        None => (field(h.mtime(), "mtime")?, 0),
    };
    let mut xattrs = Vec::new();
    for (k, v) in &pax.xattrs {
        if xattr::is_supported_name(k) {
            xattrs.push((k.clone(), v.clone()));
        } else {
            tracing::warn!(entry = %String::from_utf8_lossy(path), name = %String::from_utf8_lossy(k), "xattr namespace not supported by RAFS, skipped");
            *skipped += 1;
        }
    }
    xattrs.sort();
    let mut meta = NodeSpec { uid, gid, mtime, mtime_nsec, xattrs, ..Default::default() };
    let ifmt = match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => libc_ifmt::S_IFREG,
        EntryType::Directory => libc_ifmt::S_IFDIR,
        EntryType::Symlink => libc_ifmt::S_IFLNK,
        EntryType::Char => libc_ifmt::S_IFCHR,
        EntryType::Block => libc_ifmt::S_IFBLK,
        EntryType::Fifo => libc_ifmt::S_IFIFO,
        EntryType::Link => {
            tt.hard_link(&comps, link, path)?;
            return Ok(None);
        }
        other => return Err(entry_err(path, format!("unsupported entry type {:?}", other.as_byte() as char))),
    };
    if pax.sparse {
        return Err(entry_err(
            path,
            "PAX sparse entries are not supported (repack with `tar --sparse --format=gnu`, or without --sparse)",
        ));
    }
    meta.mode = ifmt | mode;
    match ifmt {
        libc_ifmt::S_IFREG => meta.size = size,
        libc_ifmt::S_IFLNK => {
            if link.is_empty() || link.len() > 4096 {
                return Err(entry_err(path, "symlink target empty or longer than 4096 bytes"));
            }
            meta.size = link.len() as u64;
            meta.symlink = link.to_vec();
        }
        libc_ifmt::S_IFCHR | libc_ifmt::S_IFBLK => {
            let major = match pax.devmajor {
                Some(v) => v,
                None => {
                    h.device_major().map_err(|err| entry_err(path, format!("bad device field: {err}")))?.unwrap_or(0)
                }
            };
            let minor = match pax.devminor {
                Some(v) => v,
                None => {
                    h.device_minor().map_err(|err| entry_err(path, format!("bad device field: {err}")))?.unwrap_or(0)
                }
            };
            meta.rdev = (major, minor);
        }
        _ => {}
    }
    let inode = tt.place(&comps, meta, path)?;
    Ok(if ifmt == libc_ifmt::S_IFREG { inode } else { None })
}

/// Chunks of inodes replaced by later entries are dropped with them.
pub fn attach_chunks(tree: &mut Tree, chunks: HashMap<usize, Vec<nydus_format::writer::ChunkSpec>>) {
    for (i, list) in chunks {
        tree.inodes[i].meta.chunks = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_confined() {
        assert_eq!(components(b"./a/./b/").unwrap(), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(components(b"a/../b").unwrap(), [b"b".to_vec()]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"../evil").unwrap_err().to_string().contains("../evil"));
        assert!(components(b"a/../../evil").is_err());
        assert!(components(b"/etc/x").is_err());
    }

    #[test]
    fn pax_records_are_binary_safe() {
        let mut data = Vec::new();
        for (k, v) in [(&b"SCHILY.xattr.user.x"[..], &b"a\nb\0c"[..]), (b"path", b"p/q"), (b"mtime", b"-1.5")] {
            let body = [k, b"=", v, b"\n"].concat();
            let mut len = body.len() + 2;
            if (len.to_string().len() + 1 + body.len()) != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} ").as_bytes());
            data.extend_from_slice(&body);
        }
        let mut p = Pax::default();
        parse_pax(&data, &mut p, b"e").unwrap();
        assert_eq!(p.xattrs, [(b"user.x".to_vec(), b"a\nb\0c".to_vec())]);
        assert_eq!(p.path.as_deref(), Some(&b"p/q"[..]));
        assert_eq!(p.mtime, Some(((-2i64) as u64, 500_000_000)));
        assert!(parse_pax(b"99 path=x\n", &mut Pax::default(), b"e").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"-1.25"), Some(((-2i64) as u64, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some(((-3i64) as u64, 0)));
        assert_eq!(parse_pax_time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
