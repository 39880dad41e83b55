"""FUSE over io_uring: with the kernel's switch on (the fuse module's
``enable_uring``), nydusd asks for it in its FUSE_INIT reply and serves
requests from pinned threads on each kernel queue (one queue per CPU;
``--thread-num`` threads in all, at least two per queue).

* the mounted fixture tree equals the source, and requests really come
  through the rings (the daemon logs it once, and its queue threads exist);
* ``"io_uring": false`` in the config, or the kernel switch off, keep the
  ``/dev/fuse`` workers alone;
* 16 threads reading random ranges get the source's bytes;
* a daemon killed with SIGKILL leaves a dead mount (the kernel aborts the
  connection as the rings go), which the next daemon replaces.

The rest of the nydusd suite runs over io_uring too in CI (tools/test.sh
runs the test_nydusd_* modules again with NYDUS_E2E_FUSE_URING=1).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

import treecmp
import util
from nydusd import (daemons, guarded, make_data_tree, nydusd_bin, read_bytes,  # noqa: F401
                    regular_files, v1_config, write_config)
from test_nydusd_concurrency import hammer

ENABLE_URING = Path("/sys/module/fuse/parameters/enable_uring")
IN_USE = "serving FUSE requests over io_uring"
ASKED = "asked the kernel for FUSE over io_uring"


@pytest.fixture
def kernel_uring():
    """The kernel's switch on for one test (restored after)."""
    if not ENABLE_URING.exists():
        pytest.fail(f"{ENABLE_URING} is missing: this kernel has no FUSE over io_uring "
                    "(CONFIG_FUSE_IO_URING)", pytrace=False)
    before = ENABLE_URING.read_text().strip()

    def set_switch(on: bool):
        ENABLE_URING.write_text("Y" if on else "N")

    set_switch(True)
    yield set_switch
    ENABLE_URING.write_text(before)


def queue_threads(pid: int) -> list:
    names = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        name = (t / "comm").read_text().strip()
        if name.startswith("fuse-q"):
            names.append(name)
    return sorted(names)


def possible_cpus() -> int:
    n = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        n = max(n, int(part.split("-")[-1]) + 1)
    return n


def test_tree_is_served_over_io_uring(kernel_uring, daemons, tmp_path, src_small):
    img = util.create(src_small.path, tmp_path / "out", compressor="lz4_block", chunk_size=0x10000)
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    mounted = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(src_small.tree, mounted)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, mounted) + "\n" + d.describe()
    log = d.log_text()
    assert ASKED in log and IN_USE in log, d.describe()
    assert len(queue_threads(d.pid)) == 2 * possible_cpus(), queue_threads(d.pid)
    rc = d.stop()
    assert rc == 0, d.describe()
    d.assert_clean_log()


def test_thread_num_spreads_over_the_queues(kernel_uring, daemons, tmp_path):
    src = make_data_tree(tmp_path / "src")
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    cpus = possible_cpus()
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache", extra=["--thread-num", str(4 * cpus)])
    for rel in regular_files(src):
        assert read_bytes(d.mountpoint / rel) == (src / rel).read_bytes(), rel
    assert len(queue_threads(d.pid)) == 4 * cpus, queue_threads(d.pid)
    assert "threads_per_queue=4" in d.log_text(), d.describe()
    d.stop()
    d.assert_clean_log()


@pytest.mark.parametrize("how", ["config", "kernel"])
def test_io_uring_can_be_turned_off(kernel_uring, daemons, tmp_path, how):
    src = make_data_tree(tmp_path / "src")
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    cfg = v1_config(img.blob_dir, tmp_path / "cache")
    if how == "config":
        cfg["io_uring"] = False
    else:
        kernel_uring(False)
    conf = write_config(tmp_path / "c.json", cfg)
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    for rel in regular_files(src):
        assert read_bytes(d.mountpoint / rel) == (src / rel).read_bytes(), rel
    log = d.log_text()
    assert ASKED not in log and IN_USE not in log, d.describe()
    assert queue_threads(d.pid) == [], queue_threads(d.pid)
    d.stop()
    d.assert_clean_log()


def test_concurrent_random_reads_over_io_uring(kernel_uring, daemons, tmp_path, src_small):
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", chunk_size=0x1000)
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    stats = hammer(src_small.path, d.mountpoint, src_small.regular_inodes(), 5.0)
    assert not stats["failures"], "\n".join(stats["failures"][:20]) + "\n" + d.describe()
    assert stats["reads"] > 100, stats
    assert IN_USE in d.log_text(), d.describe()
    d.stop()
    d.assert_clean_log()


def test_kill9_over_io_uring_and_restart(kernel_uring, daemons, tmp_path):
    src = make_data_tree(tmp_path / "src")
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    files = regular_files(src)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    d = daemons.mount(img, mnt, cache)
    assert read_bytes(mnt / files[0]) == (src / files[0]).read_bytes()
    assert IN_USE in d.log_text(), d.describe()
    os.kill(d.pid, signal.SIGKILL)
    assert d.wait_exit(10) == -signal.SIGKILL
    kind, val = guarded(lambda: os.statvfs(mnt), what="statvfs on a dead mount")
    assert kind == "err" and val.errno in (errno.ENOTCONN, errno.ECONNABORTED), (kind, val)
    d2 = daemons.mount(img, mnt, cache)
    for rel in files:
        assert read_bytes(mnt / rel) == (src / rel).read_bytes(), rel
    assert "stale FUSE mount" in d2.log_text(), d2.describe()
    d2.stop()
    d2.assert_clean_log(allow=(r"stale FUSE mount",))
