//! Chunks being fetched right now.
//!
//! A thread that wants missing chunks *claims* those nobody is fetching and
//! gets a [`Slot`] to wait on for the others. The claimer must finish each
//! claimed chunk (its bit set first on success); dropping a [`Claim`]
//! fails whatever is left, so a panicking or erroring fetcher never strands
//! its waiters. Waits are bounded by a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::lock;

/// The outcome of a fetch as waiters see it: the error as text.
pub(crate) type Outcome = std::result::Result<(), String>;

/// One chunk's fetch, awaited by other readers.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Slot {
    /// Wait up to `timeout` for the outcome; `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let g = lock(&self.state);
        let (g, _) = self.cv.wait_timeout_while(g, timeout, |s| s.is_none()).unwrap_or_else(|e| e.into_inner());
        g.clone()
    }

    fn complete(&self, outcome: Outcome) {
        *lock(&self.state) = Some(outcome);
        self.cv.notify_all();
    }
}

/// The in-flight table of one blob.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    table: Mutex<HashMap<u32, Arc<Slot>>>,
}

/// Chunks this thread must fetch and finish.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    owner: &'a Inflight,
    slots: Vec<(u32, Arc<Slot>)>,
}

/// Chunks other threads are fetching, with the slots to wait on.
pub(crate) type Waits = Vec<(u32, Arc<Slot>)>;

impl Inflight {
    /// Claim every chunk of `wanted` that is neither ready nor in flight (the
    /// in-flight ones are returned to wait on), then as many of `extras`, in
    /// order, as are free (stopping at the first that is not).
    pub fn claim(&self, wanted: &[u32], extras: &[u32], ready: impl Fn(u32) -> bool) -> (Claim<'_>, Waits) {
        let mut t = lock(&self.table);
        let (mut slots, mut waits) = (Vec::new(), Vec::new());
        for &ci in wanted {
            if let Some(s) = t.get(&ci) {
                waits.push((ci, s.clone()));
            } else if !ready(ci) {
                let s = Arc::new(Slot::default());
                t.insert(ci, s.clone());
                slots.push((ci, s));
            }
        }
        for &ci in extras {
            if t.contains_key(&ci) || ready(ci) {
                break;
            }
            let s = Arc::new(Slot::default());
            t.insert(ci, s.clone());
            slots.push((ci, s));
        }
        (Claim { owner: self, slots }, waits)
    }
}

impl Claim<'_> {
    /// Claimed chunk indexes, ascending.
    pub fn cis(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.slots.iter().map(|s| s.0).collect();
        v.sort_unstable();
        v
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Publish the outcome of chunk `ci` (set its ready bit before success).
    pub fn finish(&mut self, ci: u32, outcome: Outcome) {
        let Some(i) = self.slots.iter().position(|s| s.0 == ci) else {
            return;
        };
        let (_, slot) = self.slots.swap_remove(i);
        lock(&self.owner.table).remove(&ci);
        slot.complete(outcome);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        for ci in self.slots.iter().map(|s| s.0).collect::<Vec<_>>() {
            self.finish(ci, Err("the fetching thread stopped before finishing the chunk".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claimer_waits_and_sees_outcome() {
        let f = Inflight::default();
        let (mut a, wa) = f.claim(&[1, 2], &[3, 4, 5], |ci| ci == 4);
        assert_eq!(a.cis(), vec![1, 2, 3]);
        assert!(wa.is_empty());
        let (b, wb) = f.claim(&[2, 7], &[], |_| false);
        assert_eq!(b.cis(), vec![7]);
        assert_eq!(wb.len(), 1);
        assert_eq!(wb[0].1.wait(Duration::from_millis(10)), None);
        a.finish(2, Err("boom".into()));
        assert_eq!(wb[0].1.wait(Duration::from_millis(10)), Some(Err("boom".into())));
        let (_, w1) = f.claim(&[1], &[], |_| false);
        drop(a);
        assert!(w1[0].1.wait(Duration::from_secs(1)).unwrap().is_err());
        let (c, _) = f.claim(&[1, 3], &[], |_| false);
        assert_eq!(c.cis(), vec![1, 3]);
    }
}
