//! FUSE invalidation notices: after a mount's image is swapped, the kernel must drop the
//! names and directory pages it cached from the old image (entries are cached for a day).
//!
//! A notice is a message written to `/dev/fuse` with `unique = 0` and the notice code in
//! the `error` field (`fuse_out_header`), followed by its body (see the kernel's
//! `include/uapi/linux/fuse.h`). fuse-backend-rs 0.14 has no API for them, so they are
//! written here on a clone of the session's descriptor.

use std::fs::File;
use std::io::{self, IoSlice, Write};

use nydus_fs::push::PageCacheStore;

const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
const FUSE_NOTIFY_STORE: i32 = 4;

/// Writes cache notices (invalidations, page-cache stores) to one FUSE session.
pub struct Notifier {
    dev: File,
}

impl Notifier {
    /// Use `dev`, a descriptor of the mounted session's `/dev/fuse`.
    pub fn new(dev: File) -> Self {
        Self { dev }
    }

    /// Forget the name `name` in directory `parent` (and, for a directory, the names below
    /// it). ENOENT (the kernel has nothing cached) is success.
    pub fn inval_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let mut body = Vec::with_capacity(16 + name.len() + 1);
        body.extend_from_slice(&parent.to_ne_bytes());
        body.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(name);
        body.push(0);
        self.send(FUSE_NOTIFY_INVAL_ENTRY, &[&body])
    }

    /// Drop the cached attributes and data (all of it) of inode `ino`.
    pub fn inval_inode(&self, ino: u64) -> io::Result<()> {
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&ino.to_ne_bytes());
        body.extend_from_slice(&0i64.to_ne_bytes());
        body.extend_from_slice(&(-1i64).to_ne_bytes());
        self.send(FUSE_NOTIFY_INVAL_INODE, &[&body])
    }

    /// Write one notice: the header, then `parts` as its body, in one `writev` (the
    /// device takes a message whole or not at all). ENOENT (the kernel has no such inode
    /// or name cached) is success.
    fn send(&self, code: i32, parts: &[&[u8]]) -> io::Result<()> {
        let len = 16 + parts.iter().map(|p| p.len()).sum::<usize>();
        let len = u32::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&len.to_ne_bytes());
        head[4..8].copy_from_slice(&code.to_ne_bytes());
        let mut iov = vec![IoSlice::new(&head)];
        iov.extend(parts.iter().map(|p| IoSlice::new(p)));
        match (&self.dev).write_vectored(&iov) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl PageCacheStore for Notifier {
    /// `FUSE_NOTIFY_STORE`: `fuse_notify_store_out` (nodeid, offset, size, padding),
    /// then the data.
    fn store(&self, nodeid: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&nodeid.to_ne_bytes());
        out[8..16].copy_from_slice(&offset.to_ne_bytes());
        out[16..20].copy_from_slice(&size.to_ne_bytes());
        self.send(FUSE_NOTIFY_STORE, &[&out, data])
    }
}
