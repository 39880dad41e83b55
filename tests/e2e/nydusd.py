"""Helpers for the nydusd (FUSE daemon) end-to-end tests: configs, starting
a daemon and waiting for its mount, stopping and always cleaning up, reading
through the mount with a hang guard, and inspecting the cache directory.

The daemon under test is ``target/release/nydusd`` (env NYDUSD overrides).
Every daemon started through the ``daemons`` fixture is stopped (SIGTERM,
then SIGKILL) and its mountpoint lazily unmounted when the test ends, pass
or fail, so a broken daemon never leaves a stale mount behind.

Test modules use the fixtures by importing them:
    from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shlex
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

import util

FSTYPE = "fuse.rafs"
MOUNT_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
READ_TIMEOUT = 10.0

# A tracing line at WARN or ERROR level ("2026-01-01T00:00:00.000000Z  WARN ..."),
# the final "error: ..." line, or a panic.
PROBLEM_RE = re.compile(r"^\d{4}-\d\d-\d\dT\S+\s+(WARN|ERROR)\b|^error:|panicked at")


def nydusd_path() -> Path:
    return Path(os.environ.get("NYDUSD", util.REPO / "target" / "release" / "nydusd"))


@pytest.fixture(scope="session")
def nydusd_bin() -> Path:
    """The daemon under test.  Missing binary or /dev/fuse: a failure, not a skip."""
    p = nydusd_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"nydusd binary not found at {p}: run `cargo build --release -p nydus-daemon` "
                    "or set NYDUSD", pytrace=False)
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is absent: the nydusd tests need FUSE", pytrace=False)
    return p


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------

def v1_config(blob_dir, cache_dir, *, digest_validate=False, max_size=None, amplify_io=1 << 20,
              prefetch=False, prefetch_all=False, threads=4, cache_type="blobcache") -> dict:
    """Upstream's v1 JSON config over a localfs backend and a blob cache."""
    cache_cfg = {"work_dir": os.fspath(cache_dir)}
    if max_size is not None:
        cache_cfg["max_size"] = max_size
    return {
        "device": {
            "backend": {"type": "localfs", "config": {"dir": os.fspath(blob_dir)}},
            "cache": {"type": cache_type, "config": cache_cfg},
        },
        "mode": "direct",
        "digest_validate": digest_validate,
        "enable_xattr": True,
        "amplify_io": amplify_io,
        "fs_prefetch": {"enable": prefetch, "threads_count": threads, "merging_size": 1 << 20,
                        "bandwidth_rate": 0, "prefetch_all": prefetch_all},
    }


def v2_toml(blob_dir, cache_dir, *, digest_validate=False, prefetch=False,
            prefetch_all=False) -> str:
    """The same as a v2 TOML file."""
    return "\n".join([
        "version = 2",
        "",
        "[backend]",
        'type = "localfs"',
        "[backend.localfs]",
        f"dir = {json.dumps(os.fspath(blob_dir))}",
        "",
        "[cache]",
        'type = "filecache"',
        "[cache.filecache]",
        f"work_dir = {json.dumps(os.fspath(cache_dir))}",
        "",
        "[rafs]",
        'mode = "direct"',
        f"validate = {str(digest_validate).lower()}",
        "enable_xattr = true",
        "[rafs.prefetch]",
        f"enable = {str(prefetch).lower()}",
        "threads = 4",
        f"prefetch_all = {str(prefetch_all).lower()}",
        "",
    ])


def write_config(path, cfg) -> Path:
    """Write a config (dict -> JSON, str -> as is)."""
    path = Path(path)
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
    return path


# --------------------------------------------------------------------------
# mounts
# --------------------------------------------------------------------------

def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_at(mp) -> list:
    """[(mount id, fstype, source)] of the mounts on ``mp`` (oldest first)."""
    mp = os.fspath(mp)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            try:
                sep = parts.index("-")
            except ValueError:
                continue
            if _unescape(parts[4]) == mp:
                out.append((int(parts[0]), parts[sep + 1], parts[sep + 2]))
    return out


def fuse_mounts_at(mp) -> list:
    return [m for m in mounts_at(mp) if m[1].startswith("fuse")]


def lazy_umount(mp) -> None:
    for _ in range(8):
        if not fuse_mounts_at(mp):
            return
        subprocess.run(["umount", "-l", os.fspath(mp)], capture_output=True)


def stat_errno(path) -> int | None:
    """errno of lstat(path), or None if it works."""
    try:
        os.lstat(path)
        return None
    except OSError as e:
        return e.errno


# --------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------

class Daemon:
    """One nydusd process.  Output (stdout+stderr) goes to ``self.log``."""

    def __init__(self, binary: Path, args: list, mountpoint: Path, log: Path):
        self.binary = binary
        self.args = [os.fspath(a) if isinstance(a, Path) else str(a) for a in args]
        self.mountpoint = Path(os.path.realpath(mountpoint))
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.rc: int | None = None
        self.started = 0.0

    @property
    def cmd(self) -> list:
        return [os.fspath(self.binary)] + self.args

    def start(self) -> "Daemon":
        env = dict(os.environ, RUST_BACKTRACE="1")
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.started = time.monotonic()
        return self

    # -- state ------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_mount(self):
        """The (topmost) rafs FUSE mount on the mountpoint, if any."""
        ms = [m for m in fuse_mounts_at(self.mountpoint) if m[1] == FSTYPE]
        return ms[-1] if ms else None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def problem_lines(self) -> list:
        return [ln for ln in self.log_text().splitlines() if PROBLEM_RE.search(ln)]

    def describe(self, limit: int = 6000) -> str:
        rc = self.proc.poll() if self.proc else None
        text = self.log_text()
        if len(text) > limit:
            text = f"... ({len(text) - limit} chars cut)\n" + text[-limit:]
        return (f"$ {shlex.join(self.cmd)}\n"
                f"pid {self.proc.pid if self.proc else '-'}, "
                f"{'running' if rc is None else f'exit status {rc}'}, "
                f"mounts on {self.mountpoint}: {mounts_at(self.mountpoint)}\n"
                f"--- daemon log ({self.log}) ---\n{text}")

    def assert_clean_log(self, allow=()) -> None:
        bad = [ln for ln in self.problem_lines() if not any(re.search(a, ln) for a in allow)]
        assert not bad, "WARN/ERROR lines in the daemon log:\n  " + "\n  ".join(bad[:30]) + \
            "\n" + self.describe()

    # -- lifecycle --------------------------------------------------------
    def wait_mounted(self, timeout: float = MOUNT_TIMEOUT) -> "Daemon":
        """Poll until the mountpoint is a rafs FUSE mount that answers statfs
        (statfs always reaches the server, so a stale mount left by a
        killed daemon does not count: it answers ENOTCONN)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.new_mount() is not None and self._answers(deadline):
                return self
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"nydusd exited ({rc}) before mounting "
                            f"{self.mountpoint}\n{self.describe()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"nydusd did not mount {self.mountpoint} as {FSTYPE} within "
                            f"{timeout}s\n{self.describe()}", pytrace=False)
            time.sleep(0.02)

    def _answers(self, deadline: float) -> bool:
        """Something is mounted on the mountpoint (its st_dev differs from
        the parent's) and it answers statfs, with no change of st_dev in
        between (a daemon detaching a stale mount before mounting its own
        briefly exposes the bare directory)."""
        left = max(0.5, deadline - time.monotonic())
        mp = self.mountpoint
        kind, st1 = guarded(lambda: os.lstat(mp), timeout=left, what=f"lstat {mp}")
        if kind != "ok" or st1.st_dev == os.lstat(mp.parent).st_dev:
            return False
        kind, _ = guarded(lambda: os.statvfs(mp), timeout=left, what=f"statfs {mp}")
        if kind != "ok":
            return False
        kind, st2 = guarded(lambda: os.lstat(mp), timeout=left, what=f"lstat {mp}")
        return kind == "ok" and st2.st_dev == st1.st_dev

    def wait_exit(self, timeout: float) -> int | None:
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.rc

    def send_signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT,
             expect_rc: int | None = 0) -> int:
        """Send ``sig`` and wait; fail unless it exits (with expect_rc) in time
        and its mount is gone."""
        t0 = time.monotonic()
        self.send_signal(sig)
        rc = self.wait_exit(timeout)
        took = time.monotonic() - t0
        if rc is None:
            pytest.fail(f"nydusd did not exit within {timeout}s of signal "
                        f"{signal.Signals(sig).name}\n{self.describe()}", pytrace=False)
        if expect_rc is not None and rc != expect_rc:
            pytest.fail(f"nydusd exited with {rc} (expected {expect_rc}) {took:.1f}s after "
                        f"{signal.Signals(sig).name}\n{self.describe()}", pytrace=False)
        left = fuse_mounts_at(self.mountpoint)
        if left:
            pytest.fail(f"{self.mountpoint} still mounted after nydusd exited: {left}\n"
                        f"{self.describe()}", pytrace=False)
        return rc

    def cleanup(self) -> None:
        """Finalizer: SIGTERM, then SIGKILL; then lazily unmount whatever is left."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(STOP_TIMEOUT) is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.wait_exit(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.wait()
        lazy_umount(self.mountpoint)


class Daemons:
    """Factory for daemons of one test; all of them are cleaned up at its end."""

    def __init__(self, binary: Path, tmp: Path):
        self.binary = binary
        self.tmp = tmp
        self.all: list[Daemon] = []
        self.n = 0

    def make(self, args: list, mountpoint, *, log: Path | None = None) -> Daemon:
        self.n += 1
        mountpoint = Path(mountpoint)
        mountpoint.mkdir(parents=True, exist_ok=True)
        d = Daemon(self.binary, args, mountpoint, log or self.tmp / f"nydusd-{self.n}.log")
        self.all.append(d)
        return d

    def start(self, bootstrap, mountpoint, *, config=None, localfs_dir=None, extra=(),
              wait: bool = True, timeout: float = MOUNT_TIMEOUT, log: Path | None = None,
              subcommand: bool = False) -> Daemon:
        """nydusd [fuse] --config C | --localfs-dir D --mountpoint M --bootstrap B EXTRA"""
        args = ["fuse"] if subcommand else []
        if config is not None:
            args += ["--config", config]
        if localfs_dir is not None:
            args += ["--localfs-dir", localfs_dir]
        args += ["--mountpoint", mountpoint, "--bootstrap", bootstrap, *extra]
        d = self.make(args, mountpoint, log=log).start()
        if wait:
            d.wait_mounted(timeout)
        return d

    def mount(self, img: util.Image, mountpoint, cache_dir, *, style: str = "v1",
              extra=(), **cfg) -> Daemon:
        """Mount ``img`` with its blob dir as the localfs backend and
        ``cache_dir`` as the cache; style: v1 (JSON), v2 (TOML) or localfs-dir
        (cache_dir ignored: the cache lives in the blob dir)."""
        if style == "localfs-dir":
            assert not cfg, "--localfs-dir takes no config"
            return self.start(img.bootstrap, mountpoint, localfs_dir=img.blob_dir, extra=extra)
        self.n += 1
        if style == "v1":
            conf = write_config(self.tmp / f"config-{self.n}.json",
                                v1_config(img.blob_dir, cache_dir, **cfg))
        elif style == "v2":
            conf = write_config(self.tmp / f"config-{self.n}.toml",
                                v2_toml(img.blob_dir, cache_dir, **cfg))
        else:
            raise ValueError(style)
        return self.start(img.bootstrap, mountpoint, config=conf, extra=extra)

    def run_to_exit(self, args: list, mountpoint, timeout: float = 10.0) -> tuple:
        """Run nydusd expecting it to exit by itself; returns (rc, output, seconds).
        A run still going at ``timeout`` fails the test."""
        d = self.make(args, mountpoint).start()
        rc = d.wait_exit(timeout)
        took = time.monotonic() - d.started
        if rc is None:
            pytest.fail(f"nydusd still running after {timeout}s (expected it to exit)\n"
                        f"{d.describe()}", pytrace=False)
        return rc, d.log_text(), took

    def cleanup(self) -> None:
        for d in reversed(self.all):
            d.cleanup()


@pytest.fixture
def daemons(nydusd_bin, tmp_path):
    ds = Daemons(nydusd_bin, tmp_path)
    yield ds
    ds.cleanup()


# --------------------------------------------------------------------------
# reading through the mount
# --------------------------------------------------------------------------

def drop_page_cache(path) -> None:
    """Evict the kernel's cached pages of ``path`` so that the next read
    reaches the daemon (the daemon sets KEEP_CACHE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def guarded(fn, timeout: float = READ_TIMEOUT, what: str = "call"):
    """Run fn() in a thread; returns ("ok", value) or ("err", OSError).
    A call still blocked after ``timeout`` fails the test as a hang (the
    thread is left behind; killing the daemon in the finalizer releases it)."""
    box = {}

    def run():
        try:
            box["ok"] = fn()
        except OSError as e:
            box["err"] = e
        except BaseException as e:  # noqa: BLE001 - report anything
            box["exc"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"HANG: {what} did not return within {timeout}s", pytrace=False)
    if "exc" in box:
        raise box["exc"]
    return ("ok", box["ok"]) if "ok" in box else ("err", box["err"])


def read_bytes(path) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


def pread(path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def regular_files(root) -> list:
    """Relative paths of the regular files under root (sorted)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(os.path.relpath(p, root))
    return out


# --------------------------------------------------------------------------
# the cache directory
# --------------------------------------------------------------------------

CHUNK_MAP_MAGIC = b"NYCM"
CHUNK_MAP_HEADER = 32


def allocated(path) -> int:
    """Bytes allocated on disk (st_blocks * 512); 0 if missing."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def dir_allocated(d) -> int:
    """du -B1 style: the sum of st_blocks*512 of the regular files in d."""
    total = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_blocks * 512
    except FileNotFoundError:
        pass
    return total


def chunk_map(cache_dir, blob_id) -> tuple | None:
    """(chunk count, set of ready chunk indexes) from ``<id>.chunk_map``
    (header: "NYCM", version, u32 chunk count at 8, ...; 32 bytes; then one
    bit per chunk), or None if the file is absent or not in that format."""
    try:
        raw = (Path(cache_dir) / f"{blob_id}.chunk_map").read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < CHUNK_MAP_HEADER or raw[:4] != CHUNK_MAP_MAGIC:
        return None
    count = int.from_bytes(raw[8:12], "little")
    bits = raw[CHUNK_MAP_HEADER:]
    if len(bits) != (count + 7) // 8:
        return None
    ready = {i for i in range(count) if bits[i // 8] >> (i % 8) & 1}
    return count, ready


def inspect_chunks(img: util.Image, rel: str) -> list:
    """nydus-image inspect -R 'chunk /rel' -> the file's chunk records."""
    res = util.run_nydus(["inspect", img.bootstrap, "-R", f"chunk /{rel}"], expect_rc=0)
    return res.json()


def poll(pred, timeout: float, interval: float = 0.05):
    """Call pred() until it returns a truthy value or ``timeout`` passes;
    returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# a small data tree for the cache / fault tests
# --------------------------------------------------------------------------

def make_data_tree(root, *, files: int = 12, seed: int = 99) -> Path:
    """``files`` regular files of random (incompressible) bytes, 5-9 chunks
    of 4 KiB plus a tail each, and a little text, in two directories."""
    root = Path(root)
    rng = random.Random(seed)
    for i in range(files):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:02d}").write_bytes(rng.randbytes(0x1000 * rng.randrange(5, 10)
                                                    + rng.randrange(1, 0x1000)))
    (root / "readme.txt").write_bytes(b"nydus e2e data tree\n" * 50)
    return root


def errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno, str(e.errno))
