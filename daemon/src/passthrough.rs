//! The transport's side of FUSE passthrough (see `nydus_fs::passthrough`):
//! asking for it in the `FUSE_INIT` reply, and registering backing files.
//!
//! fuse-backend-rs 0.14 cannot do either: its option flags stop before
//! `FUSE_PASSTHROUGH` (bit 37) and its INIT reply has no `max_stack_depth`.
//! So the INIT reply is patched (see `init.rs`): [`ask_passthrough`] sets
//! those two fields. Backing files are registered with the
//! `FUSE_DEV_IOC_BACKING_OPEN` ioctl on the session's device (the kernel
//! requires `CAP_SYS_ADMIN`; a refusal turns passthrough off for the mount
//! and files are read through the page cache as before; a shortage of
//! descriptors or memory only defers the file to a later open).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};

use nydus_fs::passthrough::BackingFiles;

use crate::init::{self, OUT_HEADER};

use crate::notify::Notifier;

/// `FUSE_PASSTHROUGH` (bit 37) as a `flags2` bit.
const PASSTHROUGH2: u32 = 1 << (37 - 32);
/// Stacking depth of the FUSE superblock: backing files must live on a
/// filesystem that stacks on nothing (ext4, xfs, ...), and overlayfs can
/// still stack on the mount.
const MAX_STACK_DEPTH: u32 = 1;

/// `_IOW(229, 1, struct fuse_backing_map)` and `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// Whether `FUSE_INIT` request `req` offers passthrough.
pub fn init_offers_passthrough(req: &[u8]) -> bool {
    init::offers(req, PASSTHROUGH2)
}

/// Turn on passthrough in `FUSE_INIT` reply `reply` (header included).
/// Returns false, leaving it alone, for an error reply or one too short to
/// carry the fields (an old protocol minor).
pub fn ask_passthrough(reply: &mut [u8]) -> bool {
    // fuse_init_out: max_stack_depth at 36.
    if !init::ask(reply, PASSTHROUGH2) {
        return false;
    }
    init::set_word(reply, OUT_HEADER + 36, MAX_STACK_DEPTH);
    true
}

/// Registers backing files on one FUSE session. Mounts get it before the
/// session starts; until [`BackingRegistry::attach`] it answers `EAGAIN`.
#[derive(Default)]
pub struct BackingRegistry {
    dev: OnceLock<File>,
    notifier: OnceLock<Arc<Notifier>>,
}

impl BackingRegistry {
    /// Use `dev`, a descriptor of the mounted session's `/dev/fuse`, and
    /// `notifier` (of the same session) to drop page caches.
    pub fn attach(&self, dev: File, notifier: Arc<Notifier>) {
        let _ = self.dev.set(dev);
        let _ = self.notifier.set(notifier);
    }

    fn dev(&self) -> io::Result<&File> {
        self.dev.get().ok_or_else(|| io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

/// `struct fuse_backing_map`.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

impl BackingFiles for BackingRegistry {
    fn open(&self, file: &File) -> io::Result<u32> {
        let map = BackingMap { fd: file.as_raw_fd(), flags: 0, padding: 0 };
        // SAFETY: the ioctl reads one `fuse_backing_map` from a live local
        // and the descriptors are open for the call.
        let id = unsafe { libc::ioctl(self.dev()?.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(id as u32)
    }

    fn close(&self, id: u32) {
        let Ok(dev) = self.dev() else { return };
        // SAFETY: the ioctl reads one u32 from a live local.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
        if rc < 0 {
            tracing::debug!(id, error = %io::Error::last_os_error(), "cannot drop a passthrough backing file");
        }
    }

    fn forget_pages(&self, nodeid: u64) {
        if let Some(Err(e)) = self.notifier.get().map(|n| n.inval_inode(nodeid)) {
            tracing::debug!(nodeid, error = %e, "cannot drop the page cache of a passed-through file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{opcode, set_word, word, FUSE_INIT, IN_HEADER};

    const INIT_EXT: u32 = 1 << 30;

    fn init_request(flags: u32, flags2: u32) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER + 64];
        set_word(&mut r, 4, FUSE_INIT);
        set_word(&mut r, IN_HEADER + 12, flags);
        set_word(&mut r, IN_HEADER + 16, flags2);
        r
    }

    #[test]
    fn passthrough_is_offered_only_with_init_ext() {
        assert_eq!(opcode(&init_request(0, 0)), Some(FUSE_INIT));
        assert!(init_offers_passthrough(&init_request(INIT_EXT | 1, PASSTHROUGH2)));
        assert!(!init_offers_passthrough(&init_request(1, PASSTHROUGH2)));
        assert!(!init_offers_passthrough(&init_request(INIT_EXT, 1)));
        assert!(!init_offers_passthrough(&[0u8; 20]));
    }

    #[test]
    fn reply_gets_the_flag_and_stack_depth() {
        let mut r = vec![0u8; OUT_HEADER + 64];
        set_word(&mut r, OUT_HEADER + 12, 0x41);
        set_word(&mut r, OUT_HEADER + 32, 0x8);
        assert!(ask_passthrough(&mut r));
        assert_eq!(word(&r, OUT_HEADER + 12), Some(0x41 | INIT_EXT));
        assert_eq!(word(&r, OUT_HEADER + 32), Some(0x8 | PASSTHROUGH2));
        assert_eq!(word(&r, OUT_HEADER + 36), Some(1));
        let mut err = r.clone();
        set_word(&mut err, 4, (-libc::EPROTO) as u32);
        let before = err.clone();
        assert!(!ask_passthrough(&mut err));
        assert_eq!(err, before);
        assert!(!ask_passthrough(&mut [0u8; OUT_HEADER + 24]));
    }

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // _IOW(type, nr, size) = 1 << 30 | size << 16 | type << 8 | nr
        let iow = |nr: u64, size: usize| (1u64 << 30 | (size as u64) << 16 | 229 << 8 | nr) as libc::c_ulong;
        assert_eq!(FUSE_DEV_IOC_BACKING_OPEN, iow(1, std::mem::size_of::<BackingMap>()));
        assert_eq!(FUSE_DEV_IOC_BACKING_CLOSE, iow(2, 4));
    }
}
