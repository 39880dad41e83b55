//! The FUSE face of [`Rafs`]: `fuse_backend_rs::api::filesystem::FileSystem`.
//!
//! Every method turns the request into a [`Rafs`] call; errors become errno
//! through [`FsError::errno`], and faults (damaged image or chunk data) are
//! logged once per inode. Mutations answer EROFS.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions, SetattrValid,
    ZeroCopyReader, ZeroCopyWriter,
};
use nydus_storage::ChunkSink;

use crate::error::{FsError, Result};
use crate::push;
use crate::rafs::{Rafs, ROOT_INO};
use crate::vfs::{Generation, ImageSet};

/// A [`Rafs`] served over FUSE (or virtiofs). The image behind it can be swapped while it
/// is mounted (see [`crate::vfs`] for how inode numbers stay unambiguous).
pub struct RafsFs {
    images: Arc<ImageSet>,
}

impl RafsFs {
    /// Serve one image.
    pub fn new(rafs: Arc<Rafs>) -> Self {
        Self { images: Arc::new(ImageSet::new(rafs)) }
    }

    /// The image set: the handle through which the owner swaps the image.
    pub fn images(&self) -> &Arc<ImageSet> {
        &self.images
    }

    /// The current image.
    pub fn rafs(&self) -> Arc<Rafs> {
        self.images.current()
    }

    /// The entry of the root directory.
    pub fn root_entry(&self) -> io::Result<Entry> {
        self.images.with(ROOT_INO, |g, l| {
            let i = g.rafs().inode(l).map_err(|e| fail(g.rafs(), l, "mount", e))?;
            entry(g, l, &i)
        })
    }
}

fn fail(rafs: &Rafs, ino: u64, op: &str, e: FsError) -> io::Error {
    if e.is_fault() {
        rafs.log_fault(ino, op, &e);
    } else {
        tracing::trace!(ino, op, error = %e, "request failed");
    }
    io::Error::from_raw_os_error(e.errno())
}

/// The FUSE entry of image-local inode `local` of generation `g`.
fn entry(g: &Generation, local: u64, i: &nydus_format::reader::Inode) -> io::Result<Entry> {
    let rafs = g.rafs();
    let cfg = rafs.config();
    let ino = g.outer(local)?;
    Ok(Entry {
        inode: ino,
        generation: 0,
        attr: rafs.attr(ino, i),
        attr_flags: 0,
        attr_timeout: cfg.attr_timeout,
        entry_timeout: cfg.entry_timeout,
    })
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// Feeds chunk data into the FUSE reply buffer.
struct ReplySink<'a> {
    w: &'a mut dyn ZeroCopyWriter,
}

impl ChunkSink for ReplySink<'_> {
    fn write_from_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        // SAFETY: the descriptor stays open for this call because `file` is
        // borrowed for it; ManuallyDrop keeps the temporary File from closing it.
        let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(file.as_raw_fd()) });
        let mut done = 0;
        while done < len {
            let n = self.w.write_from(&mut *f, len - done, offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn write_bytes(&mut self, data: &[u8]) -> io::Result<usize> {
        self.w.write_all(data)?;
        Ok(data.len())
    }
}

/// The FUSE features a RAFS filesystem asks the kernel for (also what a [`Vfs`] serving
/// RAFS images should offer).
///
/// [`Vfs`]: fuse_backend_rs::api::Vfs
pub const FS_OPTIONS: FsOptions = FsOptions::ASYNC_READ
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::DO_READDIRPLUS)
    .union(FsOptions::READDIRPLUS_AUTO)
    .union(FsOptions::CACHE_SYMLINKS)
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::EXPORT_SUPPORT)
    .union(FsOptions::ZERO_MESSAGE_OPEN)
    .union(FsOptions::ZERO_MESSAGE_OPENDIR);

fn erofs<T>() -> io::Result<T> {
    Err(io::Error::from_raw_os_error(libc::EROFS))
}

impl FileSystem for RafsFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        Ok(capable & FS_OPTIONS)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.images.with(parent, |g, local| match g.rafs().lookup(local, name.to_bytes()) {
            Ok((ino, i)) => {
                let e = entry(g, ino, &i)?;
                if e.inode != ROOT_INO {
                    g.add_refs(1);
                }
                Ok(e)
            }
            Err(FsError::NotFound) => {
                // A negative entry the kernel may cache: an image never changes (a swap
                // invalidates the kernel's entries).
                let cfg = g.rafs().config();
                Ok(Entry {
                    inode: 0,
                    generation: 0,
                    attr: g.rafs().attr(0, &dummy_inode()),
                    attr_flags: 0,
                    attr_timeout: cfg.attr_timeout,
                    entry_timeout: cfg.entry_timeout,
                })
            }
            Err(e) => Err(fail(g.rafs(), local, "lookup", e)),
        })
    }

    fn forget(&self, _ctx: &Context, inode: u64, count: u64) {
        self.images.forget(inode, count);
    }

    fn batch_forget(&self, _ctx: &Context, requests: Vec<(u64, u64)>) {
        for (inode, count) in requests {
            self.images.forget(inode, count);
        }
    }

    fn getattr(&self, _ctx: &Context, inode: u64, _handle: Option<u64>) -> io::Result<(stat64, Duration)> {
        self.images.with(inode, |g, l| {
            let rafs = g.rafs();
            let i = rafs.inode(l).map_err(|e| fail(rafs, l, "getattr", e))?;
            Ok((rafs.attr(inode, &i), rafs.config().attr_timeout))
        })
    }

    fn setattr(
        &self,
        _: &Context,
        _: u64,
        _: stat64,
        _: Option<u64>,
        _: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        erofs()
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.images.with(inode, |g, l| g.rafs().readlink(l).map_err(|e| fail(g.rafs(), l, "readlink", e)))
    }

    fn symlink(&self, _: &Context, _: &CStr, _: u64, _: &CStr) -> io::Result<Entry> {
        erofs()
    }

    fn mknod(&self, _: &Context, _: u64, _: &CStr, _: u32, _: u32, _: u32) -> io::Result<Entry> {
        erofs()
    }

    fn mkdir(&self, _: &Context, _: u64, _: &CStr, _: u32, _: u32) -> io::Result<Entry> {
        erofs()
    }

    fn unlink(&self, _: &Context, _: u64, _: &CStr) -> io::Result<()> {
        erofs()
    }

    fn rmdir(&self, _: &Context, _: u64, _: &CStr) -> io::Result<()> {
        erofs()
    }

    fn rename(&self, _: &Context, _: u64, _: &CStr, _: u64, _: &CStr, _: u32) -> io::Result<()> {
        erofs()
    }

    fn link(&self, _: &Context, _: u64, _: u64, _: &CStr) -> io::Result<Entry> {
        erofs()
    }

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let acc = flags as i32 & libc::O_ACCMODE;
        if acc != libc::O_RDONLY || flags as i32 & libc::O_TRUNC != 0 {
            return erofs();
        }
        let (keep_cache, size) = self.images.with(inode, |g, l| {
            let i = g.rafs().inode(l).map_err(|e| fail(g.rafs(), l, "open", e))?;
            if i.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::EISDIR));
            }
            Ok((g.rafs().config().keep_cache, i.size))
        })?;
        if let Some(p) = self.images.passthrough() {
            let images = &self.images;
            let key = || images.with(inode, |g, l| g.rafs().content_key(l).map_err(|e| fail(g.rafs(), l, "open", e)));
            return Ok(p.open(inode, size, key));
        }
        if keep_cache {
            // ENOSYS tells the kernel it need not send open/release at all;
            // it then treats every open as FOPEN_KEEP_CACHE. The image is
            // immutable and handles carry no state, so nothing is lost and
            // each open saves two round trips.
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok((None, OpenOptions::empty(), None))
    }

    fn create(
        &self,
        _: &Context,
        _: u64,
        _: &CStr,
        _: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        erofs()
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let mut sink = ReplySink { w };
        let (n, at_end) = self
            .images
            .with(inode, |g, l| g.rafs().read(l, offset, size, &mut sink).map_err(|e| fail(g.rafs(), l, "read", e)))?;
        let images = &self.images;
        if let Some(p) = images.passthrough() {
            p.touch();
        }
        if !at_end {
            return Ok(n);
        }
        let cached = |ino| images.with(ino, |g, l| Ok(g.rafs().is_cached(l).unwrap_or(false))).unwrap_or(false);
        if let Some(p) = images.pusher() {
            p.file_done(inode, cached);
        }
        Ok(n)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _: &Context,
        _: u64,
        _: u64,
        _: &mut dyn ZeroCopyReader,
        _: u32,
        _: u64,
        _: Option<u64>,
        _: bool,
        _: u32,
        _: u32,
    ) -> io::Result<usize> {
        erofs()
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        _: &Context,
        inode: u64,
        _: u32,
        handle: u64,
        _: bool,
        _: bool,
        _: Option<u64>,
    ) -> io::Result<()> {
        if let Some(p) = self.images.passthrough() {
            p.release(inode, handle, || {
                let info = self.images.with(inode, |g, l| {
                    let rafs = g.rafs();
                    let key = rafs.content_key(l).map_err(|e| io::Error::other(e.to_string()))?;
                    Ok((rafs.is_cached(l).unwrap_or(false), key))
                });
                info.ok()
            });
        }
        Ok(())
    }

    fn statfs(&self, _ctx: &Context, _inode: u64) -> io::Result<statvfs64> {
        self.images.with(ROOT_INO, |g, _| Ok(g.rafs().statfs()))
    }

    fn setxattr(&self, _: &Context, _: u64, _: &CStr, _: &[u8], _: u32) -> io::Result<()> {
        erofs()
    }

    fn getxattr(&self, _ctx: &Context, inode: u64, name: &CStr, size: u32) -> io::Result<GetxattrReply> {
        let v = self
            .images
            .with(inode, |g, l| g.rafs().getxattr(l, name.to_bytes()).map_err(|e| fail(g.rafs(), l, "getxattr", e)))?;
        if size == 0 {
            Ok(GetxattrReply::Count(v.len() as u32))
        } else if v.len() > size as usize {
            Err(io::Error::from_raw_os_error(libc::ERANGE))
        } else {
            Ok(GetxattrReply::Value(v))
        }
    }

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        let v = self.images.with(inode, |g, l| g.rafs().listxattr(l).map_err(|e| fail(g.rafs(), l, "listxattr", e)))?;
        if size == 0 {
            Ok(ListxattrReply::Count(v.len() as u32))
        } else if v.len() > size as usize {
            Err(io::Error::from_raw_os_error(libc::ERANGE))
        } else {
            Ok(ListxattrReply::Names(v))
        }
    }

    fn removexattr(&self, _: &Context, _: u64, _: &CStr) -> io::Result<()> {
        erofs()
    }

    fn opendir(&self, _ctx: &Context, inode: u64, _flags: u32) -> io::Result<(Option<u64>, OpenOptions)> {
        let keep_cache = self.images.with(inode, |g, l| {
            let i = g.rafs().inode(l).map_err(|e| fail(g.rafs(), l, "opendir", e))?;
            if !i.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            Ok(g.rafs().config().keep_cache)
        })?;
        if keep_cache {
            // As for open: no opendir/releasedir round trips, and the kernel
            // caches listings (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR).
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok((None, OpenOptions::empty()))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.images.with(inode, |g, l| {
            let mut reply_err = None;
            let walked = g.rafs().visit_dir(l, offset, |k, e| {
                let ino = match g.outer(e.ino) {
                    Ok(ino) => ino,
                    Err(err) => {
                        reply_err = Some(err);
                        return false;
                    }
                };
                let d = DirEntry { ino, offset: k + 1, type_: e.dtype, name: &e.name };
                match add_entry(d) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(err) => {
                        reply_err = Some(err);
                        false
                    }
                }
            });
            walked.map_err(|e| fail(g.rafs(), l, "readdir", e))?;
            reply_err.map_or(Ok(()), Err)
        })
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let pusher = self.images.pusher();
        let mut small_files = Vec::new();
        let res = self.images.with(inode, |g, l| {
            let rafs = g.rafs();
            let mut reply_err = None;
            let walked = rafs.visit_dir(l, offset, |k, e| {
                let mut small = None;
                let ent = match rafs.inode(e.ino) {
                    Ok(i) => {
                        if pusher.is_some() && i.is_reg() && i.size > 0 && i.size <= push::MAX_FILE {
                            small = Some(i.size);
                        }
                        entry(g, e.ino, &i)
                    }
                    Err(err) => Err(fail(rafs, e.ino, "readdirplus", err)),
                };
                let ent = match ent {
                    Ok(ent) => ent,
                    Err(err) => {
                        reply_err = Some(err);
                        return false;
                    }
                };
                let d = DirEntry { ino: ent.inode, offset: k + 1, type_: e.dtype, name: &e.name };
                match add_entry(d, ent) {
                    Ok(0) => false,
                    Ok(_) => {
                        // The kernel takes a reference on every entry but `.` and `..`.
                        if ent.inode != ROOT_INO && !is_dot(&e.name) {
                            g.add_refs(1);
                        }
                        if let Some(size) = small {
                            small_files.push(push::Child { ino: ent.inode, size });
                        }
                        true
                    }
                    Err(err) => {
                        reply_err = Some(err);
                        false
                    }
                }
            });
            walked.map_err(|e| fail(rafs, l, "readdirplus", e))?;
            reply_err.map_or(Ok(()), Err)
        });
        if let Some(p) = pusher {
            p.listed(inode, offset, small_files);
        }
        res
    }

    fn releasedir(&self, _: &Context, _: u64, _: u32, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn access(&self, _ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.images.with(inode, |g, l| g.rafs().inode(l).map(drop).map_err(|e| fail(g.rafs(), l, "access", e)))?;
        if mask as i32 & libc::W_OK != 0 {
            return erofs();
        }
        // Permission bits are enforced by the kernel (`default_permissions`).
        Ok(())
    }
}

fn dummy_inode() -> nydus_format::reader::Inode {
    nydus_format::reader::Inode {
        nid: 0,
        offset: 0,
        compact: true,
        layout: 0,
        mode: 0,
        nlink: 1,
        size: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        ino: 0,
        i_u: 0,
        xattr_size: 0,
    }
}

/// Map a [`Result`] for callers outside the trait.
pub fn errno_of<T>(r: &Result<T>) -> Option<i32> {
    r.as_ref().err().map(FsError::errno)
}
