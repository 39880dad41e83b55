//! Safe wrappers for the few syscalls std does not offer (at our MSRV).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Map a `-1`-on-error return value to the thread's `errno`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Safe wrapper for `flock(2)` with `LOCK_EX | LOCK_NB`.
///
/// Returns `Ok(false)` when another open file description holds the lock.
/// The lock lives as long as `file` stays open.
///
/// # Errors
/// Any other `flock` failure.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock only reads its integer arguments; the descriptor is
    // valid for as long as `file` is borrowed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match check(rc) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Safe wrapper for `fallocate(2)` with
/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: frees the blocks of
/// `[offset, offset + len)` (reads of the range then return zeros) without
/// changing the file size.
///
/// # Errors
/// `EOPNOTSUPP` on filesystems without hole punching; `InvalidInput` when
/// the range does not fit `off_t`; any other `fallocate` failure.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let off = libc::off_t::try_from(offset).map_err(|_| invalid())?;
    let len = libc::off_t::try_from(len).map_err(|_| invalid())?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is
    // valid for as long as `file` is borrowed.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn lock_is_exclusive_per_open_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(".lock");
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        assert!(try_lock_exclusive(&a).unwrap());
        assert!(!try_lock_exclusive(&b).unwrap());
        drop(a);
        assert!(try_lock_exclusive(&b).unwrap());
    }

    #[test]
    fn punch_frees_blocks_and_keeps_size() {
        let t = tempfile::tempdir().unwrap();
        let f = File::options().read(true).write(true).create(true).truncate(true).open(t.path().join("d")).unwrap();
        f.write_all_at(&[7u8; 65536], 0).unwrap();
        f.sync_all().unwrap();
        let before = f.metadata().unwrap().blocks();
        punch_hole(&f, 0, 32768).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 65536);
        assert!(m.blocks() < before, "{} !< {before}", m.blocks());
        let mut b = [1u8; 4];
        f.read_exact_at(&mut b, 100).unwrap();
        assert_eq!(b, [0; 4]);
    }
}
