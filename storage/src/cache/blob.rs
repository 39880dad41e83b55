//! [`CachedBlob`]: reads of one blob through the cache.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nydus_format::blob_meta::ChunkLocation;
use nydus_format::reader::BlobInfo;
use nydus_format::Digest;
use tracing::warn;

use super::fetch::{self, Run};
use super::inflight::{Claim, Inflight};
use super::store::{chunk_bytes, BlobStore};
use super::{lock, ChunkSink, Shared};
use crate::backend::{read_full, BlobBackend, BlobReader};
use crate::error::{Result, StorageError};
use crate::metrics::add;

/// How often `read_chunk` fetches a chunk that eviction takes away between
/// its fetch and its copy before it serves the chunk from memory instead.
const READ_ATTEMPTS: usize = 4;

/// The plain bytes of one chunk that a reader wants handed back from the
/// fetch that caches it (`ci: None`: keep nothing).
#[derive(Default)]
struct Kept {
    ci: Option<u32>,
    /// A buffer holding the chunk's plain bytes at `range`: the decoded
    /// chunk, or, for a chunk stored uncompressed, the whole backend read
    /// it came in (taken over instead of copied).
    data: Option<(Vec<u8>, std::ops::Range<usize>)>,
    /// The chunk was stored uncompressed at this range of its run's buffer.
    in_run: Option<std::ops::Range<usize>>,
}

impl Kept {
    /// Keep chunk `ci`.
    fn chunk(ci: u32) -> Self {
        Self { ci: Some(ci), data: None, in_run: None }
    }

    /// The kept chunk's plain bytes, if it was fetched.
    fn plain(&self) -> Option<&[u8]> {
        self.data.as_ref().map(|(buf, range)| &buf[range.clone()])
    }
}

/// The parts of one fetch that every run of it shares.
struct RunCtx<'a> {
    /// Chunks asked for (ascending); the rest are speculative neighbours.
    wanted: &'a [u32],
    background: bool,
    /// The first error of a wanted chunk.
    first_err: &'a mut Option<StorageError>,
    kept: &'a mut Kept,
}

/// The backend side of a blob, opened (and size-checked) on first use, so
/// that a blob served entirely from a warm cache never touches the backend.
pub(crate) struct Source {
    backend: Arc<dyn BlobBackend>,
    reader: OnceLock<Arc<dyn BlobReader>>,
}

impl Source {
    /// A source over `backend`; nothing is opened yet.
    pub fn new(backend: Arc<dyn BlobBackend>) -> Self {
        Self { backend, reader: OnceLock::new() }
    }

    /// The blob's reader, opened and checked against `info` on first use.
    pub fn reader(&self, info: &BlobInfo) -> Result<Arc<dyn BlobReader>> {
        if let Some(r) = self.reader.get() {
            return Ok(r.clone());
        }
        let r = self.backend.open_blob(&info.blob_id)?;
        let actual = r.blob_size()?;
        if actual != info.compressed_size {
            return Err(StorageError::SizeMismatch {
                blob_id: info.blob_id.clone(),
                expected: info.compressed_size,
                actual,
            });
        }
        Ok(self.reader.get_or_init(|| r).clone())
    }
}

/// One blob, read through the cache of its [`super::BlobCacheManager`].
///
/// Chunks are addressed by their index in the blob's ci array (`ci`), as
/// the bootstrap's chunk indexes do. All methods may be called from many
/// threads at once.
pub struct CachedBlob {
    info: BlobInfo,
    locs: Arc<[ChunkLocation]>,
    digests: Vec<Option<Digest>>,
    shared: Arc<Shared>,
    source: Source,
    /// `None` for the dummy cache.
    store: Option<Arc<BlobStore>>,
    inflight: Inflight,
    /// Chunks whose failure was logged already (each is logged once).
    warned: Mutex<HashSet<u32>>,
}

impl std::fmt::Debug for CachedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedBlob").field("blob_id", &self.info.blob_id).field("chunks", &self.locs.len()).finish()
    }
}

impl CachedBlob {
    pub(crate) fn new(
        info: BlobInfo,
        locs: Arc<[ChunkLocation]>,
        digests: Vec<Option<Digest>>,
        shared: Arc<Shared>,
        source: Source,
        store: Option<Arc<BlobStore>>,
    ) -> Self {
        let (inflight, warned) = (Inflight::default(), Mutex::default());
        Self { info, locs, digests, shared, source, store, inflight, warned }
    }

    /// The blob id.
    pub fn blob_id(&self) -> &str {
        &self.info.blob_id
    }

    /// Number of chunks in the blob.
    pub fn chunk_count(&self) -> u32 {
        self.locs.len() as u32
    }

    /// The bootstrap's description of the blob.
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    /// Where chunk `ci` is stored and where its plain bytes go.
    pub fn chunk(&self, ci: u32) -> Option<ChunkLocation> {
        self.locs.get(ci as usize).copied()
    }

    /// Whether chunk `ci` is in the cache (always false for the dummy cache).
    pub fn is_cached(&self, ci: u32) -> bool {
        self.store.as_ref().is_some_and(|s| s.is_ready(ci))
    }

    /// Whether on-demand fetches (of any blob of the manager) are running:
    /// background work should wait.
    pub fn foreground_busy(&self) -> bool {
        self.shared.foreground_busy()
    }

    fn location(&self, ci: u32) -> Result<ChunkLocation> {
        self.chunk(ci).ok_or_else(|| StorageError::ChunkOutOfRange {
            blob_id: self.info.blob_id.clone(),
            ci,
            count: self.chunk_count(),
        })
    }

    /// Write plain bytes `[off, off + len)` of chunk `ci` into `sink`,
    /// fetching the chunk first if it is not cached (together with missing
    /// chunks stored right after it, up to `amplify_io` bytes). Returns the
    /// bytes written (fewer than `len` only if the sink stopped accepting).
    pub fn read_chunk(&self, ci: u32, off: u32, len: u32, sink: &mut dyn ChunkSink) -> Result<usize> {
        let loc = self.location(ci)?;
        if off as u64 + len as u64 > loc.uncompressed_size as u64 {
            let (blob_id, size) = (self.info.blob_id.clone(), loc.uncompressed_size);
            return Err(StorageError::RangeOutOfChunk { blob_id, ci, offset: off, len, size });
        }
        if len == 0 {
            return Ok(0);
        }
        let Some(store) = &self.store else {
            return self.read_direct(ci, &loc, off, len, sink);
        };
        let mut missed = false;
        for _ in 0..READ_ATTEMPTS {
            if let Some(_pin) = self.shared.space.pin(store, ci) {
                if !missed {
                    add(&self.shared.counters.hits, 1);
                }
                return store.copy_to(ci, off, len, sink);
            }
            if !missed {
                add(&self.shared.counters.misses, 1);
                missed = true;
            }
            // Keep the decoded bytes: the reply is copied from them instead
            // of being read back from the cache file just written.
            let mut kept = Kept::chunk(ci);
            self.fetch(store, &[ci], true, false, self.shared.cfg.amplify_io, &mut kept)?;
            if let Some(plain) = kept.plain() {
                return self.copy_out(ci, &plain[off as usize..(off + len) as usize], sink);
            }
        }
        // Other readers keep evicting the chunk (max_size far too small for
        // the load): serve it from memory rather than fail.
        self.read_direct(ci, &loc, off, len, sink)
    }

    /// Make sure chunks `cis` are cached, fetching missing ones in merged
    /// runs of up to `amplify_io` bytes. `background` requests (readahead,
    /// prefetch) first give way to on-demand fetches for a moment. Returns
    /// the first error, after trying every chunk. A no-op for the dummy cache.
    pub fn ensure(&self, cis: &[u32], background: bool) -> Result<()> {
        self.ensure_with(cis, background, self.shared.cfg.amplify_io)
    }

    /// [`CachedBlob::ensure`] with runs of up to `max_run` bytes.
    pub(crate) fn ensure_with(&self, cis: &[u32], background: bool, max_run: u64) -> Result<()> {
        for &ci in cis {
            self.location(ci)?;
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut want: Vec<u32> = cis.iter().copied().filter(|&ci| !store.is_ready(ci)).collect();
        if want.is_empty() {
            return Ok(());
        }
        want.sort_unstable();
        want.dedup();
        if background {
            self.shared.yield_to_on_demand(Duration::from_millis(100));
        }
        self.fetch(store, &want, false, background, max_run, &mut Kept::default())
    }

    /// Fetch the missing chunks of `wanted` (ascending): claim the free ones
    /// (plus, with `amplify`, free neighbours after the last), fetch them,
    /// then wait for those other threads are fetching. A chunk whose other
    /// fetcher failed is retried once by this thread.
    fn fetch(
        &self,
        store: &BlobStore,
        wanted: &[u32],
        amplify: bool,
        background: bool,
        max_run: u64,
        kept: &mut Kept,
    ) -> Result<()> {
        let mut first_err = None;
        for attempt in 0..2 {
            let missing: Vec<u32> = wanted.iter().copied().filter(|&ci| !store.is_ready(ci)).collect();
            let Some(&last) = missing.last() else { break };
            let extras = if amplify { fetch::amplify(&self.locs, last, max_run) } else { Vec::new() };
            let (claim, waits) = self.inflight.claim(&missing, &extras, |ci| store.is_ready(ci));
            if !claim.is_empty() {
                if let Err(e) = self.fetch_claimed(store, claim, &missing, background, max_run, kept) {
                    first_err.get_or_insert(e);
                }
            }
            let deadline = Instant::now() + self.shared.cfg.fetch_timeout;
            let mut retry = false;
            for (ci, slot) in waits {
                match slot.wait(deadline.saturating_duration_since(Instant::now())) {
                    None => {
                        let secs = self.shared.cfg.fetch_timeout.as_secs_f64();
                        return Err(StorageError::FetchTimeout { blob_id: self.info.blob_id.clone(), ci, secs });
                    }
                    Some(Ok(())) => {}
                    Some(Err(_)) if attempt == 0 => retry = true,
                    Some(Err(reason)) => {
                        first_err.get_or_insert(StorageError::FetchFailed {
                            blob_id: self.info.blob_id.clone(),
                            ci,
                            reason,
                        });
                    }
                }
            }
            if first_err.is_some() || !retry {
                break;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Fetch every claimed chunk and finish it; returns the first error of a
    /// chunk in `wanted` (failures of amplified neighbours only reach their
    /// waiters).
    fn fetch_claimed(
        &self,
        store: &BlobStore,
        mut claim: Claim<'_>,
        wanted: &[u32],
        background: bool,
        max_run: u64,
        kept: &mut Kept,
    ) -> Result<()> {
        let _fg = (!background).then(|| self.shared.on_demand());
        let mut first_err = None;
        let mut ctx = RunCtx { wanted, background, first_err: &mut first_err, kept };
        for run in fetch::plan_runs(&self.locs, &claim.cis(), max_run) {
            self.fetch_run(store, &mut claim, &run, &mut ctx);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Fetch one planned run and finish its chunks. When a merged read
    /// fails (say the blob was truncated behind a neighbour), each chunk is
    /// read on its own, so the chunks that are still readable succeed.
    fn fetch_run(&self, store: &BlobStore, claim: &mut Claim<'_>, run: &Run, ctx: &mut RunCtx<'_>) {
        let wanted = ctx.wanted;
        let is_wanted = |ci: &u32| wanted.binary_search(ci).is_ok();
        let buf = match self.read_run(run, ctx.background) {
            Ok(buf) => buf,
            Err(_) if run.cis.len() > 1 => {
                for &ci in &run.cis {
                    for single in fetch::plan_runs(&self.locs, &[ci], 0) {
                        self.fetch_run(store, claim, &single, ctx);
                    }
                }
                return;
            }
            Err(e) => {
                self.log_failure(&run.cis, &e);
                run.cis.iter().for_each(|&ci| claim.finish(ci, Err(e.to_string())));
                if run.cis.iter().any(is_wanted) {
                    ctx.first_err.get_or_insert(e);
                }
                return;
            }
        };
        // Wanted chunks last: under a tight max_size the speculative
        // neighbours are the ones evicted to make room.
        let (want, extra): (Vec<u32>, Vec<u32>) = run.cis.iter().partition(|ci| is_wanted(ci));
        for ci in extra.into_iter().chain(want) {
            let res = self.store_chunk(store, ci, run, &buf, ctx.kept);
            claim.finish(ci, res.as_ref().map(|_| ()).map_err(ToString::to_string));
            if let Err(e) = res {
                self.log_failure(&[ci], &e);
                if is_wanted(&ci) {
                    ctx.first_err.get_or_insert(e);
                }
            }
        }
        if let Some(range) = ctx.kept.in_run.take() {
            ctx.kept.data = Some((buf, range));
        }
    }

    /// Read the stored bytes of `run` from the backend.
    fn read_run(&self, run: &Run, background: bool) -> Result<Vec<u8>> {
        let reader = self.source.reader(&self.info)?;
        let mut buf = vec![0u8; run.len as usize];
        read_full(&*reader, &self.info.blob_id, &mut buf, run.offset)?;
        let c = &self.shared.counters;
        add(&c.backend_reads, 1);
        add(&c.backend_bytes, run.len);
        if background {
            add(&c.prefetch_bytes, run.len);
        }
        Ok(buf)
    }

    /// Decode chunk `ci` from `buf` (the stored bytes of `run`), write it to
    /// the data file and mark it ready.
    fn store_chunk(&self, store: &BlobStore, ci: u32, run: &Run, buf: &[u8], kept: &mut Kept) -> Result<()> {
        let loc = self.location(ci)?;
        let at = loc.compressed_offset.saturating_sub(run.offset) as usize;
        let stored = buf.get(at..at + loc.compressed_size as usize).ok_or_else(|| StorageError::BlobMeta {
            blob_id: self.info.blob_id.clone(),
            reason: format!("chunk {ci} is not inside its backend read"),
        })?;
        let plain = self.decode(ci, &loc, stored)?;
        let bytes = chunk_bytes(&loc);
        self.shared.space.reserve(bytes);
        if let Err(e) = store.write(ci, &plain).and_then(|()| store.mark_ready(ci)) {
            self.shared.space.release(bytes);
            return Err(e);
        }
        self.shared.space.commit(store, ci, bytes);
        if kept.ci == Some(ci) {
            match plain {
                std::borrow::Cow::Borrowed(_) => kept.in_run = Some(at..at + loc.compressed_size as usize),
                std::borrow::Cow::Owned(plain) => {
                    let n = plain.len();
                    kept.data = Some((plain, 0..n));
                }
            }
        }
        Ok(())
    }

    fn decode<'a>(&self, ci: u32, loc: &ChunkLocation, stored: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
        let digest = self.digests.get(ci as usize).and_then(Option::as_ref).filter(|_| self.shared.cfg.digest_validate);
        let res = fetch::decode(&self.info, ci, loc, stored, digest);
        if let Err(StorageError::DigestMismatch { .. }) = &res {
            add(&self.shared.counters.digest_errors, 1);
        }
        res
    }

    /// Fetch chunk `ci` into memory and copy the slice (the dummy cache,
    /// and the last resort when eviction thrashes).
    fn read_direct(&self, ci: u32, loc: &ChunkLocation, off: u32, len: u32, sink: &mut dyn ChunkSink) -> Result<usize> {
        if self.store.is_none() {
            add(&self.shared.counters.misses, 1);
        }
        let run = Run { offset: loc.compressed_offset, len: loc.compressed_size as u64, cis: vec![ci] };
        let stored = self.read_run(&run, false).inspect_err(|e| self.log_failure(&[ci], e))?;
        let plain = self.decode(ci, loc, &stored).inspect_err(|e| self.log_failure(&[ci], e))?;
        // In range: the caller checked off + len <= the chunk's plain size.
        self.copy_out(ci, &plain[off as usize..(off + len) as usize], sink)
    }

    /// Write `data` (plain bytes of chunk `ci`) into `sink`; returns the
    /// bytes written (fewer only if the sink stopped accepting).
    fn copy_out(&self, ci: u32, data: &[u8], sink: &mut dyn ChunkSink) -> Result<usize> {
        let mut done = 0;
        while done < data.len() {
            match sink.write_bytes(&data[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StorageError::Sink { blob_id: self.info.blob_id.clone(), ci, source }),
            }
        }
        Ok(done)
    }

    /// Log a failure of chunks `cis` unless all of them failed before: each
    /// chunk's failure is logged once.
    fn log_failure(&self, cis: &[u32], e: &StorageError) {
        let mut warned = lock(&self.warned);
        let fresh = cis.iter().fold(false, |fresh, &ci| warned.insert(ci) | fresh);
        if fresh {
            warn!(blob_id = %self.info.blob_id, "{e}");
        }
    }
}
