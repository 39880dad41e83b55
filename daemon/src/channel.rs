//! FUSE worker channels: one cloned `/dev/fuse` descriptor per worker,
//! read with blocking `read(2)`.
//!
//! fuse-backend-rs's own `FuseChannel` gives every worker a level-triggered
//! epoll on a shared non-blocking descriptor, so each request wakes every
//! idle worker and all but one of them read `EAGAIN` (about 3.6 wake-ups
//! per request with 4 workers). A blocking read on a descriptor cloned with
//! `FUSE_DEV_IOC_CLONE` waits in the kernel's exclusive queue: one request
//! wakes one worker. Replies go back on the descriptor the request came in
//! on, as the kernel requires for cloned devices.
//!
//! Workers end when the kernel ends the connection (`ENODEV` after the
//! unmount, or after an abort through `/sys/fs/fuse/connections`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, FuseSession, Reader};

/// Largest request the kernel sends: a 1 MiB write payload plus headers
/// (fuse-backend-rs negotiates max_write = 1 MiB).
const REQUEST_BUF: usize = (1 << 20) + 0x1000;

/// One worker's end of a FUSE connection.
pub struct BlockingChannel {
    file: File,
    req: Vec<u8>,
    reply: Vec<u8>,
}

impl BlockingChannel {
    /// A new channel on a clone of `session`'s device (blocking reads).
    pub fn new(session: &FuseSession) -> io::Result<Self> {
        let file = session.clone_fuse_file().map_err(|e| io::Error::other(format!("cannot clone /dev/fuse: {e}")))?;
        Ok(Self { file, req: vec![0; REQUEST_BUF], reply: vec![0; REQUEST_BUF] })
    }

    /// Wait for the next request; `None` once the connection has ended.
    pub fn next(&mut self) -> io::Result<Option<(Reader<'_>, FuseDevWriter<'_>)>> {
        let fd = self.file.as_raw_fd();
        loop {
            // SAFETY: `req` is a live, writable buffer of `req.len()` bytes
            // that nothing else references during the call.
            let n = unsafe { libc::read(fd, self.req.as_mut_ptr().cast(), self.req.len()) };
            if n >= 0 {
                let reader = Reader::from_fuse_buffer(FuseBuf::new(&mut self.req[..n as usize]))
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let writer = FuseDevWriter::new(fd, &mut self.reply).map_err(|e| io::Error::other(e.to_string()))?;
                return Ok(Some((reader, writer)));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Interrupted, or the request was withdrawn before we got it.
                Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
                Some(libc::ENODEV) => return Ok(None),
                _ => return Err(e),
            }
        }
    }
}
