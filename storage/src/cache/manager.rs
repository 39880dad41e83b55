//! [`BlobCacheManager`]: one cache directory and the blobs cached in it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use nydus_format::blob_meta::ChunkLocation;
use nydus_format::reader::BlobInfo;
use nydus_format::Digest;
use tracing::{info, warn};

use super::blob::{CachedBlob, Source};
use super::chunk_map::ChunkMap;
use super::ci_array::{self, Persisted};
use super::store::BlobStore;
use super::{lock, Shared};
use crate::backend::{check_blob_id, BlobBackend};
use crate::config::{CacheConfig, CacheKind};
use crate::error::{Result, StorageError};
use crate::metrics::CacheMetrics;
use crate::sys;

/// Owns a cache directory (exclusively, through `flock` on
/// `work_dir/.lock`), its space budget and metrics, and the blobs opened
/// through it. Blobs share nothing with other managers.
pub struct BlobCacheManager {
    shared: Arc<Shared>,
    backend: Arc<dyn BlobBackend>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Open blobs, reused while any caller holds them.
    blobs: HashMap<String, Weak<CachedBlob>>,
    /// Cache files of every blob opened so far; kept for eviction.
    stores: HashMap<String, Arc<BlobStore>>,
    next_slot: u32,
}

impl std::fmt::Debug for BlobCacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCacheManager").field("work_dir", &self.shared.cfg.work_dir).finish()
    }
}

fn round_up_4k(n: u64) -> u64 {
    n.div_ceil(4096) * 4096
}

impl BlobCacheManager {
    /// Create `work_dir` if needed and lock it against other managers
    /// ([`StorageError::Locked`]). The dummy cache touches no files.
    pub fn new(cfg: CacheConfig, backend: Arc<dyn BlobBackend>) -> Result<Arc<Self>> {
        let lock_file = match cfg.kind {
            CacheKind::Dummy => None,
            CacheKind::Blobcache => Some(lock_dir(&cfg.work_dir)?),
        };
        let shared = Arc::new(Shared::new(cfg, lock_file));
        Ok(Arc::new(Self { shared, backend, registry: Mutex::default() }))
    }

    /// The cache settings.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.cfg
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> CacheMetrics {
        self.shared.counters.snapshot()
    }

    /// Open (or reuse, while it is held elsewhere) the cache of one blob.
    /// `digests[ci]` is the expected digest of chunk `ci` from the
    /// bootstrap's chunk table (`None`, or a short vector: unknown); it is
    /// checked when `digest_validate` is on. A reused blob keeps the digests
    /// it was first opened with.
    ///
    /// A cold open reads the blob's ci array from the backend (after
    /// checking the blob's size) and persists it; a warm one reads nothing
    /// from the backend until a chunk is missing.
    pub fn open_blob(self: &Arc<Self>, info: &BlobInfo, digests: Vec<Option<Digest>>) -> Result<Arc<CachedBlob>> {
        self.open_blob_located(info, digests, None)
    }

    /// [`BlobCacheManager::open_blob`] for a blob whose chunk locations the
    /// caller knows (`known`, indexed by ci): blobs without a ci array, such
    /// as those of RAFS v5 images, whose bootstrap records every chunk. The
    /// locations are checked against `info` as a ci array would be.
    pub fn open_blob_located(
        self: &Arc<Self>,
        info: &BlobInfo,
        digests: Vec<Option<Digest>>,
        known: Option<Vec<ChunkLocation>>,
    ) -> Result<Arc<CachedBlob>> {
        check_blob_id(&info.blob_id)?;
        info.data_supported().map_err(StorageError::Unsupported)?;
        // Held across the open so that two threads never set up the same
        // blob's files at once; opens are rare.
        let mut reg = lock(&self.registry);
        if let Some(b) = reg.blobs.get(&info.blob_id).and_then(Weak::upgrade) {
            return Ok(b);
        }
        let source = Source::new(self.backend.clone());
        let (locs, store) = match self.shared.cfg.kind {
            CacheKind::Dummy => {
                let locs = match known {
                    Some(locs) => ci_array::check(info, &locs).map(|()| locs)?,
                    None => ci_array::load_from_blob(&*source.reader(info)?, info)?,
                };
                (Arc::from(locs), None)
            }
            CacheKind::Blobcache => {
                let store = match reg.stores.get(&info.blob_id) {
                    Some(s) => s.clone(),
                    None => self.open_store(&mut reg, &source, info, known)?,
                };
                (store.locations(), Some(store))
            }
        };
        let blob = Arc::new(CachedBlob::new(info.clone(), locs, digests, self.shared.clone(), source, store));
        reg.blobs.retain(|_, b| b.strong_count() > 0);
        reg.blobs.insert(info.blob_id.clone(), Arc::downgrade(&blob));
        Ok(blob)
    }

    fn open_store(
        &self,
        reg: &mut Registry,
        source: &Source,
        info: &BlobInfo,
        known: Option<Vec<ChunkLocation>>,
    ) -> Result<Arc<BlobStore>> {
        let work_dir = &self.shared.cfg.work_dir;
        let locs = match known {
            Some(locs) => {
                ci_array::check(info, &locs)?;
                Arc::from(locs)
            }
            None => self.load_locations(source, info)?,
        };
        let store = Arc::new(BlobStore::open(work_dir, reg.next_slot, info, locs)?);
        reg.next_slot += 1;
        let fixed = round_up_4k(ChunkMap::file_len(info.chunk_count)) + round_up_4k(ci_array::file_len(info));
        self.shared.space.register(&store, fixed);
        reg.stores.insert(info.blob_id.clone(), store.clone());
        Ok(store)
    }

    /// The ci array from `<id>.blob.meta`, else from the blob (then persisted).
    fn load_locations(&self, source: &Source, info: &BlobInfo) -> Result<Arc<[ChunkLocation]>> {
        let path = self.shared.cfg.work_dir.join(format!("{}.blob.meta", info.blob_id));
        match ci_array::load_persisted(&path, info)? {
            Persisted::Valid(locs) => return Ok(locs.into()),
            Persisted::Invalid(reason) => {
                warn!(blob_id = %info.blob_id, "ignoring {}: {reason}; reloading it from the blob", path.display());
            }
            Persisted::Missing => {}
        }
        let locs = ci_array::load_from_blob(&*source.reader(info)?, info)?;
        ci_array::persist(&path, info, &locs)?;
        info!(blob_id = %info.blob_id, chunks = locs.len(), "loaded chunk metadata from the blob");
        Ok(locs.into())
    }
}

/// Create `dir` and take the exclusive `flock` on `dir/.lock`.
fn lock_dir(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating cache directory", dir, e))?;
    let path: PathBuf = dir.join(".lock");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StorageError::io("opening lock file", &path, e))?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(StorageError::Locked { dir: dir.to_path_buf() }),
        Err(e) => Err(StorageError::io("locking", &path, e)),
    }
}
