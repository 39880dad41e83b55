//! Space accounting and eviction across all blobs of one manager.
//!
//! `used` counts the fixed files of each store plus, for every ready or
//! reserved chunk, its size rounded up to 4 KiB: an upper bound of what the
//! cache directory holds on disk. With a `max_size`, a fetch reserves its
//! bytes before writing them and evicts least recently used chunks first
//! (clearing their bits, then punching holes), so the directory stays within
//! the limit. Chunks pinned by a reader being served are never evicted; if
//! nothing else can go, the limit is overshot (a chunk bigger than the limit
//! is still served).
//!
//! Eviction I/O happens under the one lock: a chunk can only be fetched
//! again after its bit was cleared, and its writer must reserve (take the
//! lock) before writing, so the hole is punched before new data lands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::lock;
use super::lru::{Key, Lru};
use super::store::BlobStore;
use crate::metrics::{add, sub, CacheCounters};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Space {
    limit: Option<u64>,
    counters: Arc<CacheCounters>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    used: u64,
    lru: Lru,
    stores: HashMap<u32, Arc<BlobStore>>,
    overshoot_warned: bool,
    evict_warned: bool,
}

/// A chunk protected from eviction while its data is copied out.
pub(crate) struct Pin<'a> {
    space: &'a Space,
    key: Option<Key>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            lock(&self.space.inner).lru.unpin(key);
        }
    }
}

impl Space {
    /// Account nothing yet; `limit` is `CacheConfig::max_size`.
    pub fn new(limit: Option<u64>, counters: Arc<CacheCounters>) -> Self {
        Self { limit, counters, inner: Mutex::new(Inner::default()) }
    }

    /// Account a newly opened store: `fixed` bytes of metadata files plus its
    /// warm chunks (as least recently used); then trim to the limit.
    pub fn register(&self, store: &Arc<BlobStore>, fixed: u64) {
        let mut g = lock(&self.inner);
        g.used += fixed;
        for ci in store.ready_chunks() {
            let size = store.location(ci).map_or(0, super::store::chunk_bytes);
            g.used += size;
            if self.limit.is_some() {
                g.lru.insert((store.slot, ci), size);
            }
            add(&self.counters.entries, 1);
            add(&self.counters.cached_bytes, size);
        }
        g.stores.insert(store.slot, store.clone());
        self.make_room(&mut g, 0);
    }

    /// Reserve `bytes` for a chunk about to be written, evicting first if
    /// the limit requires it.
    pub fn reserve(&self, bytes: u64) {
        let mut g = lock(&self.inner);
        self.make_room(&mut g, bytes);
        g.used += bytes;
    }

    /// Return a reservation whose chunk was not written.
    pub fn release(&self, bytes: u64) {
        let mut g = lock(&self.inner);
        g.used = g.used.saturating_sub(bytes);
    }

    /// A reserved chunk of `bytes` is now ready.
    pub fn commit(&self, store: &BlobStore, ci: u32, bytes: u64) {
        if self.limit.is_some() {
            lock(&self.inner).lru.insert((store.slot, ci), bytes);
        }
        add(&self.counters.entries, 1);
        add(&self.counters.cached_bytes, bytes);
    }

    /// Pin chunk `ci` of `store` if it is ready (and mark it used).
    pub fn pin<'a>(&'a self, store: &BlobStore, ci: u32) -> Option<Pin<'a>> {
        if self.limit.is_none() {
            return store.is_ready(ci).then_some(Pin { space: self, key: None });
        }
        let mut g = lock(&self.inner);
        if !store.is_ready(ci) {
            return None;
        }
        let key = (store.slot, ci);
        g.lru.pin(key);
        g.lru.touch(key);
        Some(Pin { space: self, key: Some(key) })
    }

    fn make_room(&self, g: &mut Inner, need: u64) {
        let Some(limit) = self.limit else { return };
        while g.used + need > limit {
            let Some(((slot, ci), size)) = g.lru.pop_victim() else {
                if !g.overshoot_warned {
                    g.overshoot_warned = true;
                    warn!(
                        limit,
                        used = g.used,
                        need,
                        "cache exceeds max_size: nothing left to evict (chunks in use or larger than the limit)"
                    );
                }
                return;
            };
            if let Some(store) = g.stores.get(&slot) {
                if let Err(e) = store.evict(ci) {
                    if !g.evict_warned {
                        g.evict_warned = true;
                        warn!("evicting a cached chunk failed: {e}");
                    }
                }
            }
            g.used = g.used.saturating_sub(size);
            add(&self.counters.evictions, 1);
            sub(&self.counters.entries, 1);
            sub(&self.counters.cached_bytes, size);
        }
    }
}
