"""Faults: damaged chunk data, blobs that disappear or shrink, bad
bootstraps and configs, a killed daemon, two daemons on one cache.

The rule everywhere: a read of damaged or missing data fails with EIO
within a bounded time (never a hang, never wrong bytes), everything else
keeps working and the daemon stays up; a daemon that cannot start exits
non-zero quickly with an error naming the culprit and leaves nothing
mounted.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import pytest

import util
from nydusd import (chunk_map, daemons, drop_page_cache, errno_name,  # noqa: F401
                    fuse_mounts_at, guarded, inspect_chunks, make_data_tree, nydusd_bin,
                    read_bytes, regular_files, stat_errno, v1_config, write_config)

START_FAIL_SECS = 10.0


@pytest.fixture(scope="module")
def data_tree(tmp_path_factory):
    return make_data_tree(tmp_path_factory.mktemp("nydusd-data") / "src")


def build(src, out, compressor="none"):
    return util.create(src, out, compressor=compressor, digester="blake3", chunk_size=0x1000)


def files_by_blob_offset(img, src) -> list:
    """[(first stored offset, last stored end, rel)] of the files, in blob order."""
    out = []
    for rel in regular_files(src):
        recs = inspect_chunks(img, rel)
        if recs:
            out.append((min(r["compressed_offset"] for r in recs),
                        max(r["compressed_offset"] + r["compressed_size"] for r in recs), rel))
    return sorted(out)


def expect_read(path, want: bytes | None, what: str, d):
    """want=None: must fail with EIO; else must return exactly want."""
    kind, val = guarded(lambda: read_bytes(path), what=f"read {what}")
    if want is None:
        assert kind == "err" and val.errno == errno.EIO, \
            f"read {what}: expected EIO, got " + \
            (f"{len(val)} bytes" if kind == "ok" else f"{errno_name(val)} ({val})") + \
            "\n" + d.describe()
    else:
        assert kind == "ok", f"read {what} failed: {val!r}\n{d.describe()}"
        assert val == want, f"read {what}: wrong content ({len(val)} bytes, expected {len(want)})"


# --------------------------------------------------------------------------
# damaged / missing data
# --------------------------------------------------------------------------

def test_corrupt_chunk_gives_eio_with_digest_validate(daemons, tmp_path, data_tree):
    img = build(data_tree, tmp_path / "out")
    order = files_by_blob_offset(img, data_tree)
    victim = order[len(order) // 2][2]            # neighbours on both sides in the blob
    recs = sorted(inspect_chunks(img, victim), key=lambda r: r["compressed_offset"])
    bad = recs[1]
    with open(img.blob_path(), "r+b") as f:
        pos = bad["compressed_offset"] + bad["compressed_size"] // 2
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))

    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt", cache, digest_validate=True)
    others = [rel for _, _, rel in order if rel != victim]
    # The others first, in blob order: the file stored right before the
    # victim drags the damaged chunk into its (amplified) backend read.
    for rel in others:
        expect_read(d.mountpoint / rel, (data_tree / rel).read_bytes(), rel, d)
    expect_read(d.mountpoint / victim, None, f"{victim} (chunk {bad['ci_index']} damaged)", d)
    assert d.alive(), d.describe()
    # Again, past the page cache: still EIO (the bad chunk was not cached),
    # and the others still read fine.
    drop_page_cache(d.mountpoint / victim)
    expect_read(d.mountpoint / victim, None, f"{victim} (second time)", d)
    for rel in others:
        drop_page_cache(d.mountpoint / rel)
        expect_read(d.mountpoint / rel, (data_tree / rel).read_bytes(), rel, d)
    cm = chunk_map(cache, img.blob_ids[0])
    if cm is not None:
        assert bad["ci_index"] not in cm[1], "the damaged chunk is marked ready in the chunk map"
    assert os.listdir(d.mountpoint), "mount unusable after the fault"
    assert d.problem_lines(), "the digest mismatch was not logged\n" + d.describe()
    d.stop()


def test_blob_unlinked_while_mounted(daemons, tmp_path, data_tree):
    """Unlinking a blob that the daemon has open: reads of uncached data
    either still succeed (the open file is still readable) or fail with EIO;
    they return in bounded time and never return wrong bytes."""
    img = build(data_tree, tmp_path / "out", compressor="zstd")
    files = regular_files(data_tree)
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache", amplify_io=0)
    expect_read(d.mountpoint / files[0], (data_tree / files[0]).read_bytes(), files[0], d)
    os.unlink(img.blob_path())
    outcomes = {}
    for rel in files[1:]:
        kind, val = guarded(lambda: read_bytes(d.mountpoint / rel), what=f"read {rel}")
        if kind == "ok":
            assert val == (data_tree / rel).read_bytes(), f"{rel}: wrong content"
            outcomes[rel] = "ok"
        else:
            assert val.errno == errno.EIO, f"{rel}: {val!r} (expected EIO or success)"
            outcomes[rel] = "EIO"
    print("after unlink:", outcomes)
    expect_read(d.mountpoint / files[0], (data_tree / files[0]).read_bytes(), files[0], d)
    assert d.alive(), d.describe()
    d.stop()


def test_blob_truncated_while_mounted(daemons, tmp_path, data_tree):
    """The blob shrinks under a running daemon: data past the cut is EIO
    within a bounded time, data before it still reads fine."""
    img = build(data_tree, tmp_path / "out")
    order = files_by_blob_offset(img, data_tree)
    cut_at = order[len(order) // 2][0]                 # first byte of a middle file
    before = [rel for _, end, rel in order if end <= cut_at]
    after = [rel for start, _, rel in order if start >= cut_at]
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    os.truncate(img.blob_path(), cut_at)
    for rel in after:
        t0 = time.monotonic()
        expect_read(d.mountpoint / rel, None, f"{rel} (stored past the cut at {cut_at})", d)
        assert time.monotonic() - t0 < 10
    # Files wholly before the cut must not suffer from their neighbours
    # being gone (an amplified read running past the end of the blob).
    for rel in before:
        expect_read(d.mountpoint / rel, (data_tree / rel).read_bytes(),
                    f"{rel} (stored before the cut)", d)
    assert d.alive(), d.describe()
    d.stop()


def test_missing_blob_after_restart(daemons, tmp_path, data_tree):
    """Warm restart with the blob gone: cached files read fine, uncached
    ones fail with EIO in bounded time, and the daemon stays up."""
    img = build(data_tree, tmp_path / "out", compressor="zstd")
    files = regular_files(data_tree)
    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt", cache, amplify_io=0)
    cached = files[0]
    expect_read(d.mountpoint / cached, (data_tree / cached).read_bytes(), cached, d)
    d.stop()
    os.unlink(img.blob_path())
    d2 = daemons.mount(img, tmp_path / "mnt", cache, amplify_io=0)
    expect_read(d2.mountpoint / cached, (data_tree / cached).read_bytes(), cached, d2)
    for rel in files[1:4]:
        expect_read(d2.mountpoint / rel, None, f"{rel} (uncached, blob missing)", d2)
    assert d2.alive(), d2.describe()
    log = d2.log_text()
    assert img.blob_ids[0] in log, "the missing blob is not named in the log\n" + d2.describe()
    d2.stop()


# --------------------------------------------------------------------------
# failures to start
# --------------------------------------------------------------------------

def assert_start_failure(daemons, args, mnt, mentions: list):
    rc, out, took = daemons.run_to_exit(args, mnt, timeout=START_FAIL_SECS)
    ctx = f"$ nydusd {' '.join(map(str, args))}\nexit status {rc} after {took:.1f}s\n{out}"
    assert rc != 0, "expected a non-zero exit status\n" + ctx
    assert rc > 0 and rc != 101 and "panicked at" not in out, "crash, not a clean error\n" + ctx
    assert "error" in out.lower(), "no error message\n" + ctx
    for m in mentions:
        assert str(m) in out, f"the error does not mention {str(m)!r}\n" + ctx
    assert not fuse_mounts_at(os.path.realpath(mnt)), f"{mnt} left mounted\n" + ctx


@pytest.mark.parametrize("how", ["half", "1000-bytes", "empty", "garbage"])
def test_bad_bootstrap_fails_fast(daemons, tmp_path, data_tree, how):
    img = build(data_tree, tmp_path / "out")
    raw = img.bootstrap.read_bytes()
    bad = tmp_path / "bad.boot"
    bad.write_bytes({"half": raw[:len(raw) // 2], "1000-bytes": raw[:1000], "empty": b"",
                     "garbage": os.urandom(len(raw))}[how])
    conf = write_config(tmp_path / "c.json", v1_config(img.blob_dir, tmp_path / "cache"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert_start_failure(daemons, ["--config", conf, "--mountpoint", mnt, "--bootstrap", bad],
                         mnt, [bad])


def _set(cfg: dict, path: str, value):
    *parents, last = path.split(".")
    for p in parents:
        cfg = cfg[p]
    cfg[last] = value


BAD_CONFIGS = {
    "work_dir-int": ("device.cache.config.work_dir", 5, ["work_dir"]),
    "digest_validate-str": ("digest_validate", "yes", ["digest_validate"]),
    "s3-no-bucket": ("device.backend", {"type": "s3", "config": {"region": "us-east-1"}},
                     ["device.backend.config.bucket_name"]),
    "registry-no-host": ("device.backend", {"type": "registry", "config": {"repo": "r"}},
                         ["device.backend.config.host"]),
    "backend-unknown": ("device.backend.type", "ftp", ["ftp"]),
    "cache-fscache": ("device.cache.type", "fscache", ["fscache"]),
    "max_size-zero": ("device.cache.config.max_size", 0, ["max_size"]),
    "threads-zero": ("fs_prefetch", {"enable": True, "threads_count": 0}, ["threads_count"]),
    "mode-bogus": ("mode", "sideways", ["mode"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_fails_fast(daemons, tmp_path, data_tree, case):
    key, value, mentions = BAD_CONFIGS[case]
    img = build(data_tree, tmp_path / "out")
    cfg = v1_config(img.blob_dir, tmp_path / "cache")
    _set(cfg, key, value)
    conf = write_config(tmp_path / "bad.json", cfg)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert_start_failure(daemons, ["--config", conf, "--mountpoint", mnt, "--bootstrap",
                                   img.bootstrap], mnt, mentions + [conf])


@pytest.mark.parametrize("case", ["not-json-or-toml", "missing-file", "empty-object"])
def test_unreadable_config_fails_fast(daemons, tmp_path, data_tree, case):
    img = build(data_tree, tmp_path / "out")
    conf = tmp_path / "c.json"
    if case == "not-json-or-toml":
        conf.write_text("{{{ this is : not [ a config")
    elif case == "empty-object":
        conf.write_text("{}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert_start_failure(daemons, ["--config", conf, "--mountpoint", mnt, "--bootstrap",
                                   img.bootstrap], mnt, [conf])


# --------------------------------------------------------------------------
# crash and restart; two daemons on one cache
# --------------------------------------------------------------------------

def test_kill9_leaves_stale_mount_and_restart_recovers(daemons, tmp_path, data_tree):
    img = build(data_tree, tmp_path / "out", compressor="zstd")
    files = regular_files(data_tree)
    cache = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    d = daemons.mount(img, mnt, cache)
    expect_read(mnt / files[0], (data_tree / files[0]).read_bytes(), files[0], d)
    held = os.open(mnt / files[1], os.O_RDONLY)
    try:
        os.kill(d.pid, signal.SIGKILL)
        assert d.wait_exit(10) == -signal.SIGKILL
        # (lstat may still answer from the kernel's attribute cache; statfs
        # and reads always go to the server.)
        kind, val = guarded(lambda: os.statvfs(mnt), what="statvfs on a dead mount")
        # (ECONNABORTED when the daemon served over io_uring: the kernel aborts
        # the connection as the rings go.)
        assert kind == "err" and val.errno in (errno.ENOTCONN, errno.ECONNABORTED), \
            f"statvfs of the mountpoint after kill -9: {kind} {val!r}, expected ENOTCONN"
        kind, val = guarded(lambda: os.pread(held, 100, 0), what="pread on a dead mount")
        assert kind == "err" and val.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), \
            f"read of an open file after kill -9: {kind} {val!r}"
    finally:
        os.close(held)

    # The next daemon on the same mountpoint and cache detects and replaces
    # the stale mount.
    d2 = daemons.mount(img, mnt, cache)
    for rel in files:
        expect_read(mnt / rel, (data_tree / rel).read_bytes(), rel, d2)
    d2.stop()
    assert not fuse_mounts_at(d2.mountpoint), \
        f"mounts left on {mnt}: {fuse_mounts_at(d2.mountpoint)}"
    assert stat_errno(mnt) is None


def test_second_daemon_on_same_cache_dir_refused(daemons, tmp_path, data_tree):
    img = build(data_tree, tmp_path / "out")
    cache = tmp_path / "cache"
    d = daemons.mount(img, tmp_path / "mnt1", cache)
    conf = write_config(tmp_path / "c2.json", v1_config(img.blob_dir, cache))
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    assert_start_failure(daemons, ["--config", conf, "--mountpoint", mnt2, "--bootstrap",
                                   img.bootstrap], mnt2, [cache])
    # The first one is unaffected.
    rel = regular_files(data_tree)[0]
    expect_read(d.mountpoint / rel, (data_tree / rel).read_bytes(), rel, d)
    d.stop()
    # Once it is gone the cache can be used again.
    d3 = daemons.mount(img, tmp_path / "mnt2", cache)
    expect_read(d3.mountpoint / rel, (data_tree / rel).read_bytes(), rel, d3)
    d3.stop()
