//! The FUSE session: mount, worker threads, unmount.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::api::Vfs;
use fuse_backend_rs::transport::FuseSession;

use crate::channel::BlockingChannel;
use crate::uring;

/// Events that end the daemon's wait.
pub enum Event {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// A worker stopped (the filesystem was unmounted from outside).
    WorkerExit,
    /// `PUT /api/v1/daemon/exit`.
    Exit,
}

/// Detect a mountpoint left behind by a crashed daemon ("Transport endpoint
/// is not connected", or "Software caused connection abort" when the kernel
/// aborted the connection, as it does when a daemon serving it over io_uring
/// dies) and detach it so it can be mounted again.
///
/// `statfs` is asked because it always reaches the filesystem: a `stat`
/// may be answered from the kernel's attribute cache even when the daemon
/// behind the mount is gone.
pub fn clean_stale_mountpoint(mp: &Path) -> Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes())?;
    // SAFETY: statvfs64 writes into a zeroed struct we own, with a valid
    // NUL-terminated path; no memory is shared.
    let rc = unsafe {
        let mut st: libc::statvfs64 = std::mem::zeroed();
        libc::statvfs64(c.as_ptr(), &mut st)
    };
    let stale =
        rc != 0 && matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED));
    if stale {
        tracing::warn!(mountpoint = %mp.display(), "stale FUSE mount left by a previous daemon; detaching it");
        // SAFETY: umount2 with a valid NUL-terminated path; no memory is shared.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot detach stale mount {}", mp.display()));
        }
    }
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("mountpoint {} is not a directory", mp.display()),
        Err(e) => Err(e).with_context(|| format!("mountpoint {} is not usable (create it first)", mp.display())),
    }
}

/// A mounted session and its worker threads.
pub struct Mounted {
    session: FuseSession,
    workers: Vec<JoinHandle<()>>,
    /// The kernel's id of the connection (`/sys/fs/fuse/connections/ID`).
    conn_id: Option<u32>,
    /// Workers still running (each decrements it when it ends).
    running: Arc<AtomicUsize>,
}

/// How the FUSE connection is served.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// `/dev/fuse` workers; over io_uring also the queue threads in all
    /// (spread over the queues, at least two on each).
    pub threads: usize,
    /// Ask the kernel for FUSE passthrough.
    pub passthrough: bool,
    /// Serve requests over io_uring if the kernel offers it.
    pub io_uring: bool,
}

impl Mounted {
    /// Mount `fs` at `mp` and serve it as `transport` says; each `/dev/fuse` worker
    /// reports its exit on `events`. `setup` runs once the session is mounted and
    /// before any request is served, so what the filesystem needs from the session
    /// (notices, backing files) is there for the first request.
    pub fn start(
        fs: Arc<Vfs>,
        mp: &Path,
        transport: Transport,
        events: Sender<Event>,
        setup: impl FnOnce(&FuseSession),
    ) -> Result<Self> {
        let mut session = FuseSession::new(mp, "nydusfs", "rafs", true).map_err(|e| anyhow::anyhow!("{e}"))?;
        session.set_allow_other(true);
        session.mount().map_err(|e| anyhow::anyhow!("cannot mount {}: {e}", mp.display()))?;
        setup(&session);
        let server = Arc::new(Server::new(fs));
        let running = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        let Transport { threads, passthrough, io_uring } = transport;
        // Every queue must get its entries once the kernel agrees to io_uring (it
        // holds all requests until then), so the rings are made before asking.
        let queues = uring::queue_count();
        let per_queue = uring::threads_per_queue(threads, queues);
        let switch = uring::offered();
        let offered = io_uring && switch == Some(true);
        match switch {
            Some(false) if io_uring => tracing::info!(
                "FUSE over io_uring is off in the kernel; serving through /dev/fuse \
                 (echo Y > /sys/module/fuse/parameters/enable_uring turns it on for new mounts)"
            ),
            None if io_uring => tracing::debug!("this kernel has no FUSE over io_uring; serving through /dev/fuse"),
            _ => {}
        }
        let rings = if offered { queue_rings(queues, per_queue) } else { Vec::new() };
        let io_uring = !rings.is_empty();
        for n in 0..threads.max(1) {
            let mut ch = BlockingChannel::new(&session, passthrough, io_uring).context("cannot open a FUSE channel")?;
            let (server, events, running) = (server.clone(), events.clone(), running.clone());
            running.fetch_add(1, Ordering::SeqCst);
            let h = std::thread::Builder::new().name(format!("fuse-{n}")).spawn(move || {
                loop {
                    match ch.next() {
                        Ok(Some((reader, writer))) => {
                            if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
                                tracing::debug!(error = %e, "FUSE reply failed");
                            }
                            if let Err(e) = ch.finish() {
                                tracing::warn!(error = %e, "cannot answer FUSE_INIT");
                            }
                        }
                        Ok(None) => {
                            tracing::debug!(worker = n, "FUSE connection ended; worker stops");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "FUSE channel failed; worker stops");
                            break;
                        }
                    }
                }
                running.fetch_sub(1, Ordering::SeqCst);
                let _ = events.send(Event::WorkerExit);
            })?;
            workers.push(h);
        }
        let state = Arc::new(uring::RingState::new(queues, per_queue));
        for (n, ring) in rings.into_iter().enumerate() {
            let qid = n / per_queue;
            let dev = clone_dev(&session)?;
            let (server, state) = (server.clone(), state.clone());
            let name = format!("fuse-q{qid}.{}", n % per_queue);
            let h = std::thread::Builder::new().name(name).spawn(move || {
                uring::serve_queue(&server, &dev, qid, ring, &state);
            })?;
            workers.push(h);
        }
        // Only now: a stat of the mountpoint waits for the workers to answer FUSE_INIT.
        let dev = std::fs::metadata(mp).ok().map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        let conn_id = dev.map(|d| libc::minor(d));
        if let Some(dev) = dev {
            raise_readahead(dev, READ_AHEAD_KB);
        }
        Ok(Self { session, workers, conn_id, running })
    }

    /// Unmount (if still mounted) and wait for the workers. Workers end
    /// when the kernel ends the connection; if files are still open on the
    /// lazily detached mount, the connection is aborted after a grace
    /// period so the daemon can exit.
    pub fn stop(mut self) -> Result<()> {
        let umount = self.session.umount();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.running.load(Ordering::SeqCst) > 0 {
            if let Some(id) = self.conn_id {
                tracing::warn!(conn = id, "FUSE connection still in use after unmount; aborting it");
                abort_connection(id);
            }
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        umount.map_err(|e| anyhow::anyhow!("unmount failed: {e}"))
    }
}

/// Readahead window of the mount, in KiB: one full FUSE request (fuse-backend-rs
/// negotiates 1 MiB reads). The kernel starts FUSE mounts at 128 KiB, which
/// splits every sequential megabyte into eight round trips.
const READ_AHEAD_KB: u32 = 1024;

/// Raise the readahead of the mount's backing device (`dev`) to `kb`
/// KiB, unless it is already larger. Best effort: a kernel without the
/// sysfs knob only costs speed.
fn raise_readahead(dev: u64, kb: u32) {
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    let current = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
    if current.is_some_and(|c| c >= kb) {
        return;
    }
    if let Err(e) = std::fs::write(&path, kb.to_string()) {
        tracing::debug!(path, error = %e, "cannot raise the mount's readahead");
    }
}

/// Abort FUSE connection `id` through the fusectl filesystem, mounting it
/// at its usual place first if nobody has.
fn abort_connection(id: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let abort = dir.join(id.to_string()).join("abort");
    if !abort.exists() {
        let (src, target, fstype) = (c"fusectl", c"/sys/fs/fuse/connections", c"fusectl");
        // SAFETY: mount(2) with valid NUL-terminated strings and no data pointer.
        let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot mount fusectl to abort the FUSE connection");
        }
    }
    if let Err(e) = std::fs::write(&abort, b"1") {
        tracing::warn!(path = %abort.display(), error = %e, "cannot abort the FUSE connection");
    }
}

/// One io_uring per queue thread, or none if any cannot be made (then
/// requests go through `/dev/fuse` only).
fn queue_rings(queues: usize, per_queue: usize) -> Vec<uring::QueueRing> {
    if queues > uring::MAX_QUEUES {
        tracing::warn!(queues, "too many CPUs for FUSE io_uring queues; FUSE requests go through /dev/fuse");
        return Vec::new();
    }
    let n = queues * per_queue;
    match (0..n).map(|_| uring::QueueRing::new()).collect::<io::Result<Vec<_>>>() {
        Ok(rings) => rings,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up io_uring; FUSE requests go through /dev/fuse");
            Vec::new()
        }
    }
}

/// A new descriptor of `session`'s `/dev/fuse`.
pub fn clone_dev(session: &FuseSession) -> Result<std::fs::File> {
    session.clone_fuse_file().map_err(|e| anyhow::anyhow!("cannot clone the FUSE descriptor: {e}"))
}
