//! FUSE invalidation notices: after a mount's image is swapped, the kernel must drop the
//! names and directory pages it cached from the old image (entries are cached for a day).
//!
//! A notice is a message written to `/dev/fuse` with `unique = 0` and the notice code in
//! the `error` field (`fuse_out_header`), followed by its body (see the kernel's
//! `include/uapi/linux/fuse.h`). fuse-backend-rs 0.14 has no API for them, so they are
//! written here on a clone of the session's descriptor.

use std::fs::File;
use std::io::{self, Write};

const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;

/// Writes invalidation notices to one FUSE session.
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
        self.send(FUSE_NOTIFY_INVAL_ENTRY, &body)
    }

    /// Drop the cached attributes and data (all of it) of inode `ino`.
    pub fn inval_inode(&self, ino: u64) -> io::Result<()> {
        let mut body = Vec::with_capacity(24);
        body.extend_from_slice(&ino.to_ne_bytes());
        body.extend_from_slice(&0i64.to_ne_bytes());
        body.extend_from_slice(&(-1i64).to_ne_bytes());
        self.send(FUSE_NOTIFY_INVAL_INODE, &body)
    }

    fn send(&self, code: i32, body: &[u8]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&code.to_ne_bytes());
        msg.extend_from_slice(&0u64.to_ne_bytes());
        msg.extend_from_slice(body);
        match (&self.dev).write(&msg) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
