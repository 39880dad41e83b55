//! FUSE passthrough for large files that are wholly in the blob cache.
//!
//! The kernel caches FUSE file data in 4 KiB pages (it gives FUSE no large
//! folios), so reading a big file from the page cache runs at well under
//! half the speed of a local file. With FUSE passthrough (Linux 6.9+), the
//! reads and mmaps of an open file go straight to a backing file on a local
//! filesystem: no daemon, local speed.
//!
//! A backing file must hold the data at the file's own offsets, while the
//! blob cache keeps chunks at their blob offsets. So a regular file of at
//! least `min_size` bytes gets a plain copy of its own once it is entirely
//! in the blob cache: when its last open is released and all its chunks are
//! cached, a background thread, once the mount has been quiet for a moment,
//! copies it out of the cache (nothing is fetched for this) into `DIR/<key>`.
//! The key is a digest of the blob ids and chunk indexes the file is made
//! of, so copies survive restarts and images that share the file share the
//! copy. Later opens are answered with
//! `FOPEN_PASSTHROUGH` and the copy's backing id.
//!
//! The kernel refuses a passthrough open of an inode that is open through
//! its page cache, and the other way round (the open fails with EIO), so
//! opens are counted per inode: passthrough is offered only when no cached
//! open is outstanding, and an inode with passthrough opens keeps getting
//! them. The FUSE handle records how an open was answered, for its release.
//!
//! A transport without backing files (virtiofs) installs none.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuse_backend_rs::api::filesystem::OpenOptions;
use nydus_storage::ChunkSink;

use crate::lock;
use crate::vfs::ImageSet;

/// `FOPEN_PASSTHROUGH` (not among fuse-backend-rs's open flags).
const FOPEN_PASSTHROUGH: u32 = 1 << 7;
/// Handle of an open answered through the page cache.
pub const FH_CACHED: u64 = 1;
/// Handle of an open answered with passthrough.
pub const FH_PASSTHROUGH: u64 = 2;
/// Copies waiting at most; more are dropped (a later read may queue them).
const QUEUE: usize = 4;
/// Bytes copied per read of the file while making its copy.
const STEP: u32 = 4 << 20;
/// A copy starts once the mount has served no request for [`START_QUIET`]
/// (or after [`START_CAP`] whatever the load), and pauses between steps
/// until it has been quiet for [`STEP_QUIET`] (at most [`STEP_CAP`]): copies
/// must not slow the reads they are meant to speed up.
const START_QUIET: Duration = Duration::from_secs(1);
const START_CAP: Duration = Duration::from_secs(30);
const STEP_QUIET: Duration = Duration::from_millis(100);
const STEP_CAP: Duration = Duration::from_secs(1);

/// Registers backing files with the kernel (the transport's side).
pub trait BackingFiles: Send + Sync {
    /// Register `file`; returns its backing id. `EAGAIN` means "not now"
    /// (the file is read through the page cache this time); other errors
    /// turn passthrough off for the mount.
    fn open(&self, file: &File) -> io::Result<u32>;
    /// Drop a registration.
    fn close(&self, id: u32);
    /// Drop the kernel's page cache of the file it knows as `nodeid` (its
    /// pages are not read again once opens pass through).
    fn forget_pages(&self, nodeid: u64);
}

/// How a mount uses passthrough.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where copies live; `None`: answer opens, never make copies.
    pub dir: Option<PathBuf>,
    /// Smallest file copied.
    pub min_size: u64,
    /// Other opens keep the page cache.
    pub keep_cache: bool,
    /// The kernel knows exposed inode `ino` as `nodeid_base | ino`.
    pub nodeid_base: u64,
}

/// A large file that is open, or has a copy.
struct FileState {
    /// File size (at least `min_size`).
    size: u64,
    /// Opens answered through the page cache and not yet released.
    cached: u32,
    /// Opens answered with passthrough and not yet released.
    through: u32,
    /// The registered copy.
    backing: Option<u32>,
}

#[derive(Default)]
struct State {
    files: HashMap<u64, FileState>,
    /// Keys being copied.
    queued: HashSet<String>,
    /// Backing ids of registered copies, by key.
    ids: HashMap<String, u32>,
    /// Keys whose copy failed: not tried again by this mount.
    failed: HashSet<String>,
}

/// A file to copy: its exposed inode number, size and key.
struct Job {
    ino: u64,
    size: u64,
    key: String,
}

/// See the module docs. One per mount.
pub struct Passthrough {
    /// Where copies live; `None`: answer opens, never make copies.
    dir: Option<PathBuf>,
    min_size: u64,
    nodeid_base: u64,
    /// Flags of opens answered through the page cache.
    cached_opts: OpenOptions,
    backing: Arc<dyn BackingFiles>,
    state: Mutex<State>,
    tx: Option<SyncSender<Job>>,
    /// Set when the kernel refused a backing file: passthrough is off.
    refused: AtomicBool,
    /// Set once a backing file could not be registered for lack of a
    /// resource (logged once; later opens try again).
    short_warned: AtomicBool,
    activity: Arc<Activity>,
}

/// When the mount last served a request (shared with the copying thread,
/// which waits for quiet without keeping the images alive).
struct Activity {
    /// Milliseconds since `epoch`.
    last_use: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_use.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Wait until the mount has been quiet for `quiet`, or for `cap` at most.
    fn wait_idle(&self, quiet: Duration, cap: Duration) {
        let deadline = Instant::now() + cap;
        loop {
            let now = Instant::now();
            let since = Duration::from_millis(self.now_ms().saturating_sub(self.last_use.load(Ordering::Relaxed)));
            if since >= quiet || now >= deadline {
                return;
            }
            std::thread::sleep((quiet - since).min(deadline - now));
        }
    }
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough").field("dir", &self.dir).field("min_size", &self.min_size).finish()
    }
}

impl Passthrough {
    /// Passthrough for the images of one mount (see [`Settings`]).
    pub fn start(images: &Arc<ImageSet>, backing: Arc<dyn BackingFiles>, settings: Settings) -> io::Result<Self> {
        let Settings { dir, min_size, keep_cache, nodeid_base } = settings;
        let activity = Arc::new(Activity { last_use: AtomicU64::new(0), epoch: Instant::now() });
        let tx = match &dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                remove_partial_copies(d);
                let (tx, rx) = sync_channel::<Job>(QUEUE);
                let (images, d, act) = (Arc::downgrade(images), d.clone(), activity.clone());
                std::thread::Builder::new().name("nydus-copy".into()).spawn(move || {
                    while let Ok(job) = rx.recv() {
                        act.wait_idle(START_QUIET, START_CAP);
                        let Some(images) = images.upgrade() else { return };
                        let Some(p) = images.passthrough() else { return };
                        let res = p.make_copy(&images, &d, &job);
                        let mut st = lock(&p.state);
                        st.queued.remove(&job.key);
                        if let Err(e) = res {
                            tracing::warn!(ino = job.ino, error = %e, "cannot make the passthrough copy of a file; it is read through the page cache");
                            st.failed.insert(job.key);
                        }
                    }
                })?;
                Some(tx)
            }
            None => None,
        };
        let cached_opts = if keep_cache { OpenOptions::KEEP_CACHE } else { OpenOptions::empty() };
        Ok(Self {
            dir,
            min_size,
            nodeid_base,
            cached_opts,
            backing,
            state: Mutex::default(),
            tx,
            refused: AtomicBool::new(false),
            short_warned: AtomicBool::new(false),
            activity,
        })
    }

    /// The mount served a read (copies wait for a quiet moment).
    pub fn touch(&self) {
        self.activity.touch();
    }

    /// Answer an open of regular file `ino` of `size` bytes; `key` names
    /// its copy (computed only for large files).
    pub fn open(
        &self,
        ino: u64,
        size: u64,
        key: impl FnOnce() -> io::Result<String>,
    ) -> (Option<u64>, OpenOptions, Option<u32>) {
        self.touch();
        if size < self.min_size {
            // Never passed through, so not counted (handle 0).
            return (None, self.cached_opts, None);
        }
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let f = st.files.entry(ino).or_insert(FileState { size, cached: 0, through: 0, backing: None });
        if f.through == 0 && (f.cached > 0 || self.refused.load(Ordering::Relaxed)) {
            f.cached += 1;
            return (Some(FH_CACHED), self.cached_opts, None);
        }
        if f.backing.is_none() && self.dir.is_some() {
            if let Ok(key) = key() {
                f.backing = match st.ids.get(&key) {
                    Some(&id) => Some(id),
                    None => self.register(&key),
                };
                if let Some(id) = f.backing {
                    st.ids.insert(key, id);
                }
            }
        }
        match f.backing {
            Some(id) => {
                f.through += 1;
                // SAFETY: bitflags 1.x only marks this unsafe because the value may carry
                // bits the type does not name; the server passes them to the kernel as is.
                let opts = unsafe { OpenOptions::from_bits_unchecked(FOPEN_PASSTHROUGH) };
                (Some(FH_PASSTHROUGH), opts, Some(id))
            }
            None => {
                f.cached += 1;
                (Some(FH_CACHED), self.cached_opts, None)
            }
        }
    }

    /// Register the copy named by `key` if it exists.
    fn register(&self, key: &str) -> Option<u32> {
        let file = File::open(self.dir.as_deref()?.join(key)).ok()?;
        self.register_file(&file)
    }

    fn register_file(&self, file: &File) -> Option<u32> {
        match self.backing.open(file) {
            Ok(id) => Some(id),
            // Not ready yet (the session is still starting): try again next open.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
            // Out of descriptors or memory for now: this open is served through
            // the page cache and a later one tries again.
            Err(e) if is_shortage(&e) => {
                if !self.short_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot register a passthrough backing file for now; will try again at a later open");
                }
                None
            }
            Err(e) => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the kernel refused a passthrough backing file; large files are read through the page cache");
                }
                None
            }
        }
    }

    /// Make the copy of `job` in `dir`. It is registered as soon as it is
    /// written (the page cache holds it); it gets its name, which makes it
    /// usable after a restart, only once it is on disk.
    fn make_copy(&self, images: &ImageSet, dir: &Path, job: &Job) -> io::Result<()> {
        let (avail, total) = free_space(dir)?;
        if avail < job.size.saturating_add(total / 10) {
            return Err(io::Error::other(format!(
                "{} MiB free in {}: a copy of {} MiB would leave less than 10 % of the filesystem free",
                avail >> 20,
                dir.display(),
                job.size >> 20
            )));
        }
        let tmp = dir.join(format!(".{}.{}", job.key, std::process::id()));
        let res = copy_file(images, &tmp, job, || self.activity.wait_idle(STEP_QUIET, STEP_CAP)).and_then(|file| {
            if let Some(id) = self.register_file(&file) {
                lock(&self.state).ids.insert(job.key.clone(), id);
                self.backing.forget_pages(self.nodeid_base | job.ino);
            }
            file.sync_data()?;
            std::fs::rename(&tmp, dir.join(&job.key))
        });
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// An open of `ino` answered with handle `fh` was released. If it was the
    /// last open of a large file that has no copy yet, `info` says whether
    /// the file is wholly in the blob cache and gives its key; if it is
    /// cached, its copy is queued. (Asking at release rather than when a read
    /// reaches the end: reads ahead may still be in flight then.)
    pub fn release(&self, ino: u64, fh: u64, info: impl FnOnce() -> Option<(bool, String)>) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(f) = st.files.get_mut(&ino) else { return };
        match fh {
            FH_CACHED => f.cached = f.cached.saturating_sub(1),
            FH_PASSTHROUGH => f.through = f.through.saturating_sub(1),
            _ => {}
        }
        if f.cached > 0 || f.through > 0 || f.backing.is_some() {
            return;
        }
        let size = f.size;
        st.files.remove(&ino);
        let Some(tx) = &self.tx else { return };
        if self.refused.load(Ordering::Relaxed) {
            return;
        }
        let Some((true, key)) = info() else { return };
        let exists = st.ids.contains_key(&key) || self.dir.as_deref().is_some_and(|d| d.join(&key).exists());
        if exists || st.failed.contains(&key) || !st.queued.insert(key.clone()) {
            return;
        }
        if tx.try_send(Job { ino, size, key: key.clone() }).is_err() {
            st.queued.remove(&key);
        }
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        for &id in lock(&self.state).ids.values() {
            self.backing.close(id);
        }
    }
}

/// Bytes available to us and total bytes of the filesystem holding `dir`.
fn free_space(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs is plain old data, filled in by the call before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a live, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Remove the copies a stopped daemon left half made (named `.KEY.PID`; the
/// cache directory is locked, so no other daemon is making them).
fn remove_partial_copies(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().as_encoded_bytes().starts_with(b".") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Copy file `job.ino` out of the blob cache into a new file at `path`,
/// calling `pause` before each step.
fn copy_file(images: &ImageSet, path: &Path, job: &Job, pause: impl Fn()) -> io::Result<File> {
    images.with(job.ino, |g, local| {
        let rafs = g.rafs();
        let out = File::options().read(true).write(true).create_new(true).open(path)?;
        let mut sink = FileSink { out: &out, at: 0, buf: Vec::new() };
        while sink.at < job.size {
            pause();
            // Only what is cached: a chunk evicted meanwhile ends the copy
            // rather than fetching it.
            if !rafs.is_cached(local).unwrap_or(false) {
                return Err(io::Error::other("a chunk left the blob cache during the copy"));
            }
            let step = STEP.min((job.size - sink.at) as u32);
            let before = sink.at;
            rafs.read(local, before, step, &mut sink).map_err(|e| io::Error::other(e.to_string()))?;
            if sink.at != before + step as u64 {
                return Err(io::Error::other("short read from the blob cache"));
            }
        }
        Ok(out)
    })
}

/// Writes chunk data into a file, in order. Data is copied through a buffer
/// in whole chunks rather than spliced (`copy_file_range` moves it a page at a
/// time): large writes let the filesystem cache the copy in large folios,
/// which is what makes reading it faster than the FUSE page cache.
struct FileSink<'a> {
    out: &'a File,
    at: u64,
    buf: Vec<u8>,
}

impl ChunkSink for FileSink<'_> {
    fn write_from_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        self.buf.resize(len, 0);
        file.read_exact_at(&mut self.buf[..len], offset)?;
        self.out.write_all_at(&self.buf[..len], self.at)?;
        self.at += len as u64;
        Ok(len)
    }

    fn write_bytes(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out.write_all_at(data, self.at)?;
        self.at += data.len() as u64;
        Ok(data.len())
    }
}

/// Whether `e` is a passing shortage (descriptors, memory) rather than the
/// kernel refusing passthrough for good (no `CAP_SYS_ADMIN`, a stacked or
/// unsupported backing filesystem).
fn is_shortage(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shortages_leave_passthrough_on() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EINTR] {
            assert!(is_shortage(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        for errno in [libc::EPERM, libc::EINVAL, libc::ELOOP, libc::EOPNOTSUPP, libc::ENOTTY] {
            assert!(!is_shortage(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(!is_shortage(&io::Error::other("no errno")));
    }

    #[test]
    fn free_space_is_at_most_the_total() {
        let t = tempfile::tempdir().unwrap();
        let (avail, total) = free_space(t.path()).unwrap();
        assert!(total > 0 && avail <= total, "{avail} {total}");
        assert!(free_space(&t.path().join("missing")).is_err());
    }

    #[test]
    fn file_sink_copies_between_files_and_from_memory() {
        let t = tempfile::tempdir().unwrap();
        let src = File::create(t.path().join("src")).unwrap();
        src.write_all_at(b"0123456789", 0).unwrap();
        let src = File::open(t.path().join("src")).unwrap();
        let out = File::create(t.path().join("out")).unwrap();
        let mut s = FileSink { out: &out, at: 0, buf: Vec::new() };
        assert_eq!(s.write_from_file(&src, 2, 5).unwrap(), 5);
        assert_eq!(s.write_bytes(b"ab").unwrap(), 2);
        assert_eq!(s.write_from_file(&src, 0, 1).unwrap(), 1);
        assert_eq!(std::fs::read(t.path().join("out")).unwrap(), b"23456ab0");
    }
}
