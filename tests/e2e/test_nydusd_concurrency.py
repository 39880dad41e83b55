"""Concurrent reads: 16 threads read random ranges of random files of the
mounted small fixture for NYDUS_E2E_CONC_SECS seconds (default 30, at most
30), comparing every byte with the source.  Threads drop the kernel's page
cache of a file now and then, so reads keep reaching the daemon (which
starts with a cold cache: many threads wait for the same chunks at first).
The daemon log must stay free of WARN/ERROR lines.

A second, shorter run does the same with a cache limit far below the data
size, so that eviction races with fetches and reads.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

import util
from nydusd import (daemons, dir_allocated, drop_page_cache,  # noqa: F401  (fixtures)
                    nydusd_bin)

THREADS = 16
CONC_SECS = min(30.0, float(os.environ.get("NYDUS_E2E_CONC_SECS", "30")))
MiB = 1 << 20


def hammer(src_root, mnt, files, seconds: float, seed: int = 1234) -> dict:
    """Run THREADS readers for ``seconds``; returns stats, raising on the
    first mismatch / error (reported with enough context to reproduce)."""
    sizes = {rel: os.path.getsize(os.path.join(src_root, rel)) for rel in files}
    stop = time.monotonic() + seconds
    failures: list = []
    stats = {"reads": 0, "bytes": 0, "drops": 0}
    lock = threading.Lock()

    def worker(n: int):
        rng = random.Random(seed * 1000 + n)
        local = {"reads": 0, "bytes": 0, "drops": 0}
        try:
            while time.monotonic() < stop and not failures:
                rel = rng.choice(files)
                size = sizes[rel]
                mp = os.path.join(mnt, rel)
                if rng.random() < 0.15:
                    drop_page_cache(mp)
                    local["drops"] += 1
                if size == 0:
                    off, ln = 0, 4096
                else:
                    off = rng.randrange(0, size + 1)
                    if rng.random() < 0.1:
                        off = max(0, size - rng.randrange(1, 8192))   # around EOF
                    ln = rng.choice([1, 511, 4096, 4097, 65536, 131072 + 3, MiB, 3 * MiB // 2])
                fd = os.open(mp, os.O_RDONLY)
                try:
                    got = os.pread(fd, ln, off)
                finally:
                    os.close(fd)
                with open(os.path.join(src_root, rel), "rb") as f:
                    f.seek(off)
                    want = f.read(ln)
                if got != want:
                    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                 min(len(got), len(want)))
                    failures.append(f"thread {n}: {rel} pread({ln}, {off}) returned {len(got)} "
                                    f"bytes, expected {len(want)}; first difference at "
                                    f"+{first}")
                    return
                local["reads"] += 1
                local["bytes"] += len(got)
        except OSError as e:
            failures.append(f"thread {n}: {rel} off={off} len={ln}: {e!r}")
        finally:
            with lock:
                for k, v in local.items():
                    stats[k] += v

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    hung = [t.name for t in threads if t.is_alive()]
    if hung:
        pytest.fail(f"HANG: {len(hung)} reader thread(s) still blocked 60s after the end",
                    pytrace=False)
    stats["failures"] = failures
    return stats


def _run(daemons, tmp_path, src, seconds, **cfg):
    img = util.create(src.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=0x1000)
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache", extra=["--thread-num", "8"],
                      **cfg)
    files = src.regular_inodes()
    t0 = time.monotonic()
    stats = hammer(src.path, d.mountpoint, files, seconds)
    took = time.monotonic() - t0
    assert not stats["failures"], "\n".join(stats["failures"][:20]) + "\n" + d.describe()
    assert d.alive(), d.describe()
    assert stats["reads"] > 100, f"only {stats['reads']} reads in {took:.1f}s: {stats}"
    print(f"{stats['reads']} reads, {stats['bytes'] / MiB:.0f} MiB, {stats['drops']} cache drops "
          f"in {took:.1f}s")
    d.stop()
    return d, img


def test_concurrent_random_reads(daemons, tmp_path, src_small):
    d, _ = _run(daemons, tmp_path, src_small, CONC_SECS)
    d.assert_clean_log()


def test_concurrent_reads_with_eviction(daemons, tmp_path, src_small):
    """max_size of 2 MiB (the data is ~18 MiB of 4 KiB chunks): reads must
    stay correct while chunks are evicted under them."""
    limit = 2 * MiB
    d, _ = _run(daemons, tmp_path, src_small, max(5.0, CONC_SECS / 3), max_size=limit)
    used = dir_allocated(tmp_path / "cache")
    assert used <= limit + 64 * 1024, f"cache dir holds {used} bytes, limit {limit}"
    # Overshooting the limit while chunks are pinned is logged as a warning.
    d.assert_clean_log(allow=(r"max_size",))
