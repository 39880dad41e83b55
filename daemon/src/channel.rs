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
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};

use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, FuseSession, Reader};

use crate::{init, passthrough, uring};

/// Largest request the kernel sends: a 1 MiB write payload plus headers
/// (fuse-backend-rs negotiates max_write = 1 MiB).
const REQUEST_BUF: usize = (1 << 20) + 0x1000;

/// One worker's end of a FUSE connection.
pub struct BlockingChannel {
    file: File,
    req: Vec<u8>,
    reply: Vec<u8>,
    /// Ask for FUSE passthrough in the INIT reply.
    passthrough: bool,
    /// Ask for FUSE over io_uring in the INIT reply.
    io_uring: bool,
    /// The pipe the INIT reply is being written to (read end, write end).
    init_reply: Option<File>,
    init_writer: Option<File>,
}

impl BlockingChannel {
    /// A new channel on a clone of `session`'s device (blocking reads). If it
    /// gets `FUSE_INIT`, it asks for FUSE passthrough (`passthrough`) and FUSE
    /// over io_uring (`io_uring`) where the kernel offers them.
    pub fn new(session: &FuseSession, passthrough: bool, io_uring: bool) -> io::Result<Self> {
        let file = session.clone_fuse_file().map_err(|e| io::Error::other(format!("cannot clone /dev/fuse: {e}")))?;
        Ok(Self {
            file,
            req: vec![0; REQUEST_BUF],
            reply: vec![0; REQUEST_BUF],
            passthrough,
            io_uring,
            init_reply: None,
            init_writer: None,
        })
    }

    /// Call after the request returned by [`BlockingChannel::next`] was handled:
    /// sends an INIT reply that was held back to ask for passthrough or io_uring.
    pub fn finish(&mut self) -> io::Result<()> {
        drop(self.init_writer.take());
        let Some(mut pipe) = self.init_reply.take() else { return Ok(()) };
        let mut reply = Vec::new();
        pipe.read_to_end(&mut reply)?;
        if self.passthrough && passthrough::ask_passthrough(&mut reply) {
            tracing::info!("asked the kernel for FUSE passthrough");
        }
        if self.io_uring && uring::ask_io_uring(&mut reply) {
            tracing::info!("asked the kernel for FUSE over io_uring");
        }
        // SAFETY: `reply` is a live buffer of `reply.len()` bytes.
        let n = unsafe { libc::write(self.file.as_raw_fd(), reply.as_ptr().cast(), reply.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A pipe for the INIT reply: (read end, write end).
    fn pipe() -> io::Result<(File, File)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and owned by nothing else.
        Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
    }

    /// Wait for the next request; `None` once the connection has ended.
    pub fn next(&mut self) -> io::Result<Option<(Reader<'_>, FuseDevWriter<'_>)>> {
        let fd = self.file.as_raw_fd();
        loop {
            // SAFETY: `req` is a live, writable buffer of `req.len()` bytes
            // that nothing else references during the call.
            let n = unsafe { libc::read(fd, self.req.as_mut_ptr().cast(), self.req.len()) };
            if n >= 0 {
                let req = &mut self.req[..n as usize];
                let mut out_fd = fd;
                if init::opcode(req) == Some(init::FUSE_INIT)
                    && ((self.passthrough && passthrough::init_offers_passthrough(req))
                        || (self.io_uring && uring::init_offers_io_uring(req)))
                {
                    // The reply (80 bytes) fits in the pipe's buffer; `finish` closes
                    // the write end, reads the reply and sends it on.
                    let (r, w) = Self::pipe()?;
                    out_fd = w.as_raw_fd();
                    self.init_reply = Some(r);
                    self.init_writer = Some(w);
                }
                let reader =
                    Reader::from_fuse_buffer(FuseBuf::new(req)).map_err(|e| io::Error::other(e.to_string()))?;
                let writer =
                    FuseDevWriter::new(out_fd, &mut self.reply).map_err(|e| io::Error::other(e.to_string()))?;
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
