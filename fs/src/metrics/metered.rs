//! [`MeteredFs`]: a [`FileSystem`] that records every request of the one
//! it wraps.

use std::any::Any;
use std::ffi::CStr;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, FsOptions, GetxattrReply, IoctlData, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter,
};
use fuse_backend_rs::api::BackendFileSystem;

use super::op::Op;
use super::stats::FsMetrics;

/// Serves the requests of `F` unchanged and records each one (operation,
/// inode, outcome, latency, read size) in an [`FsMetrics`].
pub struct MeteredFs<F> {
    inner: F,
    metrics: Arc<FsMetrics>,
}

impl<F> MeteredFs<F> {
    /// Record the requests served by `inner` into `metrics`.
    pub fn new(inner: F, metrics: Arc<FsMetrics>) -> Self {
        Self { inner, metrics }
    }

    /// The wrapped filesystem.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// The metrics being recorded.
    pub fn metrics(&self) -> &Arc<FsMetrics> {
        &self.metrics
    }

    #[inline]
    fn call<T>(&self, op: Op, ino: u64, f: impl FnOnce(&F) -> io::Result<T>) -> io::Result<T> {
        let c = self.metrics.begin(op, ino);
        let r = f(&self.inner);
        c.finish(succeeded(op, &r));
        r
    }

    #[inline]
    fn call_unit(&self, op: Op, ino: u64, f: impl FnOnce(&F)) {
        let c = self.metrics.begin(op, ino);
        f(&self.inner);
        c.finish(true);
    }
}

/// Whether a reply counts as a success. ENOSYS from `open`/`opendir` is the
/// "no open needed" answer a filesystem gives to let the kernel skip those
/// requests, not a failure.
fn succeeded<T>(op: Op, r: &io::Result<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => matches!(op, Op::Open | Op::Opendir) && e.raw_os_error() == Some(libc::ENOSYS),
    }
}

impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for MeteredFs<F> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        self.call(Op::Init, 0, |f| f.init(capable))
    }

    fn destroy(&self) {
        self.call_unit(Op::Destroy, 0, |f| f.destroy())
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.call(Op::Lookup, parent, |f| f.lookup(ctx, parent, name))
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.call_unit(Op::Forget, inode, |f| f.forget(ctx, inode, count))
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        self.call_unit(Op::BatchForget, 0, |f| f.batch_forget(ctx, requests))
    }

    fn getattr(&self, ctx: &Context, inode: u64, handle: Option<u64>) -> io::Result<(stat64, Duration)> {
        self.call(Op::Getattr, inode, |f| f.getattr(ctx, inode, handle))
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.call(Op::Setattr, inode, |f| f.setattr(ctx, inode, attr, handle, valid))
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.call(Op::Readlink, inode, |f| f.readlink(ctx, inode))
    }

    fn symlink(&self, ctx: &Context, linkname: &CStr, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.call(Op::Symlink, parent, |f| f.symlink(ctx, linkname, parent, name))
    }

    fn mknod(&self, ctx: &Context, parent: u64, name: &CStr, mode: u32, rdev: u32, umask: u32) -> io::Result<Entry> {
        self.call(Op::Mknod, parent, |f| f.mknod(ctx, parent, name, mode, rdev, umask))
    }

    fn mkdir(&self, ctx: &Context, parent: u64, name: &CStr, mode: u32, umask: u32) -> io::Result<Entry> {
        self.call(Op::Mkdir, parent, |f| f.mkdir(ctx, parent, name, mode, umask))
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.call(Op::Unlink, parent, |f| f.unlink(ctx, parent, name))
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.call(Op::Rmdir, parent, |f| f.rmdir(ctx, parent, name))
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.call(Op::Rename, olddir, |f| f.rename(ctx, olddir, oldname, newdir, newname, flags))
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.call(Op::Link, inode, |f| f.link(ctx, inode, newparent, newname))
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let r = self.call(Op::Open, inode, |f| f.open(ctx, inode, flags, fuse_flags));
        if r.is_ok() {
            self.metrics.opened(1);
        }
        r
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.call(Op::Create, parent, |f| f.create(ctx, parent, name, args))
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        let c = self.metrics.begin(Op::Read, inode);
        let r = self.inner.read(ctx, inode, handle, w, size, offset, lock_owner, flags);
        c.finish_read(offset, r.as_ref().ok().copied());
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.call(Op::Write, inode, |f| {
            f.write(ctx, inode, handle, r, size, offset, lock_owner, delayed_write, flags, fuse_flags)
        })
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.call(Op::Flush, inode, |f| f.flush(ctx, inode, handle, lock_owner))
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.call(Op::Fsync, inode, |f| f.fsync(ctx, inode, datasync, handle))
    }

    fn fallocate(&self, ctx: &Context, inode: u64, handle: u64, mode: u32, offset: u64, length: u64) -> io::Result<()> {
        self.call(Op::Fallocate, inode, |f| f.fallocate(ctx, inode, handle, mode, offset, length))
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        let r =
            self.call(Op::Release, inode, |f| f.release(ctx, inode, flags, handle, flush, flock_release, lock_owner));
        if r.is_ok() {
            self.metrics.opened(-1);
        }
        r
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.call(Op::Statfs, inode, |f| f.statfs(ctx, inode))
    }

    fn setxattr(&self, ctx: &Context, inode: u64, name: &CStr, value: &[u8], flags: u32) -> io::Result<()> {
        self.call(Op::Setxattr, inode, |f| f.setxattr(ctx, inode, name, value, flags))
    }

    fn getxattr(&self, ctx: &Context, inode: u64, name: &CStr, size: u32) -> io::Result<GetxattrReply> {
        self.call(Op::Getxattr, inode, |f| f.getxattr(ctx, inode, name, size))
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.call(Op::Listxattr, inode, |f| f.listxattr(ctx, inode, size))
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.call(Op::Removexattr, inode, |f| f.removexattr(ctx, inode, name))
    }

    fn opendir(&self, ctx: &Context, inode: u64, flags: u32) -> io::Result<(Option<u64>, OpenOptions)> {
        self.call(Op::Opendir, inode, |f| f.opendir(ctx, inode, flags))
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.call(Op::Readdir, inode, |f| f.readdir(ctx, inode, handle, size, offset, add_entry))
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.call(Op::Readdirplus, inode, |f| f.readdirplus(ctx, inode, handle, size, offset, add_entry))
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.call(Op::Fsyncdir, inode, |f| f.fsyncdir(ctx, inode, datasync, handle))
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.call(Op::Releasedir, inode, |f| f.releasedir(ctx, inode, flags, handle))
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.call(Op::Access, inode, |f| f.access(ctx, inode, mask))
    }

    fn lseek(&self, ctx: &Context, inode: u64, handle: u64, offset: u64, whence: u32) -> io::Result<u64> {
        self.call(Op::Lseek, inode, |f| f.lseek(ctx, inode, handle, offset, whence))
    }

    fn getlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        self.call(Op::Getlk, inode, |f| f.getlk(ctx, inode, handle, owner, lock, flags))
    }

    fn setlk(&self, ctx: &Context, inode: u64, handle: u64, owner: u64, lock: FileLock, flags: u32) -> io::Result<()> {
        self.call(Op::Setlk, inode, |f| f.setlk(ctx, inode, handle, owner, lock, flags))
    }

    fn setlkw(&self, ctx: &Context, inode: u64, handle: u64, owner: u64, lock: FileLock, flags: u32) -> io::Result<()> {
        self.call(Op::Setlkw, inode, |f| f.setlkw(ctx, inode, handle, owner, lock, flags))
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        flags: u32,
        cmd: u32,
        data: IoctlData,
        out_size: u32,
    ) -> io::Result<IoctlData<'_>> {
        let c = self.metrics.begin(Op::Ioctl, inode);
        let r = self.inner.ioctl(ctx, inode, handle, flags, cmd, data, out_size);
        c.finish(r.is_ok());
        r
    }

    fn bmap(&self, ctx: &Context, inode: u64, block: u64, blocksize: u32) -> io::Result<u64> {
        self.call(Op::Bmap, inode, |f| f.bmap(ctx, inode, block, blocksize))
    }

    fn poll(&self, ctx: &Context, inode: u64, handle: u64, khandle: u64, flags: u32, events: u32) -> io::Result<u32> {
        self.call(Op::Poll, inode, |f| f.poll(ctx, inode, handle, khandle, flags, events))
    }

    fn notify_reply(&self) -> io::Result<()> {
        self.inner.notify_reply()
    }

    fn id_remap(&self, ctx: &mut Context) -> io::Result<()> {
        self.inner.id_remap(ctx)
    }
}

/// Mounting delegates to the wrapped filesystem. `as_any` answers the
/// `MeteredFs` itself (that is the object a `Vfs` holds); reach the wrapped
/// one through [`MeteredFs::inner`].
impl<F: BackendFileSystem<Inode = u64, Handle = u64> + 'static> BackendFileSystem for MeteredFs<F> {
    fn mount(&self) -> io::Result<(Entry, u64)> {
        self.inner.mount()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
