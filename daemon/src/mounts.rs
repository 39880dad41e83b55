//! The images served under the daemon's one FUSE mount: mount, swap (remount), umount.
//!
//! All images share one `fuse-backend-rs` [`Vfs`]: a pseudo directory tree with each image
//! at a path (`/` for the image given on the command line). Loading an image (reading the
//! bootstrap, opening blob caches) happens outside the table lock, so a slow mount does not
//! hold up requests about other mounts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use fuse_backend_rs::api::{BackFileSystem, Vfs};
use nydus_fs::metrics::{rafs_path_resolver, FsMetrics, MeteredFs, MetricsOptions, PathResolver};
use nydus_fs::passthrough;
use nydus_fs::rafs::ROOT_INO;
use nydus_fs::{ImageSet, Rafs, RafsFs};
use nydus_storage::{new_backend, BlobBackend, BlobCacheManager, CacheKind, Prefetcher};
use thiserror::Error;

use crate::config::{self, DaemonConfig};
use crate::notify::Notifier;
use crate::passthrough::BackingRegistry;
use crate::state::{DaemonState, MountState};

/// Why a mount request failed (each maps to an HTTP status).
#[derive(Debug, Error)]
pub enum MountError {
    /// Something is mounted there already.
    #[error("{0} is already mounted; use PUT to replace its image or DELETE to unmount it")]
    Exists(String),
    /// The request clashes with another mount's settings.
    #[error("{0}")]
    Conflict(String),
    /// Nothing is mounted there.
    #[error("nothing is mounted at {0}")]
    NotMounted(String),
    /// The request cannot be honoured as given.
    #[error("{0}")]
    Invalid(String),
    /// Mounting or swapping failed inside the daemon.
    #[error("{0}")]
    Failed(String),
}

impl MountError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Exists(_) | Self::Conflict(_) => 409,
            Self::NotMounted(_) => 404,
            Self::Invalid(_) => 400,
            Self::Failed(_) => 500,
        }
    }
}

/// A loaded image, ready to be mounted or swapped in.
pub struct Loaded {
    /// The configuration it was loaded with.
    pub cfg: DaemonConfig,
    /// The filesystem.
    pub rafs: Arc<Rafs>,
    /// Its blob cache.
    pub cache: Arc<BlobCacheManager>,
    /// The backend behind the cache.
    pub backend: Arc<dyn BlobBackend>,
}

/// One live mount.
pub struct Mount {
    /// As requested.
    pub state: MountState,
    /// The configuration in force.
    pub cfg: DaemonConfig,
    /// The images (swapped by a remount).
    pub images: Arc<ImageSet>,
    /// The blob cache of the current image.
    pub cache: Arc<BlobCacheManager>,
    /// The backend of the current image.
    pub backend: Arc<dyn BlobBackend>,
    /// Filesystem metrics (kept across remounts).
    pub metrics: Arc<FsMetrics>,
    /// The Vfs index (the top byte of the kernel's inode numbers of this mount).
    fs_idx: u8,
    prefetcher: Option<Prefetcher>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(p) = self.prefetcher.take() {
            p.stop();
        }
    }
}

/// A blob cache directory and who uses it.
struct SharedCache {
    backend_cfg: nydus_storage::BackendConfig,
    cache: nydus_storage::CacheConfig,
    manager: Weak<BlobCacheManager>,
    backend: Weak<dyn BlobBackend>,
}

/// The mount table.
pub struct Mounts {
    vfs: Arc<Vfs>,
    notifier: Mutex<Option<Arc<Notifier>>>,
    table: Mutex<BTreeMap<String, Mount>>,
    /// Blob caches by work directory: a cache directory is locked by one manager, so
    /// mounts with the same cache and backend settings share it.
    caches: Mutex<HashMap<PathBuf, SharedCache>>,
    /// Backing files of FUSE passthrough, when the daemon asked the kernel for it: every
    /// mount then answers opens (see `nydus_fs::passthrough`).
    backing: Option<Arc<BackingRegistry>>,
}

impl Mounts {
    /// An empty table over `vfs`; with `backing`, mounts use FUSE passthrough.
    pub fn new(vfs: Arc<Vfs>, backing: Option<Arc<BackingRegistry>>) -> Self {
        Self {
            vfs,
            notifier: Mutex::new(None),
            table: Mutex::new(BTreeMap::new()),
            caches: Mutex::new(HashMap::new()),
            backing,
        }
    }

    /// Where to send kernel cache notices once the session is up: invalidations, and the
    /// page-cache pushes of every mount (see `nydus_fs::push`).
    pub fn set_notifier(&self, n: Arc<Notifier>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = Some(n.clone());
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for m in t.values().filter(|m| m.cfg.fs.keep_cache) {
            enable_push(&n, &m.images, m.fs_idx);
        }
    }

    /// Run `f` on the mount table.
    pub fn with_table<T>(&self, f: impl FnOnce(&BTreeMap<String, Mount>) -> T) -> T {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        f(&t)
    }

    /// The plain state of every mount.
    pub fn state(&self) -> DaemonState {
        self.with_table(|t| DaemonState { mounts: t.iter().map(|(k, m)| (k.clone(), m.state.clone())).collect() })
    }

    /// Read the configuration and bootstrap of `state` and open its blob caches.
    pub fn load(&self, state: &MountState, cfg: Option<DaemonConfig>) -> Result<Loaded, MountError> {
        if state.fs_type != "rafs" {
            return Err(MountError::Invalid(format!("fs_type {:?} is not supported (only \"rafs\")", state.fs_type)));
        }
        let cfg = match cfg {
            Some(c) => c,
            None => {
                let (cfg, warnings) =
                    config::parse_str(&state.config, "mount config").map_err(|e| MountError::Invalid(e.to_string()))?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                cfg
            }
        };
        let path = Path::new(&state.source);
        let data = std::fs::read(path)
            .map_err(|e| MountError::Invalid(format!("cannot read bootstrap {}: {e}", path.display())))?;
        let boot = nydus_format::v5::load(data)
            .map_err(|e| MountError::Invalid(format!("invalid bootstrap {}: {e}", path.display())))?;
        let (cache, backend) = self.cache_for(&cfg)?;
        let rafs = Rafs::new(boot, &cache, cfg.fs.clone())
            .map_err(|e| MountError::Failed(format!("cannot open the image's blobs: {e}")))?;
        Ok(Loaded { cfg, rafs: Arc::new(rafs), cache, backend })
    }

    /// The blob cache for `cfg`: the one already open on its work directory, or a new one.
    fn cache_for(&self, cfg: &DaemonConfig) -> Result<(Arc<BlobCacheManager>, Arc<dyn BlobBackend>), MountError> {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|_, c| c.manager.strong_count() > 0);
        if let Some(c) = caches.get(&cfg.cache.work_dir) {
            if let (Some(m), Some(b)) = (c.manager.upgrade(), c.backend.upgrade()) {
                if c.backend_cfg != cfg.backend || c.cache != cfg.cache {
                    return Err(MountError::Conflict(format!(
                        "cache work_dir {} is used by another mount with different backend or cache settings; give this image its own work_dir",
                        cfg.cache.work_dir.display()
                    )));
                }
                return Ok((m, b));
            }
        }
        let backend =
            new_backend(&cfg.backend).map_err(|e| MountError::Failed(format!("cannot set up the backend: {e}")))?;
        let m = BlobCacheManager::new(cfg.cache.clone(), backend.clone())
            .map_err(|e| MountError::Failed(format!("cannot set up the blob cache: {e}")))?;
        let shared = SharedCache {
            backend_cfg: cfg.backend.clone(),
            cache: cfg.cache.clone(),
            manager: Arc::downgrade(&m),
            backend: Arc::downgrade(&backend),
        };
        caches.insert(cfg.cache.work_dir.clone(), shared);
        Ok((m, backend))
    }

    /// Mount a loaded image at `mp`.
    pub fn mount(&self, mp: &str, state: MountState, loaded: Loaded) -> Result<(), MountError> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.contains_key(mp) {
            return Err(MountError::Exists(mp.to_string()));
        }
        let fs = RafsFs::new(loaded.rafs.clone());
        let images = fs.images().clone();
        let metrics = FsMetrics::new(mp, MetricsOptions::from_config(&loaded.cfg.fs));
        metrics.set_path_resolver(path_resolver(&loaded.rafs, 0));
        let boxed: BackFileSystem = Box::new(MeteredFs::new(fs, metrics.clone()));
        let fs_idx =
            self.vfs.mount(boxed, mp).map_err(|e| MountError::Failed(format!("cannot mount at {mp}: {e:?}")))?;
        // Pushed pages would be dropped at the next open without keep_cache.
        if let Some(n) =
            self.notifier.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|_| loaded.cfg.fs.keep_cache)
        {
            enable_push(n, &images, fs_idx);
        }
        if let Some(b) = &self.backing {
            enable_passthrough(b, &images, &loaded.cfg, fs_idx);
        }
        let prefetcher = start_prefetch(&loaded.rafs, &loaded.cfg.fs.prefetch, &state.prefetch_files);
        self.invalidate_path(mp);
        tracing::info!(mountpoint = %mp, bootstrap = %state.source, blobs = loaded.rafs.blobs().len(), "image mounted");
        t.insert(
            mp.to_string(),
            Mount {
                state,
                cfg: loaded.cfg,
                images,
                cache: loaded.cache,
                backend: loaded.backend,
                metrics,
                fs_idx,
                prefetcher,
            },
        );
        Ok(())
    }

    /// Replace the image of the live mount `mp`. Files open on the old image keep reading
    /// it; the kernel's cached names are invalidated so new opens see the new image.
    pub fn remount(&self, mp: &str, state: MountState, loaded: Loaded) -> Result<(), MountError> {
        let (old_root, fs_idx, old_prefetch) = {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let m = t.get_mut(mp).ok_or_else(|| MountError::NotMounted(mp.to_string()))?;
            let old = m.images.current();
            let gen = m.images.swap(loaded.rafs.clone());
            m.metrics.set_path_resolver(path_resolver(&loaded.rafs, gen));
            let old_prefetch = m.prefetcher.take();
            m.prefetcher = start_prefetch(&loaded.rafs, &loaded.cfg.fs.prefetch, &state.prefetch_files);
            m.state = state;
            m.cfg = loaded.cfg;
            m.cache = loaded.cache;
            m.backend = loaded.backend;
            (old, m.fs_idx, old_prefetch)
        };
        // Outside the table lock: stopping waits for fetches in progress.
        if let Some(p) = old_prefetch {
            p.stop();
        }
        self.invalidate(mp, fs_idx, &[&old_root, &loaded.rafs]);
        tracing::info!(mountpoint = %mp, bootstrap = %self.with_table(|t| t[mp].state.source.clone()), "image replaced");
        Ok(())
    }

    /// Unmount `mp`.
    pub fn umount(&self, mp: &str) -> Result<(), MountError> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let m = t.remove(mp).ok_or_else(|| MountError::NotMounted(mp.to_string()))?;
        let roots = [m.images.current()];
        let fs_idx = m.fs_idx;
        if let Err(e) = self.vfs.umount(mp) {
            t.insert(mp.to_string(), m);
            return Err(MountError::Failed(format!("cannot unmount {mp}: {e:?}")));
        }
        drop(t);
        let refs: Vec<&Arc<Rafs>> = roots.iter().collect();
        self.invalidate(mp, fs_idx, &refs);
        self.invalidate_path(mp);
        tracing::info!(mountpoint = %mp, "image unmounted");
        Ok(())
    }

    /// Tell the kernel to forget the cached listings and names along `mp` (a mount or
    /// umount adds or removes pseudo directories, and the kernel caches listings and
    /// "no such name" answers).
    fn invalidate_path(&self, mp: &str) {
        let n = self.notifier.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = n.as_ref() else { return };
        let root = self.vfs.get_root_pseudofs();
        let mut parent = String::new();
        for comp in mp.split('/').filter(|c| !c.is_empty()) {
            let p = if parent.is_empty() { "/" } else { parent.as_str() };
            if let Ok(Some(ino)) = root.path_walk(p) {
                let r = n.inval_inode(ino).and_then(|_| n.inval_entry(ino, comp.as_bytes()));
                if let Err(e) = r {
                    tracing::debug!(path = %p, error = %e, "kernel cache invalidation failed");
                }
            }
            parent.push('/');
            parent.push_str(comp);
        }
    }

    /// Tell the kernel to forget the names it cached in the root of mount `mp` (Vfs index
    /// `fs_idx`) from the given images. Deeper names need nothing: every directory below
    /// the root gets new inode numbers with a new image, so they are looked up afresh.
    /// Names of files still open are dropped too (their readers keep the old inode).
    fn invalidate(&self, mp: &str, fs_idx: u8, images: &[&Arc<Rafs>]) {
        let n = self.notifier.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = n.as_ref() else { return };
        // The kernel's inode number of the mount's root: FUSE's root for the image at
        // `/`, else the Vfs-encoded root of the backend filesystem.
        let root = if mp == "/" { ROOT_INO } else { (fs_idx as u64) << 56 | ROOT_INO };
        let mut result = n.inval_inode(root);
        for img in images {
            if let Ok(entries) = img.read_dir(ROOT_INO) {
                for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    result = result.and(n.inval_entry(root, &e.name));
                }
            }
        }
        if let Err(e) = result {
            tracing::warn!(mountpoint = %mp, error = %e, "could not invalidate the kernel's cache; old names may be seen until they expire");
        }
    }
}

/// Names files of generation `gen` of a mount for per-file metrics.
fn path_resolver(rafs: &Arc<Rafs>, gen: u64) -> PathResolver {
    let inner = rafs_path_resolver(rafs.clone());
    Box::new(move |ino| {
        let (g, local) = nydus_fs::vfs::decode(ino);
        (g == gen || ino == ROOT_INO).then(|| inner(local)).flatten()
    })
}

/// Start prefetching the configured files (or all chunks) of `rafs`.
pub fn start_prefetch(rafs: &Arc<Rafs>, cfg: &nydus_storage::PrefetchConfig, paths: &[String]) -> Option<Prefetcher> {
    if !cfg.enable && paths.is_empty() {
        return None;
    }
    let per_blob: Vec<Vec<u32>> = if cfg.prefetch_all {
        rafs.blobs().iter().map(|b| (0..b.chunk_count()).collect()).collect()
    } else {
        match rafs.prefetch_chunks(paths) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "prefetch list could not be resolved; prefetch disabled");
                return None;
            }
        }
    };
    let p = Prefetcher::new(cfg);
    for (blob, cis) in rafs.blobs().iter().zip(per_blob) {
        if !cis.is_empty() {
            p.submit(blob.clone(), cis);
        }
    }
    Some(p)
}

/// Let mount `images` (Vfs index `fs_idx`) push cached data into the kernel's page cache.
fn enable_push(n: &Arc<Notifier>, images: &Arc<ImageSet>, fs_idx: u8) {
    if let Err(e) = images.enable_push(n.clone(), (fs_idx as u64) << 56) {
        tracing::warn!(error = %e, "cannot start the page-cache push thread; reads are served on demand only");
    }
}

/// Let mount `images` (Vfs index `fs_idx`) answer opens and pass large cached files
/// through, keeping their copies next to the blob cache (`WORK_DIR/passthrough`). Copies
/// are made only when the mount's config asks for passthrough and its cache has a
/// directory and no size limit (copies are not counted against it).
fn enable_passthrough(b: &Arc<BackingRegistry>, images: &Arc<ImageSet>, cfg: &DaemonConfig, fs_idx: u8) {
    let (fs, cache) = (&cfg.fs, &cfg.cache);
    let usable = cache.kind == CacheKind::Blobcache && cache.max_size.is_none();
    if fs.passthrough && !usable {
        tracing::warn!("passthrough needs a blob cache without max_size; large files are read through the page cache");
    }
    let settings = passthrough::Settings {
        dir: (fs.passthrough && usable).then(|| cache.work_dir.join("passthrough")),
        min_size: fs.passthrough_min_size,
        keep_cache: fs.keep_cache,
        nodeid_base: (fs_idx as u64) << 56,
    };
    if let Err(e) = images.enable_passthrough(b.clone(), settings.clone()) {
        tracing::warn!(error = %e, dir = ?settings.dir, "cannot set up passthrough copies; large files are read through the page cache");
        // Opens must still be answered: the kernel stops sending them to every mount
        // after one refusal.
        let _ = images.enable_passthrough(b.clone(), passthrough::Settings { dir: None, ..settings });
    }
}
