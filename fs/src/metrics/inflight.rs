//! Requests being served right now, for hang detection.
//!
//! A fixed array of cache-line sized slots. A request claims a free slot
//! with one compare-and-swap, starting at its thread's home slot (threads
//! get distinct homes in turn, so a FUSE worker pool of up to
//! [`SLOTS`] threads never collides), fills it and publishes it; finishing
//! frees it with one store. When every slot is taken the request is served
//! untracked and counted. Readers take a consistent copy of each slot
//! seqlock-style: a slot is read only if its state is the same published
//! generation before and after.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use super::op::Op;

/// Number of slots: the most requests tracked at once per mount.
pub const SLOTS: usize = 256;

/// State of a free slot.
const FREE: u64 = 0;
/// State of a slot being filled.
const FILLING: u64 = u64::MAX;

#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// FREE, FILLING, or the published generation of the request.
    state: AtomicU64,
    /// Last generation handed out in this slot.
    generation: AtomicU64,
    op: AtomicU32,
    ino: AtomicU64,
    /// Start time, nanoseconds since the owner's base instant.
    start_ns: AtomicU64,
}

/// The in-flight table of one mount.
pub(super) struct Inflight {
    slots: Box<[Slot]>,
    untracked: AtomicU64,
}

/// One request in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InflightRequest {
    /// Operation.
    pub op: Op,
    /// The inode the request is about (the parent directory for lookups).
    pub ino: u64,
    /// A number unique to this request among the mount's requests.
    pub unique: u64,
    /// Start time, nanoseconds since the metrics were created.
    pub start_ns: u64,
}

static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn home_slot() -> usize {
    HOME.with(|h| {
        if h.get() == usize::MAX {
            h.set(NEXT_HOME.fetch_add(1, Ordering::Relaxed) % SLOTS);
        }
        h.get()
    })
}

impl Inflight {
    pub fn new() -> Self {
        Self { slots: (0..SLOTS).map(|_| Slot::default()).collect(), untracked: AtomicU64::new(0) }
    }

    /// Track a request; returns its slot, or `None` when all are busy.
    #[inline]
    pub fn enter(&self, op: Op, ino: u64, start_ns: u64) -> Option<usize> {
        let home = home_slot();
        for k in 0..SLOTS {
            let i = (home + k) % SLOTS;
            let s = &self.slots[i];
            if s.state.load(Ordering::Relaxed) != FREE {
                continue;
            }
            if s.state.compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            let gen = s.generation.load(Ordering::Relaxed) + 1;
            s.generation.store(gen, Ordering::Relaxed);
            s.op.store(op as u32, Ordering::Relaxed);
            s.ino.store(ino, Ordering::Relaxed);
            s.start_ns.store(start_ns, Ordering::Relaxed);
            s.state.store(gen, Ordering::Release);
            return Some(i);
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The request in `slot` is done.
    #[inline]
    pub fn leave(&self, slot: usize) {
        self.slots[slot].state.store(FREE, Ordering::Release);
    }

    /// Requests served without a slot so far.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Copy out every published request, oldest first.
    pub fn list(&self) -> Vec<InflightRequest> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            let before = s.state.load(Ordering::Acquire);
            if before == FREE || before == FILLING {
                continue;
            }
            let op = s.op.load(Ordering::Relaxed);
            let ino = s.ino.load(Ordering::Relaxed);
            let start_ns = s.start_ns.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s.state.load(Ordering::Relaxed) != before {
                continue; // finished or replaced while we looked
            }
            let Some(op) = Op::from_index(op as usize) else { continue };
            out.push(InflightRequest { op, ino, unique: before * SLOTS as u64 + i as u64, start_ns });
        }
        out.sort_by_key(|r| r.start_ns);
        out
    }
}
