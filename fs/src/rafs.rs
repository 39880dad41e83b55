//! A mounted RAFS image, independent of the transport: inode numbers,
//! attributes, directory entries, xattrs and file data. The FUSE glue in
//! [`crate::fuse`] only translates requests to these calls, so a virtiofs
//! transport can reuse it unchanged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use nydus_format::flags;
use nydus_format::reader::{recorded_locations, Bootstrap, Inode};
use nydus_format::writer::libc_ifmt as ifmt;
use nydus_format::Digest;
use nydus_storage::{BlobCacheManager, CachedBlob, ChunkSink};

use crate::config::FsConfig;
use crate::error::{FsError, Result};

/// FUSE's fixed root inode number.
pub const ROOT_INO: u64 = 1;

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Name.
    pub name: Vec<u8>,
    /// Inode number as reported to the kernel.
    pub ino: u64,
    /// `DT_*` type.
    pub dtype: u32,
}

/// The filesystem of one image.
pub struct Rafs {
    boot: Bootstrap<Vec<u8>>,
    blobs: Vec<Arc<CachedBlob>>,
    cfg: FsConfig,
    owner: Option<(u32, u32)>,
    logged: Mutex<HashSet<u64>>,
}

fn dtype(mode: u32) -> u32 {
    (match mode & ifmt::S_IFMT {
        ifmt::S_IFREG => libc::DT_REG,
        ifmt::S_IFDIR => libc::DT_DIR,
        ifmt::S_IFLNK => libc::DT_LNK,
        ifmt::S_IFCHR => libc::DT_CHR,
        ifmt::S_IFBLK => libc::DT_BLK,
        ifmt::S_IFIFO => libc::DT_FIFO,
        ifmt::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_UNKNOWN,
    }) as u32
}

impl Rafs {
    /// Set up the filesystem of `boot`, opening the cache of each blob.
    pub fn new(boot: Bootstrap<Vec<u8>>, cache: &Arc<BlobCacheManager>, cfg: FsConfig) -> Result<Self> {
        let records = boot.chunk_records()?;
        let mut digests: Vec<Vec<Option<Digest>>> =
            boot.blobs.iter().map(|b| vec![None; b.chunk_count as usize]).collect();
        for r in &records {
            if let Some(slot) = digests.get_mut(r.blob_index as usize).and_then(|d| d.get_mut(r.index as usize)) {
                *slot = Some(r.digest);
            }
        }
        let mut blobs = Vec::with_capacity(boot.blobs.len());
        for (info, d) in boot.blobs.iter().zip(digests) {
            // Blobs without a ci array (RAFS v5 images) are located from the
            // bootstrap's chunk records.
            let known = (info.ci_uncompressed_size == 0).then(|| recorded_locations(&records, info));
            blobs.push(cache.open_blob_located(info, d, known)?);
        }
        let owner = if boot.sb.flags & flags::EXPLICIT_UID_GID == 0 {
            // SAFETY: geteuid/getegid only read the process credentials.
            Some(unsafe { (libc::geteuid(), libc::getegid()) })
        } else {
            None
        };
        // Validate the root now, so a broken image fails the mount, not the first request.
        let root = boot.inode(boot.sb.root_nid)?;
        if !root.is_dir() {
            return Err(FsError::WrongType(libc::ENOTDIR));
        }
        Ok(Self { boot, blobs, cfg, owner, logged: Mutex::new(HashSet::new()) })
    }

    /// Settings.
    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    /// The parsed bootstrap.
    pub fn bootstrap(&self) -> &Bootstrap<Vec<u8>> {
        &self.boot
    }

    /// Blob caches by blob index.
    pub fn blobs(&self) -> &[Arc<CachedBlob>] {
        &self.blobs
    }

    /// Kernel inode number → nid (the root is swapped with FUSE's inode 1).
    pub fn nid_of(&self, ino: u64) -> u64 {
        let root = self.boot.sb.root_nid;
        match ino {
            ROOT_INO => root,
            i if i == root => ROOT_INO,
            i => i,
        }
    }

    /// nid → kernel inode number.
    pub fn ino_of(&self, nid: u64) -> u64 {
        self.nid_of(nid)
    }

    /// The inode behind a kernel inode number.
    pub fn inode(&self, ino: u64) -> Result<Inode> {
        if ino == 0 {
            return Err(FsError::NoInode(0));
        }
        Ok(self.boot.inode(self.nid_of(ino))?)
    }

    /// Log a fault once per inode (a damaged image must not flood the log).
    pub fn log_fault(&self, ino: u64, op: &str, e: &FsError) {
        let first = self.logged.lock().map(|mut s| s.len() < 100_000 && s.insert(ino)).unwrap_or(false);
        if first {
            tracing::warn!(ino, op, error = %e, "request failed; further errors on this inode are not logged");
        }
    }

    /// `stat` of an inode.
    pub fn attr(&self, ino: u64, i: &Inode) -> libc::stat64 {
        // SAFETY: stat64 is plain integers; all-zero bytes are a valid value.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_ino = ino;
        st.st_mode = i.mode;
        st.st_nlink = i.nlink as _;
        let (uid, gid) = self.owner.unwrap_or((i.uid, i.gid));
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_size = i.size as i64;
        st.st_blksize = 4096;
        st.st_blocks = i.size.div_ceil(512) as i64;
        if matches!(i.kind(), ifmt::S_IFCHR | ifmt::S_IFBLK) {
            let (ma, mi) = i.rdev();
            st.st_rdev = libc::makedev(ma, mi);
            st.st_size = 0;
            st.st_blocks = 0;
        }
        let t = i.mtime as i64;
        st.st_mtime = t;
        st.st_mtime_nsec = i.mtime_nsec as i64;
        st.st_atime = t;
        st.st_atime_nsec = i.mtime_nsec as i64;
        st.st_ctime = t;
        st.st_ctime_nsec = i.mtime_nsec as i64;
        st
    }

    /// Find `name` in directory `parent`: its inode number and inode.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<(u64, Inode)> {
        let dir = self.inode(parent)?;
        if !dir.is_dir() {
            return Err(FsError::WrongType(libc::ENOTDIR));
        }
        let e = self.boot.lookup(&dir, name)?.ok_or(FsError::NotFound)?;
        let ino = self.ino_of(e.nid);
        Ok((ino, self.boot.inode(e.nid)?))
    }

    /// All entries of a directory, `.` and `..` included, in on-disk order.
    pub fn read_dir(&self, ino: u64) -> Result<Vec<Entry>> {
        let dir = self.inode(ino)?;
        if !dir.is_dir() {
            return Err(FsError::WrongType(libc::ENOTDIR));
        }
        Ok(self
            .boot
            .read_dir(&dir)?
            .into_iter()
            .map(|e| Entry { ino: self.ino_of(e.nid), dtype: dtype(file_type_mode(e.file_type)), name: e.name })
            .collect())
    }

    /// Visit directory entries from index `skip` (see
    /// [`Bootstrap::visit_dir`]); `f` returns `false` to stop.
    pub fn visit_dir(&self, ino: u64, skip: u64, mut f: impl FnMut(u64, Entry) -> bool) -> Result<()> {
        let dir = self.inode(ino)?;
        if !dir.is_dir() {
            return Err(FsError::WrongType(libc::ENOTDIR));
        }
        self.boot.visit_dir(&dir, skip, |index, e| {
            let entry = Entry { ino: self.ino_of(e.nid), dtype: dtype(file_type_mode(e.file_type)), name: e.name };
            Ok(f(index, entry))
        })?;
        Ok(())
    }

    /// Symlink target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        if !i.is_symlink() {
            return Err(FsError::WrongType(libc::EINVAL));
        }
        Ok(self.boot.readlink(&i)?)
    }

    /// Value of one xattr.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if !self.cfg.enable_xattr {
            return Err(FsError::XattrDisabled);
        }
        let i = self.inode(ino)?;
        self.boot.xattrs(&i)?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v).ok_or(FsError::NoXattr)
    }

    /// NUL-separated xattr names.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if !self.cfg.enable_xattr {
            return Ok(Vec::new());
        }
        let i = self.inode(ino)?;
        let mut out = Vec::new();
        for (k, _) in self.boot.xattrs(&i)? {
            out.extend_from_slice(&k);
            out.push(0);
        }
        Ok(out)
    }

    /// Read up to `size` bytes at `offset` of a regular file into `sink`. Returns the
    /// bytes read and whether they reach the end of the file.
    pub fn read(&self, ino: u64, offset: u64, size: u32, sink: &mut dyn ChunkSink) -> Result<(usize, bool)> {
        let i = self.inode(ino)?;
        if !i.is_reg() {
            return Err(FsError::WrongType(libc::EISDIR));
        }
        if offset >= i.size || size == 0 {
            return Ok((0, offset >= i.size));
        }
        let end = i.size.min(offset + size as u64);
        let cs = self.boot.sb.chunk_size as u64;
        let (first, last) = (offset / cs, (end - 1) / cs);
        let wanted = self.boot.chunk_range(&i, first, last - first + 1)?;
        if wanted.len() as u64 != last - first + 1 {
            return Err(FsError::Format(nydus_format::FormatError::Inode {
                nid: i.nid,
                reason: "chunk array shorter than the file".into(),
            }));
        }
        // Fetch everything the request needs first, so missing neighbours
        // are merged into as few backend reads as possible.
        if wanted.len() > 1 {
            for (b, blob) in self.blobs.iter().enumerate() {
                let cis: Vec<u32> = wanted.iter().filter(|c| c.blob_index as usize == b).map(|c| c.ci_index).collect();
                if !cis.is_empty() {
                    blob.ensure(&cis, false)?;
                }
            }
        }
        let mut done = 0usize;
        for (k, c) in wanted.iter().enumerate() {
            let chunk_start = (first + k as u64) * cs;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + cs);
            let blob = self.blobs.get(c.blob_index as usize).ok_or(FsError::NoInode(i.nid))?;
            let n = blob.read_chunk(c.ci_index, (from - chunk_start) as u32, (to - from) as u32, sink)?;
            done += n;
            if n as u64 != to - from {
                break;
            }
        }
        Ok((done, offset + done as u64 >= i.size))
    }

    /// Whether every chunk of regular file `ino` is in the blob cache.
    pub fn is_cached(&self, ino: u64) -> Result<bool> {
        let i = self.inode(ino)?;
        if !i.is_reg() {
            return Ok(false);
        }
        for c in self.boot.chunks(&i)? {
            match self.blobs.get(c.blob_index as usize) {
                Some(b) if b.is_cached(c.ci_index) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// A name for the content of regular file `ino`: a digest of its size and
    /// of the blob ids and chunk indexes it is made of (blob ids are digests
    /// of the blobs' contents), in hex.
    pub fn content_key(&self, ino: u64) -> Result<String> {
        use sha2::Digest as _;
        let i = self.inode(ino)?;
        let mut h = sha2::Sha256::new();
        h.update(i.size.to_le_bytes());
        h.update(self.boot.sb.chunk_size.to_le_bytes());
        for c in self.boot.chunks(&i)? {
            let blob = self.blobs.get(c.blob_index as usize).ok_or(FsError::NoInode(i.nid))?;
            h.update(blob.blob_id().as_bytes());
            h.update([0]);
            h.update(c.ci_index.to_le_bytes());
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Chunks to prefetch for `paths` (files, or directories meaning every
    /// file below them), per blob index, deduplicated.
    pub fn prefetch_chunks(&self, paths: &[String]) -> Result<Vec<Vec<u32>>> {
        let mut per_blob: Vec<Vec<u32>> = vec![Vec::new(); self.blobs.len()];
        let mut add = |i: &Inode| -> nydus_format::Result<()> {
            if i.is_reg() {
                for c in self.boot.chunks(i)? {
                    per_blob[c.blob_index as usize].push(c.ci_index);
                }
            }
            Ok(())
        };
        for p in paths {
            let Some(i) = self.boot.lookup_path(p)? else {
                tracing::warn!(path = %p, "prefetch: no such file in the image, skipped");
                continue;
            };
            if i.is_dir() {
                let prefix = format!("{}/", p.trim_end_matches('/'));
                self.boot.walk(|path, _, inode| {
                    let path = String::from_utf8_lossy(path);
                    if path.starts_with(&prefix) || prefix == "/" {
                        add(inode)?;
                    }
                    Ok(())
                })?;
            } else {
                add(&i)?;
            }
        }
        for v in &mut per_blob {
            v.sort_unstable();
            v.dedup();
        }
        Ok(per_blob)
    }

    /// Filesystem statistics.
    pub fn statfs(&self) -> libc::statvfs64 {
        // SAFETY: statvfs64 is plain integers; all-zero bytes are a valid value.
        let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
        st.f_bsize = 4096;
        st.f_frsize = 4096;
        let data: u64 = self.boot.blobs.iter().map(|b| b.uncompressed_size / 4096).sum();
        st.f_blocks = data + self.boot.bytes().len() as u64 / 4096;
        st.f_files = self.boot.sb.inos;
        st.f_namemax = 255;
        st.f_flag = libc::ST_RDONLY;
        st
    }
}

fn file_type_mode(ft: u8) -> u32 {
    use nydus_format::ondisk::file_type as ft_;
    match ft {
        ft_::REG => ifmt::S_IFREG,
        ft_::DIR => ifmt::S_IFDIR,
        ft_::CHR => ifmt::S_IFCHR,
        ft_::BLK => ifmt::S_IFBLK,
        ft_::FIFO => ifmt::S_IFIFO,
        ft_::SOCK => ifmt::S_IFSOCK,
        ft_::LNK => ifmt::S_IFLNK,
        _ => 0,
    }
}
