"""The blob cache behind nydusd: lazy fetching, prefetch, serving from the
cache alone, and the size limit.

Cache files (per blob): <id>.blob.data (the uncompressed blob, sparse),
<id>.chunk_map (32-byte header "NYCM", version, chunk count, ...; then one
ready bit per chunk), <id>.blob.meta.  "Only this file's chunks are cached"
is checked both on the ready bits and on the blocks allocated to .blob.data.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

import treecmp
import util
from nydusd import (allocated, chunk_map, daemons, dir_allocated,  # noqa: F401
                    drop_page_cache, guarded, inspect_chunks, nydusd_bin, poll, read_bytes,
                    v1_config, write_config)

MiB = 1 << 20
# Slack for filesystem metadata counted in st_blocks (ext4 extent tree blocks).
FS_SLACK = 64 * 1024
LAZY_FILE = "files/random_3m"


def file_chunks(img, rel) -> tuple:
    """(set of ci indexes, their plain bytes rounded up to 4 KiB) of one file."""
    recs = inspect_chunks(img, rel)
    uniq = {r["ci_index"]: r["uncompressed_size"] for r in recs}
    assert all(r["blob_index"] == 0 for r in recs), recs
    return set(uniq), sum((n + 4095) // 4096 * 4096 for n in uniq.values())


def assert_same_tree(src, mnt, d):
    mounted = treecmp.load_dir(mnt)
    diffs = treecmp.compare(src.tree, mounted)
    assert not diffs, treecmp.format_diffs(diffs, src.tree, mounted) + "\n" + d.describe()


@pytest.mark.parametrize("amplify_io", [0, MiB], ids=["no-amplify", "amplify-1m"])
def test_lazy_only_read_file_is_cached(daemons, tmp_path, src_small, amplify_io):
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=0x1000)
    blob_id = img.blob_ids[0]
    cache = tmp_path / "cache"
    data = cache / f"{blob_id}.blob.data"
    want_cis, want_bytes = file_chunks(img, LAZY_FILE)

    d = daemons.mount(img, tmp_path / "mnt", cache, amplify_io=amplify_io)
    # Mounting and listing reads metadata only: no chunk data yet.
    os.listdir(d.mountpoint / "files")
    cm = chunk_map(cache, blob_id)
    assert allocated(data) <= FS_SLACK, f"{allocated(data)} bytes of chunk data cached " \
                                        f"before any read\n{d.describe()}"
    if cm is not None:
        assert not cm[1], f"{len(cm[1])} chunks ready before any read"

    got = read_bytes(d.mountpoint / LAZY_FILE)
    assert got == (src_small.path / LAZY_FILE).read_bytes(), "content differs"

    count, ready = chunk_map(cache, blob_id) or (None, None)
    alloc = allocated(data)
    ctx = (f"\nread {LAZY_FILE}: {len(want_cis)} chunks, {want_bytes} bytes (4K-rounded); "
           f"blob has {count} chunks; .blob.data allocates {alloc} bytes; "
           f"ready bits: {len(ready) if ready is not None else 'n/a'}\n{d.describe()}")
    assert count is None or count > 5 * len(want_cis), "file is not well below the blob" + ctx
    if amplify_io == 0:
        if ready is not None:
            assert ready == want_cis, (f"ready chunks differ from the file's: extra "
                                       f"{sorted(ready - want_cis)[:20]}, missing "
                                       f"{sorted(want_cis - ready)[:20]}") + ctx
        assert want_bytes <= alloc <= want_bytes + FS_SLACK, "allocated size" + ctx
    else:
        if ready is not None:
            assert want_cis <= ready, "not all of the file's chunks are ready" + ctx
        assert want_bytes <= alloc <= want_bytes + amplify_io + FS_SLACK, "allocated size" + ctx
    d.stop()

    # Warm restart with the blob moved away: the cached file is served from
    # the cache alone.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    shutil.move(img.blob_path(), hidden / blob_id)
    d2 = daemons.mount(img, tmp_path / "mnt", cache, amplify_io=amplify_io)
    kind, val = guarded(lambda: read_bytes(d2.mountpoint / LAZY_FILE), what=f"read {LAZY_FILE}")
    assert kind == "ok", f"reading a cached file with the blob gone failed: {val!r}\n" \
                         f"{d2.describe()}"
    assert val == got
    d2.stop()


def test_prefetch_files_option(daemons, tmp_path, src_small):
    """--prefetch-files: the listed files' chunks are fetched without any read."""
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=0x1000)
    blob_id = img.blob_ids[0]
    listed = ["files/random_3m", "dup/orig"]
    want = set()
    for rel in listed:
        want |= file_chunks(img, rel)[0]
    plist = tmp_path / "prefetch.txt"
    plist.write_text("".join(f"/{rel}\n" for rel in listed))
    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt", cache, amplify_io=0, prefetch=True,
                      prefetch_all=False, extra=["--prefetch-files", plist])
    cm = poll(lambda: (lambda m: m if m and want <= m[1] else None)(chunk_map(cache, blob_id)),
              timeout=30)
    assert cm, f"listed files not prefetched within 30s: {chunk_map(cache, blob_id)}\n" \
               f"{d.describe()}"
    time.sleep(0.5)
    count, ready = chunk_map(cache, blob_id)
    assert ready == want, f"prefetched more than the listed files: {len(ready)} ready, " \
                          f"{len(want)} wanted of {count}\n{d.describe()}"
    d.stop()
    d.assert_clean_log()


def test_prefetch_all_then_serve_without_blobs(daemons, tmp_path, src_small):
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=0x100000)
    blob_id = img.blob_ids[0]
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    d = daemons.mount(img, mnt, cache, prefetch=True, prefetch_all=True)

    def complete():
        m = chunk_map(cache, blob_id)
        return m is not None and m[0] > 0 and len(m[1]) == m[0]
    assert poll(complete, timeout=60, interval=0.1), \
        f"prefetch_all did not complete the cache within 60s: " \
        f"{(lambda m: m and (m[0], len(m[1])))(chunk_map(cache, blob_id))}\n{d.describe()}"
    st = src_small.chunk_stats(img.chunk_size)
    alloc = allocated(cache / f"{blob_id}.blob.data")
    # Hole-only chunks may be stored as holes; everything else must be there.
    assert alloc <= st["unique_bytes_4k"] + FS_SLACK, \
        f".blob.data allocates {alloc} bytes, more than the image's data " \
        f"({st['unique_bytes_4k']})"

    # Nothing was read through the mount yet: every read below reaches the
    # daemon, which must serve it from the cache alone.
    for b in img.blob_ids:
        os.unlink(img.blob_dir / b)
    assert_same_tree(src_small, mnt, d)
    d.stop()
    d.assert_clean_log()

    # Restart on the same cache with an empty blob directory.
    assert not os.listdir(img.blob_dir)
    d2 = daemons.mount(img, mnt, cache)
    assert_same_tree(src_small, mnt, d2)
    d2.stop()
    d2.assert_clean_log()


def test_cache_limit(daemons, tmp_path, src_small):
    chunk = 0x100000
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=chunk)
    data = src_small.chunk_stats(chunk)["unique_bytes_4k"]
    limit = data // 4
    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt", cache, max_size=limit)

    peak = [0, ""]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            a = dir_allocated(cache)
            if a > peak[0]:
                peak[0] = a
                peak[1] = ", ".join(f"{n}={allocated(cache / n)}" for n in sorted(os.listdir(cache)))
            time.sleep(0.005)
    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    try:
        mounted = treecmp.load_dir(d.mountpoint)
        # Read everything a second time, past the kernel's page cache: the
        # early chunks were evicted and must be fetched again.
        for rel in src_small.regular_inodes():
            drop_page_cache(d.mountpoint / rel)
        mounted2 = treecmp.load_dir(d.mountpoint)
    finally:
        done.set()
        t.join(5)
    for m in (mounted, mounted2):
        diffs = treecmp.compare(src_small.tree, m)
        assert not diffs, treecmp.format_diffs(diffs, src_small.tree, m) + "\n" + d.describe()
    ctx = (f"limit {limit} (image data {data}), chunk {chunk}; peak {peak[0]} ({peak[1]})\n"
           f"{d.describe()}")
    print(f"cache limit {limit}, image data {data}, peak {peak[0]}")
    assert peak[0] > 0, "sampler saw an empty cache"
    assert peak[0] <= limit + chunk + FS_SLACK, "cache directory exceeded max_size + one chunk: " \
                                                + ctx
    assert dir_allocated(cache) <= limit + FS_SLACK, "cache above max_size at rest: " + ctx
    d.stop()
    d.assert_clean_log(allow=(r"max_size",))


def test_damaged_cache_files_are_rebuilt(daemons, tmp_path, src_mini):
    """Cache files that do not match the blob (a garbage chunk map, a chunk
    map of another size) are discarded on start, never trusted: the tree
    still reads back exactly."""
    img = util.create(src_mini.path, tmp_path / "out", compressor="zstd", digester="blake3",
                      chunk_size=0x1000)
    blob_id = img.blob_ids[0]
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    d = daemons.mount(img, mnt, cache)
    assert_same_tree(src_mini, mnt, d)
    d.stop()
    cm_path = cache / f"{blob_id}.chunk_map"
    data_path = cache / f"{blob_id}.blob.data"
    assert cm_path.is_file() and data_path.is_file(), sorted(os.listdir(cache))
    good_map = cm_path.read_bytes()

    # 1. chunk map all ones (every chunk "ready") over an empty data file.
    cm_path.write_bytes(b"\xff" * len(good_map))
    data_path.write_bytes(b"")
    d = daemons.mount(img, mnt, cache)
    assert_same_tree(src_mini, mnt, d)
    d.stop()
    # 2. a chunk map of the wrong size over zeroed data.
    cm_path.write_bytes(good_map + b"\xff" * 64)
    size = data_path.stat().st_size
    data_path.write_bytes(bytes(size))
    d = daemons.mount(img, mnt, cache)
    assert_same_tree(src_mini, mnt, d)
    d.stop()


def test_dummy_cache_serves_from_backend(daemons, tmp_path, src_mini):
    """cache type "dummycache": no cache files, every read goes to the blob."""
    img = util.create(src_mini.path, tmp_path / "out", compressor="lz4_block",
                      digester="blake3", chunk_size=0x1000)
    cfg = v1_config(img.blob_dir, tmp_path / "unused", cache_type="dummycache")
    del cfg["device"]["cache"]["config"]
    conf = write_config(tmp_path / "dummy.json", cfg)
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    assert_same_tree(src_mini, tmp_path / "mnt", d)
    d.stop()
    d.assert_clean_log()
    assert not (tmp_path / "unused").exists(), "dummycache created cache files"
    assert util.listing(img.blob_dir) == set(img.blob_ids)
