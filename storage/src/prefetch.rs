//! Background prefetch: worker threads that pull chunks into the cache
//! before anyone reads them.
//!
//! Jobs are `(blob, chunk list)` pairs. A worker splits a job into batches
//! of at most `merging_size` stored bytes and calls
//! [`CachedBlob::ensure`]-with-`background` on each, so every batch is one
//! or a few merged backend reads. Between batches a worker checks the stop
//! flag, gives way while on-demand fetches are running, and, with a
//! `bandwidth_rate`, waits for its token bucket. Prefetched bytes are
//! counted in the cache manager's metrics (`prefetch_bytes`).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::cache::{lock, CachedBlob};
use crate::config::PrefetchConfig;

/// Longest single sleep of a worker, so that `stop` is prompt.
const NAP: Duration = Duration::from_millis(20);

/// A pool of prefetch workers. Dropping it stops them (see [`Prefetcher::stop`]).
pub struct Prefetcher {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Job {
    blob: Arc<CachedBlob>,
    cis: Vec<u32>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    running: usize,
}

struct Inner {
    queue: Mutex<Queue>,
    /// New work, or stop.
    work: Condvar,
    /// The queue drained and no job runs.
    idle: Condvar,
    stop: AtomicBool,
    merging_size: u64,
    bucket: Option<Mutex<TokenBucket>>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefetcher").field("stopped", &self.inner.stopped()).finish()
    }
}

impl Prefetcher {
    /// Start `threads_count` workers (at least one). `cfg.enable` is the
    /// caller's business: a prefetcher always runs what is submitted.
    pub fn new(cfg: &PrefetchConfig) -> Self {
        let bucket = (cfg.bandwidth_rate > 0)
            .then(|| Mutex::new(TokenBucket::new(cfg.bandwidth_rate, cfg.merging_size.max(cfg.bandwidth_rate))));
        let inner = Arc::new(Inner {
            queue: Mutex::default(),
            work: Condvar::new(),
            idle: Condvar::new(),
            stop: AtomicBool::new(false),
            merging_size: cfg.merging_size,
            bucket,
        });
        let mut workers = Vec::new();
        for i in 0..cfg.threads_count.max(1) {
            let inner = inner.clone();
            match std::thread::Builder::new().name(format!("nydus-prefetch-{i}")).spawn(move || inner.work_loop()) {
                Ok(h) => workers.push(h),
                Err(e) => error!("cannot start prefetch worker {i}: {e}"),
            }
        }
        Self { inner, workers: Mutex::new(workers) }
    }

    /// Queue chunks `cis` of `blob` for prefetch (ignored once stopped).
    pub fn submit(&self, blob: Arc<CachedBlob>, cis: Vec<u32>) {
        if self.inner.stopped() {
            debug!(blob_id = blob.blob_id(), "prefetcher stopped; dropping a prefetch request");
            return;
        }
        lock(&self.inner.queue).jobs.push_back(Job { blob, cis });
        self.inner.work.notify_one();
    }

    /// Cancel queued work, let running batches finish, and join the workers.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        lock(&self.inner.queue).jobs.clear();
        self.inner.work.notify_all();
        self.inner.idle.notify_all();
        let me = std::thread::current().id();
        for h in std::mem::take(&mut *lock(&self.workers)) {
            if h.thread().id() != me && h.join().is_err() {
                error!("a prefetch worker panicked");
            }
        }
    }

    /// Wait up to `timeout` until no job is queued or running; true if so.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let q = lock(&self.inner.queue);
        let (q, _) = self
            .inner
            .idle
            .wait_timeout_while(q, timeout, |q| !q.jobs.is_empty() || q.running > 0)
            .unwrap_or_else(|e| e.into_inner());
        q.jobs.is_empty() && q.running == 0
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn work_loop(&self) {
        loop {
            let job = {
                let mut q = lock(&self.queue);
                loop {
                    if self.stopped() {
                        return;
                    }
                    if let Some(job) = q.jobs.pop_front() {
                        q.running += 1;
                        break job;
                    }
                    q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.run(&job);
            let mut q = lock(&self.queue);
            q.running -= 1;
            if q.jobs.is_empty() && q.running == 0 {
                self.idle.notify_all();
            }
        }
    }

    /// Fetch a job batch by batch; stop early when asked.
    fn run(&self, job: &Job) {
        let blob = &job.blob;
        let mut seen = HashSet::new();
        let todo: Vec<u32> = job.cis.iter().copied().filter(|&ci| seen.insert(ci) && !blob.is_cached(ci)).collect();
        let mut failed = false;
        for batch in batches(blob, &todo, self.merging_size) {
            if self.stopped() {
                return;
            }
            while blob.foreground_busy() && !self.stopped() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let bytes: u64 = batch
                .iter()
                .filter(|&&ci| !blob.is_cached(ci))
                .filter_map(|&ci| blob.chunk(ci))
                .map(|l| l.compressed_size as u64)
                .sum();
            self.throttle(bytes);
            if let Err(e) = blob.ensure_with(&batch, true, self.merging_size) {
                // The cache logs each chunk's failure; one summary per job here.
                if !failed {
                    warn!(blob_id = blob.blob_id(), "prefetch incomplete: {e}");
                    failed = true;
                }
            }
        }
    }

    /// Wait until the token bucket allows `bytes` more (or stop is asked).
    fn throttle(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        let mut wait = lock(bucket).take(bytes);
        while !wait.is_zero() && !self.stopped() {
            let nap = wait.min(NAP);
            std::thread::sleep(nap);
            wait -= nap;
        }
    }
}

/// Split `cis` into batches of at most `max` stored bytes (one chunk at least).
fn batches(blob: &CachedBlob, cis: &[u32], max: u64) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut size = 0u64;
    for &ci in cis {
        let c = blob.chunk(ci).map_or(0, |l| l.compressed_size as u64);
        match out.last_mut() {
            Some(b) if size + c <= max => b.push(ci),
            _ => {
                out.push(vec![ci]);
                size = 0;
            }
        }
        size += c;
    }
    out
}

/// A token bucket over bytes: `rate` per second, up to `burst` saved up.
/// Taking more than is there goes into debt, paid by waiting.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64, burst: u64) -> Self {
        Self { rate: rate as f64, burst: burst as f64, tokens: burst as f64, last: Instant::now() }
    }

    /// Take `n` tokens; returns how long to wait before using them.
    fn take(&mut self, n: u64) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces() {
        let mut b = TokenBucket::new(1000, 1000);
        assert_eq!(b.take(1000), Duration::ZERO);
        let w = b.take(500);
        assert!(w > Duration::from_millis(400) && w <= Duration::from_millis(500), "{w:?}");
    }
}
