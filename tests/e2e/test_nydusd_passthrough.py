"""FUSE passthrough (`"passthrough": true`): once a large file is wholly in the blob cache
and its opens are released, nydusd makes a plain copy of it next to the cache and answers
later opens with FOPEN_PASSTHROUGH, so the kernel reads the copy and nydusd sees no READ.

Checked with nydusd's FUSE counters (through the API): after the copy, reading the file
again, with its FUSE page cache dropped, sends no READ; the bytes are the source's, also
through mmap; opens that overlap a page-cache open keep working (the kernel refuses to mix
the two modes on one inode); a restarted daemon reuses the copy even with the blob gone;
half-made copies are removed at start; small files and max_size caches make no copies.
"""

from __future__ import annotations

import mmap
import subprocess
import os
import shutil
import time

import pytest

import util
from nydusd import daemons, nydusd_bin, poll, v1_config, write_config  # noqa: F401  (pytest fixtures)
from test_api import Api, wait_socket

MiB = 1 << 20
BIG = 9 * MiB + 12345
MIN_SIZE = 4 * MiB
COPY_WAIT = 30.0


@pytest.fixture(scope="module")
def pt_image(tmp_path_factory):
    base = tmp_path_factory.mktemp("pt")
    src = base / "src"
    (src / "d").mkdir(parents=True)
    (src / "big1").write_bytes(os.urandom(BIG))
    (src / "d" / "big2").write_bytes(os.urandom(BIG - 777))
    (src / "d" / "small").write_bytes(os.urandom(MIN_SIZE - 1))
    img = util.create(src, base / "out", compressor="lz4_block", digester="blake3")
    return src, img


def counters(api: Api) -> dict:
    # fop_hits follows upstream's StatsFop order: getattr, readlink, open, release, read, ...
    h = api.ok("GET", "/api/v1/metrics")["fop_hits"]
    return {"open": h[2], "release": h[3], "read": h[4]}


def mount(daemons, tmp_path, img, cache, **extra_cfg):
    cfg = v1_config(img.blob_dir, cache)
    cfg.update({"passthrough": True, "passthrough_min_size": MIN_SIZE})
    cfg.update(extra_cfg)
    conf = write_config(tmp_path / f"pt-{time.monotonic_ns()}.json", cfg)
    sock = tmp_path / f"api-{time.monotonic_ns()}.sock"
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf, extra=["--apisock", sock])
    wait_socket(sock, d)
    return d, Api(sock)


def copies(cache) -> list:
    """Finished copies (64 hex digits), and half-made ones (dot names)."""
    d = cache / "passthrough"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def finished(cache) -> list:
    """Finished copies only."""
    return [c for c in copies(cache) if not c.startswith(".")]


def wait_copies(cache, n, d) -> list:
    deadline = time.monotonic() + COPY_WAIT
    while time.monotonic() < deadline:
        done = finished(cache)
        if len(done) >= n:
            return done
        time.sleep(0.1)
    pytest.fail(f"no passthrough copy after {COPY_WAIT}s: {copies(cache)}\n{d.describe()}", pytrace=False)


def read_dropped(path) -> bytes:
    """The file's bytes, read after dropping its pages from the FUSE page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        out = bytearray()
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def test_large_file_is_passed_through_after_a_full_read(daemons, tmp_path, pt_image):
    src, img = pt_image
    cache = tmp_path / "cache"
    d, api = mount(daemons, tmp_path, img, cache)
    mnt = d.mountpoint
    want = (src / "big1").read_bytes()
    assert read_dropped(mnt / "big1") == want
    [key] = wait_copies(cache, 1, d)
    assert (cache / "passthrough" / key).read_bytes() == want
    before = counters(api)
    assert read_dropped(mnt / "big1") == want
    with open(mnt / "big1", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[BIG - 5000:] == want[BIG - 5000:]
        assert m[:4096] == want[:4096]
    after = counters(api)
    assert after["open"] > before["open"], f"opens are not answered: {before} -> {after}"
    assert after["read"] == before["read"], (
        f"reads reached nydusd after the copy was made (no passthrough): {before} -> {after}\n"
        + d.describe())
    # The other large file was never read whole: no copy, its reads reach nydusd.
    assert (mnt / "d" / "big2").read_bytes()[:100] == (src / "d" / "big2").read_bytes()[:100]
    assert counters(api)["read"] > after["read"]
    assert "refused" not in d.log_text(), d.describe()
    d.stop()


def test_small_files_get_no_copy(daemons, tmp_path, pt_image):
    src, img = pt_image
    cache = tmp_path / "cache"
    d, api = mount(daemons, tmp_path, img, cache)
    want = (src / "d" / "small").read_bytes()
    assert read_dropped(d.mountpoint / "d" / "small") == want
    time.sleep(1.5)
    before = counters(api)["read"]
    assert read_dropped(d.mountpoint / "d" / "small") == want
    assert counters(api)["read"] > before, "a file below passthrough_min_size was passed through"
    assert copies(cache) == []
    d.stop()


def test_overlapping_opens_keep_working(daemons, tmp_path, pt_image):
    """An inode open through the page cache cannot also be opened in passthrough mode
    (the kernel fails such an open with EIO): nydusd must answer in the mode in force."""
    src, img = pt_image
    cache = tmp_path / "cache"
    d, api = mount(daemons, tmp_path, img, cache)
    path = d.mountpoint / "d" / "big2"
    want = (src / "d" / "big2").read_bytes()
    # Read whole and released: the copy is queued (it starts after a second of quiet).
    # RELEASE is asynchronous, and over io_uring it may reach nydusd after the next
    # OPEN (another CPU's queue): wait for it, or `held` would be the last open.
    assert read_dropped(path) == want
    released = poll(lambda: counters(api)["release"] >= counters(api)["open"], 5.0)
    assert released, "the RELEASE never reached nydusd\n" + d.describe()
    held = open(path, "rb")
    try:
        assert held.read() == want
        wait_copies(cache, 1, d)
        # `held` is a page-cache open made before the copy: later opens must match it.
        for _ in range(3):
            assert read_dropped(path) == want
        held.seek(0)
        assert held.read() == want
    finally:
        held.close()
    # Once it is released (asynchronously), opens switch to passthrough.
    deadline = time.monotonic() + 5
    while True:
        before = counters(api)["read"]
        assert read_dropped(path) == want
        if counters(api)["read"] == before:
            break
        assert time.monotonic() < deadline, "opens never switched to passthrough\n" + d.describe()
        time.sleep(0.2)
    # And while a passthrough open is held, new opens are passthrough too.
    with open(path, "rb") as f1:
        before = counters(api)["read"]
        assert read_dropped(path) == want
        assert f1.read() == want
        assert counters(api)["read"] == before
    d.stop()


def test_restart_reuses_the_copy_without_the_blob(daemons, tmp_path, pt_image):
    src, img = pt_image
    cache = tmp_path / "cache"
    d, _ = mount(daemons, tmp_path, img, cache)
    want = (src / "big1").read_bytes()
    assert read_dropped(d.mountpoint / "big1") == want
    [key] = wait_copies(cache, 1, d)
    d.stop()
    # A half-made copy left by a crash is removed at start.
    (cache / "passthrough" / f".{key}.99999").write_bytes(b"partial")
    blobs = tmp_path / "blobs-moved"
    shutil.copytree(img.blob_dir, blobs)
    try:
        for b in img.blob_dir.iterdir():
            b.unlink()
        d2, api = mount(daemons, tmp_path, img, cache)
        assert copies(cache) == [key]
        before = counters(api)["read"]
        assert read_dropped(d2.mountpoint / "big1") == want
        assert counters(api)["read"] == before, "the restarted daemon did not pass the copy through"
        d2.stop()
    finally:
        for b in blobs.iterdir():
            shutil.copy2(b, img.blob_dir / b.name)


def test_max_size_cache_makes_no_copies(daemons, tmp_path, pt_image):
    src, img = pt_image
    cache = tmp_path / "cache"
    cfg = v1_config(img.blob_dir, cache, max_size=64 * MiB)
    cfg.update({"passthrough": True, "passthrough_min_size": MIN_SIZE})
    conf = write_config(tmp_path / "pt-max.json", cfg)
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    assert (d.mountpoint / "big1").read_bytes() == (src / "big1").read_bytes()
    time.sleep(1.5)
    assert copies(cache) == []
    assert "passthrough needs a blob cache without max_size" in d.log_text(), d.describe()
    d.stop()


def test_config_rejects_a_zero_min_size(daemons, tmp_path, pt_image):
    _, img = pt_image
    cfg = v1_config(img.blob_dir, tmp_path / "cache")
    cfg.update({"passthrough": True, "passthrough_min_size": 0})
    conf = write_config(tmp_path / "pt-zero.json", cfg)
    rc, out, _ = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                      "--bootstrap", img.bootstrap], tmp_path / "mnt")
    assert rc not in (0, None) and "passthrough_min_size" in out, out


def test_refused_backing_file_falls_back_to_the_page_cache(daemons, tmp_path, pt_image):
    """A cache directory on overlayfs: the kernel refuses the copy as a backing file
    (stacking too deep). nydusd says so once and keeps serving through the page cache."""
    src, img = pt_image
    lower, upper, work, ovl = (tmp_path / n for n in ("lower", "upper", "work", "ovl"))
    for p in (lower, upper, work, ovl):
        p.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", ovl], check=True)
    try:
        d, api = mount(daemons, tmp_path, img, ovl / "cache")
        want = (src / "big1").read_bytes()
        assert read_dropped(d.mountpoint / "big1") == want
        wait_copies(ovl / "cache", 1, d)
        for _ in range(3):
            before = counters(api)["read"]
            assert read_dropped(d.mountpoint / "big1") == want
            assert counters(api)["read"] > before, "read without nydusd from a refused copy?"
        log = d.log_text()
        assert log.count("refused a passthrough backing file") == 1, d.describe()
        d.stop()
    finally:
        subprocess.run(["umount", "-l", os.fspath(ovl)], capture_output=True)


def test_concurrent_readers_across_the_switch(daemons, tmp_path, pt_image):
    """8 threads keep opening, reading random ranges and closing both large files while
    their copies are made and opens switch to passthrough: every read returns the
    source's bytes (no EIO from a mode clash), and both files end up passed through."""
    import random
    import threading

    src, img = pt_image
    cache = tmp_path / "cache"
    d, api = mount(daemons, tmp_path, img, cache)
    names = ["big1", "d/big2"]
    want = {n: (src / n).read_bytes() for n in names}
    # Read both whole once, so their copies get queued.
    for n in names:
        assert read_dropped(d.mountpoint / n) == want[n]
    errors, stop = [], threading.Event()

    def reader(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            n = rnd.choice(names)
            try:
                with open(d.mountpoint / n, "rb") as f:
                    for _ in range(rnd.randint(1, 4)):
                        off = rnd.randrange(len(want[n]))
                        size = rnd.randint(1, 3 * MiB)
                        f.seek(off)
                        got = f.read(size)
                        if got != want[n][off:off + size]:
                            errors.append(f"{n} at {off}+{size}: wrong bytes")
                            return
                    if rnd.random() < 0.3:
                        time.sleep(rnd.random() / 20)
            except OSError as e:
                errors.append(f"{n}: {e}")
                return

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        # The copies wait for a quiet second; give them gaps.
        deadline = time.monotonic() + 40
        while len(finished(cache)) < 2 and time.monotonic() < deadline:
            stop.set()
            for t in threads:
                t.join()
            time.sleep(1.5)
            stop.clear()
            threads = [threading.Thread(target=reader, args=(k + 100,)) for k in range(8)]
            for t in threads:
                t.start()
            time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, "\n".join(errors[:10]) + "\n" + d.describe()
    assert len(finished(cache)) == 2, copies(cache)
    # Another round with both passed through.
    stop.clear()
    threads = [threading.Thread(target=reader, args=(k + 200,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, "\n".join(errors[:10]) + "\n" + d.describe()
    before = counters(api)["read"]
    for n in names:
        assert read_dropped(d.mountpoint / n) == want[n]
    assert counters(api)["read"] == before
    assert d.alive() and "WARN" not in d.log_text(), d.describe()
    d.stop()


def test_no_copy_that_would_fill_the_cache_filesystem(daemons, tmp_path, pt_image):
    """A copy must leave 10 % of the cache's filesystem free: on a 19 MiB tmpfs that
    already holds the blob cache there is no room, so nydusd says why, once, and reads
    through the page cache."""
    src, img = pt_image
    small = tmp_path / "small-fs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=19m", "tmpfs", small], check=True)
    try:
        d, api = mount(daemons, tmp_path, img, small / "cache")
        want = (src / "big1").read_bytes()
        for _ in range(3):
            assert read_dropped(d.mountpoint / "big1") == want
            time.sleep(1.5)
        assert copies(small / "cache") == []
        log = d.log_text()
        assert log.count("would leave less than 10 % of the filesystem free") == 1, d.describe()
        before = counters(api)["read"]
        assert read_dropped(d.mountpoint / "big1") == want
        assert counters(api)["read"] > before
        d.stop()
    finally:
        subprocess.run(["umount", "-l", os.fspath(small)], capture_output=True)
