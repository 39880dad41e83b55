//! Per-file counters: a fixed-size, lock-free table from inode number to
//! counters, filled on a file's first request.
//!
//! Open addressing with linear probing over `2 × max_files` slots (a power
//! of two). A slot's key is claimed once with a compare-and-swap and never
//! changes; its counters are allocated by the first thread that needs them
//! (`OnceLock`), then only read. Keys are inode numbers; 0 (never a valid
//! inode) marks an empty slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use nydus_storage::metrics::SIZE_CLASSES;

use super::op::Op;
use crate::rafs::Rafs;

/// Maps an inode number to a path for reports; called only when answering
/// a query, never on the request path.
pub type PathResolver = Box<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// Probes before giving up on a key: the table is at most half full, so
/// probe sequences are short; the bound only matters when it is full.
const MAX_PROBES: usize = 128;

/// The counters of one file.
#[derive(Default)]
pub(super) struct FileStats {
    pub ino: u64,
    pub total_fops: AtomicU64,
    pub data_read: AtomicU64,
    pub block_count_read: [AtomicU64; SIZE_CLASSES],
    pub fop_hits: [AtomicU64; Op::UPSTREAM],
    pub fop_errors: [AtomicU64; Op::UPSTREAM],
    /// Sum of read latencies, microseconds.
    pub read_latency_us: AtomicU64,
    /// Reads, failed ones included (upstream's pattern `nr_read`).
    pub nr_read: AtomicU64,
    /// First read, nanoseconds since the metrics base plus one; 0: never.
    pub first_read_ns: AtomicU64,
    /// Where the last read ended.
    pub next_offset: AtomicU64,
    /// Reads that started where the previous one ended (or at 0, first).
    pub seq_reads: AtomicU64,
    /// Other reads.
    pub random_reads: AtomicU64,
    /// Read since the last "latest read files" query.
    pub latest: AtomicBool,
}

impl FileStats {
    /// Account one successful or failed read of `bytes` at `offset`.
    #[inline]
    pub fn read(&self, offset: u64, bytes: u64, now_ns: u64, ok: bool) {
        let r = Ordering::Relaxed;
        self.nr_read.fetch_add(1, r);
        if self.first_read_ns.load(r) == 0 {
            let _ = self.first_read_ns.compare_exchange(0, now_ns + 1, r, r);
        }
        if ok {
            let prev_end = self.next_offset.swap(offset + bytes, r);
            if offset == prev_end {
                self.seq_reads.fetch_add(1, r);
            } else {
                self.random_reads.fetch_add(1, r);
            }
            self.data_read.fetch_add(bytes, r);
            self.block_count_read[nydus_storage::metrics::size_class(bytes)].fetch_add(1, r);
        }
    }
}

pub(super) struct FileTable {
    keys: Box<[AtomicU64]>,
    vals: Box<[OnceLock<Box<FileStats>>]>,
    shift: u32,
    untracked: AtomicU64,
}

impl FileTable {
    pub fn new(max_files: usize) -> Self {
        let cap = (max_files.max(8) * 2).next_power_of_two();
        Self {
            keys: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            vals: (0..cap).map(|_| OnceLock::new()).collect(),
            shift: 64 - cap.trailing_zeros(),
            untracked: AtomicU64::new(0),
        }
    }

    /// The counters of `ino`, created on first use; `None` for inode 0 or
    /// when the table is full.
    #[inline]
    pub fn get(&self, ino: u64) -> Option<&FileStats> {
        if ino == 0 {
            return None;
        }
        let mask = self.keys.len() - 1;
        // Fibonacci hashing: inode numbers are often dense or strided.
        let mut i = (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        for _ in 0..MAX_PROBES.min(self.keys.len()) {
            let k = self.keys[i].load(Ordering::Acquire);
            let mine = k == ino
                || (k == 0
                    && match self.keys[i].compare_exchange(0, ino, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => true,
                        Err(other) => other == ino,
                    });
            if mine {
                return Some(self.vals[i].get_or_init(|| Box::new(FileStats { ino, ..Default::default() })));
            }
            i = (i + 1) & mask;
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Requests on files that found no room.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Every file seen so far.
    pub fn iter(&self) -> impl Iterator<Item = &FileStats> {
        self.vals.iter().filter_map(|v| v.get().map(|b| &**b))
    }
}

/// A [`PathResolver`] for a RAFS image: the first query walks the image
/// once and keeps an inode → path map (the image never changes; a file with
/// several names is reported under the first in walk order).
///
/// It maps the image's own inode numbers ([`Rafs::ino_of`]); a filesystem
/// that exposes other numbers (e.g. with a generation in the high bits
/// after a remount) should translate before calling it, and install a new
/// resolver when its image changes.
pub fn rafs_path_resolver(rafs: Arc<Rafs>) -> PathResolver {
    let map: OnceLock<HashMap<u64, String>> = OnceLock::new();
    Box::new(move |ino| {
        let m = map.get_or_init(|| {
            let mut m = HashMap::new();
            let walked = rafs.bootstrap().walk(|path, e, _| {
                m.entry(rafs.ino_of(e.nid)).or_insert_with(|| String::from_utf8_lossy(path).into_owned());
                Ok(())
            });
            if let Err(e) = walked {
                tracing::warn!(error = %e, "metrics: cannot list the image's paths; files are reported by inode only");
            }
            m
        });
        m.get(&ino).cloned()
    })
}
