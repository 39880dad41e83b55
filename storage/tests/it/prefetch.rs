//! Background prefetch.

use std::time::{Duration, Instant};

use nydus_storage::testutil::BlobSpec;
use nydus_storage::{CacheConfig, PrefetchConfig, Prefetcher};

use crate::util::{check_all, total_stored, Fixture};

#[test]
fn prefetch_fills_the_cache() {
    let f = Fixture::new(&BlobSpec { chunk_count: 40, ..Default::default() });
    let m = f.manager(CacheConfig { amplify_io: 0, ..f.cfg() });
    let blob = f.open(&m);
    let p = Prefetcher::new(&PrefetchConfig {
        enable: true,
        threads_count: 2,
        merging_size: 64 << 10,
        ..Default::default()
    });
    let base = f.reads();
    p.submit(blob.clone(), (0..20).rev().collect());
    p.submit(blob.clone(), (10..40).collect());
    assert!(p.wait_idle(Duration::from_secs(20)));
    assert!((0..40).all(|ci| blob.is_cached(ci)));
    let mt = m.metrics();
    assert_eq!(mt.prefetch_bytes, total_stored(&f.blob), "{mt:?}");
    assert!(f.reads() - base < 40, "batches are merged up to merging_size");
    let t = Instant::now();
    p.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
    p.submit(blob.clone(), vec![0]); // ignored after stop
    check_all(&blob, &f.blob);
    assert_eq!(m.metrics().hits, 40);
}

#[test]
fn stop_is_prompt_while_throttled() {
    let f = Fixture::new(&BlobSpec { chunk_count: 64, ..Default::default() });
    let m = f.manager(f.cfg());
    let blob = f.open(&m);
    let p = Prefetcher::new(&PrefetchConfig {
        enable: true,
        threads_count: 2,
        merging_size: 16 << 10,
        bandwidth_rate: 16 << 10,
        ..Default::default()
    });
    for _ in 0..4 {
        p.submit(blob.clone(), (0..64).collect());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!p.wait_idle(Duration::from_millis(10)));
    let t = Instant::now();
    drop(p);
    assert!(t.elapsed() < Duration::from_millis(500), "stop took {:?}", t.elapsed());
    let cached = (0..64).filter(|&ci| blob.is_cached(ci)).count();
    assert!(cached > 0 && cached < 64, "throttling let {cached} chunks through");
}
