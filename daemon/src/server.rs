//! The FUSE session: mount, worker threads, unmount.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::FuseSession;
use nydus_fs::RafsFs;

/// Events that end the daemon's wait.
pub enum Event {
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// A worker stopped (the filesystem was unmounted from outside).
    WorkerExit,
}

/// Detect a mountpoint left behind by a crashed daemon ("Transport endpoint
/// is not connected") and detach it so it can be mounted again.
pub fn clean_stale_mountpoint(mp: &Path) -> Result<()> {
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!("mountpoint {} is not a directory", mp.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(mountpoint = %mp.display(), "stale FUSE mount left by a previous daemon; detaching it");
            let c = std::ffi::CString::new(mp.as_os_str().as_bytes())?;
            // SAFETY: umount2 with a valid NUL-terminated path; no memory is shared.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("cannot detach stale mount {}", mp.display()));
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("mountpoint {} is not usable (create it first)", mp.display())),
    }
}

/// A mounted session and its worker threads.
pub struct Mounted {
    session: FuseSession,
    workers: Vec<JoinHandle<()>>,
}

impl Mounted {
    /// Mount `fs` at `mp` and start `threads` workers; each reports its exit on `events`.
    pub fn start(fs: RafsFs, mp: &Path, threads: usize, events: Sender<Event>) -> Result<Self> {
        let mut session = FuseSession::new(mp, "nydusfs", "rafs", true).map_err(|e| anyhow::anyhow!("{e}"))?;
        session.set_allow_other(true);
        session.mount().map_err(|e| anyhow::anyhow!("cannot mount {}: {e}", mp.display()))?;
        let server = Arc::new(Server::new(fs));
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            let mut ch = session.new_channel().map_err(|e| anyhow::anyhow!("cannot open FUSE channel: {e}"))?;
            let (server, events) = (server.clone(), events.clone());
            let h = std::thread::Builder::new().name(format!("fuse-{n}")).spawn(move || {
                loop {
                    match ch.get_request() {
                        Ok(Some((reader, writer))) => {
                            if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
                                tracing::debug!(error = %e, "FUSE reply failed");
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "FUSE channel closed");
                            break;
                        }
                    }
                }
                let _ = events.send(Event::WorkerExit);
            })?;
            workers.push(h);
        }
        Ok(Self { session, workers })
    }

    /// Unmount (if still mounted) and wait for the workers.
    pub fn stop(mut self) -> Result<()> {
        let umount = self.session.umount();
        let _ = self.session.wake();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        umount.map_err(|e| anyhow::anyhow!("unmount failed: {e}"))
    }
}
