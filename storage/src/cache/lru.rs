//! Least-recently-used order of ready chunks across all blobs of a manager,
//! with pins for chunks being copied out right now. Pure bookkeeping: the
//! caller ([`super::space`]) does the eviction I/O.

use std::collections::{BTreeMap, HashMap};

/// A chunk: (store slot, chunk index).
pub(crate) type Key = (u32, u32);

/// LRU order plus pin counts.
#[derive(Debug, Default)]
pub(crate) struct Lru {
    clock: u64,
    /// Stamp → chunk, oldest first.
    order: BTreeMap<u64, Key>,
    /// Chunk → (stamp, accounted bytes).
    entries: HashMap<Key, (u64, u64)>,
    pins: HashMap<Key, u32>,
}

impl Lru {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Add (or refresh) `key` as the most recently used chunk.
    pub fn insert(&mut self, key: Key, size: u64) {
        let stamp = self.tick();
        if let Some((old, _)) = self.entries.insert(key, (stamp, size)) {
            self.order.remove(&old);
        }
        self.order.insert(stamp, key);
    }

    /// Mark `key` as just used.
    pub fn touch(&mut self, key: Key) {
        let stamp = self.tick();
        if let Some(e) = self.entries.get_mut(&key) {
            self.order.remove(&e.0);
            e.0 = stamp;
            self.order.insert(stamp, key);
        }
    }

    /// Forget `key`; returns its size if it was present.
    pub fn remove(&mut self, key: Key) -> Option<u64> {
        let (stamp, size) = self.entries.remove(&key)?;
        self.order.remove(&stamp);
        Some(size)
    }

    /// Protect `key` from eviction until [`Lru::unpin`].
    pub fn pin(&mut self, key: Key) {
        *self.pins.entry(key).or_default() += 1;
    }

    /// Undo one [`Lru::pin`].
    pub fn unpin(&mut self, key: Key) {
        if let Some(n) = self.pins.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(&key);
            }
        }
    }

    /// Remove and return the least recently used unpinned chunk.
    pub fn pop_victim(&mut self) -> Option<(Key, u64)> {
        let key = *self.order.values().find(|k| !self.pins.contains_key(k))?;
        self.remove(key).map(|size| (key, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_unpinned() {
        let mut l = Lru::default();
        for ci in 0..4 {
            l.insert((0, ci), 4096);
        }
        l.touch((0, 0));
        l.pin((0, 1));
        assert_eq!(l.pop_victim(), Some(((0, 2), 4096)));
        l.unpin((0, 1));
        assert_eq!(l.pop_victim(), Some(((0, 1), 4096)));
        assert_eq!(l.pop_victim(), Some(((0, 3), 4096)));
        assert_eq!(l.pop_victim(), Some(((0, 0), 4096)));
        assert_eq!(l.pop_victim(), None);
        l.insert((2, 5), 4096);
        assert_eq!(l.remove((2, 5)), Some(4096));
        assert_eq!(l.remove((2, 5)), None);
    }
}
