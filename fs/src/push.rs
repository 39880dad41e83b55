//! Pushing cached file data into the kernel's page cache ahead of reads.
//!
//! Every read of a file the kernel has not cached costs a FUSE round trip,
//! however small the file: a `tar` of an image with thousands of small files
//! spends most of its time waiting on those. Files are stored in the blob in
//! directory order, so one backend fetch (merged up to `amplify_io`) usually
//! brings in the files that follow the one being read in its directory, and
//! those are what a reader walking the tree asks for next.
//!
//! So, when a read reaches the end of a file, the files after it in its
//! directory whose data is *already in the blob cache* (nothing is fetched
//! for this) are handed to a background thread that writes them into the
//! kernel's page cache (`FUSE_NOTIFY_STORE`, through a [`PageCacheStore`]
//! the transport provides). Their later reads are page-cache hits with no
//! round trip. Only small files are pushed, each at most once per mount,
//! and at most [`BUDGET`] bytes per trigger; the queue is bounded and jobs
//! that find it full are dropped (pushing is only an optimisation).
//!
//! A transport without such notices (virtiofs) simply installs no store.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use nydus_storage::VecSink;

use crate::lock;
use crate::vfs::ImageSet;

/// Largest file pushed.
pub const MAX_FILE: u64 = 256 << 10;
/// Bytes pushed per trigger at most.
pub const BUDGET: u64 = 1 << 20;
/// Files pushed per trigger at most.
const MAX_FILES: usize = 64;
/// Jobs waiting at most; more are dropped.
const QUEUE: usize = 8;
/// Remembered files (directory positions and pushed marks) before the
/// tables are cleared; bounds memory on huge trees.
const MAX_TRACKED: usize = 1 << 16;

/// Writes data into the kernel's page cache of a file (the transport's side).
pub trait PageCacheStore: Send + Sync {
    /// Store `data` at `offset` of the file the kernel knows as `nodeid`.
    /// A file the kernel has no inode for is not an error.
    fn store(&self, nodeid: u64, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// A small regular file of a directory, by its exposed inode number.
#[derive(Clone, Copy, Debug)]
pub struct Child {
    /// Exposed inode number.
    pub ino: u64,
    /// File size.
    pub size: u64,
}

#[derive(Default)]
struct Tables {
    /// Small regular files of listed directories, in listing order.
    dirs: HashMap<u64, Vec<Child>>,
    /// A file's directory and position in it.
    pos: HashMap<u64, (u64, usize)>,
    /// Files pushed (or queued) already.
    pushed: HashSet<u64>,
}

/// See the module docs. One per mount.
pub struct Pusher {
    tables: Mutex<Tables>,
    tx: SyncSender<Vec<Child>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

impl Pusher {
    /// Start the pushing thread for the images of one mount; the kernel
    /// knows an exposed inode number `ino` as `nodeid_base | ino`. The
    /// thread ends when the pusher is dropped.
    pub fn start(images: &Arc<ImageSet>, store: Arc<dyn PageCacheStore>, nodeid_base: u64) -> io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let images = Arc::downgrade(images);
        std::thread::Builder::new().name("nydus-push".into()).spawn(move || {
            work(rx, |job| {
                let Some(images) = images.upgrade() else { return };
                for c in job {
                    if let Err(e) = push_file(&images, &*store, nodeid_base, c) {
                        tracing::debug!(ino = c.ino, error = %e, "page cache push stopped");
                        return;
                    }
                }
            })
        })?;
        Ok(Self { tables: Mutex::default(), tx })
    }

    /// Directory `dir` was listed from position `start` on: these are its
    /// small regular files from there, in order.
    pub fn listed(&self, dir: u64, start: u64, files: Vec<Child>) {
        let mut t = lock(&self.tables);
        if t.pos.len() > MAX_TRACKED || t.pushed.len() > MAX_TRACKED {
            *t = Tables::default();
        }
        let list = t.dirs.entry(dir).or_default();
        if start == 0 {
            list.clear();
        }
        let first = list.len();
        list.extend(files.iter().copied());
        for (k, c) in files.iter().enumerate() {
            t.pos.insert(c.ino, (dir, first + k));
        }
    }

    /// A read reached the end of file `ino`: queue the files after it in
    /// its directory that `cached` says are in the blob cache.
    pub fn file_done(&self, ino: u64, cached: impl Fn(u64) -> bool) {
        let job = {
            let mut t = lock(&self.tables);
            let Some(&(dir, at)) = t.pos.get(&ino) else { return };
            t.pushed.insert(ino);
            let next: Vec<Child> = match t.dirs.get(&dir) {
                Some(list) => list.iter().skip(at + 1).take(MAX_FILES).copied().collect(),
                None => return,
            };
            let mut job = Vec::new();
            let mut bytes = 0;
            for c in next {
                if t.pushed.contains(&c.ino) {
                    continue;
                }
                if bytes + c.size > BUDGET || !cached(c.ino) {
                    break;
                }
                bytes += c.size;
                t.pushed.insert(c.ino);
                job.push(c);
            }
            job
        };
        if job.is_empty() {
            return;
        }
        // A full queue drops the job: its files are read on demand, and may
        // be pushed by a later trigger.
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = self.tx.try_send(job) {
            let mut t = lock(&self.tables);
            for c in job {
                t.pushed.remove(&c.ino);
            }
        }
    }
}

fn work(rx: Receiver<Vec<Child>>, mut run: impl FnMut(Vec<Child>)) {
    while let Ok(job) = rx.recv() {
        run(job);
    }
}

fn push_file(images: &ImageSet, store: &dyn PageCacheStore, nodeid_base: u64, c: Child) -> io::Result<()> {
    let data = images.with(c.ino, |g, local| {
        let rafs = g.rafs();
        // Only what is cached: a chunk evicted meanwhile ends the push
        // rather than fetching.
        if !rafs.is_cached(local).unwrap_or(false) {
            return Ok(None);
        }
        let mut sink = VecSink(Vec::with_capacity(c.size as usize));
        rafs.read(local, 0, c.size as u32, &mut sink).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Some(sink.0))
    })?;
    match data {
        Some(d) if d.len() as u64 == c.size => store.store(nodeid_base | c.ino, 0, &d),
        _ => Ok(()),
    }
}
